"""Quality tier: inversion and scribble-to-image on the bundled generator, against its model card."""

import json

import numpy as np
import pytest

from core import inversion_quality as iq
from core.paths import DEFAULT_GENERATOR, bundled_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def G():
    from core.models.io import load_generator

    return load_generator(bundled_model(DEFAULT_GENERATOR))


@pytest.fixture(scope="module")
def perceptual():
    from core.losses import make_perceptual_loss

    return make_perceptual_loss("bundled")


def test_inversion_quality_orders_w_plus_over_w_over_z(G, perceptual):
    """The seed's ordering on held-out cats: w+ best, z worst (the card has the 500-step numbers)."""
    targets = iq.held_out_images(2)
    got = {}
    for space in ("z", "w", "w+"):
        r = iq.invert_batch(G, targets, space=space, init="mean", steps=60, perceptual=perceptual)
        got[space] = iq.psnr(r.images, targets).mean()
    assert got["w+"] > got["w"] + 0.5 and got["w"] > got["z"] + 0.5, got


def test_cli_invert_reaches_the_model_card_psnr(tmp_path):
    from core.cli import main
    from core.imageio import load_image, save_png

    card = json.loads(bundled_model(DEFAULT_GENERATOR).with_suffix(".json").read_text())
    rows = card["quality"]["inversion"]["rows"]
    (row,) = [r for r in rows if r["space"] == "w+" and r["init"] == "mean"]
    target = iq.held_out_images(1)[0]  # the first image of the card's set
    save_png(target, tmp_path / "cat.png")
    rc = main(["invert", "--image", str(tmp_path / "cat.png"), "--space", "w+", "--steps", "500",
               "--perceptual", "bundled", "--out", str(tmp_path / "out")])  # fmt: skip
    assert rc == 0
    got = iq.psnr(load_image(tmp_path / "out" / "result.png")[None], target[None])[0]
    # The card's batch run optimises each latent on its own target, so this run repeats its first image.
    assert got >= row["psnr_per_image"][0] - 0.5, (got, row["psnr_per_image"][0])


def test_scribble_to_image_follows_the_paint(G, perceptual):
    scribble = iq.load_scribbles()["dense-1"]
    targets, masks = scribble[None, ..., :3], scribble[None, ..., 3].astype(np.float32) / 255
    before = iq.painted_error(iq.invert_batch(G, targets, mask=masks, space="w+", init="mean", steps=1,
                                              perceptual=perceptual).images[0], scribble)  # fmt: skip
    after = iq.invert_batch(G, targets, mask=masks, space="w+", init="mean", steps=100, perceptual=perceptual)
    assert iq.painted_error(after.images[0], scribble) < 0.6 * before


def test_scribbles_in_tests_data_are_the_deterministic_set(tmp_path):
    written = {p.stem: p for p in iq.write_scribbles(tmp_path)}
    kept = iq.load_scribbles()
    assert set(written) == set(kept)
    for name, rgba in iq.load_scribbles(tmp_path).items():
        np.testing.assert_array_equal(rgba, kept[name])
