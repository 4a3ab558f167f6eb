"""The latent priors, the W diffusion model and its samplers, the projection job and its CLI."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from core.errors import JobError
from core.jobs.params import ProjectionParams
from core.jobs.projection import project
from core.jobs.runner import run_to_completion
from core.paths import DEFAULT_GENERATOR, bundled_model
from core.prior import schedule
from core.prior.model import WDiffusionConfig, build_wdiffusion, load_wdiffusion, save_wdiffusion
from core.prior.priors import ClusterPrior, DiffusionPrior, MeanPrior, Prior, log_density_proxy, make_prior
from core.prior.samplers import ContinuousDDIM, guided_eps, sample_ddim, sample_pc, uniform_times
from core.prior.samplers.ddim import make_diffusers_ddim, sample_diffusers
from core.prior.wstats import wstats_from_generator
from core.types import CancelToken
from tests.conftest import tiny_stylegan

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
BUNDLED_PRIOR = bundled_model("wdiffusion-cats64.safetensors")
needs_bundled = pytest.mark.skipif(
    not (BUNDLED_PRIOR.is_file() and bundled_model(DEFAULT_GENERATOR).is_file()),
    reason="bundled generator or W prior missing",
)


class GaussianEps(torch.nn.Module):
    """The exact noise predictor for data x_0 ~ N(0, s^2 I): eps = sqrt(1 - ab) x_t / (ab s^2 + 1 - ab)."""

    def __init__(self, s: float) -> None:
        super().__init__()
        self.s = s

    def forward(self, x, t):
        ab = schedule.alpha_bar(t).to(x).view(-1, 1)
        return (1 - ab).sqrt() * x / (ab * self.s**2 + 1 - ab)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These small matmuls run 10x slower (in CPU time) on two threads when the cores are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bundled():
    from core.models.io import load_generator
    from core.prior.wstats import load_wstats, wstats_path_for

    G = load_generator(bundled_model(DEFAULT_GENERATOR))
    return G, load_wdiffusion(BUNDLED_PRIOR), load_wstats(wstats_path_for(bundled_model(DEFAULT_GENERATOR)))


# --- schedule and samplers ------------------------------------------------------------------------


def test_schedule_matches_diffusers_cosine_table():
    sched = make_diffusers_ddim(10)
    i = torch.tensor([0, 10, 250, 500, 900, 990])
    ours = schedule.alpha_bar(schedule.index_time(i))
    assert torch.allclose(ours.float(), sched.alphas_cumprod[i], rtol=1e-4, atol=1e-7)
    assert bool((schedule.alpha_bar(torch.linspace(0, 1, 50)).diff() < 0).all())


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_our_ddim_step_equals_diffusers(eta):
    model = GaussianEps(0.7)
    x_T = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    ours = sample_ddim(model, x_T, steps=20, eta=eta, generator=torch.Generator().manual_seed(2))
    theirs = sample_diffusers(model, x_T, steps=20, eta=eta, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(ours, theirs, atol=2e-3), (ours - theirs).abs().max()


@pytest.mark.parametrize("sampler", ["ddim", "ancestral", "pc"])
def test_samplers_draw_the_data_distribution_from_the_exact_score(sampler):
    s = 0.5  # x_0 ~ N(0, 0.25 I): samples must come out with std 0.5, not the prior's 1
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn(2000, 4, generator=gen)
    if sampler == "pc":
        x = sample_pc(GaussianEps(s), x_T, steps=200, generator=gen, snr=0.1)
    else:
        eta = 1.0 if sampler == "ancestral" else 0.0
        x = sample_ddim(GaussianEps(s), x_T, steps=200, eta=eta, generator=gen)
    assert abs(float(x.std()) - s) < 0.015  # the std's own sampling error here is about 0.004
    assert abs(float(x.mean())) < 0.02


@pytest.mark.parametrize("mode", ["x0", "xt"])
def test_guidance_pulls_samples_towards_low_task_loss(mode):
    target = torch.full((4,), 0.8)

    def run(scale: float) -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(512, 4, generator=gen)
        sched = ContinuousDDIM(uniform_times(30), eta=1.0)
        for t in sched.timesteps:
            eps, _, _ = guided_eps(
                GaussianEps(0.5), x, t, lambda x0: (x0 - target).square().sum(1), scale=scale
            )
            x = sched.step(eps, t, x, generator=gen)
        return (x - target).square().sum(1).mean()

    assert run(1.0) < 0.5 * run(0.0)


# --- priors -------------------------------------------------------------------------------------------


def _descent(prior: Prior, w: torch.Tensor) -> torch.Tensor:
    w = w.clone().requires_grad_(True)
    prior.penalty(w).sum().backward()
    return -w.grad


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


def test_mean_prior_descends_towards_the_mean_w():
    mean = torch.randn(16)
    w = torch.randn(5, 16) * 2
    assert bool((_cos(_descent(MeanPrior(mean, weight=0.1), w), mean - w) > 0.999).all())
    wplus = torch.randn(5, 3, 16)  # w+: every row towards the mean
    assert bool((_cos(_descent(MeanPrior(mean, weight=0.1), wplus), mean - wplus) > 0.999).all())


def test_cluster_prior_descends_towards_the_nearest_centre():
    centres = torch.eye(16)[:4] * 5  # four far-apart centres
    w = centres[[2, 0, 3]] + 0.5 * torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    descent = _descent(ClusterPrior(centres, weight=1.0), w)
    assert bool((_cos(descent, centres[[2, 0, 3]] - w) > 0.999).all())
    assert bool((_cos(descent, centres[[1, 1, 1]] - w) < 0.9).all())  # not towards another centre


@pytest.mark.parametrize("solver", ["sequential", "picard"])
@pytest.mark.parametrize("prediction", ["v", "eps"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_fast_projection_equals_the_plain_update_loop(prediction, eta, solver):
    """DiffusionPrior.project batches the time modulation (kept between calls), folds eps and the DDIM
    update into one multiply-add and runs packed linear layers, and may solve the K updates by Picard
    sweeps; the result must be the textbook loop's: the model called with its times, the DDIM update
    on the schedule, the same noise draws."""
    # 16 channels a group, as the bundled model: with 2 a group, a near-zero group variance can blow
    # float rounding up 300-fold (this test failed 1 run in 8 while its stats came from the global RNG)
    cfg = WDiffusionConfig(w_dim=16, width=64, groups=4, prediction=prediction)
    model = build_wdiffusion(cfg, seed=3).eval()
    gen = torch.Generator().manual_seed(6)  # a trained-looking, non-zero output layer
    torch.nn.init.normal_(model.out.weight, std=0.05, generator=gen)
    model.set_stats(torch.randn(16, generator=gen), torch.rand(16, generator=gen) + 0.5)
    prior = DiffusionPrior(model, steps=10, t_start=0.05, t_end=0.0, eta=eta, solver=solver, tol=1e-5)
    w = torch.randn(6, 16, generator=torch.Generator().manual_seed(4))
    fast = prior.project(w, generator=torch.Generator().manual_seed(5))
    again = prior.project(w, generator=torch.Generator().manual_seed(5))  # the kept conditioning
    if solver == "sequential":
        assert torch.equal(again, fast)
    else:  # warm-started from the first call's chain, which already solves it: one confirming sweep
        assert prior.last_sweeps == 1 and torch.allclose(again, fast, atol=1e-5)

    gen = torch.Generator().manual_seed(5)
    times = uniform_times(10, start=0.05, end=0.0)
    x = model.normalize(w)
    with torch.no_grad():
        for t, s in zip(times, [*times[1:], 0.0], strict=True):
            eps = model(x, torch.full((6,), t))
            ab_t, ab_s = float(schedule.alpha_bar(t)), float(schedule.alpha_bar(s))
            x0 = (x - (1 - ab_t) ** 0.5 * eps) / ab_t**0.5
            std = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)) ** 0.5
            x = ab_s**0.5 * x0 + max(1 - ab_s - std**2, 0.0) ** 0.5 * eps
            if std > 0:
                x = x + std * torch.randn(x.shape, generator=gen)
    plain = model.denormalize(x)
    assert not torch.equal(plain, w)  # the group moved the latents
    assert prior.uses_picard(6) is (solver == "picard")
    # float32 rounding only (the batched FiLM pass and the float coefficients reorder the sums)
    assert torch.allclose(fast, plain, atol=1e-4, rtol=1e-5), (fast - plain).abs().max()


def _chain_step(k: int, x: torch.Tensor) -> torch.Tensor:
    return x + 0.1 * (torch.sin(3 * x + k) - x)  # an Euler step of a nonlinear ODE, as a sampler's


def test_picard_solves_a_chain_as_the_sequential_loop_does():
    from core.prior.samplers.picard import solve_chain

    x0, steps = torch.randn(3, 5, generator=torch.Generator().manual_seed(0)), 12
    seq = [x0]
    for k in range(steps):
        seq.append(_chain_step(k, seq[-1]))
    seq = torch.stack(seq)

    def f(inp, s):
        return torch.stack([_chain_step(s + i, x) for i, x in enumerate(inp)])

    exact, sweeps = solve_chain(f, x0, steps, tol=0.0)  # nothing settles early: one point a sweep at worst
    assert sweeps <= steps and torch.allclose(exact, seq, atol=1e-5)
    loose, few = solve_chain(f, x0, steps, tol=1e-3)
    assert few < sweeps and (loose - seq).abs().max() < 1e-3
    _, warm = solve_chain(f, x0, steps, tol=1e-3, guess=exact[1:] - x0)  # already solved: one sweep
    assert warm == 1


def test_picard_projection_picks_up_a_weight_change():
    """Nothing but the warm start outlives a projection: after an in-place weight change the result
    is the new network's (the same as a new prior's), not the old one's."""
    model = build_wdiffusion(WDiffusionConfig(w_dim=16, width=64), seed=3).eval().requires_grad_(False)
    torch.nn.init.normal_(model.out.weight, std=0.05, generator=torch.Generator().manual_seed(6))
    w = torch.randn(2, 16, generator=torch.Generator().manual_seed(4))
    prior = DiffusionPrior(model, solver="picard", tol=1e-6)
    before = prior.project(w)
    with torch.no_grad():
        model.blocks[2].film.weight.mul_(3.0)  # the conditioning changes
        model.out.weight.mul_(2.0)  # and the pass does
    after = prior.project(w)
    fresh = DiffusionPrior(model, solver="picard", tol=1e-6).project(w)
    assert not torch.allclose(after, before, atol=1e-4) and torch.allclose(after, fresh, atol=1e-5)


