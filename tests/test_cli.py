import json

import numpy as np
import pytest
import torch

from core.cli import main
from core.gan.latents import load_latent
from core.imageio import load_image, save_png
from core.imaging import to_uint8
from core.models.io import save_generator
from tests.conftest import tiny_stylegan


@pytest.fixture
def setup(tmp_path):
    G = tiny_stylegan()
    model = save_generator(G, tmp_path / "g.safetensors")
    with torch.no_grad():
        imgs = to_uint8(G(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(9))))
    a, b = save_png(imgs[0], tmp_path / "a.png"), save_png(imgs[1], tmp_path / "b.png")
    return tmp_path, model, a, b


@pytest.mark.slow
def test_invert_writes_everything(setup, capsys):
    tmp, model, a, _ = setup
    out = tmp / "out"
    rc = main(["invert", "--image", str(a), "--model", str(model), "--space", "w+", "--steps", "30",
               "--perceptual", "none", "--out", str(out)])  # fmt: skip
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    assert run["params"]["steps"] == 30 and run["params"]["space"] == "w+"
    assert len(run["loss_history"]) == 30
    assert run["loss_history"][-1]["l1"] < run["loss_history"][0]["l1"]
    lat = load_latent(out / "latent.npz")
    assert lat.space.value == "w+" and lat.ws.shape[0] == 1
    assert load_image(out / "result.png").shape == (16, 16, 3)
    assert "30/30" in capsys.readouterr().err  # the progress bar


@pytest.mark.slow
def test_scribble_and_interpolate(setup):
    tmp, model, a, b = setup
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[4:12, 4:12] = (200, 120, 40, 255)
    scribble = save_png(rgba, tmp / "scribble.png")
    common = ["--model", str(model), "--steps", "10", "--perceptual", "none"]
    assert main(["invert", "--image", str(scribble), "--scribble", "--out", str(tmp / "s"), *common]) == 0
    assert main(["invert", "--image", str(b), "--out", str(tmp / "b"), *common]) == 0
    rc = main(["interpolate", str(tmp / "s/latent.npz"), str(tmp / "b/latent.npz"), "--frames", "5",
               "--model", str(model), "--out", str(tmp / "ab")])  # fmt: skip
    assert rc == 0
    frames = sorted((tmp / "ab").glob("frame_*.png"))
    assert len(frames) == 5
    np.testing.assert_array_equal(load_image(frames[0]), load_image(tmp / "s/result.png"))
    np.testing.assert_array_equal(load_image(frames[-1]), load_image(tmp / "b/result.png"))
    run = json.loads((tmp / "ab" / "run.json").read_text())
    assert run["frames"] == 5 and run["method"] == "lerp" and run["model"] == str(model)
    # a Style-space result (no ws) and a w+ one: the path runs in Style space, each end its own image
    assert main(["invert", "--image", str(a), "--space", "s", "--out", str(tmp / "a"), *common]) == 0
    rc = main(["interpolate", str(tmp / "a/latent.npz"), str(tmp / "b/latent.npz"), "--frames", "3",
               "--model", str(model), "--out", str(tmp / "sb")])  # fmt: skip
    assert rc == 0 and json.loads((tmp / "sb" / "run.json").read_text())["space"] == "s"
    ends = sorted((tmp / "sb").glob("frame_*.png"))
    assert np.abs(load_image(ends[0]).astype(int) - load_image(tmp / "a/result.png")).max() <= 1
    assert np.abs(load_image(ends[-1]).astype(int) - load_image(tmp / "b/result.png")).max() <= 1


@pytest.mark.slow
def test_mask_and_hole_select_where_the_loss_looks(setup):
    """--mask: loss only where the mask is white; --hole: the mask marks a hole, loss everywhere else.
    Repainting the ignored half of the image must leave the logged loss exactly as it was."""
    tmp, model, a, _ = setup
    left = np.zeros((16, 16, 3), np.uint8)
    left[:, :8] = 255
    mask = save_png(left, tmp / "left.png")
    image = load_image(a)
    repainted = {"right": image.copy(), "left": image.copy()}
    repainted["right"][:, 8:] = (255, 0, 255)
    repainted["left"][:, :8] = (255, 0, 255)

    def first_l1(img: np.ndarray, *extra: str) -> float:
        path = save_png(img, tmp / f"t{len(list(tmp.glob('t*.png')))}.png")
        out = tmp / path.stem
        assert main(["invert", "--image", str(path), "--model", str(model), "--steps", "1", "--perceptual",
                     "none", "--mask", str(mask), *extra, "--out", str(out)]) == 0  # fmt: skip
        return json.loads((out / "run.json").read_text())["loss_history"][0]["l1"]

    base_mask, base_hole = first_l1(image), first_l1(image, "--hole")
    assert first_l1(repainted["right"]) == base_mask  # outside the mask: ignored
    assert first_l1(repainted["left"]) != base_mask
    assert first_l1(repainted["left"], "--hole") == base_hole  # inside the hole: ignored
    assert first_l1(repainted["right"], "--hole") != base_hole


def test_bad_inputs_give_messages_not_tracebacks(setup, capsys):
    tmp, model, a, _ = setup
    bad = tmp / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    assert main(["invert", "--image", str(bad), "--model", str(model), "--out", str(tmp / "x")]) == 1
    assert "bad.png" in capsys.readouterr().err
    assert (
        main(["invert", "--image", str(a), "--model", str(tmp / "none.safetensors"), "--out", str(tmp / "x")])
        == 1
    )
    assert "not found" in capsys.readouterr().err
    assert (
        main(["invert", "--image", str(a), "--scribble", "--model", str(model), "--out", str(tmp / "x")]) == 1
    )
    assert "transparency" in capsys.readouterr().err
