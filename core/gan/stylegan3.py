"""StyleGAN3 ("Alias-Free Generative Adversarial Networks", Karras et al. 2021), written for inference
and inversion in Latent Canvas and loaded from NVlabs' pickles by :mod:`core.models.stylegan_pkl`.

What differs from StyleGAN2: the synthesis starts from Fourier features of a learned rotation and
translation (``SynthesisInput``), has no noise inputs and no resolution blocks, and every layer is a
modulated convolution followed by a *filtered* leaky ReLU: upsample by the layer's factor with a
low-pass filter, apply the nonlinearity at the higher rate, low-pass and downsample again. The layer
geometry (cutoffs, stopbands, sampling rates, sizes, channels) follows the paper's geometric
progression from a 2-cycle cutoff to the image's Nyquist rate; the low-pass filters of a loaded model
are its own buffers, so the loader never designs them. Same :class:`Generator` interface as
StyleGAN2: z, w and w+ (``num_ws`` = layers + 2), ``mean_w`` from the mapping's ``w_avg``.

Written from the paper and checked against NVlabs' reference implementation on golden outputs
(``tests/data/golden/make_stylegan3_sg3.py``); no code of theirs is used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.gan.base import Generator
from core.gan.stylegan2 import ClassConditionalMapping, FullyConnectedLayer, MappingNetwork, StyleGAN2Config

SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class StyleGAN3Config:
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 0
    img_resolution: int = 1024
    img_channels: int = 3
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    channel_base: int = 32768
    channel_max: int = 512
    num_layers: int = 14  # excluding the Fourier-feature input and ToRGB
    num_critical: int = 2  # critically sampled layers at the end
    first_cutoff: float = 2.0
    first_stopband: float = 2**2.1
    last_stopband_rel: float = 2**0.3
    margin_size: int = 10
    output_scale: float = 0.25
    conv_kernel: int = 3  # stylegan3-r: 1
    filter_size: int = 6
    lrelu_upsampling: int = 2
    use_radial_filters: bool = False  # stylegan3-r: True
    conv_clamp: float | None = 256
    magnitude_ema_beta: float = 0.999


@dataclass(frozen=True)
class LayerSpec:
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_rate: int
    out_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    is_torgb: bool
    is_critical: bool


def layer_specs(cfg: StyleGAN3Config) -> tuple[dict, list[LayerSpec]]:
    """The input's (channels, size, rate, bandwidth) and every layer's geometry (paper, sec. 3 and
    appendix F: cutoffs and minimum stopbands grow geometrically to the output's Nyquist rate; the
    sampling rate is the smallest power of two above twice the stopband)."""
    n, res = cfg.num_layers, cfg.img_resolution
    last_cutoff = res / 2
    last_stopband = last_cutoff * cfg.last_stopband_rel
    t = np.minimum(np.arange(n + 1) / (n - cfg.num_critical), 1)
    cutoffs = cfg.first_cutoff * (last_cutoff / cfg.first_cutoff) ** t
    stopbands = cfg.first_stopband * (last_stopband / cfg.first_stopband) ** t
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + cfg.margin_size * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((cfg.channel_base / 2) / cutoffs, cfg.channel_max))
    channels[-1] = cfg.img_channels
    first = dict(
        channels=int(channels[0]), size=int(sizes[0]), rate=float(rates[0]), bandwidth=float(cutoffs[0])
    )
    specs = []
    for i in range(n + 1):
        j = max(i - 1, 0)
        specs.append(
            LayerSpec(
                in_channels=int(channels[j]),
                out_channels=int(channels[i]),
                in_size=int(sizes[j]),
                out_size=int(sizes[i]),
                in_rate=int(rates[j]),
                out_rate=int(rates[i]),
                in_cutoff=float(cutoffs[j]),
                out_cutoff=float(cutoffs[i]),
                in_half_width=float(half_widths[j]),
                out_half_width=float(half_widths[i]),
                is_torgb=i == n,
                is_critical=i >= n - cfg.num_critical,
            )  # fmt: skip
        )
    return first, specs


# --- filters --------------------------------------------------------------------------------------


def kaiser_window(numtaps: int, width: float, fs: float) -> np.ndarray:
    """The Kaiser window for a transition band ``width`` (Kaiser's attenuation and beta formulas)."""
    atten = 2.285 * (numtaps - 1) * math.pi * (width / (fs / 2)) + 7.95
    if atten > 50:
        beta = 0.1102 * (atten - 8.7)
    elif atten > 21:
        beta = 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    else:
        beta = 0.0
    return np.kaiser(numtaps, beta)


def kaiser_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> torch.Tensor:
    """A separable windowed-sinc low-pass (Kaiser window), unit DC gain: the 1-D taps of each axis."""
    m = np.arange(numtaps) - (numtaps - 1) / 2
    h = (2 * cutoff / fs) * np.sinc(2 * cutoff / fs * m) * kaiser_window(numtaps, width, fs)
    return torch.as_tensor(h / h.sum(), dtype=torch.float32)


def radial_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> torch.Tensor:
    """A radially symmetric (jinc) low-pass with a separable Kaiser window, unit DC gain (2-D)."""
    from scipy.special import j1  # only to build a new stylegan3-r net; loaded nets carry their filters

    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    with np.errstate(invalid="ignore", divide="ignore"):
        f = j1(2 * cutoff * np.pi * r) / (np.pi * r)
    f[r == 0] = cutoff  # the limit of J1(2 pi c r) / (pi r) at r = 0
    w = kaiser_window(numtaps, width, fs)
    f = f * np.outer(w, w)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


def upfirdn(x: torch.Tensor, f: torch.Tensor | None, *, up: int = 1, down: int = 1, pad=(0, 0, 0, 0),
            gain: float = 1.0) -> torch.Tensor:  # fmt: skip
    """Upsample by zero insertion, pad (x0, x1, y0, y1; negative crops), convolve with ``f`` (1-D:
    separable, 2-D: as is, None: identity) scaled so that its DC gain is ``gain``, keep every
    ``down``-th sample."""
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x0, x1, y0, y1 = pad
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0) : x.shape[2] - max(-y1, 0), max(-x0, 0) : x.shape[3] - max(-x1, 0)]
    if f is not None:
        k = (
            (f * gain ** (f.ndim / 2)).flip(list(range(f.ndim))).to(x.dtype)
        )  # a convolution, not a correlation
        if f.ndim == 1:
            x = F.conv2d(x, k[None, None, None, :].expand(c, 1, 1, -1), groups=c)
            x = F.conv2d(x, k[None, None, :, None].expand(c, 1, -1, 1), groups=c)
        else:
            x = F.conv2d(x, k[None, None].expand(c, 1, -1, -1), groups=c)
    elif gain != 1:
        x = x * gain
    return x[:, :, ::down, ::down] if down > 1 else x


