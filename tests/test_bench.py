"""The benchmark suite still runs (CI smoke: tiny sizes, no timing assertions)."""

import math

import pytest

from bench.__main__ import main

pytestmark = pytest.mark.slow  # the benchmark suite's smoke runs: tens of seconds


def test_bench_quick_runs_and_prints_tables(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    out = tmp_path / "perf.md"
    assert main(["--quick", "--only", "invert", "app", "scaling", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "textbook ms/step" in text and "time to first preview" in text and "Scaling" in text
    assert "MainWindow, offscreen" in text and "| event-loop stall, p99 (ms) |" in text
    rows = [r for r in out.read_text().splitlines() if r.startswith("| w+ |")]
    assert len(rows) == 2  # batch 1 and 2
    loss_diff = float(rows[0].split("|")[-2])
    assert math.isfinite(loss_diff) and loss_diff < 1e-3  # the same optimisation, not just a faster one


def test_bench_quick_prior_sdedit_and_options_tables(capsys):
    assert main(["--quick", "--only", "prior", "sdedit", "options", "train"]) == 0
    text = capsys.readouterr().out
    assert "Training throughput" in text and "| adversarial + distillation | 32 |" in text
    assert "denoise / task" in text and "direct ms/step" in text and "| channels_last |" in text
    sd_rows = [r for r in text.splitlines() if r.startswith("| 10 | 6 |")]  # S = 10, strength 0.6: 6 run
    assert len(sd_rows) == 1


def test_bench_quick_worker_process_against_the_thread(capsys, monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert main(["--quick", "--only", "worker"]) == 0
    text = capsys.readouterr().out
    row = next(r for r in text.splitlines() if r.startswith("| time to first preview (s) |"))
    thread, process = (float(x) for x in row.split("|")[2:4])
    assert thread > 0 and process > 0


def test_bench_quick_batch_on_ray_equals_the_plain_cli(capsys):
    pytest.importorskip("ray")
    assert main(["--quick", "--only", "batch"]) == 0
    row = next(r for r in capsys.readouterr().out.splitlines() if "within 10 %, equal" in r)
    assert "| yes |" in row


def test_bench_quick_encoder_pass_quality_and_live_frames(capsys, monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert main(["--quick", "--only", "encoder"]) == 0
    out = capsys.readouterr().out
    row = next(r for r in out.splitlines() if r.startswith("| one encoder pass (ms) |"))
    assert float(row.split("|")[3]) > 0
    live = next(r for r in out.splitlines() if r.startswith("| thread |"))
    assert int(live.split("|")[3]) > 0  # frames reached the result view while the stroke moved


def test_the_projector_section_without_an_official_checkout_says_so(capsys):
    assert main(["--quick", "--only", "projector"]) == 0
    assert "skipped: pass --official-repo" in capsys.readouterr().out


def test_the_vgg16_stand_in_scripts_like_nvlabs_traced_file():
    """The stand-in for NVlabs' vgg16.pt (which the benchmark cannot download): TorchScript, called as
    the projector calls it, one flat LPIPS feature vector per image whose squared distance is 0 for
    the same image."""
    import io

    import torch

    from bench.projector_speed import VGG16LPIPSStandIn

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(VGG16LPIPSStandIn().eval().requires_grad_(False)), buf)
    buf.seek(0)
    vgg = torch.jit.load(buf)
    x = torch.rand(2, 3, 32, 32) * 255
    f = vgg(x, resize_images=False, return_lpips=True)
    assert f.shape == (2, 64 * 32 * 32 + 128 * 16 * 16 + 256 * 8 * 8 + 512 * 4 * 4 + 512 * 2 * 2)
    assert float((f[0] - vgg(x[:1], resize_images=False, return_lpips=True)[0]).square().sum()) < 1e-8
    assert float((f[0] - f[1]).square().sum()) > 0
