"""Latents: where a job starts (the mean w or seeded mapping samples), any latent as the ws synthesis
consumes, and latent files (.npz, no pickle: the latent in its space, the ws it renders, provenance)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.errors import JobError
from core.gan.base import Generator, LatentSpace

FORMAT = "latent-canvas-latent/1"


def use_class(G: Generator, label: int | None) -> None:
    """Set the class a conditional generator's mapping uses for this job (a JobError if it has none
    or the label is out of range)."""
    try:
        G.set_class(label)
    except ValueError as e:
        raise JobError(str(e)) from e


def truncate(G: Generator, w: torch.Tensor, psi: float) -> torch.Tensor:
    """The truncation trick (Karras et al. 2019): ``mean_w + psi (w - mean_w)``. psi = 1 leaves ``w``
    as it is; smaller psi trades variety for typical, cleaner images."""
    if psi == 1:
        return w
    mean = G.mean_w().to(w)
    return mean.lerp(w, psi)


def start_w(G: Generator, mean: bool, n: int, seed: int, device, *, truncation: float = 1.0) -> torch.Tensor:
    """[n, w_dim] starting ws: the mean w ``n`` times, or the mapping of ``n`` seeded z draws,
    truncated towards the mean w by ``truncation`` (psi)."""
    if mean:
        return G.mean_w().to(device).expand(n, -1).clone()
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad():
        return truncate(G, G.mapping(z), truncation)


def require_space(G: Generator, space: LatentSpace) -> None:
    if LatentSpace(space) not in G.latent_spaces:
        have = [s.value for s in G.latent_spaces]
        raise JobError(f"this generator has no {LatentSpace(space).value} space (it has {have})")


def latent_shape(G: Generator, space: LatentSpace) -> tuple[int, ...]:
    """One latent's shape in ``space`` (no sample dim)."""
    require_space(G, space)
    if space is LatentSpace.S:
        return (G.s_dim,)
    shapes = {LatentSpace.Z: (G.z_dim,), LatentSpace.W: (G.w_dim,), LatentSpace.W_PLUS: (G.num_ws, G.w_dim)}
    return shapes[space]


def check_latent_shape(G: Generator, space: LatentSpace, lat: torch.Tensor) -> torch.Tensor:
    want = latent_shape(G, space)
    if lat.ndim == len(want):
        lat = lat[None]
    if tuple(lat.shape[1:]) != want:
        raise JobError(
            f"a {space.value} latent must be [N, {', '.join(map(str, want))}], got {list(lat.shape)}"
        )
    return lat


def latent_to_ws(G: Generator, space: LatentSpace, latent: torch.Tensor) -> torch.Tensor:
    """A z, w or w+ latent -> ws [N, num_ws, w_dim] (a Style-space latent has none: see :func:`render`)."""
    if space is LatentSpace.Z:
        return G.broadcast(G.mapping(latent))
    if space is LatentSpace.W:
        return G.broadcast(latent)
    if space is LatentSpace.S:
        raise JobError("a Style-space (s) latent has no ws: it is below the affine layers")
    return latent


def ws_to_latent(G: Generator, space: LatentSpace, ws: torch.Tensor) -> torch.Tensor:
    """ws [N, num_ws, w_dim] as a latent of ``space`` (w: the mean of the rows; z is not reachable)."""
    if space is LatentSpace.S:
        return G.styles(ws)
    if space is LatentSpace.W:
        return ws.mean(1)
    if space is LatentSpace.W_PLUS:
        return ws
    raise JobError("z cannot be computed from ws (the mapping network is not inverted)")


def render(
    G: Generator, space: LatentSpace, latent: torch.Tensor, ws: torch.Tensor | None = None
) -> torch.Tensor:
    """Images [N, 3, R, R] of any latent: Style space through the affine-free synthesis, the others
    through their ws (``ws``: the latent's, when the caller has them from :func:`result_ws` already, so
    a z is mapped once)."""
    if space is LatentSpace.S:
        return G.synthesis_styles(latent)
    return G.synthesis(latent_to_ws(G, space, latent) if ws is None else ws)


@torch.no_grad()
def sample_styles(G: Generator, n: int, *, seed: int = 0, batch: int = 1000) -> torch.Tensor:
    """The Style-space latents [n, s_dim] of ``n`` seeded mapping samples (:meth:`Generator.sample_w`)."""
    w = G.sample_w(n, seed=seed)
    return torch.cat([G.styles(G.broadcast(part)) for part in w.split(batch)])


def result_ws(G: Generator, space: LatentSpace, latent: torch.Tensor) -> torch.Tensor | None:
    """The ws a result reports: None for Style space."""
    return None if space is LatentSpace.S else latent_to_ws(G, space, latent)


# --- files ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatentFile:
    space: LatentSpace
    latent: np.ndarray  # in `space`'s shape, with a leading sample dim
    ws: np.ndarray | None  # [N, num_ws, w_dim]; None for Style-space latents
    meta: dict


def save_latent(
    path: str | os.PathLike, space: LatentSpace, latent: np.ndarray, ws: np.ndarray | None, meta=None
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = json.dumps({"format": FORMAT, "space": LatentSpace(space).value, **(meta or {})}, default=str)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    try:
        arrays = {"latent": latent.astype(np.float32), "header": np.array(header)}
        if ws is not None:
            arrays["ws"] = ws.astype(np.float32)
        np.savez(tmp, **arrays)
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
            latent, ws = z["latent"], (z["ws"] if "ws" in z else None)
    except (OSError, KeyError, ValueError) as e:
        raise JobError(f"{path.name} is not a readable latent file: {e}") from e
    if header.get("format") != FORMAT:
        raise JobError(f"{path.name} is not a Latent Canvas latent file")
    return LatentFile(LatentSpace(header["space"]), latent, ws, header)
