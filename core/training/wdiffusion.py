"""Train the W-space diffusion prior of a generator, and export it with a model card.

    python -m core.training.wdiffusion --generator resources/models/stylegan2-cats64.safetensors \\
        --out runs/wdiff --minutes 15 --threads 1
    python -m core.training.wdiffusion --out runs/wdiff --minutes 30 --resume      # continue it
    python -m core.training.wdiffusion export --run runs/wdiff \\
        --out resources/models/wdiffusion-cats64.safetensors

Training data are drawn on the fly: every step maps fresh seeded z through the generator's mapping
network (the seed paper: "repeatedly sampling a W vector from the generator's mapping network, adding
noise into the vector, and applying denoising"); for a w+ model, two w are style-mixed at a random
layer as in StyleGAN2's training. The loss is the noise-prediction MSE at a uniform continuous time
(Ho et al. 2020, eq. 14, L_simple; with a v target by default); the exported weights are the EMA copy.

The run folder follows :mod:`core.training.common` (checkpoint.pt, progress.json, fakes-*.png grids
of G(w) for prior samples) and resumes bit-for-bit where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from core.models.io import load_generator
from core.models.safe_load import sha256_file
from core.prior import schedule
from core.prior.model import WDiffusionConfig, build_wdiffusion, save_wdiffusion
from core.prior.samplers import sample_w
from core.prior.wstats import load_wstats, wstats_from_generator, wstats_path_for
from core.training.common import (
    Budget,
    ModelEmaState,
    _session_facts,
    add_config_args,
    export_facts,
    generator_run,
    load_checkpoint,
    pick_device,
    seed_everything,
    setup_logging,
    train_loop,
    write_sidecar,
)

log = logging.getLogger("latent_canvas.training")
PROG = "python -m core.training.wdiffusion"


@dataclass(frozen=True)
class TrainConfig:
    space: str = "w"  # "w", "w+" (style-mixed rows, flattened) or "s" (Style space: the styles of w)
    width: int = 512  # hidden units (paper: 5000; 512 trains on a CPU in minutes)
    depth: int = 7  # hidden layers (paper: 7)
    groups: int = 32  # GroupNorm groups
    time_dim: int = 128  # time embedding size
    normalize: str = "per-dim"  # latent normalisation by the W statistics: per-dim, global, none
    prediction: str = "v"  # network target: "v" (well conditioned at t = 1) or "eps" (as the seed)
    batch: int = 256  # latents per step
    lr: float = 1e-3  # AdamW learning rate (after warm-up)
    warmup: int = 200  # steps of linear learning-rate warm-up
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # gradient norm clip
    ema: float = 0.999  # EMA decay per step of the exported weights
    t_min: float = 1e-3  # training times are uniform in [t_min, 1]
    mixing: float = 0.9  # w+ only: probability of style-mixing two w
    seed: int = 0  # seeds init, z draws, times and noise

    def model_config(self, w_dim: int, num_ws: int) -> WDiffusionConfig:
        return WDiffusionConfig(
            w_dim=w_dim,
            num_ws=num_ws if self.space == "w+" else 1,
            space=self.space,
            width=self.width,
            depth=self.depth,
            groups=self.groups,
            time_dim=self.time_dim,
            normalize=self.normalize,
            prediction=self.prediction,
        )


def load_stats(G, generator_path: Path, space: str = "w"):
    """The generator's shipped W statistics, else 10k fresh mapping samples; in Style space, the
    statistics of 10k samples' styles."""
    if space == "s":
        from core.prior.wstats import sstats_from_generator

        return sstats_from_generator(G)
    path = wstats_path_for(generator_path)
    if path.is_file():
        return load_wstats(path)
    log.info("no %s; computing W statistics from 10k mapping samples", path.name)
    return wstats_from_generator(G)


