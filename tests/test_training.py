"""Fast tests of the training scripts: tiny 16 px models, a few iterations each."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.models.io import load_generator
from core.models.safe_load import sha256_file
from core.prior.wstats import kmeans, kmeans_plus_plus
from core.training import common, dcgan, projected, stylegan2
from core.training.common import ImageBank

RES = 16
TINY_SG2 = dict(
    resolution=RES,
    z_dim=16,
    w_dim=16,
    mapping_layers=2,
    channel_base=128,
    channel_max=16,
    d_channel_base=128,
    d_channel_max=16,
    batch=4,
    r1_interval=2,  # R1 runs on every other iteration, so the resume test crosses one
    n_train=32,
)
TINY_DCGAN = dict(resolution=RES, z_dim=16, base_channels=8, d_base_channels=8, batch=4, n_train=32)
ARCHS = {
    "stylegan2": (stylegan2, stylegan2.StyleGAN2Trainer, TINY_SG2),
    # with the projected discriminator on the bundled tiny CLIP's features (its state resumes too)
    "stylegan2-projected": (
        stylegan2,
        stylegan2.StyleGAN2Trainer,
        {**TINY_SG2, "proj_weight": 1.0, "proj_channels": 8},
    ),
    "dcgan": (dcgan, dcgan.DCGANTrainer, TINY_DCGAN),
}


@pytest.fixture(autouse=True)
def one_thread():
    # These tiny models gain nothing from threads, and with the cores busy elsewhere OpenMP's
    # spin-waiting made a 16 px step take seconds instead of 0.05 s.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bank():
    rng = np.random.default_rng(0)
    return ImageBank(rng.integers(0, 256, (32, RES, RES, 3), dtype=np.uint8))


def _cli_args(settings: dict) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]


def _flat_state(state) -> dict[str, torch.Tensor]:
    """Every tensor in a nested state dict, by path (optimiser moments included)."""
    out = {}

    def walk(prefix, obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(obj, list | tuple):
            for i, v in enumerate(obj):
                walk(f"{prefix}/{i}", v)
        elif isinstance(obj, torch.Tensor):
            out[prefix] = obj

    walk("", state)
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_step_runs_and_changes_generator(arch, bank):
    module, Trainer, tiny = ARCHS[arch]
    t = Trainer(module.TrainConfig(**tiny), torch.device("cpu"), bank)
    before = {k: v.clone() for k, v in t.G.state_dict().items()}
    losses = t.step()
    assert t.nimg == 4 and all(np.isfinite(v) for v in losses.values())
    changed = [k for k, v in t.G.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) > len(before) // 2
    assert t.samples().shape == (stylegan2.NUM_SAMPLES, 3, RES, RES)


@pytest.mark.parametrize("arch", ARCHS)
def test_resume_continues_bitwise(arch, tmp_path, monkeypatch):
    """Train 2 iterations, resume, train 2 more == train 4 uninterrupted (weights, optimisers, RNG)."""
    module, _, tiny = ARCHS[arch]
    monkeypatch.chdir(tmp_path)
    flags = ["--cache-dir=cache", "--checkpoint-minutes=60", *_cli_args(tiny)]
    module.main(["--out=a", "--kimg=0.008", *flags])
    assert json.loads((tmp_path / "a" / "progress.json").read_text())["nimg"] == 8
    module.main(["--out=a", "--kimg=0.016", "--resume", *flags])
    module.main(["--out=b", "--kimg=0.016", *flags])
    (state_a, prog_a), (state_b, prog_b) = common.load_checkpoint("a"), common.load_checkpoint("b")
    assert prog_a["nimg"] == prog_b["nimg"] == 16 and state_a["iteration"] == 4
    assert len(prog_a["sessions"]) == 2
    a, b = _flat_state(state_a), _flat_state(state_b)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert (tmp_path / "a" / "reals.png").is_file() and (tmp_path / "a" / "fakes-000000.png").is_file()


def test_projected_discriminator_switched_on_mid_run(bank):
    """`change --set proj_weight=1` on a plain run: the checkpoint has no projected D, which starts
    fresh; the pixel D and G resume as they were, and G's step then gets the projected term."""
    plain = stylegan2.StyleGAN2Trainer(stylegan2.TrainConfig(**TINY_SG2), torch.device("cpu"), bank)
    plain.step()
    cfg = stylegan2.TrainConfig(**{**TINY_SG2, "proj_weight": 1.0, "proj_channels": 8})
    t = stylegan2.StyleGAN2Trainer(cfg, torch.device("cpu"), bank)
    t.load_state_dict(plain.state_dict())
    pixel_d = t.D.state_dict()
    assert all(torch.equal(v, pixel_d[k]) for k, v in plain.D.state_dict().items())
    before = {k: v.clone() for k, v in t.P.state_dict().items()}
    losses = t.step()
    assert {"G_proj", "P", "P_real", "P_fake"} <= losses.keys()
    changed = [k for k, v in t.P.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and not any(k.startswith("ccm") for k in changed)  # heads learn, projections fixed
    assert "P" in t.state_dict() and "P" not in plain.state_dict()


def test_bf16_precision_trains_in_bf16_and_keeps_fp32_state(bank, monkeypatch):
    """precision bf16: G and D passes under autocast (their convs run in bf16), losses and the R1
    penalty finite, every weight, optimiser moment and G_ema still fp32; "auto" follows the CPU's
    capability; an unknown precision is refused."""
    cfg = stylegan2.TrainConfig(**{**TINY_SG2, "precision": "bf16", "r1_interval": 1})
    t = stylegan2.StyleGAN2Trainer(cfg, torch.device("cpu"), bank)
    seen = []
    hook = t.D.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    losses = t.step()
    hook.remove()
    assert t.bf16 and torch.bfloat16 in seen and np.isfinite(losses["r1"])
    assert all(np.isfinite(v) for v in losses.values())
    state = _flat_state(t.state_dict())
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}
    for native in (True, False):
        monkeypatch.setattr(stylegan2, "bf16_native", lambda device, n=native: n)
        assert stylegan2.use_bf16("auto", torch.device("cpu")) is native
    assert stylegan2.use_bf16("fp32", torch.device("cpu")) is False
    with pytest.raises(ValueError, match="precision must be"):
        stylegan2.use_bf16("fp8", torch.device("cpu"))


