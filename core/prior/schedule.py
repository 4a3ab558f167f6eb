"""The noise schedule of the W-space diffusion prior, as pure functions of continuous time.

Time ``t`` runs over [0, 1]: 0 is clean data, 1 pure noise; the seed paper calls it "the percent noise
in the data". A noised latent is (Ho et al. 2020, eq. 4, in continuous time)::

    x_t = sqrt(alpha_bar(t)) * x_0 + sqrt(1 - alpha_bar(t)) * eps,   eps ~ N(0, I)

with the cosine schedule of Nichol & Dhariwal (2021, eq. 17). Its values at ``t = (i + 1) / T`` are
exactly the ``alphas_cumprod[i]`` of diffusers' ``squaredcos_cap_v2`` schedule with ``T`` training
steps (the products of its betas telescope), so diffusers' schedulers step a model trained here.
"""

from __future__ import annotations

import math

import torch

COSINE_S = 0.008  # Nichol & Dhariwal's offset: keeps beta from vanishing near t = 0
ALPHA_BAR_MIN = 1e-9  # floor at t -> 1, where the cosine reaches 0 (diffusers clips beta likewise)
TRAIN_TIMESTEPS = 1000  # the discrete grid diffusers' schedulers index (model time t = (i + 1) / T)


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.cos((t + COSINE_S) / (1 + COSINE_S) * math.pi / 2).square()


def alpha_bar(t: torch.Tensor | float) -> torch.Tensor:
    """Signal fraction ``alpha_bar(t)`` in (0, 1] (Nichol & Dhariwal eq. 17); ``t`` in [0, 1]."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return (_f(t) / _f(torch.zeros(()))).clamp(ALPHA_BAR_MIN, 1.0)


def sigma(t: torch.Tensor | float) -> torch.Tensor:
    """Noise standard deviation ``sqrt(1 - alpha_bar(t))`` of a unit-variance latent."""
    return (1 - alpha_bar(t)).clamp_min(0).sqrt()


def add_noise(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x_t`` from ``x_0`` [N, D], noise ``eps`` [N, D] and times ``t`` [N] (eq. 4)."""
    ab = _per_sample(alpha_bar(t), x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def predict_x0(eps: torch.Tensor, t: torch.Tensor | float, x_t: torch.Tensor) -> torch.Tensor:
    """Tweedie's estimate of ``x_0`` from the predicted noise (Ho et al. eq. 15)."""
    ab = _per_sample(alpha_bar(t), x_t)
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def score(eps: torch.Tensor, t: torch.Tensor | float, x_t: torch.Tensor) -> torch.Tensor:
    """``grad log p_t(x_t) = -eps / sigma(t)`` (Song et al. 2021, the epsilon-score identity)."""
    return -eps / _per_sample(sigma(t), x_t).clamp_min(1e-12)


def time_index(t: float, timesteps: int = TRAIN_TIMESTEPS) -> int:
    """The diffusers index ``i`` whose model time ``(i + 1) / T`` is nearest ``t``."""
    return min(max(round(t * timesteps) - 1, 0), timesteps - 1)


def index_time(i: torch.Tensor | int, timesteps: int = TRAIN_TIMESTEPS) -> torch.Tensor:
    """The continuous time of diffusers' discrete timestep ``i``: ``(i + 1) / T``."""
    return (torch.as_tensor(i, dtype=torch.float64) + 1) / timesteps


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    v = v.to(device=x.device, dtype=x.dtype)
    return v.view(-1, *([1] * (x.ndim - 1))) if v.ndim == 1 else v
