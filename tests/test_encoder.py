"""The encoder (core.encoder): one pass to w+, used as the inversion's start, found beside its generator,
refused cleanly when it belongs to another generator; its training data and trainer."""

import json

import numpy as np
import pytest
import torch

from core.encoder.model import (
    EncoderConfig,
    build_encoder,
    encoder_path_for,
    load_encoder,
    load_encoder_for,
    prepare_inputs,
    save_encoder,
)
from core.errors import JobError, ModelLoadError
from core.jobs.invert import invert, w_statistics
from core.jobs.params import InvertParams, mode_defaults
from core.jobs.runner import run_to_completion
from core.training.common import load_checkpoint
from tests.conftest import tiny_stylegan


@pytest.fixture
def G32():
    return tiny_stylegan(resolution=32)


def _trained_ish(G, seed=0):
    """An encoder whose head is not zero (so its answers depend on the input)."""
    enc = build_encoder(EncoderConfig(G.resolution, G.num_ws, G.w_dim, width=8, max_channels=16, hidden=32))
    with torch.no_grad():
        torch.manual_seed(seed)
        enc.head[-1].weight.normal_(0, 0.05)
    ws = G.sample_w(2000)
    enc.set_stats(ws.mean(0), ws.std(0))
    return enc.eval().requires_grad_(False)


