"""Small torch-free types shared by core and the GUI (the GUI imports these without loading torch)."""

from __future__ import annotations

import enum
import threading


class LatentSpace(enum.StrEnum):
    Z = "z"  # input noise, [N, z_dim]
    W = "w"  # one intermediate latent shared by every layer, [N, w_dim]
    W_PLUS = "w+"  # one intermediate latent per synthesis layer, [N, num_ws, w_dim]
    S = "s"  # Style space: every modulated layer's affine output in a row, [N, s_dim] (StyleGAN2 only)


DENOISE_SOLVERS = ("auto", "sequential", "picard")  # the W prior's ways to run its K updates

GENERATOR_FORMAT = "latent-canvas-generator/1"  # the "format" metadata key of our generator safetensors


def safetensors_metadata(path) -> dict:
    """The string metadata of a safetensors file's header, without reading weights or importing torch."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return dict(f.metadata() or {})


class CancelToken:
    """Set from any thread; jobs check it between steps and stop within one step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()
