"""Where bundled resources and user models live."""

from __future__ import annotations

import os
from pathlib import Path

REPO_RESOURCES = Path(__file__).resolve().parents[1] / "resources"
DEFAULT_GENERATOR = "stylegan2-cats64.safetensors"
BUNDLED_PRIOR = "wdiffusion-cats64.safetensors"  # the W-space diffusion prior of DEFAULT_GENERATOR
BUNDLED_S_PRIOR = "sdiffusion-cats64.safetensors"  # its Style-space diffusion prior (the seed's second)


def bundled_prior(space: str) -> Path:
    """The bundled diffusion prior for a projection in ``space`` ("s": Style space; else W)."""
    return bundled_model(BUNDLED_S_PRIOR if str(space) == "s" else BUNDLED_PRIOR)


def resources_dir() -> Path:
    return Path(os.environ.get("LATENT_CANVAS_RESOURCES", REPO_RESOURCES))


def bundled_model(name: str) -> Path:
    return resources_dir() / "models" / name
