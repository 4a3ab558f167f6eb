"""The W-space diffusion prior's denoiser: an MLP over (normalised) w or w+ with a time embedding.

As the seed paper: a plain MLP of configurable width and depth (paper: 5000 units, 7 layers) with
group normalisation, its weights kept as an exponential moving average (the trainer's job), and the
latent normalised by the W statistics before it enters the network. Each layer's GroupNorm is
modulated by the time embedding (adaptive group norm, Dhariwal & Nichol 2021, sec. 3).

The network's raw output is ``v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0`` (Salimans & Ho
2022) by default, or ``eps`` (Ho et al. 2020) as the seed; ``forward`` always returns ``eps``, which
every sampler consumes. v keeps the x_0 estimate well conditioned near t = 1, where
``alpha_bar -> 1e-9`` and an eps-model's ``x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)``
multiplies its error by 3e4 (samples exploded that way in our first run).

File format: one ``.safetensors`` with the weights, the normalisation buffers and, in its metadata,
the JSON config (and what it was trained on). safetensors runs no code on load.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ModelLoadError
from core.models.safe_load import read_safetensors, save_model_file
from core.prior import schedule
from core.types import safetensors_metadata

FORMAT = "latent-canvas-wdiffusion/1"
SPACES = ("w", "w+", "s")  # s: Style space (w_dim is then the generator's s_dim)
NORMALIZE = ("per-dim", "global", "none")
PREDICTIONS = ("v", "eps")


@dataclass(frozen=True)
class WDiffusionConfig:
    w_dim: int  # the generator's w size (Style space: its s_dim)
    num_ws: int = 1  # rows of w+ the model sees (1 for the W space)
    space: str = "w"  # "w": one w per sample; "w+": num_ws rows, flattened
    width: int = 512  # hidden units per layer (paper: 5000)
    depth: int = 7  # hidden layers (paper: 7)
    groups: int = 32  # GroupNorm groups per layer
    time_dim: int = 128  # size of the sinusoidal time embedding
    normalize: str = "per-dim"  # (w - mean) / std per dim, one global std, or raw w
    prediction: str = "v"  # the network's target: "v" (Salimans & Ho 2022) or "eps" (Ho et al. 2020)

    def __post_init__(self) -> None:
        if self.space not in SPACES or self.normalize not in NORMALIZE or self.prediction not in PREDICTIONS:
            raise ValueError(
                f"space must be one of {SPACES}, normalize one of {NORMALIZE}, "
                f"prediction one of {PREDICTIONS}"
            )
        if self.width % self.groups or self.time_dim % 2:
            raise ValueError("width must be divisible by groups, and time_dim even")
        if self.space in ("w", "s") and self.num_ws != 1:
            raise ValueError(f"a {self.space}-space model has num_ws = 1")

    @property
    def dim(self) -> int:
        return self.w_dim * self.num_ws


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features [N, dim] of ``t`` [N] in [0, 1] (scaled by 1000, as DDPM's discrete steps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = 1000 * t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=1)


class AdaGNBlock(nn.Module):
    """x + Linear(SiLU(GroupNorm(x) * (1 + scale(t)) + shift(t)))."""

    def __init__(self, width: int, time_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, width)
        self.film = nn.Linear(time_dim, 2 * width)
        self.linear = nn.Linear(width, width)

    def modulation(self, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gain, offset)``, each [N, width], of a time embedding ``temb`` [N, time_dim]: the norm's own
        affine folded into the time modulation, ``GroupNorm(x) (1 + scale) + shift = n(x) gain + offset``
        with ``n`` the unscaled group norm (half the norm's cost at 44 rows)."""
        scale, shift = self.film(temb).chunk(2, dim=1)
        gain = self.norm.weight * (1 + scale)
        return gain, torch.addcmul(shift, self.norm.bias, 1 + scale)

    def forward(self, x: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """``gain``, ``offset`` [N or 1, width]: this block's :meth:`modulation`."""
        n = F.group_norm(x, self.norm.num_groups, eps=self.norm.eps)
        h = F.silu(torch.addcmul(offset, n, gain))
        return self.linear(h) + x


class WDenoiser(nn.Module):
    """Predicts ``eps`` [N, dim] from a normalised noisy latent ``x_t`` [N, dim] and ``t`` [N] in [0, 1].

    Buffers ``mean`` and ``std`` [dim] map W units to the network's space (:meth:`normalize`).
    """

    def __init__(self, cfg: WDiffusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(cfg.dim))
        self.register_buffer("std", torch.ones(cfg.dim))
        self.time = nn.Sequential(
            nn.Linear(cfg.time_dim, cfg.time_dim), nn.SiLU(), nn.Linear(cfg.time_dim, cfg.time_dim)
        )
        self.inp = nn.Linear(cfg.dim, cfg.width)
        self.blocks = nn.ModuleList(AdaGNBlock(cfg.width, cfg.time_dim, cfg.groups) for _ in range(cfg.depth))
        self.out_norm = nn.GroupNorm(cfg.groups, cfg.width)
        self.out = nn.Linear(cfg.width, cfg.dim)
        nn.init.zeros_(self.out.weight)  # start by predicting eps = 0: a calm first step
        nn.init.zeros_(self.out.bias)

    def conditioning(self, t: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every block's :meth:`AdaGNBlock.modulation`, each [N, width], for times ``t`` [N].

        It depends on ``t`` alone, so a sampler that visits known times computes it for all of them
        in one batched pass (:class:`core.prior.priors.DiffusionPrior`): the FiLM layers hold a third
        of the weights and would otherwise run once per update, on a handful of rows each time.
        """
        temb = self.time(timestep_embedding(t, self.cfg.time_dim))  # [N, time_dim]
        return [block.modulation(temb) for block in self.blocks]

    def grid_conditioning(self, times: tuple[float, ...]) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """:meth:`conditioning` of a fixed grid of ``times`` in one batched pass, one list per time (each
        block's ``(gain, offset)``, [1, width]): the projection job visits the same K times after every
        task step."""
        ref = self.inp.weight
        conds = self.conditioning(torch.tensor(times, dtype=ref.dtype, device=ref.device))
        return [[(g[k : k + 1], o[k : k + 1]) for g, o in conds] for k in range(len(times))]

    def raw(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """The network output [N, dim]: ``v`` or ``eps`` as ``cfg.prediction`` says (the training target).

        ``cond``: :meth:`conditioning` of ``t`` (rows [N] or [1]) when the caller has it already.
        """
        if cond is None:
            t = torch.as_tensor(t, device=x_t.device, dtype=x_t.dtype).expand(x_t.shape[0])
            cond = self.conditioning(t)
        h = self.inp(x_t)  # [N, width]
        for block, (gain, offset) in zip(self.blocks, cond, strict=True):
            h = block(h, gain, offset)
        return self.out(F.silu(self.out_norm(h)))  # [N, dim]

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """The predicted noise ``eps`` [N, dim] of ``x_t`` [N, dim] at times ``t`` [N] (or a scalar)."""
        out = self.raw(x_t, t, cond)
        if self.cfg.prediction == "eps":
            return out
        ab = schedule.alpha_bar(torch.as_tensor(t).expand(x_t.shape[0])).to(x_t)[:, None]
        return self.eps_from_output(out, x_t, ab)

    def eps_from_output(self, out: torch.Tensor, x_t: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """The noise ``eps`` from the network output ``out`` of ``x_t`` whose ``alpha_bar`` is ``ab`` [N, 1]
        (the projection's fixed grid uses :meth:`eps_coefficients` instead)."""
        if self.cfg.prediction == "eps":
            return out
        return (1 - ab).sqrt() * x_t + ab.sqrt() * out  # eps = sqrt(1 - ab) x_t + sqrt(ab) v

    def eps_coefficients(self, ab: float) -> tuple[float, float]:
        """``(c_x, c_out)`` with ``eps = c_x x_t + c_out out`` at ``alpha_bar = ab``: the noise is linear
        in the input and the network output for both targets (eps: ``(0, 1)``; v:
        ``(sqrt(1 - ab), sqrt(ab))``)."""
        return (0.0, 1.0) if self.cfg.prediction == "eps" else ((1 - ab) ** 0.5, ab**0.5)

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What :meth:`raw` is trained to output for ``x_t = add_noise(x0, eps, t)``."""
        if self.cfg.prediction == "eps":
            return eps
        ab = schedule.alpha_bar(t).to(x0)[:, None]
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Install the normalisation from W statistics (``mean``, ``std`` [w_dim], tiled over rows)."""
        mean, std = mean.float().repeat(self.cfg.num_ws), std.float().repeat(self.cfg.num_ws)
        if self.cfg.normalize == "global":
            std = std.square().mean().sqrt().expand_as(std)
        if self.cfg.normalize == "none":
            mean, std = torch.zeros_like(mean), torch.ones_like(std)
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-6))

    def normalize(self, w: torch.Tensor) -> torch.Tensor:
        """W units -> network space; ``w`` [N, w_dim] or [N, num_ws, w_dim] -> [N, dim]."""
        return (w.reshape(w.shape[0], -1) - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Network space [N, dim] -> W units [N, dim] (reshape to w+ with ``.view(N, num_ws, w_dim)``)."""
        return x * self.std + self.mean


def build_wdiffusion(cfg: WDiffusionConfig | dict, *, seed: int = 0) -> WDenoiser:
    """A randomly initialised denoiser (seeded), with identity normalisation until ``set_stats``."""
    cfg = cfg if isinstance(cfg, WDiffusionConfig) else WDiffusionConfig(**cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WDenoiser(cfg)


def save_wdiffusion(model: WDenoiser, path: str | Path, *, metadata: dict | None = None) -> Path:
    """Write weights + normalisation + config (``metadata`` values are JSON-encoded into the header)."""
    return save_model_file(model, path, format=FORMAT, metadata=metadata)


def read_wdiffusion_metadata(path: str | Path) -> dict:
    """The JSON-decoded metadata of a prior file (``config``, ``generator_sha256``, ...)."""
    return _decode_metadata(safetensors_metadata(path))


def _decode_metadata(raw: dict[str, str]) -> dict:
    return {k: (v if k == "format" else json.loads(v)) for k, v in raw.items()}


def load_wdiffusion(path: str | Path, *, device: str | torch.device = "cpu") -> WDenoiser:
    """Load a denoiser written by :func:`save_wdiffusion`, frozen, in eval mode.

    Raises:
        ModelLoadError: missing, unreadable, not a W-diffusion file, a damaged config, or weights that
        miss the config.
    """
    path = Path(path)
    raw, tensors = read_safetensors(path, what="diffusion prior")
    if raw.get("format") != FORMAT:
        raise ModelLoadError(f"{path.name} is not a W-space diffusion prior (format {raw.get('format')!r})")
    try:
        model = WDenoiser(WDiffusionConfig(**_decode_metadata(raw)["config"]))
    except (KeyError, ValueError, TypeError) as e:  # crafted or damaged metadata
        raise ModelLoadError(f"{path.name}: its prior config is missing or damaged: {e}") from e
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise ModelLoadError(f"{path.name}: weights do not match its config: {e}") from e
    return model.to(device).eval().requires_grad_(False)
