"""KID / FID, the feature and sample helpers, and the distortion-ranking tools of core.evals.metrics."""

import json
import math

import pytest
import torch

from core.clip import build_clip
from core.evals import cli as evals_cli
from core.evals import metrics
from tests.conftest import tiny_stylegan
from tests.test_clip import TINY


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _gauss(n, d=16, shift=0.0, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def test_kid_is_about_zero_for_one_distribution_and_grows_with_shift():
    a, b = _gauss(600, seed=0), _gauss(600, seed=1)
    same, same_std = metrics.kid(a, b, subsets=20, subset_size=300)
    near, _ = metrics.kid(a, _gauss(600, shift=0.3, seed=1), subsets=20, subset_size=300)
    far, _ = metrics.kid(a, _gauss(600, shift=1.0, seed=1), subsets=20, subset_size=300)
    assert abs(same) < 3 * same_std + 1e-3
    assert near > 10 * abs(same) and far > 5 * near


def test_kid_is_seeded_and_validates():
    a, b = _gauss(100, seed=0), _gauss(100, seed=1, shift=0.5)
    assert metrics.kid(a, b, subsets=5, seed=3) == metrics.kid(a, b, subsets=5, seed=3)
    with pytest.raises(ValueError):
        metrics.kid(a[:1], b)


def test_fid_matches_closed_form_for_gaussians():
    a = _gauss(20000, d=4, seed=0)
    assert metrics.fid(a, a) == pytest.approx(0.0, abs=1e-6)
    # Same covariance, mean moved by (1, 1, 0, 0): FID -> |dmu|^2 = 2.
    b = _gauss(20000, d=4, seed=1) + torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert metrics.fid(a, b) == pytest.approx(2.0, abs=0.05)
    # Scaled by 2: each of 4 dims adds (sqrt(4) - 1)^2 = 1.
    assert metrics.fid(a, 2 * _gauss(20000, d=4, seed=2)) == pytest.approx(4.0, abs=0.15)


def test_clip_features_scale_and_procedural_batches():
    clip = build_clip(TINY, seed=0)
    batches = list(metrics.procedural_batches(5, split="eval", batch=2, resolution=32))
    assert [b.shape[0] for b in batches] == [2, 2, 1] and batches[0].shape[1:] == (3, 32, 32)
    assert batches[0].min() >= -1 and batches[0].max() <= 1
    feats = metrics.clip_features(clip, batches)
    assert feats.shape == (5, 16)
    assert torch.allclose(feats.norm(dim=1), torch.full((5,), math.sqrt(16)), atol=1e-4)


def test_generator_batches_are_seeded():
    G = tiny_stylegan()
    a = torch.cat(list(metrics.generator_batches(G, 5, seed=1, batch=2)))
    b = torch.cat(list(metrics.generator_batches(G, 5, seed=1, batch=3)))
    assert a.shape == (5, 3, 16, 16) and torch.allclose(a, b, atol=1e-5)


def test_realism_separates_real_from_shifted_images():
    clip = build_clip(TINY, seed=0)
    real = metrics.clip_features(clip, metrics.procedural_batches(60, split="eval", resolution=32))
    other = metrics.clip_features(clip, metrics.procedural_batches(60, split="train", resolution=32))
    dark = metrics.clip_features(
        clip, (x * 0.5 - 0.5 for x in metrics.procedural_batches(60, split="train", resolution=32))
    )
    base, shifted = metrics.realism(real, other), metrics.realism(real, dark)
    assert shifted["kid"] > 10 * abs(base["kid"]) and shifted["fid"] > 3 * base["fid"], (base, shifted)


def test_attribute_prompts_marginalise_other_attributes():
    prompts = metrics.attribute_prompts("fur", "orange")
    assert all("orange" in p for p in prompts)
    assert any("blue eyes" in p for p in prompts) and any("teal" in p for p in prompts)
    assert not any("white and white" in p for p in metrics.attribute_prompts("fur", "white"))


def test_distortion_set_and_ranking_tools():
    ref, variants = metrics.distortion_set(3)
    assert ref.shape == (3, 3, 64, 64)
    assert set(variants) == {*metrics.DISTORTIONS, "same_caption_cat", "other_cat"}
    assert all(v.shape == ref.shape and v.min() >= -1 and v.max() <= 1 for v in variants.values())
    assert torch.equal(variants["shift_1px"][..., 1:, 1:], ref[..., :-1, :-1])
    rank = metrics.distortion_ranking({"mse": metrics.pixel_mse}, ref, variants)
    assert set(rank["pairs"]) == {f"{a} < {b}" for a, b in metrics.EXPECTED_ORDER}
    assert rank["pairs"]["blur_small < blur_strong"]["mse"] == 1.0
    assert 0 <= rank["overall"]["mse"] <= 1 and rank["n"] == 3


def test_write_quality_keeps_the_rest_of_the_card(tmp_path):
    card = tmp_path / "m.json"
    card.write_text(json.dumps({"file": "m.safetensors", "quality": {"old": 1}}))
    metrics.write_quality(card, "realism", {"kid": 0.1})
    doc = json.loads(card.read_text())
    assert doc == {"file": "m.safetensors", "quality": {"old": 1, "realism": {"kid": 0.1}}}
    with pytest.raises(FileNotFoundError):
        metrics.write_quality(tmp_path / "missing.json", "x", {})


@pytest.mark.slow
def test_bundled_generators_are_as_realistic_as_their_cards_say():
    """Quality tier: the shipped StyleGAN2 beats the DCGAN and stays near its card's KID; real vs real
    stays near zero. 500 images a set (the cards used 5000: KID is unbiased, only noisier here)."""
    from core.clip import load_clip
    from core.models.io import load_generator
    from core.paths import bundled_model

    clip = load_clip(device="cpu")
    real = metrics.clip_features(clip, metrics.procedural_batches(500, split="eval"))
    train = metrics.clip_features(clip, metrics.procedural_batches(500, split="train"))
    assert metrics.kid(train, real, subsets=20)[0] < 0.05
    got = {}
    for name in ("stylegan2-cats64.safetensors", "dcgan-cats64.safetensors"):
        card = json.loads(bundled_model(name).with_suffix(".json").read_text())["quality"]["realism"]["model"]
        feats = metrics.clip_features(
            clip, metrics.generator_batches(load_generator(bundled_model(name)), 500)
        )
        got[name] = metrics.kid(feats, real, subsets=20)[0]
        assert abs(got[name] - card["kid"]) < 0.25 * card["kid"] + 0.05, (name, got[name], card["kid"])
    assert got["stylegan2-cats64.safetensors"] < 0.5 * got["dcgan-cats64.safetensors"]


def test_models_doc_is_rendered_from_the_current_cards():
    from pathlib import Path

    from core.evals.model_report import report

    text = report()
    assert "| StyleGAN2 | w+ | mean |" in text and "| DCGAN | z | random |" in text
    doc = Path(__file__).resolve().parent.parent / "docs" / "models.md"
    assert doc.read_text() == text, "docs/models.md is stale: run python -m core.evals.model_report"


def test_sample_sheet_puts_samples_beside_held_out_cats(tmp_path):
    from PIL import Image

    out = tmp_path / "sheet.png"
    assert evals_cli.main(["sheet", "--n", "8", "--zoom", "1", "--out", str(out)]) == 0
    sheet = Image.open(out)
    # two 8-column contact sheets of one 64 px row (2 px gutters) and a 12 px gap between them
    assert sheet.size == (2 * (8 * 66 + 2) + 12, 68)


def test_knn_precision_scores_realism_without_punishing_low_coverage():
    torch.manual_seed(0)
    real = torch.randn(400, 8)
    assert metrics.knn_precision(real[:200], real[200:]) > 0.8  # the same distribution: mostly inside
    one_corner = real[200:][real[200:, 0] > 1.0]  # real-looking but covering a sliver of the data
    assert metrics.knn_precision(real[:200], one_corner) > 0.6
    assert metrics.knn_precision(real[:200], torch.randn(100, 8) + 6.0) == 0.0  # off the manifold


def test_swd_is_small_within_a_distribution_and_grows_with_what_differs():
    """ProGAN's patch SWD: two samples of one image distribution score low at every level; fine noise
    raises the finest band most, a colour shift the coarsest level most."""
    from core.evals.metrics import swd

    gen = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(200, 3, 8, 8, generator=gen), size=32, mode="bilinear")
    a, b = base[:100] * 2 - 1, base[100:] * 2 - 1
    same = swd(a, b, levels=3)
    noisy = swd(a, (b + 0.3 * torch.randn(b.shape, generator=gen)).clamp(-1, 1), levels=3)
    shifted = swd(a, (b + 0.5).clamp(-1, 1), levels=3)
    assert len(same) == 3 and all(v >= 0 for v in same)
    assert noisy[0] > 3 * same[0] and noisy[0] - same[0] > noisy[-1] - same[-1]
    assert shifted[-1] > 3 * same[-1]
    assert swd(a, b, levels=3) == same  # seeded