def test_auto_solver_runs_picard_for_few_rows_only():
    model = build_wdiffusion(WDiffusionConfig(w_dim=16, width=64), seed=0).eval()
    prior = DiffusionPrior(model, steps=10)
    assert prior.uses_picard(1) and prior.uses_picard(4) and not prior.uses_picard(10)
    assert not prior.uses_picard(1, "cuda")  # auto keeps to the CPU, where it was measured
    assert DiffusionPrior(model, solver="picard").uses_picard(10, "cuda")
    prior.project(torch.randn(10, 16))
    assert prior.last_sweeps == 0  # ran sequentially
    prior.project(torch.randn(1, 16))
    assert prior.last_sweeps >= 1
    with pytest.raises(ValueError, match="solver"):
        DiffusionPrior(model, solver="parallel")


def test_none_prior_adds_nothing(G):
    w = G.sample_w(3).requires_grad_(True)
    assert torch.equal(Prior().penalty(w), torch.zeros(3)) and not Prior().penalty(w).requires_grad
    assert torch.equal(Prior().project(w), w)


def test_wstats_from_generator_orders_centres_by_population(G):
    stats = wstats_from_generator(G, n=500, k=4)
    assert stats.centres.shape == (4, G.w_dim) and bool((stats.counts.diff() <= 0).all())
    with pytest.raises(ValueError):
        make_prior("cluster")


