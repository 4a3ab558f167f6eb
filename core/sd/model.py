"""One loaded diffusion model for every source: a diffusers folder, a single original-layout
``.safetensors`` (or a ``.ckpt`` that ``torch.load(weights_only=True)`` accepts), a Hugging Face hub id
(cache first; the network only when the caller allows it), and the bundled model.

Everything becomes an :class:`SDModel` of diffusers classes (``UNet2DConditionModel``,
``AutoencoderKL`` or none for a pixel-space model, a text encoder, a scheduler config), which the
SDEdit loop uses the same way. The model objects are shared and never mutated by a run: each run
builds its own scheduler from ``scheduler_config``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from core.errors import ModelLoadError
from core.models.manager import hf_cache_dir, offline

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What a Stable Diffusion hub snapshot needs; fp16/ema/onnx/flax variants are left out.
HUB_PATTERNS = [
    "model_index.json",
    "*/config.json",
    "scheduler/*.json",
    "tokenizer/*",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
]
CONFIG_PATTERNS = ["model_index.json", "*/config.json", "scheduler/*.json", "tokenizer/*"]
# Without `accelerate` diffusers' low-memory loading is unavailable; asking for it only logs a warning.
LOW_MEM = {"low_cpu_mem_usage": False}
LOCAL = {"local_files_only": True, **LOW_MEM}


class TextEncoder(Protocol):
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> the UNet's cross-attention context ``[B, L, D]``."""
        ...


class HFTextEncoder:
    """A transformers tokenizer + ``CLIPTextModel``: the last hidden state is the context (SD 1.x/2.x)."""

    def __init__(self, tokenizer, model: torch.nn.Module):
        self.tokenizer = tokenizer
        self.model = model

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.model(ids.to(self.model.device))[0]


