"""The CLIP wrapper (open_clip configs, encoders, safetensors round trip), its training script, and a
quality check of the bundled tiny CLIP."""

import json
import math
from dataclasses import asdict

import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

from core import clip as clip_mod
from core.clip import BUNDLED_CLIP, build_clip, bundled_clip_paths, load_clip, save_clip
from core.data import procedural
from core.errors import ModelLoadError
from core.training import clip as clip_training
from core.training.common import ImageBank, load_checkpoint, save_checkpoint

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny():
    return build_clip(TINY, seed=0)


def test_build_goes_through_open_clip_registry(tiny):
    assert tiny.name in open_clip.list_models()
    assert open_clip.get_model_config(tiny.name) == TINY
    assert tiny.config() == TINY
    assert isinstance(tiny.model, open_clip.CLIP)
    assert isinstance(tiny.tokenizer, open_clip.SimpleTokenizer) and tiny.tokenizer.context_length == 16
    assert (tiny.image_size, tiny.embed_dim) == (32, 16)


def test_build_is_seeded_and_leaves_global_rng(tiny):
    state = torch.get_rng_state()
    again, other = build_clip(TINY, seed=0), build_clip(TINY, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    w = "visual.conv1.weight"
    assert torch.equal(again.model.state_dict()[w], tiny.model.state_dict()[w])
    assert not torch.equal(other.model.state_dict()[w], tiny.model.state_dict()[w])


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (48, 40)])
def test_encode_image_shapes_norm_and_gradient(tiny, size):
    x = (torch.rand(3, 3, *size) * 2 - 1).requires_grad_(True)
    emb = tiny.encode_image(x)
    assert emb.shape == (3, 16)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    emb[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_encode_image_rejects_bad_shape(tiny):
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        tiny.encode_image(torch.zeros(1, 1, 32, 32))


def test_encode_text_shapes_and_tokenizer(tiny):
    emb = tiny.encode_text(["an orange tabby cat", "a solid black kitten with blue eyes"])
    assert emb.shape == (2, 16)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    tokens = tiny.tokenize(["a cat"])
    assert tokens.shape == (1, 16) and int(tokens[0, 0]) == 49406  # open_clip's <start_of_text>
    with pytest.raises(TypeError):
        tiny.encode_text("a cat")


def test_preprocess_uses_model_mean_std(tiny):
    x = torch.zeros(1, 3, 32, 32)  # mid-grey
    mean = torch.tensor(tiny.model.visual.preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(tiny.model.visual.preprocess_cfg["std"]).view(1, 3, 1, 1)
    assert torch.allclose(tiny.preprocess(x), (0.5 - mean) / std)


def test_save_load_round_trip_is_exact(tiny, tmp_path):
    path = save_clip(tiny, tmp_path / "tiny.safetensors")
    loaded = load_clip(weights=path)
    assert loaded.name == tiny.name
    a, b = tiny.model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded.encode_image(x), tiny.encode_image(x))
    assert torch.equal(loaded.encode_text(["a cat"]), tiny.encode_text(["a cat"]))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_float16_file_loads_into_float32(tiny, tmp_path):
    path = save_clip(tiny, tmp_path / "half.safetensors", dtype=torch.float16)
    assert load_file(str(path))["visual.conv1.weight"].dtype == torch.float16
    loaded = load_clip(weights=path)
    assert loaded.model.visual.conv1.weight.dtype == torch.float32
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(loaded.encode_image(x), tiny.encode_image(x), atol=2e-2)


def test_strict_load_rejects_missing_keys(tiny, tmp_path):
    path = save_clip(tiny, tmp_path / "tiny.safetensors")
    tensors = load_file(str(path))
    del tensors["visual.conv1.weight"]
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ModelLoadError, match="visual.conv1.weight"):
        load_clip(weights=path)


