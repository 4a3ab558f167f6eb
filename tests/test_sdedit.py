"""SDEdit on a tiny random diffusers pipeline that these tests write themselves (no downloads)."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.errors import JobError, ModelLoadError
from core.jobs.params import SDEditParams
from core.jobs.runner import run_to_completion
from core.jobs.sdedit import sdedit
from core.sd.model import load_sd_model
from core.sd.pipeline import (
    apply_latent_rgb,
    decode,
    encode,
    feathered_mask,
    fit_latent_rgb,
    guided_noise,
    image_tensor,
    make_scheduler,
)
from core.types import CancelToken

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail the test if anything opens a network connection."""
    attempts = []

    def refuse(self, address, *a, **k):
        attempts.append(address)
        raise OSError(f"network access attempted in a test: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield
    assert not attempts, f"tried to connect to {attempts}"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only add contention
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from core.sd.tiny import write_tiny_pipeline

    return write_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny", seed=0)


@pytest.fixture(scope="module")
def model(tiny_dir):
    return load_sd_model(tiny_dir, device="cpu")


@pytest.fixture(scope="module")
def pixel_model(tmp_path_factory):
    from core.sd.tiny import write_tiny_pipeline

    folder = write_tiny_pipeline(tmp_path_factory.mktemp("sd") / "pixel", seed=1, pixel_space=True)
    return load_sd_model(folder, device="cpu")


def guide(size=16, seed=0):
    return (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)


def run(model, **kw):
    kw.setdefault("guide", guide())
    kw.setdefault("prompt", "an orange cat")
    events = []
    result = run_to_completion(sdedit(SDEditParams(**kw), model), events.append)
    return result, events


class UNetCalls:
    """Counts UNet forward passes (and remembers input channel counts) while active."""

    def __init__(self, unet):
        self.unet, self.calls, self.channels = unet, 0, []

    def __enter__(self):
        def hook(module, args, kwargs):
            self.calls += 1
            self.channels.append(args[0].shape[1])

        self.handle = self.unet.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# --- steps and timesteps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sampler", "steps", "strength", "expected"),
    [("ddim", 50, 0.6, 30), ("ddim", 25, 0.5, 12), ("ddpm", 20, 0.7, 14), ("ddpm", 10, 1.0, 10)],
)
def test_strength_maps_to_executed_steps(model, sampler, steps, strength, expected):
    with UNetCalls(model.unet) as c:
        result, events = run(model, sampler=sampler, steps=steps, strength=strength, guidance_scale=3.0)
    assert result.executed_steps == expected
    assert c.calls == expected  # one batched (cond + uncond) pass per step
    assert [e.step for e in events] == list(range(1, expected + 1))
    assert all(e.total == expected for e in events)


@pytest.mark.parametrize("steps", [10, 20, 50])
def test_ddim_runs_S_times_strength_from_level_N(model, steps):
    # The seed's N = 500 of 1000: the first timestep is within one stride below 500.
    result, _ = run(model, sampler="ddim", steps=steps, start_step=500, guidance_scale=1.0)
    assert result.executed_steps == int(steps * 0.5)
    stride = 1000 // steps
    assert 500 - stride < result.timesteps[0] <= 500
    assert np.all(np.diff(result.timesteps) == -stride)
    assert result.timesteps[-1] == 1  # SD's steps_offset: the last step lands on t = 1


def test_full_schedule_stays_inside_the_noise_table(model):
    from core.sd.pipeline import sdedit_timesteps

    ts = sdedit_timesteps(make_scheduler(model, "ddpm"), 1000, 1.0)  # SD 1.x "leading" + offset 1
    assert int(ts[0]) == 999 and int(ts[-1]) == 1 and len(ts) == 999
    ts = sdedit_timesteps(make_scheduler(model, "ddpm"), 1000, 0.5)  # the seed's DDPM from N = 500
    assert int(ts[0]) == 500 and len(ts) == 500


def test_start_step_is_strength_times_T(model):
    a, _ = run(model, start_step=600, steps=10)
    b, _ = run(model, strength=0.6, steps=10)
    assert a.timesteps == b.timesteps
    np.testing.assert_array_equal(a.image, b.image)


