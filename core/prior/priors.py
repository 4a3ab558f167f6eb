"""Latent priors for projection, one interface: a differentiable ``penalty`` added to the task loss
and/or a ``project`` step applied to the latent batch after each task step.

- ``none``: neither.
- ``mean``: penalty ``weight * mean((w - mean_w)^2)``: a Gaussian around the mean w (seed: "mean prior").
- ``cluster``: penalty to the nearest of the k-means centres of 50k mapping samples (seed: "cluster
  prior"), read from the generator's W statistics.
- ``diffusion``: K denoising steps whose noise level falls from 5% to 0% of the diffusion time
  (seed: "10 diffusion update steps for each task update ... decreasing noise from 5% to 0%").

Latents are in W units: ``[N, w_dim]`` or w+ ``[N, num_ws, w_dim]``; a W-space diffusion model acts
on each row of a w+ latent.
"""

from __future__ import annotations

import logging

import torch

from core.errors import ModelLoadError
from core.prior import schedule
from core.prior.model import WDenoiser
from core.prior.samplers.ddim import ContinuousDDIM, uniform_times
from core.prior.samplers.picard import solve_chain
from core.prior.wstats import WStats
from core.types import DENOISE_SOLVERS

log = logging.getLogger(__name__)

PRIOR_KINDS = ("none", "mean", "cluster", "diffusion")


# --- priors -----------------------------------------------------------------------------------


