"""SDEdit: seconds per step of our job against the same steps written directly on diffusers components.

The direct loop is what a diffusers user writes for img2img with classifier-free guidance: a DDIM
scheduler, noise the guide to the first timestep, one batched (uncond, cond) UNet pass per step, the
scheduler's step, decode. Ours is :func:`core.sd.pipeline.sdedit` as the app runs it (a preview of the
predicted x0 at most every 50 ms, the worker's repaint interval), then with a preview every step, then
with previews off. Same model, guide, prompt, seed and schedule. Goal: wrapper overhead <= 5 %.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import torch

from bench.common import Table

PROMPT = "an orange tabby cat with green eyes on a blue background"


def _model(quick: bool):
    from core.sd.model import load_sd_model

    if quick:
        from core.sd.tiny import write_tiny_pipeline

        return load_sd_model(write_tiny_pipeline(tempfile.mkdtemp()), device="cpu", tiny_vae=None)
    return load_sd_model(None, device="cpu")


@torch.no_grad()
def direct_loop(model, guide: np.ndarray, *, steps: int, strength: float, scale: float, seed: int) -> float:
    """Seconds per executed step of the plain diffusers loop."""
    from diffusers import DDIMScheduler

    from core.sd.pipeline import decode, encode, image_tensor

    t0 = time.perf_counter()
    sched = DDIMScheduler.from_config(dict(model.scheduler_config))
    sched.set_timesteps(steps)
    n = int(steps * strength + 1e-6)
    timesteps = sched.timesteps[steps - n :]
    x0 = encode(model, image_tensor(guide, (model.native_size, model.native_size)))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0)
    x = sched.add_noise(x0, noise, timesteps[:1])
    ctx = model.text_encoder.encode(["", PROMPT]).to(model.device, model.dtype)  # [uncond, cond]
    for t in timesteps:
        out = model.unet(torch.cat([x, x]), t, encoder_hidden_states=ctx).sample
        eps_u, eps_c = out.chunk(2)
        x = sched.step(eps_u + scale * (eps_c - eps_u), t, x, eta=0.0).prev_sample
    decode(model, x)
    return (time.perf_counter() - t0) / len(timesteps)


def job_loop(model, guide: np.ndarray, *, steps: int, strength: float, scale: float, seed: int,
             preview: str, interval: float = 0.0) -> float:  # fmt: skip
    from core.jobs.params import SDEditParams
    from core.jobs.runner import run_to_completion
    from core.jobs.sdedit import sdedit

    p = SDEditParams(guide=guide, prompt=PROMPT, strength=strength, guidance_scale=scale,
                     sampler="ddim", steps=steps, seed=seed, preview=preview,
                     preview_interval_s=interval)  # fmt: skip
    t0 = time.perf_counter()
    result = run_to_completion(sdedit(p, model))
    return (time.perf_counter() - t0) / result.executed_steps


def run(*, quick: bool = False, repeats: int = 5) -> Table:
    model = _model(quick)
    size = model.native_size
    guide = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    table = Table(
        f"SDEdit ({'tiny random pipeline' if quick else 'bundled tinysd'}, {size} px, DDIM, guidance 7.5, "
        "strength 0.6): our job vs the direct diffusers loop",
        ["steps S", "executed", "direct ms/step", "job ms/step (as the app: previews <= 1 per 50 ms)",
         "overhead", "job, a preview every step", "overhead", "job, no preview", "overhead"],
    )  # fmt: skip
    kw = {"strength": 0.6, "scale": 7.5, "seed": 0}
    variants = {
        "app": {"preview": "fast", "interval": 0.05},
        "every": {"preview": "fast"},
        "none": {"preview": "none"},
    }
    for steps in (10,) if quick else (25, 50):
        # Interleaved repeats, the median of each: every loop sees the same machine state.
        times = {"direct": [], **{k: [] for k in variants}}
        if not quick:  # warm-up: first calls pay for allocations and kernel selection
            direct_loop(model, guide, steps=steps, **kw)
            job_loop(model, guide, steps=steps, preview="fast", **kw)
        for _ in range(1 if quick else repeats):
            times["direct"].append(direct_loop(model, guide, steps=steps, **kw))
            for k, v in variants.items():
                times[k].append(job_loop(model, guide, steps=steps, **v, **kw))
        d, *jobs = (float(np.median(times[k])) for k in ("direct", *variants))
        row = [steps, int(steps * 0.6 + 1e-6), 1e3 * d]
        for j in jobs:
            row += [1e3 * j, f"{j / d - 1:+.1%}"]
        table.add(*row)
    return table
