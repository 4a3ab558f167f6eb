import numpy as np
import pytest
import torch

from core.errors import JobError
from core.gan.base import LatentSpace
from core.imaging import to_uint8
from core.jobs.invert import _Objective, initial_latent, inpaint_params, invert, scribble_params
from core.jobs.params import InvertParams
from core.jobs.runner import run_to_completion
from core.types import CancelToken


def target_from(G, seed=123) -> np.ndarray:
    with torch.no_grad():
        return to_uint8(G(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed))))[0]


def run(G, **kw):
    kw.setdefault("perceptual_weight", 0.0)
    return run_to_completion(invert(InvertParams(**kw), G))


@pytest.mark.slow
@pytest.mark.parametrize("space", list(LatentSpace))
@pytest.mark.parametrize("init", ["mean", "random"])
def test_each_space_reduces_loss(G, space, init):
    res = run(G, target=target_from(G), space=space, init=init, steps=40, lr=0.05)
    first, last = res.loss_history[0]["l1"], res.loss_history[-1]["l1"]
    assert last < 0.7 * first, (space, init, first, last)
    n = 1
    shape = {
        LatentSpace.Z: (n, G.z_dim),
        LatentSpace.W: (n, G.w_dim),
        LatentSpace.W_PLUS: (n, G.num_ws, G.w_dim),
        LatentSpace.S: (n, G.s_dim),
    }
    assert res.latent.shape == shape[space]
    if space is LatentSpace.S:  # below the affine layers: no ws
        assert res.ws is None
    else:
        assert res.ws.shape == (n, G.num_ws, G.w_dim)
    assert res.images.shape == (n, G.resolution, G.resolution, 3) and res.images.dtype == np.uint8


@pytest.mark.slow
def test_lbfgs_reduces_loss(G):
    res = run(G, target=target_from(G), space="w+", optimizer="lbfgs", steps=15)
    assert res.loss_history[-1]["l1"] < 0.5 * res.loss_history[0]["l1"]


@pytest.mark.slow
def test_w_plus_fits_better_than_z(G):
    tgt = target_from(G, seed=7)
    z = run(G, target=tgt, space="z", steps=60, lr=0.05).loss_history[-1]["l1"]
    wp = run(G, target=tgt, space="w+", steps=60, lr=0.05).loss_history[-1]["l1"]
    assert wp < z


