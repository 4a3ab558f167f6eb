"""Samplers of the W prior: DDIM / ancestral (ours and diffusers'), predictor-corrector, task-guided."""

from __future__ import annotations

import torch

from core.prior.model import WDenoiser
from core.prior.samplers.ddim import ContinuousDDIM, sample_ddim, sample_diffusers, uniform_times
from core.prior.samplers.guided import guided_eps
from core.prior.samplers.pc import langevin_correct, sample_pc

SAMPLERS = ("ddim", "ancestral", "pc", "diffusers-ddim", "diffusers-ancestral")


@torch.no_grad()
def sample_w(
    model: WDenoiser, n: int, *, sampler: str = "pc", steps: int = 100, seed: int = 0, snr: float = 0.1
) -> torch.Tensor:
    """``n`` latents from the prior in W units: [n, w_dim], or [n, num_ws, w_dim] for a w+ model.

    Args:
        sampler: "ddim" (deterministic), "ancestral", "pc" (predictor-corrector), or the diffusers
            versions of the first two.
        steps: reverse steps from t = 1 to 0 (the pc sampler costs two network calls per step).
        seed: seeds the initial noise and every noise draw.
        snr: the pc corrector's signal-to-noise ratio.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    gen = torch.Generator().manual_seed(seed)
    dev = model.mean.device
    x_T = torch.randn(n, model.cfg.dim, generator=gen).to(dev)
    eta = 0.0 if sampler.endswith("ddim") else 1.0
    if sampler == "pc":
        x = sample_pc(model, x_T, steps=steps, generator=gen, snr=snr)
    elif sampler.startswith("diffusers"):
        x = sample_diffusers(model, x_T, steps=steps, eta=eta, generator=gen)
    else:
        x = sample_ddim(model, x_T, steps=steps, eta=eta, generator=gen)
    w = model.denormalize(x)
    return w if model.cfg.space in ("w", "s") else w.view(n, model.cfg.num_ws, model.cfg.w_dim)


__all__ = [
    "SAMPLERS",
    "ContinuousDDIM",
    "guided_eps",
    "langevin_correct",
    "sample_ddim",
    "sample_diffusers",
    "sample_pc",
    "sample_w",
    "uniform_times",
]
