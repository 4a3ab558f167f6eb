"""CLIP models through open_clip: the bundled tiny CLIP, or a real one from the user's local cache.

The bundled model ``lc-tiny-clip`` is an open_clip architecture like any other: its config is a
plain open_clip model config (``resources/models/open_clip/lc-tiny-clip.json``) registered with
``open_clip.add_model_config``, built by ``open_clip.create_model`` and given its ``.safetensors``
weights through open_clip's own checkpoint loader (strict). The tokenizer is open_clip's. So one code
path serves it and a ViT-B-32 on a machine that has one.

Nothing here downloads, except :func:`load_clip` with ``download=True`` (a user asking for it).

    clip = load_clip()                                   # bundled, offline, ~0.1 s
    img = clip.encode_image(x)                           # x [N, 3, H, W] in [-1, 1] -> [N, D], unit
    txt = clip.encode_text(["an orange tabby cat"])      # -> [1, D], unit
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ModelLoadError
from core.paths import bundled_model

log = logging.getLogger(__name__)

BUNDLED_CLIP = "lc-tiny-clip"
FORMAT = "latent-canvas-clip/1"
_OPENCLIP_CONFIG_DIR = "open_clip"  # under resources/models: pure open_clip model configs
_registered: set[str] = set()  # config paths already handed to open_clip.add_model_config


def bundled_clip_paths(name: str = BUNDLED_CLIP) -> tuple[Path, Path]:
    """``(open_clip config json, weights .safetensors)`` of a bundled CLIP."""
    config = bundled_model(_OPENCLIP_CONFIG_DIR) / f"{name}.json"
    return config, bundled_model(f"{name}.safetensors")


def register_config(path: str | Path) -> str:
    """Register an open_clip model config file (its stem becomes the model name); returns the name."""
    import open_clip

    path = Path(path).resolve()
    if str(path) not in _registered:
        open_clip.add_model_config(path)
        _registered.add(str(path))
    return path.stem


# --- the module ---------------------------------------------------------------------------------


class ClipModel(nn.Module):
    """An open_clip model behind a [-1, 1] image interface, with its tokenizer.

    Args:
        model: an open_clip ``CLIP`` (from ``open_clip.create_model``).
        tokenizer: its open_clip tokenizer (``open_clip.get_tokenizer(name)``).
        name: the open_clip model name, for messages and model cards.

    Attributes:
        image_size: side of the square the image tower sees (inputs are resized to it).
        embed_dim: size D of the joint embedding.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, name: str):
        super().__init__()
        self.model, self.tokenizer, self.name = model, tokenizer, name
        pre = getattr(model.visual, "preprocess_cfg", {})
        size = pre.get("size", model.visual.image_size)
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        self.resize_mode = pre.get("resize_mode", "shortest")
        self.embed_dim = int(model.text_projection.shape[1])
        self.register_buffer("mean", torch.tensor(pre.get("mean", (0.5, 0.5, 0.5))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.get("std", (0.5, 0.5, 0.5))).view(1, 3, 1, 1))

    def preprocess(self, x: torch.Tensor, *, resize: bool = True) -> torch.Tensor:
        """[-1, 1] images -> the tower's normalised input; differentiable.

        Resizing follows the model's ``resize_mode``: "squash" stretches to a square, otherwise the
        shorter side is resized to ``image_size`` and the centre cropped (open_clip's default).
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W] in [-1, 1], got {list(x.shape)}")
        if resize:
            x = self._resize(x)
        return ((x + 1) / 2 - self.mean) / self.std

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        h, w, s = x.shape[-2], x.shape[-1], self.image_size
        if (h, w) == (s, s):
            return x
        if self.resize_mode == "squash" or h == w:
            return F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        k = s / min(h, w)
        nh, nw = max(s, round(h * k)), max(s, round(w * k))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - s) // 2, (nw - s) // 2
        return x[..., top : top + s, left : left + s]

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-length image embeddings [N, D] of ``x`` [N, 3, H, W] in [-1, 1], any H, W."""
        return F.normalize(self.model.encode_image(self.preprocess(x)), dim=-1)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings, not one string")
        return self.tokenizer(list(texts)).to(self.mean.device)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length text embeddings [N, D] of ``texts`` (open_clip's tokenizer; long texts truncate)."""
        return F.normalize(self.model.encode_text(self.tokenize(texts)), dim=-1)

    def feature_maps(self, x: torch.Tensor, *, visual: nn.Module | None = None) -> list[torch.Tensor]:
        """Intermediate maps of a ModifiedResNet image tower at ``x``'s own resolution (no resize).

        Five maps, fine to coarse: stem conv1 (1/2), stem output (1/4), layer1 (1/4), layer2 (1/8),
        layer3 (1/16). The perceptual loss "bundled" compares these. ``visual``: the same tower in
        another form (:func:`fold_batchnorm`'s copy), instead of the model's own.
        """
        v = self.model.visual if visual is None else visual
        if not hasattr(v, "layer3"):
            raise ValueError(f"{self.name}: feature maps need a ModifiedResNet image tower")
        h = v.act1(v.bn1(v.conv1(self.preprocess(x, resize=False))))
        maps = [h]
        h = v.avgpool(v.act3(v.bn3(v.conv3(v.act2(v.bn2(v.conv2(h)))))))
        maps.append(h)
        for layer in (v.layer1, v.layer2, v.layer3):
            h = layer(h)
            maps.append(h)
        return maps

    def config(self) -> dict:
        """The open_clip model config this model was built from."""
        import open_clip

        cfg = open_clip.get_model_config(self.name)
        if cfg is None:
            raise ValueError(f"{self.name} is not a registered open_clip config")
        return cfg


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` (eval mode) with every BatchNorm folded into the conv before it.

    A conv followed by an eval-mode BatchNorm is one affine conv: folding halves the ops of a
    ResNet tower. Pairs are found the way open_clip's ModifiedResNet and Bottleneck name them,
    ``convK`` with ``bnK``, and as consecutive children of a ``Sequential`` (the downsample path).
    The folded BatchNorm becomes an ``Identity``, so the module's forward code runs unchanged.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(module).eval()

    def pairs(m: nn.Module) -> list[tuple[str, str]]:
        kids = m._modules
        if isinstance(m, nn.Sequential):
            names = list(kids)
            return list(zip(names, names[1:], strict=False))
        return [(n, "bn" + n[4:]) for n in kids if n.startswith("conv") and "bn" + n[4:] in kids]

    for m in folded.modules():
        for conv, bn in pairs(m):
            c, b = m._modules[conv], m._modules[bn]
            if type(c) is nn.Conv2d and type(b) is nn.BatchNorm2d and b.track_running_stats:
                m._modules[conv] = fuse_conv_bn_eval(c, b)
                m._modules[bn] = nn.Identity()
    return folded.requires_grad_(False)


# --- building and loading ---------------------------------------------------------------------


def _create(name: str, *, pretrained: str | None = None, device="cpu", **kwargs) -> ClipModel:
    import open_clip

    model = open_clip.create_model(name, pretrained=pretrained, device=device, **kwargs)
    clip = ClipModel(model, open_clip.get_tokenizer(name), name=name)
    return clip.to(device).eval()


def _config_name(config: dict) -> str:
    return "lc-config-" + hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def _register_dict(config: dict, name: str) -> str:
    """Hand ``config`` to open_clip's registry as ``<tmp>/<name>.json``; returns ``name``."""
    text = json.dumps(config, sort_keys=True)
    path = Path(tempfile.gettempdir()) / f"latent-canvas-open-clip-{os.getuid()}" / f"{name}.json"
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return register_config(path)


def build_clip(config: dict, *, seed: int = 0) -> ClipModel:
    """A randomly initialised CLIP (eval mode) from an open_clip model config, via open_clip's registry.

    Args:
        config: an open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...); it is
            registered as ``lc-config-<hash of config>``.
        seed: seeds the initial weights (torch's global RNG is left as it was).
    """
    if not all(k in config for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ValueError("an open_clip config needs embed_dim, vision_cfg and text_cfg")
    name = _register_dict(config, _config_name(config))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _create(name)


def save_clip(
    clip: ClipModel, path: str | Path, *, dtype: torch.dtype | None = None, metadata: dict | None = None
) -> Path:
    """Write ``clip``'s open_clip state dict as safetensors (open_clip's key names), config in metadata.

    Args:
        dtype: store floating tensors in this dtype (e.g. ``torch.float16`` halves the file); they
            load back into float32 parameters.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {}
    for k, v in clip.model.state_dict().items():
        v = v.detach().cpu()
        tensors[k] = (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
    meta = {"format": FORMAT, "open_clip_name": clip.name, "model_cfg": json.dumps(clip.config())}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def _read_metadata(path: Path) -> dict:
    from safetensors import SafetensorError

    from core.types import safetensors_metadata

    try:
        return safetensors_metadata(path)
    except (SafetensorError, OSError) as e:
        raise ModelLoadError(f"{path.name} is not a readable safetensors file: {e}") from e


def _load_weights(name: str, weights: Path, device) -> ClipModel:
    if not weights.is_file():
        raise ModelLoadError(f"CLIP weights not found: {weights}")
    try:
        return _create(name, pretrained=str(weights), device=device)
    except (RuntimeError, KeyError, ValueError, OSError) as e:  # strict load: missing or misshapen keys
        raise ModelLoadError(f"{weights.name} does not fit the open_clip model {name!r}: {e}") from e


def _load_ours(name: str | None, weights: Path | None, device) -> ClipModel:
    """The bundled tiny CLIP, or a file :func:`save_clip` wrote (its metadata carries its config)."""
    name = name or BUNDLED_CLIP
    config_path, default_weights = bundled_clip_paths(name)
    weights = weights or default_weights
    if not weights.is_file():
        raise ModelLoadError(f"CLIP weights not found: {weights}")
    bundled_cfg = json.loads(config_path.read_text()) if config_path.is_file() else None
    meta = _read_metadata(weights) if weights.suffix == ".safetensors" else {}
    if meta.get("format") == FORMAT and json.loads(meta["model_cfg"]) != bundled_cfg:
        # A CLIP we trained with another config: build the architecture its file describes.
        config = json.loads(meta["model_cfg"])
        return _load_weights(_register_dict(config, _config_name(config)), weights, device)
    if bundled_cfg is None:
        raise ModelLoadError(f"the bundled CLIP config is missing ({config_path})")
    return _load_weights(register_config(config_path), weights, device)


def cached_pretrained(arch: str, tag: str | None = None) -> tuple[str, str, dict] | None:
    """``(tag, file, pretrained cfg)`` of open_clip weights for ``arch`` already on this machine.

    Looks in the Hugging Face hub cache and open_clip's URL cache (``~/.cache/clip``); never
    downloads. With ``tag=None`` the first cached tag in open_clip's listing is taken.
    """
    import open_clip

    for t in [tag] if tag else open_clip.list_pretrained_tags_by_model(arch):
        cfg = open_clip.get_pretrained_cfg(arch, t)
        found = _cached_file(cfg) if cfg else None
        if found:
            return t, found, cfg
    return None


def _cached_file(cfg: dict) -> str | None:
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(cfg["hf_hub"])  # "org/repo/" means the default file name
        filename = filename or "open_clip_pytorch_model.bin"
        # open_clip takes a safetensors twin of the file when the repo has one (pretrained.py).
        safe = None
        if filename == "open_clip_pytorch_model.bin":
            safe = "open_clip_model.safetensors"
        elif filename.endswith((".bin", ".pth")):
            safe = filename[:-4] + ".safetensors"
        for candidate in filter(None, (safe, filename)):
            hit = try_to_load_from_cache(repo, candidate)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    if cfg.get("url"):
        path = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        if path.is_file():
            return str(path)
    return None


def _missing_pretrained(name: str, arch: str, tag: str) -> ModelLoadError:
    import open_clip

    tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
    return ModelLoadError(
        f"no weights for open_clip {arch}{':' + tag if tag else ''} on this machine (looked in the "
        f"Hugging Face cache and ~/.cache/clip; known tags: {tags}). Download them once with "
        f"load_clip({name!r}, download=True), or pass weights=PATH. Latent Canvas never downloads "
        f"on its own; the bundled tiny CLIP (name=None) works offline."
    )


def _load_pretrained(name: str, weights: Path | None, device, download: bool) -> ClipModel:
    import open_clip

    arch, _, tag = name.partition(":")
    if arch not in open_clip.list_models():
        raise ModelLoadError(f"unknown CLIP {arch!r}; open_clip knows {', '.join(open_clip.list_models())}")
    if weights is not None:
        return _load_weights(arch, weights, device)
    found = cached_pretrained(arch, tag or None)
    if found is None and not download:
        raise _missing_pretrained(name, arch, tag)
    if found is None:  # the user asked for a download: open_clip fetches the tag itself
        tag = tag or next(iter(open_clip.list_pretrained_tags_by_model(arch)), "")
        source, cfg = tag, open_clip.get_pretrained_cfg(arch, tag) or {}
        log.info("downloading open_clip %s:%s", arch, tag)
    else:
        tag, source, cfg = found
        log.info("open_clip %s:%s from %s", arch, tag, source)
    pre = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
    try:
        model = open_clip.create_model(
            arch,
            pretrained=source,
            device=device,
            force_quick_gelu=bool(cfg.get("quick_gelu", False)),
            force_preprocess_cfg=pre,
        )
    except (RuntimeError, KeyError, ValueError, OSError) as e:
        raise ModelLoadError(f"cannot load open_clip {arch}:{tag} from {source}: {e}") from e
    return ClipModel(model, open_clip.get_tokenizer(arch), name=arch).to(device).eval()


def load_clip(
    name: str | None = None,
    *,
    device: str | torch.device = "cpu",
    weights: str | Path | None = None,
    download: bool = False,
) -> ClipModel:
    """A ready, frozen CLIP (eval mode, parameters without grad; gradients flow to the inputs).

    Args:
        name: None or "lc-tiny-clip" for the bundled tiny CLIP; an open_clip architecture such as
            "ViT-B-32", optionally with a pretrained tag ("ViT-B-32:laion2b_s34b_b79k"), whose weights
            are taken from the user's local Hugging Face / open_clip cache only.
        device: where the module lives.
        weights: a weights file for ``name``'s architecture (safetensors, or a torch checkpoint loaded
            with ``weights_only=True``), instead of the bundled / cached one.
        download: allow open_clip to download a missing pretrained model (never in tests or by default).

    Raises:
        ModelLoadError: weights missing, unreadable or not matching the architecture.
    """
    weights = Path(weights).expanduser() if weights is not None else None
    if name is None or name == BUNDLED_CLIP or (name and bundled_clip_paths(name)[0].is_file()):
        clip = _load_ours(name, weights, device)
    else:
        clip = _load_pretrained(name, weights, device, download)
    return clip.requires_grad_(False)


__all__ = [
    "BUNDLED_CLIP",
    "ClipModel",
    "build_clip",
    "bundled_clip_paths",
    "cached_pretrained",
    "load_clip",
    "register_config",
    "save_clip",
]
