"""Training throughput of the bundled StyleGAN2's recipes, side by side in one run (kimg / hour).

- plain GAN: the first recipe (non-saturating loss, lazy R1, style mixing), batch 16;
- distillation: one regression step G(z) ~ render(z), L1 + the bundled perceptual loss, batch 32;
- adversarial + distillation: the GAN step with the regression term on the same G pass, batch 32;
- the plain GAN with ``precision="bf16"`` (autocast for the G and D passes), the same batch: its
  "x plain GAN" column is the bf16 speed-up on this machine (``precision="auto"`` picks bf16 only
  where the CPU has native bf16 kernels);
- a bf16 probe: a 64 px 3x3 conv (32 channels, batch 32) forward + backward in bf16 against fp32,
  the convolution that dominates a generator step.

Steps are interleaved (one of each kind per round) and the median per kind is reported, so a busy
machine slows every column alike.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import Table


def _trainer(cfg, bank):
    from core.training.stylegan2 import StyleGAN2Trainer

    return StyleGAN2Trainer(cfg, torch.device("cpu"), bank)


def _bf16_probe(quick: bool) -> tuple[float, float]:
    n, c, r = (2, 8, 16) if quick else (32, 32, 64)
    out = []
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(n, c, r, r, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(c, c, 3, 3, dtype=dtype, requires_grad=True)
        x.requires_grad_(True)

        def step(x=x, w=w):
            F.conv2d(x, w, padding=1).sum().backward()

        step()
        t = time.perf_counter()
        for _ in range(3):
            step()
        out.append((time.perf_counter() - t) / 3)
    return out[0], out[1]


def run(*, quick: bool = False, rounds: int = 6) -> Table:
    from core.training.common import ImageBank
    from core.training.stylegan2 import TrainConfig

    res, rounds = (16, 2) if quick else (64, rounds)
    widths = dict(channel_base=128, channel_max=16, d_channel_base=128, d_channel_max=16) if quick else {}
    images = np.random.default_rng(0).integers(0, 256, (64, res, res, 3), dtype=np.uint8)
    bank = ImageBank(images)
    common = dict(resolution=res, n_train=64, fid_samples=0, **widths)
    kinds = {
        "plain GAN (first recipe)": TrainConfig(batch=16, distill_kimg=0, adv_distill_weight=0, **common),
        "plain GAN, bf16 autocast": TrainConfig(
            batch=16, distill_kimg=0, adv_distill_weight=0, precision="bf16", **common
        ),
        "plain GAN, bf16, batch 32": TrainConfig(
            batch=32, distill_kimg=0, adv_distill_weight=0, precision="bf16", **common
        ),
        "distillation (regression)": TrainConfig(batch=32, distill_kimg=1e6, distill_pairs=256, **common),
        "adversarial + distillation": TrainConfig(
            batch=32, distill_kimg=0, distill_pairs=256, adv_distill_weight=1.0, **common
        ),
    }
    trainers = {name: _trainer(cfg, bank) for name, cfg in kinds.items()}
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for tr in trainers.values():  # warm-up, and past the lazy-R1 iteration 0
        tr.step()
        tr.step()
    for _ in range(rounds):
        for name, tr in trainers.items():
            t = time.perf_counter()
            tr.step()
            times[name].append((time.perf_counter() - t) / tr.batch)
    t = Table(
        f"Training throughput, {res} px (median of {rounds} interleaved steps each)",
        ["recipe", "batch", "img/s", "kimg/h", "x plain GAN"],
    )
    base = statistics.median(times["plain GAN (first recipe)"])
    for name, tr in trainers.items():
        s = statistics.median(times[name])
        t.add(name, tr.batch, 1 / s, 3.6 / s, base / s)
    fp32, bf16 = _bf16_probe(quick)
    t.add("probe: 3x3 conv fwd+bwd fp32 (ms)", "", fp32 * 1e3, "", "")
    t.add("probe: same conv in bf16 (ms)", "", bf16 * 1e3, "", f"bf16 at {fp32 / bf16:.2g}x fp32 speed")
    return t
