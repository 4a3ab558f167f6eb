"""Engine options, measured before kept: channels_last memory format and torch.compile, against the
eager default, on one inversion step (w+ synthesis forward + backward to the latent, batch 4).

torch.compile is reported with its one-off compile time, from an empty inductor cache: it pays only
when a run's saved seconds exceed it, which decides whether the app should offer it for a job of a
few hundred steps.
"""

from __future__ import annotations

import os
import tempfile
import time

import torch

from bench.common import Table, timed


def _step(synth, ws: torch.Tensor) -> None:
    synth(ws).square().mean().backward()


def run(G, *, quick: bool = False, batch: int = 4, job_steps: int = 200) -> Table:
    G = G.eval().requires_grad_(False)
    G.set_fused_modconv(False)
    ws = G.broadcast(G.mean_w()[None].expand(batch, -1)).clone().requires_grad_(True)
    repeats = 3 if quick else 10
    table = Table(
        f"Engine options: one w+ inversion step, batch {batch} (forward + backward)",
        ["option", "ms/step", "vs eager", "one-off cost (s)", f"net over a {job_steps}-step job (s)"],
    )
    eager = timed(lambda: _step(G.synthesis, ws), repeats=repeats)
    table.add("eager (default)", 1e3 * eager, "1.00x", 0.0, 0.0)
    G.to(memory_format=torch.channels_last)
    cl = timed(lambda: _step(G.synthesis, ws), repeats=repeats)
    G.to(memory_format=torch.contiguous_format)
    table.add("channels_last", 1e3 * cl, f"{eager / cl:.2f}x", 0.0, job_steps * (cl - eager))
    if not quick:  # compiling costs minutes on CPU: the full suite only
        # A cold compile, as a person's first job pays it: inductor's on-disk cache would otherwise
        # hold the last bench run's kernels (measured: 70 s cold, 8 s from that cache).
        previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-inductor-")
        try:
            torch._dynamo.reset()
            t0 = time.perf_counter()
            compiled = torch.compile(G.synthesis)
            _step(compiled, ws)
            cost = time.perf_counter() - t0
            ct = timed(lambda: _step(compiled, ws), repeats=repeats)
        finally:
            if previous is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous
        table.add(
            "torch.compile (inductor, cold cache)", 1e3 * ct, f"{eager / ct:.2f}x", cost,
            cost + job_steps * (ct - eager),
        )  # fmt: skip
    return table