# --- the trained prior ------------------------------------------------------------------------------


def _denoise_errors(model, x0: torch.Tensor, t: float) -> tuple[float, float]:
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    tv = torch.full((x0.shape[0],), t)
    x_t = schedule.add_noise(x0, eps, tv)
    with torch.no_grad():
        x0_hat = schedule.predict_x0(model(x_t, tv), t, x_t)
    return float((x_t - x0).square().mean()), float((x0_hat - x0).square().mean())


@needs_bundled
@pytest.mark.parametrize("t", [0.1, 0.3, 0.5])
def test_bundled_prior_denoises_mapping_samples(bundled, t):
    G, model, _ = bundled
    x0 = model.normalize(G.sample_w(1024, seed=999))  # fresh draws, not the training stream
    noisy, denoised = _denoise_errors(model, x0, t)
    assert denoised < 0.9 * noisy, (noisy, denoised)


@pytest.mark.slow
@needs_bundled
def test_bundled_prior_samples_and_projection_stay_on_the_manifold(bundled):
    from core.prior.samplers import sample_w

    G, model, _ = bundled
    w_data = G.sample_w(512, seed=7)
    ld_data = log_density_proxy(model, w_data)
    lo = float(torch.quantile(ld_data, 0.01))
    samples = sample_w(model, 256, sampler="pc", steps=30, seed=1)
    assert float(log_density_proxy(model, samples).median()) > lo
    # Latents perturbed by half a std per dim leave the data range; ten groups of K denoising updates
    # (what ten task steps apply) bring them back into it and closer to where they came from.
    noise = torch.randn(64, G.w_dim, generator=torch.Generator().manual_seed(2))
    off = w_data[:64] + 0.5 * model.std * noise
    prior, back = make_prior("diffusion", model=model), off
    for _ in range(10):
        back = prior.project(back)
    assert float(log_density_proxy(model, off).mean()) < lo < float(log_density_proxy(model, back).mean())
    assert (back - w_data[:64]).square().mean() < 0.7 * (off - w_data[:64]).square().mean()


