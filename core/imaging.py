"""Image-tensor helpers shared by the jobs: Gaussian blur and the inpainting paste-back."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] with replicate padding (radius 3 sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    k = (k / k.sum()).to(x.device)
    pad_h, pad_w = min(radius, x.shape[-2] - 1), min(radius, x.shape[-1] - 1)
    x = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="replicate")
    x = F.conv2d(x, k[radius - pad_w : radius + pad_w + 1].view(1, 1, 1, -1))
    return F.conv2d(x, k[radius - pad_h : radius + pad_h + 1].view(1, 1, -1, 1))


def paste_back(generated: torch.Tensor, target: torch.Tensor, keep: torch.Tensor, feather: float = 1.5):
    """Inpainting's result: ``target`` where ``keep`` is 1, ``generated`` in the hole, blended over a
    feathered band that lies inside the hole, so the kept pixels stay exactly as they were.

    ``generated`` [N, 3, H, W], ``target`` [1 or N, 3, H, W], ``keep`` [1 or N, 1, H, W] in [0, 1].
    """
    alpha = keep if feather <= 0 else torch.maximum(keep, gaussian_blur(keep, feather))
    return generated + (target - generated) * alpha
