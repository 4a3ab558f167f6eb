"""The image/scribble encoder: one pass from a (partly) painted image to a generator's w+.

As pSp (Richardson et al. 2021) it maps an image to the generator's per-layer styles, starting from
the mean latent: the network predicts offsets from the mean w in W-normalised units (each dimension
divided by the W standard deviation), so an untrained head gives the mean latent. Unlike pSp it takes
a mask beside the image, so one network serves the three uses of the editor:

- inversion: the whole image, mask 1 everywhere;
- inpainting: the image outside the hole, mask 0 in the hole;
- scribble-to-image: the paint colours where painted, mask 0 elsewhere (pSp's sketch-to-image idea,
  trained here on synthetic scribbles coloured from the image: :mod:`core.training.encoder`).

Input: ``[N, 4, R, R]``: RGB in [-1, 1] multiplied by the mask, then the mask. Output: ws ``[N,
num_ws, w_dim]`` for the generator it was trained against. The architecture is a small residual CNN
(a strided stem and three halvings, GroupNorm) with a feature-pyramid head (pSp's map2style idea,
reduced to one linear map from the 4x4, 8x8 and 16x16 features), sized to run in a few milliseconds on
two CPU cores.

Optionally (``refine_steps`` > 0) a second network of the same shape, the refiner, corrects the answer
as ReStyle does (Alaluf et al. 2021): it sees the input, the generator's rendering of the current answer
and the known part of their difference, and adds an offset to the current ws; :meth:`Encoder.encode`
runs the first pass and then the refinements. It is trained on top of a frozen encoder
(``core.training.encoder --refine-steps``), so the first pass stays what it was.

File format: one ``.safetensors`` with the weights, the W mean/std it normalises by, and in its
metadata the JSON config and the sha256 of the generator it was trained against (an encoder is only
meaningful for that generator: :func:`encoder_path_for` finds it beside the generator file and
:func:`load_encoder_for` refuses one trained for another).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ModelLoadError
from core.models.safe_load import read_safetensors, save_model_file, sha256_file
from core.types import safetensors_metadata

FORMAT = "latent-canvas-encoder/1"


@dataclass(frozen=True)
class EncoderConfig:
    resolution: int  # input side in pixels (the generator's resolution)
    num_ws: int  # the generator's style rows
    w_dim: int  # and their size
    width: int = 32  # channels at full resolution; doubled at each halving up to max_channels
    max_channels: int = 256
    hidden: int = 512  # units of the head's hidden layer
    # ReStyle iterations (Alaluf et al. 2021) run after the first pass by a second network of the same
    # shape that sees the target and the current result and answers a correction; 0: no such network.
    refine_steps: int = 0

    def __post_init__(self) -> None:
        if self.resolution < 32 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 32, got {self.resolution}")
        if min(self.num_ws, self.w_dim, self.width, self.max_channels, self.hidden) < 1:
            raise ValueError("num_ws, w_dim, width, max_channels and hidden must be >= 1")
        if self.refine_steps < 0:
            raise ValueError(f"refine_steps must be >= 0, got {self.refine_steps}")

    def channels(self, level: int) -> int:
        return min(self.width * 2**level, self.max_channels)


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class DownBlock(nn.Module):
    """x -> half resolution: a residual pair of 3x3 convs (GroupNorm, LeakyReLU) and a 1x1 skip."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1)
        self.conv2 = nn.Conv2d(cin, cout, 3, padding=1, stride=2)
        self.norm1, self.norm2 = _norm(cin), _norm(cout)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.norm1(self.conv1(x)), 0.2)
        h = F.leaky_relu(self.norm2(self.conv2(h)), 0.2)
        return (h + self.skip(F.avg_pool2d(x, 2))) * 0.7071


