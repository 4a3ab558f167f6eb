"""Our generator file format: one ``.safetensors`` file holding the weights, with the JSON config
(and optional W statistics) in its metadata. safetensors cannot run code, so these files are safe to
open from anywhere.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from core.errors import ModelLoadError
from core.gan.base import Generator
from core.gan.dcgan import DCGANGenerator
from core.gan.stylegan2 import StyleGAN2Generator
from core.gan.stylegan3 import StyleGAN3Generator
from core.models.safe_load import read_safetensors
from core.types import GENERATOR_FORMAT

log = logging.getLogger(__name__)

FORMAT = GENERATOR_FORMAT
ARCHS: dict[str, type[Generator]] = {
    "stylegan2": StyleGAN2Generator, "stylegan3": StyleGAN3Generator, "dcgan": DCGANGenerator,
}  # fmt: skip
MEAN_W_KEY = "__mean_w__"


def generator_from_config(config: dict) -> Generator:
    arch = config.get("arch")
    if arch not in ARCHS:
        raise ModelLoadError(f"unknown generator architecture {arch!r}; known: {sorted(ARCHS)}")
    return ARCHS[arch].from_config(config)


def save_generator(G: Generator, path: str | Path, *, extra_metadata: dict | None = None) -> Path:
    """Write ``G`` (weights, config and its cached mean w if any) to ``path`` (.safetensors)."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    if G._mean_w is not None:
        tensors[MEAN_W_KEY] = G._mean_w.detach().cpu().contiguous()
    meta = {"format": FORMAT, "config": json.dumps(G.config_dict()), **(extra_metadata or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)  # atomic: a crash mid-write never leaves a half file under the real name
    return path


def load_generator_safetensors(path: str | Path, *, device: str | torch.device = "cpu") -> Generator:
    """Load a generator written by :func:`save_generator`.

    Raises:
        ModelLoadError: missing file, not a safetensors file, or not one of ours.
    """
    path = Path(path)
    meta, tensors = read_safetensors(path, what="model file")
    if meta.get("format") != FORMAT:
        raise ModelLoadError(f"{path.name} is not a Latent Canvas generator (format {meta.get('format')!r})")
    try:
        G = generator_from_config(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError, AttributeError, RuntimeError) as e:  # crafted or damaged
        raise ModelLoadError(f"{path.name}: its generator config is missing or damaged: {e}") from e
    mean_w = tensors.pop(MEAN_W_KEY, None)
    try:
        G.load_state_dict(tensors)
    except RuntimeError as e:
        raise ModelLoadError(f"{path.name}: weights do not match its config: {e}") from e
    G = G.to(device).eval().requires_grad_(False)
    if mean_w is not None:
        G.set_mean_w(mean_w)
    return G


def load_generator(path: str | Path, *, device: str | torch.device = "cpu") -> Generator:
    """Load any generator file we support: ``.safetensors`` (ours) or ``.pkl`` (StyleGAN2-ADA)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return load_generator_safetensors(path, device=device)
    if suffix == ".pkl":
        from core.models.stylegan_pkl import load_stylegan2_pkl

        return load_stylegan2_pkl(path, device=device)
    raise ModelLoadError(f"{path.name}: unsupported model format {suffix!r} (use .safetensors or .pkl)")
