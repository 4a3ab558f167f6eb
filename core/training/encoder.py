"""Train an encoder (:mod:`core.encoder.model`) against a generator, and export it beside it.

    python -m core.training.encoder --generator resources/models/stylegan2-cats64.safetensors \\
        --out runs/encoder --minutes 60
    python -m core.training.encoder --out runs/encoder --minutes 90 --resume          # continue it
    python -m core.training.encoder export --run runs/encoder   # -> <generator>.encoder.safetensors
    python -m core.training.encoder --generator ... --out runs/refiner --minutes 80 --refine-steps 3 \
        --init-from <generator>.encoder.safetensors --latent-kimg 0        # add a ReStyle refiner

For a user's own generator (e.g. an FFHQ StyleGAN2 pickle on a GPU), pass the pickle and real training
images: ``--generator ffhq.pkl --images folder/ --device cuda``; the export lands beside the pickle,
where the app looks for it.

Training pairs (pSp's recipe, Richardson et al. 2021, with its sketch-to-image idea applied to colour
scribbles):

- generator samples: a bank of seeded (w, G(w)) pairs made once; their latent is known, so the
  predicted ws are also pulled to it (a W-normalised L2), which keeps results on the image manifold;
- training images (the procedural training cats, or ``--images``): image losses only.

Each image enters the network in one of three guises, drawn per sample: whole (inversion), with random
holes (inpainting), or as a synthetic scribble made from it (:func:`synthetic_scribbles`: random-walk
strokes of varying count and width, or flat regions from a k-means posterisation, each in the image's
own colour there, slightly jittered). The losses always compare G(encoder(input)) with the *whole*
image, as pSp does for sketches, so the encoder learns to complete what was not painted: L1 + the
bundled perceptual distance, a paint term (L1 on the known pixels, so results follow the paint), the
latent term for generator samples and e4e's idea of keeping the w+ rows together (``spread``). For the
first ``latent_kimg`` images only the latent term trains (no generator in the loop: fast warm-up).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.encoder.model import EncoderConfig, build_encoder, encoder_path_for, save_encoder
from core.models.io import load_generator
from core.models.safe_load import sha256_file
from core.training.common import (
    Budget,
    ImageBank,
    ModelEmaState,
    _atomic,
    _save_npy,
    _session_facts,
    add_config_args,
    change_main,
    export_facts,
    generator_run,
    load_checkpoint,
    pick_device,
    procedural_bank,
    seed_everything,
    setup_logging,
    train_loop,
    write_sidecar,
)

log = logging.getLogger("latent_canvas.training")
PROG = "python -m core.training.encoder"


@dataclass(frozen=True)
class TrainConfig:
    width: int = 32  # encoder channels after the stem (see EncoderConfig)
    max_channels: int = 256
    hidden: int = 512
    batch: int = 32
    lr: float = 5e-4  # Adam
    warmup: int = 100  # steps of linear learning-rate warm-up
    ema: float = 0.995  # EMA decay per step of the exported weights
    gen_fraction: float = 0.5  # share of each batch drawn from the generator-sample bank
    bank: int = 12_000  # generator samples in the bank (made once, cached in the run folder)
    train_images: int = 20_000  # training images (procedural cats unless --images is given)
    latent_kimg: float = 40.0  # warm-up on the latent term alone (no generator in the loop)
    p_whole: float = 0.25  # input guises: the whole image, ...
    p_holes: float = 0.25  # ... random holes, the rest synthetic scribbles
    l1: float = 1.0  # L1 to the whole image
    perceptual: float = 1.0  # bundled perceptual distance to the whole image
    paint: float = 1.0  # L1 on the known (painted / outside-the-hole) pixels
    latent: float = 1.0  # W-normalised L2 to the true w (generator samples)
    spread: float = 0.05  # spread of the w+ rows around their mean (W-normalised)
    seed: int = 0
    # > 0: train a ReStyle refiner (core.encoder.model.Refiner) on top of the --init-from encoder, which
    # stays frozen; each step runs 0..refine_steps-1 refinements without gradients, then one that trains.
    refine_steps: int = 0


# --- synthetic inputs ----------------------------------------------------------------------------


def _blur3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def stroke_scribbles(x: torch.Tensor, gen: torch.Generator, *, max_strokes: int = 40, points: int = 6):
    """Person-like colour strokes drawn from images ``x`` [B, 3, R, R] in [-1, 1]: per image 2 to
    ``max_strokes`` random-walk strokes (log-uniform count), 2 to ~9 px wide (at 64 px), each in the
    (locally averaged, slightly jittered) colour of the image where it starts; later strokes paint over
    earlier ones. Returns (paint [B, 3, R, R], mask [B, 1, R, R] of 0/1).

    Drawn with PIL (as :func:`core.evals.inversion_quality.make_scribble`): a distance-to-segment
    raster in torch took 3.5 s per 32 images, PIL a few milliseconds."""
    from PIL import Image, ImageDraw

    B, _, R, _ = x.shape
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=gen)))
    colours_img = ((_blur3(x).permute(0, 2, 3, 1) + 1) * 127.5).clamp(0, 255).numpy()
    paint = np.zeros((B, R, R, 4), np.uint8)
    s = R / 64
    for i in range(B):
        canvas = Image.new("RGBA", (R, R), (0, 0, 0, 0))
        draw = ImageDraw.Draw(canvas)
        width = math.exp(rng.uniform(math.log(2), math.log(9))) * s
        for _ in range(int(math.exp(rng.uniform(math.log(2), math.log(max_strokes + 1))))):
            p = rng.uniform(0.05 * (R - 1), 0.95 * (R - 1), 2)
            colour = colours_img[i, int(p[1]), int(p[0])] + rng.normal(0, 8, 3)
            heading, step = rng.uniform(0, 2 * math.pi), rng.uniform(2, 5) * s
            pts = [tuple(p)]
            for _ in range(points - 1):
                heading += rng.normal(0, 0.6)
                p = np.clip(p + step * np.array([math.cos(heading), math.sin(heading)]), 0, R - 1)
                pts.append(tuple(p))
            fill = tuple(int(c) for c in np.clip(colour, 0, 255)) + (255,)
            draw.line(pts, fill=fill, width=max(1, round(width * rng.uniform(0.7, 1.3))), joint="curve")
        paint[i] = np.asarray(canvas)
    t = torch.from_numpy(paint).permute(0, 3, 1, 2).float()
    mask = (t[:, 3:] > 0).float()
    return (t[:, :3] / 127.5 - 1) * mask, mask


def region_scribbles(x: torch.Tensor, gen: torch.Generator, *, iters: int = 6):
    """Filled flat-colour regions drawn from images ``x`` [B, 3, R, R]: a k-means posterisation
    (3 to 6 colours) of each image, smoothed, of which each region is kept with probability 0.7 (at
    least one), its colour jittered. Returns (paint [B, 3, R, R], mask [B, 1, R, R] of 0/1)."""
    B, _, R, _ = x.shape
    k = int(torch.randint(3, 7, (1,), generator=gen))
    px = _blur3(x).flatten(2).transpose(1, 2)  # [B, P, 3]
    centres = px[torch.arange(B)[:, None], torch.randint(R * R, (B, k), generator=gen)]  # [B, k, 3]
    for _ in range(iters):
        labels = torch.cdist(px, centres).argmin(2)  # [B, P]
        onehot = F.one_hot(labels, k).float()  # [B, P, k]
        counts = onehot.sum(1)[..., None]
        centres = torch.where(counts > 0, onehot.transpose(1, 2) @ px / counts.clamp_min(1), centres)
    votes = F.avg_pool2d(
        onehot.transpose(1, 2).reshape(B, k, R, R), 5, stride=1, padding=2, count_include_pad=False
    )
    labels = votes.argmax(1).view(B, -1)  # smoothed regions
    keep = torch.rand(B, k, generator=gen) < 0.7
    keep[torch.arange(B), labels[torch.arange(B), torch.randint(R * R, (B,), generator=gen)]] = True
    colours = (centres + 0.06 * torch.randn(B, k, 3, generator=gen)).clamp(-1, 1)
    paint = colours[torch.arange(B)[:, None], labels]  # [B, P, 3]
    mask = keep[torch.arange(B)[:, None], labels].float()  # [B, P]
    return (paint * mask[..., None]).transpose(1, 2).reshape(B, 3, R, R), mask.view(B, 1, R, R)


def random_holes(B: int, R: int, gen: torch.Generator) -> torch.Tensor:
    """[B, 1, R, R] masks, 0 in 1-3 random rectangles or ellipses of a sixth to half the side."""
    yy, xx = torch.meshgrid(
        torch.arange(R, dtype=torch.float32), torch.arange(R, dtype=torch.float32), indexing="ij"
    )
    hole = torch.zeros(B, R, R, dtype=torch.bool)
    n = torch.randint(1, 4, (B,), generator=gen)
    for i in range(3):
        size = _uniform(B * 2, R / 6, R / 2, gen).view(B, 2)
        centre = torch.rand(B, 2, generator=gen) * R
        dx, dy = (xx[None] - centre[:, 0, None, None]).abs(), (yy[None] - centre[:, 1, None, None]).abs()
        hx, hy = size[:, 0, None, None] / 2, size[:, 1, None, None] / 2
        rect = (dx <= hx) & (dy <= hy)
        ellipse = (dx / hx).square() + (dy / hy).square() <= 1
        shape = torch.where((torch.rand(B, generator=gen) < 0.5)[:, None, None], rect, ellipse)
        hole |= shape & (i < n)[:, None, None]
    return (~hole).float()[:, None]


def synthetic_inputs(x: torch.Tensor, gen: torch.Generator, *, p_whole: float, p_holes: float):
    """Each image of ``x`` [B, 3, R, R] as the encoder will meet it: whole, with holes, or as a stroke
    or region scribble. Returns (image [B, 3, R, R], mask [B, 1, R, R]); the image is only meaningful
    where the mask is 1."""
    B, _, R, _ = x.shape
    u = torch.rand(B, generator=gen)
    image, mask = x.clone(), torch.ones(B, 1, R, R)
    holes = (u >= p_whole) & (u < p_whole + p_holes)
    scrib = u >= p_whole + p_holes
    if holes.any():
        mask[holes] = random_holes(int(holes.sum()), R, gen)
    if scrib.any():
        idx = scrib.nonzero().view(-1)
        strokes = torch.rand(len(idx), generator=gen) < 0.6
        for sel, make in ((idx[strokes], stroke_scribbles), (idx[~strokes], region_scribbles)):
            if len(sel):
                image[sel], mask[sel] = make(x[sel], gen)
    return image * mask, mask


# --- the trainer ----------------------------------------------------------------------------------


class EncoderTrainer(ModelEmaState):
    """The :class:`core.training.common.Trainer` of an encoder (``nimg`` counts training inputs)."""

    def __init__(self, cfg: TrainConfig, device: torch.device, G, images: ImageBank, gen_bank, perceptual):
        from core.jobs.invert import w_statistics

        self.cfg, self.device, self.G = cfg, device, G.to(device).eval().requires_grad_(False)
        self.gen = seed_everything(cfg.seed)
        self.model = build_encoder(encoder_config(cfg, G), seed=cfg.seed).to(device)
        mean, std = w_statistics(G)
        self.model.set_stats(mean, std)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        trained = self.model.refiner if cfg.refine_steps else self.model
        if cfg.refine_steps:  # the first pass is the --init-from encoder's, frozen
            self.model.requires_grad_(False)
            trained.requires_grad_(True)
        self.opt = torch.optim.Adam(trained.parameters(), lr=cfg.lr)
        self.bank, self.gen_bank, self.perceptual = images, gen_bank, perceptual
        self.batch, self.nimg, self.steps = cfg.batch, 0, 0
        self._eval = _eval_inputs(G.resolution)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [B, 3, R, R] in [-1, 1], true w [Bg, w_dim] of the first Bg: generator samples)."""
        cfg = self.cfg
        n_gen = round(cfg.batch * cfg.gen_fraction)
        idx = torch.randint(len(self.gen_bank[0]), (n_gen,), generator=self.gen)
        x_gen = self.gen_bank[1][idx].permute(0, 3, 1, 2).float() / 127.5 - 1
        x = torch.cat([x_gen, self.bank.sample(cfg.batch - n_gen, self.gen)])
        return x.to(self.device), self.gen_bank[0][idx].to(self.device)

    def step(self) -> dict[str, float]:
        cfg = self.cfg
        x, w_true = self._batch()
        image, mask = synthetic_inputs(x.cpu(), self.gen, p_whole=cfg.p_whole, p_holes=cfg.p_holes)
        image, mask = image.to(self.device), mask.to(self.device)
        ws = self._encode(image, mask)
        std = self.model.w_std
        terms = {"latent": ((ws[: len(w_true)] - w_true[:, None]) / std).square().mean()}
        if self.nimg >= cfg.latent_kimg * 1000:
            out = self.G.synthesis(ws)
            terms["l1"] = (out - x).abs().mean()
            terms["perceptual"] = self.perceptual(out, self.perceptual.prepare(x)).mean()
            terms["paint"] = ((out - image).abs() * mask).sum() / (3 * mask.sum()).clamp_min(1)
            terms["spread"] = ((ws - ws.mean(1, keepdim=True)) / std).square().mean()
        loss = sum(getattr(cfg, k) * v for k, v in terms.items())
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (self.steps + 1) / max(cfg.warmup, 1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 10.0)
        self.opt.step()
        with torch.no_grad():
            for p_ema, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                p_ema.lerp_(p, 1 - cfg.ema)
        self.steps += 1
        self.nimg += cfg.batch
        return {k: float(v.detach()) for k, v in terms.items()}

    def _encode(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The trained network's answer: the encoder's pass, or (training a refiner) the frozen first
        pass and 0..refine_steps-1 refinements without gradients, then one refinement with them (ReStyle
        trains every iteration; a random depth per step costs one refinement's gradient instead)."""
        if not self.cfg.refine_steps:
            return self.model(image, mask)
        with torch.no_grad():
            ws = self.model(image, mask)
            for _ in range(int(torch.randint(self.cfg.refine_steps, (1,), generator=self.gen))):
                ws = self.model.refine(image, mask, ws, self.G.synthesis)
        return self.model.refine(image, mask, ws, self.G.synthesis)

    def _ema_answer(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.ema.encode(image, mask, self.G.synthesis)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out PSNR of the EMA encoder alone (with its refinements): whole images, and with holes
        (outside them)."""
        x, holes = (t.to(self.device) for t in self._eval)
        whole = self.G.synthesis(self._ema_answer(x))
        filled = self.G.synthesis(self._ema_answer(x * holes, holes))
        return {"psnr_whole": round(_psnr(whole, x), 3), "psnr_holes_kept": round(_psnr(filled, x, holes), 3)}

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        """Rows: held-out inputs as the encoder sees them (unknown pixels grey), then its results."""
        x, holes = (t.to(self.device) for t in self._eval)
        gen = torch.Generator().manual_seed(1)
        s_img, s_mask = stroke_scribbles(x.cpu(), gen)
        r_img, r_mask = region_scribbles(x.cpu(), gen)
        rows = [(x, torch.ones_like(holes)), (x * holes, holes), (s_img, s_mask), (r_img, r_mask)]
        out = []
        for img, m in rows:
            img, m = img.to(self.device), m.to(self.device)
            out += [img * m, self.G.synthesis(self._ema_answer(img, m))]
        return torch.cat(out)

    def init_from(self, path: str | Path) -> dict[str, Any]:
        """Start model and EMA from an exported encoder of the same shape (its offsets, in W-std
        units, carry over; the mean and std stay this generator's)."""
        from core.encoder.model import load_encoder

        path = Path(path)
        old = load_encoder(path)
        if replace(old.cfg, refine_steps=0) != replace(self.model.cfg, refine_steps=0):
            raise ValueError(f"{path.name} has another shape ({old.cfg}) than this run ({self.model.cfg})")
        weights = {k: v for k, v in old.state_dict().items() if k not in ("w_mean", "w_std")}
        if self.model.refiner is not None and old.refiner is None:
            weights.update(_refiner_warm_start(old))
        elif self.model.refiner is None and old.refiner is not None:
            log.warning("%s has a ReStyle refiner; this run trains the first pass under it, so the export "
                        "has none: train one again with --refine-steps", path.name)  # fmt: skip
            weights = {k: v for k, v in weights.items() if not k.startswith("refiner.")}
        for m in (self.model, self.ema):
            m.load_state_dict({**m.state_dict(), **weights})
        card = path.with_suffix(".json")
        facts = json.loads(card.read_text()).get("training", {}) if card.is_file() else {}
        # "training": the start's own training facts, with its own start inside, so a card names every
        # run behind it (a refiner continued on another machine, then here: each run, its kimg and device)
        earlier = {k: v for k, v in facts.items() if k not in ("curve", "train_config")}
        if facts.get("train_config"):
            earlier["refine_steps"] = facts["train_config"].get("refine_steps", 0)
        return {"file": path.name, "sha256": sha256_file(path), "kimg": facts.get("kimg"),
                "minutes": facts.get("minutes"), "generator_sha256": old.generator_sha256,
                "training": earlier}  # fmt: skip


def _refiner_warm_start(encoder) -> dict[str, torch.Tensor]:
    """A new refiner's weights from a trained encoder's: the same trunk, the stem's extra input channels
    (the current result and the residual) and the head's last layer at zero, so it starts as the identity
    but with features that already describe cats."""
    out = {}
    for k, v in encoder.state_dict().items():
        if k in ("w_mean", "w_std") or k.startswith("head.3."):
            continue
        if k == "stem.weight":
            v = torch.cat([v, v.new_zeros(v.shape[0], 6, *v.shape[2:])], 1)
        out[f"refiner.{k}"] = v
    return out


def encoder_config(cfg: TrainConfig, G) -> EncoderConfig:
    return EncoderConfig(G.resolution, G.num_ws, G.w_dim, cfg.width, cfg.max_channels, cfg.hidden,
                         cfg.refine_steps)  # fmt: skip


def _psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean PSNR (dB, images in [-1, 1] scored as 8-bit) over the batch, on ``mask`` where given."""
    err = ((a.clamp(-1, 1) - b) / 2).square()
    if mask is not None:
        mse = (err * mask).sum((1, 2, 3)) / (3 * mask.sum((1, 2, 3))).clamp_min(1)
    else:
        mse = err.mean((1, 2, 3))
    return float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())


def _eval_inputs(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 held-out eval cats of the inversion card (100..107) and 8 seeded hole masks."""
    from core.data import procedural

    images = procedural.make_dataset(8, seed=procedural.split_seed("eval", 100), resolution=resolution)[0]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, random_holes(8, resolution, torch.Generator().manual_seed(0))


def generator_bank(G, n: int, *, seed: int, cache: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded generator samples: (w [n, w_dim] float32, images [n, R, R, 3] uint8), made once
    and cached as .npy in ``cache`` (the run folder)."""
    from core.imaging import to_uint8

    paths = (cache / f"bank-w-{n}-{seed}.npy", cache / f"bank-images-{n}-{seed}.npy") if cache else None
    if paths and all(p.is_file() for p in paths):
        return torch.from_numpy(np.load(paths[0])), torch.from_numpy(np.load(paths[1]))
    log.info("rendering %d generator samples for the training bank", n)
    w = G.sample_w(n, seed=seed).float()
    images = []
    with torch.inference_mode():
        for i in range(0, n, 256):
            images.append(to_uint8(G.synthesis(G.broadcast(w[i : i + 256]))))
    bank = (w.cpu().numpy(), np.concatenate(images))
    if paths:
        for p, a in zip(paths, bank, strict=True):
            _atomic(p, lambda tmp, a=a: _save_npy(tmp, a))
    return torch.from_numpy(bank[0]), torch.from_numpy(bank[1])


def folder_bank(folder: str | Path, n: int, resolution: int) -> ImageBank:
    """Up to ``n`` images from a folder (png/jpg/webp), centre-cropped square and resized."""
    from core.imageio import load_image

    files = sorted(
        p for p in Path(folder).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")
    )
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    out = []
    for f in files[:n]:
        img = load_image(f)
        h, w = img.shape[:2]
        s = min(h, w)
        crop = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        t = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float()
        out.append(F.interpolate(t, size=(resolution,) * 2, mode="bilinear", antialias=True)[0])
    return ImageBank(torch.stack(out).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())


# --- command line ---------------------------------------------------------------------------------


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train (or with --resume continue) an encoder for a generator in --out. On resume "
        "the generator and settings come from the checkpoint; only the session options apply.",
    )
    s = p.add_argument_group("session options")
    s.add_argument("--generator", help="generator file (.safetensors or .pkl); required for a new run")
    s.add_argument("--images", help="folder of training images (default: the procedural training cats)")
    s.add_argument("--out", required=True, help="run folder (checkpoint, progress.json, sample grids)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    s.add_argument("--minutes", type=float, default=None, help="stop at this total training time")
    s.add_argument("--kimg", type=float, default=None, help="stop at this total of thousand inputs")
    s.add_argument("--checkpoint-minutes", type=float, default=5.0, help="checkpoint + grid cadence")
    s.add_argument("--log-every", type=float, default=60.0, help="seconds between progress lines")
    s.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda:0")
    s.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    s.add_argument(
        "--init-from",
        help="a new run starts from this encoder's weights (one trained for an earlier version of the "
        "generator: far quicker than from scratch; the W statistics are the new generator's)",
    )
    add_config_args(p.add_argument_group("model and training settings (fixed for a run)"), TrainConfig)
    return p


def train(argv: Sequence[str]) -> dict[str, Any]:
    from core.losses import resolve_perceptual

    parser = train_parser()
    a = parser.parse_args(argv)
    setup_logging()
    if a.minutes is None and a.kimg is None:
        parser.error("give a budget: --minutes and/or --kimg")
    if a.threads:
        torch.set_num_threads(a.threads)
    device, out = pick_device(a.device), Path(a.out)
    cfg, gen_path, progress, state = generator_run(parser, a, TrainConfig, out)
    if state is None:
        progress["images"] = a.images  # a resumed run keeps its images unless --images names others
    images_dir = a.images or progress.get("images")
    out.mkdir(parents=True, exist_ok=True)
    G = load_generator(gen_path, device=device)
    if images_dir:
        images = folder_bank(images_dir, cfg.train_images, G.resolution)
    else:
        images = procedural_bank(
            cfg.train_images, seed=0, resolution=G.resolution, cache_dir=out.parent / ".cache"
        )
    bank = generator_bank(G, cfg.bank, seed=cfg.seed + 1, cache=out)
    perceptual, kind = resolve_perceptual("auto", 1.0, device)
    log.info("perceptual loss: %s", kind)
    trainer = EncoderTrainer(cfg, device, G, images, bank, perceptual)
    if a.init_from and state is not None:
        parser.error("--init-from starts a new run; this one resumes from its checkpoint")
    if cfg.refine_steps and state is None and not a.init_from:
        parser.error("--refine-steps trains a refiner on top of a trained encoder: name it with --init-from")
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resumed %s at kimg %.2f", out, trainer.nimg / 1000)
    elif a.init_from:
        progress["init_from"] = trainer.init_from(a.init_from)
        log.info("started from %s", a.init_from)
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


def export(run_dir: str | Path, out: str | Path | None = None, *, generator: str | Path | None = None,
           argv: Sequence[str] = ()) -> dict[str, Path]:  # fmt: skip
    """Write the run's EMA encoder (default: ``<generator>.encoder.safetensors`` beside the generator,
    where the app finds it) and its card ``<stem>.json`` (config, the generator's sha256, training
    facts and the learning curve)."""
    loaded = load_checkpoint(run_dir)
    if loaded is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir}")
    state, progress = loaded
    cfg = TrainConfig(**progress["config"])
    gen_path = Path(generator or progress["generator"])
    if sha256_file(gen_path) != progress["generator_sha256"]:
        raise ValueError(f"{gen_path} is not the generator the run in {run_dir} was trained on")
    G = load_generator(gen_path)
    model = build_encoder(encoder_config(cfg, G))
    model.load_state_dict(state["ema"])
    facts = export_facts(progress, argv, PROG)
    out = Path(out) if out else encoder_path_for(gen_path)
    meta = {"generator": gen_path.name, "generator_sha256": progress["generator_sha256"], "training": facts}
    save_encoder(model, out, metadata=meta)
    out.chmod(0o644)
    sidecar = write_sidecar(
        out,
        config=asdict(model.cfg),
        training=facts,
        extra={
            "format": "latent-canvas-encoder/1",
            "generator": gen_path.name,
            "generator_sha256": progress["generator_sha256"],
            "license": "MIT (trained here on samples of the bundled generator and procedural cats)",
        },
    )
    log.info("exported %s (kimg %.1f) with %s", out, facts["kimg"], sidecar.name)
    return {"model": out, "sidecar": sidecar}


def export_main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog=f"{PROG} export", description="Export a run's EMA encoder.")
    p.add_argument("--run", required=True, help="training run folder")
    p.add_argument("--out", help="encoder .safetensors (default: <generator>.encoder.safetensors beside it)")
    p.add_argument("--generator", help="generator path, if it moved since training (same sha256)")
    a = p.parse_args(argv)
    setup_logging()
    export(a.run, a.out, generator=a.generator, argv=["export", *argv])


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        export_main(argv[1:])
    elif argv[:1] == ["change"]:
        change_main(argv[1:], prog=PROG, config_cls=TrainConfig)
    else:
        train(argv)


if __name__ == "__main__":
    main()