class WDiffusionTrainer(ModelEmaState):
    """The :class:`core.training.common.Trainer` of the W prior (``nimg`` counts latents)."""

    def __init__(self, cfg: TrainConfig, device: torch.device, G, stats) -> None:
        self.cfg, self.device, self.G = cfg, device, G.to(device)
        self.gen = seed_everything(cfg.seed)
        dim = G.s_dim if cfg.space == "s" else G.w_dim
        self.model = build_wdiffusion(cfg.model_config(dim, G.num_ws), seed=cfg.seed).to(device)
        self.model.set_stats(stats.mean.to(device), stats.std.to(device))
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.batch, self.bank, self.nimg, self.steps = cfg.batch, None, 0, 0

    def _randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen).to(self.device)

    @torch.no_grad()
    def _latents(self, n: int) -> torch.Tensor:
        """Fresh mapping samples [n, w_dim], style-mixed w+ [n, num_ws, w_dim], or styles [n, s_dim]."""
        w = self.G.mapping(self._randn(n, self.G.z_dim))
        if self.cfg.space == "w":
            return w
        if self.cfg.space == "s":
            return self.G.styles(self.G.broadcast(w))
        ws = self.G.broadcast(w).clone()
        w2 = self.G.mapping(self._randn(n, self.G.z_dim))
        cut = torch.randint(1, self.G.num_ws, (n,), generator=self.gen).to(self.device)
        mix = (torch.rand(n, generator=self.gen) < self.cfg.mixing).to(self.device)
        rows = torch.arange(self.G.num_ws, device=self.device)[None] >= cut[:, None]  # [n, num_ws]
        return torch.where((rows & mix[:, None])[..., None], w2[:, None], ws)

    def step(self) -> dict[str, float]:
        cfg, n = self.cfg, self.cfg.batch
        x0 = self.model.normalize(self._latents(n))  # [n, dim]
        t = (cfg.t_min + (1 - cfg.t_min) * torch.rand(n, generator=self.gen)).to(self.device)
        eps = self._randn(*x0.shape)
        x_t = schedule.add_noise(x0, eps, t)
        loss = F.mse_loss(self.model.raw(x_t, t), self.model.target(x0, eps, t))  # L_simple (eps or v)
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (self.steps + 1) / max(cfg.warmup, 1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self._update_ema()
        self.steps += 1
        self.nimg += n
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def _update_ema(self) -> None:
        for p_ema, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            p_ema.lerp_(p, 1 - self.cfg.ema)

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        w = sample_w(self.ema, 32, sampler="ddim", steps=50, seed=0)
        if self.cfg.space == "s":
            return self.G.synthesis_styles(w)
        ws = self.G.broadcast(w) if w.ndim == 2 else w
        return self.G.synthesis(ws)


# --- command line -------------------------------------------------------------------------------


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train (or with --resume continue) a W-space diffusion prior in --out. On resume "
        "the generator and settings come from the checkpoint; only the session options apply.",
    )
    s = p.add_argument_group("session options")
    s.add_argument("--generator", help="generator file (.safetensors or .pkl); required for a new run")
    s.add_argument("--out", required=True, help="run folder (checkpoint, progress.json, sample grids)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    s.add_argument("--minutes", type=float, default=None, help="stop at this total training time")
    s.add_argument("--kimg", type=float, default=None, help="stop at this total of thousand latents")
    s.add_argument("--checkpoint-minutes", type=float, default=2.0, help="checkpoint + grid cadence")
    s.add_argument("--log-every", type=float, default=30.0, help="seconds between progress lines")
    s.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda:0")
    s.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    add_config_args(p.add_argument_group("model and training settings (fixed for a run)"), TrainConfig)
    return p


def train(argv: Sequence[str]) -> dict[str, Any]:
    """Parse ``argv``, start or resume the run in ``--out`` and train until the budget is spent."""
    parser = train_parser()
    a = parser.parse_args(argv)
    setup_logging()
    if a.minutes is None and a.kimg is None:
        parser.error("give a budget: --minutes and/or --kimg")
    if a.threads:
        torch.set_num_threads(a.threads)
    device, out = pick_device(a.device), Path(a.out)
    cfg, gen_path, progress, state = generator_run(parser, a, TrainConfig, out)
    G = load_generator(gen_path, device=device)
    trainer = WDiffusionTrainer(cfg, device, G, load_stats(G, gen_path, cfg.space))
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resumed %s at kimg %.2f", out, trainer.nimg / 1000)
    progress["sessions"].append(_session_facts(PROG, argv, device, trainer.nimg))
    return train_loop(
        trainer,
        out,
        progress=progress,
        budget=Budget(kimg=a.kimg, minutes=a.minutes),
        checkpoint_minutes=a.checkpoint_minutes,
        log_every_s=a.log_every,
    )


# --- export -------------------------------------------------------------------------------------


def export(
    run_dir: str | Path,
    out: str | Path,
    *,
    generator: str | Path | None = None,
    eval_latents: int = 4096,
    eval_images: int = 0,
    seed: int = 12345,
    argv: Sequence[str] = (),
) -> dict[str, Path]:
    """Write the run's EMA denoiser to ``out`` and ``<stem>.json`` (config, sha256, training facts and
    quality numbers measured on fresh seeded mapping samples).

    Args:
        run_dir: a training run folder.
        out: the ``.safetensors`` to write.
        generator: override the generator path stored in the run (same sha256 required).
        eval_latents: mapping and prior samples behind the W-space quality numbers.
        eval_images: images behind the KID realism numbers (0 = skip them).
        seed: seeds the evaluation draws (distinct from the training seed).
    """
    from core.evals.prior_quality import w_quality

    loaded = load_checkpoint(run_dir)
    if loaded is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir}")
    state, progress = loaded
    cfg = TrainConfig(**progress["config"])
    gen_path = Path(generator or progress["generator"])
    if sha256_file(gen_path) != progress["generator_sha256"]:
        raise ValueError(f"{gen_path} is not the generator the run in {run_dir} was trained on")
    G = load_generator(gen_path)
    trainer = WDiffusionTrainer(cfg, torch.device("cpu"), G, load_stats(G, gen_path, cfg.space))
    trainer.load_state_dict(state)
    model = trainer.ema
    facts = export_facts(progress, argv, PROG)
    quality = w_quality(G, model, n=eval_latents, seed=seed)
    if eval_images:
        from core.evals.prior_quality import image_quality

        quality["images"] = image_quality(G, model, n=eval_images, seed=seed)
    out = Path(out)
    meta = {"generator": gen_path.name, "generator_sha256": progress["generator_sha256"], "training": facts}
    save_wdiffusion(model, out, metadata=meta)
    out.chmod(0o644)
    sidecar = write_sidecar(
        out,
        config=asdict(model.cfg),
        training=facts,
        extra={
            "format": "latent-canvas-wdiffusion/1",
            "generator": gen_path.name,
            "generator_sha256": progress["generator_sha256"],
            "license": "MIT (trained here on samples of the bundled generator)",
            "quality": quality,
        },
    )
    log.info("exported %s (kimg %.1f) with %s", out, facts["kimg"], sidecar.name)
    return {"model": out, "sidecar": sidecar}


def export_main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog=f"{PROG} export", description="Export a run's EMA denoiser.")
    p.add_argument("--run", required=True, help="training run folder")
    p.add_argument("--out", required=True, help="prior .safetensors to write")
    p.add_argument("--generator", help="generator path, if it moved since training (same sha256)")
    p.add_argument("--eval-latents", type=int, default=4096, help="samples behind the W-space numbers")
    p.add_argument("--eval-images", type=int, default=0, help="images behind KID (needs core.evals.metrics)")
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    setup_logging()
    if a.threads:
        torch.set_num_threads(a.threads)
    export(
        a.run,
        a.out,
        generator=a.generator,
        eval_latents=a.eval_latents,
        eval_images=a.eval_images,
        argv=["export", *argv],
    )


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        export_main(argv[1:])
    else:
        train(argv)


if __name__ == "__main__":
    main()