def test_too_few_steps_is_an_error(model):
    with pytest.raises(JobError, match="runs no step"):
        run(model, steps=2, strength=0.3)


def test_bad_params_are_refused():
    with pytest.raises(JobError):
        SDEditParams(guide=guide(), sampler="euler")
    with pytest.raises(JobError):
        SDEditParams(guide=guide(), strength=0.0)
    with pytest.raises(JobError):
        SDEditParams(guide=guide(), mask=np.ones((3, 3), np.float32))
    with pytest.raises(JobError):
        SDEditParams(guide=guide().astype(np.float32))


# --- the guided prediction -------------------------------------------------------------------------------


def test_guidance_scale_one_is_the_conditional_prediction(model):
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    cond, uncond = model.text_encoder.encode(["a cat", "zzz"]).chunk(2)
    with torch.no_grad():
        direct = model.unet(x, t, encoder_hidden_states=cond).sample
        batched = guided_noise(model.unet, x, t, cond, uncond, 1.0)  # through the CFG combination
        single = guided_noise(model.unet, x, t, cond, None, 1.0)
        strong = guided_noise(model.unet, x, t, cond, uncond, 5.0)
    torch.testing.assert_close(batched, direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single, direct)
    assert (strong - direct).abs().max() > 1e-3


def test_negative_prompt_matters_only_with_guidance(model):
    a, _ = run(model, guidance_scale=1.0, negative_prompt="", steps=10)
    b, _ = run(model, guidance_scale=1.0, negative_prompt="a dog", steps=10)
    np.testing.assert_array_equal(a.latent, b.latent)
    c, _ = run(model, guidance_scale=7.0, negative_prompt="", steps=10)
    d, _ = run(model, guidance_scale=7.0, negative_prompt="a dog", steps=10)
    assert np.abs(c.latent - d.latent).max() > 1e-4


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_matches_an_independent_reference_loop(model, sampler):
    """The job equals a plain loop over diffusers' scheduler, UNet and VAE (SDEdit as in the paper)."""
    g, seed, steps, strength, scale = guide(seed=3), 7, 20, 0.55, 4.0
    result, _ = run(
        model, guide=g, seed=seed, steps=steps, strength=strength, guidance_scale=scale, sampler=sampler
    )

    from diffusers import DDIMScheduler, DDPMScheduler

    cls = DDIMScheduler if sampler == "ddim" else DDPMScheduler
    sched = cls.from_config(model.scheduler_config)
    sched.set_timesteps(steps)
    n = int(steps * strength)
    ts = sched.timesteps[steps - n :]
    x_img = torch.from_numpy(g).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        x0 = model.vae.encode(x_img).latent_dist.mode() * model.vae.config.scaling_factor
        gen = torch.Generator().manual_seed(seed)
        x = sched.add_noise(x0, torch.randn(x0.shape, generator=gen), ts[:1])
        ctx = model.text_encoder.encode(["an orange cat", ""])
        for t in ts:
            out = model.unet(torch.cat([x, x]), t, encoder_hidden_states=ctx[[1, 0]]).sample
            eps = out[0:1] + scale * (out[1:2] - out[0:1])
            kw = {"generator": gen} if sampler == "ddpm" else {}
            x = sched.step(eps, t, x, **kw).prev_sample
    assert result.timesteps == [int(t) for t in ts]
    np.testing.assert_allclose(result.latent, x.numpy(), atol=1e-5)


def test_ddpm_depends_on_seed_and_ddim_is_deterministic(model):
    a, _ = run(model, sampler="ddim", seed=1, steps=10)
    b, _ = run(model, sampler="ddim", seed=1, steps=10)
    np.testing.assert_array_equal(a.image, b.image)
    c, _ = run(model, sampler="ddpm", seed=1, steps=10)
    d, _ = run(model, sampler="ddpm", seed=2, steps=10)
    assert np.abs(c.latent - d.latent).max() > 1e-3


# --- previews, cancel, shared model ------------------------------------------------------------------


