"""Projection with a latent prior (seed paper: "Conditioning GANs at Test Time using Denoising
Diffusion").

Alternating algorithm (prior none / mean / cluster / diffusion): start from seeded mapping samples
(or the mean w, or a given latent), then per step one Adam step on ``task loss + prior penalty``
followed by the prior's projection, for the diffusion prior K denoising updates whose noise level
falls from 5% to 0%.

Task-guided diffusion (prior "task-guided", the paper's future work): start from noise in W and run
the reverse diffusion with every step's noise prediction guided by the task gradient (classifier
guidance, :mod:`core.prior.samplers.guided`).
"""

from __future__ import annotations

import logging
from collections.abc import Generator as Gen
from dataclasses import dataclass, field

import numpy as np
import torch

from core.errors import JobError
from core.gan.base import Generator, LatentSpace
from core.gan.latents import (
    check_latent_shape,
    latent_shape,
    render,
    require_space,
    result_ws,
    start_w,
    use_class,
)
from core.imaging import image_to_tensor, mask_to_tensor, paste_back, to_uint8
from core.jobs.events import Progress
from core.jobs.params import ProjectionParams
from core.jobs.tasks import make_task
from core.prior.model import WDenoiser
from core.prior.priors import log_density_proxy, make_prior
from core.prior.samplers import ContinuousDDIM, guided_eps, uniform_times
from core.prior.wstats import WStats, wstats_from_generator
from core.types import CancelToken

log = logging.getLogger(__name__)


@dataclass
class ProjectionResult:
    params: ProjectionParams
    latent: np.ndarray  # w [N, w_dim], w+ [N, num_ws, w_dim] or s [N, s_dim], as params.space
    ws: np.ndarray | None  # [N, num_ws, w_dim], what synthesis consumed (None in Style space)
    images: np.ndarray  # [N, H, W, 3] uint8
    task_loss: np.ndarray  # [N] of the returned latents
    log_density: np.ndarray | None  # [N] the prior's log-density proxy, when a diffusion model was given
    loss_history: list[dict[str, float]] = field(default_factory=list)
    cancelled: bool = False


def initial_w(G: Generator, p: ProjectionParams, device) -> torch.Tensor:
    """Starting latents: [N, w_dim], [N, num_ws, w_dim] in w+, or the styles [N, s_dim] of the w start."""
    if p.init == "latent":
        lat = torch.as_tensor(np.asarray(p.init_latent, dtype=np.float32), device=device)
        lat = check_latent_shape(G, p.space, lat)
        return lat.expand(p.num_samples, *lat.shape[1:]).clone() if lat.shape[0] == 1 else lat.clone()
    w = start_w(G, p.init == "mean", p.num_samples, p.seed, device, truncation=p.truncation)
    if p.space is LatentSpace.S:
        with torch.no_grad():
            return G.styles(G.broadcast(w)).clone()
    return w if p.space is LatentSpace.W else G.broadcast(w).clone()


def _check_prior_model(p: ProjectionParams, G: Generator, model: WDenoiser | None) -> None:
    if p.prior in ("diffusion", "task-guided") and model is None:
        raise JobError(f"the {p.prior} prior needs a trained diffusion model")
    if model is None:
        return
    if (model.cfg.space == "s") != (p.space is LatentSpace.S):
        where = "Style space" if model.cfg.space == "s" else "W"
        raise JobError(f"this diffusion prior works in {where}; the job's latent is {p.space.value}")
    size = latent_shape(G, p.space)[-1]  # the row a prior works on: w_dim, or s_dim in Style space
    if model.cfg.w_dim != size:
        raise JobError(
            f"the diffusion prior is for latents of size {model.cfg.w_dim}, the generator's are {size}"
        )


def project(
    params: ProjectionParams,
    G: Generator,
    *,
    clip=None,
    perceptual_loss: torch.nn.Module | None = None,
    prior_model: WDenoiser | None = None,
    wstats: WStats | None = None,
    cancel: CancelToken | None = None,
) -> Gen[Progress, None, ProjectionResult]:
    """Run a projection; yields :class:`Progress` every step and returns a :class:`ProjectionResult`.

    Args:
        params: every input of the job.
        G: the generator (frozen).
        clip: a :class:`core.clip.ClipModel`, for the CLIP task.
        perceptual_loss: a masked perceptual loss (:mod:`core.losses`) for the image tasks; without
            one they use masked L1.
        prior_model: the W diffusion prior, for "diffusion" and "task-guided" (and the log-density).
        wstats: W statistics for "mean" and "cluster" (else computed from 10k mapping samples; in Style
            space, statistics of the styles).
        cancel: checked before every step; a cancelled job returns what it has, ``cancelled=True``.
    """
    p = params
    G.eval().requires_grad_(False)
    use_class(G, p.class_label)
    device = G.device_of()
    require_space(G, p.space)
    _check_prior_model(p, G, prior_model)
    task = make_task(p, G.resolution, device, clip=clip, perceptual_loss=perceptual_loss)
    if p.prior == "task-guided":
        return (yield from _task_guided(p, G, task, prior_model, cancel))
    if p.prior in ("mean", "cluster") and p.space is LatentSpace.S:
        from core.prior.wstats import sstats_from_generator

        log.info("Style-space statistics from 10k mapping samples")
        wstats = sstats_from_generator(G)
    elif p.prior in ("mean", "cluster") and wstats is None:
        log.info("no W statistics given; computing them from 10k mapping samples")
        wstats = wstats_from_generator(G)
    prior = make_prior(
        p.prior,
        wstats=wstats,
        model=prior_model,
        weight=p.prior_weight,
        steps=p.denoise_steps,
        t_start=p.noise_start,
        t_end=p.noise_end,
        eta=p.denoise_eta,
        solver=p.denoise_solver,
    )
    return (yield from _alternate(p, G, task, prior, prior_model, cancel))