def _target(seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


def test_an_untrained_encoder_answers_the_mean_latent(G32):
    enc = build_encoder(EncoderConfig(32, G32.num_ws, G32.w_dim, width=8, max_channels=16, hidden=32))
    enc.set_stats(G32.mean_w(), torch.ones(G32.w_dim))
    ws = enc(torch.zeros(2, 3, 32, 32))
    assert ws.shape == (2, G32.num_ws, G32.w_dim)
    torch.testing.assert_close(ws, G32.mean_w().expand(2, G32.num_ws, -1))


def test_encoder_init_starts_from_the_encoders_answer(G32):
    enc = _trained_ish(G32)
    target = _target()
    p = InvertParams(target=target, init="encoder", steps=0, perceptual_weight=0, space="w+")
    r = run_to_completion(invert(p, G32, encoder=enc))
    image, mask = prepare_inputs(target, None, 32, "cpu")
    np.testing.assert_allclose(r.latent, enc(image, mask).numpy(), atol=1e-6)
    assert r.images.shape == (1, 32, 32, 3)
    # w: the mean of the w+ rows; it then optimises from there and gets closer to the target.
    p_w = InvertParams(target=target, init="encoder", steps=0, perceptual_weight=0, space="w")
    r_w = run_to_completion(invert(p_w, G32, encoder=enc))
    np.testing.assert_allclose(r_w.latent, r.latent.mean(1), atol=1e-6)
    r_opt = run_to_completion(invert(InvertParams(target=target, init="encoder", steps=20, space="w",
                                                  perceptual_weight=0), G32, encoder=enc))  # fmt: skip
    assert r_opt.loss_history[-1]["l1"] < r_opt.loss_history[0]["l1"]


def test_the_encoder_sees_the_mask(G32):
    enc = _trained_ish(G32)
    target = _target()
    mask = np.zeros((32, 32), np.float32)
    mask[8:20, 8:20] = 1
    whole = run_to_completion(
        invert(InvertParams(target=target, init="encoder", steps=0, perceptual_weight=0), G32, encoder=enc)
    )
    part = run_to_completion(
        invert(
            InvertParams(target=target, mask=mask, init="encoder", steps=0, perceptual_weight=0),
            G32,
            encoder=enc,
        )
    )
    assert np.abs(whole.latent - part.latent).max() > 1e-4


def test_jitter_spreads_the_samples_after_the_first(G32):
    enc = _trained_ish(G32)
    p = InvertParams(
        target=_target(), init="encoder", steps=0, perceptual_weight=0, num_samples=3, encoder_jitter=0.5
    )
    lat = run_to_completion(invert(p, G32, encoder=enc)).latent
    alone = run_to_completion(
        invert(InvertParams(target=_target(), init="encoder", steps=0, perceptual_weight=0), G32, encoder=enc)
    )
    np.testing.assert_allclose(lat[0], alone.latent[0], atol=1e-6)
    assert np.abs(lat[1] - lat[0]).max() > 1e-3 and np.abs(lat[2] - lat[1]).max() > 1e-3


def test_multi_start_mixes_the_encoder_start_with_random_starts(G32):
    enc = _trained_ish(G32)
    from core.jobs.invert import initial_latent

    p = InvertParams(target=_target(), init="encoder", starts=4, num_samples=2, steps=5, perceptual_weight=0)
    lat = initial_latent(G32, p, "cpu", enc)
    first = initial_latent(G32, InvertParams(target=_target(), init="encoder"), "cpu", enc)
    torch.testing.assert_close(lat[:1], first)
    assert lat.shape[0] == 4 and (lat[1] - lat[0]).abs().max() > 1e-3


def test_encoder_init_without_an_encoder_is_a_clear_job_error(G32):
    with pytest.raises(JobError, match="encoder"):
        run_to_completion(
            invert(InvertParams(target=_target(), init="encoder", steps=1, perceptual_weight=0), G32)
        )
    with pytest.raises(JobError, match="w or w\\+"):
        InvertParams(target=_target(), init="encoder", space="z")
    with pytest.raises(JobError):
        InvertParams(target=_target(), init="encoder", encoder_jitter=-1)


def test_modes_start_from_the_encoder_only_where_there_is_one():
    for mode in ("invert", "scribble", "inpaint"):
        assert mode_defaults(mode)["init"] != "encoder"
        assert mode_defaults(mode, has_encoder=True)["init"] == "encoder"


def test_an_encoder_default_space_the_generator_lacks_falls_back_to_the_modes_own():
    """Plain inversion with an encoder refines in Style space, where the generator has one (a
    StyleGAN3 has z, w and w+ only: it keeps w+)."""
    assert mode_defaults("invert", has_encoder=True, spaces=["z", "w", "w+", "s"])["space"] == "s"
    fallback = mode_defaults("invert", has_encoder=True, spaces=("z", "w", "w+"))
    assert fallback["space"] == "w+" and fallback["init"] == "encoder"
    assert "lr" not in fallback and "lr_rampup" not in fallback  # the encoder's lr was measured in s
    chosen = mode_defaults("invert", has_encoder=True, space="w+")  # a space the person picked
    assert chosen["space"] == "w+" and chosen["init"] == "encoder" and "lr" not in chosen
    assert mode_defaults("scribble", has_encoder=True, spaces=("z", "w", "w+"))["space"] == "w"


def test_the_cli_takes_the_encoder_defaults_only_when_the_encoder_is_the_start():
    import argparse

    from core.cli.gan import _MODE_OPTIONS, apply_mode_defaults

    def args(init):
        keys = [opt for opt, _ in _MODE_OPTIONS if opt != "init"]
        return argparse.Namespace(init=init, scribble=False, hole=False, **dict.fromkeys(keys))

    encoder_lr = mode_defaults("invert", has_encoder=True)
    for init, space, lr, rampup in ((None, "s", encoder_lr["lr"], encoder_lr["lr_rampup"]),
                                    ("encoder", "s", encoder_lr["lr"], encoder_lr["lr_rampup"]),
                                    ("mean", "w+", 0.05, 0)):  # fmt: skip
        a = args(init)
        apply_mode_defaults(a, None, has_encoder=True, spaces=("z", "w", "w+", "s"))
        assert (a.space, a.lr, a.lr_rampup) == (space, lr, rampup), init
    a = args(None)
    a.space = "w+"  # --space w+ with the encoder: w+'s own lr, not the Style-space one
    apply_mode_defaults(a, None, has_encoder=True, spaces=("z", "w", "w+", "s"))
    assert (a.init, a.lr, a.lr_rampup) == ("encoder", 0.05, 0)


def test_prepare_inputs_unpremultiplies_paint_and_binarises_the_mask():
    paint = np.zeros((64, 64, 3), np.uint8)
    paint[:] = (200, 100, 50)
    alpha = np.zeros((64, 64), np.float32)
    alpha[10:30, 10:31] = 1.0  # an odd edge: half-covered pixels at 32 px
    image, mask = prepare_inputs(paint, alpha, 32, "cpu")
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    painted = image[0, :, mask[0, 0] > 0]
    want = torch.tensor([200, 100, 50]) / 127.5 - 1
    torch.testing.assert_close(painted.mean(1), want, atol=0.02, rtol=0)  # not darkened at the edges


# --- files -------------------------------------------------------------------------------------


def _save_beside(G, tmp_path, enc, sha_of=None):
    from core.models.io import save_generator
    from core.models.safe_load import sha256_file

    gen_path = save_generator(G, tmp_path / "g.safetensors")
    meta = {"generator": gen_path.name, "generator_sha256": sha256_file(sha_of or gen_path)}
    save_encoder(enc, encoder_path_for(gen_path), metadata=meta)
    return gen_path


def test_save_load_round_trip_and_found_beside_its_generator(G32, tmp_path):
    enc = _trained_ish(G32)
    gen_path = _save_beside(G32, tmp_path, enc)
    assert encoder_path_for(gen_path).name == "g.encoder.safetensors"
    loaded = load_encoder_for(gen_path, G32)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded(x), enc(x))


