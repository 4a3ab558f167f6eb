"""Killing the process during a save never loses the previous file.

A child process saves in a loop (a project of a few MB, or a large PNG), each save self-consistent:
every pixel and the metadata carry the save's generation number. The parent SIGKILLs it at a random
moment and checks that the file under the final name loads and is one complete generation. A control
child writing naively (open + write under the final name) shows the check catches torn files.

Iterations: LC_KILL_ITERATIONS (default 6 per writer in CI); docs/reliability.md has a long run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.document import Document, DocumentLoadError, load_document
from core.imageio import load_image

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

REPO = Path(__file__).resolve().parents[1]
ITERATIONS = int(os.environ.get("LC_KILL_ITERATIONS", "6"))
SIDE = 768  # a save takes tens of milliseconds, so random kills mostly land inside one

CHILD = """
import sys
import numpy as np
from PIL import Image
from core.document import Document, HistoryEntry, save_document
from core.imageio import save_png

kind, target, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
noise = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)  # incompressible, so saves take time
gen = 0
while True:
    gen += 1
    image = noise ^ np.uint8(gen % 256)
    if kind == "project":
        p = Document(image, np.dstack([image, image[..., :1]]), np.full((side, side), (gen % 2) * 1.0),
                    meta={"generation": gen})
        p.history.append(HistoryEntry("invert", {"generation": gen}, seed=gen,
                                      latent=np.full((1, 8, 64), gen, np.float32)))
        save_document(p, target)
    elif kind == "png":
        save_png(image, target, metadata={"generation": gen})
    else:  # the control: what a naive writer does
        Image.fromarray(image).save(target, format="PNG")
    if gen == 1:
        print("ready", flush=True)
"""


def expected_image(gen: int) -> np.ndarray:
    noise = np.random.default_rng(0).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    return noise ^ np.uint8(gen % 256)


def check_project(path: Path) -> None:
    p = load_document(path)
    gen = p.meta["generation"]
    assert p.history[0].params == {"generation": gen} and p.history[0].seed == gen
    assert (p.history[0].latent == gen).all() and (p.mask == gen % 2).all()
    np.testing.assert_array_equal(p.base, expected_image(gen))
    np.testing.assert_array_equal(p.scribble[..., :3], p.base)


def check_png(path: Path) -> None:
    with Image.open(path) as im:
        gen = json.loads(im.info["latent-canvas"])["generation"]
    np.testing.assert_array_equal(load_image(path), expected_image(gen))


def kill_mid_save(kind: str, target: Path, delay: float) -> bool:
    """Start a saving child, SIGKILL it ``delay`` s after its first save; True if a save was cut short."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, kind, str(target), str(SIDE)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return any(target.parent.glob(f".{target.name}.*.tmp"))


def run_kills(kind: str, name: str, check, tmp_path: Path) -> dict:
    rng = random.Random(f"{kind}-{ITERATIONS}")
    target, mid_save = tmp_path / name, 0
    for _ in range(ITERATIONS):
        mid_save += kill_mid_save(kind, target, rng.uniform(0.0, 0.4))
        check(target)  # the file under the final name is always a complete save
        for leftover in tmp_path.glob(f".{name}.*.tmp"):
            leftover.unlink()  # a crashed save's temp file; the app's recovery sweeps these
        assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    stats = {"kills": ITERATIONS, "mid_save": mid_save, "intact": ITERATIONS}
    if report := os.environ.get("LC_KILL_REPORT"):
        with open(report, "a") as f:
            f.write(json.dumps({kind: stats}) + "\n")
    return stats


@pytest.mark.slow
def test_killing_a_project_save_keeps_a_complete_file(tmp_path):
    stats = run_kills("project", "session.lcproj", check_project, tmp_path)
    assert stats["mid_save"] >= ITERATIONS // 2  # the kills really landed inside saves


@pytest.mark.slow
def test_killing_a_png_save_keeps_a_complete_file(tmp_path):
    stats = run_kills("png", "result.png", check_png, tmp_path)
    assert stats["mid_save"] >= ITERATIONS // 2


@pytest.mark.slow
def test_control_naive_writer_is_caught(tmp_path):
    # Without temp + replace, some kill leaves a torn file: the checks above would see it.
    target, torn = tmp_path / "naive.png", 0
    rng = random.Random(0)
    for _ in range(ITERATIONS):
        kill_mid_save("naive", target, rng.uniform(0.0, 0.4))
        try:
            check_png_naive(target)
        except (OSError, SyntaxError, ValueError, AssertionError):
            torn += 1
    if report := os.environ.get("LC_KILL_REPORT"):
        with open(report, "a") as f:
            f.write(json.dumps({"naive": {"kills": ITERATIONS, "torn": torn}}) + "\n")
    assert torn >= 1


def check_png_naive(path: Path) -> None:
    with Image.open(path) as im:
        im.load()
        assert im.size == (SIDE, SIDE)


def test_project_loader_refuses_a_torn_file(tmp_path):
    # What the naive writer would leave: the first half of a project. It must be an error, not a crash.
    from core.document import save_document

    data = save_document(Document.blank(64), tmp_path / "full.lcproj").read_bytes()
    (tmp_path / "torn.lcproj").write_bytes(data[: len(data) // 2])
    with pytest.raises(DocumentLoadError):
        load_document(tmp_path / "torn.lcproj")
