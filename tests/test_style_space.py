"""Style space (S): every modulated layer's affine output as the latent (Wu et al. 2021; the seed's
second diffusion model and its inpainting experiment): the generator, inversion, projection with
priors trained in S, latent files and interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import JobError
from core.gan.latents import load_latent, save_latent
from core.jobs.interpolate import Interpolator, ends_in_space
from core.jobs.invert import invert
from core.jobs.params import InvertParams, ProjectionParams
from core.jobs.projection import project
from core.jobs.runner import run_to_completion
from core.prior.model import WDiffusionConfig, build_wdiffusion
from core.prior.wstats import sstats_from_generator
from core.types import LatentSpace
from tests.conftest import tiny_stylegan


def _target(G, seed=1):
    with torch.no_grad():
        img = G(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed)))[0]
    return ((img.permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("fused", [False, True])
def test_synthesis_from_styles_equals_synthesis_from_ws(G, fused):
    G.set_fused_modconv(fused)
    ws = G.broadcast(G.sample_w(3, seed=2)) + 0.3 * torch.randn(3, G.num_ws, G.w_dim)  # rows differ
    with torch.no_grad():
        s = G.styles(ws)
        assert s.shape == (3, G.s_dim)
        affine_outs = [m.affine.weight.shape[0] for m in G.modules() if hasattr(m, "affine")]
        assert G.s_dim == sum(affine_outs)
        assert torch.equal(G.synthesis_styles(s), G.synthesis(ws))
        moved = s.clone()
        moved[:, 0] += 1.0  # one style channel of the first layer: a different image
        assert not torch.equal(G.synthesis_styles(moved), G.synthesis(ws))
    with pytest.raises(ValueError, match="s must be"):
        G.synthesis_styles(s[:, :-1])


def test_inversion_in_style_space_fits_and_reports_no_ws(G):
    target = _target(G)
    p = InvertParams(
        target=target, space="s", steps=60, perceptual_weight=0, lr=0.05, num_samples=2, init="random"
    )
    result = run_to_completion(invert(p, G))
    assert result.latent.shape == (2, G.s_dim) and result.ws is None
    assert result.loss_history[-1]["l1"] < 0.5 * result.loss_history[0]["l1"]
    with torch.no_grad():  # the result's images are the latent's render
        img = G.synthesis_styles(torch.from_numpy(result.latent))
    again = ((img.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    assert np.abs(again.astype(int) - result.images.astype(int)).max() <= 1
    multi = run_to_completion(
        invert(
            InvertParams(target=target, space="s", steps=4, starts=6, num_samples=2, perceptual_weight=0), G
        )
    )
    assert multi.latent.shape == (2, G.s_dim)
    with pytest.raises(JobError, match="W prior term"):
        run_to_completion(
            invert(
                InvertParams(target=target, space="s", steps=1, w_prior_weight=1.0, perceptual_weight=0), G
            )
        )


def test_a_generator_without_style_space_says_so(dcgan):
    with pytest.raises(JobError, match="no s space"):
        run_to_completion(
            invert(
                InvertParams(target=_target(tiny_stylegan()), space="s", steps=1, perceptual_weight=0), dcgan
            )
        )


def _s_prior(G):
    from tests.test_prior import _tiny_prior

    return _tiny_prior(G, space="s")


@pytest.mark.parametrize("prior", ["none", "mean", "cluster", "diffusion", "task-guided"])
def test_inpainting_in_style_space_runs_with_every_prior(G, prior):
    model, _ = _s_prior(G)
    mask = np.ones((16, 16), np.float32)
    mask[4:12, 4:12] = 0
    p = ProjectionParams(
        task="inpaint", target=_target(G), mask=mask, space="s", prior=prior, steps=4, num_samples=2
    )
    result = run_to_completion(project(p, G, prior_model=model))
    assert result.latent.shape == (2, G.s_dim) and result.ws is None and result.images.shape == (2, 16, 16, 3)
    assert np.isfinite(result.task_loss).all()


def test_a_prior_of_the_other_space_is_refused_clearly(G):
    s_model, _ = _s_prior(G)
    w_model = build_wdiffusion(WDiffusionConfig(w_dim=G.w_dim, width=32, groups=8), seed=0)
    base = ProjectionParams(task="similarity", target=_target(G), prior="diffusion", steps=1)
    with pytest.raises(JobError, match="works in Style space"):
        run_to_completion(project(base, G, prior_model=s_model))
    with pytest.raises(JobError, match="works in W"):
        run_to_completion(
            project(ProjectionParams(**{**base.__dict__, "space": "s"}), G, prior_model=w_model)
        )


def test_style_space_prior_trains_from_styles(G):
    from core.training.wdiffusion import TrainConfig, WDiffusionTrainer

    cfg = TrainConfig(space="s", width=32, groups=8, batch=16)
    trainer = WDiffusionTrainer(cfg, torch.device("cpu"), G, sstats_from_generator(G, n=300, k=2))
    assert trainer.model.cfg.w_dim == G.s_dim and trainer._latents(4).shape == (4, G.s_dim)
    assert np.isfinite(trainer.step()["loss"])
    assert trainer.samples().shape == (32, 3, 16, 16)


def test_style_latents_save_without_ws_and_interpolate(G, tmp_path):
    with torch.no_grad():
        s = G.styles(G.broadcast(G.sample_w(2, seed=4))).numpy()
    path = save_latent(tmp_path / "s.npz", LatentSpace.S, s, None, {"model": "g"})
    back = load_latent(path)
    assert back.space is LatentSpace.S and back.ws is None and np.array_equal(back.latent, s)
    frames = Interpolator(G, [s[0], s[1]], LatentSpace.S).frames(3)
    with torch.no_grad():
        ends = G.synthesis_styles(torch.from_numpy(s))
    want = ((ends.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    assert np.abs(frames[[0, 2]].astype(int) - want.astype(int)).max() <= 1


def test_a_style_space_result_joins_an_interpolation_path_with_w_plus_results(G):
    """Style-space results have no ws: a path through one runs in Style space, the w+ key frames
    turned into their styles, so each end still renders as its own result."""
    from core.document import HistoryEntry

    with torch.no_grad():
        ws = G.broadcast(G.sample_w(2, seed=7))
        s_b = G.styles(ws[1:]).numpy()
        want = G.synthesis(ws).numpy()
    a = HistoryEntry("invert", {}, 0, ws=ws[:1].numpy(), latent=ws[:1].numpy(), space="w+")
    b = HistoryEntry("invert", {}, 0, latent=s_b, space="s")
    (sa, la), (sb, lb) = a.path_end(), b.path_end()
    assert (sa, sb) == ("w+", "s") and HistoryEntry("sdedit", {}, 0).path_end() is None
    ends = ends_in_space(G, [la, lb], [sa, sb], "s")
    assert ends[0].shape == ends[1].shape == (G.s_dim,)
    frames = Interpolator(G, ends, LatentSpace.S).frames(3)
    target = ((np.transpose(want, (0, 2, 3, 1)) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    assert np.abs(frames[[0, 2]].astype(int) - target.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="cannot join"):
        ends_in_space(G, [np.zeros(G.z_dim, np.float32)], ["z"], "s")
