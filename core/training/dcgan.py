"""Train the bundled DCGAN on procedural cat faces, and export it.

    python -m core.training.dcgan --out runs/dcgan-cats64 --minutes 15
    python -m core.training.dcgan export --run runs/dcgan-cats64 \
        --out resources/models/dcgan-cats64.safetensors

The recipe of Radford et al. (2016) as in the PyTorch DCGAN example: N(0, 0.02) conv weights,
BatchNorm N(1, 0.02) scales, Adam 2e-4 with beta1 0.5, binary cross-entropy, the generator trained
with the non-saturating loss on the same fakes the discriminator just saw. One change: D sees reals
and fakes in one batch (see :meth:`DCGANTrainer._run_D`).
"""

from __future__ import annotations

import argparse
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

from core.gan.dcgan import DCGANConfig, DCGANGenerator
from core.models.io import save_generator
from core.training.common import (
    ImageBank,
    export_facts,
    load_checkpoint,
    rng_state,
    run_training,
    seed_everything,
    set_rng_state,
    setup_logging,
    write_sidecar,
)

log = logging.getLogger("latent_canvas.training")

PROG = "python -m core.training.dcgan"
SAMPLE_SEED = 2024  # the fixed z of the progress grids
NUM_SAMPLES = 32


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0  # seeds the initial weights, batches and z
    resolution: int = 64  # image size, a power of two >= 8
    z_dim: int = 128  # G input latent size
    base_channels: int = 32  # G channels at full resolution, doubling per halving
    d_base_channels: int = 32  # D channels after its first conv, doubling per halving
    batch: int = 32  # images per iteration (the paper used 128; on CPU more iterations win)
    lr: float = 2e-4  # Adam lr of G and D
    beta1: float = 0.5  # Adam beta1 (beta2 is 0.999)
    real_label: float = 1.0  # D's target for reals; 0.9 is one-sided label smoothing (Salimans 2016)
    n_train: int = 20_000  # pre-rendered training images (shared cache with the StyleGAN2 run)
    data_seed: int = 0  # first training-split index of the procedural set (core.data.procedural)
    flip: bool = True  # random horizontal flips of the training images

    def generator_config(self) -> DCGANConfig:
        return DCGANConfig(z_dim=self.z_dim, img_resolution=self.resolution, base_channels=self.base_channels)


