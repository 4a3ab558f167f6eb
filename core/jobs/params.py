"""Job parameter dataclasses. numpy only, no torch: the GUI builds these on its own thread."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import JobError
from core.types import LatentSpace

# The defaults each inversion job starts from, shared by the Invert tab, the CLI and the docs. Plain
# inversion wants fidelity (w+); scribbles and holes want results on the image manifold, chosen from the
# settings table in docs/models.md (python -m core.metrics scribble-sweep).
_SEED_WEIGHTS = dict(l1_weight=10.0, perceptual_weight=0.01)  # the seed write-up's L1 and perceptual weights
MODE_DEFAULTS: dict[str, dict] = {
    "invert": dict(space="w+", init="mean", starts=0, spread_weight=0.0, **_SEED_WEIGHTS),
    # The sweep's pick (docs/models.md): 16 random starts, the best kept, the w+ layers held together.
    "scribble": dict(space="w+", init="random", starts=16, spread_weight=1.0, **_SEED_WEIGHTS),
    "inpaint": dict(space="w+", init="mean", starts=0, spread_weight=0.0, **_SEED_WEIGHTS),
}


@dataclass(frozen=True)
class InvertParams:
    target: np.ndarray  # [H, W, 3] uint8 RGB, or [N, H, W, 3]: one per sample; resized to the model's size
    mask: np.ndarray | None = None  # [H, W] (or [N, H, W]) float in [0, 1]; loss only where > 0; None = all
    space: LatentSpace = LatentSpace.W_PLUS
    init: str = "mean"  # "mean" | "random" | "latent" (warm start from init_latent)
    init_latent: np.ndarray | None = None  # latent in `space`'s shape, for init="latent"
    l1_weight: float = 10.0  # seed: L1 weight 10
    perceptual_weight: float = 0.01  # seed: 0.01 on conv_5 features; 0 disables
    l2_delta_weight: float = 0.0  # L2 on latent - initial latent
    # Staying on the image manifold (see core.jobs.invert): spread of the w+ layers around their
    # mean, and a W log-density proxy (squared W-normalised distance from the mean w), both /w_dim.
    spread_weight: float = 0.0
    w_prior_weight: float = 0.0
    # iGAN-style multi-start: `starts` random starts optimised together for `start_steps` steps, then
    # the best `num_samples` (task loss + realism_weight x the W proxy) continue. 0: off.
    starts: int = 0
    start_steps: int = 20
    realism_weight: float = 1.0
    optimizer: str = "adam"  # "adam" | "lbfgs"
    steps: int = 500
    lr: float = 0.05  # Adam step size; L-BFGS uses its own line search with lr 1
    seed: int = 0  # random init and any sampling
    num_samples: int = 1  # latents optimised together (a batch), each from its own init
    preview_every: int = 10  # yield a preview image every k steps (and at the last step)
    # Inpainting: the result keeps the target's pixels where the mask is 1 (feathered into the hole),
    # as inpainting tools do, so only the hole changes. Needs a mask.
    paste_back: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "lbfgs"):
            raise JobError(f"optimizer must be 'adam' or 'lbfgs', got {self.optimizer!r}")
        if self.init not in ("mean", "random", "latent"):
            raise JobError(f"init must be 'mean', 'random' or 'latent', got {self.init!r}")
        if self.init == "latent" and self.init_latent is None:
            raise JobError("init='latent' needs init_latent")
        if self.steps < 1 or self.num_samples < 1 or self.preview_every < 1:
            raise JobError("steps, num_samples and preview_every must be >= 1")
        if self.starts:
            if self.starts < self.num_samples:
                raise JobError(f"starts ({self.starts}) must be at least num_samples ({self.num_samples})")
            if self.init == "latent" or self.start_steps < 1:
                raise JobError("multi-start needs random or mean init and start_steps >= 1")
            if self.target.ndim == 4 or (self.mask is not None and self.mask.ndim == 3):
                raise JobError("multi-start takes one target (and mask) shared by every start")
        if self.paste_back and self.mask is None:
            raise JobError("paste_back needs a mask (1 = keep the target's pixels)")
        if min(self.spread_weight, self.w_prior_weight, self.realism_weight) < 0:
            raise JobError("spread, W prior and realism weights must be >= 0")
        for name, a, single in (("target", self.target, 3), ("mask", self.mask, 2)):
            if a is not None and a.ndim == single + 1 and a.shape[0] != self.num_samples:
                raise JobError(f"a batch of {a.shape[0]} {name}s needs num_samples={a.shape[0]}")
        object.__setattr__(self, "space", LatentSpace(self.space))
