"""A StyleGAN2 generator (Karras et al. 2020) with the parameter layout of NVlabs' StyleGAN2-ADA.

Parameter and buffer names, initialisation scales and the forward arithmetic follow the official
``training/networks.py`` so that a state dict read from an official ``.pkl`` (see
:mod:`core.models.stylegan_pkl`) loads unchanged and renders the same image. Written in plain
PyTorch (no custom CUDA ops): the nets we ship are 64 px and run on CPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.gan.base import Generator, LatentSpace
from core.gan.frozen import frozen

LRELU_GAIN = math.sqrt(2)


@dataclass(frozen=True)
class StyleGAN2Config:
    z_dim: int = 512  # input latent size
    w_dim: int = 512  # intermediate latent size
    img_resolution: int = 1024  # output resolution, a power of two >= 4
    img_channels: int = 3
    mapping_layers: int = 8  # fully connected layers in the mapping network
    mapping_lr_multiplier: float = 0.01  # equalised-lr multiplier of the mapping network
    channel_base: int = 32768  # channels at resolution r are min(channel_base // r, channel_max)
    channel_max: int = 512
    conv_clamp: float | None = None  # clamp conv outputs to +-this (official configs use 256)
    resample_filter: tuple[int, ...] = field(default=(1, 3, 3, 1))
    c_dim: int = 0  # class labels of a conditional generator (0: unconditional)
    embed_features: int | None = None  # the label embedding's size (None: w_dim), as official

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)


def setup_filter(taps) -> torch.Tensor:
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    *,
    up: int = 1,
    padding=(0, 0, 0, 0),
    gain: float = 1.0,
    owner: nn.Module | None = None,
):
    """Upsample by zero insertion, pad, then FIR-filter (depthwise); padding is (x0, x1, y0, y1).

    ``owner``: the module that owns ``f``, to keep the depthwise kernel while frozen (see :func:`frozen`).
    """
    n, c, h, w = x.shape
    x0, x1, y0, y1 = padding

    def kernel(flip: bool) -> torch.Tensor:
        def make(f: torch.Tensor) -> torch.Tensor:
            k = f * gain
            return (k.flip([0, 1]) if flip else k)[None, None].repeat(c, 1, 1, 1).to(x.dtype)

        return make(f) if owner is None else frozen(owner, f"fir_{c}_{gain}_{x.dtype}_{flip}", make, f)

    if up > 1:
        crop, extra = f.shape[-1] - 1 - x0, x1 - x0 + up - 1
        if (x0, x1) == (y0, y1) and crop >= 0 and 0 <= extra < up:
            # Zero insertion, pad and FIR in one transposed depthwise conv (the unflipped filter); the
            # speed-up is measured in docs/performance.md ("Measured choices in the code").
            return F.conv_transpose2d(
                x, kernel(False), stride=up, padding=crop, output_padding=extra, groups=c
            )
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    if x0 == x1 >= 0 and y0 == y1 >= 0:  # the conv pads: F.pad would copy forward and backward
        return F.conv2d(x, kernel(True), groups=c, padding=(y0, x0))
    return F.conv2d(F.pad(x, [x0, x1, y0, y1]), kernel(True), groups=c)


def bias_act(x: torch.Tensor, b: torch.Tensor, *, lrelu: bool, gain: float, clamp: float | None):
    x = x + b.reshape(1, -1, 1, 1)
    if lrelu:
        x = F.leaky_relu(x, 0.2)
    x = x * gain
    return x.clamp(-clamp, clamp) if clamp is not None else x


class FullyConnectedLayer(nn.Module):
    def __init__(self, in_features, out_features, *, lrelu=False, lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.lrelu = lrelu
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        weight = frozen(self, "weight", lambda w: w * self.weight_gain, self.weight)
        bias = frozen(self, "bias", lambda b: b * self.bias_gain, self.bias)
        x = F.linear(x, weight, bias)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.lrelu else x


def _normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


class MappingNetwork(nn.Module):
    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        self.num_layers, self.c_dim = cfg.mapping_layers, cfg.c_dim
        embed = (cfg.embed_features or cfg.w_dim) if cfg.c_dim else 0
        if cfg.c_dim:  # official: the one-hot label through a linear layer, normalised, beside z
            self.embed = FullyConnectedLayer(cfg.c_dim, embed)
        dims = [cfg.z_dim + embed] + [cfg.w_dim] * cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            layer = FullyConnectedLayer(
                dims[i], dims[i + 1], lrelu=True, lr_multiplier=cfg.mapping_lr_multiplier
            )
            setattr(self, f"fc{i}", layer)
        self.register_buffer("w_avg", torch.zeros([cfg.w_dim]))

    def forward(self, z, c=None):
        x = _normalize_2nd_moment(z)
        if self.c_dim:
            x = torch.cat([x, _normalize_2nd_moment(self.embed(c.to(x.dtype)))], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x  # [N, w_dim]


def modulated_conv2d(
    x,
    weight,
    styles,
    *,
    demodulate=True,
    up=1,
    padding=0,
    resample_filter=None,
    fused=True,
    owner: nn.Module | None = None,
):
    """Modulated convolution, x [N, I, H, W], weight [O, I, k, k], styles [N, I].

    ``fused``: one grouped conv where every sample gets its own kernel (official StyleGAN2's path
    outside training). Unfused: scale the activations by the styles, convolve with the shared
    kernel, scale by the demodulation coefficients (official ``fused_modconv=False``). Both compute
    the same function; unfused is much faster wherever the generator is frozen and only the latent
    needs gradients (inversion): the kernel then needs no weight gradient, and CPU conv libraries
    keep one kernel layout instead of re-packing N per-sample kernels every call (see bench/).
    ``owner``: the layer owning ``weight``, to keep weight-only terms while frozen (:func:`frozen`).
    """
    if not fused:
        return _modulated_conv2d_unfused(x, weight, styles, demodulate, up, padding, resample_filter, owner)
    n, in_ch, h, w_ = x.shape
    out_ch, _, kh, kw = weight.shape
    wgt = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        wgt = wgt * (wgt.square().sum([2, 3, 4]) + 1e-8).rsqrt().reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, n * in_ch, h, w_)
    if up == 1:
        x = F.conv2d(x, wgt.reshape(n * out_ch, in_ch, kh, kw), padding=padding, groups=n)
    else:
        # Transposed conv then the [1,3,3,1] FIR, as conv2d_resample does for up=2, k=3.
        wgt = wgt.transpose(1, 2).reshape(n * in_ch, out_ch, kh, kw)
        x = F.conv_transpose2d(x, wgt, stride=up, groups=n)
        x = _up_fir(x, resample_filter, up, padding, kw, owner)
    return x.reshape(n, out_ch, *x.shape[2:])


def _up_fir(x, resample_filter, up, padding, kw, owner=None):
    fw = resample_filter.shape[-1]
    p0 = padding + (fw + up - 1) // 2 - (kw - 1)
    p1 = padding + (fw - up) // 2 - (kw - up)
    return upfirdn2d(x, resample_filter, padding=(p0, p1, p0, p1), gain=up**2, owner=owner)


def _modulated_conv2d_unfused(x, weight, styles, demodulate, up, padding, resample_filter, owner=None):
    if weight.shape[-2:] == (1, 1) and up == 1:
        # A 1x1 kernel (toRGB) is a per-sample [O, I] matrix: modulating that small matrix and one
        # batched matmul beat scaling the whole activation then a 1x1 conv (docs/performance.md).
        n, _, h, w_ = x.shape
        wgt = weight.flatten(1).unsqueeze(0) * styles.unsqueeze(1)  # [N, O, I]
        x = torch.bmm(wgt, x.reshape(n, x.shape[1], h * w_)).reshape(n, -1, h, w_)
    else:
        x = _modulated_conv2d_spatial(x, weight, styles, up, padding, resample_filter, owner)
    if demodulate:
        dcoefs = demodulation(weight, styles, owner)
        x = x * dcoefs.reshape(*dcoefs.shape, 1, 1)
    return x


def demodulation(weight: torch.Tensor, styles: torch.Tensor, owner: nn.Module | None = None) -> torch.Tensor:
    """The demodulation coefficients [N, O] of ``weight`` [O, I, k, k] modulated by ``styles`` [N, I]:
    ``sum_i,k (w_oik s_i)^2 = s^2 @ (sum_k w_oik^2)^T``, so the kernel's square sums are weight-only."""

    def sq_sums(w: torch.Tensor) -> torch.Tensor:
        return w.square().sum([2, 3]).T.contiguous()  # [I, O]

    wsq = sq_sums(weight) if owner is None else frozen(owner, "demod", sq_sums, weight)
    return torch.addmm(wsq.new_full((), 1e-8), styles.square(), wsq).rsqrt()


