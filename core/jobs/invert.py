"""GAN inversion: optimise a latent (z, w or w+) so G(latent) matches a target image.

Loss = l1_weight * L1 + perceptual_weight * perceptual + l2_delta_weight * |latent - latent_0|^2,
each masked (``mask`` > 0 is where the target constrains the image). Scribble-to-image passes the
scribble's alpha as the mask; inpainting passes the inverse of the hole.
"""

from __future__ import annotations

import logging
from collections.abc import Generator as Gen
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import JobError
from core.gan.base import Generator, LatentSpace
from core.gan.latents import (
    check_latent_shape,
    render,
    require_space,
    result_ws,
    start_w,
    use_class,
    ws_to_latent,
)
from core.imageio import split_scribble
from core.imaging import image_to_tensor, mask_to_tensor, paste_back, to_uint8
from core.jobs.events import Progress
from core.jobs.params import InvertParams
from core.losses import latent_l2, masked_l1
from core.types import CancelToken

log = logging.getLogger(__name__)


@dataclass
class InvertResult:
    params: InvertParams
    latent: np.ndarray  # in params.space: z [N, z_dim], w [N, w_dim], w+ [N, num_ws, w_dim], s [N, s_dim]
    ws: np.ndarray | None  # [N, num_ws, w_dim], what synthesis consumed (None in Style space)
    images: np.ndarray  # [N, H, W, 3] uint8
    loss_history: list[dict[str, float]] = field(default_factory=list)
    cancelled: bool = False


# --- latent parametrisation -------------------------------------------------------------------


