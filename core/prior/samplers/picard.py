"""Parallel-in-time solution of a chain of sampler updates (Picard iteration).

The projection's K updates ``x_{k+1} = f_k(x_k)`` are sequential, and with one latent each network
pass multiplies a single row by every weight matrix: the pass costs about what reading 8 MB of
weights costs, and ten rows cost little more than one (on 2 CPU cores a 512x512 product takes 24 us
at 1 row, 35 us at 10).
Picard iteration (Shih et al. 2023, "Parallel Sampling of Diffusion Models", Alg. 1) evaluates all K
updates in one batched pass and repeats until the chain stops moving,

    x_{k+1}^{(j+1)} = x_0 + sum_{i <= k} (f_i(x_i^{(j)}) - x_i^{(j)}),

which converges to the sequential chain: after sweep j its first j points are exact, and over the
projection's short low-noise stretch (5% -> 0%) it converges fast. Measured on the bundled prior, in
units of W's per-dimension std (the projection itself moves a latent ~0.1): three sweeps from a cold
start leave the end point 3e-6 from the sequential one, two warm-started sweeps in a job 2e-5.
A point is settled once a sweep moves it less than ``tol``; the next sweep starts at the first
unsettled point (the paper's sliding window), so it never costs more than K sweeps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ChainStep = Callable[[torch.Tensor, int], torch.Tensor]  # (x [n, *shape] at steps s..s+n-1, s) -> f(x)


def solve_chain(
    f: ChainStep,
    x0: torch.Tensor,
    steps: int,
    *,
    tol: float,
    guess: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """The chain ``x_{k+1} = f_k(x_k)``, ``k < steps``, from ``x0``, by Picard sweeps.

    Args:
        f: ``f(x, s)`` applies updates ``s .. s + n - 1`` to ``x`` [n, *x0.shape] (one row per step).
        x0: the chain's start.
        steps: the number of updates.
        tol: a point is settled when a sweep moves it less than this (max abs over its elements).
        guess: offsets ``x_k - x_0`` [steps, *x0.shape] of points 1..steps to start from (the last
            solve's, for a warm start); none starts every point at ``x0``.

    Returns:
        ``(xs, sweeps)``: the points ``x_0 .. x_steps`` [steps + 1, *x0.shape] and the sweeps run.
    """
    xs = x0.expand(steps + 1, *x0.shape).clone()  # [steps + 1, *shape]
    if guess is not None:
        xs[1:] += guess
    start, sweeps = 0, 0
    while start < steps:
        sweeps += 1
        inp = xs[start:steps]  # [n, *shape]: the inputs of updates start .. steps - 1
        new = xs[start] + (f(inp, start) - inp).cumsum(0)  # x_{start+1} .. x_steps
        moved = torch.linalg.vector_norm(
            new - xs[start + 1 :], ord=float("inf"), dim=tuple(range(1, new.dim()))
        )
        xs[start + 1 :] = new
        settled = next((i for i, m in enumerate(moved.tolist()) if m >= tol), len(moved))
        if settled == len(moved):  # every point stayed within tol: converged
            break
        start += max(settled, 1)  # x_{start+1} came from the exact x_start: exact either way
    return xs, sweeps
