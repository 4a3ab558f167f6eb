"""DCGAN (Radford et al. 2016): the seed's "vanilla GAN", with only a z latent space."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from core.gan.base import Generator, LatentSpace


@dataclass(frozen=True)
class DCGANConfig:
    z_dim: int = 128  # input latent size
    img_resolution: int = 64  # output resolution, a power of two >= 8
    img_channels: int = 3
    base_channels: int = 64  # channels of the last (full-resolution) feature map; doubles per step down


class DCGANGenerator(Generator):
    """z -> 4x4 by a transposed conv, then (ConvTranspose, BatchNorm, ReLU) up to the resolution, tanh."""

    latent_spaces = (LatentSpace.Z,)

    def __init__(self, cfg: DCGANConfig | None = None, **overrides):
        super().__init__()
        cfg = cfg or DCGANConfig(**overrides)
        if cfg.img_resolution < 8 or cfg.img_resolution & (cfg.img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 8, got {cfg.img_resolution}")
        self.cfg = cfg
        self.z_dim = self.w_dim = cfg.z_dim
        self.num_ws, self.resolution = 1, cfg.img_resolution
        n_up = int(np.log2(cfg.img_resolution)) - 3  # 4 -> res/2 by stride-2 layers, then the last one
        ch = cfg.base_channels * 2**n_up
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cfg.z_dim, ch, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        for _ in range(n_up):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, cfg.img_channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def mapping(self, z):
        return z  # no intermediate latent: w is z

    def synthesis(self, ws):
        return self.net(ws[:, 0, :, None, None])

    def config_dict(self) -> dict:
        return {"arch": "dcgan", **asdict(self.cfg)}

    @classmethod
    def from_config(cls, d: dict) -> DCGANGenerator:
        return cls(DCGANConfig(**{k: v for k, v in d.items() if k != "arch"}))

    @torch.no_grad()
    def mean_w(self, *, n=None, seed=0):
        return torch.zeros(self.z_dim, device=self.device_of())  # the prior's mean in z
