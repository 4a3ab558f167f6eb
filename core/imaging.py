"""Image arrays and tensors, shared by every job: uint8 images and masks to model tensors and back,
Gaussian blur and the inpainting paste-back."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import JobError


def gaussian_blur(x: torch.Tensor, sigma: float, *, padding: str = "replicate") -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W], each channel on its own (radius 3 sigma). ``padding``:
    "replicate" (masks: the edge value carries on) or "reflect"; clipped to the image size."""
    radius = max(1, math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    k = (k / k.sum()).to(x.device)
    c = x.shape[1]
    pad_h, pad_w = min(radius, x.shape[-2] - 1), min(radius, x.shape[-1] - 1)
    x = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode=padding)
    x = F.conv2d(x, k[radius - pad_w : radius + pad_w + 1].view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k[radius - pad_h : radius + pad_h + 1].view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def paste_back(generated: torch.Tensor, target: torch.Tensor, keep: torch.Tensor, feather: float = 1.5):
    """Inpainting's result: ``target`` where ``keep`` is 1, ``generated`` in the hole, blended over a
    feathered band that lies inside the hole, so the kept pixels stay exactly as they were.

    ``generated`` [N, 3, H, W], ``target`` [1 or N, 3, H, W], ``keep`` [1 or N, 1, H, W] in [0, 1].
    """
    alpha = keep if feather <= 0 else torch.maximum(keep, gaussian_blur(keep, feather))
    return generated + (target - generated) * alpha


def image_to_tensor(image: np.ndarray, resolution: int, device) -> torch.Tensor:
    """[H, W, 3] (or [N, H, W, 3]) uint8 -> [1 or N, 3, R, R] float in [-1, 1] (area-resampled to the
    model resolution)."""
    if image.ndim not in (3, 4) or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise JobError(f"target must be an [H, W, 3] uint8 RGB array, got {image.dtype} {image.shape}")
    batch = image if image.ndim == 4 else image[None]
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return _resize(x, resolution).to(device)


def mask_to_tensor(mask: np.ndarray | None, resolution: int, device) -> torch.Tensor | None:
    if mask is None:
        return None
    if mask.ndim not in (2, 3):
        raise JobError(f"mask must be [H, W], got shape {mask.shape}")
    batch = mask if mask.ndim == 3 else mask[None]
    m = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).clamp(0, 1)[:, None]
    m = _resize(m, resolution)  # [1 or N, 1, R, R]
    if float(m.flatten(1).amax(1).min()) <= 0:
        raise JobError("the mask is empty: paint where the image should match")
    return m.to(device)


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-2:] == (resolution, resolution):
        return x
    return F.interpolate(
        x, size=(resolution, resolution), mode="area" if x.shape[-1] > resolution else "bilinear"
    )


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] floats in [-1, 1] -> [N, H, W, 3] uint8."""
    x = (images.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