def filtered_lrelu(x, fu, fd, b, *, up: int, down: int, pad, gain: float, slope: float, clamp):
    """Bias, upsample (low-pass ``fu``), leaky ReLU x gain and clamp at the higher rate, then low-pass
    ``fd`` and downsample: the alias-free nonlinearity of the paper (sec. 3.2)."""
    x = x + b.reshape(1, -1, 1, 1)
    x = upfirdn(x, fu, up=up, pad=pad, gain=up**2)
    x = F.leaky_relu(x, slope) * gain if slope != 1 else x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return upfirdn(x, fd, down=down)


# --- layers ---------------------------------------------------------------------------------------


class SynthesisInput(nn.Module):
    """Fourier features on a grid, rotated and translated by an affine map of w."""

    def __init__(self, w_dim: int, channels: int, size: int, rate: float, bandwidth: float):
        super().__init__()
        self.channels, self.size, self.rate, self.bandwidth = channels, size, rate, bandwidth
        freqs = torch.randn([channels, 2])  # a random frequency in the disc of radius `bandwidth`
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4, bias_init=0.0)
        with torch.no_grad():  # identity rotation and no translation to start with
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3, 3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand([channels]) - 0.5)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        n, dev = w.shape[0], w.device
        t = self.affine(w)  # (cos, sin, tx, ty), rotation normalised to unit length
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        rot = torch.eye(3, device=dev).repeat(n, 1, 1)
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        shift = torch.eye(3, device=dev).repeat(n, 1, 1)
        shift[:, 0, 2], shift[:, 1, 2] = -t[:, 2], -t[:, 3]
        m = rot @ shift @ self.transform.unsqueeze(0)  # [N, 3, 3]: the inverse map of the image
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ m[:, :2, 2:]).squeeze(2)  # [N, C]
        freqs = self.freqs.unsqueeze(0) @ m[:, :2, :2]  # [N, C, 2]
        # fade out frequencies a transform pushed beyond the band the layer can represent
        amp = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.rate / 2 - self.bandwidth)).clamp(0, 1)
        theta = torch.zeros(1, 2, 3, device=dev)
        theta[0, 0, 0] = theta[0, 1, 1] = 0.5 * self.size / self.rate
        grid = F.affine_grid(theta, [1, 1, self.size, self.size], align_corners=False)  # [1, H, W, 2]
        x = torch.einsum("bhwk,nck->nhwc", grid, freqs) + phases[:, None, None, :]  # [N, H, W, C]
        x = torch.sin(x * (2 * math.pi)) * amp[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2).contiguous()  # [N, C, H, W]


