"""The worker process against the in-process thread, side by side in one run (issue: the worker as
its own process). Jobs go through the app's own worker classes (offscreen Qt), alternating A/B.

- first preview and a whole 200-step scribble job (previews throttled to the app's 50 ms);
- per-preview overhead: a job with a preview at every step, unthrottled, minus the same job with one
  preview at the end, per preview;
- GUI event-loop stalls while the job runs (the reader thread decodes frames in this process);
- the remote path on loopback: one preview frame (4 samples) encoded, sent, received and decoded, at
  64 and 512 px, against the compute of one inversion step at that size.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from bench.app_speed import _app, _scribble, _wait
from bench.common import Table


def _job(app, worker, got, job_id, params) -> tuple[float, float, int]:
    """(first preview s, end to end s, previews) of one invert job."""
    from desktop.worker import JobRequest, MsgKind

    t0 = time.perf_counter()
    worker.submit(JobRequest(job_id, "invert", params))
    _wait(app, lambda: any(m.job_id == job_id and m.kind is MsgKind.RESULT for _, m in got))
    mine = [(t, m) for t, m in got if m.job_id == job_id]
    first = min(t for t, m in mine if m.kind is MsgKind.PROGRESS)
    done = max(t for t, m in mine if m.kind is MsgKind.RESULT)
    return first - t0, done - t0, sum(m.kind is MsgKind.PROGRESS for _, m in mine)


def _start(app, kind: str, model: Path, interval: float):
    from desktop.worker import JobRequest, LoadModelRequest, MsgKind, ProcessWorker, Worker

    if kind == "thread":
        worker = Worker(preview_interval_s=interval)
    else:
        worker = ProcessWorker(args=("--preview-interval", str(interval)))
    got: list = []
    worker.message.connect(lambda m: got.append((time.perf_counter(), m)))
    worker.start()
    worker.submit(JobRequest(1, "load_model", LoadModelRequest(str(model))), supersede=False)
    _wait(app, lambda: any(m.kind is MsgKind.MODEL_LOADED for _, m in got))
    return worker, got


def compare_workers(model: Path, *, steps: int = 200, repeats: int = 3) -> Table:
    from core.jobs.invert import scribble_params
    from desktop.widgets import StallMeter

    app = _app()
    table = Table(
        f"Worker process vs in-process thread ({model.name}, {steps}-step scribble, L1 only; A/B alternated)",
        ["measure", "in-process thread", "worker process", "ratio", "goal"],
    )
    res = 64
    params = scribble_params(_scribble(res), steps=steps, perceptual_weight=0.0, preview_every=1)
    every = scribble_params(_scribble(res), steps=60, perceptual_weight=0.0, preview_every=1)
    once = scribble_params(_scribble(res), steps=60, perceptual_weight=0.0, preview_every=60)
    runs: dict[str, dict[str, list]] = {}
    for kind in ("thread", "process"):
        r = runs[kind] = {"first": [], "total": [], "per_preview": [], "p99": []}
        for interval, label in ((0.05, "app"), (0.0, "raw")):
            worker, got = _start(app, kind, model, interval)
            try:
                _job(app, worker, got, 2, params if label == "app" else every)  # warm-up
                for i in range(repeats):
                    if label == "app":
                        first, total, _ = _job(app, worker, got, 10 + i, params)
                        r["first"].append(first)
                        r["total"].append(total)
                        meter = StallMeter(5)
                        meter.start()
                        _job(app, worker, got, 20 + i, params)
                        r["p99"].append(meter.stop()["p99_ms"])
                    else:
                        _, t_every, n = _job(app, worker, got, 30 + i, every)
                        _, t_once, n1 = _job(app, worker, got, 40 + i, once)
                        r["per_preview"].append((t_every - t_once) / max(n - n1, 1))
            finally:
                worker.stop()
    med = {k: {m: statistics.median(v) for m, v in r.items()} for k, r in runs.items()}
    t, p = med["thread"], med["process"]
    table.add("time to first preview (s)", t["first"], p["first"], p["first"] / t["first"], "within 10 %")
    table.add(
        f"{steps}-step scribble, end to end (s)",
        t["total"],
        p["total"],
        p["total"] / t["total"],
        "within 10 %",
    )
    table.add(
        "per-preview overhead, every step unthrottled (ms)",
        t["per_preview"] * 1e3, p["per_preview"] * 1e3, "", "process < 5 ms at 64 px",
    )  # fmt: skip
    table.add("GUI event-loop stall while a job runs, p99 (ms)", t["p99"], p["p99"], "", "< 16")
    return table


def remote_transfer(*, repeats: int = 5) -> Table:
    """Loopback as the stand-in for a network link: one preview frame through a worker connection."""
    import torch

    from core.gan.stylegan2 import StyleGAN2Generator
    from core.jobs.events import Progress
    from core.worker import protocol
    from core.worker.messages import MsgKind, WorkerMessage

    table = Table(
        "Remote path on loopback: one 4-sample preview frame through the WebSocket vs one inversion step",
        ["size", "frame (MB)", "transfer (ms)", "compute per step (ms)", "transfer / compute", "goal"],
    )
    import asyncio
    import threading

    from websockets.asyncio.server import serve
    from websockets.sync.client import connect

    frames: dict[int, bytes] = {}

    async def handler(conn):
        async for msg in conn:
            await conn.send(frames[int(msg)])

    ready, holder = threading.Event(), {}

    def run_server():
        async def main():
            async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as s:
                holder["port"] = s.sockets[0].getsockname()[1]
                ready.set()
                await asyncio.Future()

        asyncio.run(main())

    threading.Thread(target=run_server, daemon=True).start()
    ready.wait(30)
    ws = connect(f"ws://127.0.0.1:{holder['port']}", max_size=None, compression=None).__enter__()
    for res, cfg in ((64, None), (512, dict(channel_base=32768, channel_max=512))):
        preview = np.random.default_rng(0).integers(0, 255, (4, res, res, 3), dtype=np.uint8)
        ev = WorkerMessage(MsgKind.PROGRESS, 1, Progress(1, 200, {"L1": 0.1}, preview))
        times = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            frames[res] = protocol.event(ev)  # encode on the worker
            ws.send(str(res))
            protocol.read_event(ws.recv())  # receive and decode in the app
            times.append(time.perf_counter() - t0)
        transfer = statistics.median(times[1:])
        step = _step_time(res, cfg) if cfg else _step_time(res, None)
        table.add(f"{res} px", len(frames[res]) / 1e6, transfer * 1e3, step * 1e3, transfer / step, "< 0.2")
    ws.close()
    del torch, StyleGAN2Generator
    return table


def _step_time(res: int, cfg: dict | None) -> float:
    """One Adam step of a 4-sample w+ inversion (forward + backward) at ``res``: the bundled model at
    64 px; at 512 px a StyleGAN2 with the official 512 px widths (random weights: same compute)."""
    import torch

    from core.gan.stylegan2 import StyleGAN2Generator
    from core.models.io import load_generator
    from core.paths import DEFAULT_GENERATOR, bundled_model

    if cfg is None:
        G = load_generator(bundled_model(DEFAULT_GENERATOR))
    else:
        G = StyleGAN2Generator(z_dim=512, w_dim=512, img_resolution=res, **cfg).eval()
    n = 4 if res <= 64 else 1
    ws = G.mapping(torch.randn(n, G.z_dim)).unsqueeze(1).repeat(1, G.num_ws, 1).detach().requires_grad_(True)
    opt = torch.optim.Adam([ws], lr=0.01)
    times = []
    for _ in range(3 if res <= 64 else 2):
        t0 = time.perf_counter()
        loss = G.synthesis(ws).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return min(times) * (4 / n)  # per 4-sample step


def tables(model: Path, *, quick: bool = False):
    """The section's tables; the A/B comparison runs in a fresh process whose GUI thread never ran torch,
    as the app's (bench.app_speed.in_child says why that matters)."""
    from bench.app_speed import in_child

    yield in_child("compare_workers", model, steps=5 if quick else 200, repeats=1 if quick else 3)
    if not quick:
        yield remote_transfer()