def test_previews_every_step_and_at_the_cadence(model):
    _, events = run(model, steps=10, strength=1.0)
    assert all(e.preview is not None and e.preview.shape == (1, 16, 16, 3) for e in events)
    assert all(e.preview.dtype == np.uint8 and e.latent.shape == (1, 4, 8, 8) for e in events)
    _, sparse = run(model, steps=10, strength=1.0, preview_every=3)
    assert [e.step for e in sparse if e.preview is not None] == [3, 6, 9, 10]
    _, gated = run(model, steps=10, strength=1.0, preview_interval_s=3600.0)  # the app's repaint gate
    assert [e.step for e in gated if e.preview is not None] == [1, 10]  # the first at once, the last always
    _, full = run(model, steps=10, strength=1.0, preview="full")
    final = decode(model, torch.from_numpy(full[-1].latent))  # the last x is x0
    assert full[-1].preview.shape == (1, 16, 16, 3) and final.shape == (1, 3, 16, 16)


def test_fast_preview_uses_a_tiny_decoder_when_given(tiny_dir, tmp_path):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    kw = {
        "encoder_block_out_channels": (8, 8),
        "decoder_block_out_channels": (8, 8),
        "num_encoder_blocks": (1, 1),
    }
    AutoencoderTiny(latent_channels=4, num_decoder_blocks=(1, 1), **kw).save_pretrained(tmp_path / "taesd")
    m = load_sd_model(tiny_dir, device="cpu", tiny_vae=tmp_path / "taesd")
    assert m.tiny_vae is not None
    calls = []
    handle = m.tiny_vae.decoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        _, events = run(m, steps=10, preview_every=2)
    finally:
        handle.remove()
    assert len(calls) == 3 and events[1].preview.shape == (1, 16, 16, 3)


def test_fast_preview_fit_recovers_a_linear_decoder():
    gen = torch.Generator().manual_seed(0)
    lat = torch.randn(1, 4, 8, 8, generator=gen)
    w = torch.randn(5, 3, generator=gen) * 0.1  # small enough that nothing clips at +-1
    img = apply_latent_rgb(lat, w)  # an image that is exactly linear in the latent
    img_px = F.interpolate(img, scale_factor=4, mode="nearest")  # area-pooling back gives img
    torch.testing.assert_close(apply_latent_rgb(lat, fit_latent_rgb(lat, img_px)), img, atol=2e-3, rtol=0)


def test_num_samples_makes_distinct_images_from_one_guide(model):
    result, events = run(model, num_samples=3, steps=10, guidance_scale=3.0)
    assert result.images.shape == (3, 16, 16, 3) and result.latent.shape == (3, 4, 8, 8)
    assert events[0].preview.shape == (3, 16, 16, 3)
    assert np.abs(result.latent[0] - result.latent[1]).max() > 1e-3  # each from its own noise


def test_cancel_stops_within_one_step(model):
    token = CancelToken()
    job = sdedit(SDEditParams(guide=guide(), prompt="a cat", steps=20, strength=1.0), model, cancel=token)
    with UNetCalls(model.unet) as c:
        first = next(job)
        token.cancel()
        with pytest.raises(StopIteration) as stop:
            next(job)
    result = stop.value.value
    assert first.step == 1 and c.calls == 1
    assert result.cancelled and result.executed_steps == 1
    assert result.image.shape == (16, 16, 3)


def test_interleaved_runs_do_not_share_state(model):
    """Two jobs stepping in turn on one model equal the same jobs run alone: per-run state is local."""
    p1 = SDEditParams(guide=guide(seed=1), prompt="a cat", sampler="ddpm", steps=10, seed=1)
    p2 = SDEditParams(guide=guide(seed=2), prompt="a dog", sampler="ddim", steps=20, seed=2, strength=0.8)
    alone = [run_to_completion(sdedit(p, model)) for p in (p1, p2)]
    jobs, results = [sdedit(p1, model), sdedit(p2, model)], [None, None]
    while any(r is None for r in results):
        for i, job in enumerate(jobs):
            if results[i] is None:
                try:
                    next(job)
                except StopIteration as stop:
                    results[i] = stop.value
    for a, b in zip(alone, results, strict=True):
        np.testing.assert_array_equal(a.latent, b.latent)


# --- inpainting -------------------------------------------------------------------------------------------