class Discriminator(nn.Module):
    """Strided 4x4 convs (BatchNorm after the first), LeakyReLU 0.2, down to 4x4, then one logit."""

    def __init__(self, resolution: int, base_channels: int):
        super().__init__()
        ch = base_channels
        layers: list[nn.Module] = [nn.Conv2d(3, ch, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for _ in range(int(math.log2(resolution)) - 3):  # res/2 -> 4
            layers += [
                nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ch * 2),
                nn.LeakyReLU(0.2, True),
            ]
            ch *= 2
        layers.append(nn.Conv2d(ch, 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, img):  # [N, 3, R, R] in [-1, 1] -> logits [N]
        return self.net(img).flatten()


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.: conv weights N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANTrainer:
    """Holds G, D, their optimisers and the RNG; one :meth:`step` is one iteration."""

    def __init__(self, cfg: TrainConfig, device: torch.device, bank: ImageBank):
        if bank.resolution != cfg.resolution:
            raise ValueError(f"training images are {bank.resolution} px, the config says {cfg.resolution}")
        self.cfg, self.device, self.bank, self.batch = cfg, torch.device(device), bank, cfg.batch
        self.gen = seed_everything(cfg.seed)
        self.G = DCGANGenerator(cfg.generator_config())
        self.D = Discriminator(cfg.resolution, cfg.d_base_channels)
        self.G.apply(dcgan_init)
        self.D.apply(dcgan_init)
        self.G, self.D = self.G.to(self.device).train(), self.D.to(self.device).train()
        betas = (cfg.beta1, 0.999)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=betas)
        self.iteration = self.nimg = 0
        self.sample_z = torch.randn(
            NUM_SAMPLES, cfg.z_dim, generator=torch.Generator().manual_seed(SAMPLE_SEED)
        )

    def step(self) -> dict[str, float]:
        B = self.batch
        real = self.bank.sample(B, self.gen, flip=self.cfg.flip).to(self.device)  # [B, 3, R, R]
        z = torch.randn(B, self.cfg.z_dim, generator=self.gen).to(self.device)
        fake = self.G(z)
        # D: maximise log D(x) + log(1 - D(G(z))).
        real_logits, fake_logits = self._run_D(real, fake.detach())
        loss_D = _bce(real_logits, self.cfg.real_label) + _bce(fake_logits, 0.0)
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        self.opt_D.step()
        # G: maximise log D(G(z)) on the same fakes (the non-saturating loss).
        loss_G = _bce(self._run_D(real, fake)[1], 1.0)
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.opt_G.step()
        self.iteration += 1
        self.nimg += B
        return {
            "G": float(loss_G.detach()),
            "D": float(loss_D.detach()),
            "D(x)": float(torch.sigmoid(real_logits.detach()).mean()),
            "D(G(z))": float(torch.sigmoid(fake_logits.detach()).mean()),
        }

    def _run_D(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits for reals and fakes, from one batch holding both.

        With a batch of fakes alone, D's BatchNorm removes the batch-mean part of G's gradient: when
        G's samples still look alike (early on, always) "make every image more like a cat" cannot get
        through, and on our flat-background cats G stayed grey noise for 1,250 iterations. A mixed
        batch keeps that gradient (a toy flat-colour set was learnt in 200 iterations).
        """
        logits = self.D(torch.cat([real, fake]))
        return logits[: real.shape[0]], logits[real.shape[0] :]

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        """Fixed-z samples in eval mode (BatchNorm running statistics), as the exported model renders."""
        self.G.eval()
        try:
            return torch.cat([self.G(z.to(self.device)) for z in self.sample_z.split(8)])
        finally:
            self.G.train()

    def state_dict(self) -> dict[str, Any]:
        return {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "rng": rng_state(self.gen),
            "iteration": self.iteration,
            "nimg": self.nimg,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("G", "D", "opt_G", "opt_D"):
            getattr(self, name).load_state_dict(state[name])
        set_rng_state(self.gen, state["rng"])
        self.iteration, self.nimg = int(state["iteration"]), int(state["nimg"])


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def export(run_dir: str | Path, out: str | Path, *, argv: Sequence[str] = ()) -> dict[str, Path]:
    """Write the run's G (eval mode) as a Latent Canvas generator plus its JSON sidecar.

    Args:
        run_dir: a training run folder (its ``checkpoint.pt`` is read).
        out: the ``.safetensors`` path; ``<stem>.json`` goes beside it.
    """
    loaded = load_checkpoint(run_dir)
    if loaded is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir}")
    state, progress = loaded
    G = DCGANGenerator(TrainConfig(**progress["config"]).generator_config())
    G.load_state_dict(state["G"])
    G = G.eval().requires_grad_(False)
    facts = export_facts(progress, argv, PROG)
    out = Path(out)
    save_generator(G, out, extra_metadata={"training": json.dumps(facts, default=str)})
    out.chmod(0o644)  # safetensors writes 0600; these files are shipped
    sidecar = write_sidecar(out, config=G.config_dict(), training=facts)
    log.info("exported %s (kimg %.1f) with %s", out, facts["kimg"], sidecar.name)
    return {"model": out, "sidecar": sidecar}


def export_main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog=f"{PROG} export", description="Export a run's generator.")
    p.add_argument("--run", required=True, help="training run folder")
    p.add_argument("--out", required=True, help="generator .safetensors to write")
    a = p.parse_args(argv)
    setup_logging()
    export(a.run, a.out, argv=["export", *argv])


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        export_main(argv[1:])
    else:
        run_training(argv, prog=PROG, config_cls=TrainConfig, make_trainer=DCGANTrainer)


if __name__ == "__main__":
    main()
