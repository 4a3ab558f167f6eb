"""Shortcuts for models whose weights do not change while a job runs.

- :func:`frozen` keeps a weight-only term (a scaled weight, a demodulation sum, a filter) on the
  module instead of rebuilding it every call.
- :func:`packed_linear` runs a frozen ``nn.Linear`` through oneDNN with its weight packed once, for
  calls that need no gradient (the W prior's denoising passes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


def frozen(module: nn.Module, name: str, fn, *deps: torch.Tensor) -> torch.Tensor:
    """``fn(*deps)``, computed once and kept on ``module`` while its weights are frozen.

    Inversion runs the same generator hundreds of times with its weights fixed; the equalised-lr
    weight scales, demodulation sums, FIR kernels and noise images are functions of the weights
    alone, and rebuilding them is ~50 of the ~600 ops of a 64 px step. Nothing is cached while a
    dependency needs a gradient (training); an in-place change (optimiser, ``load_state_dict``) bumps
    the tensor's version and a move or new storage changes its address, so a stale value is never
    returned.
    Inference-mode results are kept apart: they may not be saved for a later backward pass.
    """
    if torch.compiler.is_compiling() or any(d.requires_grad for d in deps):
        return fn(*deps)  # under torch.compile the graph holds these terms itself
    key = (torch.is_inference_mode_enabled(), *((d.data_ptr(), d._version, d.dtype, d.device) for d in deps))
    cache = module.__dict__.setdefault("_frozen_cache", {})
    hit = cache.get(name)
    if hit is None or hit[0] != key:
        with torch.no_grad():
            hit = cache[name] = (key, fn(*deps))
    return hit[1]


# oneDNN's linear with a pre-packed weight: what inductor's CPU "freezing" pass emits. F.linear hands
# MKL the plain weight and MKL repacks it on every call; at the W prior's 4-44 rows that repacking is
# most of the cost (measured on 2 EPYC cores, 512x512 layer: 43 -> 19 us at 4 rows, 143 -> 63 us at
# 44). The op is internal to torch, so it is probed once and F.linear stays the fallback.
_PACKED: bool | None = None


def packed_linear_available() -> bool:
    """Whether :func:`packed_linear` takes the oneDNN path in this torch build (probed once)."""
    global _PACKED
    if _PACKED is None:
        _PACKED = _probe_packed()
    return _PACKED


def _probe_packed() -> bool:
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        w, b, x = torch.randn(8, 4), torch.randn(8), torch.randn(3, 4)
        y = torch.ops.mkldnn._linear_pointwise(
            x, torch.ops.mkldnn._reorder_linear_weight(w, 3), b, "none", [], ""
        )
        return bool(torch.allclose(y, F.linear(x, w, b), atol=1e-5))
    # A capability probe of an internal op: whatever this build raises (missing op, unsupported CPU,
    # a changed signature) means "use F.linear", never a failed job.
    except Exception as e:  # noqa: BLE001
        log.info("oneDNN packed linear unavailable (%s); using F.linear", e)
        return False


def linear_for_rows(
    layer: nn.Linear, rows: int
) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """``f(x, residual)`` = ``layer(x)`` (+ ``residual``) for no-grad calls on ``rows`` rows, its weight
    resolved (packed) once: for loops that run the same frozen layer many times on one batch."""
    w, b = layer.weight, layer.bias
    if rows < 2 or w.dtype != torch.float32 or w.device.type != "cpu" or not packed_linear_available():
        # A contiguous W^T: MKL's one-row product reads it ~15 % faster than the transposed view.
        wt = frozen(layer, "weight_t", lambda w: w.T.contiguous(), w)
        if b is None:
            return lambda x, residual: torch.mm(x, wt) if residual is None else torch.addmm(residual, x, wt)
        return lambda x, residual: (
            torch.addmm(b, x, wt) if residual is None else torch.addmm(residual, x, wt).add_(b)
        )
    packed = frozen(layer, f"packed_{rows}", lambda w: torch.ops.mkldnn._reorder_linear_weight(w, rows), w)
    op = torch.ops.mkldnn._linear_pointwise
    return lambda x, residual: (
        op(x, packed, b, "none", [], "") if residual is None else op.binary(x, residual, packed, b, "add")
    )


def packed_linear(layer: nn.Linear, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``layer(x)`` (+ ``residual``, fused), with the weight packed for oneDNN once per row count.

    Plain ``F.linear`` where gradients are wanted or ``x`` is not a 2-D batch of rows; otherwise
    :func:`linear_for_rows` (which also serves one-row inputs, other devices and torch builds without
    the op).
    """
    if torch.is_grad_enabled() or x.dim() != 2 or layer.weight.requires_grad:
        y = F.linear(x, layer.weight, layer.bias)
        return y if residual is None else y + residual
    return linear_for_rows(layer, x.shape[0])(x, residual)