@pytest.mark.slow
@needs_bundled
def test_projection_with_diffusion_prior_lowers_task_loss_within_data_range(bundled):
    from core.clip import bundled_clip_paths, load_clip

    if not bundled_clip_paths()[1].is_file():
        pytest.skip("bundled CLIP missing")
    G, model, _ = bundled
    clip = load_clip()
    lo = float(torch.quantile(log_density_proxy(model, G.sample_w(512, seed=7)), 0.01))
    runs = {}
    for prior in ("none", "diffusion"):
        p = ProjectionParams(task="clip", prompt="a black cat", prior=prior, steps=10, num_samples=3)
        events = []
        runs[prior] = run_to_completion(project(p, G, clip=clip, prior_model=model), events.append)
    assert len(events) == 10 and events[-1].preview.shape == (3, 64, 64, 3)
    result = runs["diffusion"]
    assert float(result.task_loss.mean()) < events[0].losses["task"] - 0.05
    # Without a prior the same steps leave the data range; the denoising groups keep the latents in it.
    assert bool((result.log_density > lo).all()), (result.log_density, lo)
    assert float(runs["none"].log_density.mean()) < lo < float(result.log_density.mean())


# --- training, files ------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_resumes_exactly_and_exports(tmp_path):
    from core.models.io import save_generator
    from core.training import wdiffusion

    gen_path = save_generator(tiny_stylegan(), tmp_path / "g.safetensors")
    common = ["--generator", str(gen_path), "--threads", "1", "--width", "64", "--groups", "8"]
    common += ["--batch", "64", "--checkpoint-minutes", "100"]
    wdiffusion.main([*common, "--out", str(tmp_path / "a"), "--kimg", "1.28"])  # 20 steps in one go
    wdiffusion.main([*common, "--out", str(tmp_path / "b"), "--kimg", "0.64"])  # 10 + 10 resumed
    wdiffusion.main(["--out", str(tmp_path / "b"), "--kimg", "1.28", "--resume", "--threads", "1"])
    ema_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["state"]["ema"]
    ema_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["state"]["ema"]
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    out = tmp_path / "prior.safetensors"
    wdiffusion.main(["export", "--run", str(tmp_path / "b"), "--out", str(out), "--eval-latents", "64"])
    card = json.loads(out.with_suffix(".json").read_text())
    from core.models.safe_load import sha256_file

    assert card["sha256"] == sha256_file(out) and card["generator_sha256"] == sha256_file(gen_path)
    assert card["training"]["kimg"] == pytest.approx(1.28) and len(card["quality"]["denoising_mse"]) == 5
    model = load_wdiffusion(out)
    assert all(torch.equal(model.state_dict()[k], ema_b[k]) for k in ema_b)


