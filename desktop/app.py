"""``latent-canvas``: start the desktop app on the bundled default model (or ``--model PATH``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="latent-canvas")
    ap.add_argument("--model", type=Path, help="generator file (.safetensors or StyleGAN2-ADA .pkl)")
    ap.add_argument("--image", help="open this image as the base layer")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import qasync
    from PySide6.QtWidgets import QApplication

    from core.paths import DEFAULT_GENERATOR, bundled_model
    from desktop.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Latent Canvas")
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    window = MainWindow(a.model or bundled_model(DEFAULT_GENERATOR))
    if a.image:
        window.open_image(a.image)
    window.show()
    app.aboutToQuit.connect(window.worker.stop)
    with loop:
        loop.run_until_complete(_until_quit(app))
    return 0


async def _until_quit(app) -> None:
    done = asyncio.Event()
    app.lastWindowClosed.connect(done.set)
    await done.wait()


if __name__ == "__main__":
    raise SystemExit(main())
