"""Maskable losses for GAN inversion.

Images are ``[N, 3, H, W]`` floats in [-1, 1]. A mask is ``[N, 1, H, W]`` or ``[1, 1, H, W]``
(broadcast over the batch), float in [0, 1]; ``mask=None`` means everywhere. Every loss returns a
per-sample tensor ``[N]`` so a batch of latents is optimised at once.

Masking: a masked loss is a mask-weighted average, normalised per sample by the mask's area (the
sum of its weights), so the same per-pixel error gives the same loss whatever the mask's size. An
empty mask (all zeros for some sample) raises ``ValueError``: it would make the loss 0/0, and a
silent zero would leave the optimiser with nothing to fit. The check costs one host sync per call.

What masking guarantees for the perceptual losses: the weighting happens on feature maps, with the
mask area-resized to each map's resolution. A feature cell whose footprint holds no mask weight is
ignored exactly. But a conv feature *sees* a receptive field far wider than its footprint (VGG16's
conv5 about 200 px), so pixels outside the mask still move the features of cells inside it. The
perceptual losses therefore down-weight, not ignore, what lies outside the mask; the masked L1 is
the term that ignores it exactly.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import LatentCanvasError, ModelLoadError

if TYPE_CHECKING:
    import lpips

    from core.clip import ClipModel

log = logging.getLogger(__name__)

Features = tuple[torch.Tensor, ...]  # a perceptual loss's cached target features, one per layer

PERCEPTUAL_KINDS = ("lpips-vgg", "lpips-alex", "vgg-conv5", "vgg19-conv3_1", "bundled", "none")

# torchvision's own file names (they carry the sha256 prefix), so a cache torchvision filled is found.
_BACKBONE_FILES = {
    "vgg16": "vgg16-397923af.pth",
    "alexnet": "alexnet-owt-7be5be79.pth",
    "vgg19": "vgg19-dcbb9e9d.pth",
}
_BACKBONE_OF_KIND = {
    "lpips-vgg": "vgg16",
    "lpips-alex": "alexnet",
    "vgg-conv5": "vgg16",
    "vgg19-conv3_1": "vgg19",
}
_DOWNLOAD_ROOT = "https://download.pytorch.org/models/"

# ImageNet statistics the torchvision backbones were trained with (inputs in [0, 1]).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# VGG16 ``features`` up to relu5_3 (the end of the conv_5 block, before pool5): "M" = max-pool.
_VGG16_CONV5_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


# --- masks ------------------------------------------------------------------------------------


def check_mask(mask: torch.Tensor | None, pred: torch.Tensor) -> torch.Tensor | None:
    """Validate ``mask`` against ``pred`` and return it in ``pred``'s dtype and device.

    Args:
        mask: ``[N, 1, H, W]`` or ``[1, 1, H, W]`` weights in [0, 1], or None (everywhere).
        pred: ``[N, C, H, W]`` the tensor the mask applies to.

    Raises:
        ValueError: wrong shape, or a sample whose mask has no weight (the loss would be 0/0).
    """
    if mask is None:
        return None
    n, _, h, w = pred.shape
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] not in (1, n) or mask.shape[-2:] != (h, w):
        raise ValueError(f"mask must be [{n} or 1, 1, {h}, {w}] to match the image, got {list(mask.shape)}")
    mask = mask.to(pred)
    if bool((mask.flatten(1).sum(1) <= 0).any()):
        raise ValueError("the mask is empty for at least one sample: nothing to compare")
    return mask


def _resize_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    # Area resampling: each feature cell gets the mean mask weight over its footprint, so the
    # mask's total weight (relative to the map) survives the resize and no masked pixel is lost.
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.adaptive_avg_pool2d(mask, tuple(size))


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x`` [N, C, h, w] over C and space, weighted by ``mask`` resized to (h, w) -> [N].

    Args:
        x: a per-position error map at any resolution.
        mask: a mask already passed through :func:`check_mask`, at image resolution, or None.
    """
    if mask is None:
        return x.mean(dim=(1, 2, 3))
    m = _resize_mask(mask, x.shape[-2:])  # [N or 1, 1, h, w]
    return (x * m).sum(dim=(1, 2, 3)) / (m.sum(dim=(1, 2, 3)) * x.shape[1])


