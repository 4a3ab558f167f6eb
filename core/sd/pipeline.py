"""SDEdit (Meng et al., ICLR 2022): guided image synthesis by noising a guide image to level N and
denoising it with a text-conditioned diffusion model under classifier-free guidance (Ho & Salimans
2021). Optional local inpainting re-imposes the guide outside a mask at every step (the "blended"
scheme of Avrahami et al. 2022 and of diffusers' legacy inpainting), or feeds a dedicated 9-channel SD
inpainting UNet its mask and masked-image latents.

The loop (:mod:`core.jobs.sdedit`) is our own, not a diffusers pipeline's ``__call__``, so that it can
yield a preview every step and stop between steps; it uses diffusers' schedulers for every sampler step.
This module holds its pieces.

    1. timesteps: the last int(S x strength) of an S-step schedule (the img2img convention)
    2. x_N = sqrt(abar_N) x_0 + sqrt(1 - abar_N) eps, x_0 = the guide's latent     (DDPM eq. 4)
    3. per step: eps = eps_u + w (eps_c - eps_u)                                    (CFG eq. 6)
                 x_prev = sampler.step(eps, t, x)                     (DDPM eq. 6-7 / DDIM eq. 12)
                 x_prev = m x_prev + (1 - m) q(x_prev | guide)     (inpainting, m = feathered mask)
    4. decode the last x_0; with a mask, paste the guide back outside it.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import JobError
from core.imaging import gaussian_blur, to_uint8
from core.sd.model import SDModel

log = logging.getLogger(__name__)


# --- 1. the schedule ------------------------------------------------------------------------------------


def make_scheduler(model: SDModel, sampler: str):
    """A fresh scheduler for one run, from the model's schedule config (never shared between runs)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    cls = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}[sampler]
    return cls.from_config(dict(model.scheduler_config))


def executed_steps(steps: int, strength: float) -> int:
    """int(S x strength), as diffusers' img2img pipelines compute it (so 0.29 x 100 runs 28 steps:
    the float product is 28.999...); the same steps as theirs for the same settings."""
    return min(int(steps * strength), steps)


def sdedit_timesteps(scheduler, steps: int, strength: float) -> torch.Tensor:
    """The last int(S x strength) timesteps of the scheduler's S-step schedule (sets its timesteps)."""
    if steps > scheduler.config.num_train_timesteps:
        raise JobError(f"steps must be <= {scheduler.config.num_train_timesteps}, got {steps}")
    n = executed_steps(steps, strength)
    if n < 1:
        raise JobError(f"strength {strength:g} x {steps} steps runs no step: raise steps or strength")
    scheduler.set_timesteps(steps)
    ts = scheduler.timesteps[steps - n :]
    # "leading" spacing with steps_offset 1 (SD 1.x) puts S = T's first step at t = T, past the schedule.
    return ts[ts < scheduler.config.num_train_timesteps]


# --- images, masks, latents -----------------------------------------------------------------------------


def output_size(
    size: tuple[int, int] | None, model: SDModel, guide_hw: tuple[int, int] | None = None
) -> tuple[int, int]:
    """(width, height): the requested size; else the model's native area in the guide's aspect ratio
    (a square guide gets the native square); rounded to the model's multiple."""
    k = model.size_multiple
    if size is None and guide_hw is not None:
        gh, gw = guide_hw
        side = model.native_size * math.sqrt(1.0 / (gw * gh))
        size = (gw * side, gh * side)
    w, h = size or (model.native_size, model.native_size)
    rounded = (max(k, round(w / k) * k), max(k, round(h / k) * k))
    if rounded != (w, h):
        log.info("size %dx%d rounded to %dx%d (multiples of %d)", w, h, *rounded, k)
    return rounded