def test_diff_augment_is_differentiable_and_seeded():
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    a = projected.diff_augment(x, torch.Generator().manual_seed(1))
    b = projected.diff_augment(x, torch.Generator().manual_seed(1))
    c = projected.diff_augment(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # cutout zeroes half the size: every image has zeros; translation keeps the content otherwise
    assert all((img == 0).all(0).sum() >= 16 for img in a.detach())


def test_existing_run_needs_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = ["--out=a", "--kimg=0.004", "--cache-dir=cache", *_cli_args(TINY_DCGAN)]
    dcgan.main(flags)
    with pytest.raises(SystemExit):
        dcgan.main(flags)


def test_stylegan2_export(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stylegan2.main(["--out=run", "--kimg=0.004", "--cache-dir=cache", *_cli_args(TINY_SG2)])
    files = stylegan2.export(
        "run", "models/sg.safetensors", mean_w_samples=1000, wstats_samples=2000, k=8, kmeans_iters=10
    )
    meta = json.loads(files["sidecar"].read_text())
    assert files["sidecar"].name == "sg.json" and files["wstats"].name == "sg.wstats.safetensors"
    assert meta["sha256"] == sha256_file(files["model"])
    assert meta["wstats"]["sha256"] == sha256_file(files["wstats"])
    assert meta["training"]["kimg"] == 0.004 and meta["training"]["seed"] == 0
    G = load_generator(files["model"])
    state, _ = common.load_checkpoint("run")
    assert torch.equal(
        G.state_dict()["synthesis_net.b16.conv1.weight"], state["G_ema"]["synthesis_net.b16.conv1.weight"]
    )
    assert torch.allclose(G.mean_w(), G.sample_w(1000, seed=0).mean(0), atol=1e-5)
    stats = load_file(str(files["wstats"]))
    assert stats["centres"].shape == (8, 16) and stats["mean"].shape == stats["std"].shape == (16,)
    assert int(stats["counts"].sum()) == 2000


def test_a_fresh_discriminator_warms_up_alone_against_the_exported_generator(tmp_path, monkeypatch, bank):
    """--d-warmup-kimg after --init-from: D trains, G stays the export's until the warm-up is over
    (also across a resume), then G trains again."""
    monkeypatch.chdir(tmp_path)
    stylegan2.main(["--out=run", "--kimg=0.004", "--cache-dir=cache", *_cli_args(TINY_SG2)])
    files = stylegan2.export(
        "run", "g.safetensors", mean_w_samples=500, wstats_samples=500, k=4, kmeans_iters=2
    )
    cfg = stylegan2.TrainConfig(**{**TINY_SG2, "d_warmup_kimg": 0.008})  # two iterations of 4 images
    tr = stylegan2.StyleGAN2Trainer(cfg, torch.device("cpu"), bank)
    tr.init_from(files["model"])

    def params(m):
        return {k: v.clone() for k, v in m.state_dict().items()}

    g0, d0 = params(tr.G), params(tr.D)
    assert "G" not in tr.step()
    again = stylegan2.StyleGAN2Trainer(cfg, torch.device("cpu"), bank)
    again.load_state_dict(tr.state_dict())  # a resume keeps the warm-up's end
    assert "G" not in again.step()
    g1, d1 = params(again.G), params(again.D)
    assert all(torch.equal(g0[k], g1[k]) for k in g0) and not all(torch.equal(d0[k], d1[k]) for k in d0)
    assert "G" in again.step()
    assert not all(torch.equal(g1[k], v) for k, v in params(again.G).items())


def test_dcgan_export(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dcgan.main(["--out=run", "--kimg=0.004", "--cache-dir=cache", *_cli_args(TINY_DCGAN)])
    files = dcgan.export("run", "models/dc.safetensors")
    meta = json.loads(files["sidecar"].read_text())
    assert meta["sha256"] == sha256_file(files["model"]) and meta["config"]["arch"] == "dcgan"
    G = load_generator(files["model"])
    assert G(torch.randn(2, 16)).shape == (2, 3, RES, RES)


def test_kmeans_finds_k_centres_and_lowers_inertia():
    gen = torch.Generator().manual_seed(0)
    blobs = torch.randn(6, 4, generator=gen) * 5
    x = (blobs[torch.randint(6, (600,), generator=gen)] + torch.randn(600, 4, generator=gen)).float()
    centres, labels, inertia = kmeans(x, 6, seed=1)
    assert centres.shape == (6, 4) and labels.shape == (600,)
    assert inertia == pytest.approx(float((x - centres[labels]).square().sum()), rel=1e-4)
    random_init = x[torch.randperm(600, generator=gen)[:6]]
    assert inertia < float(torch.cdist(x, random_init).min(1).values.square().sum())
    pp_init = kmeans_plus_plus(x, 6, gen=torch.Generator().manual_seed(1))
    assert inertia <= float(torch.cdist(x, pp_init).min(1).values.square().sum())
    again, _, _ = kmeans(x, 6, seed=1)
    assert torch.equal(centres, again)


def test_checkpoint_parts_split_and_join_back_byte_for_byte(tmp_path):
    from core.training.gpu_stint import join_parts, split_file

    data = np.random.default_rng(0).integers(0, 256, 2500, dtype=np.uint8).tobytes()
    (tmp_path / "checkpoint.pt").write_bytes(data)
    parts = split_file(tmp_path / "checkpoint.pt", tmp_path / "out", part_bytes=1000)
    assert [p.name for p in parts] == ["checkpoint.part0", "checkpoint.part1", "checkpoint.part2"]
    assert join_parts(tmp_path / "out", tmp_path / "back.pt").read_bytes() == data
    parts[1].unlink()  # a missing middle part is refused, not silently joined
    with pytest.raises(FileNotFoundError, match="complete set"):
        join_parts(tmp_path / "out", tmp_path / "bad.pt")


def test_the_training_cats_render_the_same_in_several_processes(tmp_path):
    one = common.procedural_bank(6, seed=0, resolution=16, cache_dir=None)
    two = common.procedural_bank(6, seed=0, resolution=16, cache_dir=tmp_path, workers=2)
    assert torch.equal(one.images, two.images)
    assert torch.equal(
        common.procedural_bank(6, seed=0, resolution=16, cache_dir=tmp_path).images, one.images
    )


def test_a_packed_stint_ships_each_stage_and_a_failed_stage_loses_nothing_else(tmp_path, monkeypatch):
    """With --pack each stage comes back as one tar, split where larger than a returned file may be;
    ``unpack`` opens them byte for byte; a stage that raises is logged and the next one still ships."""
    from core.training import gpu_stint

    rng = np.random.default_rng(0)
    made = {}

    def fake_file(folder, name, size):
        made[name] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        (folder / name).write_bytes(made[name])
        return folder / name

    def fake_gan(a, run):
        fake_file(run, "progress.json", 10)
        fake_file(run, "fakes-000001.png", 10)

    def fake_export(a, run, models):
        fake_file(models, "stylegan2-cats64.json", 10)
        fake_file(models, "stylegan2-cats64.wstats.safetensors", 10)
        return fake_file(models, "stylegan2-cats64.safetensors", 3000)

    def failing_priors(a, model, models):
        raise RuntimeError("no GPU memory left")

    def fake_encoder(a, model, models):
        return [fake_file(models, "stylegan2-cats64.encoder.safetensors", 2500)]

    monkeypatch.setattr(gpu_stint, "_train_gan", fake_gan)
    monkeypatch.setattr(gpu_stint, "_export_gan", fake_export)
    monkeypatch.setattr(gpu_stint, "STAGES", {"priors": failing_priors, "encoder": fake_encoder})
    monkeypatch.setattr(gpu_stint, "PART_BYTES", 1000)
    out = tmp_path / "out"
    gpu_stint.main(["--out", str(out), "--scratch", str(tmp_path / "w" / "gan"), "--cache-dir",
                    str(tmp_path / "w" / ".cache"), "--prior-minutes", "1", "--encoder-minutes", "1",
                    "--pack", "--no-checkpoint-parts"])  # fmt: skip
    shipped = list(out.iterdir())
    assert {p.name.split(".")[0] for p in shipped} == {"gan", "encoder"}  # the failed priors: nothing
    assert all(p.suffix.startswith(".part") and p.stat().st_size <= 1000 for p in shipped)
    names = gpu_stint.unpack(out, tmp_path / "back")
    assert sorted(names) == sorted(made)
    assert all((tmp_path / "back" / n).read_bytes() == data for n, data in made.items())
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == sorted(made)  # no joined tars left


@pytest.mark.slow
def test_a_gpu_stint_writes_what_ships_and_resumes_from_its_parts(tmp_path):
    """The one-command stint (here on the CPU, seconds): export + card + parts; then a second stint
    rebuilt from those parts carries on from the first one's images shown."""
    from core.training import gpu_stint

    flags = ["--device", "cpu", "--minutes", "0.03", "--batch", "4", "--fid-samples", "0", "--n-train", "64",
             "--wstats-samples", "2000", "--scratch", str(tmp_path / "run"),
             "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    gpu_stint.main(["--out", str(tmp_path / "a"), *flags])
    names = {p.name for p in (tmp_path / "a").iterdir()}
    assert {
        "stylegan2-cats64.safetensors",
        "stylegan2-cats64.json",
        "progress.json",
        "checkpoint.part0",
    } <= names
    first = json.loads((tmp_path / "a" / "progress.json").read_text())
    assert first["nimg"] > 27_000  # the bundled export's images, then this stint's
    load_generator(tmp_path / "a" / "stylegan2-cats64.safetensors")
    gpu_stint.main(["--out", str(tmp_path / "b"), "--resume-parts", str(tmp_path / "a"), *flags])
    second = json.loads((tmp_path / "b" / "progress.json").read_text())
    assert second["nimg"] > first["nimg"] and len(second["sessions"]) == 2


def test_a_learning_curve_point_has_fid_and_the_pixel_swd(bank):
    cfg = stylegan2.TrainConfig(**{**TINY_SG2, "fid_samples": 24})
    point = stylegan2.StyleGAN2Trainer(cfg, torch.device("cpu"), bank).evaluate()
    assert point["fid24"] > 0 and len(point["swd"]) == 2  # 16 px: two levels (the coarsest >= 8 px)
    assert all(v > 0 for v in point["swd"])
