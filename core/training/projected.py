"""A projected discriminator (Sauer et al. 2021, "Projected GANs Converge Faster") on the bundled tiny
CLIP's frozen image tower, used beside StyleGAN2's pixel discriminator.

Why: on 2 CPU cores the plain recipe sees ~10-14 images/s and its FID flattened near 19 after 85 kimg
(docs/training.md). Projected GANs reach a given FID from far fewer images because the discriminator
judges features a pretrained network already computes, instead of learning them from scratch. We have
no ImageNet network offline, but the tiny CLIP (``resources/models/lc-tiny-clip``) was trained on the
procedural cats and their captions, so its maps encode what a cat in this set looks like.

The pieces follow the paper at a smaller size:

- **frozen features**: four maps of the ModifiedResNet tower (stem conv 1/2, layer1 1/4, layer2 1/8,
  layer3 1/16; :meth:`core.clip.ClipModel.feature_maps`), BatchNorms folded; gradients flow to the
  images only. The model card's FID uses the tower's *final* embedding (layer4 + attention pool),
  which this discriminator never sees; the overlap is named in docs/training.md all the same.
- **random projections**: cross-channel mixing (a fixed random 1x1 convolution per map to
  ``channels``) and cross-scale mixing (each map plus its coarser neighbour upsampled, top-down, like
  a feature pyramid without learned convolutions). They are buffers, never trained.
- **one small discriminator per scale**: 4x4 stride-2 convolutions with spectral norm, a
  normalisation and leaky ReLU down to 4x4, then a 4x4 convolution to one logit; hinge loss, as the
  paper. The paper normalises with batch norm; real and fake batches go through separately, so batch
  norm removed exactly the batch-wide difference to be found: group norm (per image) here.
- **DiffAugment** (Zhao et al. 2020) can run on real and fake images before the features, so the
  heads cannot memorise the 20k training images. The paper's default (colour, translation, cutout)
  kept a fresh head from telling the 85 kimg generator's samples from real cats in 60 steps (hinge
  loss 1.8 of 2; 0.47 without augmentation): the training set's flat, saturated backgrounds make
  colour jitter too strong here, and translation alone still left it at 1.6 (the 64 px cats are
  centred and the coarse maps read position). The trainer's default is no augmentation
  (``proj_augment``), like its pixel discriminator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

FeatureFn = Callable[[torch.Tensor], list[torch.Tensor]]
SCALES = (0, 2, 3, 4)  # which of ClipModel.feature_maps' five maps (stem conv, layer1..layer3)


def clip_feature_fn(clip, scales: Sequence[int] = SCALES) -> FeatureFn:
    """Frozen multi-scale maps of ``clip``'s image tower (a :class:`core.clip.ClipModel`), fine to
    coarse. The tower runs with folded BatchNorms and never gets gradients."""
    from core.clip import fold_batchnorm

    clip = clip.eval().requires_grad_(False)
    tower = fold_batchnorm(clip.model.visual).requires_grad_(False)

    def features(x: torch.Tensor) -> list[torch.Tensor]:
        maps = clip.feature_maps(x, visual=tower)
        return [maps[i] for i in scales]

    return features


POLICIES = ("color", "translation", "cutout")


def diff_augment(
    x: torch.Tensor,
    gen: torch.Generator,
    policy: str = "color,translation,cutout",
    *,
    translate: float = 0.125,
    cutout: float = 0.5,
) -> torch.Tensor:
    """DiffAugment's colour, translation and cutout policies (those named in ``policy``, comma
    separated; "" for none) on [N, 3, H, W] images in [-1, 1]; differentiable in ``x``, random draws
    from ``gen`` (CPU)."""
    chosen = {p for p in policy.split(",") if p}
    if chosen - set(POLICIES):
        raise ValueError(f"unknown augmentations {sorted(chosen - set(POLICIES))}; known: {POLICIES}")
    if "color" in chosen:
        x = _color(x, gen)
    if "translation" in chosen:
        x = _translation(x, gen, translate)
    if "cutout" in chosen:
        x = _cutout(x, gen, cutout)
    return x


def _color(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random brightness, saturation and contrast per image."""
    n = x.shape[0]

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(x.device, x.dtype)

    x = x + (rand(n, 1, 1, 1) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (rand(n, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (rand(n, 1, 1, 1) + 0.5) + mean


def _translation(x: torch.Tensor, gen: torch.Generator, translate: float) -> torch.Tensor:
    """Shift by up to ``translate`` of the size, zero fill."""
    n, _, h, w = x.shape
    sy, sx = int(h * translate + 0.5), int(w * translate + 0.5)
    dy = torch.randint(-sy, sy + 1, (n,), generator=gen)
    dx = torch.randint(-sx, sx + 1, (n,), generator=gen)
    padded = F.pad(x, [sx, sx, sy, sy])
    rows = [
        padded[i, :, sy - int(dy[i]) : sy - int(dy[i]) + h, sx - int(dx[i]) : sx - int(dx[i]) + w]
        for i in range(n)
    ]
    return torch.stack(rows)


def _cutout(x: torch.Tensor, gen: torch.Generator, cutout: float) -> torch.Tensor:
    """A square of ``cutout`` of the size set to zero, centred anywhere (it may hang off the edge)."""
    n, _, h, w = x.shape
    ch, cw = int(h * cutout + 0.5), int(w * cutout + 0.5)
    y0 = (torch.randint(0, h + 1, (n,), generator=gen) - ch // 2).view(n, 1, 1)
    x0 = (torch.randint(0, w + 1, (n,), generator=gen) - cw // 2).view(n, 1, 1)
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = (ys >= y0) & (ys < y0 + ch) & (xs >= x0) & (xs < x0 + cw)
    return x * (~inside).unsqueeze(1).to(x.device, x.dtype)


class _Head(nn.Module):
    """One scale's discriminator: normalised input, then stride-2 4x4 convs (spectral norm, group
    norm, leaky ReLU) down to 4x4, then a 4x4 conv to one logit per image. (Without normalisation
    the spectrally normalised layers kept every logit near 0: a first try could not separate real
    from fake at all.)"""

    def __init__(self, channels: int, resolution: int, max_channels: int = 256):
        super().__init__()
        layers: list[nn.Module] = [nn.GroupNorm(4, channels)]
        c, r = channels, resolution
        while r > 4:
            c_out = min(c * 2, max_channels)
            layers += [
                spectral_norm(nn.Conv2d(c, c_out, 4, 2, 1, bias=False)),
                nn.GroupNorm(4, c_out),
                nn.LeakyReLU(0.2),
            ]
            c, r = c_out, r // 2
        layers.append(spectral_norm(nn.Conv2d(c, 1, r)))  # r <= 4: one logit per image
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)  # [N, positions]


class ProjectedDiscriminator(nn.Module):
    """Logits [N, scales] of images [N, 3, R, R] in [-1, 1] (see the module docstring).

    Args:
        features: the frozen feature function (:func:`clip_feature_fn`); not part of this module's
            parameters or state.
        resolution: image size the discriminator is built for (the feature shapes are read from one
            dummy pass).
        channels: width of the random cross-channel projections.
        seed: seeds the fixed random projections (saved in the state dict as buffers all the same).
    """

    def __init__(self, features: FeatureFn, resolution: int, *, channels: int = 64, seed: int = 0):
        super().__init__()
        self._features = features
        with torch.no_grad():
            maps = features(torch.zeros(1, 3, resolution, resolution))
        g = torch.Generator().manual_seed(seed)
        for i, m in enumerate(maps):
            c = m.shape[1]
            bound = math.sqrt(3.0 / c)  # unit-variance outputs for unit-variance inputs
            self.register_buffer(f"ccm{i}", (torch.rand(channels, c, 1, 1, generator=g) * 2 - 1) * bound)
        self.heads = nn.ModuleList(_Head(channels, m.shape[-1]) for m in maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self._features(x)
        projected = [F.conv2d(m, getattr(self, f"ccm{i}")) for i, m in enumerate(maps)]
        mixed: list[torch.Tensor] = [projected[-1]]
        for p in reversed(projected[:-1]):  # cross-scale mixing, coarse to fine
            mixed.insert(
                0, p + F.interpolate(mixed[0], size=p.shape[-2:], mode="bilinear", align_corners=False)
            )
        return torch.cat(
            [head(m).mean(1, keepdim=True) for head, m in zip(self.heads, mixed, strict=True)], 1
        )
