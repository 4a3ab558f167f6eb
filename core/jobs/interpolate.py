"""Latent interpolation: lerp in w / w+, slerp in z (where samples live on a sphere-like shell)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from core.gan.base import Generator, LatentSpace
from core.gan.latents import render
from core.imaging import to_uint8


def lerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation along the last dim; norms are interpolated linearly.

    Falls back to lerp where a and b are (anti)parallel, where the arc is undefined.
    """
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(eps), b / nb.clamp_min(eps)
    omega = (ua * ub).sum(-1, keepdim=True).clamp(-1, 1).acos()
    so = omega.sin()
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / so.clamp_min(eps)
    out = direction * lerp(na, nb, t)
    return torch.where(so > 1e-4, out, lerp(a, b, t))


def ends_in_space(G: Generator, latents: Sequence[np.ndarray], spaces: Sequence[str], space: str) -> list:
    """Key frames of possibly different spaces (each "w+" ws [num_ws, w_dim] or "s" styles [s_dim]) in
    the path's ``space``: with a Style-space end the path runs in Style space, the w+ ends turned into
    their styles (the same images: synthesis of w+ is synthesis of its styles)."""
    space, out = LatentSpace(space), []
    for lat, own in zip(latents, spaces, strict=True):
        own = LatentSpace(own)
        if own is space:
            out.append(np.asarray(lat, np.float32))
        elif own is LatentSpace.W_PLUS and space is LatentSpace.S:
            with torch.no_grad():
                ws = torch.as_tensor(np.asarray(lat, np.float32)).to(G.device_of())[None]
                out.append(G.styles(ws)[0].cpu().numpy())
        else:
            raise ValueError(f"a {own.value} key frame cannot join a path in {space.value}")
    return out


def interpolate_latent(a: torch.Tensor, b: torch.Tensor, t: float, space: LatentSpace) -> torch.Tensor:
    """The latent at ``t`` in [0, 1] between ``a`` (t=0) and ``b`` (t=1), in ``space``'s shape."""
    return slerp(a, b, t) if LatentSpace(space) is LatentSpace.Z else lerp(a, b, t)


def path_latents(latents: Sequence[torch.Tensor], frames: int, space: LatentSpace) -> torch.Tensor:
    """``frames`` latents evenly spaced along the piecewise path through ``latents`` (ends included)."""
    if len(latents) < 2 or frames < 2:
        raise ValueError("a path needs at least two latents and two frames")
    segs = len(latents) - 1
    out = []
    for u in np.linspace(0.0, float(segs), frames):
        i = min(int(u), segs - 1)
        out.append(interpolate_latent(latents[i], latents[i + 1], float(u - i), space))
    return torch.stack(out)


class Interpolator:
    """Renders the image at a slider position between latents; generator forward only.

    ``latents`` are single latents in ``space``'s shape (z [z_dim], w [w_dim], w+ [num_ws, w_dim]).
    """

    def __init__(self, G: Generator, latents: Sequence[np.ndarray | torch.Tensor], space: LatentSpace):
        self.G, self.space = G, LatentSpace(space)
        dev = G.device_of()
        self.latents = [torch.as_tensor(np.asarray(x, dtype=np.float32)).to(dev).squeeze(0) for x in latents]

    def _render(self, lat: torch.Tensor) -> torch.Tensor:
        lat = lat[None] if lat.ndim == (2 if self.space is LatentSpace.W_PLUS else 1) else lat
        return render(self.G, self.space, lat)

    @torch.inference_mode()
    def image_at(self, t: float) -> np.ndarray:
        """[H, W, 3] uint8 at ``t`` in [0, 1] along the path (t=0 first latent, t=1 last)."""
        segs = len(self.latents) - 1
        u = min(max(float(t), 0.0), 1.0) * segs
        i = min(int(u), segs - 1)
        lat = interpolate_latent(self.latents[i], self.latents[i + 1], u - i, self.space)
        return to_uint8(self._render(lat))[0]

    @torch.inference_mode()
    def frames(self, n: int, batch: int = 8) -> np.ndarray:
        """[n, H, W, 3] uint8 along the whole path."""
        lats = path_latents(self.latents, n, self.space)
        return np.concatenate([to_uint8(self._render(c)) for c in lats.split(batch)])
