"""Does the generator's frozen-weight cache (core.gan.frozen) pay on the jobs as a person runs them?

A scribble inversion (w+, Adam, L1, batch 1) and a projection with the W-space diffusion prior
(scribble task, 4 samples, K = 10), each timed with the cache on and with every weight-only term
rebuilt on each call, interleaved (one of each per round) so a busy machine slows both alike. The
issue's bar: keep an optimisation only where it pays by at least 10 % on the job.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from bench.common import Table


def run(*, quick: bool = False) -> Table:
    import core.gan.stylegan2 as sg
    from core.gan.frozen import frozen
    from core.jobs.invert import invert
    from core.jobs.params import InvertParams, ProjectionParams
    from core.jobs.projection import project
    from core.jobs.runner import run_to_completion
    from core.models.io import load_generator
    from core.paths import BUNDLED_PRIOR, DEFAULT_GENERATOR, bundled_model
    from core.prior.model import load_wdiffusion

    G = load_generator(bundled_model(DEFAULT_GENERATOR))
    prior = load_wdiffusion(bundled_model(BUNDLED_PRIOR))
    r = G.resolution
    target = np.zeros((r, r, 3), np.uint8)
    target[r // 4 : 3 * r // 4, r // 4 : 3 * r // 4] = (220, 140, 60)
    mask = np.zeros((r, r), np.float32)
    mask[r // 4 : 3 * r // 4, r // 4 : 3 * r // 4] = 1
    steps = 3 if quick else 40
    inv = InvertParams(target=target, mask=mask, steps=steps, perceptual_weight=0.0, preview_every=10)
    proj = ProjectionParams(
        task="scribble", target=target, mask=mask, steps=max(steps // 3, 1), perceptual_weight=0.0
    )
    jobs = {
        f"scribble inversion, {steps} steps": lambda: run_to_completion(invert(inv, G)),
        f"projection with the W prior, {proj.steps} steps x K 10": lambda: run_to_completion(
            project(proj, G, prior_model=prior)
        ),
    }

    def rebuilt(module, name, fn, *deps):  # every weight-only term computed on each call
        return fn(*deps)

    times: dict[tuple[str, bool], list[float]] = {(j, on): [] for j in jobs for on in (True, False)}
    try:
        for round_ in range(2 if quick else 7):  # round 0 warms every path up and is not counted
            for (job, on), samples in times.items():
                sg.frozen = frozen if on else rebuilt
                t = time.perf_counter()
                jobs[job]()
                if round_:
                    samples.append(time.perf_counter() - t)
    finally:
        sg.frozen = frozen
    table = Table(
        "Generator frozen-weight cache on the jobs (median of interleaved rounds)",
        ["job", "cached s", "rebuilt s", "rebuilt / cached"],
    )
    for job in jobs:
        on, off = statistics.median(times[job, True]), statistics.median(times[job, False])
        table.add(job, on, off, off / on)
    return table