@pytest.mark.slow
def test_short_training_learns_to_denoise(G):
    from core.training.wdiffusion import TrainConfig, WDiffusionTrainer

    torch.manual_seed(0)
    cfg = TrainConfig(width=64, groups=8, batch=128, lr=3e-3, warmup=10, ema=0.9)
    trainer = WDiffusionTrainer(cfg, torch.device("cpu"), G, wstats_from_generator(G, n=2000, k=2))
    x0 = trainer.model.normalize(G.sample_w(512, seed=5))
    before = _denoise_errors(trainer.ema, x0, 0.5)[1]
    for _ in range(150):
        trainer.step()
    noisy, after = _denoise_errors(trainer.ema, x0, 0.5)
    assert after < before and after < noisy


def test_wplus_model_samples_wplus_and_rejects_other_spaces(G):
    from core.prior.samplers import sample_w

    model = build_wdiffusion(WDiffusionConfig(w_dim=G.w_dim, num_ws=G.num_ws, space="w+", width=32, groups=8))
    w = sample_w(model, 3, sampler="ddim", steps=4)
    assert w.shape == (3, G.num_ws, G.w_dim)
    with pytest.raises(ValueError):
        WDiffusionConfig(w_dim=8, num_ws=2, space="w")


def test_prior_file_round_trip(tmp_path):
    model = build_wdiffusion(WDiffusionConfig(w_dim=16, width=32, groups=8), seed=3)
    model.set_stats(torch.randn(16), torch.rand(16) + 0.5)
    torch.nn.init.normal_(model.out.weight)  # zero-initialised: make the output depend on the weights
    path = save_wdiffusion(model, tmp_path / "p.safetensors", metadata={"generator_sha256": "abc"})
    loaded = load_wdiffusion(path)
    x, t = torch.randn(4, 16), torch.rand(4)
    assert torch.equal(loaded(x, t), model(x, t))
    from core.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="not found"):
        load_wdiffusion(tmp_path / "missing.safetensors")


@pytest.mark.parametrize(
    "config, message",
    [
        (None, "missing or damaged"),  # no config key at all
        ("{not json", "missing or damaged"),
        ('{"w_dim": 16, "bogus": 1}', "missing or damaged"),  # an unknown field
        ('{"w_dim": 16, "space": "x"}', "missing or damaged"),  # a value the config refuses
        ('{"w_dim": 8, "width": 32, "groups": 8}', "do not match"),  # valid config, other shapes
    ],
)
def test_crafted_prior_files_get_a_clear_error(tmp_path, config, message):
    from safetensors.torch import save_file

    from core.errors import ModelLoadError
    from core.prior.model import FORMAT

    model = build_wdiffusion(WDiffusionConfig(w_dim=16, width=32, groups=8))
    meta = {"format": FORMAT} | ({} if config is None else {"config": config})
    path = tmp_path / "crafted.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    with pytest.raises(ModelLoadError, match=message):
        load_wdiffusion(path)
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(ModelLoadError, match="not a readable safetensors"):
        load_wdiffusion(tmp_path / "junk.safetensors")