@dataclass(frozen=True, eq=False)
class SDModel:
    """A ready model. Read-only for jobs: a run keeps its state (scheduler, latents) local."""

    unet: torch.nn.Module  # diffusers UNet2DConditionModel; 9 input channels = an inpainting UNet
    vae: torch.nn.Module | None  # AutoencoderKL; None = pixel space (the "latent" is the image)
    text_encoder: TextEncoder
    scheduler_config: dict[str, Any]  # the model's noise schedule (betas, spacing, prediction type)
    device: torch.device
    dtype: torch.dtype  # of the UNet and text encoder
    source: str  # where it came from, for run records
    tiny_vae: torch.nn.Module | None = None  # AutoencoderTiny (TAESD) for cheap previews, if present
    info: dict[str, Any] = field(default_factory=dict)  # model card facts (bundled model)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    @property
    def latent_factor(self) -> int:
        """Pixels per latent pixel along each side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    @property
    def size_multiple(self) -> int:
        """Output sides must be multiples of this (VAE factor x UNet downsampling)."""
        return self.latent_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def native_size(self) -> int:
        return int(self.unet.config.sample_size) * self.latent_factor

    @property
    def inpainting_unet(self) -> bool:
        """A dedicated SD inpainting UNet: latents + mask + masked-image latents = 4 + 1 + 4 channels."""
        return self.vae is not None and self.unet.config.in_channels == 2 * self.latent_channels + 1

    @property
    def latent_channels(self) -> int:
        return (
            int(self.vae.config.latent_channels)
            if self.vae is not None
            else int(self.unet.config.out_channels)
        )

    @property
    def vae_dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype if self.vae is not None else self.dtype


# --- device and dtype -------------------------------------------------------------------------------


def choose_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, else Apple MPS, else CPU; anything else goes to ``torch.device``."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """float16 on CUDA (half the memory, tensor cores), float32 elsewhere (CPU has no fast fp16)."""
    return torch.float16 if device.type == "cuda" else torch.float32


# --- the entry point ------------------------------------------------------------------------------------


def load_sd_model(
    source: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "auto",
    dtype: torch.dtype | None = None,
    config: str | os.PathLike | None = None,
    allow_download: bool = False,
    tiny_vae: str | os.PathLike | None = "auto",
) -> SDModel:
    """Load a text-conditioned diffusion model.

    Args:
        source: a diffusers folder, a single ``.safetensors``/``.ckpt`` file (original SD layout), a hub
            id such as ``stable-diffusion-v1-5/stable-diffusion-v1-5``, or None for the bundled model.
        device: ``auto`` (CUDA, MPS, CPU), or any torch device name.
        dtype: of the UNet and text encoder; default float16 on CUDA, float32 elsewhere.
        config: for a single file, a diffusers folder (or hub id in the cache) holding its configs and
            tokenizer; default: the SD 1.x/2.x repo that diffusers infers from the weights.
        allow_download: a hub id not in the Hugging Face cache, or a single file's configs, may be
            fetched. Never in offline mode.
        tiny_vae: a TAESD (``AutoencoderTiny``) folder for cheap previews; "auto" takes the registry's
            ``taesd`` when it is on this machine (never downloaded); None: no tiny decoder.

    Raises:
        ModelLoadError: missing, unreadable, unsafe (pickled code) or incomplete model.
    """
    dev = choose_device(str(device)) if not isinstance(device, torch.device) else device
    dt = dtype or default_dtype(dev)
    if source is None:
        from core.models.manager import bundled_sd_path

        source = bundled_sd_path()
    path = Path(source)
    if path.is_dir():
        model = load_folder(path, device=dev, dtype=dt)
    elif path.is_file():
        model = load_single_file(path, device=dev, dtype=dt, config=config, allow_download=allow_download)
    elif HUB_ID.match(str(source)) and not str(source).startswith((".", "/")):
        folder = hub_snapshot(str(source), HUB_PATTERNS, allow_download=allow_download)
        model = load_folder(folder, device=dev, dtype=dt, source=str(source))
    else:
        raise ModelLoadError(f"model not found: {source} (not a folder, a file or a hub id)")
    return _with_tiny_vae(model, tiny_vae)


def _with_tiny_vae(model: SDModel, tiny_vae) -> SDModel:
    if model.vae is None or tiny_vae is None:
        return model
    if tiny_vae == "auto":
        from core.models.manager import find

        # TAESD decodes SD 1.x/2.x latents (4 channels); other VAEs need their own tiny decoder.
        tiny_vae = find("taesd") if model.latent_channels == 4 else None
        if tiny_vae is None:
            return model
    decoder = load_tiny_vae(tiny_vae, device=model.device, dtype=model.dtype)
    return replace(model, tiny_vae=decoder) if decoder is not None else model


def hub_snapshot(repo_id: str, patterns: list[str], *, allow_download: bool) -> Path:
    """The local snapshot folder of ``repo_id``: from the HF cache, or downloaded when allowed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    local_only = offline() or not allow_download
    try:
        folder = snapshot_download(
            repo_id, allow_patterns=patterns, local_files_only=local_only, cache_dir=hf_cache_dir()
        )
        return Path(folder)
    except LocalEntryNotFoundError as e:
        why = "offline mode is on" if offline() else "downloads were not allowed (--allow-download)"
        raise ModelLoadError(f"{repo_id} is not in the Hugging Face cache and {why}") from e
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{repo_id}: {e}") from e


# --- diffusers folders ------------------------------------------------------------------------------