# --- pixel and latent losses ------------------------------------------------------------------


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error per sample, over channels and the masked pixels -> [N].

    Args:
        pred: ``[N, 3, H, W]`` in [-1, 1].
        target: ``[N or 1, 3, H, W]`` in [-1, 1].
        mask: ``[N or 1, 1, H, W]`` in [0, 1], or None for everywhere. Pixels where it is 0 are ignored
            exactly; the result is normalised by the mask's area, so it lies in [0, 2].
    """
    return masked_mean((pred - target).abs(), check_mask(mask, pred))


def latent_l2(delta: torch.Tensor) -> torch.Tensor:
    """Mean squared latent change per sample -> [N].

    Args:
        delta: ``[N, ...]`` e.g. ``latent - latent_0``; averaged over every dim but the batch (for w+
            ``[N, num_ws, w_dim]`` that is the mean over both ws and w_dim, as in the seed).
    """
    if delta.ndim < 2:
        raise ValueError(f"delta must be [N, ...] with a batch dim, got {list(delta.shape)}")
    return delta.square().flatten(1).mean(dim=1)


# --- perceptual losses ------------------------------------------------------------------------


class PerceptualLoss(nn.Module):
    """A frozen feature network compared at feature level, with the target's features cached.

    The inversion loop calls :meth:`prepare` once per job and :meth:`forward` every step.
    """

    def prepare(self, target: torch.Tensor) -> Features:
        """Features of ``target`` ``[N or 1, 3, H, W]`` in [-1, 1], to pass to every :meth:`forward`."""
        raise NotImplementedError

    def forward(self, pred: torch.Tensor, target_features: Features, mask: torch.Tensor | None = None):
        """Per-sample loss [N] between ``pred`` ``[N, 3, H, W]`` in [-1, 1] and the cached features."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> PerceptualLoss:
        # A loss network never trains here; train mode would switch on LPIPS' dropout and make the
        # loss random, so .train() (e.g. from a parent module) leaves it in eval mode.
        return super().train(False)


def _check_features(target_features: Features) -> None:
    if isinstance(target_features, torch.Tensor):
        raise TypeError("pass the features from prepare(target), not the target image")