def test_an_encoder_for_another_generator_is_refused_with_how_to_train_one(G32, tmp_path):
    other = tmp_path / "other.bin"
    other.write_bytes(b"another generator")
    gen_path = _save_beside(G32, tmp_path, _trained_ish(G32), sha_of=other)
    with pytest.raises(ModelLoadError, match="another generator.*core.training.encoder"):
        load_encoder_for(gen_path, G32)
    with pytest.raises(ModelLoadError, match="no encoder"):
        load_encoder_for(tmp_path / "missing.safetensors", G32)


def test_damaged_encoder_files_are_refused(tmp_path):
    bad = tmp_path / "x.encoder.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError):
        load_encoder(bad)
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(bad), metadata={"format": "latent-canvas-encoder/1", "config": "{"})
    with pytest.raises(ModelLoadError, match="damaged"):
        load_encoder(bad)
    save_file({"a": torch.zeros(1)}, str(bad), metadata={"format": "latent-canvas-encoder/1",
                                                         "config": json.dumps({"resolution": 32, "num_ws": 4,
                                                                               "w_dim": 8})})  # fmt: skip
    with pytest.raises(ModelLoadError, match="do not match"):
        load_encoder(bad)


def test_the_engine_reports_and_uses_the_encoder_beside_the_model(G32, tmp_path):
    from core.worker.engine import Engine
    from core.worker.messages import JobRequest, LoadModelRequest, MsgKind

    gen_path = _save_beside(G32, tmp_path, _trained_ish(G32))
    got = []
    engine = Engine(got.append)
    engine.handle(JobRequest(1, "load_model", LoadModelRequest(str(gen_path))))
    assert got[-1].kind is MsgKind.MODEL_LOADED and got[-1].payload["encoder"] == "g.encoder.safetensors"
    p = InvertParams(target=_target(), init="encoder", steps=0, perceptual_weight=0)
    engine.handle(JobRequest(2, "invert", p))
    assert got[-1].kind is MsgKind.RESULT
    # Without the file: no encoder, a note saying so, and an encoder job is a job error (no crash).
    encoder_path_for(gen_path).unlink()
    engine.handle(JobRequest(3, "load_model", LoadModelRequest(str(gen_path))))
    assert got[-1].payload["encoder"] is None and "no encoder" in got[-1].payload["encoder_note"]
    engine.handle(JobRequest(4, "invert", p))
    assert got[-1].kind is MsgKind.ERROR and "encoder" in got[-1].payload


# --- training -------------------------------------------------------------------------------------


def test_synthetic_inputs_cover_whole_images_holes_and_scribbles():
    from core.training.encoder import region_scribbles, stroke_scribbles, synthetic_inputs

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(12, 3, 32, 32) * 2 - 1
    image, mask = synthetic_inputs(x, gen, p_whole=0.3, p_holes=0.3)
    assert image.shape == x.shape and mask.shape == (12, 1, 32, 32)
    cover = mask.mean((1, 2, 3))
    assert (cover == 1).any() and (cover < 1).any()
    assert torch.all(image[mask.expand_as(image) == 0] == 0)
    for make in (stroke_scribbles, region_scribbles):
        paint, m = make(x, gen)
        assert set(m.unique().tolist()) <= {0.0, 1.0} and m.sum() > 0 and (m.mean((1, 2, 3)) < 1).any()
        assert paint.min() >= -1 and paint.max() <= 1


