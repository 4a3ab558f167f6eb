"""The progress event every job yields (cancellation: :class:`core.types.CancelToken`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Progress:
    """One step of a running job.

    ``preview`` is ``[N, H, W, 3]`` uint8 (N samples) on preview steps, else None; ``latent`` is the
    current latent (space-dependent shape, float32) on preview steps, else None.
    """

    step: int  # 1-based step just finished
    total: int
    losses: dict[str, float] = field(default_factory=dict)  # mean over samples
    preview: np.ndarray | None = None
    latent: np.ndarray | None = None
