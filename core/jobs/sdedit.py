"""The SDEdit job: the sampling loop over :mod:`core.sd.pipeline`'s pieces, with a preview every step and
a stop between steps (see that module for the method and its equations)."""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import JobError
from core.imaging import to_uint8
from core.jobs.events import Progress
from core.jobs.params import SDEditParams
from core.sd.model import SDModel
from core.sd.pipeline import (
    Previewer,
    decode,
    encode,
    feathered_mask,
    guided_noise,
    image_tensor,
    make_scheduler,
    output_size,
    sdedit_timesteps,
)
from core.types import CancelToken


@dataclass
class SDEditResult:
    params: SDEditParams
    images: np.ndarray  # [num_samples, H, W, 3] uint8 at `size`
    latent: np.ndarray  # [num_samples, C, h, w] float32: the final clean latents (pixels in pixel space)
    timesteps: list[int]  # the timesteps that ran, in order (the first is N's noise level)
    size: tuple[int, int]  # (width, height) of the output
    seconds: float
    cancelled: bool = False

    @property
    def image(self) -> np.ndarray:
        """The first sample, [H, W, 3] uint8."""
        return self.images[0]

    @property
    def executed_steps(self) -> int:
        return len(self.timesteps)


# --- the job ---------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """Per-run state, local to one call of :func:`sdedit`."""

    scheduler: object
    timesteps: torch.Tensor
    guide: torch.Tensor  # [1, 3, H, W] in [-1, 1] (CPU)
    guide_latent: torch.Tensor  # [1, C, h, w]
    noise: torch.Tensor  # [n, C, h, w], the eps of step 2 (reused to noise the known region)
    cond: torch.Tensor
    uncond: torch.Tensor | None
    mask_px: torch.Tensor | None  # [1, 1, H, W] feathered, 1 = regenerate
    mask_lat: torch.Tensor | None  # the same at latent resolution (blend mode)
    extra: torch.Tensor | None  # inpainting UNet: [n, 1 + C, h, w] mask + masked-image latents
    scale: float  # guidance scale
    step_kwargs: dict  # DDPM: its noise generator; DDIM: eta = 0 (deterministic)


def sdedit(
    params: SDEditParams, model: SDModel, *, cancel: CancelToken | None = None
) -> Generator[Progress, None, SDEditResult]:
    """Run SDEdit; yields :class:`Progress` every step (preview = the decoded predicted x0s
    ``[n, H, W, 3]`` on preview steps; latent = the current noisy latents ``[n, C, h, w]``), returns an
    :class:`SDEditResult`.

    Args:
        params: every input (guide, mask, prompts, strength or N, guidance, sampler, S, seed, size).
        model: a loaded model (see :func:`core.sd.model.load_sd_model`); it is not modified.
        cancel: checked between steps; a cancelled run returns its latest x0 with ``cancelled=True``.
    """
    p, started = params, time.perf_counter()
    size = output_size(p.size, model, p.guide.shape[:2])
    run = _prepare(p, model, size)
    preview = Previewer(model, p.preview, run.guide, run.guide_latent) if p.preview != "none" else None
    # 2. noise the guide to the first timestep's level
    x = run.scheduler.add_noise(run.guide_latent, run.noise, run.timesteps[:1])
    x0, done, total = run.guide_latent.expand_as(x), [], len(run.timesteps)
    last_preview = -math.inf
    for i, t in enumerate(run.timesteps):
        if cancel is not None and cancel.cancelled:
            return _finish(p, model, run, x0, done, size, started, cancelled=True)
        x, x0 = _step(model, run, x, t, i)
        done.append(int(t))
        # A preview costs a decode: none that the screen could not show (preview_interval_s), but
        # always the last step's.
        now = time.perf_counter()
        due = (i + 1) % p.preview_every == 0 and now - last_preview >= p.preview_interval_s
        show = preview is not None and (due or i + 1 == total)
        last_preview = now if show else last_preview
        yield Progress(
            i + 1,
            total,
            {"timestep": float(t)},
            preview=preview(x0) if show else None,
            latent=x.float().cpu().numpy() if show else None,
        )
    return _finish(p, model, run, x, done, size, started, cancelled=False)