def _build_trunk(m: nn.Module, cfg: EncoderConfig, in_channels: int) -> None:
    """Give ``m`` the network: a strided 4x4 stem (nothing runs at full resolution: a 3x3 conv at 64x64
    cost more than the rest of the network on two CPU cores), residual halvings down to 4x4, and a head
    from the 4x4, 8x8 and 16x16 features whose last layer starts at zero (an untrained net answers 0)."""
    levels = (cfg.resolution // 8).bit_length() - 1
    m.stem = nn.Conv2d(in_channels, cfg.channels(0), 4, stride=2, padding=1)
    m.blocks = nn.ModuleList(DownBlock(cfg.channels(i), cfg.channels(i + 1)) for i in range(levels))
    c4, c8, c16 = (cfg.channels(levels - i) for i in range(3))
    head_in = c4 * 16 + c8 * 4 + c16
    m.head = nn.Sequential(
        nn.LayerNorm(head_in), nn.Linear(head_in, cfg.hidden), nn.LeakyReLU(0.2),
        nn.Linear(cfg.hidden, cfg.num_ws * cfg.w_dim),
    )  # fmt: skip
    nn.init.zeros_(m.head[-1].weight)
    nn.init.zeros_(m.head[-1].bias)


def _trunk_delta(m: nn.Module, x: torch.Tensor, cfg: EncoderConfig) -> torch.Tensor:
    """The network of :func:`_build_trunk` on inputs ``x``: offsets [N, num_ws, w_dim] in W-std units."""
    h = F.leaky_relu(m.stem(x), 0.2)
    feats = [h]
    for block in m.blocks:
        h = block(h)
        feats.append(h)
    f4, f8, f16 = feats[-1], feats[-2], feats[-3]
    pyramid = torch.cat([f4.flatten(1), F.adaptive_avg_pool2d(f8, 2).flatten(1), f16.mean((2, 3))], 1)
    return m.head(pyramid).view(-1, cfg.num_ws, cfg.w_dim)


class Refiner(nn.Module):
    """ReStyle's iterative step: from the encoder's input, the current result y and the known part of
    the residual (target - y), a correction to the current ws. Starts as the identity (zero head)."""

    IN_CHANNELS = 10  # image x mask, mask, y, (image - y) x mask

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        _build_trunk(self, cfg, self.IN_CHANNELS)


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        _build_trunk(self, cfg, 4)  # an untrained encoder answers the mean latent
        self.refiner = Refiner(cfg) if cfg.refine_steps else None
        self.register_buffer("w_mean", torch.zeros(cfg.w_dim))
        self.register_buffer("w_std", torch.ones(cfg.w_dim))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """The generator's W mean and std [w_dim] (outputs are offsets from the mean in std units)."""
        self.w_mean.copy_(mean.detach().reshape(-1))
        self.w_std.copy_(std.detach().reshape(-1).clamp_min(1e-6))

    @staticmethod
    def inputs(image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The network input [N, 4, R, R] from images [N, 3, R, R] in [-1, 1] and masks [N, 1, R, R]
        in [0, 1] (None: everything known)."""
        if mask is None:
            mask = image.new_ones(image.shape[0], 1, *image.shape[2:])
        return torch.cat([image * mask, mask], 1)

    def _sized(self, image: torch.Tensor, mask: torch.Tensor | None):
        side = (self.cfg.resolution,) * 2
        if image.shape[-2:] != side:
            image = F.interpolate(image, size=side, mode="bilinear", antialias=True)
            if mask is not None:
                mask = F.interpolate(mask, size=side, mode="bilinear", antialias=True)
        return image, mask

    def forward(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """ws [N, num_ws, w_dim] in one pass for images [N, 3, R, R] in [-1, 1] known where ``mask``
        [N, 1, R, R] is 1 (an inpainting hole or the unpainted part of a scribble is 0)."""
        x = self.inputs(*self._sized(image, mask))
        return self.w_mean + _trunk_delta(self, x, self.cfg) * self.w_std

    def refine(
        self, image: torch.Tensor, mask: torch.Tensor | None, ws: torch.Tensor, synthesis
    ) -> torch.Tensor:
        """One ReStyle iteration: ws corrected after looking at ``synthesis(ws)`` beside the target."""
        if self.refiner is None:
            raise ValueError("this encoder has no refiner network (refine_steps 0)")
        image, mask = self._sized(image, mask)
        y = synthesis(ws)
        y = y if y.shape[-2:] == image.shape[-2:] else F.interpolate(y, size=image.shape[-2:], mode="area")
        x = self.inputs(image, mask)
        x = torch.cat([x, y, (image - y) * x[:, 3:]], 1)
        return ws + _trunk_delta(self.refiner, x, self.cfg) * self.w_std

    def encode(self, image: torch.Tensor, mask: torch.Tensor | None, synthesis, steps: int | None = None):
        """The first pass, then ``steps`` ReStyle iterations (default: the trained ``refine_steps``;
        ``synthesis`` is the generator's, ws -> images in [-1, 1])."""
        ws = self(image, mask)
        for _ in range(self.cfg.refine_steps if steps is None else steps):
            ws = self.refine(image, mask, ws, synthesis)
        return ws


def build_encoder(cfg: EncoderConfig | dict, *, seed: int = 0) -> Encoder:
    """A randomly initialised encoder (seeded) that answers the mean latent until trained."""
    cfg = cfg if isinstance(cfg, EncoderConfig) else EncoderConfig(**cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Encoder(cfg)


# --- files ---------------------------------------------------------------------------------------


def encoder_path_for(generator_path: str | Path) -> Path:
    """``<stem>.encoder.safetensors`` beside a generator file: where the app looks for its encoder."""
    p = Path(generator_path)
    return p.with_name(p.name.removesuffix(p.suffix) + ".encoder.safetensors")


def save_encoder(model: Encoder, path: str | Path, *, metadata: dict | None = None) -> Path:
    """Write weights + W statistics + config (``metadata`` values are JSON-encoded into the header);
    ``metadata`` should carry ``generator_sha256``."""
    return save_model_file(model, path, format=FORMAT, metadata=metadata)


def read_encoder_metadata(path: str | Path) -> dict:
    raw = safetensors_metadata(path)
    return {k: (v if k == "format" else json.loads(v)) for k, v in raw.items()}


def load_encoder(path: str | Path, *, device: str | torch.device = "cpu") -> Encoder:
    """Load an encoder written by :func:`save_encoder`, frozen, in eval mode.

    Raises:
        ModelLoadError: missing, unreadable, not an encoder file, damaged config, mismatched weights.
    """
    path = Path(path)
    raw, tensors = read_safetensors(path, what="encoder")
    if raw.get("format") != FORMAT:
        raise ModelLoadError(f"{path.name} is not a Latent Canvas encoder (format {raw.get('format')!r})")
    try:
        model = Encoder(EncoderConfig(**json.loads(raw["config"])))
    except (KeyError, ValueError, TypeError) as e:
        raise ModelLoadError(f"{path.name}: its encoder config is missing or damaged: {e}") from e
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise ModelLoadError(f"{path.name}: weights do not match its config: {e}") from e
    model.generator_sha256 = _decoded(raw, "generator_sha256")
    return model.to(device).eval().requires_grad_(False)


def _decoded(raw: dict, key: str):
    try:
        return json.loads(raw[key]) if key in raw else None
    except ValueError:
        return None


def load_encoder_for(
    generator_path: str | Path, G, *, device: str | torch.device = "cpu", path: str | Path | None = None
) -> Encoder:
    """The encoder trained against the generator file ``generator_path`` (loaded as ``G``): ``path``,
    or by default the one beside the generator (:func:`encoder_path_for`).

    Raises:
        ModelLoadError: no encoder file, or one trained for another generator or shaped for another
        latent space; the message says how to train one.
    """
    path = Path(path) if path else encoder_path_for(generator_path)
    how = f"train one with: python -m core.training.encoder --generator {Path(generator_path).name} --out RUN"
    if not path.is_file():
        raise ModelLoadError(f"no encoder for {Path(generator_path).name} (looked for {path.name}); {how}")
    enc = load_encoder(path, device=device)
    if enc.generator_sha256 != sha256_file(generator_path):
        raise ModelLoadError(f"{path.name} was trained for another generator (sha256 differs); {how}")
    cfg = enc.cfg
    if (cfg.num_ws, cfg.w_dim, cfg.resolution) != (G.num_ws, G.w_dim, G.resolution):
        raise ModelLoadError(f"{path.name} does not fit this generator's latent shape or size; {how}")
    return enc


# --- inputs from the editor's arrays -------------------------------------------------------------------


def prepare_inputs(target, mask, resolution: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The encoder's (image, mask) from a job's arrays: ``target`` [H, W, 3] or [N, H, W, 3] uint8,
    ``mask`` [H, W] or [N, H, W] in [0, 1] or None.

    Resampled to ``resolution`` with the colours un-premultiplied (a painted pixel's colour is not
    darkened by the unpainted pixels it is averaged with) and the mask made binary (coverage >= 0.3):
    the encoder was trained on hard-edged paint."""
    import numpy as np

    from core.imaging import image_to_tensor, mask_to_tensor

    if mask is None:
        return image_to_tensor(target, resolution, device), None
    m = np.clip(np.asarray(mask, dtype=np.float32), 0, 1)
    premult = np.round(target.astype(np.float32) * (m[..., None] if m.ndim == target.ndim - 1 else m))
    cover = mask_to_tensor(m, resolution, device)  # [1 or N, 1, R, R]
    colour = (image_to_tensor(premult.astype(np.uint8), resolution, device) + 1) / 2  # premultiplied
    image = (colour / cover.clamp_min(1e-3)).clamp(0, 1) * 2 - 1
    return image, (cover >= 0.3).float()