def image_tensor(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """[H, W, 3] uint8 -> [1, 3, h, w] float32 in [-1, 1] at size (w, h), antialiased."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
    if x.shape[-2:] != (size[1], size[0]):
        x = F.interpolate(x, size=(size[1], size[0]), mode="bicubic", antialias=True, align_corners=False)
    return x.clamp(-1, 1)


def feathered_mask(mask: np.ndarray, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """[H, W] in [0, 1] -> [1, 1, h, w] at size (w, h), its edge feathered inward by a Gaussian of
    ``sigma`` px: never above the mask, so a pixel outside it stays 0 (kept exactly as it was)."""
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).clamp(0, 1)[None, None]
    m = F.interpolate(m, size=(size[1], size[0]), mode="bilinear", align_corners=False)
    if sigma > 0:
        m = torch.minimum(m, gaussian_blur(m, sigma))
    return m.clamp(0, 1)


@torch.no_grad()
def encode(model: SDModel, image: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> the model's latent (scaled as the UNet expects; pixels if no VAE)."""
    if model.vae is None:
        return image.to(model.device, model.dtype)
    cfg = model.vae.config
    z = model.vae.encode(image.to(model.device, model.vae_dtype)).latent_dist.mode()
    shift = getattr(cfg, "shift_factor", None) or 0.0
    return ((z - shift) * cfg.scaling_factor).to(model.dtype)


@torch.no_grad()
def decode(model: SDModel, latent: torch.Tensor) -> torch.Tensor:
    """The model's latent -> [B, 3, H, W] in [-1, 1] (float32)."""
    if model.vae is None:
        return latent.float().clamp(-1, 1)
    cfg = model.vae.config
    shift = getattr(cfg, "shift_factor", None) or 0.0
    z = latent.to(model.vae_dtype) / cfg.scaling_factor + shift
    return model.vae.decode(z).sample.float().clamp(-1, 1)


# --- previews ------------------------------------------------------------------------------------------


class Previewer:
    """Cheap x0 previews: pixels as they are, TAESD when the model has one, else a linear map from latent
    channels to RGB fitted (least squares) on this run's own guide and its latent."""

    def __init__(self, model: SDModel, mode: str, guide: torch.Tensor, guide_latent: torch.Tensor):
        self.model, self.mode, self.size = model, mode, guide.shape[-2:]
        self.weights = None
        if mode == "fast" and model.vae is not None and model.tiny_vae is None:
            self.weights = fit_latent_rgb(guide_latent.float(), guide.to(guide_latent.device))

    @torch.no_grad()
    def __call__(self, x0: torch.Tensor) -> np.ndarray:
        m = self.model
        if m.vae is None or self.mode == "full":
            return to_uint8(decode(m, x0))
        if m.tiny_vae is not None:
            rgb = m.tiny_vae.decode(x0.to(next(m.tiny_vae.parameters()).dtype)).sample
        else:
            rgb = apply_latent_rgb(x0.float(), self.weights)
            rgb = F.interpolate(rgb, size=self.size, mode="bilinear", align_corners=False)
        return to_uint8(rgb.float())


def fit_latent_rgb(latent: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Least-squares W [C + 1, 3] with [latent, 1] @ W ~ the image area-sampled to the latent's grid."""
    target = F.adaptive_avg_pool2d(image.float(), latent.shape[-2:])  # [1, 3, h, w]
    a = torch.cat([latent, torch.ones_like(latent[:, :1])], 1).flatten(2)[0].T  # [h*w, C + 1]
    b = target.flatten(2)[0].T  # [h*w, 3]
    ridge = 1e-3 * torch.eye(a.shape[1], device=a.device)  # a flat guide has collinear channels
    return torch.linalg.solve(a.T @ a + ridge, a.T @ b)


def apply_latent_rgb(latent: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    a = torch.cat([latent, torch.ones_like(latent[:, :1])], 1)  # [1, C + 1, h, w]
    return torch.einsum("bchw,cd->bdhw", a, weights).clamp(-1, 1)


# --- 3. one guided step ----------------------------------------------------------------------------------


def guided_noise(
    unet,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    scale: float,
    extra: torch.Tensor | None = None,
) -> torch.Tensor:
    """Classifier-free guidance: eps_u + scale (eps_c - eps_u). With ``uncond`` None (scale 1), the
    conditional prediction alone, one UNet pass. ``extra``: channels appended to the input (inpainting)."""
    inp = x if extra is None else torch.cat([x, extra], 1)
    if uncond is None:
        return unet(inp, t, encoder_hidden_states=cond).sample
    out = unet(torch.cat([inp, inp]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    eps_u, eps_c = out.chunk(2)
    return eps_u + scale * (eps_c - eps_u)
