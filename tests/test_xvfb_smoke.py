"""A real window under Xvfb: xdotool draws a scribble with the X mouse, presses Run, and the app
saves a screenshot after the scribble job's result arrives. Skipped where Xvfb/xdotool are missing."""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from core.models.io import save_generator
from tests.conftest import tiny_stylegan

pytestmark = [
    pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool")), reason="Xvfb and xdotool"),
    pytest.mark.slow,  # a real window and a worker process: about 30 s
]


def _start_xvfb():
    for display in range(140, 160):
        if not os.path.exists(f"/tmp/.X11-unix/X{display}"):
            proc = subprocess.Popen(
                ["Xvfb", f":{display}", "-screen", "0", "1280x800x24"], stderr=subprocess.DEVNULL
            )
            time.sleep(1.0)
            if proc.poll() is None:
                return proc, f":{display}"
    pytest.skip("no free X display")


def test_scribble_job_in_a_real_window(tmp_path):
    model = save_generator(tiny_stylegan(), tmp_path / "tiny.safetensors")
    shot = tmp_path / "shot.png"
    xvfb, display = _start_xvfb()
    conf = tmp_path / ".config" / "LatentCanvas" / "LatentCanvas.conf"  # QSettings' file under HOME
    conf.parent.mkdir(parents=True)
    conf.write_text("[General]\nconfirm_close=false\n\n[invert]\nsteps=10\n")  # quit without a dialog
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb", "HOME": str(tmp_path)}
    app = subprocess.Popen(
        [sys.executable, "-m", "desktop.app", "--model", str(model), "--smoke-screenshot", str(shot)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        rect = None
        deadline = time.time() + 240
        lines = []
        while rect is None and time.time() < deadline:
            line = app.stdout.readline()
            if not line and app.poll() is not None:
                break  # the app exited (e.g. Qt's xcb plugin could not load): fail now, with its output
            lines.append(line)
            if line.startswith("canvas-rect"):
                rect = [int(v) for v in line.split()[1:]]
        assert rect, "the app never reported its canvas:\n" + "".join(lines[-20:])
        x, y, side, _ = rect
        xdo = lambda *a: subprocess.run(["xdotool", *map(str, a)], env=env, check=True)  # noqa: E731
        # The model can be ready before X has mapped the window: events sent then reach the root window.
        xdo("search", "--sync", "--onlyvisible", "--name", "Latent Canvas")
        time.sleep(1.0)
        xdo("mousemove", x + side // 5, y + side // 5, "mousedown", "1")
        for i in range(1, 11):
            xdo("mousemove", x + side // 5 + i * side // 17, y + side // 5 + i * side // 17)
        xdo("mouseup", "1")
        xdo("key", "ctrl+Return")
        out, _ = app.communicate(timeout=300)
        assert app.returncode == 0, out
    finally:
        app.kill()
        xvfb.kill()
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[0] >= 600 and img.std() > 10  # a real window, not a blank screen