def half_mask(size=64):
    m = np.zeros((size, size), np.float32)
    m[:, : size // 2] = 1  # regenerate the left half
    return m


def test_inpainting_keeps_the_unmasked_latent_exactly(model):
    g, m = guide(64, seed=4), half_mask()
    kw = {"guide": g, "mask": m, "strength": 0.9, "steps": 10, "mask_feather": 2.0, "size": (64, 64)}
    result, _ = run(model, paste_back=False, **kw)
    lat_mask = F.adaptive_avg_pool2d(feathered_mask(m, (64, 64), 2.0), (32, 32))
    with torch.no_grad():
        ref_lat = encode(model, image_tensor(g, (64, 64)))
    keep = (lat_mask == 0).expand_as(ref_lat)
    change = (lat_mask > 0.99).expand_as(ref_lat)
    final = torch.from_numpy(result.latent)
    # Outside the mask the final latent is exactly the guide's; inside it has moved away.
    torch.testing.assert_close(final[keep], ref_lat[keep])
    assert (final[change] - ref_lat[change]).abs().mean() > 0.1
    # Decoded pixels are not compared to decode(encode(guide)) here: this random VAE's GroupNorm
    # statistics span the whole image, so any change anywhere shifts every pixel. The pixel-space test
    # below and paste-back check pixels exactly; a trained VAE's tolerance is measured in docs/sdedit.md.
    # With paste-back (the default), pixels outside the feathered mask are the guide's, exactly.
    pasted, _ = run(model, **kw)
    np.testing.assert_array_equal(pasted.image[:, 48:], g[:, 48:])
    assert np.abs(pasted.image[:, :16].astype(int) - g[:, :16]).mean() > 5


def test_steps_round_as_diffusers_img2img_does():
    from core.sd.pipeline import executed_steps

    for steps, strength in ((100, 0.29), (50, 0.6), (25, 0.5), (30, 0.7), (1000, 0.55)):
        assert executed_steps(steps, strength) == min(int(steps * strength), steps)  # diffusers' formula
    assert executed_steps(100, 0.29) == 28


def test_guidance_at_or_below_one_is_the_conditional_prediction(model):
    with UNetCalls(model.unet) as c:
        low, _ = run(model, steps=10, strength=0.5, guidance_scale=0.5)
    assert c.calls == 5  # one (conditional) pass per step, no unconditional branch
    one, _ = run(model, steps=10, strength=0.5, guidance_scale=1.0)
    np.testing.assert_array_equal(low.latent, one.latent)


def test_the_default_feather_leaves_every_pixel_outside_the_mask_unchanged(pixel_model):
    g, m = guide(32, seed=7), half_mask(32)
    result, _ = run(pixel_model, guide=g, mask=m, steps=10, strength=1.0, size=(32, 32))  # feather 4 px
    outside = m < 0.5
    np.testing.assert_array_equal(result.image[outside], g[outside])
    assert np.abs(result.image[~outside].astype(int) - g[~outside]).mean() > 5


def test_inpainting_in_pixel_space_is_exact_outside_the_mask(pixel_model):
    g, m = guide(32, seed=5), half_mask(32)
    kw = {"steps": 10, "strength": 1.0, "paste_back": False, "mask_feather": 0, "size": (32, 32)}
    result, events = run(pixel_model, guide=g, mask=m, **kw)
    assert result.latent.shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(result.image[:, 16:], g[:, 16:])
    assert np.abs(result.image[:, :16].astype(int) - g[:, :16]).mean() > 5
    assert events[0].preview.shape == (1, 32, 32, 3)


def test_inpainting_unet_gets_mask_and_masked_image(tmp_path):
    from core.sd.tiny import write_tiny_pipeline

    m9 = load_sd_model(write_tiny_pipeline(tmp_path / "inp", seed=2, inpainting=True), device="cpu")
    assert m9.inpainting_unet
    g, m = guide(32, seed=6), half_mask(32)
    with UNetCalls(m9.unet) as c:
        result, _ = run(m9, guide=g, mask=m, steps=10, strength=1.0, mask_feather=0, size=(32, 32))
    assert set(c.channels) == {9}
    np.testing.assert_array_equal(result.image[:, 16:], g[:, 16:])  # pasted back
    with pytest.raises(JobError, match="empty"):
        run(m9, guide=g, mask=np.zeros((32, 32), np.float32))
    with UNetCalls(m9.unet) as c:  # no mask: the whole image is the hole, not a channel mismatch
        whole, _ = run(m9, guide=g, steps=10, strength=1.0, size=(32, 32))
    assert set(c.channels) == {9} and whole.image.shape == (32, 32, 3)


# --- loading ------------------------------------------------------------------------------------------


def test_folder_and_single_files_give_the_same_model(model, tiny_dir, tmp_path):
    from safetensors.torch import save_file

    from core.sd.tiny import tiny_components, to_original_layout

    state = to_original_layout(*tiny_components(0)[:3])  # the same seed as tiny_dir
    save_file(state, str(tmp_path / "tiny-sd1.safetensors"))
    torch.save(state, tmp_path / "tiny-sd1.ckpt")
    ref, _ = run(model, steps=10, guidance_scale=3.0)
    for name in ("tiny-sd1.safetensors", "tiny-sd1.ckpt"):
        single = load_sd_model(tmp_path / name, device="cpu", config=tiny_dir)
        got, _ = run(single, steps=10, guidance_scale=3.0)
        np.testing.assert_allclose(got.latent, ref.latent, atol=1e-5)


def test_single_file_without_configs_offline_is_a_clear_error(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from core.sd.tiny import tiny_components, to_original_layout

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    save_file(to_original_layout(*tiny_components(0)[:3]), str(tmp_path / "m.safetensors"))
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache"):
        load_sd_model(tmp_path / "m.safetensors", device="cpu", config="someone/some-sd-configs")


def test_hub_id_offline_never_touches_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelLoadError, match="offline mode"):
        load_sd_model("stable-diffusion-v1-5/stable-diffusion-v1-5", device="cpu", allow_download=True)
    with pytest.raises(ModelLoadError, match="not found"):
        load_sd_model(tmp_path / "nothing-here", device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_float16_on_cuda_matches_float32_on_cpu(tiny_dir, model):
    gpu = load_sd_model(tiny_dir, device="cuda")
    assert gpu.dtype == torch.float16 and next(gpu.unet.parameters()).dtype == torch.float16
    a, _ = run(model, sampler="ddim", steps=10, guidance_scale=3.0)
    b, _ = run(gpu, sampler="ddim", steps=10, guidance_scale=3.0)
    assert np.isfinite(b.latent).all()
    np.testing.assert_allclose(b.latent, a.latent, atol=0.05)


def test_model_is_float32_on_cpu_and_unchanged_by_runs(model):
    before = json.dumps(model.scheduler_config, sort_keys=True, default=str)
    run(model, steps=10)
    assert model.dtype == torch.float32 and next(model.unet.parameters()).dtype == torch.float32
    assert json.dumps(model.scheduler_config, sort_keys=True, default=str) == before
    assert not model.unet.training
    assert type(make_scheduler(model, "ddpm")).__name__ == "DDPMScheduler"


# --- the command line ---------------------------------------------------------------------------------


def test_cli_sdedit(tiny_dir, tmp_path):
    from core.cli import main
    from core.imageio import load_image, save_png

    save_png(guide(16), tmp_path / "g.png")
    m = np.zeros((16, 16, 3), np.uint8)
    m[:, :8] = 255
    save_png(m, tmp_path / "m.png")
    argv = ["sdedit", "--image", str(tmp_path / "g.png"), "--prompt", "a grey cat", "--strength", "0.6"]
    argv += ["--sampler", "ddim", "--steps", "25", "--model", str(tiny_dir), "--out", str(tmp_path / "out")]
    assert main(argv + ["--mask", str(tmp_path / "m.png"), "--save-previews"]) == 0
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["executed_steps"] == 15 and len(record["timesteps"]) == 15
    assert load_image(tmp_path / "out" / "result.png").shape == (16, 16, 3)
    assert len(list((tmp_path / "out" / "previews").glob("*.png"))) == 15
    assert main(argv[:-1] + [str(tmp_path / "o2"), "--model", str(tmp_path / "missing")]) == 1


# --- the bundled model's training script ----------------------------------------------------------------


def test_text_tower_port_matches_open_clip():
    """The CLIPTextModel made from an open_clip text tower gives the same per-token hidden states (what
    the UNet cross-attends to), from the same token ids, as open_clip itself."""
    from core.clip import build_clip
    from core.sd.textclip import hf_text_model, hf_tokenizer, open_clip_hidden_states
    from core.training.clip import TrainConfig as ClipConfig

    clip = build_clip(ClipConfig(context_length=16, text_layers=2).open_clip_config(), seed=3)
    prompts = ["an orange tabby cat with green eyes", "", "a portrait of a white kitten, pink background"]
    ref_ids = clip.tokenize(prompts)  # open_clip's SimpleTokenizer
    tok = hf_tokenizer(16)
    ids = torch.tensor(tok(prompts, padding="max_length", max_length=16, truncation=True).input_ids)
    assert torch.equal(ids, ref_ids.cpu())
    with torch.no_grad():
        ours = hf_text_model(clip.model)(ids)[0]
    torch.testing.assert_close(ours, open_clip_hidden_states(clip.model, ref_ids), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_tinysd_trains_resumes_exports_and_loads(tmp_path):
    """Two iterations of the real training code on a random CLIP text tower, a checkpoint round trip,
    the export, and the exported folder through the same SDEdit code path."""
    from core.clip import build_clip
    from core.sd.textclip import hf_text_model, hf_tokenizer
    from core.training import tinysd
    from core.training.clip import TrainConfig as ClipConfig
    from core.training.common import ImageBank, load_checkpoint, save_checkpoint

    clip = build_clip(ClipConfig(context_length=16, text_layers=1).open_clip_config(), seed=0)
    text = (hf_text_model(clip.model), hf_tokenizer(16))
    cfg = tinysd.TrainConfig(resolution=16, channels="8,16", attention="0,1", batch=4, n_train=8)
    bank = ImageBank((np.random.default_rng(0).random((8, 16, 16, 3)) * 255).astype(np.uint8))
    trainer = tinysd.TinySDTrainer(cfg, CPU, bank, text=text)
    losses = [trainer.step() for _ in range(2)]
    assert all(np.isfinite(v["loss"]) for v in losses) and trainer.nimg == 8
    assert trainer.samples(steps=2).shape == (tinysd.NUM_SAMPLES, 3, 16, 16)
    progress = {"config": {**cfg.__dict__}, "sessions": [], "nimg": trainer.nimg, "elapsed_s": 1.0}
    save_checkpoint(tmp_path / "run", trainer.state_dict(), progress)
    resumed = tinysd.TinySDTrainer(cfg, CPU, bank, text=(hf_text_model(clip.model), hf_tokenizer(16)))
    resumed.load_state_dict(load_checkpoint(tmp_path / "run")[0])
    assert resumed.iteration == 2
    assert all(
        torch.equal(a, b) for a, b in zip(resumed.ema.parameters(), trainer.ema.parameters(), strict=True)
    )
    assert resumed.step()["loss"] == trainer.step()["loss"]  # same RNG state, same batch, same weights

    folder = tinysd.export(tmp_path / "run", tmp_path / "tinysd-test")
    card = json.loads((folder / "model_card.json").read_text())
    assert card["files"]["unet/diffusion_pytorch_model.safetensors"]["sha256"]
    m = load_sd_model(folder, device="cpu")
    assert m.vae is None and m.native_size == 16 and m.scheduler_config["timestep_spacing"] == "trailing"
    result, events = run(m, prompt="a black cat", start_step=500, steps=10)
    assert result.timesteps[0] == 499 and result.executed_steps == 5  # the seed's N = 500 exactly
    assert events[-1].preview.shape == (1, 16, 16, 3)


# --- quality on the bundled model ------------------------------------------------------------------------


@pytest.mark.slow
def test_bundled_model_trades_the_guide_for_the_prompt_as_N_grows():
    """The seed's trend as numbers: a larger N is less like the guide and more like the prompt."""
    from core.evals.sd import Scorer, make_cases, run_config
    from core.models.manager import BUNDLED_SD
    from core.paths import bundled_model

    assert (bundled_model(BUNDLED_SD) / "model_index.json").is_file(), (
        "the bundled diffusion model is missing"
    )
    m = load_sd_model(device="cpu")
    cases, scorer = make_cases(2, m.native_size), Scorer(CPU)
    low, high = (
        run_config(
            m, cases, scorer, samples=2, seed=0, start_step=n, guidance_scale=5.0, sampler="ddim", steps=20
        )
        for n in (300, 800)
    )
    assert high["l1"] > low["l1"] + 0.03
    assert high["clip_prompt"] > low["clip_prompt"] + 5


@pytest.mark.parametrize(
    ("cuda", "mps", "want"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, want):
    from core.sd.model import choose_device, default_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    dev = choose_device("auto")
    assert dev.type == want
    assert default_dtype(dev) == (torch.float16 if want == "cuda" else torch.float32)
    assert choose_device("cuda:1") == torch.device("cuda", 1)  # an explicit choice is kept as given


@pytest.mark.parametrize("part", ["text_encoder", "unet", "vae"])
def test_a_truncated_weights_file_is_a_clear_error(tmp_path, part):
    from core.sd.tiny import write_tiny_pipeline

    folder = write_tiny_pipeline(tmp_path / "p", seed=0)
    weights = next((folder / part).glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="not a loadable diffusers model"):
        load_sd_model(folder, device="cpu")


def test_the_default_output_follows_the_guides_aspect_ratio(model):
    wide = np.zeros((32, 64, 3), np.uint8)  # 2:1
    result, _ = run(model, guide=wide, steps=4, strength=0.5)
    w, h = result.size
    k = model.size_multiple
    assert w % k == 0 and h % k == 0 and w > h and abs(w / h - 2) < 0.5
    assert abs(w * h - model.native_size**2) <= 0.5 * model.native_size**2  # about the model's own area
    square, _ = run(model, steps=4, strength=0.5)
    assert square.size == (model.native_size, model.native_size)


@pytest.mark.parametrize(("steps", "start_step"), [(25, 500), (10, 600), (7, 700), (30, 333)])
def test_the_seeds_s_runs_s_steps_from_n(model, steps, start_step):
    T = model.num_train_timesteps
    p = SDEditParams(guide=guide(), prompt="a cat", steps=steps, start_step=start_step, steps_from_n=True)
    total = p.schedule_steps(T)
    assert int(total * start_step / T) == steps  # exactly S run, from N
    result, _ = run(model, steps=steps, start_step=start_step, steps_from_n=True)
    assert result.executed_steps == steps
    same, _ = run(model, steps=total, start_step=start_step)  # diffusers' meaning, the same schedule
    np.testing.assert_array_equal(result.latent, same.latent)


@pytest.mark.parametrize(
    ("sampler", "strength", "steps", "guidance"),
    [("ddim", 0.6, 20, 5.0), ("ddpm", 0.6, 20, 5.0), ("ddim", 0.29, 100, 1.0), ("ddim", 0.5, 10, 0.5)],
)
def test_equals_diffusers_img2img_pipeline(tiny_dir, monkeypatch, sampler, strength, steps, guidance):
    """Bit-identical latents to diffusers' StableDiffusionImg2ImgPipeline on the same tiny pipeline and
    seed. diffusers draws the guide's latent from the VAE posterior; ours takes its mode, so the
    reference is run with the mode too (everything else is the pipeline as shipped)."""
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionImg2ImgPipeline
    from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_img2img as img2img
    from PIL import Image

    monkeypatch.setattr(
        img2img, "retrieve_latents", lambda enc, generator=None, sample_mode="sample": enc.latent_dist.mode()
    )
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        tiny_dir, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}[sampler]
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    g = guide(32, seed=9)
    ref = pipe(
        prompt="a cat",
        image=Image.fromarray(g),
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(3),
        output_type="latent",
    ).images
    model = load_sd_model(tiny_dir, device="cpu")
    ours, _ = run(model, guide=g, prompt="a cat", strength=strength, steps=steps, guidance_scale=guidance,
                  seed=3, sampler=sampler, size=(32, 32))  # fmt: skip
    np.testing.assert_array_equal(ours.latent, ref.numpy())


def test_a_missing_tokenizer_folder_is_a_clear_error(tmp_path):
    import shutil

    from core.sd.tiny import write_tiny_pipeline

    folder = write_tiny_pipeline(tmp_path / "p", seed=0)
    shutil.rmtree(folder / "tokenizer")
    with pytest.raises(ModelLoadError, match="tokenizer/ folder is missing"):
        load_sd_model(folder, device="cpu")
