"""``python -m desktop.screenshots --out docs/images``: run each panel's job with the bundled models
in a real MainWindow and save a picture of the window after each (docs; also a whole-app check).

Runs offscreen by default (Qt renders widgets the same); under Xvfb set QT_QPA_PLATFORM=xcb.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("latent_canvas.screenshots")


def _wait(app, cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        app.processEvents()
        time.sleep(0.01)
        if time.monotonic() > deadline:
            raise TimeoutError("job did not finish in time")


def _paint_scribble(canvas) -> None:
    """A blue background band, a ginger head blob and two green eye dots (64 px model coordinates)."""
    from PySide6.QtGui import QColor

    from desktop.canvas import Tool

    canvas.tool = Tool.BRUSH
    for colour, size, points in (
        ((70, 110, 210), 8, [(4, 5), (60, 5)]),
        ((70, 110, 210), 8, [(4, 12), (14, 12)]),
        ((70, 110, 210), 8, [(50, 12), (60, 12)]),
        ((225, 130, 50), 14, [(24, 30), (40, 30)]),
        ((225, 130, 50), 10, [(26, 38), (38, 38)]),
        ((60, 200, 80), 3, [(27, 29), (27, 29)]),
        ((60, 200, 80), 3, [(37, 29), (37, 29)]),
    ):
        canvas.colour, canvas.brush_size = QColor(*colour), size
        canvas.stroke(points)


def _inpaint_setup(canvas) -> None:
    """A held-out procedural cat as the base, its eyes and nose painted out with the mask brush."""
    from core.data import procedural
    from desktop.canvas import Layer, Tool

    cat = procedural.render(procedural.attributes_for_seed(procedural.split_seed("eval", 7)), resolution=64)
    canvas.clear_layer(Layer.SCRIBBLE)
    canvas.set_base(cat)
    canvas.tool, canvas.brush_size = Tool.MASK, 12
    canvas.stroke([(20, 30), (44, 30)])
    canvas.stroke([(30, 40), (34, 40)])
    canvas.tool = Tool.BRUSH


def _open_window(out: Path, worker=None):
    """The app on the bundled generator, with no confirmation boxes, once the model has loaded."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from core.paths import DEFAULT_GENERATOR, bundled_model
    from desktop.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    settings = QSettings(str(out / ".screenshots.ini"), QSettings.Format.IniFormat)
    settings.setValue("confirm_close", False)
    w = MainWindow(bundled_model(DEFAULT_GENERATOR), worker=worker, settings=settings)
    w.resize(1360, 820)
    w.show()
    _wait(app, lambda: w.model_info is not None, 120)
    return app, w


def _runner(app, w, out: Path, timeout: float):
    """``run(panel, name)``: run the panel's job, wait for its result, save ``panel-<name>.png``."""
    from PySide6.QtWidgets import QMessageBox

    errors: list[str] = []
    # A failed job would open a modal box and stall the script: record the message instead, and stop.
    QMessageBox.warning = staticmethod(
        lambda _parent, title, text, *r, **k: errors.append(f"{title}: {text}")
    )

    def run(panel, name: str) -> None:
        n = len(w.history_entries)
        w.tabs.setCurrentWidget(panel)
        if not w.run_job():
            raise RuntimeError(f"{name}: the job did not start: {errors}")
        _wait(app, lambda: len(w.history_entries) > n or bool(errors), timeout)
        if errors:
            raise RuntimeError(f"{name}: {errors[-1]}")
        app.processEvents()
        path = out / f"panel-{name}.png"
        w.grab().save(str(path))
        log.info("%s -> %s", name, path)

    return run


def _interpolate_shot(app, w, out: Path) -> None:
    w.history.clearSelection()
    w.history.item(0).setSelected(True)
    w.history.item(1).setSelected(True)
    w.tabs.setCurrentWidget(w.interp_panel)
    w.interp_panel.slider.setValue(500)
    _wait(app, lambda: not w._frames, 30)  # the frame arrived
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3:
        app.processEvents()
        time.sleep(0.01)
    w.grab().save(str(out / "panel-interpolate.png"))