def _alternate(p: ProjectionParams, G, task, prior, model, cancel) -> Gen[Progress, None, ProjectionResult]:
    gen = torch.Generator().manual_seed(p.seed + 1)  # the diffusion updates' noise
    w = initial_w(G, p, G.device_of()).requires_grad_(True)  # [N, w_dim] or [N, num_ws, w_dim]
    opt = torch.optim.Adam([w], lr=p.lr)
    history: list[dict[str, float]] = []
    for step in range(1, p.steps + 1):
        if cancel is not None and cancel.cancelled:
            return _result(G, p, w, task, model, history, cancelled=True)
        # 1. one task step on task loss + prior penalty
        opt.zero_grad(set_to_none=True)
        images = render(G, p.space, w)  # [N, 3, R, R]
        task_loss, penalty = task(images), prior.penalty(w)  # [N], [N]
        (task_loss + penalty).sum().backward()  # summed: each latent's gradient is its own
        opt.step()
        # 2. the prior's projection (diffusion: K denoising updates, noise 5% -> 0%)
        with torch.no_grad():
            w.copy_(prior.project(w.detach(), generator=gen))
        task_mean, prior_mean = torch.stack([task_loss.detach().mean(), penalty.detach().mean()]).tolist()
        losses = {"task": task_mean, "prior": prior_mean}  # one device-to-host copy per step
        losses["total"] = losses["task"] + losses["prior"]
        history.append(losses)
        yield _progress(p, step, losses, images, w)
    return _result(G, p, w, task, model, history, cancelled=False)


def _task_guided(
    p: ProjectionParams, G, task, model: WDenoiser, cancel
) -> Gen[Progress, None, ProjectionResult]:
    if model.cfg.space != p.space.value:
        raise JobError(f"task-guided diffusion runs in the prior's own space ({model.cfg.space})")
    gen = torch.Generator().manual_seed(p.seed)
    x = torch.randn(p.num_samples, model.cfg.dim, generator=gen).to(G.device_of())  # x_1 ~ N(0, I)
    sched = ContinuousDDIM(uniform_times(p.steps), eta=p.guided_eta)
    shown: dict[str, torch.Tensor] = {}

    def loss_of_x0(x0: torch.Tensor) -> torch.Tensor:
        shown["images"] = render(G, p.space, _w_units(model, x0))  # [N, 3, R, R]
        return task(shown["images"])

    history: list[dict[str, float]] = []
    for step, t in enumerate(sched.timesteps, start=1):
        if cancel is not None and cancel.cancelled:
            return _result(G, p, _w_units(model, x), task, model, history, cancelled=True)
        # guided noise prediction (task gradient on x0_hat), then one reverse step t -> t - 1/steps
        eps, loss, _ = guided_eps(model, x, t, loss_of_x0, scale=p.guidance_scale, mode=p.guidance)
        x = sched.step(eps, t, x, generator=gen)
        losses = {"task": float(loss.mean()), "t": t}
        history.append(losses)
        yield _progress(p, step, losses, shown["images"], _w_units(model, x))
    return _result(G, p, _w_units(model, x), task, model, history, cancelled=False)


def _w_units(model: WDenoiser, x: torch.Tensor) -> torch.Tensor:
    """Normalised model-space latents [N, dim] -> w [N, w_dim], w+ [N, num_ws, w_dim] or s [N, s_dim]."""
    w = model.denormalize(x)
    return w if model.cfg.space in ("w", "s") else w.view(-1, model.cfg.num_ws, model.cfg.w_dim)


def _display(p: ProjectionParams, images: torch.Tensor) -> torch.Tensor:
    """What the person sees: for inpainting with ``paste_back``, the target outside the hole (kept
    pixels exactly as they were, the generated hole blended in over a feathered band inside it)."""
    if p.task != "inpaint" or not p.paste_back:
        return images
    res, dev = images.shape[-1], images.device
    return paste_back(images, image_to_tensor(p.target, res, dev), mask_to_tensor(p.mask, res, dev))


def _progress(
    p: ProjectionParams, step: int, losses: dict, images: torch.Tensor, w: torch.Tensor
) -> Progress:
    show = step % p.preview_every == 0 or step == p.steps
    return Progress(
        step,
        p.steps,
        losses,
        preview=to_uint8(_display(p, images)) if show else None,
        latent=w.detach().cpu().numpy().copy() if show else None,
    )


@torch.no_grad()
def _result(G, p: ProjectionParams, w, task, model, history, *, cancelled: bool) -> ProjectionResult:
    w = w.detach()
    ws = result_ws(G, p.space, w)
    images = render(G, p.space, w, ws)
    task_loss = task(images)
    density = log_density_proxy(model, w).cpu().numpy() if model is not None else None
    return ProjectionResult(
        params=p,
        latent=w.cpu().numpy().copy(),
        ws=None if ws is None else ws.cpu().numpy().copy(),
        images=to_uint8(_display(p, images)),
        task_loss=task_loss.cpu().numpy().copy(),
        log_density=density,
        loss_history=history,
        cancelled=cancelled,
    )


__all__ = ["ProjectionParams", "ProjectionResult", "initial_w", "project"]
