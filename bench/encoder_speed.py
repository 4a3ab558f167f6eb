"""The encoder (issue: encoders), side by side in one run:

- one encoder pass and one live frame (encoder + synthesis) at batch 1: goal < 20 ms for the pass;
- time to reach the PSNR of a 500-step w+ inversion from the mean: mean init against encoder init, on
  held-out cats, the app's losses (goal: 10x less time);
- in the app: a stroke drawn into the MainWindow (offscreen) with Live on and encoder init, the pointer
  moving every 8 ms for a few seconds: encoder frames shown per second while it moves, and the GUI
  event loop's stalls meanwhile (goals: >= 30 frames/s, p99 < 16 ms), with the worker process (the
  app's default) and the in-process thread.

With ``quick``: a tiny 32 px generator and an untrained encoder (checks the benchmark runs).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.app_speed import _app, _wait
from bench.common import Table


def _tiny_model_with_encoder() -> Path:
    import torch

    from core.encoder.model import EncoderConfig, build_encoder, encoder_path_for, save_encoder
    from core.gan.stylegan2 import StyleGAN2Generator
    from core.models.io import save_generator
    from core.models.safe_load import sha256_file

    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=16, w_dim=16, img_resolution=32, channel_base=128, channel_max=16).eval()
    path = save_generator(G, Path(tempfile.mkdtemp()) / "tiny32.safetensors")
    enc = build_encoder(EncoderConfig(32, G.num_ws, G.w_dim, width=8, max_channels=16, hidden=32))
    enc.set_stats(G.mean_w(), torch.ones(G.w_dim))
    save_encoder(enc, encoder_path_for(path), metadata={"generator_sha256": sha256_file(path)})
    return path


def pass_and_quality(model: Path, *, quick: bool) -> Table:
    from core.encoder.model import load_encoder_for
    from core.evals.encoders import _curve, app_default_row, pass_times
    from core.evals.inversion_quality import held_out_images
    from core.losses import make_perceptual_loss
    from core.models.io import load_generator

    G = load_generator(model)
    encoder = load_encoder_for(model, G)
    t = pass_times(G, encoder)
    row = app_default_row(encoder)  # the app's plain inversion with this encoder
    how = f"{row.space}, lr {row.lr}" + (f" ramped up over {row.rampup} steps" if row.rampup else "")
    how += f", {row.refine} ReStyle refinements of the start" if row.refine else ""
    table = Table(
        f"Encoder against optimisation from the mean ({model.name}, batch 1 passes; inversion of held-out "
        f"cats, L1 x10 + bundled perceptual x0.01, Adam; mean init: w+, lr 0.05; encoder: the app's "
        f"default, {how})",
        ["measure", "mean init (optimisation)", "encoder", "ratio", "goal"],
    )
    table.add("one encoder pass (ms)", "", t["encoder_ms"], "", "< 20")
    table.add("live frame: encoder + synthesis (ms)", "", t["frame_ms"], "", "")
    steps, n = (5, 2) if quick else (500, 4)
    targets = held_out_images(n, resolution=G.resolution)
    perc = None if quick else make_perceptual_loss("bundled")
    kw = dict(steps=steps, perceptual=perc, encoder=encoder)
    if perc is None:  # quick: no perceptual backbone needed
        kw["perceptual"] = _NoPerceptual()
    app = dict(space=row.space, lr=row.lr, rampup=row.rampup, refine=row.refine)
    _curve(G, targets[:1], init="encoder", **{**kw, **app, "steps": 2})  # warm-up: first-job costs out
    mean = _curve(G, targets, init="mean", space="w+", **kw)
    enc = _curve(G, targets, init="encoder", **kw, **app)
    goal = mean["psnr"][-1]
    reach = next((i for i, v in enumerate(enc["psnr"]) if v >= goal), None)
    table.add(f"PSNR after {steps} steps (dB, {n} cats)", goal, enc["psnr"][-1], "", "")
    table.add("PSNR at the start (dB)", mean["psnr"][0], enc["psnr"][0], "", "")
    if reach is None:
        table.add(
            f"time to the mean-init {steps}-step PSNR (s)", mean["seconds"][-1], "not reached", "", ">= 10x"
        )
    else:
        t_enc = enc["seconds"][reach]
        table.add(f"time to the mean-init {steps}-step PSNR (s)", mean["seconds"][-1],
                  f"{t_enc:.3g} ({reach} steps)", mean["seconds"][-1] / t_enc, ">= 10x less")  # fmt: skip
    return table


class _NoPerceptual:
    """A zero perceptual term (quick runs: no backbone), with the interface the invert job calls."""

    def prepare(self, target):
        return target

    def __call__(self, pred, feats, mask=None):
        return pred.new_zeros(pred.shape[0])


def _live_window(app, model: Path, kind: str, home: str):
    """A MainWindow on ``model`` (offscreen) with Live on and encoder init, and the list that collects
    the arrival times of encoder frames."""
    from PySide6.QtCore import QSettings

    from desktop.main_window import MainWindow
    from desktop.worker import MsgKind, ProcessWorker, Worker

    settings = QSettings(str(Path(home) / f"bench-{kind}.ini"), QSettings.Format.IniFormat)
    settings.setValue("confirm_close", False)
    w = MainWindow(model, settings=settings, worker=ProcessWorker() if kind == "process" else Worker())
    w.resize(1200, 800)
    w.show()
    _wait(app, lambda: w.model_info is not None)
    w.tabs.setCurrentWidget(w.invert_panel)
    w.invert_panel.init.setCurrentText("encoder")
    w.live.setChecked(True)
    frames: list[float] = []
    real = w._frame_done

    def counting(msg) -> None:
        if msg.kind is MsgKind.RESULT and not isinstance(msg.payload, np.ndarray):
            frames.append(time.perf_counter())
        real(msg)

    w._frame_done = counting
    return w, frames


def _stroke(app, w, frames: list[float], seconds: float) -> tuple[int, int, float]:
    """Draw a spiral stroke, the pointer moving every 8 ms for ``seconds``: (moves, frames shown
    meanwhile, GUI stall p99 ms). Undone afterwards, without the refinement running."""
    from PySide6.QtCore import QPoint, Qt, QTimer
    from PySide6.QtTest import QTest

    from desktop.widgets import StallMeter

    c = w.canvas
    r = c.view_rect()
    angles = np.linspace(0, 6 * np.pi, 400)
    radius = 0.35 * (1 - angles / 30)  # a spiral inwards
    xs = r.x() + (0.5 + radius * np.cos(angles)) * r.width()
    ys = r.y() + (0.5 + radius * np.sin(angles)) * r.height()
    pts = [QPoint(int(x), int(y)) for x, y in zip(xs, ys, strict=True)]
    frames.clear()
    QTest.mousePress(c, Qt.MouseButton.LeftButton, pos=pts[0])
    moves = [0]
    timer = QTimer(interval=8)

    def move() -> None:
        moves[0] += 1
        QTest.mouseMove(c, pts[moves[0] % len(pts)])

    timer.timeout.connect(move)
    meter = StallMeter(5)
    meter.start()
    t0 = time.perf_counter()
    timer.start()
    _wait(app, lambda: time.perf_counter() - t0 >= seconds)
    timer.stop()
    stats = meter.stop()
    shown = sum(t0 <= t <= t0 + seconds for t in frames)
    w.live.setChecked(False)  # the release starts no refinement
    QTest.mouseRelease(c, Qt.MouseButton.LeftButton, pos=pts[moves[0] % len(pts)])
    _wait(app, lambda: w._frame_inflight is None)
    w.live.setChecked(True)
    c.undo_stack.undo()
    return moves[0], shown, stats["p99_ms"]


def live_in_app(model: Path, *, seconds: float, kinds=("process", "thread")) -> Table:
    app = _app()
    table = Table(
        f"Live encoder frames while a stroke is drawn in the app ({model.name}, MainWindow offscreen, "
        f"pointer moving every 8 ms for {seconds:g} s)",
        ["worker", "pointer moves", "frames shown", "frames per second", "GUI stall p99 (ms)", "goal"],
    )
    home = tempfile.mkdtemp()
    os.environ.setdefault("LATENT_CANVAS_AUTOSAVE_DIR", home)
    for kind in kinds:
        w, frames = _live_window(app, model, kind, home)
        _stroke(app, w, frames, seconds)  # warm-up
        moves, shown, p99 = _stroke(app, w, frames, seconds)
        table.add(kind, moves, shown, shown / seconds, p99, ">= 30 frames/s, p99 < 16")
        w.worker.stop()
        w.close()
    return table


def run(*, quick: bool = False, model: Path | None = None):
    if quick or model is None:
        model = _tiny_model_with_encoder() if quick else model
    yield pass_and_quality(model, quick=quick)
    yield live_in_app(
        model, seconds=1.0 if quick else 5.0, kinds=("thread",) if quick else ("process", "thread")
    )