# --- the projection job ---------------------------------------------------------------------------


def _target(r: int = 16) -> np.ndarray:
    return (np.random.default_rng(0).random((r, r, 3)) * 255).astype(np.uint8)


def _tiny_prior(G, space: str = "w"):
    """A small untrained diffusion prior with the generator's statistics, in W or Style space ("s")."""
    from core.prior.wstats import sstats_from_generator

    dim = G.s_dim if space == "s" else G.w_dim
    model = build_wdiffusion(WDiffusionConfig(w_dim=dim, space=space, width=32, groups=8), seed=0)
    stats = sstats_from_generator(G, n=500, k=3) if space == "s" else wstats_from_generator(G, n=500, k=4)
    model.set_stats(stats.mean, stats.std)
    return model.eval().requires_grad_(False), stats


@pytest.mark.parametrize("prior", ["none", "mean", "cluster", "diffusion", "task-guided"])
def test_every_prior_runs_and_cancel_stops_within_one_step(G, prior):
    model, stats = _tiny_prior(G)
    mask = np.zeros((16, 16), np.float32)
    mask[:, :8] = 1
    p = ProjectionParams(task="inpaint", target=_target(), mask=mask, prior=prior, steps=6, num_samples=2)
    cancel = CancelToken()
    job = project(p, G, prior_model=model, wstats=stats, cancel=cancel)
    first = next(job)
    assert first.step == 1 and math.isfinite(first.losses["task"])
    cancel.cancel()
    with pytest.raises(StopIteration) as stop:
        next(job)
    result = stop.value.value
    assert result.cancelled and len(result.loss_history) == 1 and result.images.shape == (2, 16, 16, 3)


def test_mean_prior_pulls_projection_towards_mean(G):
    _, stats = _tiny_prior(G)
    base = ProjectionParams(
        task="similarity", target=_target(), prior="none", steps=15, num_samples=3, lr=0.05
    )
    free = run_to_completion(project(base, G))
    mean = run_to_completion(project(replace(base, prior="mean", prior_weight=50.0), G, wstats=stats))
    dist = [np.square(r.latent - stats.mean.numpy()).sum(1).mean() for r in (free, mean)]
    assert dist[1] < dist[0]


def test_params_reject_bad_combinations():
    with pytest.raises(JobError):
        ProjectionParams(task="clip", prompt="  ")
    with pytest.raises(JobError):
        ProjectionParams(task="inpaint", target=_target())  # no mask
    with pytest.raises(JobError):
        ProjectionParams(task="clip", prompt="x", prior="magic")
    with pytest.raises(JobError):
        ProjectionParams(task="clip", prompt="x", space="z")
    with pytest.raises(JobError, match="denoise_solver"):
        ProjectionParams(task="clip", prompt="x", denoise_solver="parallel")


def test_projection_job_gives_the_same_latents_with_either_solver(G):
    """The job's Picard projection (warm-started from the last step's chain) against the sequential
    updates, through 8 task steps: the same latents, to well within the settling tolerance."""
    model, _ = _tiny_prior(G)
    torch.nn.init.normal_(model.out.weight, std=0.05, generator=torch.Generator().manual_seed(1))
    p = ProjectionParams(task="similarity", target=_target(), prior="diffusion", steps=8, num_samples=2)
    runs = {s: run_to_completion(project(replace(p, denoise_solver=s), G, prior_model=model))
            for s in ("sequential", "picard")}  # fmt: skip
    none = run_to_completion(project(replace(p, prior="none"), G))
    moved = np.abs(runs["sequential"].latent - none.latent).max()
    assert moved > 1e-2  # the prior shaped the result
    assert np.abs(runs["picard"].latent - runs["sequential"].latent).max() < 1e-3 * moved
    # each job starts its warm start afresh: the same parameters give the same latents, bit for bit
    again = run_to_completion(project(replace(p, denoise_solver="picard"), G, prior_model=model))
    assert np.array_equal(again.latent, runs["picard"].latent)


