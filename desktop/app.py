"""``latent-canvas``: start the desktop app on the bundled default model (or ``--model PATH``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from core.compat import torch_version_problem

SERVE_WORKER = "--serve-worker"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [SERVE_WORKER]:  # a standalone build starts its worker process as itself
        from core.worker.server import main as serve

        return serve(argv[1:])
    ap = argparse.ArgumentParser(prog="latent-canvas")
    ap.add_argument("--model", type=Path, help="generator file (.safetensors or StyleGAN2-ADA .pkl)")
    ap.add_argument("--image", help="open this image as the base layer")
    ap.add_argument(
        "--smoke-screenshot",
        type=Path,
        help="(testing) print the canvas' screen rectangle once the model is loaded, save a screenshot "
        "of the window after the first job result, then quit",
    )
    ap.add_argument("--worker", metavar="URL", help="use the worker server at URL (ws://host:port or wss://)")
    ap.add_argument("--token-file", type=Path, help="the bearer token for --worker, in a file")
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="run jobs on a thread of the app, not in a worker process (a crash in torch then ends the app)",
    )
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if problem := torch_version_problem():  # torch < 2.6 cannot load model files safely; no window yet
        sys.exit(f"latent-canvas: {problem}")

    import qasync
    from PySide6.QtWidgets import QApplication

    from core.paths import DEFAULT_GENERATOR, bundled_model
    from desktop.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Latent Canvas")
    # The window lives inside the qasync loop, so the worker connection (an asyncio task on this
    # thread, desktop.worker.ProcessWorker) starts on a running loop.
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)

    async def run() -> None:
        window = MainWindow(a.model or bundled_model(DEFAULT_GENERATOR), worker=_make_worker(a))
        if a.image:
            window.open_image(a.image)
        if a.smoke_screenshot:
            _smoke(window, a.smoke_screenshot)
        window.show()
        app.aboutToQuit.connect(lambda: window.worker.stop())  # the worker in use at the time
        await _until_quit(app)

    with loop:
        loop.run_until_complete(run())
    return 0


def _make_worker(a):
    """A local worker process by default (loopback, a free port, a per-launch token); a remote one
    with --worker; the in-process thread with --in-process."""
    from desktop.worker import ProcessWorker, Worker

    if a.in_process:
        return Worker()
    if a.worker:
        token = a.token_file.read_text().strip() if a.token_file else None
        return ProcessWorker(a.worker, token, restart=False)
    return ProcessWorker()


def _smoke(window, out: Path) -> None:
    """Hooks for the real-window smoke test: an outside program (xdotool) draws and presses Run."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    def ready(_info) -> None:
        top_left = window.canvas.mapToGlobal(window.canvas.view_rect().topLeft().toPoint())
        side = int(window.canvas.view_rect().width())
        print(f"canvas-rect {top_left.x()} {top_left.y()} {side} {side}", flush=True)

    def shoot(_index) -> None:
        window.screen().grabWindow(0).save(str(out))
        print(f"screenshot {out}", flush=True)
        QTimer.singleShot(100, QApplication.instance().quit)

    window.model_ready.connect(ready)
    window.result_added.connect(shoot)


async def _until_quit(app) -> None:
    done = asyncio.Event()
    app.lastWindowClosed.connect(done.set)
    app.aboutToQuit.connect(done.set)
    await done.wait()


if __name__ == "__main__":
    raise SystemExit(main())