def test_training_lowers_the_loss_resumes_and_exports(G32, tmp_path, monkeypatch):
    from core.models.io import save_generator
    from core.training import encoder as tr

    gen_path = save_generator(G32, tmp_path / "g.safetensors")
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    from core.imageio import save_png

    for i in range(8):
        save_png(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8), folder / f"{i}.png")
    args = ["--generator", str(gen_path), "--images", str(folder), "--out", str(tmp_path / "run"), "--kimg",
            "0.064", "--batch", "8", "--bank", "16", "--latent-kimg", "0.016", "--width", "8",
            "--max-channels", "16", "--hidden", "32", "--checkpoint-minutes", "100"]  # fmt: skip
    progress = tr.train(args)
    assert progress["nimg"] == 64 and progress["curve"][-1]["psnr_whole"] > 0
    tr.train([*args[2:], "--resume", "--kimg", "0.08"])
    out = tr.export(tmp_path / "run")
    assert out["model"] == encoder_path_for(gen_path)
    card = json.loads(out["sidecar"].read_text())
    assert card["training"]["kimg"] == 0.08 and card["generator_sha256"]
    trained = load_encoder_for(gen_path, G32)
    # a new run for a changed generator starts from this encoder's weights (W statistics its own)
    G2 = tiny_stylegan(resolution=32, seed=5)
    gen2 = save_generator(G2, tmp_path / "g2.safetensors")
    run2 = ["--generator", str(gen2), *args[2:5], str(tmp_path / "run2"), "--kimg", "0.008", *args[8:]]
    progress = tr.train([*run2, "--init-from", str(out["model"]), "--latent-kimg", "0"])
    assert progress["init_from"]["kimg"] == 0.08 and progress["init_from"]["sha256"]
    state, _ = load_checkpoint(tmp_path / "run2")
    start = {k: v for k, v in trained.state_dict().items() if k not in ("w_mean", "w_std")}
    assert sum(torch.equal(state["ema"][k], v) for k, v in start.items()) < len(start)  # it trained on
    mean, _std = w_statistics(G2)
    assert torch.allclose(state["ema"]["w_mean"], mean.reshape(-1))
    with pytest.raises(SystemExit):  # a resumed run cannot start over from another encoder
        tr.train([*run2, "--resume", "--init-from", str(out["model"])])


def test_a_sweep_row_runs_the_encoder_settings():
    from core.clip import load_clip
    from core.evals import inversion_quality as iq
    from core.evals.metrics import clip_features, procedural_batches
    from core.losses import make_perceptual_loss

    clip = load_clip()
    real = clip_features(clip, procedural_batches(40, split="eval", start=1000))
    scribbles = {k: v for k, v in iq.load_scribbles().items() if k in ("sparse-0", "dense-0")}
    name, cfg = next((n, c) for n, c in iq.SWEEP_SETTINGS if c.get("init") == "encoder" and c["steps"] == 0)
    G64 = tiny_stylegan(resolution=64)  # the fixed scribbles are 64 px
    row = iq.sweep_row(G64, scribbles, cfg, k=3, perceptual=make_perceptual_loss("bundled"), clip=clip,
                       real=real, encoder=_trained_ish(G64))  # fmt: skip
    assert row["n_results"] == 6 and row["diversity"] > 0  # the spread starts differ
    assert row["inpaint"]["kept_psnr_min"] > 90
    assert row["inpaint"]["diversity"] > 0  # the spread starts differ in the hole too


