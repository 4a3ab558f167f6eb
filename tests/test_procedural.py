import numpy as np
import pytest
import torch

from core.data import ProceduralCats, caption, make_dataset, render, sample_attributes, split_seed
from core.data import procedural as P


@pytest.fixture(scope="module")
def sample():
    # One shared batch keeps the module fast: images, attributes and captions of seeds 0..199.
    return make_dataset(200, seed=0)


def test_same_seed_same_images():
    a, attrs_a, caps_a = make_dataset(6, seed=123)
    b, attrs_b, caps_b = make_dataset(6, seed=123)
    assert np.array_equal(a, b)
    assert attrs_a == attrs_b and caps_a == caps_b


def test_render_matches_dataset_item(sample):
    images, attrs, _ = sample
    assert np.array_equal(render(attrs[7]), images[7])


def test_different_seeds_differ(sample):
    images, attrs, _ = sample
    assert attrs[0] != attrs[1]
    diffs = np.abs(images[:-1].astype(int) - images[1:].astype(int)).mean(axis=(1, 2, 3))
    assert diffs.min() > 5.0  # every neighbouring pair differs visibly, not by a few pixels


def test_shape_dtype_and_range(sample):
    images, attrs, captions = sample
    assert images.shape == (200, 64, 64, 3) and images.dtype == np.uint8
    assert len(attrs) == len(captions) == 200
    assert images.min() < 40 and images.max() > 215  # uses the range: dark pupils, bright highlights
    small, _, _ = make_dataset(2, seed=0, resolution=32)
    assert small.shape == (2, 32, 32, 3)


def test_rejects_tiny_resolution():
    with pytest.raises(ValueError, match="resolution"):
        render(P.attributes_for_seed(0), resolution=4)


def test_attributes_cover_every_category():
    rng = np.random.default_rng(0)
    attrs = [sample_attributes(rng) for _ in range(500)]
    expected = {
        "fur": set(P.FUR_COLOURS),
        "pattern": set(P.PATTERNS),
        "eyes": set(P.EYE_COLOURS),
        "ears": set(P.EAR_SHAPES),
        "background": set(P.BACKGROUND_COLOURS),
        "background_style": set(P.BACKGROUND_STYLES),
    }
    for name, values in expected.items():
        assert {getattr(a, name) for a in attrs} == values, name
    assert not any(a.fur == "white" and a.pattern == "bicolour" for a in attrs)
    yaws = [a.yaw for a in attrs]
    assert min(yaws) < -0.8 and max(yaws) > 0.8


_PATTERN_WORDS = {"solid": "solid", "tabby": "tabby", "spotted": "spotted", "bicolour": "and white"}


def test_captions_name_the_attributes(sample):
    _, attrs, captions = sample
    for a, text in zip(attrs, captions, strict=True):
        assert text == caption(a)
        assert a.fur in text and _PATTERN_WORDS[a.pattern] in text, text
        assert f"{a.eyes} eyes" in text, text
        assert f"{a.background} background" in text or f"{a.background} backdrop" in text, text
        assert ("folded ears" in text) == (a.ears == "folded"), text
        assert not text.startswith("a o") and not text.startswith("a a"), text
    assert len(set(captions)) > 150  # wording varies as well as content


def test_background_colour_is_the_named_one(sample):
    # The corner is background on every image; its chromaticity must be nearest the named colour.
    images, attrs, _ = sample
    palette = {k: np.array(v) / sum(v) for k, v in P.BACKGROUND_COLOURS.items()}
    for img, a in zip(images, attrs, strict=True):
        px = img[:4, :4].reshape(-1, 3).mean(axis=0)
        chroma = px / px.sum()
        assert min(palette, key=lambda k: np.abs(palette[k] - chroma).sum()) == a.background


def test_images_are_shaded_not_flat(sample):
    images = sample[0].reshape(200, -1, 3)
    assert images.std(axis=1).mean(axis=1).min() > 20.0
    # Lighting, fur grain and anti-aliasing give many distinct colours; flat clip-art has few dozen.
    codes = (images[..., 0].astype(np.int64) << 16) | (images[..., 1].astype(np.int64) << 8) | images[..., 2]
    share = np.array([len(np.unique(c)) for c in codes]) / codes.shape[1]
    assert share.min() > 0.1


def test_split_seeds_are_disjoint():
    assert split_seed("train", 0) == 0
    assert split_seed("eval", 0) == 10_000_000
    assert split_seed("train", P.SPLIT_SIZE - 1) < split_seed("eval", 0)
    with pytest.raises(ValueError, match="split"):
        split_seed("test", 0)
    with pytest.raises(ValueError, match="index"):
        split_seed("train", P.SPLIT_SIZE)


def test_torch_dataset_items():
    ds = ProceduralCats(5, seed=split_seed("eval", 0), resolution=32)
    assert len(ds) == 5
    img, text = ds[4]
    assert img.dtype == torch.float32 and img.shape == (3, 32, 32)
    assert -1.0 <= img.min() < img.max() <= 1.0
    expected = make_dataset(5, seed=split_seed("eval", 0), resolution=32)
    assert text == expected[2][4]
    assert torch.equal(img, torch.from_numpy(expected[0][4]).permute(2, 0, 1).float() / 127.5 - 1.0)
    with pytest.raises(IndexError):
        ds[5]


def test_two_hundred_images_render():
    images, _, _ = make_dataset(200, seed=split_seed("eval", 0))
    assert images.shape == (200, 64, 64, 3)