def test_missing_files_and_unknown_names(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_clip(weights=tmp_path / "nope.safetensors")
    with pytest.raises(ModelLoadError, match="unknown CLIP"):
        load_clip("ViT-Q-99")


def test_pretrained_never_downloads(monkeypatch):
    monkeypatch.setattr(clip_mod, "_cached_file", lambda cfg: None)

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(open_clip, "create_model", no_download)
    with pytest.raises(ModelLoadError, match="download=True") as err:
        load_clip("ViT-B-32")
    assert "laion2b_s34b_b79k" in str(err.value)


def test_cached_pretrained_looks_in_hf_cache(monkeypatch, tmp_path):
    import huggingface_hub

    hit = tmp_path / "open_clip_model.safetensors"
    hit.write_bytes(b"x")
    asked = []

    def fake_cache(repo, filename, **kwargs):
        asked.append((repo, filename))
        return str(hit) if filename == "open_clip_model.safetensors" else None

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", fake_cache)
    tag, file, _ = clip_mod.cached_pretrained("ViT-B-32", "laion2b_s34b_b79k")
    assert (tag, file) == ("laion2b_s34b_b79k", str(hit))
    assert asked[0] == ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_model.safetensors")


# --- training script ------------------------------------------------------------------------------

TRAIN = dict(
    resolution=32,
    embed_dim=16,
    vision_width=8,
    text_width=16,
    text_heads=2,
    text_layers=1,
    context_length=32,
    batch=8,
    warmup=2,
    shift=2,
    n_train=16,
)


def _bank(n=16, res=32):
    images, _, _ = procedural.make_dataset(n, seed=procedural.split_seed("train", 0), resolution=res)
    return ImageBank(images)


def test_training_captions_match_bank_order():
    caps = clip_training.training_captions(3, seed=5)
    _, _, expected = procedural.make_dataset(3, seed=procedural.split_seed("train", 5), resolution=8)
    assert caps == expected


@pytest.mark.slow
def test_trainer_steps_resumes_exactly_and_exports(tmp_path):
    cfg = clip_training.TrainConfig(**TRAIN)
    trainer = clip_training.ClipTrainer(cfg, torch.device("cpu"), _bank())
    losses = trainer.step()
    assert set(losses) == {"loss", "acc", "scale"} and all(map(math.isfinite, losses.values()))
    assert trainer.samples().shape == (16, 3, 32, 32)
    progress = {"config": asdict(cfg), "sessions": [], "nimg": trainer.nimg, "elapsed_s": 1.0}
    save_checkpoint(tmp_path / "run", trainer.state_dict(), progress)
    state, _ = load_checkpoint(tmp_path / "run")
    resumed = clip_training.ClipTrainer(cfg, torch.device("cpu"), _bank())
    resumed.load_state_dict(state)
    assert trainer.step() == resumed.step()

    out = tmp_path / "models" / "my-clip.safetensors"
    clip_training.export(tmp_path / "run", out, argv=["export"])
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["config"] == cfg.open_clip_config() and card["storage_dtype"] == "float16"
    assert json.loads((out.parent / "open_clip" / "my-clip.json").read_text()) == cfg.open_clip_config()
    loaded = load_clip(weights=out)
    assert loaded.embed_dim == 16 and loaded.image_size == 32


# --- the bundled model --------------------------------------------------------------------------


def test_bundled_clip_loads_offline():
    config_path, weights = bundled_clip_paths()
    assert json.loads(config_path.read_text())["vision_cfg"]["image_size"] == 64
    clip = load_clip()
    assert clip.name == BUNDLED_CLIP and (clip.image_size, clip.embed_dim) == (64, 128)
    assert weights.stat().st_size < 10 * 2**20


def test_bundled_clip_zero_shot_far_above_chance():
    from core.evals.metrics import zero_shot

    report = zero_shot(load_clip(), n=60, attributes=("fur", "eyes", "background"), max_prompts=48)
    # Chance is 1/7 for fur and background, 1/4 for eyes; a broken model sits near those.
    assert report["fur"]["accuracy"] >= 0.6, report
    assert report["background"]["accuracy"] >= 0.6, report
    assert report["eyes"]["accuracy"] >= 0.4, report
