"""W statistics of a generator: mean, std and k-means centres of its mapping samples, the file that
holds them (``<generator>.wstats.safetensors``, written at export) and the k-means that makes them.
The mean and cluster priors read them; so does the inversion's start picker."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file

from core.errors import ModelLoadError
from core.models.safe_load import read_safetensors, sha256_file

if TYPE_CHECKING:
    from core.gan.base import Generator

WSTATS_FORMAT = "latent-canvas-wstats/1"


# --- reading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WStats:
    mean: torch.Tensor  # [w_dim]
    std: torch.Tensor  # [w_dim]
    centres: torch.Tensor  # [k, w_dim] k-means centres, most populated first
    counts: torch.Tensor  # [k] members per centre


def wstats_path_for(generator_path: str | Path) -> Path:
    """``<stem>.wstats.safetensors`` beside a generator file."""
    p = Path(generator_path)
    return p.with_name(p.name.removesuffix(p.suffix) + ".wstats.safetensors")


def load_wstats(path: str | Path) -> WStats:
    """Read a W statistics file written by the StyleGAN2 export.

    Raises:
        ModelLoadError: missing, unreadable or not a W statistics file.
    """
    path = Path(path)
    meta, t = read_safetensors(path, what="W statistics")
    if meta.get("format") != WSTATS_FORMAT or not {"mean", "std", "centres", "counts"} <= set(t):
        raise ModelLoadError(f"{path.name} is not a W statistics file (format {meta.get('format')!r})")
    return WStats(t["mean"].float(), t["std"].float(), t["centres"].float(), t["counts"])


@torch.no_grad()
def wstats_from_generator(G, *, n: int = 10_000, k: int = 16, seed: int = 0) -> WStats:
    """W statistics computed on the spot, for generators shipped without a statistics file."""
    ws = G.sample_w(n, seed=seed).float().cpu()  # [n, w_dim]
    centres, labels, _ = kmeans(ws, k, seed=seed)
    counts = torch.bincount(labels, minlength=k)
    order = counts.argsort(descending=True, stable=True)
    return WStats(ws.mean(0), ws.std(0), centres[order], counts[order])


@torch.no_grad()
def sstats_from_generator(G, *, n: int = 10_000, k: int = 16, seed: int = 0, batch: int = 1000) -> WStats:
    """The same statistics in Style space (``G.styles`` of ``n`` mapping samples; [s_dim] rows), for
    the mean and cluster priors of Style-space projection and the S diffusion prior's normalisation."""
    from core.gan.latents import sample_styles

    ss = sample_styles(G, n, seed=seed, batch=batch).float().cpu()  # [n, s_dim]
    centres, labels, _ = kmeans(ss, k, seed=seed)
    counts = torch.bincount(labels, minlength=k)
    order = counts.argsort(descending=True, stable=True)
    return WStats(ss.mean(0), ss.std(0), centres[order], counts[order])


@torch.no_grad()
def write_w_stats(G: Generator, path: Path, *, n: int, k: int, iters: int, seed: int) -> dict:
    """Mean, std and k-means centres of ``n`` mapping samples, as safetensors.

    Tensors: ``mean`` [w_dim], ``std`` [w_dim], ``centres`` [k, w_dim], ``counts`` [k] (members per
    centre, largest first). Returns the facts that also go into the sidecar.
    """
    ws = G.sample_w(n, seed=seed).float().cpu()  # [n, w_dim]
    centres, labels, inertia = kmeans(ws, k, seed=seed, iters=iters)
    counts = torch.bincount(labels, minlength=k)
    order = counts.argsort(descending=True, stable=True)
    tensors = {"mean": ws.mean(0), "std": ws.std(0), "centres": centres[order], "counts": counts[order]}
    meta = {"format": WSTATS_FORMAT, "n_samples": str(n), "k": str(k), "seed": str(seed)}
    meta["inertia"] = f"{inertia:.6g}"
    tmp = path.with_name(path.name + ".tmp")
    save_file({name: t.contiguous() for name, t in tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)
    path.chmod(0o644)
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "n_samples": n,
        "k": k,
        "seed": seed,
        "inertia": inertia,
    }


# --- k-means ------------------------------------------------------------------------------------


def kmeans(
    x: torch.Tensor, k: int, *, seed: int = 0, iters: int = 50, tol: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """k-means++ seeding then Lloyd iterations on ``x`` [N, D].

    Returns ``(centres [k, D], labels [N], inertia)``; inertia is the sum of squared distances of the
    points to their centres. Deterministic for a given ``seed``.
    """
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be in 1..{x.shape[0]}, got {k}")
    x = x.float()
    centres = kmeans_plus_plus(x, k, gen=torch.Generator().manual_seed(seed))
    prev = math.inf
    for _ in range(iters):
        d2, labels = _nearest(x, centres)
        inertia = float(d2.sum())
        centres = _update_centres(x, labels, centres)
        if prev - inertia <= tol * max(prev, 1e-12) and math.isfinite(prev):
            break
        prev = inertia
    d2, labels = _nearest(x, centres)
    return centres, labels, float(d2.sum())


def kmeans_plus_plus(x: torch.Tensor, k: int, *, gen: torch.Generator) -> torch.Tensor:
    """Arthur & Vassilvitskii (2007): each next centre drawn with probability ~ D(x)^2."""
    first = int(torch.randint(x.shape[0], (1,), generator=gen))
    centres = [x[first]]
    d2 = (x - x[first]).square().sum(1)
    for _ in range(1, k):
        probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1 / d2.numel())
        nxt = int(torch.multinomial(probs, 1, generator=gen))
        centres.append(x[nxt])
        d2 = torch.minimum(d2, (x - x[nxt]).square().sum(1))
    return torch.stack(centres)


def _nearest(x: torch.Tensor, centres: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance to, and index of, the nearest centre for each row of ``x``."""
    d2s, labels = [], []
    c2 = centres.square().sum(1)
    for part in x.split(chunk):
        d = part.square().sum(1, keepdim=True) - 2 * part @ centres.T + c2  # [n, k]
        m, i = d.clamp_min(0).min(1)
        d2s.append(m)
        labels.append(i)
    return torch.cat(d2s), torch.cat(labels)


def _update_centres(x: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    k = centres.shape[0]
    sums = torch.zeros_like(centres).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=k).to(x.dtype)
    # An empty cluster keeps its old centre rather than becoming NaN.
    return torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
