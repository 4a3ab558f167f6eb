"""Task losses of projection: a per-sample loss [N] of generated images [N, 3, H, W] in [-1, 1]."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from core.errors import JobError
from core.imaging import image_to_tensor, mask_to_tensor
from core.jobs.params import ProjectionParams
from core.losses import masked_l1

log = logging.getLogger(__name__)

TaskLoss = Callable[[torch.Tensor], torch.Tensor]


def clip_task(clip, prompt: str) -> TaskLoss:
    """Cosine distance ``1 - <E_img(x), E_txt(prompt)>`` in [0, 2] (seed: "CLIP embedding task")."""
    with torch.no_grad():
        text = clip.encode_text([prompt])  # [1, D], unit length

    def loss(images: torch.Tensor) -> torch.Tensor:
        return 1 - (clip.encode_image(images) * text).sum(1)

    return loss


def image_task(
    target: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    perceptual_loss,
    perceptual_weight: float,
    l1_weight: float,
) -> TaskLoss:
    """``perceptual_weight * masked LPIPS + l1_weight * masked L1`` against ``target`` [1, 3, R, R]."""
    feats = None
    if perceptual_loss is not None and perceptual_weight > 0:
        with torch.no_grad():
            feats = perceptual_loss.prepare(target)

    def loss(images: torch.Tensor) -> torch.Tensor:
        total = l1_weight * masked_l1(images, target, mask) if l1_weight > 0 else 0.0
        if feats is not None:
            total = total + perceptual_weight * perceptual_loss(images, feats, mask)
        return total

    return loss


def make_task(p: ProjectionParams, resolution: int, device, *, clip=None, perceptual_loss=None) -> TaskLoss:
    """The loss of ``p.task`` for a generator of ``resolution``.

    Without a perceptual network the image tasks fall back to masked L1 (logged), so they still run
    where no LPIPS weights exist.
    """
    if p.task == "clip":
        if clip is None:
            raise JobError("the CLIP task needs a CLIP model")
        return clip_task(clip, p.prompt)
    target = image_to_tensor(p.target, resolution, device)  # [1, 3, R, R]
    mask = None if p.task == "similarity" else mask_to_tensor(p.mask, resolution, device)
    l1_weight = p.l1_weight if p.task == "scribble" else 0.0
    if perceptual_loss is None and p.perceptual_weight > 0:
        log.warning("no perceptual network: the %s task uses masked L1 instead of LPIPS", p.task)
        l1_weight = max(l1_weight, p.perceptual_weight)
    return image_task(
        target,
        mask,
        perceptual_loss=perceptual_loss,
        perceptual_weight=p.perceptual_weight,
        l1_weight=l1_weight,
    )
