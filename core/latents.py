"""Latent files (.npz, no pickle): the latent in its space plus the ws it renders, and provenance."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import JobError
from core.gan.base import LatentSpace

FORMAT = "latent-canvas-latent/1"


@dataclass(frozen=True)
class LatentFile:
    space: LatentSpace
    latent: np.ndarray  # in `space`'s shape, with a leading sample dim
    ws: np.ndarray  # [N, num_ws, w_dim]
    meta: dict


def save_latent(
    path: str | os.PathLike, space: LatentSpace, latent: np.ndarray, ws: np.ndarray, meta=None
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = json.dumps({"format": FORMAT, "space": LatentSpace(space).value, **(meta or {})}, default=str)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, latent=latent.astype(np.float32), ws=ws.astype(np.float32), header=np.array(header))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_latent(path: str | os.PathLike) -> LatentFile:
    """Raises JobError for anything that is not a latent file of ours (pickles are never loaded)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            latent, ws = z["latent"], z["ws"]
    except (OSError, KeyError, ValueError) as e:
        raise JobError(f"{path.name} is not a readable latent file: {e}") from e
    if header.get("format") != FORMAT:
        raise JobError(f"{path.name} is not a Latent Canvas latent file")
    return LatentFile(LatentSpace(header["space"]), latent, ws, header)