@torch.no_grad()
def _prepare(p: SDEditParams, model: SDModel, size: tuple[int, int]) -> _Run:
    if p.mask is not None and float(p.mask.max()) <= 0:
        raise JobError("the mask is empty: paint where the image should change")
    scheduler = make_scheduler(model, p.sampler)
    T = model.num_train_timesteps
    timesteps = sdedit_timesteps(scheduler, p.schedule_steps(T), p.strength_for(T))
    guide = image_tensor(p.guide, size)
    guide_latent = encode(model, guide)  # [1, C, h, w]
    gen = torch.Generator().manual_seed(p.seed)
    n = p.num_samples
    noise = torch.randn((n, *guide_latent.shape[1:]), generator=gen).to(model.device, model.dtype)
    # Guidance <= 1 is the conditional prediction alone, one UNet pass (diffusers: guidance_scale > 1).
    prompts = [p.prompt] if p.guidance_scale <= 1 else [p.prompt, p.negative_prompt]
    ctx = model.text_encoder.encode(prompts).to(model.device, model.dtype)  # [1 or 2, L, D]
    mask_px = feathered_mask(p.mask, size, p.mask_feather) if p.mask is not None else None
    mask_lat = extra = None
    if model.inpainting_unet:
        # A 9-channel inpainting UNet always takes a mask: without one, the whole image is the hole.
        whole = np.ones(p.guide.shape[:2], np.float32)
        mask = p.mask if p.mask is not None else whole
        extra = _inpainting_channels(model, mask, guide, size, guide_latent.shape[-2:]).expand(n, -1, -1, -1)
    elif mask_px is not None:
        mask_lat = F.adaptive_avg_pool2d(mask_px, guide_latent.shape[-2:]).to(model.device, model.dtype)
    return _Run(
        scheduler,
        timesteps,
        guide,
        guide_latent,
        noise,
        ctx[:1].expand(n, -1, -1),
        ctx[1:].expand(n, -1, -1) if len(prompts) == 2 else None,
        mask_px,
        mask_lat,
        extra,
        p.guidance_scale,
        {"generator": gen} if p.sampler == "ddpm" else {"eta": 0.0},
    )


def _inpainting_channels(model, mask: np.ndarray, guide, size, latent_hw) -> torch.Tensor:
    """SD inpainting UNet inputs: the binary mask at latent size and the latents of the guide with the
    masked region blanked (as its training did: image * (mask < 0.5))."""
    hard = feathered_mask(mask, size, 0.0)
    hard = (hard >= 0.5).float()
    masked = encode(model, guide * (1 - hard))
    small = F.interpolate(hard, size=tuple(latent_hw), mode="nearest").to(model.device, model.dtype)
    return torch.cat([small, masked], 1)


@torch.inference_mode()  # lighter than no_grad (no version counters, no view tracking) for the UNet
def _step(model: SDModel, run: _Run, x: torch.Tensor, t: torch.Tensor, i: int):
    """One sampler step -> (x at the next timestep, predicted x0)."""
    sched = run.scheduler
    inp = sched.scale_model_input(x, t)
    eps = guided_noise(model.unet, inp, t.to(model.device), run.cond, run.uncond, run.scale, run.extra)
    out = sched.step(eps, t, x, **run.step_kwargs)
    x_prev, x0 = out.prev_sample, out.pred_original_sample
    if run.mask_lat is not None:
        last = i + 1 == len(run.timesteps)
        known = (
            run.guide_latent
            if last
            else sched.add_noise(run.guide_latent, run.noise, run.timesteps[i + 1 : i + 2])
        )
        x_prev = run.mask_lat * x_prev + (1 - run.mask_lat) * known
        x0 = run.mask_lat * x0 + (1 - run.mask_lat) * run.guide_latent
    return x_prev.to(model.dtype), x0


@torch.no_grad()
def _finish(p, model, run: _Run, latent, done, size, started, *, cancelled: bool) -> SDEditResult:
    image = decode(model, latent).cpu()  # [n, 3, H, W]
    if run.mask_px is not None and p.paste_back:
        image = run.mask_px * image + (1 - run.mask_px) * run.guide
    return SDEditResult(
        params=p,
        images=to_uint8(image),
        latent=latent.float().cpu().numpy(),
        timesteps=done,
        size=size,
        seconds=time.perf_counter() - started,
        cancelled=cancelled,
    )