def test_the_cli_starts_from_the_encoder_beside_the_model_by_default(G32, tmp_path):
    from core.cli import main
    from core.imageio import save_png

    gen_path = _save_beside(G32, tmp_path, _trained_ish(G32))
    image = save_png(_target(), tmp_path / "cat.png")
    common = ["invert", "--image", str(image), "--model", str(gen_path), "--perceptual", "none"]
    assert main([*common, "--steps", "0", "--out", str(tmp_path / "a")]) == 0
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["params"]["init"] == "encoder" and run["encoder"].endswith("g.encoder.safetensors")
    assert main([*common, "--steps", "3", "--init", "mean", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "run.json").read_text())["params"]["init"] == "mean"
    encoder_path_for(gen_path).unlink()  # no encoder: mean init by default, and asking for one fails
    assert main([*common, "--steps", "1", "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "run.json").read_text())["params"]["init"] == "mean"
    assert main([*common, "--steps", "1", "--init", "encoder", "--out", str(tmp_path / "d")]) == 1


def test_change_records_a_setting_change_for_the_resumed_run(G32, tmp_path):
    from core.models.io import save_generator
    from core.training import encoder as tr

    gen_path = save_generator(G32, tmp_path / "g.safetensors")
    folder = tmp_path / "images"
    folder.mkdir()
    from core.imageio import save_png

    for i in range(4):
        save_png(np.full((32, 32, 3), 40 * i, np.uint8), folder / f"{i}.png")
    run = str(tmp_path / "run")
    small = ["--batch", "8", "--bank", "8", "--width", "8", "--max-channels", "16", "--hidden", "32"]
    tr.train(["--generator", str(gen_path), "--images", str(folder), "--out", run, "--kimg", "0.016", *small])
    tr.main(["change", "--run", run, "--set", "lr=1e-4", "--why", "anneal"])
    progress = tr.train(["--out", run, "--resume", "--kimg", "0.032"])
    assert progress["config"]["lr"] == 1e-4
    assert progress["config_changes"][-1] == {"kimg": 0.016, "changes": {"lr": 1e-4}, "why": "anneal"}


def test_the_sweep_figure_draws_a_line_per_scribble_and_row(tmp_path):
    from PIL import Image

    from core.evals import inversion_quality as iq
    from core.losses import make_perceptual_loss

    G64 = tiny_stylegan(resolution=64)
    scribbles = {k: v for k, v in iq.load_scribbles().items() if k in ("sparse-0", "dense-1")}
    rows = ["encoder: w, spread 0.7, no steps", "encoder: w, spread 0.7, 20 steps, lr 0.01"]
    out = iq.sweep_figure(G64, rows, scribbles, k=2, perceptual=make_perceptual_loss("bundled"),
                          encoder=_trained_ish(G64), out=tmp_path / "fig.png")  # fmt: skip
    w, h = Image.open(out).size
    assert h == 4 * (128 + 4) and w == 260 + 3 * (128 + 4)  # 2 scribbles x 2 rows; scribble + 2 candidates
    with pytest.raises(SystemExit, match="unknown sweep rows"):
        iq.sweep_figure(
            G64, ["no such row"], scribbles, k=2, perceptual=None, encoder=None, out=tmp_path / "x.png"
        )


def test_the_encoder_table_compares_each_refinement_with_its_mean_init_baseline(monkeypatch):
    """Rows w+ and w against mean init in their own space; the Style-space refinements (from the
    encoder's w+, the app's default among them) against the w+ mean init, the issue's reference. The
    doc names that baseline."""
    from core.evals import encoders as ev
    from core.losses import make_perceptual_loss

    monkeypatch.setattr(ev, "REFINE", 2)  # "encoder + 2 steps": a quick run of the same table
    G64 = tiny_stylegan(resolution=64)  # the held-out cats are 64 px
    table = ev.inversion_rows(G64, _trained_ish(G64), make_perceptual_loss("bundled"), n=2, steps=3)
    rows = {(r["space"], r["lr"], r["lr_rampup"]): r for r in table["rows"]}
    d = mode_defaults("invert", has_encoder=True)
    default = (d["space"], d["lr"], d["lr_rampup"])
    assert set(rows) == {("w+", 0.05, 0), ("w", 0.05, 0), ("s", 0.05, 0), ("s", ev.S_REFINE_LR, 0), default}
    assert (
        len(table["images"]) == len(ev.table_runs(ev.table_rows(ev.app_default_row(_trained_ish(G64))))) == 7
    )
    for key in (("s", 0.05, 0), ("s", ev.S_REFINE_LR, 0), default):
        assert rows[key]["mean_init_space"] == "w+"
        assert rows[key]["mean_init"] == rows[("w+", 0.05, 0)]["mean_init"]  # the same baseline run
    assert rows[("s", 0.05, 0)]["encoder_plus_steps"] != rows[("s", ev.S_REFINE_LR, 0)]["encoder_plus_steps"]
    lines = ev._inversion_lines(
        {"images": "2 cats", "losses": "L1", "optimizer": "adam", "rows": table["rows"]}
    )
    assert any(line.startswith("| s from the encoder's w+ (lr 0.2), against w+ |") for line in lines)
    assert any(
        line.startswith(
            "| s from the encoder's w+ (lr 0.2, ramp-up 30 steps), against w+ (**the app's default**) |"
        )
        for line in lines
    )
