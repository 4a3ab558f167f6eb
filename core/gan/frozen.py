"""Weight-only terms of a generator kept while its weights do not change (an inversion runs the same
generator hundreds of times). It pays on the inversion job as a person runs it (docs/performance.md,
"The speed layer, re-measured"), so it stays; the W prior's caches and packed layers did not, and went."""

from __future__ import annotations

import torch
from torch import nn


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
