"""ReStyle refinement (core.encoder.model.Refiner): the encoder's answer corrected after rendering it,
used by the inversion job as asked (capped at what the encoder has), saved and loaded with the
encoder, trained on top of a frozen encoder, offered in the panel and measured in the encoder table."""

import json

import numpy as np
import pytest
import torch

from core.encoder.model import EncoderConfig, build_encoder, load_encoder_for, prepare_inputs
from core.errors import JobError
from core.jobs.invert import invert
from core.jobs.params import InvertParams
from core.jobs.runner import run_to_completion
from tests.conftest import tiny_stylegan


@pytest.fixture(scope="module")
def G32():
    return tiny_stylegan(resolution=32)


def _encoder(G, refine_steps=2, *, refiner_head=True, seed=0):
    """An encoder with non-zero heads (answers depend on the input), and a refiner when asked."""
    cfg = EncoderConfig(G.resolution, G.num_ws, G.w_dim, width=8, max_channels=16, hidden=32,
                        refine_steps=refine_steps)  # fmt: skip
    enc = build_encoder(cfg)
    with torch.no_grad():
        torch.manual_seed(seed)
        enc.head[-1].weight.normal_(0, 0.05)
        if enc.refiner is not None and refiner_head:
            enc.refiner.head[-1].weight.normal_(0, 0.05)
    ws = G.sample_w(2000)
    enc.set_stats(ws.mean(0), ws.std(0))
    return enc.eval().requires_grad_(False)


def _target(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)


def test_an_untrained_refiner_keeps_the_first_pass(G32):
    enc = _encoder(G32, refiner_head=False)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(enc.encode(x, None, G32.synthesis, 2), enc(x))


def test_a_refinement_looks_at_the_rendered_answer(G32):
    enc = _encoder(G32)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    ws = enc(x)
    one = enc.refine(x, None, ws, G32.synthesis)
    assert not torch.allclose(one, ws)
    # the same ws, rendered differently: a different correction (it sees the result, not only ws)
    other = enc.refine(x, None, ws, lambda w: G32.synthesis(w).flip(-1))
    assert not torch.allclose(one, other)
    torch.testing.assert_close(enc.encode(x, None, G32.synthesis, 1), one)
    with pytest.raises(ValueError, match="no refiner"):
        _encoder(G32, refine_steps=0).refine(x, None, ws, G32.synthesis)


