"""Inversion engine vs a textbook projector loop, side by side on the same generator.

The textbook loop is what a projector script writes first (the NVlabs projector's structure with a
per-step preview added): the official fused modulated conv, and a second, no-grad synthesis every
step to show the person the current image. Ours: the unfused modulated conv (no weight gradients,
one kernel layout), and the preview is the image the step already rendered. Same generator weights,
same losses (masked L1), same Adam, same start: the loss curves must agree within float tolerance.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bench.common import Table
from core.gan.latents import latent_to_ws
from core.imaging import to_uint8
from core.jobs.invert import initial_latent, invert
from core.jobs.params import InvertParams
from core.jobs.runner import run_to_completion
from core.losses import masked_l1
from core.types import LatentSpace


def _target(G, seed: int = 1) -> np.ndarray:
    with torch.no_grad():
        z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed))
        return to_uint8(G(z))[0]


def textbook_loop(G, p: InvertParams) -> tuple[float, list[float]]:
    """Seconds per step and the loss curve of the straightforward loop."""
    G.set_fused_modconv(True)
    target = torch.as_tensor(p.target).permute(2, 0, 1)[None].float() / 127.5 - 1
    latent = initial_latent(G, p, "cpu").requires_grad_(True)
    opt = torch.optim.Adam([latent], lr=p.lr, betas=(0.9, 0.999))
    losses = []
    t = time.perf_counter()
    for _ in range(p.steps):
        images = G.synthesis(latent_to_ws(G, p.space, latent))
        loss = p.l1_weight * masked_l1(images, target, None)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        losses.append(float(loss.detach().mean()))
        with torch.no_grad():  # the progress preview
            to_uint8(G.synthesis(latent_to_ws(G, p.space, latent)))
    return (time.perf_counter() - t) / p.steps, losses


def engine_loop(G, p: InvertParams) -> tuple[float, list[float]]:
    G.set_fused_modconv(False)
    t = time.perf_counter()
    result = run_to_completion(invert(p, G))
    return (time.perf_counter() - t) / p.steps, [h["total"] for h in result.loss_history]


def run(G, *, steps: int = 20, batches=(1, 8), repeats: int = 3) -> Table:
    table = Table(
        "Inversion: our engine vs a textbook loop (Adam, L1, preview every step)",
        ["space", "batch", "textbook ms/step", "ours ms/step", "speed-up", "max loss diff"],
    )
    target = _target(G)
    for space in (LatentSpace.Z, LatentSpace.W, LatentSpace.W_PLUS):
        for batch in batches:
            p = InvertParams(
                target=target, space=space, init="random", steps=steps, num_samples=batch,
                perceptual_weight=0.0, seed=0,
            )  # fmt: skip
            engine_loop(G, InvertParams(**{**p.__dict__, "steps": 2}))  # warm caches (mean w, allocator)
            # Interleaved repeats, the median of each: this shared VM's speed drifts 10-20 % between runs.
            runs = [(textbook_loop(G, p), engine_loop(G, p)) for _ in range(repeats)]
            t_text, t_ours = (float(np.median([r[i][0] for r in runs])) for i in (0, 1))
            (_, l_text), (_, l_ours) = runs[0]
            diff = float(
                np.max(np.abs(np.array(l_text) - np.array(l_ours)) / np.maximum(np.abs(l_text), 1e-8))
            )
            table.add(
                space.value, batch, t_text * 1e3, t_ours * 1e3, f"{t_text / t_ours:.2f}×", f"{diff:.1e}"
            )
    G.set_fused_modconv(False)
    return table