@pytest.mark.slow
def test_masked_loss_ignores_pixels_outside_mask(G):
    tgt = target_from(G)
    mask = np.zeros(tgt.shape[:2], np.float32)
    mask[:, : tgt.shape[1] // 2] = 1.0
    other = tgt.copy()
    other[:, tgt.shape[1] // 2 :] = 255 - other[:, tgt.shape[1] // 2 :]  # change only the unmasked half
    a = run(G, target=tgt, mask=mask, space="w", steps=5)
    b = run(G, target=other, mask=mask, space="w", steps=5)
    assert a.loss_history == b.loss_history
    np.testing.assert_array_equal(a.latent, b.latent)
    c = run(G, target=other, space="w", steps=5)  # without the mask the change does matter
    assert c.loss_history != a.loss_history


def test_cancel_stops_within_one_step(G):
    token = CancelToken()
    job = invert(InvertParams(target=target_from(G), steps=100, perceptual_weight=0.0), G, cancel=token)
    seen = []
    with pytest.raises(StopIteration) as stop:
        while True:
            ev = next(job)
            seen.append(ev.step)
            if ev.step == 3:
                token.cancel()
    assert seen == [1, 2, 3]
    result = stop.value.value
    assert result.cancelled and len(result.loss_history) == 3


def test_previews_every_k_steps(G):
    events = list(
        invert(InvertParams(target=target_from(G), steps=7, preview_every=3, perceptual_weight=0), G)
    )
    with_preview = [e.step for e in events if e.preview is not None]
    assert with_preview == [3, 6, 7]
    assert events[2].preview.shape == (1, G.resolution, G.resolution, 3)
    assert events[2].latent.shape == (1, G.num_ws, G.w_dim)


@pytest.mark.slow
def test_batch_of_samples_are_independent(G):
    tgt = target_from(G)
    one = run(G, target=tgt, space="w+", init="random", seed=5, steps=5)
    two = run(G, target=tgt, space="w+", init="random", seed=5, steps=5, num_samples=2)
    assert two.latent.shape[0] == 2
    # Sample 0 of the batch starts where the single run starts and follows the same gradient.
    np.testing.assert_allclose(two.latent[0], one.latent[0], atol=1e-5)


@pytest.mark.slow
def test_warm_start_from_latent(G):
    tgt = target_from(G)
    first = run(G, target=tgt, space="w", steps=10)
    warm = run(G, target=tgt, space="w", steps=1, init="latent", init_latent=first.latent)
    assert warm.loss_history[0]["l1"] <= first.loss_history[-1]["l1"] + 1e-3


@pytest.mark.slow
def test_l2_delta_keeps_latent_near_start(G):
    tgt = target_from(G)
    free = run(G, target=tgt, space="w", steps=20)
    tied = run(G, target=tgt, space="w", steps=20, l2_delta_weight=1e4)
    w0 = G.mean_w().numpy()
    assert np.abs(tied.latent - w0).mean() < 0.2 * np.abs(free.latent - w0).mean()


@pytest.mark.slow
def test_dcgan_rejects_w_space(dcgan):
    with pytest.raises(JobError, match="no w"):
        run(dcgan, target=target_from(dcgan), space="w", steps=2)
    res = run(dcgan, target=target_from(dcgan), space="z", steps=20, lr=0.05)
    assert res.loss_history[-1]["l1"] < res.loss_history[0]["l1"]


def test_bad_params_raise_job_error(G):
    with pytest.raises(JobError):
        InvertParams(target=np.zeros((4, 4, 3), np.uint8), optimizer="sgd")
    with pytest.raises(JobError, match="empty"):
        run(G, target=np.zeros((16, 16, 3), np.uint8), mask=np.zeros((16, 16), np.float32), steps=1)
    with pytest.raises(JobError, match="uint8"):
        run(G, target=np.zeros((16, 16), np.float32), steps=1)
    with pytest.raises(JobError, match="perceptual"):
        run(G, target=np.zeros((16, 16, 3), np.uint8), steps=1, perceptual_weight=0.1)


def test_scribble_and_inpaint_masks():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:4, 2:4] = (255, 0, 0, 255)
    p = scribble_params(rgba, steps=1)
    assert p.mask.sum() == 4 and p.target.shape == (8, 8, 3)
    hole = np.zeros((8, 8), np.float32)
    hole[:4] = 1
    q = inpaint_params(np.zeros((8, 8, 3), np.uint8), hole, steps=1)
    assert q.mask[:4].sum() == 0 and q.mask[4:].min() == 1


def test_target_is_resized_to_model_resolution(G):
    big = np.kron(target_from(G), np.ones((4, 4, 1), np.uint8))  # 64x64 upscaled copy of a 16x16 target
    res = run(G, target=big, space="w+", steps=3)
    assert res.images.shape[1:3] == (G.resolution, G.resolution)


class CountingPerceptual(torch.nn.Module):
    """A perceptual loss (the job's protocol) that counts how often the target is encoded."""

    def __init__(self):
        super().__init__()
        self.prepared = self.called = 0

    def prepare(self, target):
        self.prepared += 1
        return [target.mean((2, 3))]  # [N, 3] "features"

    def forward(self, pred, feats, mask=None):
        self.called += 1
        return (pred.mean((2, 3)) - feats[0]).square().sum(1)  # [N]


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_target_features_are_computed_once_per_job(G, optimizer):
    perc = CountingPerceptual()
    res = run_to_completion(
        invert(InvertParams(target=target_from(G), steps=6, optimizer=optimizer, perceptual_weight=1.0), G,
               perceptual_loss=perc)
    )  # fmt: skip
    assert perc.prepared == 1 and perc.called >= 6  # L-BFGS evaluates more points per step
    assert res.loss_history[-1]["perceptual"] < res.loss_history[0]["perceptual"]


def test_a_batch_of_targets_gives_each_latent_its_own(G):
    a, b = target_from(G, 1), target_from(G, 2)
    both = run(G, target=np.stack([a, b]), num_samples=2, space="w", steps=20)
    alone = run(G, target=b, space="w", steps=20)
    np.testing.assert_allclose(both.latent[1], alone.latent[0], atol=1e-4)
    with pytest.raises(JobError, match="num_samples=2"):
        InvertParams(target=np.stack([a, b]), num_samples=3)


@pytest.mark.slow
def test_multi_start_keeps_the_best_distinct_candidates(G):
    tgt = target_from(G, seed=3)
    res = run(G, target=tgt, space="w", init="random", steps=12, starts=8, start_steps=4, num_samples=3)
    assert res.latent.shape == (3, G.w_dim) and res.images.shape[0] == 3
    assert len({r.tobytes() for r in res.latent}) == 3  # three different latents
    assert "w_prior" in res.loss_history[0]
    # Selection only picks rows: a run that stops at the selection step keeps 3 of the 8 latents an
    # unselected run of the same 8 starts reaches, and they fit the target better than the rest.
    sel = run(G, target=tgt, space="w", init="random", steps=4, starts=8, start_steps=4, num_samples=3)
    every = run(G, target=tgt, space="w", init="random", steps=4, starts=8, start_steps=4, num_samples=8)
    rows = [int(np.abs(every.latent - r).sum(1).argmin()) for r in sel.latent]
    np.testing.assert_allclose(every.latent[rows], sel.latent, atol=1e-6)
    err = np.abs(every.images.astype(float) - tgt.astype(float)).mean((1, 2, 3))
    assert err[rows].mean() < np.delete(err, rows).mean()


@pytest.mark.slow
def test_multi_start_previews_every_start_then_the_kept_ones(G):
    p = InvertParams(
        target=target_from(G), space="w+", init="mean", steps=6, starts=5, start_steps=3, num_samples=2,
        perceptual_weight=0.0, preview_every=1,
    )  # fmt: skip
    sizes = [ev.preview.shape[0] for ev in _events(invert(p, G))]
    assert sizes == [5, 5, 2, 2, 2, 2]


def _events(job):
    out = []
    run_to_completion(job, out.append)
    return out


def test_search_keeps_the_starts_that_fit_best_before_any_step(G):
    """start_steps 0 (iGAN's search): the kept candidates are, of the same seeded starts, the ones
    with the lowest task loss as they are (70 starts: scored in more than one chunk)."""
    tgt = target_from(G, seed=3)
    kw = dict(target=tgt, space="w", init="random", steps=0, perceptual_weight=0.0, realism_weight=0.0)
    picked = run(G, starts=70, start_steps=0, num_samples=3, **kw)
    every = InvertParams(num_samples=70, **kw)  # the same 70 seeded random starts, unselected
    obj = _Objective(every, G, None)
    with torch.no_grad():  # the loss of each start as it is (G's raw output: the tiny G overshoots [-1, 1])
        best = obj(obj.latent0)[2].argsort()[:3]
    np.testing.assert_allclose(picked.latent, obj.latent0[best].numpy(), atol=1e-6)
    assert picked.images.shape[0] == 3 and not picked.loss_history  # no step was taken


def test_multi_start_with_mean_init_keeps_the_mean_start_among_the_candidates(G):
    from core.jobs.invert import initial_latent

    p = InvertParams(target=target_from(G), space="w", init="mean", starts=4, num_samples=1)
    lat = initial_latent(G, p, "cpu")
    assert lat.shape == (4, G.w_dim)
    torch.testing.assert_close(lat[0], G.mean_w())
    assert not torch.allclose(lat[1], lat[2])


@pytest.mark.parametrize(
    "bad",
    [
        dict(starts=2, num_samples=3),
        dict(starts=4, init="latent", init_latent=np.zeros(8, np.float32)),
        dict(starts=4, start_steps=-1),
        dict(starts=4, start_steps=2, steps=0),
        dict(spread_weight=-1.0),
    ],
)
def test_multi_start_and_manifold_params_are_checked(bad):
    with pytest.raises(JobError):
        InvertParams(target=np.zeros((8, 8, 3), np.uint8), **bad)


@pytest.mark.parametrize(
    "term", ["l1_weight", "perceptual_weight", "l2_delta_weight", "spread_weight", "w_prior_weight"]
)
@pytest.mark.slow
def test_every_loss_weight_changes_the_result(G, term):
    """Each term of the inversion loss moves the latent when its weight moves (none is inert)."""

    class Perc(torch.nn.Module):  # a stand-in perceptual distance: blurred-image L2
        def prepare(self, t):
            return (torch.nn.functional.avg_pool2d(t, 2),)

        def forward(self, pred, feats, mask=None):
            return (torch.nn.functional.avg_pool2d(pred, 2) - feats[0]).square().mean((1, 2, 3))

    base = dict(
        l1_weight=1.0, perceptual_weight=0.5, l2_delta_weight=0.1, spread_weight=0.1, w_prior_weight=0.1
    )
    tgt = target_from(G, seed=11)

    def latent(**kw):
        p = InvertParams(target=tgt, space="w+", init="random", steps=8, lr=0.05, **{**base, **kw})
        return run_to_completion(invert(p, G, perceptual_loss=Perc())).latent

    assert not np.allclose(latent(), latent(**{term: base[term] * 20}), atol=1e-5)


def test_inpainting_keeps_every_pixel_outside_the_hole(G):
    tgt = target_from(G, seed=5)
    r = G.resolution
    hole = np.zeros((r, r), np.float32)
    hole[r // 4 : r // 2, r // 4 : r // 2] = 1.0
    res = run_to_completion(invert(inpaint_params(tgt, hole, space="w+", steps=3, perceptual_weight=0.0), G))
    kept = hole == 0
    np.testing.assert_array_equal(res.images[0][kept], tgt[kept])
    assert not np.array_equal(res.images[0][hole == 1], tgt[hole == 1])  # the hole is G's
    raw = run_to_completion(
        invert(inpaint_params(tgt, hole, space="w+", steps=3, perceptual_weight=0.0, paste_back=False), G)
    )
    assert not np.array_equal(raw.images[0][kept], tgt[kept])
    with pytest.raises(JobError, match="paste_back needs a mask"):
        InvertParams(target=tgt, paste_back=True)


def test_multi_start_keeps_num_samples_even_when_the_job_is_shorter_than_the_start_phase(G):
    res = run(
        G, target=target_from(G), space="w+", init="random", steps=3, starts=6, start_steps=20, num_samples=2
    )
    assert res.latent.shape[0] == 2 and res.images.shape[0] == 2


def test_truncation_pulls_random_starts_towards_the_mean_w(G):
    from core.gan.latents import start_w

    free = start_w(G, False, 8, 3, "cpu")
    half = start_w(G, False, 8, 3, "cpu", truncation=0.5)
    mean = G.mean_w()
    torch.testing.assert_close(half, mean + 0.5 * (free - mean))
    assert torch.equal(start_w(G, False, 8, 3, "cpu", truncation=0.0), mean.expand(8, -1))
    p = InvertParams(target=np.zeros((16, 16, 3), np.uint8), init="random", space="w", truncation=0.5,
                     num_samples=8, seed=3)  # fmt: skip
    torch.testing.assert_close(initial_latent(G, p, "cpu"), half)
    with pytest.raises(JobError, match="truncation"):
        InvertParams(target=np.zeros((16, 16, 3), np.uint8), truncation=1.5)


def test_the_class_label_reaches_a_conditional_generators_mapping():
    from core.gan.stylegan2 import StyleGAN2Generator

    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=8, channel_base=32, channel_max=8,
                           mapping_layers=1, c_dim=3).eval()  # fmt: skip
    target = np.zeros((8, 8, 3), np.uint8)
    starts = {}
    for label in (0, 2):
        p = InvertParams(target=target, space="w", init="random", class_label=label, steps=1, seed=5,
                         perceptual_weight=0.0)  # fmt: skip
        starts[label] = run_to_completion(invert(p, G)).latent
        G.set_class(label)
        torch.testing.assert_close(
            initial_latent(G, p, "cpu"),
            G.mapping(torch.randn(1, 8, generator=torch.Generator().manual_seed(5))),
        )
    with pytest.raises(JobError, match="0..2"):
        run_to_completion(
            invert(InvertParams(target=target, class_label=3, steps=1, perceptual_weight=0.0), G)
        )
    assert not np.allclose(starts[0], starts[2])  # the class changes where the job starts


def test_a_class_label_on_an_unconditional_generator_is_refused(G):
    with pytest.raises(JobError, match="unconditional"):
        run_to_completion(
            invert(InvertParams(target=np.zeros((16, 16, 3), np.uint8), class_label=1, steps=1), G)
        )


class SizeRecordingPerceptual(CountingPerceptual):
    """Records the image and mask sizes the perceptual loss is given."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def prepare(self, target):
        self.sizes.append(("target", tuple(target.shape[-2:])))
        return super().prepare(target)

    def forward(self, pred, feats, mask=None):
        self.sizes.append(("pred", tuple(pred.shape[-2:]), None if mask is None else tuple(mask.shape[-2:])))
        return super().forward(pred, feats, mask)


@pytest.mark.parametrize(("size", "seen"), [(8, (8, 8)), (0, (16, 16)), (256, (16, 16))])
def test_the_perceptual_loss_sees_images_downsampled_to_perceptual_size(G, size, seen):
    """As NVlabs' projector (256 px): larger images, and the mask with them, are area-downsampled."""
    perc = SizeRecordingPerceptual()
    mask = np.zeros((G.resolution, G.resolution), np.float32)
    mask[:, : G.resolution // 2] = 1
    p = InvertParams(target=target_from(G), mask=mask, steps=2, perceptual_weight=1.0, perceptual_size=size)
    run_to_completion(invert(p, G, perceptual_loss=perc))
    assert perc.sizes[0] == ("target", seen) and perc.sizes[1] == ("pred", seen, seen)
    from core.jobs.invert import perceptual_view

    down = perceptual_view(torch.as_tensor(mask)[None, None], 8)  # area: the left half stays 1
    assert torch.equal(down[0, 0, :, :4], torch.ones(8, 4)) and torch.equal(
        down[0, 0, :, 4:], torch.zeros(8, 4)
    )
    with pytest.raises(JobError, match="perceptual_size"):
        InvertParams(target=target_from(G), perceptual_size=-1)


def test_bf16_inversion_runs_close_to_fp32_and_bad_precision_is_refused(G):
    target = target_from(G)
    base = dict(target=target, space="w+", steps=30, perceptual_weight=0, lr=0.05)
    fp32 = run(G, **base)
    bf16 = run(G, **base, precision="bf16")
    assert bf16.latent.dtype == np.float32 and bf16.loss_history[-1]["l1"] < 0.7 * bf16.loss_history[0]["l1"]
    assert abs(bf16.loss_history[-1]["l1"] - fp32.loss_history[-1]["l1"]) < 0.25 * fp32.loss_history[-1]["l1"]
    with pytest.raises(JobError, match="precision"):
        InvertParams(**base, precision="fp16")


def test_the_lr_ramp_up_starts_at_a_fifth_and_reaches_the_lr(G):
    """lr_rampup R: step 1 moves as a fifth of the lr would, step R + 1 on uses the lr itself."""
    from core.jobs.invert import _set_lr

    target = target_from(G)
    one = dict(target=target, space="w+", steps=1)
    ramped = run(G, **one, lr=0.2, lr_rampup=10)
    np.testing.assert_allclose(ramped.latent, run(G, **one, lr=0.04).latent, atol=1e-6)
    assert not np.allclose(ramped.latent, run(G, **one, lr=0.2).latent)
    p = InvertParams(target=target, lr=0.2, lr_rampup=10)
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=p.lr)
    seen = []
    for step in (1, 6, 11, 50):
        _set_lr(p, opt, step)
        seen.append(opt.param_groups[0]["lr"])
    np.testing.assert_allclose(seen, [0.04, 0.12, 0.2, 0.2])
    with pytest.raises(JobError, match="lr_rampup"):
        InvertParams(target=target, lr_rampup=-1)
