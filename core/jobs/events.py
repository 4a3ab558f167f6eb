"""Progress events and cancellation shared by every job."""

from __future__ import annotations

import threading
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


class CancelToken:
    """Set from any thread; jobs check it between steps and stop within one step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def to_uint8(images) -> np.ndarray:
    """[N, 3, H, W] floats in [-1, 1] (torch) -> [N, H, W, 3] uint8."""
    x = (images.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().to(dtype=__import__("torch").uint8).permute(0, 2, 3, 1).cpu().numpy()
