"""The renderer distilled into a generator: z -> cat pairs, and the trainer's distillation phases."""

import collections

import numpy as np
import pytest
import torch

from core.data import procedural as p
from core.training import distill, stylegan2
from core.training.common import ImageBank, load_checkpoint

# one_thread: test_training's autouse fixture (tiny models, one torch thread), applied here too.
from tests.test_training import TINY_SG2, _cli_args, one_thread  # noqa: F401


def test_pairs_are_a_function_of_z_and_seed():
    z = np.random.default_rng(0).standard_normal((3, 128)).astype(np.float32)
    seeds = np.array([1, 2, 3])
    a = distill.render_from_latents(z, seeds, resolution=16)
    assert a.shape == (3, 16, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, distill.render_from_latents(z, seeds, resolution=16))
    # Scaling z changes nothing (the mapping network sees z / rms(z) too) ...
    assert np.array_equal(a, distill.render_from_latents(z * 1.7, seeds, resolution=16))
    # ... but the attribute coordinates and the coarse lattices do, and so does the per-image noise.
    moved = z.copy()
    moved[:, 0] += 3.0  # fur colour
    assert not np.array_equal(a, distill.render_from_latents(moved, seeds, resolution=16))
    assert not np.array_equal(a, distill.render_from_latents(z, seeds + 10, resolution=16))
    assert distill.z_coordinates_used() == 102


def test_latent_cats_follow_the_training_distribution():
    """Categories of normalised Gaussian z are as uniform as the procedural set's own draws."""
    n = 14_000
    z = np.random.default_rng(1).standard_normal((n, 128))
    attrs, lattices = distill.scenes_from_latents(z[:, :128], np.arange(n))
    fur = collections.Counter(a.fur for a in attrs)
    bg = collections.Counter(a.background for a in attrs)
    for counts, k in ((fur, len(p.FUR_COLOURS)), (bg, len(p.BACKGROUND_COLOURS))):
        assert len(counts) == k
        assert max(abs(c / n - 1 / k) for c in counts.values()) < 0.015
    tilts = np.array([a.tilt for a in attrs])
    assert abs(tilts.mean()) < 0.01 and tilts.min() >= -0.3 and tilts.max() <= 0.3
    coarse = np.stack([lat["patch"][0] for lat in lattices[:2000]])
    assert coarse.shape[1:] == p.lattice_shapes()["patch"][0]
    assert abs(coarse.std() - 1) < 0.03 and abs(coarse.mean()) < 0.03


def test_render_batch_takes_explicit_lattices():
    a = p.attributes_for_seed(5)
    own = p.render(a, resolution=16)
    lat = p._lattices(a.texture_seed)
    assert np.array_equal(own, p.render_batch([a], resolution=16, lattices=[lat])[0])
    lat["warp"][0] = lat["warp"][0] + 2.0  # a tabby's stripes follow the warp field
    tabby = p.CatAttributes(**{**a.__dict__, "pattern": "tabby"})
    assert not np.array_equal(
        p.render(tabby, resolution=16), p.render_batch([tabby], resolution=16, lattices=[lat])[0]
    )
    with pytest.raises(ValueError, match="lattice sets"):
        p.render_batch([a, a], resolution=16, lattices=[lat])


def test_attributes_from_uniforms_is_what_sample_attributes_draws():
    rng = np.random.default_rng(7)
    cat, u, seed = rng.random(6), rng.random(10), int(rng.integers(2**31))
    assert p.attributes_from_uniforms(cat, u, texture_seed=seed) == p.sample_attributes(
        np.random.default_rng(7)
    )
    with pytest.raises(ValueError):
        p.attributes_from_uniforms(cat[:5], u)


def _bank():
    rng = np.random.default_rng(0)
    return ImageBank(rng.integers(0, 256, (32, 16, 16, 3), dtype=np.uint8))


def test_distillation_lowers_the_regression_loss_then_hands_over_to_the_gan():
    cfg = stylegan2.TrainConfig(
        **{**TINY_SG2, "batch": 8},
        distill_kimg=0.4,
        distill_pairs=16,
        distill_perceptual=0.0,
        adv_distill_weight=1.0,
    )
    torch.manual_seed(0)
    t = stylegan2.StyleGAN2Trainer(cfg, torch.device("cpu"), _bank())
    first = [t.step()["L1"] for _ in range(3)]
    for _ in range(40):
        last = t.step()
    assert t.distilling() and "G" not in last and "D" not in last
    assert last["L1"] < 0.8 * np.mean(first)  # it fits the 16 pairs
    while t.distilling():
        t.step()
    adv = t.step()
    assert {"G", "D", "L1"} <= adv.keys()  # the GAN phase, with the regression beside it
    assert all(np.isfinite(v) for v in adv.values())


