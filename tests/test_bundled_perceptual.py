"""The offline perceptual loss "bundled" (LPIPS-style on the bundled tiny CLIP's feature maps)."""

import pytest
import torch

from core.clip import build_clip, load_clip
from core.evals import metrics
from core.losses import ClipFeatureLoss, make_perceptual_loss, resolve_perceptual
from tests.test_clip import TINY


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bundled():
    return make_perceptual_loss("bundled")


@pytest.fixture(scope="module")
def cats():
    return torch.cat(list(metrics.procedural_batches(4, split="eval")))  # [4, 3, 64, 64]


def test_factory_builds_it_offline(bundled):
    assert isinstance(bundled, ClipFeatureLoss)
    assert not any(p.requires_grad for p in bundled.parameters())
    bundled.train()
    assert not bundled.training and not bundled.clip.training


def test_values_range_identity_and_gradient(bundled, cats):
    feats = bundled.prepare(cats)
    assert torch.allclose(bundled(cats, feats), torch.zeros(4), atol=1e-6)
    pred = cats.flip(0).clone().requires_grad_(True)
    d = bundled(pred, feats)
    assert d.shape == (4,) and bool(((d > 0) & (d <= 1)).all())
    d.sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    with pytest.raises(TypeError):
        bundled(pred, cats)


def test_folded_tower_computes_the_original_maps_and_gradients(bundled, cats):
    """The loss runs a BatchNorm-folded copy of the image tower: same maps, same input gradients,
    and the CLIP model it was given keeps its own BatchNorms."""
    from core.clip import fold_batchnorm

    clip = bundled.clip
    visual = clip.model.visual
    folded = fold_batchnorm(visual)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in visual.modules())
    assert n_bn > 0 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in clip.model.visual.modules()) == n_bn
    grads = []
    for tower in (None, folded):
        x = cats.clone().requires_grad_(True)
        maps = clip.feature_maps(x, visual=tower)
        sum(m.square().mean() for m in maps).backward()
        grads.append((maps, x.grad))
    for a, b in zip(grads[0][0], grads[1][0], strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6, rtol=1e-3)


def test_tiny_random_clip_any_resolution():
    loss = ClipFeatureLoss(build_clip(TINY, seed=0))
    x, y = torch.rand(2, 3, 48, 40) * 2 - 1, torch.rand(2, 3, 48, 40) * 2 - 1
    assert loss(x, loss.prepare(y)).shape == (2,)


def test_mask_semantics(bundled, cats):
    target, pred = cats[:2], cats[:2].clone()
    pred[..., :, 40:] = (pred[..., :, 40:] + 0.6).clamp(-1, 1)  # change the right part only
    feats = bundled.prepare(target)
    full = bundled(pred, feats)
    ones = torch.ones(1, 1, 64, 64)
    assert torch.allclose(bundled(pred, feats, ones), full, atol=1e-6)
    assert torch.allclose(bundled(pred, feats, 0.5 * ones), full, atol=1e-6)  # normalised by area
    left, right = torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)
    left[..., :24], right[..., 40:] = 1, 1
    # Outside the mask is down-weighted, not ignored (receptive fields), so "much smaller", not zero.
    assert bool((bundled(pred, feats, left) < 0.25 * bundled(pred, feats, right)).all())
    per_sample = torch.stack([left[0], right[0]])  # [2, 1, H, W]: one mask per sample
    both = bundled(pred, feats, per_sample)
    assert torch.allclose(
        both, torch.stack([bundled(pred, feats, m[None])[i] for i, m in enumerate(per_sample)])
    )
    with pytest.raises(ValueError, match="empty"):
        bundled(pred, feats, torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="mask must be"):
        bundled(pred, feats, torch.ones(1, 1, 32, 32))


def test_distortions_ranked_as_a_person_would(bundled):
    ref, variants = metrics.distortion_set(8, start=500)
    rank = metrics.distortion_ranking(
        {"bundled": metrics.perceptual_distance(bundled), "mse": metrics.pixel_mse}, ref, variants
    )
    pairs = {k: v["bundled"] for k, v in rank["pairs"].items()}
    for family in ("blur", "noise", "hue", "warp"):
        assert pairs[f"{family}_small < {family}_strong"] == 1.0, pairs
    assert pairs["same_caption_cat < other_cat"] >= 0.75, pairs
    # Where pixel distances famously fail: an invisible one-pixel shift vs visible distortions.
    shift_pairs = [v for k, v in pairs.items() if k.startswith(("shift_1px", "warp_small <"))]
    assert min(shift_pairs) >= 0.75, pairs
    assert rank["overall"]["bundled"] >= 0.9 and rank["overall"]["bundled"] > rank["overall"]["mse"], rank


def test_cli_auto_falls_back_to_bundled(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    loss, kind = resolve_perceptual("auto", 0.01, "cpu")
    assert kind == "bundled" and isinstance(loss, ClipFeatureLoss)
    assert resolve_perceptual("bundled", 0.01, "cpu")[1] == "bundled"
    assert resolve_perceptual("auto", 0.0, "cpu") == (None, "none")


def test_bundled_loss_accepts_another_tiny_clip_file(tmp_path):
    from core.clip import save_clip

    path = save_clip(build_clip(TINY, seed=3), tmp_path / "other.safetensors")
    loss = make_perceptual_loss("bundled", weights_path=path)
    assert loss.clip.embed_dim == 16
    assert load_clip(weights=path).image_size == 32