def _normalize_channels(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    # Unit length along channels, as lpips.normalize_tensor (same eps, so parity is exact).
    return feat / (feat.square().sum(dim=1, keepdim=True).sqrt() + eps)


class MaskedLPIPS(PerceptualLoss):
    """LPIPS (Zhang et al. 2018) whose spatial average is a mask-weighted average at each layer.

    With ``mask=None`` (or all ones) it equals ``lpips.LPIPS(...)(pred, target)`` flattened to [N].
    The result is >= 0; about 0 to 1 for natural images.

    Args:
        net: a built ``lpips.LPIPS`` with linear layers (``lpips=True``); its weights are used as
            they are (frozen), so tests and our own trained perceptual nets can be injected.
    """

    def __init__(self, net: lpips.LPIPS) -> None:
        super().__init__()
        if not net.lpips:
            raise ValueError("MaskedLPIPS needs an lpips.LPIPS built with lpips=True (the linear layers)")
        self.net = net.eval().requires_grad_(False)

    def _layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.net.version == "0.1":  # v0.0 fed unscaled inputs; keep whatever the net was built as
            x = self.net.scaling_layer(x)
        return [_normalize_channels(f) for f in self.net.net(x)]

    @torch.no_grad()
    def prepare(self, target: torch.Tensor) -> Features:
        return tuple(self._layers(target))

    def forward(
        self, pred: torch.Tensor, target_features: Features, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_features(target_features)
        mask = check_mask(mask, pred)
        total = pred.new_zeros(pred.shape[0])
        for lin, f0, f1 in zip(self.net.lins, self._layers(pred), target_features, strict=True):
            total = total + masked_mean(lin((f0 - f1).square()), mask)  # [N], one layer's distance
        return total


class VGGConv5Loss(PerceptualLoss):
    """Mean squared difference of raw VGG features -> [N], >= 0 (an L2 feature distance).

    Two feature stacks are offered: "vgg-conv5", the output of VGG16's conv_5 block (relu5_3, 512
    channels at 1/16 of the image size; :func:`vgg16_conv5_features`), the deepest layer LPIPS uses
    too; and "vgg19-conv3_1", the seed write-up's exact choice: its "conv_5" is the fifth conv layer of
    VGG19 (conv3_1, 256 channels at 1/4 of the size, before its ReLU; :func:`vgg19_conv3_1_features`),
    as named in PyTorch's style-transfer tutorial. Features are compared raw (no channel
    normalisation), averaged over channels and the mask-weighted positions.

    Args:
        features: maps ImageNet-normalised images ``[N, 3, H, W]`` to feature maps ``[N, C, h, w]``,
            e.g. :func:`vgg16_conv5_features` with loaded weights; used frozen.
    """

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(((x + 1) / 2 - self.mean) / self.std)  # [-1, 1] -> ImageNet statistics

    @torch.no_grad()
    def prepare(self, target: torch.Tensor) -> Features:
        return (self._features(target),)

    def forward(
        self, pred: torch.Tensor, target_features: Features, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_features(target_features)
        (target_feat,) = target_features
        return masked_mean((self._features(pred) - target_feat).square(), check_mask(mask, pred))


class ClipFeatureLoss(PerceptualLoss):
    """LPIPS-style distance on the feature maps of a CLIP's ModifiedResNet image tower -> [N] in [0, 1].

    The offline default ("bundled"): ImageNet backbones cannot be had everywhere, and LPIPS on a random
    backbone would be meaningless, so this compares the bundled tiny CLIP's image tower, trained on
    the procedural data (see :meth:`core.clip.ClipModel.feature_maps`: five maps from 1/2 to 1/16 of
    the image size). As LPIPS: each map is unit-normalised along channels, the squared difference is
    summed over channels and mask-averaged over positions. There are no human judgements to learn
    LPIPS' per-channel weights from, so every channel weighs 1 (LPIPS' "baseline" variant) and each
    layer 1 / (2 L): the maps are post-ReLU (non-negative), so a layer's distance lies in [0, 2] and
    the total in [0, 1]. Images are compared at their own resolution (the convolutions take any size).

    Args:
        clip: a :class:`core.clip.ClipModel` with a ModifiedResNet image tower; used frozen.
    """

    def __init__(self, clip: ClipModel) -> None:
        from core.clip import fold_batchnorm

        super().__init__()
        self.clip = clip.eval().requires_grad_(False)
        # The same tower with its BatchNorms folded into the convs: the loss runs it forward and
        # backward every inversion step (the saving: docs/performance.md).
        self.tower = fold_batchnorm(clip.model.visual)  # a submodule: .to(device) moves it too

    def _layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [_normalize_channels(f) for f in self.clip.feature_maps(x, visual=self.tower)]

    @torch.no_grad()
    def prepare(self, target: torch.Tensor) -> Features:
        return tuple(self._layers(target))

    def forward(
        self, pred: torch.Tensor, target_features: Features, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_features(target_features)
        mask = check_mask(mask, pred)
        total = pred.new_zeros(pred.shape[0])
        for f0, f1 in zip(self._layers(pred), target_features, strict=True):
            d = (f0 - f1).square().sum(dim=1, keepdim=True)  # [N, 1, h, w] in [0, 2]
            total = total + masked_mean(d, mask)
        return total / (2 * len(target_features))


def vgg16_conv5_features() -> nn.Sequential:
    """VGG16 ``features[:30]`` (conv1_1 .. relu5_3), randomly initialised.

    Layer indices match torchvision's, so its ``features.{i}.*`` weights load into it directly. Built
    here rather than via ``torchvision.models.vgg16`` to skip the 120M-parameter classifier.
    """
    layers: list[nn.Module] = []
    channels = 3
    for v in _VGG16_CONV5_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers)


def vgg19_conv3_1_features() -> nn.Sequential:
    """VGG19 ``features[:11]`` (conv1_1 .. conv3_1, the fifth conv layer, without its ReLU), randomly
    initialised; layer indices match torchvision's ``vgg19().features``."""
    layers: list[nn.Module] = []
    channels = 3
    for v in (64, 64, "M", 128, 128, "M", 256):
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers[:-1])  # conv3_1's output, before the ReLU


# --- loading ImageNet backbones without downloading -------------------------------------------


def _candidate_paths(filename: str, weights_path: str | Path | None) -> list[Path]:
    paths = []
    if weights_path is not None:
        p = Path(weights_path).expanduser()
        paths.append(p / filename if p.is_dir() else p)
    paths.append(Path(torch.hub.get_dir()) / "checkpoints" / filename)
    return paths


def find_backbone_weights(kind: str, weights_path: str | Path | None = None) -> Path | None:
    """The ImageNet backbone file ``kind`` needs, if present on this machine (never downloads).

    Args:
        kind: one of :data:`PERCEPTUAL_KINDS` other than "none".
        weights_path: a weights file, or a folder holding torchvision's file name; searched before the
            torch hub cache (``torch.hub.get_dir()/checkpoints``).
    """
    filename = _BACKBONE_FILES[_BACKBONE_OF_KIND[kind]]
    return next((p for p in _candidate_paths(filename, weights_path) if p.is_file()), None)


def _missing_weights_error(kind: str, weights_path: str | Path | None) -> ModelLoadError:
    filename = _BACKBONE_FILES[_BACKBONE_OF_KIND[kind]]
    searched = ", ".join(str(p) for p in _candidate_paths(filename, weights_path))
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return ModelLoadError(
        f"perceptual loss {kind!r} needs the ImageNet backbone weights {filename!r}, not found "
        f"(looked at {searched}). Put the file in {hub} (torchvision's cache) or pass its path as "
        f"weights_path; it is published at {_DOWNLOAD_ROOT}{filename}. Latent Canvas never downloads it "
        f"itself, and will not use a random backbone: LPIPS or VGG features from untrained weights "
        f"would be meaningless. Or choose the perceptual loss 'none'."
    )


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise ModelLoadError(f"cannot read backbone weights {path}: {e}") from e
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path} is not a state dict (got {type(state).__name__})")
    return state


def _load_features(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load torchvision ``features.{i}.{param}`` into ``module`` whose names end in ``{i}.{param}``.

    That covers both our VGG ``Sequential`` ("24.weight") and lpips' slices ("slice5.24.weight").
    """
    mapped = {}
    for name in module.state_dict():
        key = "features." + ".".join(name.split(".")[-2:])
        if key not in state:
            raise ModelLoadError(f"{path} lacks {key!r}: not torchvision's backbone weights")
        mapped[name] = state[key]
    try:
        module.load_state_dict(mapped)
    except RuntimeError as e:  # shape mismatch: e.g. VGG19 weights under the VGG16 name
        raise ModelLoadError(f"{path} does not fit the backbone: {e}") from e


def _build_lpips(kind: str, state: dict[str, torch.Tensor], path: Path) -> MaskedLPIPS:
    import lpips  # lazy: pulls in scipy and tqdm, which the pixel losses do not need

    # pnet_rand=True builds the trunk with pretrained=False, so torchvision downloads nothing; the
    # linear layers (pretrained=True) ship inside the lpips package.
    net = lpips.LPIPS(net=kind.removeprefix("lpips-"), pretrained=True, pnet_rand=True, verbose=False)
    _load_features(net.net, state, path)
    return MaskedLPIPS(net)


def _build_vgg_conv5(state: dict[str, torch.Tensor], path: Path, kind: str = "vgg-conv5") -> VGGConv5Loss:
    features = vgg19_conv3_1_features() if kind == "vgg19-conv3_1" else vgg16_conv5_features()
    _load_features(features, state, path)
    return VGGConv5Loss(features)


def make_perceptual_loss(
    kind: str, *, device: str | torch.device = "cpu", weights_path: str | Path | None = None
) -> PerceptualLoss | None:
    """Build a ready, frozen perceptual loss with real ImageNet backbone weights; never downloads.

    Args:
        kind: "lpips-vgg", "lpips-alex", "vgg-conv5", "vgg19-conv3_1" (the seed's exact loss), "bundled"
            (:class:`ClipFeatureLoss` on the
            bundled tiny CLIP; needs no ImageNet file), or "none" (returns None, so a job asking for a
            perceptual weight > 0 without a loss fails loudly instead of silently adding zero).
        device: where the module lives.
        weights_path: torchvision's backbone file (``vgg16-397923af.pth`` for "lpips-vgg" and
            "vgg-conv5", ``alexnet-owt-7be5be79.pth`` for "lpips-alex"), or a folder holding it;
            otherwise it is looked for in ``torch.hub.get_dir()/checkpoints``. For "bundled": another
            tiny-CLIP ``.safetensors`` instead of the bundled one.

    Raises:
        ValueError: unknown ``kind``.
        ModelLoadError: the backbone file is missing, unreadable, or not the expected network.
    """
    if kind not in PERCEPTUAL_KINDS:
        raise ValueError(f"unknown perceptual loss {kind!r}; known: {', '.join(PERCEPTUAL_KINDS)}")
    if kind == "none":
        return None
    if kind == "bundled":
        from core.clip import load_clip  # raises ModelLoadError when the bundled files are missing

        return ClipFeatureLoss(load_clip(None, device=device, weights=weights_path))
    path = find_backbone_weights(kind, weights_path)
    if path is None:
        raise _missing_weights_error(kind, weights_path)
    log.info("perceptual loss %s: backbone weights from %s", kind, path)
    state = _load_state_dict(path)
    if kind in ("vgg-conv5", "vgg19-conv3_1"):
        loss = _build_vgg_conv5(state, path, kind)
    else:
        loss = _build_lpips(kind, state, path)
    return loss.to(device)


def available_perceptual_kinds(weights_dir: str | Path | None = None) -> list[str]:
    """The ImageNet-backbone perceptual kinds whose weights are on this machine, "none" always last.

    "bundled" is not listed: it ships with the app (``make_perceptual_loss("bundled")``).

    Args:
        weights_dir: a folder to search for torchvision's file names besides the torch hub cache.
            Only checks that the files exist; loading may still fail on a corrupt file.
    """
    if weights_dir is not None and not Path(weights_dir).expanduser().is_dir():
        raise ValueError(f"weights_dir must be a folder, got {weights_dir}")
    found = [k for k in _BACKBONE_OF_KIND if find_backbone_weights(k, weights_dir)]
    return [*found, "none"]


__all__ = [
    "PERCEPTUAL_KINDS",
    "ClipFeatureLoss",
    "Features",
    "MaskedLPIPS",
    "PerceptualLoss",
    "VGGConv5Loss",
    "available_perceptual_kinds",
    "check_mask",
    "find_backbone_weights",
    "latent_l2",
    "make_perceptual_loss",
    "masked_l1",
    "masked_mean",
    "vgg16_conv5_features",
    "vgg19_conv3_1_features",
]


def resolve_perceptual(kind: str, weight: float, device: str | torch.device = "cpu"):
    """``(loss or None, kind used)`` for a job's perceptual setting. "auto" takes real LPIPS (VGG)
    when its ImageNet weights are on disk, else the bundled network, else none (L1 only, with a
    warning); any other kind must load. Weight <= 0 or "none": no loss."""
    if weight <= 0 or kind == "none":
        return None, "none"
    kinds = ["lpips-vgg", "bundled"] if kind == "auto" else [kind]
    errors = []
    for k in kinds:
        try:
            return make_perceptual_loss(k, device=device), k
        except LatentCanvasError as e:
            errors.append(str(e))
    if kind != "auto":
        raise LatentCanvasError(errors[-1])
    log.warning("no perceptual network available (%s); using L1 only", "; ".join(errors))
    return None, "none"