class Prior:
    """No prior: zero penalty, identity projection. The base of the others."""

    kind = "none"

    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        """Per-sample penalty [N] (differentiable) of latents ``w`` [N, w_dim] or [N, num_ws, w_dim]."""
        return w.new_zeros(w.shape[0])

    def project(self, w: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """The latents moved towards the prior (same shape), without gradient."""
        return w


class MeanPrior(Prior):
    """``weight * mean((w - mean_w)^2)``; its negative gradient points at the mean w."""

    kind = "mean"

    def __init__(self, mean: torch.Tensor, *, weight: float) -> None:
        self.mean, self.weight = mean, float(weight)

    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        return self.weight * (w - self.mean.to(w)).square().flatten(1).mean(1)


class ClusterPrior(Prior):
    """``weight * min_k mean((w - c_k)^2)`` per row; its negative gradient points at the nearest centre."""

    kind = "cluster"

    def __init__(self, centres: torch.Tensor, *, weight: float) -> None:
        self.centres, self.weight = centres, float(weight)

    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        rows = w.reshape(w.shape[0], -1, w.shape[-1])  # [N, R, w_dim]
        d2 = (rows[:, :, None, :] - self.centres.to(w)).square().mean(-1)  # [N, R, k]
        return self.weight * d2.min(-1).values.mean(1)


class DiffusionPrior(Prior):
    """K reverse-diffusion updates from ``t_start`` to ``t_end`` (5% -> 0%), the current latent taken as
    the noisy sample at ``t_start``.

    Args:
        model: the trained denoiser (frozen).
        steps: K, updates per projection (seed: 10).
        t_start, t_end: diffusion times the group runs between (seed: 0.05 and 0).
        eta: 0 = deterministic DDIM updates; 1 = ancestral (fresh noise each update, more diversity).
        solver: "sequential" runs the K updates one after another; "picard" solves them all at once
            by Picard sweeps to within ``tol`` (:mod:`core.prior.samplers.picard`), warm-started from
            the last projection's chain; "auto" picks Picard on the CPU while the K batched rows stay
            few (K x rows <= :attr:`PICARD_MAX_ROWS`), where a pass costs little more than one row's.
        tol: Picard's settling tolerance, in the network's normalised units (W's per-dim std).
    """

    kind = "diffusion"
    SOLVERS = DENOISE_SOLVERS
    # K x rows up to which Picard's batched passes win ("auto"): a job's warm-started Picard runs
    # 2 sweeps, so it wins at 1-4 samples and ties from 6 (pass timings: docs/performance.md).
    PICARD_MAX_ROWS = 40

    def __init__(
        self,
        model: WDenoiser,
        *,
        steps: int = 10,
        t_start: float = 0.05,
        t_end: float = 0.0,
        eta: float = 0.0,
        solver: str = "auto",
        tol: float = 1e-3,
    ) -> None:
        if solver not in self.SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; known: {', '.join(self.SOLVERS)}")
        self.model, self.solver, self.tol = model, solver, float(tol)
        self.scheduler = ContinuousDDIM(
            uniform_times(steps, start=t_start, end=t_end), eta=eta, final_time=t_end
        )
        self.last_sweeps = 0  # Picard sweeps of the last projection (0: it ran sequentially)
        self._chain: torch.Tensor | None = None  # the last chain's offsets x_k - x_0, a warm start

    def uses_picard(self, rows: int, device: torch.device | str = "cpu") -> bool:
        """Whether a projection of ``rows`` rows on ``device`` runs Picard sweeps. "auto" keeps to the
        CPU, where it was measured: each sweep's convergence test reads a value back to the host,
        which on a GPU is a synchronisation the sequential loop does not have."""
        if self.solver != "auto":
            return self.solver == "picard"
        k = len(self.scheduler.timesteps)
        return torch.device(device).type == "cpu" and k * rows <= self.PICARD_MAX_ROWS

    @torch.no_grad()
    def project(self, w: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.model.normalize(_rows(self.model, w))  # [M, dim]
        if self.uses_picard(x.shape[0], x.device):
            x = self._project_picard(x, generator)
        else:
            x = self._project_sequential(x, generator)
        return self.model.denormalize(x).reshape(w.shape)

    def _plan(self, picard: bool, x: torch.Tensor) -> tuple:
        """The network pass, the K times' conditioning (stacked for Picard) and each update's coefficients."""
        rows = x.shape[0]
        conds = self.model.grid_conditioning(tuple(self.scheduler.timesteps))
        sched, updates = self.scheduler, []
        for t in sched.timesteps:
            # eps and the DDIM update are both linear: x <- c_sample x + c_eps (c_x x + c_out out)
            c_sample, c_eps, std = sched.coefficients(t)
            c_x, c_out = self.model.eps_coefficients(sched.alpha_bar(t))
            updates.append((c_sample + c_eps * c_x, c_eps * c_out, std))  # x <- a x + c out + std z
        if not picard:
            return self._raw, conds, updates
        stacked = [  # each block's (gain, offset) of the K times, each row repeated: [K x rows, width]
            tuple(
                torch.cat([per_time[b][i] for per_time in conds]).repeat_interleave(rows, 0) for i in (0, 1)
            )
            for b in range(len(conds[0]))
        ]
        a, c = (torch.tensor([u[i] for u in updates]).to(x)[:, None, None] for i in (0, 1))  # [K, 1, 1]
        return self._raw, stacked, a, c, [u[2] for u in updates]

    def _raw(self, x: torch.Tensor, cond: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        return self.model.raw(x, None, cond)

    def _project_sequential(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raw, conds, updates = self._plan(False, x)
        for cond, (a, c, std) in zip(conds, updates, strict=True):
            out = raw(x, cond)  # before x is scaled in place
            x = x.mul_(a).add_(out, alpha=c)
            x = self.scheduler.add_step_noise(x, std, generator)
        self.last_sweeps = 0
        return x

    def _project_picard(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raw, stacked, a, c, stds = self._plan(True, x)
        rows, k = x.shape[0], len(stds)
        # the noise the sequential loop would draw, in its order: the same fixed point
        noise = torch.zeros(k, *x.shape, dtype=x.dtype, device=x.device) if any(stds) else None
        for i, std in enumerate(stds):
            if std > 0:
                noise[i] = std * torch.randn(x.shape, generator=generator).to(x)

        def f(inp: torch.Tensor, s: int) -> torch.Tensor:  # updates s .. s + n - 1 of inp [n, rows, dim]
            n = inp.shape[0]
            cond = stacked if s == 0 else [(g[s * rows :], o[s * rows :]) for g, o in stacked]
            y = torch.addcmul(
                a[s : s + n] * inp, c[s : s + n], raw(inp.reshape(n * rows, -1), cond).view_as(inp)
            )
            return y if noise is None else y.add_(noise[s : s + n])

        last = self._chain
        fits = last is not None and (last.shape[1:], last.dtype, last.device) == (x.shape, x.dtype, x.device)
        guess = last if fits else None
        xs, self.last_sweeps = solve_chain(f, x, k, tol=self.tol, guess=guess)
        self._chain = xs[1:] - xs[0]
        return xs[-1]

    def log_density(self, w: torch.Tensor, **kw) -> torch.Tensor:
        return log_density_proxy(self.model, w, **kw)


def _rows(model: WDenoiser, w: torch.Tensor) -> torch.Tensor:
    """Latents as the model's rows: a W model sees each w of a w+ latent, a w+ model whole latents."""
    if w.shape[-1] != model.cfg.w_dim:
        raise ModelLoadError(
            f"the diffusion prior is for w_dim {model.cfg.w_dim}, the latent has {w.shape[-1]}"
        )
    return w.reshape(-1, model.cfg.w_dim) if model.cfg.space == "w" else w.reshape(w.shape[0], -1)


@torch.no_grad()
def log_density_proxy(
    model: WDenoiser,
    w: torch.Tensor,
    *,
    times: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.4),
    draws: int = 4,
    seed: int = 0,
) -> torch.Tensor:
    """A log-density proxy per latent [N]: minus the mean denoising error over fixed (t, noise) draws.

    The denoising loss is (up to weighting and constants) the negative variational bound on log p
    (Ho et al. 2020, eq. 12), so higher means more typical of the training latents. Deterministic for a
    given ``seed``. For a W model on w+ latents, the mean over rows.
    """
    x0 = model.normalize(_rows(model, w))  # [M, dim]
    gen = torch.Generator().manual_seed(seed)
    errs = []
    for t in times:
        for _ in range(draws):
            eps = torch.randn(x0.shape, generator=gen).to(x0)
            tv = torch.full((x0.shape[0],), t, dtype=x0.dtype, device=x0.device)
            errs.append((model(schedule.add_noise(x0, eps, tv), tv) - eps).square().mean(1))
    return -torch.stack(errs).mean(0).view(w.shape[0], -1).mean(1)


def make_prior(
    kind: str,
    *,
    wstats: WStats | None = None,
    model: WDenoiser | None = None,
    weight: float = 0.1,
    steps: int = 10,
    t_start: float = 0.05,
    t_end: float = 0.0,
    eta: float = 0.0,
    solver: str = "auto",
) -> Prior:
    """Build a prior of ``kind`` (one of :data:`PRIOR_KINDS`).

    Args:
        wstats: W statistics (mean and k-means centres), for "mean" and "cluster".
        model: the trained denoiser, for "diffusion".
        weight: penalty weight of "mean" and "cluster".
        steps, t_start, t_end, eta, solver: the diffusion projection group (see :class:`DiffusionPrior`).
    """
    if kind == "none":
        return Prior()
    if kind in ("mean", "cluster") and wstats is None:
        raise ValueError(f"the {kind} prior needs W statistics")
    if kind == "mean":
        return MeanPrior(wstats.mean, weight=weight)
    if kind == "cluster":
        return ClusterPrior(wstats.centres, weight=weight)
    if kind == "diffusion":
        if model is None:
            raise ValueError("the diffusion prior needs a trained denoiser")
        return DiffusionPrior(model, steps=steps, t_start=t_start, t_end=t_end, eta=eta, solver=solver)
    raise ValueError(f"unknown prior {kind!r}; known: {', '.join(PRIOR_KINDS)}")
