"""Diffusion prior: what the K denoising updates cost beside the task step they follow.

One projection step = one task step (G forward, task loss, backward through G, Adam) + the prior's
projection (for the diffusion prior, K = 10 denoiser passes on the latent batch). Both halves are
timed on the same latents, then whole jobs with prior "none" and "diffusion" run side by side so the
ratio is also seen end to end. Goal: the K updates cost < 15 % of the task step.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bench.common import Table, timed


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
    from core.prior.cli import BUNDLED_PRIOR

    G = load_generator(bundled_model(DEFAULT_GENERATOR))
    return G, load_wdiffusion(bundled_model(BUNDLED_PRIOR)), load_clip(device="cpu")


def _params(task: str, G, samples: int, steps: int, prior: str):
    from core.prior.params import ProjectParams

    r = G.resolution
    target = np.full((r, r, 3), 128, np.uint8)
    mask = np.ones((r, r), np.float32)
    mask[r // 4 : 3 * r // 4, r // 4 : 3 * r // 4] = 0
    kw = {"prompt": "a black cat with green eyes"} if task == "clip" else {"target": target, "mask": mask}
    return ProjectParams(task=task, prior=prior, steps=steps, num_samples=samples, preview_every=steps, **kw)


def _job_seconds_per_step(p, G, **kw) -> float:
    from core.jobs.invert import run_to_completion
    from core.jobs.project import project

    t = time.perf_counter()
    run_to_completion(project(p, G, **kw))
    return (time.perf_counter() - t) / p.steps


def run(*, quick: bool = False) -> Table:
    from core.jobs.project import _ws, initial_w
    from core.prior.priors import make_prior
    from core.prior.tasks import make_task

    G, model, clip = _models(quick)
    perc = None
    if not quick:
        from core.losses import make_perceptual_loss

        perc = make_perceptual_loss("bundled")
    table = Table(
        "Diffusion prior: K = 10 denoising updates vs one task step (W space, noise 5% -> 0%)",
        ["task", "samples", "task step ms", "K denoise ms", "denoise / task",
         "job ms/step, no prior", "job ms/step, diffusion", "job overhead"],
    )  # fmt: skip
    tasks = ["inpaint"] if quick else ["clip", "inpaint"]
    steps = 3 if quick else 10
    for task in tasks:
        for n in (1, 4) if not quick else (2,):
            p = _params(task, G, n, steps, "diffusion")
            loss = make_task(p, G.resolution, "cpu", clip=clip, perceptual_loss=perc)
            prior = make_prior("diffusion", model=model, steps=10, t_start=0.05, t_end=0.0)
            w = initial_w(G, p, "cpu").requires_grad_(True)
            opt = torch.optim.Adam([w], lr=p.lr)

            def task_step(w=w, opt=opt, loss=loss) -> None:
                opt.zero_grad(set_to_none=True)
                loss(G.synthesis(_ws(G, w))).sum().backward()
                opt.step()

            gen = torch.Generator().manual_seed(0)
            t_task = timed(task_step, repeats=15, warmup=3)
            t_prior = timed(
                lambda w=w, prior=prior, gen=gen: prior.project(w.detach(), generator=gen),
                repeats=15,
                warmup=3,
            )
            kw = {"clip": clip, "perceptual_loss": perc, "prior_model": model}
            job_none = _job_seconds_per_step(_params(task, G, n, steps, "none"), G, **kw)
            job_diff = _job_seconds_per_step(p, G, **kw)
            table.add(task, n, 1e3 * t_task, 1e3 * t_prior, f"{t_prior / t_task:.1%}",
                      1e3 * job_none, 1e3 * job_diff, f"{job_diff / job_none - 1:+.1%}")  # fmt: skip
    return table
