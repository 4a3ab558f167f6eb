"""Ancestral and DDIM sampling of the W prior.

:class:`ContinuousDDIM` is the generalised DDIM update on any decreasing grid of continuous times
(the projection job's 5% -> 0% groups need grids diffusers cannot express); :func:`sample_diffusers`
runs diffusers' own ``DDIMScheduler`` over the matching discrete schedule for unconditional samples.
The two agree step for step (tests/test_prior.py checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from core.prior import schedule

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t [N, D], t [N]) -> eps [N, D]


class ContinuousDDIM:
    """``step(model_output, t, sample) -> prev_sample`` along ``timesteps`` (decreasing, in (0, 1]).

    Args:
        timesteps: the times visited; the step from the last one goes to ``final_time``.
        eta: 0 = deterministic DDIM; 1 = ancestral sampling with the DDPM posterior variance.
        final_time: where the last step lands (0 = clean).
    """

    def __init__(self, timesteps: Sequence[float], *, eta: float = 0.0, final_time: float = 0.0) -> None:
        ts = [float(t) for t in timesteps]
        if any(b >= a for a, b in zip(ts, ts[1:], strict=False)) or not ts or ts[-1] <= final_time:
            raise ValueError("timesteps must decrease and stay above final_time")
        self.timesteps, self.eta, self.final_time = ts, float(eta), float(final_time)
        # alpha_bar of every grid time as Python floats, computed once: the projection job runs a
        # 10-update group after every task step, and each update would otherwise evaluate the
        # float64 schedule (several tensor ops) twice.
        self._next = dict(zip(ts, [*ts[1:], self.final_time], strict=True))
        self._ab = {t: float(schedule.alpha_bar(t)) for t in [*ts, self.final_time]}

    def prev_time(self, t: float) -> float:
        return self._next[t]

    def alpha_bar(self, t: float) -> float:
        """``schedule.alpha_bar(t)`` of a grid time (or the final time), as a float."""
        return self._ab[t]

    def coefficients(self, t: float) -> tuple[float, float, float]:
        """``(c_sample, c_eps, std)``: the update from ``t`` is ``c_sample x_t + c_eps eps + std z``.

        DDIM's update is linear in ``x_t`` and ``eps`` for a fixed pair of times, so the projection job,
        which runs the same 10 times after every task step, pays one multiply-add per update.
        """
        s = self.prev_time(t)
        ab_t, ab_s = self._ab[t], self._ab[s]
        # sigma_t(eta) (Song et al. 2021, eq. 16): eta = 1 is the DDPM posterior std (Ho et al. eq. 7)
        std = self.eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)) ** 0.5
        # x_{t-1} = sqrt(ab_s) x_0 + sqrt(1 - ab_s - std^2) eps + std z (eq. 12), with the predicted
        # x_0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t) substituted
        c_sample = (ab_s / ab_t) ** 0.5
        c_eps = max(1 - ab_s - std**2, 0.0) ** 0.5 - c_sample * (1 - ab_t) ** 0.5
        return c_sample, c_eps, std

    def step(
        self,
        model_output: torch.Tensor,
        t: float,
        sample: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One update from ``t`` to the next grid time, given the predicted noise ``model_output``."""
        c_sample, c_eps, std = self.coefficients(t)
        prev = torch.add(c_sample * sample, model_output, alpha=c_eps)
        return self.add_step_noise(prev, std, generator)

    @staticmethod
    def add_step_noise(prev: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
        """``prev + std z`` (in place) for ``std > 0``; ``prev`` itself for the deterministic update."""
        if std > 0:
            prev.add_(torch.randn(prev.shape, generator=generator).to(prev), alpha=std)
        return prev


def uniform_times(steps: int, *, start: float = 1.0, end: float = 0.0) -> list[float]:
    """``steps`` times from ``start`` down to (not including) ``end``, evenly spaced."""
    return [start - (start - end) * k / steps for k in range(steps)]


@torch.no_grad()
def sample_ddim(
    model: EpsModel, x_T: torch.Tensor, *, steps: int, eta: float, generator: torch.Generator
) -> torch.Tensor:
    """Sample from pure noise ``x_T`` [N, D] with :class:`ContinuousDDIM` over ``steps`` uniform times."""
    sched = ContinuousDDIM(uniform_times(steps), eta=eta)
    x = x_T
    for t in sched.timesteps:
        x = sched.step(model(x, _tvec(t, x)), t, x, generator=generator)
    return x


def make_diffusers_ddim(steps: int):
    """diffusers' ``DDIMScheduler`` over our schedule: cosine betas, unclipped, trailing from t = 1."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(
        num_train_timesteps=schedule.TRAIN_TIMESTEPS,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        clip_sample=False,  # latents are not images in [-1, 1]
        set_alpha_to_one=True,  # the last step lands on clean data
        timestep_spacing="trailing",  # start at index T - 1, i.e. t = 1 (pure noise)
    )
    sched.set_timesteps(steps)
    return sched


@torch.no_grad()
def sample_diffusers(
    model: EpsModel, x_T: torch.Tensor, *, steps: int, eta: float, generator: torch.Generator
) -> torch.Tensor:
    """Sample from ``x_T`` [N, D] with diffusers' ``DDIMScheduler`` (eta 0: DDIM; eta 1: ancestral)."""
    sched = make_diffusers_ddim(steps)
    x = x_T
    for i in sched.timesteps:
        t = schedule.index_time(i).to(x)
        noise = torch.randn(x.shape, generator=generator).to(x) if eta > 0 else None
        x = sched.step(model(x, t.expand(x.shape[0])), int(i), x, eta=eta, variance_noise=noise).prev_sample
    return x


def _tvec(t: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
