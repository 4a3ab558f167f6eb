"""Predictor-corrector sampling (Song et al. 2021, "Score-Based Generative Modeling through SDEs",
Algorithm 5 for the VP SDE): at each time a corrector runs Langevin MCMC on ``p_t`` with a step sized
by a target signal-to-noise ratio, then the predictor (here ancestral sampling, the DDPM posterior)
moves to the next time. The seed paper samples its W prior this way.
"""

from __future__ import annotations

import torch

from core.prior import schedule
from core.prior.samplers.ddim import ContinuousDDIM, EpsModel, _tvec, uniform_times


def langevin_correct(
    eps: torch.Tensor,
    t: float,
    dt: float,
    sample: torch.Tensor,
    *,
    snr: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One Langevin corrector step at time ``t`` (Algorithm 5, lines 7-10); ``dt`` is the grid spacing.

    ``alpha_i = 1 - beta_i`` is the discrete signal retention over [t - dt, t].
    """
    grad = schedule.score(eps, t, sample)  # 7. g = s_theta(x, t)
    z = torch.randn(sample.shape, generator=generator).to(sample)  # 8. z ~ N(0, I)
    alpha = float(schedule.alpha_bar(t) / schedule.alpha_bar(max(t - dt, 0.0)))
    # Norms averaged over the batch, as Song et al.'s code: a per-sample ratio explodes for the samples
    # that happen to sit near a mode (small ||g||) in low dimensions.
    ratio = z.flatten(1).norm(dim=1).mean() / grad.flatten(1).norm(dim=1).mean().clamp_min(1e-12)
    step = 2 * alpha * float(snr * ratio) ** 2  # 9. eps = 2 alpha (r ||z|| / ||g||)^2
    return sample + step * grad + (2 * step) ** 0.5 * z  # 10. x <- x + eps g + sqrt(2 eps) z


@torch.no_grad()
def sample_pc(
    model: EpsModel,
    x_T: torch.Tensor,
    *,
    steps: int,
    generator: torch.Generator,
    corrector_steps: int = 1,
    snr: float = 0.1,
) -> torch.Tensor:
    """Sample from pure noise ``x_T`` [N, D]: at each of ``steps`` times, corrector then predictor."""
    sched = ContinuousDDIM(uniform_times(steps), eta=1.0)
    dt = 1.0 / steps
    x = x_T
    for t in sched.timesteps:
        tv = _tvec(t, x)
        for _ in range(corrector_steps):
            x = langevin_correct(model(x, tv), t, dt, x, snr=snr, generator=generator)
        x = sched.step(model(x, tv), t, x, generator=generator)
    return x
