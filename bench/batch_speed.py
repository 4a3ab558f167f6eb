"""``latent-canvas-cli batch`` on Ray against the plain CLI run once per image (a shell loop), on this
machine: seconds per image both ways (Ray's start-up included), and whether the results are equal."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Table


def run(*, quick: bool = False, model: Path | None = None) -> Table:
    from core.imageio import load_image, save_png
    from core.paths import DEFAULT_GENERATOR, bundled_model

    model = model or bundled_model(DEFAULT_GENERATOR)
    n, steps = (2, 3) if quick else (6, 100)
    work = Path(tempfile.mkdtemp(prefix="lc-batch-bench-"))
    rng = np.random.default_rng(0)
    for i in range(n):
        save_png(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), work / "in" / f"img{i}.png")
    opts = ["invert", "--steps", str(steps), "--perceptual", "bundled", "--model", str(model)]
    cli = [sys.executable, "-m", "core.cli"]
    t0 = time.perf_counter()
    for i in range(n):
        image, out = work / "in" / f"img{i}.png", work / "single" / f"img{i}"
        subprocess.run(
            [*cli, *opts, "--image", str(image), "--out", str(out)], check=True, capture_output=True
        )
    plain = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    subprocess.run(
        [*cli, "batch", "--inputs", str(work / "in"), "--out", str(work / "batch"), *opts],
        check=True, capture_output=True,
    )  # fmt: skip
    ray = (time.perf_counter() - t0) / n
    equal = all(
        np.array_equal(
            load_image(work / "single" / f"img{i}" / "result.png"),
            load_image(work / "batch" / f"img{i}" / "result.png"),
        )  # noqa: E501
        for i in range(n)
    )
    table = Table(
        f"Batch of {n} inversions ({steps} steps, {model.name}): plain CLI per image vs batch on Ray",
        ["plain CLI, s / image", "batch on Ray, s / image", "Ray / plain", "results equal", "goal"],
    )
    table.add(plain, ray, ray / plain, "yes" if equal else "NO", "within 10 %, equal")
    return table
