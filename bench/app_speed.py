"""What the person waits for: first preview, a whole scribble job, a slider frame, GUI stalls,
cold start and memory. Jobs go through the real desktop Worker thread (offscreen Qt)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Table


def _app():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def _wait(app, cond, timeout=600.0) -> None:
    """Run the Qt event loop until ``cond()`` holds, sleeping between events as the app's loop does.

    (A ``processEvents()`` + 0.5 ms sleep poll woke the GUI thread 2000 times a second; each wake
    takes the GIL from the worker, which made jobs look 1.2-1.3x slower than in the app.)
    """
    from PySide6.QtCore import QEventLoop, QTimer

    if cond():
        return
    loop, timer = QEventLoop(), QTimer()
    deadline = time.perf_counter() + timeout

    def check() -> None:
        if cond() or time.perf_counter() > deadline:
            loop.quit()

    timer.timeout.connect(check)
    timer.start(50)  # a cheap check, 20 times a second; what is timed is when messages arrived
    loop.exec()
    timer.stop()
    if not cond():
        raise TimeoutError("benchmark job did not finish")


def _scribble(resolution: int) -> np.ndarray:
    rgba = np.zeros((resolution, resolution, 4), np.uint8)
    r = resolution
    rgba[: r // 5, :, :3], rgba[: r // 5, :, 3] = (60, 90, 200), 255  # sky-blue band on top
    rgba[r // 3 : 2 * r // 3, r // 3 : 2 * r // 3, :3] = (230, 140, 40)  # an orange blob
    rgba[r // 3 : 2 * r // 3, r // 3 : 2 * r // 3, 3] = 255
    return rgba


def in_child(name: str, model_path: Path, **kw) -> Table:
    """Run one of this module's app benchmarks in a fresh process and return its table.

    As in the app, that process's GUI thread never runs torch. Where it has (the bench's own
    inversion tables run torch in the main thread), OpenMP keeps a second thread team; with more
    OpenMP threads than cores, libgomp stops spinning at its barriers, and every parallel op of the
    worker then pays a futex sleep and wake: jobs measured 1.5-2x slower than in the app.
    """
    import json

    args = json.dumps({"name": name, "model": str(model_path), "kw": kw})
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    out = subprocess.run(
        [sys.executable, "-m", "bench.app_speed", args],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"bench.app_speed {name} failed:\n{out.stderr[-3000:]}")
    d = json.loads(out.stdout.strip().splitlines()[-1])
    return Table(d["title"], d["columns"], d["rows"])


def worker_jobs(model_path: Path, *, steps: int = 200, perceptual_weight: float = 0.0) -> Table:
    import torch

    from core.jobs.invert import scribble_params
    from desktop.widgets import StallMeter
    from desktop.worker import InterpolateFrameRequest, JobRequest, LoadModelRequest, MsgKind, Worker

    app = _app()
    loss = f"L1 + bundled perceptual x{perceptual_weight:g}" if perceptual_weight else "L1 only"
    table = Table(
        f"Through the desktop worker ({model_path.name}, {loss}, {torch.get_num_threads()} CPU threads)",
        ["measure", "value", "goal"],
    )
    worker, got = Worker(), []
    worker.message.connect(lambda m: got.append((time.perf_counter(), m)))
    worker.start()
    try:
        worker.submit(JobRequest(1, "load_model", LoadModelRequest(str(model_path))), supersede=False)
        _wait(app, lambda: any(m.kind is MsgKind.MODEL_LOADED for _, m in got))
        G_res = next(m.payload["resolution"] for _, m in got if m.kind is MsgKind.MODEL_LOADED)
        params = scribble_params(  # as the Invert panel sends it: a preview every step, throttled
            _scribble(G_res), steps=steps, perceptual_weight=perceptual_weight, preview_every=1
        )  # by the worker to one per 50 ms
        worker.submit(JobRequest(2, "invert", params))  # warm-up: mean w, allocator, perceptual net
        _wait(app, lambda: any(m.job_id == 2 and m.kind is MsgKind.RESULT for _, m in got))
        # Timed with nothing else on the GUI thread, as in the app; the stall meter's 5 ms ticks take
        # the GIL 200 times a second and slow the job ~15%, so the stalls are measured on a rerun.
        t0 = time.perf_counter()
        worker.submit(JobRequest(3, "invert", params))
        _wait(app, lambda: any(m.job_id == 3 and m.kind is MsgKind.RESULT for _, m in got))
        first = min(t for t, m in got if m.job_id == 3 and m.kind is MsgKind.PROGRESS)
        done = max(t for t, m in got if m.job_id == 3 and m.kind is MsgKind.RESULT)
        meter = StallMeter(5)
        meter.start()
        worker.submit(JobRequest(4, "invert", params))
        _wait(app, lambda: any(m.job_id == 4 and m.kind is MsgKind.RESULT for _, m in got))
        stalls = meter.stop()
        table.add("time to first preview (s)", first - t0, "< 0.3")
        table.add(f"scribble-to-image, {steps} steps, end to end (s)", done - t0, "< 10")
        table.add("GUI event-loop stall while it ran, p99 (ms)", stalls["p99_ms"], "< 16")
        table.add("GUI event-loop stall while it ran, max (ms)", stalls["max_ms"], "< 50")
        result = next(m.payload for _, m in got if m.job_id == 3 and m.kind is MsgKind.RESULT)
        ends = [result.ws[0], result.ws[0][::-1].copy()]
        lat = []
        for i, t in enumerate(np.linspace(0, 1, 11)):
            t0 = time.perf_counter()
            frame = InterpolateFrameRequest(ends, "w+", float(t))
            worker.submit(JobRequest(10 + i, "interpolate_frame", frame))
            _wait(app, lambda i=i: any(m.job_id == 10 + i and m.kind is MsgKind.RESULT for _, m in got))
            lat.append(next(t for t, m in got if m.job_id == 10 + i and m.kind is MsgKind.RESULT) - t0)
        table.add("slider: new position to new frame, median (ms)", float(np.median(lat[1:])) * 1e3, "< 50")
    finally:
        worker.stop()
    return table


def window_stalls(model_path: Path, *, steps: int = 200) -> Table:
    """The whole app in one process: a MainWindow (offscreen) runs a scribble job from its Invert panel
    while the event loop's stalls are measured -- previews, the loss curve and the progress bar drawn."""
    from PySide6.QtCore import QSettings

    from desktop.main_window import MainWindow
    from desktop.widgets import StallMeter

    app = _app()
    home = tempfile.mkdtemp()
    os.environ.setdefault("LATENT_CANVAS_AUTOSAVE_DIR", home)
    settings = QSettings(str(Path(home) / "bench.ini"), QSettings.Format.IniFormat)
    settings.setValue("confirm_close", False)
    w = MainWindow(model_path, settings=settings)
    w.resize(1200, 800)
    w.show()
    _wait(app, lambda: w.model_info is not None)
    r = w.canvas.resolution
    w.canvas.stroke([(r // 5, r // 5), (4 * r // 5, 4 * r // 5)])
    w.invert_panel.steps.setValue(steps)
    table = Table(
        f"GUI event loop while the app runs a {steps}-step scribble job (MainWindow, offscreen)",
        ["measure", "value", "goal"],
    )
    for _ in ("warm-up", "measured"):  # the second run is the one reported
        n = len(w.history_entries)
        meter = StallMeter(5)
        meter.start()
        w.run_job()
        _wait(app, lambda n=n: len(w.history_entries) > n)
        stats = meter.stop()
    table.add("timer ticks served", stats["ticks"], "")
    table.add("event-loop stall, p99 (ms)", stats["p99_ms"], "< 16")
    table.add("event-loop stall, max (ms)", stats["max_ms"], "< 50")
    w.worker.stop()
    w.close()
    return table


def cold_start(model_path: Path) -> Table:
    """Launch the app in a child process; it prints when its window is visible and the model loaded."""
    table = Table("App start (child process, offscreen)", ["measure", "value", "goal"])
    code = (
        "import time,sys; t0=time.perf_counter();"
        "from PySide6.QtWidgets import QApplication; app=QApplication([]);"
        "from desktop.main_window import MainWindow; w=MainWindow(sys.argv[1]);"
        "w.show(); app.processEvents();"
        "print('visible', time.perf_counter()-t0, flush=True);"
        "exec('while w.model_info is None: app.processEvents(); time.sleep(0.005)');"
        "print('loaded', time.perf_counter()-t0, flush=True); w.worker.stop()"
    )
    home = tempfile.mkdtemp()  # fresh settings, no autosaves to offer
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": home, "LATENT_CANVAS_AUTOSAVE_DIR": home}
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, str(model_path)], env=env, capture_output=True, text=True, timeout=300
    )
    wall = time.perf_counter() - t0
    vals = dict(line.split() for line in out.stdout.splitlines() if line.startswith(("visible", "loaded")))
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    table.add("interpreter start to visible window (s)", float(vals.get("visible", "nan")), "< 3")
    table.add("... to bundled model loaded and sampled (s)", float(vals.get("loaded", "nan")), "")
    table.add("process wall time incl. exit (s)", wall, "")
    table.add("peak RSS with the bundled generator loaded (MB)", usage.ru_maxrss / 1024, "< 1536")
    entry = _entry_point_start(model_path, env)
    table.add("`python -m desktop.app`: process start to model ready (s)", entry, "")
    return table


def _entry_point_start(model_path: Path, env: dict) -> float:
    """The README's launcher itself (argparse, logging, qasync loop): seconds until its smoke hook
    reports the canvas of a loaded model."""
    shot = Path(env["HOME"]) / "shot.png"
    cmd = [sys.executable, "-m", "desktop.app", "--model", str(model_path), "--smoke-screenshot", str(shot)]
    t0 = time.perf_counter()
    app = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in app.stdout:
            if line.startswith("canvas-rect"):
                return time.perf_counter() - t0
        return float("nan")
    finally:
        app.kill()
        app.wait()


def all_models_rss() -> Table:
    """Peak RSS of one process holding every bundled model: generator, tiny CLIP, W prior, tinysd."""
    code = (
        "import resource, torch\n"
        "from core.models.io import load_generator\n"
        "from core.paths import DEFAULT_GENERATOR, bundled_model\n"
        "from core.clip import load_clip\n"
        "from core.paths import BUNDLED_PRIOR\n"
        "from core.prior.model import load_wdiffusion\n"
        "from core.sd.model import load_sd_model\n"
        "G = load_generator(bundled_model(DEFAULT_GENERATOR)); clip = load_clip(device='cpu')\n"
        "prior = load_wdiffusion(bundled_model(BUNDLED_PRIOR)); sd = load_sd_model(None, device='cpu')\n"
        "with torch.no_grad(): G.synthesis(G.broadcast(G.mapping(torch.randn(8, G.z_dim))))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    table = Table("Memory with every bundled model loaded (child process)", ["measure", "value", "goal"])
    value = float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else float("nan")
    table.add("peak RSS: generator + tiny CLIP + W prior + tinysd (MB)", value, "< 1536")
    return table


if __name__ == "__main__":  # python -m bench.app_speed '{"name": ..., "model": ..., "kw": {...}}'
    import dataclasses
    import json

    spec = json.loads(sys.argv[1])
    from bench.worker_speed import compare_workers

    fn = {"worker_jobs": worker_jobs, "window_stalls": window_stalls, "compare_workers": compare_workers}[
        spec["name"]
    ]
    result = fn(Path(spec["model"]), **spec["kw"])
    print(json.dumps(dataclasses.asdict(result)), flush=True)