def _modulated_conv2d_spatial(x, weight, styles, up, padding, resample_filter, owner):
    x = x * styles.reshape(*styles.shape, 1, 1)  # modulate the input channels
    if up == 1:
        x = F.conv2d(x, weight, padding=padding)
    else:
        # conv_transpose2d wants [I, O, k, k]; a transposed view would be copied on every call,
        # forward and backward (the largest copies of a 64 px step), so the copy is kept while frozen.
        wt = frozen(owner, "weight_t", _transposed, weight) if owner is not None else _transposed(weight)
        x = F.conv_transpose2d(x, wt, stride=up)
        x = _up_fir(x, resample_filter, up, padding, weight.shape[-1], owner)
    return x


def _transposed(weight: torch.Tensor) -> torch.Tensor:
    return weight.transpose(0, 1).contiguous()


class SynthesisLayer(nn.Module):
    def __init__(
        self, in_channels, out_channels, w_dim, resolution, *, up=1, conv_clamp=None, resample_filter
    ):
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.fused_modconv = False  # see modulated_conv2d; StyleGAN2Generator.set_fused_modconv
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("resample_filter", resample_filter.clone())  # own copy, as official

    def forward(self, x, w, noise_mode="const"):
        return self.forward_styles(x, self.affine(w), noise_mode)

    def forward_styles(self, x, styles, noise_mode="const"):
        """The layer given its styles [N, in_channels] (the affine's output: Style space) directly."""
        if not self.fused_modconv and noise_mode in ("const", "none"):
            return self._forward_unfused(x, styles, noise_mode)
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            up=self.up,
            padding=1,
            resample_filter=self.resample_filter,
            fused=self.fused_modconv,
            owner=self,
        )
        if noise_mode == "random":
            x = x + torch.randn_like(x[:, :1]) * self.noise_strength
        elif noise_mode == "const":
            x = x + frozen(self, "noise", torch.mul, self.noise_const, self.noise_strength)
        return bias_act(x, self.bias, lrelu=True, gain=LRELU_GAIN, clamp=self.conv_clamp)

    def _forward_unfused(self, x, styles, noise_mode):
        """The unfused modulated conv with its epilogue in two ops, not five: for the gain g > 0,
        ``lrelu(x d + noise + b) g = lrelu(x (d g) + (noise + b) g)``, and ``(noise + b) g`` is
        weight-only (kept while frozen). Measured at 64 px, batch 1: see bench/."""
        x = _modulated_conv2d_spatial(x, self.weight, styles, self.up, 1, self.resample_filter, self)
        scale = demodulation(self.weight, styles, self) * LRELU_GAIN  # [N, O]
        g = LRELU_GAIN
        if noise_mode == "const":
            deps = (self.bias, self.noise_const, self.noise_strength)
            add = frozen(self, "shift_const", lambda b, n, s: (n * s + b.reshape(-1, 1, 1)) * g, *deps)
        else:  # [O, 1, 1]: the bias alone
            add = frozen(self, "shift_none", lambda b: b.reshape(-1, 1, 1) * g, self.bias)
        x = F.leaky_relu(torch.addcmul(add, x, scale.reshape(*scale.shape, 1, 1)), 0.2)
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class ToRGBLayer(nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, *, conv_clamp=None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.fused_modconv = False

    def forward(self, x, w):
        return self.forward_styles(x, self.affine(w))

    def forward_styles(self, x, styles):
        """The layer given its affine's raw output [N, in_channels] (Style space)."""
        styles = styles * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=self.fused_modconv, owner=self)
        return bias_act(x, self.bias, lrelu=False, gain=1.0, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the 'skip' architecture: (up-)conv, conv, toRGB added to the upsampled image."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, cfg: StyleGAN2Config):
        super().__init__()
        self.in_channels = in_channels
        self.register_buffer("resample_filter", setup_filter(cfg.resample_filter))
        kw = dict(conv_clamp=cfg.conv_clamp, resample_filter=self.resample_filter)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, **kw)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, **kw)
        self.torgb = ToRGBLayer(out_channels, cfg.img_channels, w_dim, conv_clamp=cfg.conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def layers(self) -> list[nn.Module]:
        """The modulated layers in the order they take ws (and styles): (conv0,) conv1, torgb."""
        return ([] if self.in_channels == 0 else [self.conv0]) + [self.conv1, self.torgb]

    def forward(self, x, img, ws, noise_mode="const"):
        styles = [layer.affine(w) for layer, w in zip(self.layers(), ws.unbind(1), strict=True)]
        return self.forward_styles(x, img, styles, noise_mode)

    def forward_styles(self, x, img, styles, noise_mode="const"):
        s_iter = iter(styles)
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(styles[0].shape[0], -1, -1, -1)
        else:
            x = self.conv0.forward_styles(x, next(s_iter), noise_mode)
        x = self.conv1.forward_styles(x, next(s_iter), noise_mode)
        if img is not None:
            img = upfirdn2d(img, self.resample_filter, up=2, padding=(2, 1, 2, 1), gain=4, owner=self)
        y = self.torgb.forward_styles(x, next(s_iter))
        return x, (img + y if img is not None else y)


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        self.block_resolutions = [2**i for i in range(2, int(np.log2(cfg.img_resolution)) + 1)]
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = cfg.channels(res // 2) if res > 4 else 0
            block = SynthesisBlock(in_ch, cfg.channels(res), cfg.w_dim, res, cfg)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last block's toRGB

    def forward(self, ws, noise_mode="const"):
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            # A block's toRGB shares its w with the next block's first conv (official layout).
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, noise_mode)
        return img

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def style_dims(self) -> list[int]:
        """Channels of every modulated layer's style, in Style-space order (block by block)."""
        return [layer.affine.weight.shape[0] for block in self.blocks() for layer in block.layers()]

    def styles(self, ws) -> list[torch.Tensor]:
        """Every modulated layer's style [N, channels] for ``ws`` [N, num_ws, w_dim] (Style space, S:
        the affine outputs; Wu et al. 2021, and the seed's second diffusion model)."""
        out, w_idx = [], 0
        for block in self.blocks():
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            out += [layer.affine(w) for layer, w in zip(block.layers(), block_ws.unbind(1), strict=True)]
        return out

    def forward_styles(self, styles: list[torch.Tensor], noise_mode="const"):
        x = img = None
        i = 0
        for block in self.blocks():
            n = len(block.layers())
            x, img = block.forward_styles(x, img, styles[i : i + n], noise_mode)
            i += n
        return img


class ClassConditionalMapping:
    """``set_class`` and ``mapping`` for StyleGAN generators (2 and 3): a conditional generator's
    mapping gets the one-hot label of ``class_label``; an unconditional one gets z alone. Needs
    ``mapping_net``, ``c_dim`` and ``class_label`` on the generator."""

    def set_class(self, label: int | None) -> None:
        """The class label every later :meth:`mapping` uses (conditional generators; None: 0)."""
        label = 0 if label is None else int(label)
        if self.c_dim == 0 and label != 0:
            raise ValueError("this generator is unconditional: it has no class labels")
        if self.c_dim and not 0 <= label < self.c_dim:
            raise ValueError(f"class label must be in 0..{self.c_dim - 1}, got {label}")
        self.class_label = label

    def mapping(self, z):
        if not self.c_dim:
            return self.mapping_net(z)
        c = torch.zeros(z.shape[0], self.c_dim, device=z.device, dtype=z.dtype)
        c[:, self.class_label] = 1
        return self.mapping_net(z, c)


class StyleGAN2Generator(ClassConditionalMapping, Generator):
    """StyleGAN2 with z, w, w+ and Style-space (s) latents. ``synthesis`` uses constant noise
    (deterministic)."""

    latent_spaces = (LatentSpace.Z, LatentSpace.W, LatentSpace.W_PLUS, LatentSpace.S)

    def __init__(self, cfg: StyleGAN2Config | None = None, **overrides):
        super().__init__()
        cfg = cfg or StyleGAN2Config(**overrides)
        if cfg.img_resolution < 4 or cfg.img_resolution & (cfg.img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {cfg.img_resolution}")
        self.cfg = cfg
        self.z_dim, self.w_dim, self.resolution = cfg.z_dim, cfg.w_dim, cfg.img_resolution
        self.synthesis_net = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis_net.num_ws
        self.mapping_net = MappingNetwork(cfg)
        self.noise_mode = "const"
        self.c_dim = cfg.c_dim
        self.class_label = 0  # the class a conditional generator's mapping draws from (set_class)

    def set_fused_modconv(self, fused: bool) -> StyleGAN2Generator:
        """Choose the modulated-conv implementation (same function; see :func:`modulated_conv2d`)."""
        for m in self.modules():
            if hasattr(m, "fused_modconv"):
                m.fused_modconv = fused
        return self

    def synthesis(self, ws):
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        return self.synthesis_net(ws, self.noise_mode)

    @property
    def s_dim(self) -> int:
        return sum(self.synthesis_net.style_dims())

    def styles(self, ws: torch.Tensor) -> torch.Tensor:
        """Style space: ``ws`` [N, num_ws, w_dim] -> s [N, s_dim], every layer's affine output in a row."""
        return torch.cat(self.synthesis_net.styles(ws), dim=1)

    def synthesis_styles(self, s: torch.Tensor) -> torch.Tensor:
        """Render Style-space latents ``s`` [N, s_dim] (as :meth:`styles` makes them)."""
        if s.ndim != 2 or s.shape[1] != self.s_dim:
            raise ValueError(f"s must be [N, {self.s_dim}], got {list(s.shape)}")
        return self.synthesis_net.forward_styles(
            list(s.split(self.synthesis_net.style_dims(), 1)), self.noise_mode
        )

    def config_dict(self) -> dict:
        d = asdict(self.cfg)
        d["resample_filter"] = list(d["resample_filter"])
        return {"arch": "stylegan2", **d}

    @classmethod
    def from_config(cls, d: dict) -> StyleGAN2Generator:
        d = {k: v for k, v in d.items() if k != "arch"}
        d["resample_filter"] = tuple(d.get("resample_filter", (1, 3, 3, 1)))
        return cls(StyleGAN2Config(**d))
