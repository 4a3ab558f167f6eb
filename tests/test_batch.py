"""``latent-canvas-cli batch`` on a local Ray instance: each result equals the single command's, a rerun
skips what is done, a failing input is recorded and the others still run."""

import json
import shutil

import numpy as np
import pytest

from core.cli import main
from core.imageio import load_image, save_png
from core.models.io import save_generator
from tests.conftest import tiny_stylegan

pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # starts a local Ray instance (seconds)


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    for i in range(3):
        save_png(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), inputs / f"cat{i}.png")
    model = save_generator(tiny_stylegan(), tmp_path / "tiny.safetensors")
    return inputs, tmp_path / "out", model


def test_batch_equals_the_single_command_and_resumes(folders, tmp_path, capsys):
    inputs, out, model = folders
    opts = ["--steps", "4", "--perceptual", "none", "--samples", "2", "--model", str(model)]
    assert main(["batch", "--inputs", str(inputs), "--out", str(out), "invert", *opts]) == 0
    for i in range(3):
        single = tmp_path / f"single{i}"
        assert main(["invert", *opts, "--image", str(inputs / f"cat{i}.png"), "--out", str(single)]) == 0
        for name in ("result_0.png", "result_1.png"):
            assert np.array_equal(load_image(out / f"cat{i}" / name), load_image(single / name))
        a, b = (json.loads((d / "run.json").read_text()) for d in (out / f"cat{i}", single))
        assert a["params"] == b["params"] and a["loss_history"] == b["loss_history"]
    shutil.rmtree(out / "cat1")
    capsys.readouterr()
    assert main(["batch", "--inputs", str(inputs), "--out", str(out), "invert", *opts]) == 0
    assert "1 to run, 2 already done" in capsys.readouterr().err
    assert (out / "cat1" / "run.json").is_file()


def test_a_failing_input_is_recorded_and_the_rest_run(folders):
    inputs, out, model = folders
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    opts = ["--steps", "2", "--perceptual", "none", "--model", str(model)]
    assert main(["batch", "--inputs", str(inputs), "--out", str(out), "invert", *opts]) == 1
    state = json.loads((out / "batch.json").read_text())
    assert list(state["failed"]) == ["broken"] and "broken.png" in state["failed"]["broken"]
    assert all((out / f"cat{i}" / "run.json").is_file() for i in range(3))


def test_batch_refuses_options_it_sets_and_typos_before_starting(folders):
    inputs, out, model = folders
    assert main(["batch", "--inputs", str(inputs), "--out", str(out), "invert", "--out", "x"]) == 1
    with pytest.raises(SystemExit):
        main(["batch", "--inputs", str(inputs), "--out", str(out), "invert", "--stepz", "3"])
    assert not out.exists() or not any(out.iterdir())