def test_diffusion_prior_needs_a_model(G):
    p = ProjectionParams(task="similarity", target=_target(), prior="diffusion", steps=1, num_samples=1)
    with pytest.raises(JobError):
        next(project(p, G))


def test_wplus_projection_with_w_model_denoises_each_row(G):
    model, stats = _tiny_prior(G)
    p = ProjectionParams(
        task="similarity", target=_target(), prior="diffusion", space="w+", steps=2, num_samples=2
    )
    result = run_to_completion(project(p, G, prior_model=model))
    assert result.latent.shape == (2, G.num_ws, G.w_dim) and result.log_density.shape == (2,)


# --- CLI --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    from PIL import Image

    from core.clip import build_clip, save_clip
    from core.models.io import save_generator

    d = tmp_path_factory.mktemp("cli")
    G = tiny_stylegan()
    save_generator(G, d / "g.safetensors")
    model, _ = _tiny_prior(G)
    save_wdiffusion(model, d / "prior.safetensors")
    save_clip(build_clip(TINY_CLIP, seed=0), d / "clip.safetensors")
    Image.fromarray(_target(32)).save(d / "target.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(d / "hole.png")
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[4:12, :, :3], rgba[4:12, :, 3] = 200, 255
    Image.fromarray(rgba, "RGBA").save(d / "scribble.png")
    return d


@pytest.mark.parametrize(
    "task, prior, extra",
    [
        ("clip", "diffusion", ["--prompt", "a grey cat", "--denoise-solver", "picard"]),
        ("clip", "task-guided", ["--prompt", "a grey cat"]),
        ("inpaint", "cluster", ["--image", "target.png", "--mask", "hole.png", "--hole"]),
        ("similarity", "mean", ["--image", "target.png"]),
        ("scribble", "none", ["--image", "scribble.png", "--scribble"]),
    ],
)
def test_cli_project_runs_each_task(cli_files, tmp_path, task, prior, extra):
    from core.cli import main

    d = cli_files
    extra = [str(d / a) if a.endswith(".png") else a for a in extra]
    out = tmp_path / "out"
    argv = ["project", "--task", task, "--prior", prior, "--samples", "2", "--steps", "3", "--out", str(out)]
    argv += ["--model", str(d / "g.safetensors"), "--prior-model", str(d / "prior.safetensors")]
    argv += ["--clip-weights", str(d / "clip.safetensors"), "--perceptual", "none", *extra]
    assert main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    assert len(run["task_loss"]) == 2 and all(math.isfinite(v) for v in run["task_loss"])
    assert (
        len(run["loss_history"]) == 3 and (out / "result_1.png").is_file() and (out / "latent.npz").is_file()
    )


def test_projection_inpainting_keeps_the_pixels_outside_the_hole(G):
    mask = np.zeros((16, 16), np.float32)
    mask[:, :8] = 1  # keep the left half, fill the right
    target = _target()
    base = ProjectionParams(task="inpaint", target=target, mask=mask, prior="none", steps=3, num_samples=2)
    kept = run_to_completion(project(base, G))
    raw = run_to_completion(project(replace(base, paste_back=False), G))
    assert np.array_equal(kept.images[:, :, :8], np.broadcast_to(target[None, :, :8], (2, 16, 8, 3)))
    assert not np.array_equal(raw.images[:, :, :8], kept.images[:, :, :8])  # G alone does not keep them
    seam_free = np.abs(kept.images[:, :, 13:].astype(int) - raw.images[:, :, 13:].astype(int))
    assert seam_free.max() <= 1  # the hole is G's, away from the feathered seam
