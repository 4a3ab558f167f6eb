"""Cost per inversion step as resolution and batch grow (random-weight StyleGAN2s of the bundled
model's widths, so every resolution is comparable)."""

from __future__ import annotations

import numpy as np

from bench.common import Table, timed
from core.jobs.invert import invert
from core.jobs.params import InvertParams
from core.jobs.runner import run_to_completion


def run(*, resolutions=(32, 64, 128), batches=(1, 4, 16), steps: int = 5, cfg=None) -> Table:
    from core.gan.stylegan2 import StyleGAN2Generator

    cfg = cfg or {}
    table = Table(
        "Scaling: ms per inversion step (w+, Adam, L1)", ["resolution", *[f"batch {b}" for b in batches]]
    )
    for res in resolutions:
        G = StyleGAN2Generator(img_resolution=res, **cfg).eval().requires_grad_(False)
        G.set_mean_w(G.sample_w(1000).mean(0))
        target = np.full((res, res, 3), 120, np.uint8)
        row = []
        for b in batches:
            p = InvertParams(target=target, steps=steps, num_samples=b, perceptual_weight=0.0)
            row.append(timed(lambda p=p, G=G: run_to_completion(invert(p, G)), repeats=1) / steps * 1e3)
        table.add(res, *row)
    return table
