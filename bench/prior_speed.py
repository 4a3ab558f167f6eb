"""Diffusion prior: what the K denoising updates cost beside the task step they follow.

One projection step = one task step (G forward, task loss, backward through G, Adam) + the prior's
projection (for the diffusion prior, K = 10 denoiser passes on the latent batch). Both halves are
timed on the same latents, then whole jobs with prior "none" and "diffusion" run side by side so the
ratio is also seen end to end. Goal: the K updates cost < 15 % of the task step. The job solves the
K updates by Picard sweeps where the batch is small (core.prior.samplers.picard); the sequential
loop is timed beside it on the same latents, and the largest difference between the two is shown.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from bench.common import Table


def _models(quick: bool):
    from core.models.io import load_generator
    from core.paths import DEFAULT_GENERATOR, bundled_model
    from core.prior.model import WDiffusionConfig, build_wdiffusion, load_wdiffusion

    if quick:
        from core.gan.stylegan2 import StyleGAN2Generator

        torch.manual_seed(0)
        G = StyleGAN2Generator(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16)
        return (
            G.eval().requires_grad_(False),
            build_wdiffusion(WDiffusionConfig(w_dim=16, width=64)).eval(),
            None,
        )
    from core.clip import load_clip
    from core.paths import BUNDLED_PRIOR

    G = load_generator(bundled_model(DEFAULT_GENERATOR))
    return G, load_wdiffusion(bundled_model(BUNDLED_PRIOR)), load_clip(device="cpu")


def _params(task: str, G, samples: int, steps: int, prior: str):
    from core.jobs.params import ProjectionParams

    r = G.resolution
    target = np.full((r, r, 3), 128, np.uint8)
    mask = np.ones((r, r), np.float32)
    mask[r // 4 : 3 * r // 4, r // 4 : 3 * r // 4] = 0
    kw = {"prompt": "a black cat with green eyes"} if task == "clip" else {"target": target, "mask": mask}
    return ProjectionParams(
        task=task, prior=prior, steps=steps, num_samples=samples, preview_every=steps, **kw
    )


def _job_seconds_per_step(p, G, **kw) -> float:
    from core.jobs.projection import project
    from core.jobs.runner import run_to_completion

    t = time.perf_counter()
    run_to_completion(project(p, G, **kw))
    return (time.perf_counter() - t) / p.steps


def _alternate(task_step, w, model, *, repeats: int, warmup: int):
    """Task steps and projections alternated as the job runs them, each half timed: the projection
    follows a latent the task step just moved, so Picard's warm start sees what it sees in a job.

    Returns median seconds of the task step, of the sequential K updates and of the job's solver,
    the job's solver as "picard (median sweeps)" or "sequential", and the largest difference between
    the two results (W units over W's per-dim std).
    """
    from core.prior.priors import DiffusionPrior

    gen, gen_seq = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    ours, seq = DiffusionPrior(model), DiffusionPrior(model, solver="sequential")
    times, sweeps, diff = {"task": [], "seq": [], "ours": []}, [], 0.0
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        task_step()
        t1 = time.perf_counter()
        projected = ours.project(w.detach(), generator=gen)  # right after the task step, as in a job
        t2 = time.perf_counter()
        ref = seq.project(w.detach(), generator=gen_seq)  # on warm caches: flatters the baseline
        t3 = time.perf_counter()
        with torch.no_grad():
            w.copy_(projected)
        if i >= warmup:
            for k, dt in zip(times, (t1 - t0, t3 - t2, t2 - t1), strict=True):
                times[k].append(dt)
            sweeps.append(ours.last_sweeps)
            diff = max(diff, float(((projected - ref) / model.std).abs().max()))
    solver = f"picard ({statistics.median(sweeps):g})" if ours.uses_picard(w.shape[0]) else "sequential"
    return (*(statistics.median(v) for v in times.values()), solver, diff)


def run(*, quick: bool = False) -> Table:
    from core.gan.latents import latent_to_ws
    from core.jobs.projection import initial_w
    from core.jobs.tasks import make_task

    G, model, clip = _models(quick)
    perc = None
    if not quick:
        from core.losses import make_perceptual_loss

        perc = make_perceptual_loss("bundled")
    table = Table(
        "Diffusion prior: K = 10 denoising updates vs one task step (W space, noise 5% -> 0%)",
        ["task", "samples", "task step ms", "K denoise ms, sequential", "K denoise ms, as the job",
         "solver (sweeps)", "max diff", "denoise / task", "job ms/step, no prior",
         "job ms/step, diffusion", "job overhead"],
    )  # fmt: skip
    tasks = ["inpaint"] if quick else ["clip", "inpaint"]
    steps = 3 if quick else 10
    for task in tasks:
        for n in (1, 4) if not quick else (2,):
            p = _params(task, G, n, steps, "diffusion")
            loss = make_task(p, G.resolution, "cpu", clip=clip, perceptual_loss=perc)
            w = initial_w(G, p, "cpu").requires_grad_(True)
            opt = torch.optim.Adam([w], lr=p.lr)

            def task_step(w=w, opt=opt, loss=loss, space=p.space) -> None:
                opt.zero_grad(set_to_none=True)
                loss(G.synthesis(latent_to_ws(G, space, w))).sum().backward()
                opt.step()

            t_task, t_seq, t_job, sweeps, diff = _alternate(task_step, w, model, repeats=15, warmup=3)
            kw = {"clip": clip, "perceptual_loss": perc, "prior_model": model}
            job_none = _job_seconds_per_step(_params(task, G, n, steps, "none"), G, **kw)
            job_diff = _job_seconds_per_step(p, G, **kw)
            table.add(task, n, 1e3 * t_task, 1e3 * t_seq, 1e3 * t_job, sweeps, f"{diff:.0e}",
                      f"{t_job / t_task:.1%}", 1e3 * job_none, 1e3 * job_diff,
                      f"{job_diff / job_none - 1:+.1%}")  # fmt: skip
    return table
