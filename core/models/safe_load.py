"""Opening model files without running their code: safetensors files (:func:`read_safetensors`) and
torch checkpoints (``.pt`` / ``.pth`` / ``.ckpt`` / ``.bin``).

``torch.load`` unpickles: a checkpoint from the internet can carry an object whose ``__reduce__`` runs
any command. With ``weights_only=True`` (torch >= 2.6, checked at start-up by :mod:`core.compat`) the
unpickler rebuilds only tensors, numbers, strings and plain containers and refuses everything else.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

from core.errors import ModelLoadError

log = logging.getLogger(__name__)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (model cards and downloads record it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def refusal_reason(e: BaseException) -> str:
    """What ``torch.load(weights_only=True)`` refused, without torch's advice to retry with
    ``weights_only=False`` (which would run the file's code): the line naming the blocked global or
    opcode, else a plain description."""
    for line in str(e).splitlines():
        if "GLOBAL" in line or "Unsupported operand" in line or "unsupported" in line.lower():
            if "weights_only" not in line:
                return line.strip()[:200]
    return "it holds Python objects other than tensors and plain containers"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def read_safetensors(path: str | os.PathLike, *, what: str = "model file") -> tuple[dict[str, str], dict]:
    """``(metadata, tensors)`` of a safetensors file: the header's strings, and every tensor (torch).

    The one checked read behind our generator, W-prior and W-statistics loaders; each then checks its
    own ``format`` and config. safetensors parses a header and copies bytes, nothing more.

    Raises:
        ModelLoadError: ``"<what> not found: <path>"``, or not a readable safetensors file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from core.types import safetensors_metadata

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{what} not found: {path}")
    try:
        return safetensors_metadata(path), load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{path.name} is not a readable safetensors file: {e}") from e


def load_torch_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> Any:
    """What a torch checkpoint holds, loaded with ``torch.load(weights_only=True)``.

    Args:
        path: the checkpoint file.
        map_location: where tensors go (``torch.load``'s argument); CPU by default.

    Raises:
        ModelLoadError: naming the file: missing, truncated or corrupt, or refused because it holds
            Python objects other than tensors and plain containers (unpickling those can run code).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        log.warning("refused %s: %s", path, refusal_reason(e))
        raise ModelLoadError(
            f"refused to load {path.name}: it holds pickled Python objects other than weights, which "
            f"could run code when opened ({refusal_reason(e)}). It was not loaded. Use a .safetensors "
            "release of this model."
        ) from e
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise ModelLoadError(f"{path.name} is not a readable torch checkpoint: {_first_line(e)}") from e


def save_model_file(model, path: str | os.PathLike, *, format: str, metadata: dict | None = None) -> Path:
    """Write a config'd module (``model.cfg``, a dataclass) as one ``.safetensors``: its state dict,
    and in the header ``format``, the JSON config and each ``metadata`` value JSON-encoded. Atomic: a
    temporary name replaced at the end, never a half-written model under the real name. The W prior
    and the encoder files are written this way."""
    import json
    from dataclasses import asdict

    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": format, "config": json.dumps(asdict(model.cfg))}
    meta.update({k: json.dumps(v, default=str) for k, v in (metadata or {}).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path
