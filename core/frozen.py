"""Shortcuts for models whose weights do not change while a job runs.

- :func:`frozen` keeps a weight-only term (a scaled weight, a demodulation sum, a filter) on the
  module instead of rebuilding it every call.
- :func:`packed_linear` runs a frozen ``nn.Linear`` through oneDNN with its weight packed once, for
  calls that need no gradient (the W prior's denoising passes), where that is faster on this CPU.
"""

from __future__ import annotations

import logging
import time
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
# MKL the plain weight and MKL repacks it on every call; on some CPUs that repacking is most of the
# cost at the W prior's 4-44 rows (2 EPYC cores, 512x512 layer: 43 -> 19 us at 4 rows), on others
# MKL's product on a contiguous W^T is the faster one (2 Xeon cores: 38 us packed against 23 us at
# 4 rows). So the op is probed once, for existence and for speed, and the plain product stays the
# fallback.
_PACKED: bool | None = None  # the op exists and computes F.linear
_PACKED_FASTER: bool | None = None  # ... and beats the plain product on this machine


def packed_linear_available() -> bool:
    """Whether this torch build has oneDNN's packed linear (probed once)."""
    global _PACKED
    if _PACKED is None:
        _PACKED = _probe_packed()
    return _PACKED


def packed_linear_pays() -> bool:
    """Whether :func:`linear_for_rows` takes the packed path: available and measured faster here."""
    global _PACKED_FASTER
    if _PACKED_FASTER is None:
        _PACKED_FASTER = packed_linear_available() and _packed_is_faster()
    return _PACKED_FASTER


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


def _packed_is_faster(rows: int = 4, width: int = 512, layers: int = 9, repeats: int = 5) -> bool:
    """Times both products on the prior's shape (9 layers, so the weights come from cache as in a
    pass), interleaved, best of ``repeats``; packed must win by 10 % (a tie keeps the plain one)."""
    gen = torch.Generator().manual_seed(0)
    ws = [torch.randn(width, width, generator=gen) for _ in range(layers)]
    b, x = torch.zeros(width), torch.randn(rows, width, generator=gen)
    packed = [torch.ops.mkldnn._reorder_linear_weight(w, rows) for w in ws]
    plain = [w.T.contiguous() for w in ws]
    op = torch.ops.mkldnn._linear_pointwise

    def run_packed() -> None:
        for p in packed:
            op(x, p, b, "none", [], "")

    def run_plain() -> None:
        for wt in plain:
            torch.addmm(b, x, wt)

    best = {run_packed: float("inf"), run_plain: float("inf")}
    with torch.no_grad():
        for _ in range(repeats + 1):  # one extra round: the first warms both up (the min drops it)
            for fn in best:
                t = time.perf_counter()
                fn()
                best[fn] = min(best[fn], time.perf_counter() - t)
    faster = best[run_packed] < 0.9 * best[run_plain]
    log.info(
        "packed linear %.0f us, plain %.0f us: using %s",
        1e6 * best[run_packed], 1e6 * best[run_plain], "packed" if faster else "plain",
    )  # fmt: skip
    return faster


def linear_for_rows(
    layer: nn.Linear, rows: int
) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """``f(x, residual)`` = ``layer(x)`` (+ ``residual``) for no-grad calls on ``rows`` rows, its weight
    resolved (packed) once: for loops that run the same frozen layer many times on one batch."""
    w, b = layer.weight, layer.bias
    if rows < 2 or w.dtype != torch.float32 or w.device.type != "cpu" or not packed_linear_pays():
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
    """``layer(x)`` (+ ``residual``, fused), with the weight packed for oneDNN once per row count where
    that is faster on this CPU (:func:`packed_linear_pays`).

    Plain ``F.linear`` where gradients are wanted or ``x`` is not a 2-D batch of rows; otherwise
    :func:`linear_for_rows` (which also serves one-row inputs, other devices and torch builds without
    the op).
    """
    if torch.is_grad_enabled() or x.dim() != 2 or layer.weight.requires_grad:
        y = F.linear(x, layer.weight, layer.bias)
        return y if residual is None else y + residual
    return linear_for_rows(layer, x.shape[0])(x, residual)