def test_plain_recipe_renders_no_pairs(monkeypatch):
    monkeypatch.setattr(distill, "pair_bank", lambda *a, **k: pytest.fail("no pairs for the plain GAN"))
    t = stylegan2.StyleGAN2Trainer(stylegan2.TrainConfig(**TINY_SG2), torch.device("cpu"), _bank())
    assert t.pairs is None and not t.distilling()
    assert "G" in t.step()


def test_learning_curve_points_are_stored_with_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = ["--cache-dir=cache", "--checkpoint-minutes=60", *_cli_args(TINY_SG2)]
    monkeypatch.setattr(stylegan2.StyleGAN2Trainer, "evaluate", lambda self: {"fid_test": float(self.nimg)})
    stylegan2.main(["--out=a", "--kimg=0.008", *flags])
    stylegan2.main(["--out=a", "--kimg=0.016", "--resume", *flags])
    _, progress = load_checkpoint("a")
    assert [(pt["kimg"], pt["fid_test"]) for pt in progress["curve"]] == [(0.008, 8.0), (0.016, 16.0)]


def test_evaluate_measures_fid_with_the_bundled_clip():
    cfg = stylegan2.TrainConfig(**TINY_SG2, fid_samples=40)
    t = stylegan2.StyleGAN2Trainer(cfg, torch.device("cpu"), _bank())
    t.G_ema = stylegan2.StyleGAN2Generator(  # a 64 px net: the tiny CLIP reads 64 px images
        stylegan2.TrainConfig(**{**TINY_SG2, "resolution": 64}).generator_config()
    ).eval()
    point = t.evaluate()
    assert point["fid40"] > 0 and np.isfinite(point["fid40"])
    assert stylegan2.StyleGAN2Trainer(stylegan2.TrainConfig(**TINY_SG2), "cpu", _bank()).evaluate() == {}


def test_runs_resume_without_settings_that_were_off_and_refuse_ones_that_were_on():
    from core.training.common import config_from

    stored = {**stylegan2.TrainConfig(**TINY_SG2).__dict__, "retired_option": 0}
    assert config_from(stylegan2.TrainConfig, stored) == stylegan2.TrainConfig(**TINY_SG2)
    with pytest.raises(ValueError, match="retired_option"):
        config_from(stylegan2.TrainConfig, {**stored, "retired_option": 3})


def test_a_run_can_start_from_an_exported_generator(tmp_path, monkeypatch):
    """When a run's checkpoint is gone: --init-from takes G and G_ema from the exported model and
    carries its kimg and minutes on; a resumable run refuses it."""
    import json

    monkeypatch.chdir(tmp_path)
    flags = ["--cache-dir=cache", "--checkpoint-minutes=60", *_cli_args(TINY_SG2)]
    stylegan2.main(["--out=a", "--kimg=0.008", *flags])
    files = stylegan2.export(
        "a", "m/g.safetensors", mean_w_samples=100, wstats_samples=200, k=4, kmeans_iters=2
    )
    card = json.loads(files["sidecar"].read_text())
    stylegan2.main(["--out=b", "--kimg=0.016", "--init-from=m/g.safetensors", "--seed=1", *flags])
    state, progress = load_checkpoint("b")
    assert progress["init_from"]["sha256"] == card["sha256"] and progress["init_from"]["kimg"] == 0.008
    assert progress["nimg"] == 16 and state["iteration"] == 2  # 8 images carried on, 2 iterations of 4 here
    with pytest.raises(SystemExit):
        stylegan2.main(["--out=b", "--kimg=0.024", "--resume", "--init-from=m/g.safetensors", *flags])


def test_settings_changed_mid_run_are_applied_and_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = ["--cache-dir=cache", "--checkpoint-minutes=60", *_cli_args(TINY_SG2)]
    stylegan2.main(["--out=a", "--kimg=0.008", *flags])
    stylegan2.main(["change", "--run=a", "--set", "r1_gamma=2", "--why", "D too strong"])
    _, progress = load_checkpoint("a")
    assert progress["config"]["r1_gamma"] == 2.0
    assert progress["config_changes"] == [
        {"kimg": 0.008, "changes": {"r1_gamma": 2.0}, "why": "D too strong"}
    ]
    stylegan2.main(["--out=a", "--kimg=0.012", "--resume", *flags])  # resumes with the new setting
    with pytest.raises(ValueError, match="unknown settings"):
        stylegan2.main(["change", "--run=a", "--set", "r1_gama=2", "--why", "typo"])
