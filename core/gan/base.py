"""The generator interface every GAN in Latent Canvas implements."""

from __future__ import annotations

import torch
from torch import nn

from core.types import LatentSpace

__all__ = ["Generator", "LatentSpace"]


class Generator(nn.Module):
    """A GAN generator split into mapping and synthesis.

    Subclasses set ``z_dim``, ``w_dim``, ``num_ws``, ``resolution`` and ``latent_spaces`` and
    implement :meth:`mapping` and :meth:`synthesis`. Images are ``[N, 3, H, W]`` floats in [-1, 1].
    """

    z_dim: int
    w_dim: int
    num_ws: int
    resolution: int
    latent_spaces: tuple[LatentSpace, ...] = (LatentSpace.Z, LatentSpace.W, LatentSpace.W_PLUS)
    mean_w_samples = 10_000
    c_dim = 0  # class labels of a conditional generator (0: unconditional)

    def __init__(self) -> None:
        super().__init__()
        self._mean_w: torch.Tensor | None = None

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """Map ``z`` [N, z_dim] to ``w`` [N, w_dim]."""
        raise NotImplementedError

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """Render ``ws`` [N, num_ws, w_dim] to images [N, 3, H, W] in [-1, 1]."""
        raise NotImplementedError

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.broadcast(self.mapping(z)))

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """[N, w_dim] -> [N, num_ws, w_dim]."""
        return w.unsqueeze(1).expand(-1, self.num_ws, -1)

    @torch.no_grad()
    def mean_w(self, *, n: int | None = None, seed: int = 0) -> torch.Tensor:
        """Mean of ``mapping(z)`` over ``n`` (default 10k) seeded samples, cached. Returns [w_dim]."""
        if self._mean_w is None or n is not None:
            self._mean_w = self.sample_w(n or self.mean_w_samples, seed=seed).mean(0)
        return self._mean_w

    def set_mean_w(self, mean_w: torch.Tensor) -> None:
        """Install a precomputed mean (shipped W statistics, or ``w_avg`` of a pickle)."""
        self._mean_w = mean_w.detach().to(self.device_of())

    @torch.no_grad()
    def sample_w(self, n: int, *, seed: int = 0, batch: int = 4096) -> torch.Tensor:
        """``n`` mapping samples [n, w_dim] from a seeded ``torch.Generator``."""
        gen = torch.Generator().manual_seed(seed)
        chunks = []
        for start in range(0, n, batch):
            z = torch.randn(min(batch, n - start), self.z_dim, generator=gen)
            chunks.append(self.mapping(z.to(self.device_of())))
        return torch.cat(chunks)

    def set_class(self, label: int | None) -> None:
        """The class later mappings draw from; an unconditional generator has only "no class"."""
        if label not in (None, 0):
            raise ValueError("this generator is unconditional: it has no class labels")

    def device_of(self) -> torch.device:
        return next(self.parameters()).device

    def config_dict(self) -> dict:
        """JSON-serialisable constructor arguments (see :mod:`core.models.io`)."""
        raise NotImplementedError