def test_the_job_runs_the_refinements_it_asks_for_capped_at_the_encoders(G32):
    enc = _encoder(G32, refine_steps=2)
    target = _target()
    image, _ = prepare_inputs(target, None, 32, "cpu")

    def start(refine, encoder=enc):
        p = InvertParams(target=target, init="encoder", steps=0, perceptual_weight=0, encoder_refine=refine)
        return run_to_completion(invert(p, G32, encoder=encoder)).latent

    np.testing.assert_allclose(start(0), enc(image).numpy(), atol=1e-6)
    np.testing.assert_allclose(start(1), enc.encode(image, None, G32.synthesis, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(start(5), enc.encode(image, None, G32.synthesis, 2).numpy(), atol=1e-5)
    plain = _encoder(G32, refine_steps=0)  # an encoder without a refiner: its one pass
    np.testing.assert_allclose(start(3, plain), plain(image).numpy(), atol=1e-6)
    with pytest.raises(JobError, match="encoder_refine"):
        InvertParams(target=target, encoder_refine=-1)


def test_a_refiner_is_saved_and_loaded_with_its_encoder(G32, tmp_path):
    from tests.test_encoder import _save_beside

    enc = _encoder(G32, refine_steps=3)
    gen_path = _save_beside(G32, tmp_path, enc)
    loaded = load_encoder_for(gen_path, G32)
    assert loaded.cfg.refine_steps == 3
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded.encode(x, None, G32.synthesis), enc.encode(x, None, G32.synthesis))


def test_a_refiner_trains_on_top_of_a_frozen_encoder(G32, tmp_path):
    from core.models.io import save_generator
    from core.training import encoder as tr
    from core.training.common import load_checkpoint
    from tests.test_encoder import _save_beside

    base = _encoder(G32, refine_steps=0)
    gen_path = _save_beside(G32, tmp_path, base)
    base_file = tmp_path / "base.encoder.safetensors"
    base_file.write_bytes(gen_path.with_name("g.encoder.safetensors").read_bytes())
    folder = tmp_path / "images"
    folder.mkdir()
    from core.imageio import save_png

    for i in range(4):
        save_png(_target(i), folder / f"{i}.png")
    run = ["--generator", str(save_generator(G32, gen_path)), "--images", str(folder), "--out",
           str(tmp_path / "run"), "--kimg", "0.032", "--batch", "8", "--bank", "16", "--latent-kimg", "0",
           "--width", "8", "--max-channels", "16", "--hidden", "32", "--checkpoint-minutes", "100",
           "--refine-steps", "2"]  # fmt: skip
    with pytest.raises(SystemExit):  # a refiner needs the encoder it refines
        tr.train(run)
    tr.train([*run, "--init-from", str(base_file)])
    state, _ = load_checkpoint(tmp_path / "run")
    warm = tr._refiner_warm_start(base)  # the refiner's start: the encoder's trunk, new inputs at zero
    assert warm["refiner.stem.weight"].shape[1] == 10 and not warm["refiner.stem.weight"][:, 4:].any()
    assert torch.equal(warm["refiner.stem.weight"][:, :4], base.stem.weight)
    assert torch.equal(warm["refiner.blocks.0.conv1.weight"], base.blocks[0].conv1.weight)
    assert not any(k.startswith("refiner.head.3.") for k in warm)  # the zero head stays the identity
    for k, v in base.state_dict().items():
        if k not in ("w_mean", "w_std"):
            assert torch.equal(state["model"][k], v), k  # the first pass stays the encoder's
    # the refiner started from the encoder's trunk (extra input channels at zero) and trained on
    stem = state["model"]["refiner.stem.weight"]
    assert stem.shape[1] == 10 and not torch.equal(stem[:, :4], base.stem.weight)
    assert state["model"]["refiner.head.3.weight"].abs().sum() > 0
    out = tr.export(tmp_path / "run", tmp_path / "refined.encoder.safetensors")
    assert load_encoder_for(gen_path, G32, path=out["model"]).cfg.refine_steps == 2
    # a refiner continued from that export (as on a lent GPU, then here): its card names both runs
    # and the first pass under them
    more = [*run[: run.index("--out") + 1], str(tmp_path / "more"), *run[run.index("--out") + 2 :]]
    tr.train([*more, "--init-from", str(out["model"])])
    again = tr.export(tmp_path / "more", tmp_path / "more.encoder.safetensors")
    from core.evals.encoders import _training_line
    from core.models.safe_load import sha256_file

    line = _training_line(json.loads(again["model"].with_suffix(".json").read_text())["training"])
    assert f"first pass is the encoder `{sha256_file(base_file)[:12]}`" in line
    assert line.count("kimg in") == 3 and ", then " in line  # the first pass, then the two refiner runs


def test_the_encoder_table_adds_the_default_and_its_refined_start_against_the_w_plus_baseline(G32):
    from core.evals import encoders as ev

    assert ev.table_rows(None) == ev.table_rows(ev.BASE_ROWS[0]) == ev.BASE_ROWS
    default = ev.Row("s", 0.2, 30, "w+", 2)
    rows = ev.table_rows(default)
    assert rows[len(ev.BASE_ROWS) :] == (ev.Row("w+", ev.LR, 0, "w+", 2), default)
    runs = ev.table_runs(rows)
    assert len(runs) == len(set(runs)) == 8  # two mean-init baselines, six encoder runs
    assert runs.index(("w+", "mean", ev.LR, 0, 0)) < runs.index(("w+", "encoder", ev.LR, 0, 0))
    # the app's default, its refinements capped at the encoder's
    assert ev.app_default_row(_encoder(G32, refine_steps=0)).refine == 0
    label = ev._row_label({"space": "s", "mean_init_space": "w+", "lr": 0.2, "lr_rampup": 30, "refine": 2})
    assert (
        label == "s from the encoder's w+ (lr 0.2, ramp-up 30 steps), against w+, after 2 ReStyle refinements"
    )