def _mean_z(G: Generator, n: int, device) -> torch.Tensor:
    """The 'mean' start in z: of 10k seeded draws, the z whose w is nearest the mean w.

    z = 0, the distribution's mean, is degenerate: StyleGAN normalises z's second moment (infinite
    gradient at 0) and a DCGAN's ReLUs all sit at exactly 0 there (zero gradient).
    """
    z = torch.randn(10_000, G.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        best = (G.mapping(z) - G.mean_w().to(device)).square().sum(1).argmin()
    return z[best].expand(n, -1).clone()


NO_ENCODER = "init 'encoder' needs an encoder trained for this generator; pick mean or random init"


def initial_latent(G: Generator, p: InvertParams, device, encoder=None) -> torch.Tensor:
    """The starting latent in ``p.space``'s shape (see :class:`InvertResult`).

    With multi-start (``p.starts``): ``p.starts`` random starts, the first of them the mean start
    (``p.init`` "mean") or the encoder's answer ("encoder").
    """
    if p.init == "latent":
        lat = torch.as_tensor(np.asarray(p.init_latent, dtype=np.float32), device=device)
        return check_latent_shape(G, p.space, lat).clone()
    if p.starts:
        lat = initial_latent(G, replace(p, init="random", num_samples=p.starts, starts=0), device)
        if p.init in ("mean", "encoder"):
            lat[:1] = initial_latent(G, replace(p, num_samples=1, starts=0), device, encoder)
        return lat
    if p.space is LatentSpace.S:  # Style space starts where w+ would, through the affine layers
        with torch.no_grad():
            return G.styles(initial_latent(G, replace(p, space=LatentSpace.W_PLUS), device, encoder)).clone()
    if p.init == "encoder":
        return encoder_latent(G, p, encoder, device)
    if p.space is LatentSpace.Z:
        if p.init == "mean":
            return _mean_z(G, p.num_samples, device)
        return torch.randn(p.num_samples, G.z_dim, generator=torch.Generator().manual_seed(p.seed)).to(device)
    w = start_w(G, p.init == "mean", p.num_samples, p.seed, device, truncation=p.truncation)
    return w if p.space is LatentSpace.W else G.broadcast(w).clone()


@torch.no_grad()
def encoder_latent(G: Generator, p: InvertParams, encoder, device) -> torch.Tensor:
    """The encoder's answer for ``p.target`` and ``p.mask`` in ``p.space`` ([N, w_dim] for w: the mean
    of its w+ rows): its first pass, then ``p.encoder_refine`` ReStyle iterations where it has a
    refiner (capped at the ones it was trained for). With several samples from one target, samples
    after the first start ``p.encoder_jitter`` W standard deviations away in a seeded random w
    direction (a batch of targets gets each target's own answer)."""
    from core.encoder.model import prepare_inputs

    if encoder is None:
        raise JobError(NO_ENCODER)
    image, mask = prepare_inputs(p.target, p.mask, encoder.cfg.resolution, device)
    ws = encoder.encode(image, mask, G.synthesis, steps=min(p.encoder_refine, encoder.cfg.refine_steps))
    one_target = ws.shape[0] == 1
    if one_target:
        ws = ws.expand(p.num_samples, -1, -1)
    if p.encoder_jitter > 0 and p.num_samples > 1 and one_target:  # candidates for one target
        noise = torch.randn(p.num_samples, G.w_dim, generator=torch.Generator().manual_seed(p.seed)).to(ws)
        noise[0] = 0  # the first sample is the encoder's own answer
        ws = ws + (p.encoder_jitter * encoder.w_std * noise)[:, None]
    return ws_to_latent(G, p.space, ws).clone()


@torch.no_grad()
def w_statistics(G: Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std [w_dim] of W (10k seeded mapping samples; kept on ``G``)."""
    stats = getattr(G, "_w_statistics", None)
    if stats is None:
        ws = G.sample_w(G.mean_w_samples, seed=0)
        stats = (ws.mean(0), ws.std(0).clamp_min(1e-6))
        G._w_statistics = stats
    return stats


def w_prior_proxy(ws: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A W log-density proxy per sample [N]: the squared W-normalised distance of each layer's w from
    the mean, averaged over layers and dimensions (about 1 for the generator's own samples; larger
    off the manifold). ``ws`` [N, num_ws, w_dim]."""
    mean, std = stats
    return ((ws - mean) / std).square().mean((1, 2))


def w_spread(ws: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """How far the w+ layers spread around their own mean, in W-normalised units [N] (0 for w/z)."""
    return ((ws - ws.mean(1, keepdim=True)) / stats[1]).square().mean((1, 2))


# --- the optimisation loop --------------------------------------------------------------------


def invert(
    params: InvertParams,
    G: Generator,
    *,
    perceptual_loss: torch.nn.Module | None = None,
    cancel: CancelToken | None = None,
    encoder: torch.nn.Module | None = None,
) -> Gen[Progress, None, InvertResult]:
    """Optimise a latent batch towards ``params.target``; yields :class:`Progress` every step and
    returns (as the generator's return value) an :class:`InvertResult`.

    Args:
        params: every input of the job.
        G: the generator (frozen; its parameters get no gradients).
        perceptual_loss: a module with ``prepare(target)`` and ``forward(pred, feats, mask) -> [N]``
            (see :mod:`core.losses`); required when ``params.perceptual_weight > 0``.
        cancel: checked between steps; a cancelled job returns what it has, ``cancelled=True``.
        encoder: the generator's encoder (:mod:`core.encoder`), needed for ``init="encoder"``.
    """
    p = params
    G.eval().requires_grad_(False)  # gradients flow to the latent only
    use_class(G, p.class_label)
    obj = _Objective(p, G, perceptual_loss, encoder)
    latent = obj.latent0.clone().requires_grad_(True)
    latent, opt = _search_starts(p, obj, latent, _make_optimizer(p, latent))  # start_steps 0 only
    history: list[dict[str, float]] = []
    state: dict[str, torch.Tensor] = {}

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        images, terms, total = obj(latent)
        # Sum over samples so each latent's gradient does not shrink as the batch grows.
        total.sum().backward()
        if not state:  # log the point the step started from (L-BFGS also evaluates trial points)
            state.update(
                images=images.detach(), total=total.detach(), **{k: v.detach() for k, v in terms.items()}
            )
        return total.sum()

    for step in range(1, p.steps + 1):
        if cancel is not None and cancel.cancelled:
            return _result(G, p, latent, history, cancelled=True, target=obj.target, mask=obj.mask)
        state.clear()
        _set_lr(p, opt, step)
        opt.step(closure)
        if p.starts > p.num_samples and step == min(p.start_steps, p.steps):
            latent, opt = _keep_best_starts(p, obj, latent, opt, state)
        keys = [k for k in ("total", *_TERMS) if k in state]
        # One device-to-host copy per step for all the logged losses (each float() would be a sync).
        losses = dict(zip(keys, torch.stack([state[k].mean() for k in keys]).tolist(), strict=True))
        history.append(losses)
        show = step % p.preview_every == 0 or step == p.steps
        yield Progress(
            step,
            p.steps,
            losses,
            preview=to_uint8(_shown(p, state["images"], obj.target, obj.mask)) if show else None,
            latent=latent.detach().cpu().numpy().copy() if show else None,
        )
    return _result(G, p, latent, history, cancelled=False, target=obj.target, mask=obj.mask)


_TERMS = ("l1", "perceptual", "l2_delta", "spread", "w_prior")  # the loss terms, in logging order


def _search_starts(p: InvertParams, obj, latent: torch.Tensor, opt, chunk: int = 64):
    """iGAN's search (``start_steps`` 0): score every start as it is, keep the best ``num_samples``
    (otherwise the latent and optimiser as they are). Scored in chunks so hundreds of starts do not
    hold hundreds of images' activations at once."""
    if not (p.starts > p.num_samples and p.start_steps == 0):
        return latent, opt
    scores: dict[str, list[torch.Tensor]] = {}
    full0 = obj.latent0
    try:
        with torch.no_grad():
            for lo in range(0, len(latent), chunk):
                obj.latent0 = full0[lo : lo + chunk]  # the L2-delta term reads it per row
                _, terms, total = obj(latent[lo : lo + chunk])
                for k, v in {"total": total, **terms}.items():
                    scores.setdefault(k, []).append(v)
    finally:
        obj.latent0 = full0
    return _keep_best_starts(p, obj, latent, opt, {k: torch.cat(v) for k, v in scores.items()})


def _keep_best_starts(p: InvertParams, obj, latent: torch.Tensor, opt, state: dict):
    """Multi-start: keep the best ``num_samples`` starts, by task loss plus realism; they continue
    from here (``state`` and the objective's starting latents are cut to them too)."""
    score = state["total"] + p.realism_weight * state.get("w_prior", 0)  # no W proxy in Style space
    keep = score.argsort()[: p.num_samples]
    latent, opt = _select_rows(p, latent, opt, keep)
    obj.latent0 = obj.latent0[keep]
    state.update({k: v[keep] for k, v in state.items()})
    return latent, opt


def perceptual_view(x: torch.Tensor | None, size: int) -> torch.Tensor | None:
    """``x`` [N, C, H, W] (images or masks) as the perceptual loss sees it: area-downsampled to
    ``size`` when larger (NVlabs' projector does this at 256 px), else unchanged; ``size`` 0: unchanged."""
    if x is None or not size or max(x.shape[-2:]) <= size:
        return x
    h, w = x.shape[-2:]
    k = size / max(h, w)
    return F.interpolate(x, size=(max(1, round(h * k)), max(1, round(w * k))), mode="area")


class _Objective:
    """The job's loss: ``l1_weight`` x masked L1 plus each weighted term, per sample [N]."""

    def __init__(self, p: InvertParams, G: Generator, perceptual_loss, encoder=None) -> None:
        require_space(G, p.space)
        if p.space is LatentSpace.S and p.w_prior_weight > 0:
            raise JobError("the W prior term needs a w or w+ latent (Style space has no ws)")
        if p.perceptual_weight > 0 and perceptual_loss is None:
            raise JobError("perceptual_weight > 0 needs a perceptual loss (or set it to 0)")
        self.p, self.G, self.perceptual = p, G, perceptual_loss
        device = G.device_of()
        self.target = image_to_tensor(p.target, G.resolution, device)  # [1 or N, 3, R, R]
        self.mask = mask_to_tensor(p.mask, G.resolution, device)  # [1 or N, 1, R, R] or None
        self.use_perc = p.perceptual_weight > 0
        self.perc_mask = perceptual_view(self.mask, p.perceptual_size)
        with torch.no_grad():  # target features once per job, not every step
            view = perceptual_view(self.target, p.perceptual_size)
            self.target_feats = perceptual_loss.prepare(view) if self.use_perc else None
        self.latent0 = initial_latent(G, p, device, encoder)
        in_w = p.space is not LatentSpace.S
        self.stats = w_statistics(G) if in_w and (p.spread_weight or p.w_prior_weight or p.starts) else None
        self.weights = {
            "perceptual": p.perceptual_weight,
            "l2_delta": p.l2_delta_weight,
            "spread": p.spread_weight,
            "w_prior": p.w_prior_weight,
        }

    def __call__(self, latent: torch.Tensor):
        """``(images [N, 3, R, R], terms {name: [N]}, total [N])`` at ``latent``."""
        p, G = self.p, self.G
        bf16 = torch.autocast(latent.device.type, dtype=torch.bfloat16, enabled=p.precision == "bf16")
        ws = result_ws(G, p.space, latent)  # None in Style space
        with bf16:
            images = render(G, p.space, latent, ws).float()  # [N, 3, R, R]
        terms = {"l1": masked_l1(images, self.target, self.mask)}
        if self.use_perc:
            view = perceptual_view(images, p.perceptual_size)
            with bf16:
                terms["perceptual"] = self.perceptual(view, self.target_feats, self.perc_mask).float()
        if p.l2_delta_weight > 0:
            terms["l2_delta"] = latent_l2(latent - self.latent0)
        if p.spread_weight > 0 and p.space is LatentSpace.W_PLUS:
            terms["spread"] = w_spread(ws, self.stats)
        if self.stats is not None:
            terms["w_prior"] = w_prior_proxy(ws, self.stats)  # logged and used to pick starts, if not weighed
        weighted = (w * terms[k] for k, w in self.weights.items() if k in terms and w)
        total = p.l1_weight * terms["l1"] + sum(weighted)
        return images, terms, total


def _shown(p: InvertParams, images: torch.Tensor, target: torch.Tensor, mask) -> torch.Tensor:
    """What the person sees: G's images, or for inpainting the target pasted back around the hole."""
    return paste_back(images, target, mask) if p.paste_back else images


def _select_rows(p: InvertParams, latent: torch.Tensor, opt: torch.optim.Optimizer, keep: torch.Tensor):
    """The latent rows ``keep`` as a new leaf, with a new optimiser that carries on Adam's moments
    for those rows (L-BFGS's history spans the whole batch, so it starts afresh)."""
    new = latent.detach()[keep].clone().requires_grad_(True)
    new_opt = _make_optimizer(p, new)
    old = opt.state.get(latent, {})
    if p.optimizer == "adam" and old:
        new_opt.state[new] = {k: v[keep].clone() if v.ndim else v.clone() for k, v in old.items()}
    return new, new_opt


def _set_lr(p: InvertParams, opt: torch.optim.Optimizer, step: int) -> None:
    """Adam's lr at ``step`` (1-based): with ``p.lr_rampup``, rising linearly from a fifth of ``p.lr``
    to ``p.lr`` over that many steps (Adam's first updates move every coordinate by about the lr at
    once; small ones there keep a good start good: docs/encoders.md), else ``p.lr`` throughout."""
    if p.optimizer != "adam" or not p.lr_rampup:
        return
    lr = p.lr * (0.2 + 0.8 * min(1.0, (step - 1) / p.lr_rampup))
    for group in opt.param_groups:
        group["lr"] = lr


def _make_optimizer(p: InvertParams, latent: torch.Tensor) -> torch.optim.Optimizer:
    if p.optimizer == "adam":
        return torch.optim.Adam([latent], lr=p.lr, betas=(0.9, 0.999))
    # One L-BFGS iteration per step, so progress and cancel stay per-step. max_eval must be given:
    # its default (max_iter * 5 // 4 = 1) stops the strong-Wolfe search before it moves at all.
    return torch.optim.LBFGS(
        [latent], lr=1.0, max_iter=1, max_eval=25, history_size=20, line_search_fn="strong_wolfe"
    )


@torch.inference_mode()
def _result(G: Generator, p: InvertParams, latent, history, *, cancelled: bool, target, mask) -> InvertResult:
    lat = latent.detach()
    ws = result_ws(G, p.space, lat)
    return InvertResult(
        params=p,
        latent=lat.cpu().numpy().copy(),
        ws=None if ws is None else ws.cpu().numpy().copy(),
        images=to_uint8(_shown(p, render(G, p.space, lat, ws), target, mask)),
        loss_history=history,
        cancelled=cancelled,
    )


def scribble_params(scribble_rgba: np.ndarray, **kw) -> InvertParams:
    """Scribble-to-image: the scribble's alpha is the mask (only painted pixels constrain)."""
    target, mask = split_scribble(scribble_rgba)
    return InvertParams(target=target, mask=mask, **kw)


def inpaint_params(image: np.ndarray, hole: np.ndarray, **kw) -> InvertParams:
    """Inpainting: the loss is everywhere except the hole ([H, W] in [0, 1], 1 = fill this), and the
    result keeps the image outside the hole (``paste_back``, unless ``paste_back=False`` is passed)."""
    kw.setdefault("paste_back", True)
    return InvertParams(target=image, mask=1.0 - np.clip(hole.astype(np.float32), 0, 1), **kw)


__all__ = [
    "InvertParams",
    "InvertResult",
    "invert",
    "scribble_params",
    "inpaint_params",
    "initial_latent",
]
