"""Small torch-free types shared by core and the GUI (the GUI imports these without loading torch)."""

from __future__ import annotations

import enum


class LatentSpace(enum.StrEnum):
    Z = "z"  # input noise, [N, z_dim]
    W = "w"  # one intermediate latent shared by every layer, [N, w_dim]
    W_PLUS = "w+"  # one intermediate latent per synthesis layer, [N, num_ws, w_dim]


GENERATOR_FORMAT = "latent-canvas-generator/1"  # the "format" metadata key of our generator safetensors


def safetensors_metadata(path) -> dict:
    """The string metadata of a safetensors file's header, without reading weights or importing torch."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return dict(f.metadata() or {})