def load_folder(
    folder: Path, *, device: torch.device, dtype: torch.dtype, source: str | None = None
) -> SDModel:
    """A diffusers pipeline folder (``model_index.json``, ``unet/``, ``vae/`` unless pixel-space,
    ``text_encoder/``, ``tokenizer/``, ``scheduler/``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors import SafetensorError

    index = _read_json(folder / "model_index.json")
    try:
        half = {} if dtype == torch.float32 else {"torch_dtype": dtype}  # a float32 cast only warns
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **half, **LOCAL)
        vae = None
        if index.get("vae", [None, None])[0] is not None:
            vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **LOCAL)
        text = _load_text_encoder(folder, index, device, dtype)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:  # a truncated weights file
        raise ModelLoadError(f"{folder}: not a loadable diffusers model: {e}") from e
    sched = _read_json(folder / "scheduler" / "scheduler_config.json")
    info = _read_json(folder / "model_card.json") if (folder / "model_card.json").is_file() else {}
    return _assemble(unet, vae, text, sched, device, dtype, source or str(folder), info=info)


def _load_text_encoder(folder: Path, index: dict, device: torch.device, dtype: torch.dtype) -> TextEncoder:
    from transformers import CLIPTextModel, CLIPTokenizer

    cls = index.get("text_encoder", [None, None])[1]
    if cls not in ("CLIPTextModel", None):
        raise ModelLoadError(f"{folder}: text encoder {cls!r} is not supported (CLIPTextModel only)")
    if not (folder / "tokenizer").is_dir():  # transformers would build a broken tokenizer without it
        raise ModelLoadError(f"{folder}: the tokenizer/ folder is missing (the text encoder needs it)")
    tok = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    enc = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
    return HFTextEncoder(tok, enc.to(device=device, dtype=dtype).eval().requires_grad_(False))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ModelLoadError(f"{path.parent}: missing {path.name}; not a diffusers model folder") from e
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: unreadable: {e}") from e


def _assemble(unet, vae, text, sched, device, dtype, source, *, info=None) -> SDModel:
    unet = _to(unet, device, dtype)
    if vae is not None:
        # SD's VAE overflows in float16 when its config says so; it then stays float32.
        vae = _to(vae, device, torch.float32 if getattr(vae.config, "force_upcast", False) else dtype)
    return SDModel(unet, vae, text, dict(sched), device, dtype, source, info=info or {})


def _to(module, device, dtype):
    if next(module.parameters()).dtype != dtype:  # diffusers warns on every dtype cast; cast only if needed
        module = module.to(dtype=dtype)
    return module.to(device=device).eval().requires_grad_(False)


# --- single files (original CompVis/Stability layout) --------------------------------------------


def load_single_file(
    path: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    config: str | os.PathLike | None = None,
    allow_download: bool = False,
) -> SDModel:
    """An original-layout SD 1.x/2.x checkpoint, converted by diffusers' single-file code."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel, CLIPTokenizer

    from core.models.manager import load_state_dict_file

    state = load_state_dict_file(path)
    cfg = _single_file_config(path, state, config, allow_download)
    kw = {"config": str(cfg), "local_files_only": True}
    try:
        half = {} if dtype == torch.float32 else {"torch_dtype": dtype}  # a float32 cast only warns
        unet = UNet2DConditionModel.from_single_file(state, subfolder="unet", **half, **kw, **LOW_MEM)
        vae = AutoencoderKL.from_single_file(state, subfolder="vae", **kw, **LOW_MEM)
        enc = create_diffusers_clip_model_from_ldm(CLIPTextModel, state, subfolder="text_encoder", **kw)
        tok = CLIPTokenizer.from_pretrained(cfg, subfolder="tokenizer", local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelLoadError(f"{path.name}: could not convert it with the configs in {cfg}: {e}") from e
    text = HFTextEncoder(tok, enc.to(device=device, dtype=dtype).eval().requires_grad_(False))
    sched = _read_json(cfg / "scheduler" / "scheduler_config.json")
    return _assemble(unet, vae, text, sched, device, dtype, str(path))


def _single_file_config(path: Path, state: dict, config, allow_download: bool) -> Path:
    """The diffusers folder whose configs fit the checkpoint: given, or SD 1.x/2.x from the HF cache."""
    if config is not None and Path(config).is_dir():
        return Path(config)
    if config is not None:
        return hub_snapshot(str(config), CONFIG_PATTERNS, allow_download=allow_download)
    from diffusers.loaders.single_file_utils import (
        DIFFUSERS_DEFAULT_PIPELINE_PATHS,
        infer_diffusers_model_type,
    )

    kind = infer_diffusers_model_type(state)
    if kind not in ("v1", "v2", "inpainting", "inpainting_v2"):
        raise ModelLoadError(f"{path.name}: looks like a {kind!r} checkpoint; only SD 1.x/2.x are supported")
    repo = DIFFUSERS_DEFAULT_PIPELINE_PATHS[kind]["pretrained_model_name_or_path"]
    log.info("%s: SD checkpoint of kind %s; configs from %s", path.name, kind, repo)
    return hub_snapshot(repo, CONFIG_PATTERNS, allow_download=allow_download)


def load_tiny_vae(folder_or_id: str | os.PathLike, *, device: torch.device, dtype: torch.dtype):
    """TAESD (``AutoencoderTiny``) from a folder or the HF cache, for fast previews; None if absent."""
    from diffusers import AutoencoderTiny

    try:
        src = (
            folder_or_id
            if Path(folder_or_id).is_dir()
            else hub_snapshot(str(folder_or_id), ["config.json", "*.safetensors"], allow_download=False)
        )
        return AutoencoderTiny.from_pretrained(src, torch_dtype=dtype, **LOCAL).to(device=device).eval()
    except (ModelLoadError, OSError, ValueError) as e:
        log.info("no tiny decoder for previews (%s)", e)
        return None