class SynthesisLayer(nn.Module):
    """Modulated conv (ToRGB: 1x1, no demodulation) and the filtered leaky ReLU."""

    def __init__(self, w_dim: int, spec: LayerSpec, cfg: StyleGAN3Config, *, design_filters: bool = True):
        super().__init__()
        s = spec
        self.is_torgb, self.in_channels = s.is_torgb, s.in_channels
        self.conv_kernel = 1 if s.is_torgb else cfg.conv_kernel
        self.conv_clamp = cfg.conv_clamp
        self.affine = FullyConnectedLayer(w_dim, s.in_channels, bias_init=1.0)
        self.weight = nn.Parameter(
            torch.randn([s.out_channels, s.in_channels, self.conv_kernel, self.conv_kernel])
        )
        self.bias = nn.Parameter(torch.zeros([s.out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))
        tmp_rate = max(s.in_rate, s.out_rate) * (1 if s.is_torgb else cfg.lrelu_upsampling)
        self.up, self.down = int(round(tmp_rate / s.in_rate)), int(round(tmp_rate / s.out_rate))
        up_taps = cfg.filter_size * self.up if self.up > 1 and not s.is_torgb else 1
        down_taps = cfg.filter_size * self.down if self.down > 1 and not s.is_torgb else 1
        radial = cfg.use_radial_filters and not s.is_critical

        def lowpass(taps, cutoff, half_width, radial_=False):
            if taps == 1:
                return None
            if not design_filters:  # the loader assigns the pickle's own filter
                return torch.empty([taps, taps] if radial_ else [taps])
            make = radial_lowpass if radial_ else kaiser_lowpass
            return make(taps, cutoff, half_width * 2, tmp_rate)

        self.register_buffer("up_filter", lowpass(up_taps, s.in_cutoff, s.in_half_width))
        self.register_buffer("down_filter", lowpass(down_taps, s.out_cutoff, s.out_half_width, radial))
        # Padding that keeps sample positions where the symmetric interpretation puts them.
        total = (s.out_size - 1) * self.down + 1 - (s.in_size + self.conv_kernel - 1) * self.up
        total += up_taps + down_taps - 2
        lo = (total + self.up) // 2
        self.pad = (lo, total - lo, lo, total - lo)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # [N, I]
        weight = self.weight
        if self.is_torgb:
            styles = styles / math.sqrt(self.in_channels * self.conv_kernel**2)
        else:  # normalise weight and styles before modulating (keeps fp16 in range; same result)
            weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
            styles = styles * styles.square().mean().rsqrt()
        # Modulation as an input scale and demodulation as an output scale around one ordinary conv:
        # equal to the per-sample modulated weights, with no per-sample weight tensors.
        x = x * (styles * self.magnitude_ema.rsqrt()).unsqueeze(2).unsqueeze(3)
        x = F.conv2d(x, weight, padding=self.conv_kernel - 1)
        if not self.is_torgb:
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, O]
            x = x * dcoefs[:, :, None, None]
        return filtered_lrelu(
            x, self.up_filter, self.down_filter, self.bias, up=self.up, down=self.down, pad=self.pad,
            gain=1.0 if self.is_torgb else SQRT2, slope=1.0 if self.is_torgb else 0.2, clamp=self.conv_clamp,
        )  # fmt: skip


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: StyleGAN3Config, *, design_filters: bool = True):
        super().__init__()
        first, specs = layer_specs(cfg)
        self.output_scale = cfg.output_scale
        self.input = SynthesisInput(
            cfg.w_dim, first["channels"], first["size"], first["rate"], first["bandwidth"]
        )
        self.layer_names = []
        for i, spec in enumerate(specs):
            name = f"L{i}_{spec.out_size}_{spec.out_channels}"  # as NVlabs name them: pickles load by name
            setattr(self, name, SynthesisLayer(cfg.w_dim, spec, cfg, design_filters=design_filters))
            self.layer_names.append(name)
        self.num_ws = len(specs) + 1

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:], strict=True):
            x = getattr(self, name)(x, w)
        return x * self.output_scale if self.output_scale != 1 else x


class StyleGAN3Generator(ClassConditionalMapping, Generator):
    """StyleGAN3 (-t or -r) with z, w and w+ latent spaces; deterministic (it has no noise inputs)."""

    def __init__(self, cfg: StyleGAN3Config | None = None, *, design_filters: bool = True, **overrides):
        super().__init__()
        cfg = cfg or StyleGAN3Config(**overrides)
        self.cfg = cfg
        self.z_dim, self.w_dim, self.resolution, self.c_dim = (
            cfg.z_dim,
            cfg.w_dim,
            cfg.img_resolution,
            cfg.c_dim,
        )
        self.synthesis_net = SynthesisNetwork(cfg, design_filters=design_filters)
        self.num_ws = self.synthesis_net.num_ws
        self.mapping_net = MappingNetwork(
            StyleGAN2Config(
                z_dim=cfg.z_dim,
                w_dim=cfg.w_dim,
                c_dim=cfg.c_dim,
                mapping_layers=cfg.mapping_layers,
                mapping_lr_multiplier=cfg.mapping_lr_multiplier,
            )  # fmt: skip
        )
        self.class_label = 0

    def synthesis(self, ws):
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        return self.synthesis_net(ws)

    def config_dict(self) -> dict:
        return {"arch": "stylegan3", **asdict(self.cfg)}

    @classmethod
    def from_config(cls, d: dict, *, design_filters: bool = False) -> StyleGAN3Generator:
        """For loading: the weights file carries the filters (so building one needs no scipy)."""
        return cls(
            StyleGAN3Config(**{k: v for k, v in d.items() if k != "arch"}), design_filters=design_filters
        )
