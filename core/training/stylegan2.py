"""Train the bundled StyleGAN2 on procedural cat faces, and export it.

    python -m core.training.stylegan2 --out runs/sg2-cats64 --minutes 75
    python -m core.training.stylegan2 --out runs/sg2-cats64 --resume --minutes 90
    python -m core.training.stylegan2 export --run runs/sg2-cats64 \\
        --out resources/models/stylegan2-cats64.safetensors

The recipe is StyleGAN2-ADA's (Karras et al. 2020, ``training/loss.py`` and ``training_loop.py``)
without ADA and without path-length regularisation:

- non-saturating logistic loss; lazy R1 on reals every ``r1_interval`` iterations, with Adam's lr and
  betas corrected for the lazy interval (``mb_ratio``), as official;
- a residual discriminator with minibatch standard deviation and equalised learning rate;
- G_ema with a half-life of ``ema_kimg`` thousand images, ramped up over the first iterations;
- style mixing regularisation; random per-pixel noise while training (the exported G_ema renders
  with its stored constant noise).

Path-length regularisation is left out because of the CPU budget: official runs it every 4th
iteration on half a batch, an extra synthesis pass with a double backward through G, for smoother
W interpolation at high resolution. Our 64 px nets get about an hour on 2 CPU cores (about 10
images/s), where every image shown matters more; it can come back for a run on a GPU.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.gan.stylegan2 import (
    LRELU_GAIN,
    FullyConnectedLayer,
    StyleGAN2Config,
    StyleGAN2Generator,
    setup_filter,
)
from core.models.io import save_generator
from core.prior.wstats import write_w_stats
from core.training.common import (
    BEST,
    CHECKPOINT,
    ImageBank,
    change_main,
    config_from,
    export_facts,
    load_checkpoint,
    rng_state,
    run_training,
    seed_everything,
    set_rng_state,
    setup_logging,
    write_sidecar,
)
from core.training.projected import diff_augment

log = logging.getLogger("latent_canvas.training")

PROG = "python -m core.training.stylegan2"
SAMPLE_SEED = 2024  # the fixed z of the progress grids (independent of the run's seed)
NUM_SAMPLES = 32


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0  # seeds the initial weights, batches, z, noise and style mixing
    resolution: int = 64  # image size, a power of two
    z_dim: int = 128  # G input latent size
    w_dim: int = 128  # G intermediate latent size
    mapping_layers: int = 4  # fully connected layers of G's mapping network
    mapping_lr: float = 0.01  # equalised-lr multiplier of the mapping network (official 0.01)
    # Channels at resolution r: min(channel_base // r, channel_max); 2048/128 gives 128 up to 16 px,
    # 64 at 32 px and 32 at 64 px: about twice the images/s of 4096/128 on a 2-core CPU.
    channel_base: int = 2048  # G
    channel_max: int = 128
    d_channel_base: int = 2048  # D
    d_channel_max: int = 128
    mbstd_group: int = 4  # minibatch-stddev group size (the batch should be a multiple)
    batch: int = 16  # images per iteration
    lr: float = 0.0025  # Adam lr of G and D (D's is scaled for lazy R1)
    r1_gamma: float = 0.5  # R1 weight (official heuristic 0.0002 * res^2 / batch = 0.05); 0: off
    r1_interval: int = 16  # lazy R1: every this many iterations, scaled up by it
    ema_kimg: float = 10.0  # G_ema half-life in thousand images
    ema_rampup: float = 0.05  # half-life at most this fraction of the images shown so far; 0: none
    style_mixing: float = 0.9  # probability of mixing two w's at a random layer
    n_train: int = 20_000  # pre-rendered training images
    data_seed: int = 0  # first training-split index of the procedural set (core.data.procedural)
    flip: bool = True  # random horizontal flips of the training images
    # Distillation (core.training.distill): first regress G(z) onto the renderer's image for z with
    # L1 + the bundled perceptual loss, then train adversarially with that regression kept beside the
    # GAN loss at `adv_distill_weight`. 0: the plain GAN recipe from the start.
    distill_kimg: float = 0.0  # thousand images of regression before the adversarial phase
    distill_pairs: int = 100_000  # pre-rendered (z, image) pairs
    distill_perceptual: float = 1.0  # perceptual weight beside L1 (weight 1)
    adv_distill_weight: float = 0.0  # regression weight beside the GAN loss after distill_kimg; 0: none
    distill_lr: float = 0.0  # G's Adam lr while distilling (0: lr)
    distill_beta1: float = 0.0  # G's Adam beta1 while distilling (the GAN phase uses 0, as official)
    # Projected discriminator (core.training.projected): a second D on the frozen tiny CLIP's feature
    # maps beside the pixel D, its hinge loss added to G's at `proj_weight`. 0: the plain recipe.
    proj_weight: float = 0.0
    proj_channels: int = 64  # width of its fixed random projections
    proj_lr: float = 0.002  # its Adam lr (betas 0, 0.99 as the paper)
    proj_augment: str = ""  # DiffAugment policies before its features ("color,translation,cutout"; "": none)
    fid_samples: int = 0  # learning curve: tiny-CLIP FID of this many G_ema samples per checkpoint
    # A run started --init-from an export has a fresh D: it trains alone against the frozen G for this
    # many thousand images first. On an H200 (2026-12-04) a fresh D sat at chance for ~80 kimg while G,
    # pushed by it, drifted from FID 7.3 to 16.7 (docs/training.md). 0: G trains from the first step.
    d_warmup_kimg: float = 0.0
    # Arithmetic of the G and D passes: "fp32"; "bf16" (autocast: convolutions and matmuls in bf16;
    # losses, the R1 penalty, optimisers, G_ema and the mapping network stay fp32); "auto" (bf16 where
    # the hardware has native bf16 kernels, see bf16_native, else fp32). bench --only train compares
    # speed; in a 9-minute A/B on a CPU, bf16 trained worse per minute (docs/training.md): fp32 default.
    precision: str = "fp32"

    def generator_config(self) -> StyleGAN2Config:
        return StyleGAN2Config(
            z_dim=self.z_dim,
            w_dim=self.w_dim,
            img_resolution=self.resolution,
            mapping_layers=self.mapping_layers,
            mapping_lr_multiplier=self.mapping_lr,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
        )


# --- discriminator ------------------------------------------------------------------------------


def blur(x: torch.Tensor, f: torch.Tensor, pad: int) -> torch.Tensor:
    """Depthwise FIR filter with ``pad`` zeros on every side (``f`` is symmetric: no flip needed)."""
    c = x.shape[1]
    return F.conv2d(F.pad(x, [pad] * 4), f[None, None].expand(c, 1, *f.shape).to(x.dtype), groups=c)


class Conv2dLayer(nn.Module):
    """Equalised-lr conv, optionally (FIR blur then stride 2) downsampling, bias and lrelu."""

    def __init__(
        self, in_ch, out_ch, kernel, *, bias=True, activation=True, down=False, resample_filter=None
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn([out_ch, in_ch, kernel, kernel]))
        self.bias = nn.Parameter(torch.zeros([out_ch])) if bias else None
        self.weight_gain = 1 / math.sqrt(in_ch * kernel**2)
        self.act_gain = LRELU_GAIN if activation else 1.0
        self.activation, self.down, self.padding = activation, down, kernel // 2
        if down:
            self.register_buffer("resample_filter", resample_filter.clone())

    def forward(self, x, gain: float = 1.0):
        w = self.weight * self.weight_gain
        if self.down:
            # Same geometry as official conv2d_resample(down=2) with the [1,3,3,1] filter.
            x = F.conv2d(blur(x, self.resample_filter, self.padding + 1), w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.padding)
        if self.bias is not None:
            x = x + self.bias.reshape(1, -1, 1, 1)
        if self.activation:
            x = F.leaky_relu(x, 0.2)
        return x * (self.act_gain * gain)


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs (the second downsamples) plus a 1x1 downsampling skip."""

    def __init__(self, tmp_ch, out_ch, *, from_rgb: bool, resample_filter):
        super().__init__()
        if from_rgb:
            self.fromrgb = Conv2dLayer(3, tmp_ch, 1)
        self.conv0 = Conv2dLayer(tmp_ch, tmp_ch, 3)
        self.conv1 = Conv2dLayer(tmp_ch, out_ch, 3, down=True, resample_filter=resample_filter)
        self.skip = Conv2dLayer(
            tmp_ch, out_ch, 1, bias=False, activation=False, down=True, resample_filter=resample_filter
        )

    def forward(self, x):
        if hasattr(self, "fromrgb"):
            x = self.fromrgb(x)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append the std over groups of samples (strided, as official), averaged to one channel."""
    n, c, h, w = x.shape
    g = min(group, n)
    while n % g:
        g -= 1
    y = x.reshape(g, -1, c, h, w)  # [G, n/G, C, H, W]
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()  # [n/G, C, H, W]
    y = y.mean([1, 2, 3]).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)  # [n, 1, H, W]
    return torch.cat([x, y], 1)


class Discriminator(nn.Module):
    """StyleGAN2's residual discriminator: image [N, 3, R, R] in [-1, 1] -> logits [N]."""

    def __init__(self, resolution: int, *, channel_base: int, channel_max: int, mbstd_group: int = 4):
        super().__init__()

        def ch(res: int) -> int:
            return min(channel_base // res, channel_max)

        f = setup_filter((1, 3, 3, 1))
        self.block_resolutions = [2**i for i in range(int(math.log2(resolution)), 2, -1)]
        for res in self.block_resolutions:
            block = DiscriminatorBlock(ch(res), ch(res // 2), from_rgb=res == resolution, resample_filter=f)
            setattr(self, f"b{res}", block)
        self.mbstd_group = mbstd_group
        self.conv = Conv2dLayer(ch(4) + 1, ch(4), 3)
        self.fc = FullyConnectedLayer(ch(4) * 16, ch(4), lrelu=True)
        self.out = FullyConnectedLayer(ch(4), 1)

    def forward(self, img):
        x = img
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x)
        x = self.conv(minibatch_stddev(x, self.mbstd_group))  # [N, C, 4, 4]
        return self.out(self.fc(x.flatten(1))).squeeze(1)


# --- trainer ------------------------------------------------------------------------------------


PRECISIONS = ("fp32", "bf16", "auto")


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` has native bf16 kernels: a CUDA GPU that supports bf16, or a CPU with
    AVX512-BF16 or AMX (chosen by capability, not by timing; elsewhere bf16 is emulated and slower:
    docs/training.md)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return device.type == "cpu" and (cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision == "bf16" or (precision == "auto" and bf16_native(device))


class StyleGAN2Trainer:
    """Holds G, D, G_ema, their optimisers and the RNG; one :meth:`step` is one iteration."""

    def __init__(self, cfg: TrainConfig, device: torch.device, bank: ImageBank):
        if bank.resolution != cfg.resolution:
            raise ValueError(f"training images are {bank.resolution} px, the config says {cfg.resolution}")
        self.cfg, self.device, self.bank, self.batch = cfg, torch.device(device), bank, cfg.batch
        self.gen = seed_everything(cfg.seed)
        self.bf16 = use_bf16(cfg.precision, self.device)
        self.G = StyleGAN2Generator(cfg.generator_config()).to(self.device).train()
        self.G.noise_mode = "random"
        self.D = Discriminator(
            cfg.resolution,
            channel_base=cfg.d_channel_base,
            channel_max=cfg.d_channel_max,
            mbstd_group=cfg.mbstd_group,
        ).to(self.device, memory_format=torch.channels_last)  # ~25% faster convs on CPU (mkldnn)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.G_ema.noise_mode = "const"
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(0.0, 0.99), eps=1e-8)
        ratio = cfg.r1_interval / (cfg.r1_interval + 1)  # lazy regularisation's lr/betas correction
        self.opt_D = torch.optim.Adam(
            self.D.parameters(), lr=cfg.lr * ratio, betas=(0.0, 0.99**ratio), eps=1e-8
        )
        self.iteration = self.nimg = 0
        self.g_frozen_until = 0  # nimg before which G does not train (d_warmup_kimg after --init-from)
        self.sample_z = torch.randn(
            NUM_SAMPLES, cfg.z_dim, generator=torch.Generator().manual_seed(SAMPLE_SEED)
        )
        self.pairs = self.perceptual = None
        if cfg.distill_kimg > 0 or cfg.adv_distill_weight > 0:
            self._setup_distillation(bank.cache_dir)
        self._fid_reference: torch.Tensor | None = None
        self._ref_images: torch.Tensor | None = None  # the held-out cats of the curve (SWD)
        self._fid_clip = None
        self.P = self.opt_P = None
        if cfg.proj_weight > 0:
            self._setup_projected()

    def _setup_projected(self) -> None:
        from core.clip import load_clip
        from core.training.projected import ProjectedDiscriminator, clip_feature_fn

        features = clip_feature_fn(load_clip(device=self.device))
        self.P = (
            ProjectedDiscriminator(
                features, self.cfg.resolution, channels=self.cfg.proj_channels, seed=self.cfg.seed
            )
            .to(self.device)
            .requires_grad_(False)
        )  # on only for its own step (as D)
        self.opt_P = torch.optim.Adam(self.P.parameters(), lr=self.cfg.proj_lr, betas=(0.0, 0.99), eps=1e-8)

    def _setup_distillation(self, cache_dir) -> None:
        from core.losses import make_perceptual_loss
        from core.training.distill import pair_bank

        cfg = self.cfg
        z, images = pair_bank(
            cfg.distill_pairs,
            z_dim=cfg.z_dim,
            seed=cfg.seed + 1,
            resolution=cfg.resolution,
            cache_dir=cache_dir,
        )
        self.pairs = (torch.from_numpy(z), ImageBank(images))
        if cfg.distill_perceptual > 0:
            self.perceptual = make_perceptual_loss("bundled", device=self.device)

    def _set_g_optimizer(self, lr: float, beta1: float) -> None:
        for group in self.opt_G.param_groups:
            group["lr"], group["betas"] = lr, (beta1, group["betas"][1])

    def distilling(self) -> bool:
        return self.pairs is not None and self.nimg < self.cfg.distill_kimg * 1000

    def step(self) -> dict[str, float]:
        cfg, B = self.cfg, self.batch
        if self.distilling():
            self._set_g_optimizer(cfg.distill_lr or cfg.lr, cfg.distill_beta1)
            losses = self._distill_step()
            self._update_ema()
            self.iteration += 1
            self.nimg += B
            return losses
        real = self.bank.sample(B, self.gen, flip=cfg.flip).to(self.device)  # [B, 3, R, R]
        self._set_g_optimizer(cfg.lr, 0.0)
        losses = self._g_main(B) if self.nimg >= self.g_frozen_until else {}
        losses.update(self._d_main(real))
        if cfg.r1_gamma > 0 and self.iteration % cfg.r1_interval == 0:
            losses["r1"] = self._d_r1(real)
        self._update_ema()
        self.iteration += 1
        self.nimg += B
        return losses

    def _g_main(self, n: int) -> dict[str, float]:
        """Non-saturating loss: -log sigmoid(D(G(z))); plus the paired regression when distilling."""
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        if self.pairs is not None and self.cfg.adv_distill_weight > 0:
            # Paired z (no style mixing: the target is one cat), so one G pass serves both terms.
            z, target = self._pair_batch(n)
            fake = self._synthesise(z, update_w_avg=True)
            reg, parts = self._regression(fake, target)
            logits = self._run_D(fake)
            loss = F.softplus(-logits).mean()
            _optimise(self.opt_G, self.G, loss + self.cfg.adv_distill_weight * reg)
            return {"G": float(loss.detach()), **parts}
        fake = self._generate(n, update_w_avg=True)
        loss = F.softplus(-self._run_D(fake)).mean()
        out = {"G": float(loss.detach())}
        if self.P is not None:  # hinge generator loss on the projected D, beside the pixel D's
            proj = -self.P(diff_augment(fake, self.gen, self.cfg.proj_augment)).mean()
            out["G_proj"] = float(proj.detach())
            loss = loss + self.cfg.proj_weight * proj
        _optimise(self.opt_G, self.G, loss)
        return out

    def _distill_step(self) -> dict[str, float]:
        """One regression step: G(z) towards the renderer's image of z (L1 + perceptual)."""
        self.G.requires_grad_(True)
        z, target = self._pair_batch(self.batch)
        reg, parts = self._regression(self._synthesise(z, update_w_avg=True), target)
        _optimise(self.opt_G, self.G, reg)
        return parts

    def _pair_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z_all, images = self.pairs
        idx = torch.randint(len(images), (n,), generator=self.gen)
        target = images.images[idx].float() / 127.5 - 1
        return z_all[idx].to(self.device), target.to(self.device)

    def _synthesise(self, z: torch.Tensor, *, update_w_avg: bool = False) -> torch.Tensor:
        ws = self._map(z, update_w_avg=update_w_avg)
        with self._autocast():
            return self.G.synthesis(ws).float()

    def _map(self, z: torch.Tensor, *, update_w_avg: bool = False) -> torch.Tensor:
        """ws [n, num_ws, w_dim] of z, tracking w_avg (for truncation) as official when asked."""
        G = self.G
        w = G.mapping(z)  # [n, w_dim]
        if update_w_avg:
            with torch.no_grad():
                G.mapping_net.w_avg.copy_(w.detach().mean(0).lerp(G.mapping_net.w_avg, 0.995))
        return w.unsqueeze(1).repeat(1, G.num_ws, 1)

    def _regression(self, fake: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        l1 = (fake - target).abs().mean()
        parts = {"L1": float(l1.detach())}
        loss = l1
        if self.perceptual is not None:
            perc = self.perceptual(fake, self.perceptual.prepare(target)).mean()
            parts["perc"] = float(perc.detach())
            loss = loss + self.cfg.distill_perceptual * perc
        return loss, parts

    def _d_main(self, real: torch.Tensor) -> dict[str, float]:
        """-log(1 - sigmoid(D(G(z)))) - log sigmoid(D(x))."""
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        with torch.no_grad():
            fake = self._generate(real.shape[0])
        fake_logits, real_logits = self._run_D(fake), self._run_D(real)
        loss_fake, loss_real = F.softplus(fake_logits).mean(), F.softplus(-real_logits).mean()
        _optimise(self.opt_D, self.D, loss_fake + loss_real)
        out = {
            "D": float((loss_fake + loss_real).detach()),
            "D_real": float(real_logits.detach().mean()),
            "D_fake": float(fake_logits.detach().mean()),
        }
        if self.P is not None:  # hinge loss, the same fakes
            self.P.requires_grad_(True)
            p_real, p_fake = (
                self.P(diff_augment(real, self.gen, self.cfg.proj_augment)),
                self.P(diff_augment(fake, self.gen, self.cfg.proj_augment)),
            )
            loss_p = F.relu(1 - p_real).mean() + F.relu(1 + p_fake).mean()
            _optimise(self.opt_P, self.P, loss_p)
            self.P.requires_grad_(False)
            out.update(P=float(loss_p.detach()), P_real=float(p_real.detach().mean()))
            out["P_fake"] = float(p_fake.detach().mean())
        return out

    def _d_r1(self, real: torch.Tensor) -> float:
        """Lazy R1: gamma/2 * |grad_x D(x)|^2 on reals, times the interval."""
        real = real.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self._run_D(real).sum(), real, create_graph=True)
        penalty = grad.square().sum([1, 2, 3])  # [B]
        _optimise(self.opt_D, self.D, penalty.mean() * (self.cfg.r1_gamma / 2) * self.cfg.r1_interval)
        return float(penalty.detach().mean())

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _run_D(self, img: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.D(img.contiguous(memory_format=torch.channels_last)).float()

    def _generate(self, n: int, *, update_w_avg: bool = False) -> torch.Tensor:
        """G(z) for ``n`` fresh z, with style mixing. Returns [n, 3, R, R]."""
        G, cfg = self.G, self.cfg
        ws = self._map(self._randn(n), update_w_avg=update_w_avg)  # [n, num_ws, w_dim]
        if cfg.style_mixing > 0 and float(torch.rand((), generator=self.gen)) < cfg.style_mixing:
            cutoff = int(torch.randint(1, G.num_ws, (), generator=self.gen))
            ws = torch.cat(
                [ws[:, :cutoff], G.mapping(self._randn(n)).unsqueeze(1).expand_as(ws[:, cutoff:])], 1
            )
        with self._autocast():
            return G.synthesis(ws).float()

    def _randn(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.z_dim, generator=self.gen).to(self.device)

    @torch.no_grad()
    def _update_ema(self) -> None:
        ema_nimg = self.cfg.ema_kimg * 1000
        if self.cfg.ema_rampup > 0:
            ema_nimg = min(ema_nimg, self.nimg * self.cfg.ema_rampup)
        beta = 0.5 ** (self.batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        return torch.cat([self.G_ema(z.to(self.device)) for z in self.sample_z.split(8)])

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """A learning-curve point: tiny-CLIP FID of ``fid_samples`` G_ema samples against as many
        held-out procedural cats (the model card's realism measure at a smaller n, so it reads higher
        than the 5000-image figure). Empty when ``fid_samples`` is 0 or the bundled CLIP is missing."""
        n = self.cfg.fid_samples
        if n <= 0:
            return {}
        from core.clip import load_clip
        from core.errors import ModelLoadError
        from core.evals.metrics import clip_features, fid, generator_batches, procedural_batches, swd

        if self._fid_clip is None:
            try:
                self._fid_clip = load_clip(device=self.device)
            except (ModelLoadError, ImportError) as e:  # ImportError: no open_clip (a bare GPU box)
                log.warning("no learning-curve point: %s", e)
                return {}
        clip = self._fid_clip
        if self._fid_reference is None:
            res = self.G_ema.resolution  # the images it is compared with, pixel for pixel (SWD)
            self._ref_images = torch.cat(list(procedural_batches(n, split="eval", resolution=res)))
            self._fid_reference = clip_features(clip, [self._ref_images])
        G = self.G_ema
        G.noise_mode = "const"
        images = torch.cat(list(generator_batches(G, n, seed=0)))
        feats = clip_features(clip, [images])
        # SWD beside it: pixel statistics alone, which a discriminator on the tiny CLIP's features
        # cannot game (docs/training.md, the projected-discriminator experiment)
        return {f"fid{n}": round(fid(feats, self._fid_reference), 3), "swd": swd(images, self._ref_images)}

    def init_from(self, path: str | Path) -> dict[str, Any]:
        """Start G and G_ema from an exported generator (its card gives kimg and minutes so far)."""
        from core.models.io import load_generator

        path = Path(path)
        card = json.loads(path.with_suffix(".json").read_text())
        exported = load_generator(path)
        state = exported.state_dict()
        self.G.load_state_dict(state)
        self.G_ema.load_state_dict(state)
        training = card.get("training", {})
        self.nimg = int(round(float(training.get("kimg", 0)) * 1000))
        self.g_frozen_until = self.nimg + int(self.cfg.d_warmup_kimg * 1000)
        return {
            "file": path.name,
            "sha256": card.get("sha256"),
            "kimg": training.get("kimg", 0),
            "minutes": float(training.get("minutes", 0)),
            "note": "G and G_ema start from the exported G_ema; D and both optimisers start fresh "
            "(the run's checkpoint was not kept)",
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "rng": rng_state(self.gen),
            "iteration": self.iteration,
            "nimg": self.nimg,
            "g_frozen_until": self.g_frozen_until,
            **({"P": self.P.state_dict(), "opt_P": self.opt_P.state_dict()} if self.P is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("G", "D", "G_ema", "opt_G", "opt_D"):
            getattr(self, name).load_state_dict(state[name])
        # An optimiser's state carries its lr; the config's wins, so a recorded mid-run change of lr
        # applies to D too (G's is set from the config every step).
        ratio = self.cfg.r1_interval / (self.cfg.r1_interval + 1)
        for group in self.opt_D.param_groups:
            group["lr"] = self.cfg.lr * ratio
        set_rng_state(self.gen, state["rng"])
        self.iteration, self.nimg = int(state["iteration"]), int(state["nimg"])
        self.g_frozen_until = int(state.get("g_frozen_until", 0))  # older checkpoints: never frozen
        if self.P is not None and "P" in state:
            self.P.load_state_dict(state["P"])
            self.opt_P.load_state_dict(state["opt_P"])
        elif self.P is not None:
            log.info("the projected discriminator starts fresh (switched on at kimg %.2f)", self.nimg / 1000)


def _optimise(opt: torch.optim.Optimizer, module: nn.Module, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    for p in module.parameters():
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)  # as official
    opt.step()


# --- export -------------------------------------------------------------------------------------


def export(
    run_dir: str | Path,
    out: str | Path,
    *,
    mean_w_samples: int = 10_000,
    wstats_samples: int = 50_000,
    k: int = 64,
    kmeans_iters: int = 50,
    seed: int = 0,
    best: bool = False,
    argv: Sequence[str] = (),
) -> dict[str, Path]:
    """Write the run's G_ema as a Latent Canvas generator plus its W statistics and JSON sidecar.

    Args:
        run_dir: a training run folder (its ``checkpoint.pt`` is read).
        out: the ``.safetensors`` path; ``<stem>.wstats.safetensors`` and ``<stem>.json`` go beside it.
        mean_w_samples: mapping samples averaged into the stored mean w.
        wstats_samples: mapping samples behind the mean, std and k-means centres of W.
        k: number of k-means centres.
        kmeans_iters: at most this many Lloyd iterations.
        seed: seeds the mapping samples and the k-means++ initialisation.
        best: export the checkpoint with the lowest learning-curve FID (``best.pt``) instead of the
            latest one.
    """
    loaded = load_checkpoint(run_dir, BEST if best else CHECKPOINT)
    if loaded is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir}")
    state, progress = loaded
    cfg = config_from(TrainConfig, progress["config"])
    G = StyleGAN2Generator(cfg.generator_config())
    G.load_state_dict(state["G_ema"])
    G = G.eval().requires_grad_(False)
    G.mean_w(n=mean_w_samples, seed=seed)
    facts = export_facts(progress, argv, PROG)
    out = Path(out)
    save_generator(G, out, extra_metadata={"training": json.dumps(facts, default=str)})
    out.chmod(0o644)  # safetensors writes 0600; these files are shipped
    wstats = out.with_name(out.name.removesuffix(".safetensors") + ".wstats.safetensors")
    w_info = write_w_stats(G, wstats, n=wstats_samples, k=k, iters=kmeans_iters, seed=seed + 1)
    sidecar = write_sidecar(
        out,
        config=G.config_dict(),
        training=facts,
        extra={"mean_w_samples": mean_w_samples, "wstats": w_info},
    )
    log.info("exported %s (kimg %.1f) with %s and %s", out, facts["kimg"], wstats.name, sidecar.name)
    return {"model": out, "wstats": wstats, "sidecar": sidecar}


def export_main(argv: Sequence[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(prog=f"{PROG} export", description="Export a run's G_ema.")
    p.add_argument("--run", required=True, help="training run folder")
    p.add_argument("--out", required=True, help="generator .safetensors to write")
    p.add_argument("--mean-w-samples", type=int, default=10_000)
    p.add_argument("--wstats-samples", type=int, default=50_000)
    p.add_argument("--k", type=int, default=64, help="k-means centres in the W statistics")
    p.add_argument("--kmeans-iters", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--best", action="store_true", help="the checkpoint with the lowest learning-curve FID")
    a = p.parse_args(argv)
    setup_logging()
    export(
        a.run,
        a.out,
        mean_w_samples=a.mean_w_samples,
        wstats_samples=a.wstats_samples,
        k=a.k,
        kmeans_iters=a.kmeans_iters,
        seed=a.seed,
        best=a.best,
        argv=["export", *argv],
    )


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        export_main(argv[1:])
    elif argv[:1] == ["change"]:
        change_main(argv[1:], prog=PROG, config_cls=TrainConfig)
    else:
        run_training(argv, prog=PROG, config_cls=TrainConfig, make_trainer=StyleGAN2Trainer)


if __name__ == "__main__":
    main()
