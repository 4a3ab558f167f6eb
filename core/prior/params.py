"""Parameters of the projection job. numpy only, no torch: the GUI builds these on its own thread."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import JobError
from core.types import LatentSpace

TASKS = ("clip", "inpaint", "similarity", "scribble")
PRIORS = ("none", "mean", "cluster", "diffusion", "task-guided")
INITS = ("mapping", "mean", "latent")
DENOISE_SOLVERS = ("auto", "sequential", "picard")  # core.prior.priors.DiffusionPrior's solvers


@dataclass(frozen=True)
class ProjectParams:
    """Every input of one projection run (seed paper: "Diffusion-augmented Projection Algorithm").

    Tasks: "clip" (cosine distance of CLIP image and text embeddings), "inpaint" (masked LPIPS to the
    target; ``mask`` = 1 where the target must match, 0 in the hole), "similarity" (LPIPS to the
    target everywhere) and "scribble" (masked L1 + LPIPS where ``mask`` marks paint).

    Priors: "none", "mean", "cluster" (penalties), "diffusion" (alternating task step / K denoising
    steps) and "task-guided" (reverse diffusion from noise, every step guided by the task gradient).
    """

    task: str = "clip"
    prompt: str = ""  # clip: the text to match
    target: np.ndarray | None = None  # [H, W, 3] uint8 RGB; image tasks; resized to the model resolution
    mask: np.ndarray | None = None  # [H, W] float in [0, 1], 1 = match the target; inpaint and scribble
    prior: str = "diffusion"  # see PRIORS
    space: LatentSpace = LatentSpace.W  # the optimised latent: w [N, w_dim] or w+ [N, num_ws, w_dim]
    steps: int = 50  # task steps (task-guided: reverse diffusion steps from t = 1 to 0)
    lr: float = 0.02  # Adam step size on the latent, in W units
    prior_weight: float = 1.0  # weight of the mean / cluster penalty (mean squared W distance)
    denoise_steps: int = 10  # K: diffusion updates after each task step (seed: 10)
    noise_start: float = 0.05  # diffusion time each group of K updates starts at (seed: 5%)
    noise_end: float = 0.0  # ... and ends at (seed: 0%)
    denoise_eta: float = 0.0  # 0: deterministic DDIM updates; 1: ancestral (fresh noise each update)
    denoise_solver: str = "auto"  # the K updates one by one ("sequential"), by Picard sweeps, or "auto"
    guidance_scale: float = 3.0  # task-guided: size of the task-gradient step in the noise prediction
    guidance: str = "x0"  # task-guided: "x0" (gradient on the clean estimate) or "xt" (through the denoiser)
    guided_eta: float = 1.0  # task-guided: 1 = ancestral reverse steps, 0 = DDIM
    l1_weight: float = 1.0  # scribble: weight of the masked L1 term
    perceptual_weight: float = 1.0  # inpaint, similarity, scribble: weight of the (masked) LPIPS term
    init: str = "mapping"  # "mapping" (seeded mapping samples), "mean" (mean w), "latent" (init_latent)
    init_latent: np.ndarray | None = None  # in `space`'s shape, for init="latent"
    num_samples: int = 4  # latents optimised together, each from its own seed draw
    seed: int = 0  # initial latents, noise of the diffusion updates
    preview_every: int = 5  # yield a preview image every k steps (and at the last step)

    def __post_init__(self) -> None:
        object.__setattr__(self, "space", LatentSpace(self.space))
        for name, value, allowed in (("task", self.task, TASKS), ("prior", self.prior, PRIORS)):
            if value not in allowed:
                raise JobError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.denoise_solver not in DENOISE_SOLVERS:
            raise JobError(
                f"denoise_solver must be one of {', '.join(DENOISE_SOLVERS)}; got {self.denoise_solver!r}"
            )
        if self.guidance not in ("x0", "xt"):
            raise JobError(f"guidance must be 'x0' or 'xt'; got {self.guidance!r}")
        if self.init not in INITS:
            raise JobError(f"init must be one of {', '.join(INITS)}; got {self.init!r}")
        if self.space is LatentSpace.Z:
            raise JobError("projection works in w or w+ (where the priors live), not z")
        if self.task == "clip" and not self.prompt.strip():
            raise JobError("the CLIP task needs a text prompt")
        if self.task != "clip" and self.target is None:
            raise JobError(f"the {self.task} task needs a target image")
        if self.task in ("inpaint", "scribble") and self.mask is None:
            raise JobError(f"the {self.task} task needs a mask (1 = match the target)")
        if self.init == "latent" and self.init_latent is None:
            raise JobError("init='latent' needs init_latent")
        if min(self.steps, self.num_samples, self.preview_every, self.denoise_steps) < 1:
            raise JobError("steps, num_samples, preview_every and denoise_steps must be >= 1")
        if not 0 <= self.noise_end < self.noise_start <= 1:
            raise JobError("need 0 <= noise_end < noise_start <= 1")
