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


@pytest.fixture(params=["packed", "plain"])
def path(request, monkeypatch):
    """Both no-grad products, whichever this machine's speed probe picked."""
    if request.param == "packed" and not packed_linear_available():
        pytest.skip("this torch build has no oneDNN packed linear")
    monkeypatch.setattr(core.frozen, "_PACKED_FASTER", request.param == "packed")
    return request.param


@pytest.mark.parametrize("rows", [1, 4, 44])
def test_packed_linear_equals_linear_with_and_without_residual(rows, path):
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


def test_packed_linear_follows_weight_changes_and_row_counts(path):
    layer = _layer()
    with torch.no_grad():
        before = packed_linear(layer, torch.ones(4, 48))
        layer.weight.mul_(2.0)  # in place: the packed copy must be rebuilt
        after = packed_linear(layer, torch.ones(4, 48))
        other_rows = packed_linear(layer, torch.ones(6, 48))  # a second packing, same weights
    assert torch.allclose(after - layer.bias, 2 * (before - layer.bias), atol=1e-5)
    assert torch.allclose(other_rows[:4], after, atol=1e-5)


def test_a_layer_resolved_for_more_rows_serves_fewer(path):
    """Picard's later sweeps pass fewer rows through the pass resolved for its first K x rows."""
    layer = _layer()
    f = linear_for_rows(layer, 10)
    for rows in (1, 3, 7, 10):
        x, res = torch.randn(rows, 48), torch.randn(rows, 32)
        with torch.no_grad():
            assert torch.allclose(f(x, res), F.linear(x, layer.weight, layer.bias) + res, atol=1e-5)


def test_packed_linear_keeps_gradients_where_they_are_wanted():
    layer = _layer().requires_grad_(True)
    x = torch.randn(4, 48, requires_grad=True)
    packed_linear(layer, x, residual=torch.zeros(4, 32)).square().sum().backward()
    assert x.grad is not None and layer.weight.grad is not None  # the F.linear path: autograd intact


def test_packed_linear_falls_back_without_the_onednn_op(monkeypatch):
    layer, x = _layer(), torch.randn(5, 48)
    monkeypatch.setattr(core.frozen, "_PACKED", False)
    monkeypatch.setattr(core.frozen, "_PACKED_FASTER", None)  # decided again, from the missing op
    with torch.no_grad():
        assert torch.allclose(packed_linear(layer, x), F.linear(x, layer.weight, layer.bias), atol=1e-6)
    assert "packed_5" not in layer.__dict__.get("_frozen_cache", {})  # nothing was packed
    assert core.frozen.packed_linear_pays() is False


def test_the_packed_path_packs_and_the_plain_path_does_not(monkeypatch):
    if not packed_linear_available():
        pytest.skip("this torch build has no oneDNN packed linear")
    for faster, packed in ((True, True), (False, False)):
        layer = _layer()
        monkeypatch.setattr(core.frozen, "_PACKED_FASTER", faster)
        with torch.no_grad():
            packed_linear(layer, torch.randn(5, 48))
        assert ("packed_5" in layer.__dict__["_frozen_cache"]) is packed


def test_speed_probe_decides_once_and_says_what_it_chose(monkeypatch, caplog):
    """Which product is faster depends on the CPU (packed won 2.2x on one EPYC VM, lost 1.7x on a
    Xeon VM): the probe times both on the prior's shape once and logs its choice."""
    if not packed_linear_available():
        pytest.skip("this torch build has no oneDNN packed linear")
    monkeypatch.setattr(core.frozen, "_PACKED_FASTER", None)
    with caplog.at_level("INFO", logger="core.frozen"):
        first = core.frozen.packed_linear_pays()
    assert isinstance(first, bool) and core.frozen.packed_linear_pays() is first
    assert [r.getMessage() for r in caplog.records if "using" in r.getMessage()][-1].endswith(
        "packed" if first else "plain"
    )


def test_this_build_has_the_packed_path():
    """The standard CPU torch build has oneDNN; if this fails, CPUs where packing pays silently lost
    its speed-up."""
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