def worker_shot(out: Path, steps: int, timeout: float) -> None:
    """``app-worker.png``: the app connected to a worker server by URL and token (a worker process on
    loopback standing in for a GPU box), after a scribble job ran there."""
    from core.worker.client import LocalWorker
    from desktop.worker import ProcessWorker

    server = LocalWorker()
    url = server.start()
    try:
        app, w = _open_window(out, worker=ProcessWorker(url, server.token, restart=False))
        _paint_scribble(w.canvas)
        w.invert_panel.steps.setValue(steps)
        _runner(app, w, out, timeout)(w.invert_panel, "worker")
        (out / "panel-worker.png").replace(out / "app-worker.png")
        w.worker.stop()
    finally:
        server.stop()
        server.remove_token()


def live_shot(out: Path, timeout: float) -> None:
    """``app-encoder-live.png``: Live on with encoder init, the window grabbed in the middle of a stroke
    (the mouse still down) showing the encoder's frame for the paint so far."""
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtGui import QColor
    from PySide6.QtTest import QTest

    app, w = _open_window(out)
    panel = w.invert_panel
    if panel.init.findText("encoder") < 0:
        raise RuntimeError(f"the bundled generator has no encoder: {w.model_info.get('encoder_note')}")
    w.tabs.setCurrentWidget(panel)
    _paint_scribble(w.canvas)
    w.canvas.undo_stack.undo()  # the eyes come back with the live stroke below
    w.canvas.undo_stack.undo()
    panel.init.setCurrentText("encoder")
    w.live.setChecked(True)
    c, r = w.canvas, w.canvas.view_rect()
    at = lambda x, y: QPoint(int(r.x() + x * r.width() / 64), int(r.y() + y * r.height() / 64))  # noqa: E731
    c.colour, c.brush_size = QColor(60, 200, 80), 3
    QTest.mousePress(c, Qt.MouseButton.LeftButton, pos=at(27, 29))
    for x in (27, 28, 27, 37, 36, 37):  # the eyes, in one stroke
        QTest.mouseMove(c, at(x, 29))
        _wait(app, lambda: w._frame_inflight is None, timeout)
    _wait(app, lambda: w._frame_inflight is None, timeout)
    app.processEvents()
    w.grab().save(str(out / "app-encoder-live.png"))
    log.info("live frame -> %s", out / "app-encoder-live.png")
    QTest.mouseRelease(c, Qt.MouseButton.LeftButton, pos=at(37, 29))
    w.worker.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m desktop.screenshots")
    ap.add_argument(
        "--worker-shot", action="store_true", help="only app-worker.png: the app on a worker server"
    )
    ap.add_argument(
        "--live-shot", action="store_true", help="only app-encoder-live.png: a live encoder frame mid-stroke"
    )
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    ap.add_argument(
        "--steps", type=int, help="the Invert tab's steps (default: the mode's own, as a person gets)"
    )
    ap.add_argument("--timeout", type=float, default=900)
    a = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    # Autosaves go to a folder of this run's own: a person's recoverable session must not stall the
    # script with a recovery question, and the script must not leave one behind for them.
    import tempfile

    os.environ["LATENT_CANVAS_AUTOSAVE_DIR"] = tempfile.mkdtemp(prefix="lc-screenshots-")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a.out.mkdir(parents=True, exist_ok=True)
    if a.worker_shot:
        worker_shot(a.out, a.steps or 200, a.timeout)
        return 0
    if a.live_shot:
        live_shot(a.out, a.timeout)
        return 0
    app, w = _open_window(a.out)
    run = _runner(app, w, a.out, a.timeout)
    _paint_scribble(w.canvas)
    if a.steps:
        w.invert_panel.steps.setValue(a.steps)
    w.invert_panel.samples.setValue(4)  # the grid a person asks for
    run(w.invert_panel, "invert")
    w.invert_panel.init.setCurrentText("random")
    w.invert_panel.seed.setValue(3)
    w.invert_panel.samples.setValue(4)
    run(w.invert_panel, "variations")
    w.prior_panel.task.setCurrentIndex(w.prior_panel.task.findData("clip"))
    w.prior_panel.prompt.setText("an orange tabby cat with green eyes on a blue background")
    w.prior_panel.steps.setValue(max((a.steps or 200) // 4, 10))
    run(w.prior_panel, "prior")
    w.sd_panel.prompt.setText("a white cat with blue eyes on a pink background")
    w.sd_panel.samples.setValue(4)
    run(w.sd_panel, "sdedit")
    _inpaint_setup(w.canvas)
    w.invert_panel.mode.setCurrentIndex(2)  # inpaint: the base image outside the painted hole
    w.invert_panel.samples.setValue(4)
    run(w.invert_panel, "inpaint")
    _interpolate_shot(app, w, a.out)
    w.worker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
