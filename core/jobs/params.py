"""Job parameter dataclasses. numpy only, no torch: the GUI builds these on its own thread."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import JobError
from core.types import LatentSpace


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
    optimizer: str = "adam"  # "adam" | "lbfgs"
    steps: int = 500
    lr: float = 0.05  # Adam step size; L-BFGS uses its own line search with lr 1
    seed: int = 0  # random init and any sampling
    num_samples: int = 1  # latents optimised together (a batch), each from its own init
    preview_every: int = 10  # yield a preview image every k steps (and at the last step)

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "lbfgs"):
            raise JobError(f"optimizer must be 'adam' or 'lbfgs', got {self.optimizer!r}")
        if self.init not in ("mean", "random", "latent"):
            raise JobError(f"init must be 'mean', 'random' or 'latent', got {self.init!r}")
        if self.init == "latent" and self.init_latent is None:
            raise JobError("init='latent' needs init_latent")
        if self.steps < 1 or self.num_samples < 1 or self.preview_every < 1:
            raise JobError("steps, num_samples and preview_every must be >= 1")
        for name, a, single in (("target", self.target, 3), ("mask", self.mask, 2)):
            if a is not None and a.ndim == single + 1 and a.shape[0] != self.num_samples:
                raise JobError(f"a batch of {a.shape[0]} {name}s needs num_samples={a.shape[0]}")
        object.__setattr__(self, "space", LatentSpace(self.space))
