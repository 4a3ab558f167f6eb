"""core.frozen: oneDNN pre-packed linear layers for no-gradient passes, and their fallbacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import core.frozen
from core.frozen import linear_for_rows, packed_linear, packed_linear_available
from core.prior.model import WDiffusionConfig, build_wdiffusion


def _layer(seed: int = 0, d_in: int = 48, d_out: int = 32) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d_in, d_out).requires_grad_(False)


@pytest.mark.parametrize("rows", [1, 4, 44])
def test_packed_linear_equals_linear_with_and_without_residual(rows):
    layer, x = _layer(), torch.randn(rows, 48)
    res = torch.randn(rows, 32)
    with torch.no_grad():
        assert torch.allclose(packed_linear(layer, x), F.linear(x, layer.weight, layer.bias), atol=1e-5)
        fused = packed_linear(layer, x, residual=res)
    assert torch.allclose(fused, F.linear(x, layer.weight, layer.bias) + res, atol=1e-5)
    for lin in (layer, nn.Linear(48, 32, bias=False).requires_grad_(False)):  # resolved once, per row count
        f, ref = linear_for_rows(lin, rows), F.linear(x, lin.weight, lin.bias)
        with torch.no_grad():
            assert torch.allclose(f(x, None), ref, atol=1e-5) and torch.allclose(
                f(x, res), ref + res, atol=1e-5
            )


def test_packed_linear_follows_weight_changes_and_row_counts():
    layer = _layer()
    with torch.no_grad():
        before = packed_linear(layer, torch.ones(4, 48))
        layer.weight.mul_(2.0)  # in place: the packed copy must be rebuilt
        after = packed_linear(layer, torch.ones(4, 48))
        other_rows = packed_linear(layer, torch.ones(6, 48))  # a second packing, same weights
    assert torch.allclose(after - layer.bias, 2 * (before - layer.bias), atol=1e-5)
    assert torch.allclose(other_rows[:4], after, atol=1e-5)


def test_packed_linear_keeps_gradients_where_they_are_wanted():
    layer = _layer().requires_grad_(True)
    x = torch.randn(4, 48, requires_grad=True)
    packed_linear(layer, x, residual=torch.zeros(4, 32)).square().sum().backward()
    assert x.grad is not None and layer.weight.grad is not None  # the F.linear path: autograd intact


def test_packed_linear_falls_back_without_the_onednn_op(monkeypatch):
    layer, x = _layer(), torch.randn(5, 48)
    monkeypatch.setattr(core.frozen, "_PACKED", False)
    with torch.no_grad():
        assert torch.allclose(packed_linear(layer, x), F.linear(x, layer.weight, layer.bias), atol=1e-6)
    assert "packed_5" not in layer.__dict__.get("_frozen_cache", {})  # nothing was packed


def test_this_build_takes_the_packed_path():
    """The standard CPU torch build has oneDNN; if this fails, the prior silently lost its speed-up."""
    assert packed_linear_available()


def test_prior_grid_conditioning_is_rebuilt_after_a_weight_change():
    model = build_wdiffusion(WDiffusionConfig(w_dim=16, width=64), seed=0).eval().requires_grad_(False)
    times = (0.05, 0.03)
    first = model.grid_conditioning(times)
    assert model.grid_conditioning(times) is first  # kept between projections
    with torch.no_grad():
        model.blocks[0].film.weight.add_(1.0)
    fresh = model.grid_conditioning(times)
    assert fresh is not first
    gain, offset = model.conditioning(torch.tensor(times))[0]  # block 0, [2 times, width]
    assert torch.allclose(fresh[1][0][0], gain[1:]) and torch.allclose(fresh[1][0][1], offset[1:])
    with torch.no_grad():
        model.blocks[1].norm.bias.add_(1.0)  # folded into the offsets: a change there counts too
    assert model.grid_conditioning(times) is not fresh


@pytest.mark.parametrize("rows", [1, 5])
def test_prior_frozen_raw_equals_raw(rows):
    """The projection's resolved-once pass must compute what raw() computes (AdaGN blocks, out layer)."""
    model = build_wdiffusion(WDiffusionConfig(w_dim=16, width=64), seed=1).eval().requires_grad_(False)
    torch.nn.init.normal_(model.out.weight, std=0.05, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for b in model.blocks:  # a trained-looking norm affine, folded into the modulation
            b.norm.weight.uniform_(0.5, 1.5)
            b.norm.bias.normal_()
    x, times = torch.randn(rows, 16), (0.05, 0.01)
    cond = model.grid_conditioning(times)[1]
    with torch.no_grad():
        expected = model.raw(x, torch.full((rows,), 0.01))
        assert torch.allclose(model.frozen_raw(rows)(x, cond), expected, atol=1e-5)


def test_probe_refuses_an_op_that_misbehaves(monkeypatch):
    """Whatever the internal op raises on some build, the probe answers "use F.linear"."""

    def broken(*args):
        raise TypeError("a changed signature")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", broken)
    assert core.frozen._probe_packed() is False
