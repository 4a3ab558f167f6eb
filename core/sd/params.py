"""SDEdit job parameters. numpy only, no torch: the GUI builds these on its own thread."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import JobError

SAMPLERS = ("ddpm", "ddim")
PREVIEWS = ("fast", "full", "none")


@dataclass(frozen=True)
class SDEditParams:
    """Every input of one SDEdit run (Meng et al. 2022): noise the guide to level N, then denoise.

    ``strength`` is N / T (T = the model's training timesteps, 1000 for Stable Diffusion); give
    ``start_step`` = N instead to set N directly. ``steps`` S spans the whole schedule, so
    int(S * strength) steps run (the img2img convention): S = 1000 with DDPM is the seed write-up's
    full ancestral sampler, N = 500 of 1000 runs 500 steps.
    """

    guide: np.ndarray  # [H, W, 3] uint8 RGB; resized to `size`
    prompt: str = ""
    negative_prompt: str = ""  # the unconditional branch of classifier-free guidance
    mask: np.ndarray | None = None  # [H, W] float in [0, 1]; 1 = regenerate here; None = everywhere
    strength: float = 0.6  # N / T in (0, 1]; ignored when start_step is given
    start_step: int | None = None  # N of T (seed: 500, 600, 700 of 1000)
    guidance_scale: float = 7.5  # classifier-free guidance; 1 = the conditional prediction only
    sampler: str = "ddim"  # "ddpm" (ancestral, Ho et al. 2020) | "ddim" (eta = 0, Song et al. 2021)
    steps: int = 50  # S over the full schedule; int(S * strength) of them run
    seed: int = 0  # the noise added to the guide and DDPM's per-step noise
    num_samples: int = 1  # images made together from this guide, each from its own noise
    size: tuple[int, int] | None = None  # output (width, height); None = the model's native size
    mask_feather: float = 4.0  # Gaussian sigma of the mask edge, in output pixels
    paste_back: bool = True  # composite the guide over the unmasked region of the decoded result
    preview: str = "fast"  # "fast" (tiny decoder or linear latent->RGB), "full" (VAE decode), "none"
    preview_every: int = 1  # a preview every k steps (and at the last)
    preview_interval_s: float = 0.0  # and at most one per this many seconds (the app: its repaint rate)

    def __post_init__(self) -> None:
        g = self.guide
        if not isinstance(g, np.ndarray) or g.ndim != 3 or g.shape[2] != 3 or g.dtype != np.uint8:
            raise JobError("guide must be an [H, W, 3] uint8 RGB array")
        if self.mask is not None and (self.mask.ndim != 2 or self.mask.shape != g.shape[:2]):
            raise JobError(f"mask must be [H, W] = {list(g.shape[:2])}, got {list(self.mask.shape)}")
        if self.start_step is None and not 0 < self.strength <= 1:
            raise JobError(f"strength must be in (0, 1], got {self.strength}")
        if self.start_step is not None and self.start_step < 1:
            raise JobError(f"start_step must be >= 1, got {self.start_step}")
        if self.sampler not in SAMPLERS:
            raise JobError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.preview not in PREVIEWS:
            raise JobError(f"preview must be one of {PREVIEWS}, got {self.preview!r}")
        if self.steps < 1 or self.preview_every < 1 or self.num_samples < 1:
            raise JobError("steps, preview_every and num_samples must be >= 1")
        if not self.preview_interval_s >= 0:
            raise JobError(f"preview_interval_s must be >= 0, got {self.preview_interval_s}")
        if self.guidance_scale < 0 or self.mask_feather < 0:
            raise JobError("guidance_scale and mask_feather must be >= 0")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 8):
            raise JobError(f"size must be (width, height) of at least 8 px, got {self.size}")

    def strength_for(self, num_train_timesteps: int) -> float:
        """N / T, with N from ``start_step`` when given."""
        if self.start_step is None:
            return self.strength
        if self.start_step > num_train_timesteps:
            raise JobError(f"start_step {self.start_step} is beyond the model's {num_train_timesteps} steps")
        return self.start_step / num_train_timesteps
