"""Train the bundled tiny CLIP on (procedural cat, caption) pairs, export and evaluate it.

    python -m core.training.clip --out runs/clip --minutes 25 --threads 1
    python -m core.training.clip export --run runs/clip --out resources/models/lc-tiny-clip.safetensors
    python -m core.training.clip eval --write-card     # zero-shot + perceptual tables into the card

The model is an open_clip architecture given by a plain open_clip config (a ModifiedResNet image
tower at 64 px, a small text transformer over open_clip's tokenizer and vocabulary), trained with
the symmetric InfoNCE loss of Radford et al. (2021) and a learnt temperature. Augmentation is light
and caption-preserving: horizontal flips (captions never say left or right) and small translations.
Colour jitter would change what the caption says, so there is none.

The text tower's token table (49,408 open_clip tokens) is most of the parameters, and only the few
dozen tokens the captions use are trained; the export stores weights as float16 to keep the file
small (they load back into float32).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from core.clip import BUNDLED_CLIP, ClipModel, build_clip, save_clip
from core.training.common import (
    ImageBank,
    export_facts,
    load_checkpoint,
    rng_state,
    run_training,
    seed_everything,
    set_rng_state,
    setup_logging,
    write_json,
    write_sidecar,
)

log = logging.getLogger("latent_canvas.training")

PROG = "python -m core.training.clip"
NUM_SAMPLES = 32


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0  # seeds the initial weights and the batches
    resolution: int = 64  # image size of the training set and of the image tower
    embed_dim: int = 128  # joint embedding size
    vision_width: int = 16  # ModifiedResNet stem width (final feature width is 32x this)
    vision_layers: str = "1,1,1,1"  # bottleneck blocks per ResNet stage
    text_width: int = 32  # text transformer width (also the token table's row size)
    text_heads: int = 2  # text attention heads
    text_layers: int = 3  # text transformer blocks
    context_length: int = 32  # tokens per caption (the longest procedural caption has 21)
    batch: int = 128  # (image, caption) pairs per iteration: the contrastive negatives
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 0.1  # AdamW weight decay on matrices (not on norms, biases, temperature)
    warmup: int = 200  # iterations of linear learning-rate warmup
    shift: int = 4  # random translation of up to this many pixels (reflect padding)
    n_train: int = 20_000  # pre-rendered training images (shared cache with the GAN runs)
    data_seed: int = 0  # first training-split index of the procedural set
    flip: bool = True  # random horizontal flips

    def open_clip_config(self) -> dict:
        """The open_clip model config (what goes into ``resources/models/open_clip/<name>.json``)."""
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": self.resolution,
                "layers": [int(n) for n in self.vision_layers.split(",")],
                "width": self.vision_width,
            },
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": 49408,  # open_clip's SimpleTokenizer
                "width": self.text_width,
                "heads": self.text_heads,
                "layers": self.text_layers,
            },
        }


def training_captions(n: int, *, seed: int) -> list[str]:
    """Captions of training images ``seed`` .. ``seed + n - 1`` (the order of ``procedural_bank``)."""
    from core.data import procedural

    first = procedural.split_seed("train", seed)
    return [procedural.caption(procedural.attributes_for_seed(first + i)) for i in range(n)]


def augment(x: torch.Tensor, gen: torch.Generator, *, shift: int, flip: bool) -> torch.Tensor:
    """Caption-preserving augmentation of ``x`` [B, 3, H, W]: flips and translations (reflect pad)."""
    B, _, H, W = x.shape
    if flip:
        mirrored = torch.rand(B, generator=gen) < 0.5
        x = torch.where(mirrored[:, None, None, None], x.flip(3), x)
    if shift > 0:
        padded = F.pad(x, (shift,) * 4, mode="reflect")
        dy, dx = torch.randint(0, 2 * shift + 1, (2, B), generator=gen).tolist()
        x = torch.stack(
            [padded[i, :, y : y + H, u : u + W] for i, (y, u) in enumerate(zip(dy, dx, strict=True))]
        )
    return x


def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Symmetric InfoNCE over a batch of unit embeddings [B, D]; returns (loss, image->text accuracy)."""
    logits = logit_scale.exp().clamp(max=100) * img @ txt.T  # [B, B]
    labels = torch.arange(img.shape[0], device=img.device)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    return loss, float((logits.argmax(1) == labels).float().mean())


class ClipTrainer:
    """Holds the CLIP, its optimiser, the captions' tokens and the RNG; one :meth:`step` = one batch."""

    def __init__(self, cfg: TrainConfig, device: torch.device, bank: ImageBank):
        if bank.resolution != cfg.resolution:
            raise ValueError(f"training images are {bank.resolution} px, the config says {cfg.resolution}")
        self.cfg, self.device, self.bank, self.batch = cfg, torch.device(device), bank, cfg.batch
        self.gen = seed_everything(cfg.seed)
        self.clip: ClipModel = build_clip(cfg.open_clip_config(), seed=cfg.seed).to(self.device)
        self.clip.train().requires_grad_(True)
        self.tokens = self.clip.tokenize(training_captions(len(bank), seed=cfg.data_seed)).cpu()  # [N, ctx]
        decay = [p for p in self.clip.parameters() if p.ndim >= 2]
        other = [p for p in self.clip.parameters() if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
        self.iteration = self.nimg = 0

    def _lr(self) -> float:
        return self.cfg.lr * min(1.0, (self.iteration + 1) / max(self.cfg.warmup, 1))

    def step(self) -> dict[str, float]:
        cfg = self.cfg
        idx = torch.randint(len(self.bank), (self.batch,), generator=self.gen)
        x = self.bank.images[idx].float() / 127.5 - 1  # [B, 3, R, R] in [-1, 1]
        x = augment(x, self.gen, shift=cfg.shift, flip=cfg.flip).to(self.device)
        tokens = self.tokens[idx].to(self.device)  # [B, ctx]
        model = self.clip.model
        img = F.normalize(model.encode_image(self.clip.preprocess(x)), dim=-1)
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        loss, acc = clip_loss(img, txt, model.logit_scale)
        for group in self.opt.param_groups:
            group["lr"] = self._lr()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():  # as open_clip's training: keep the temperature in [1, 100]
            model.logit_scale.clamp_(0, math.log(100))
        self.iteration += 1
        self.nimg += self.batch
        return {"loss": float(loss.detach()), "acc": acc, "scale": float(model.logit_scale.detach().exp())}

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        """Augmented views of the first training images (what the progress grid shows)."""
        x = self.bank.images[:NUM_SAMPLES].float() / 127.5 - 1
        return augment(x, torch.Generator().manual_seed(0), shift=self.cfg.shift, flip=self.cfg.flip)

    def state_dict(self) -> dict[str, Any]:
        return {
            "clip": self.clip.model.state_dict(),
            "opt": self.opt.state_dict(),
            "rng": rng_state(self.gen),
            "iteration": self.iteration,
            "nimg": self.nimg,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clip.model.load_state_dict(state["clip"])
        self.opt.load_state_dict(state["opt"])
        set_rng_state(self.gen, state["rng"])
        self.iteration, self.nimg = int(state["iteration"]), int(state["nimg"])


# --- export -----------------------------------------------------------------------------------


def export(run_dir: str | Path, out: str | Path, *, argv: Sequence[str] = ()) -> dict[str, Path]:
    """Write the run's CLIP: float16 safetensors, its open_clip config, and the JSON sidecar.

    Args:
        run_dir: a training run folder (its ``checkpoint.pt`` is read).
        out: ``resources/models/<name>.safetensors``; the open_clip config goes to
            ``open_clip/<name>.json`` beside it, the model card to ``<name>.json``. A card written
            before loses its quality section (it described other weights): run ``eval --write-card``.
    """
    loaded = load_checkpoint(run_dir)
    if loaded is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir}")
    state, progress = loaded
    cfg = TrainConfig(**progress["config"])
    clip = build_clip(cfg.open_clip_config())
    clip.model.load_state_dict(state["clip"])
    out = Path(out)
    config_path = write_json(out.parent / "open_clip" / f"{out.stem}.json", cfg.open_clip_config())
    facts = export_facts(progress, argv, PROG)
    save_clip(clip.eval(), out, dtype=torch.float16, metadata={"open_clip_name": out.stem})
    out.chmod(0o644)  # safetensors writes 0600; these files are shipped
    extra = {
        "open_clip_config": str(config_path.relative_to(out.parent)),
        "storage_dtype": "float16",
        "parameters": sum(p.numel() for p in clip.parameters()),
        "tokenizer": "open_clip SimpleTokenizer",
        "evaluate_command": f"{PROG} eval --write-card",
    }
    sidecar = write_sidecar(out, config=cfg.open_clip_config(), training=facts, extra=extra)
    log.info("exported %s (kimg %.1f) with %s and %s", out, facts["kimg"], sidecar.name, config_path)
    return {"model": out, "sidecar": sidecar, "open_clip_config": config_path}


def export_main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog=f"{PROG} export", description="Export a run's CLIP.")
    p.add_argument("--run", required=True, help="training run folder")
    p.add_argument("--out", required=True, help=f"e.g. resources/models/{BUNDLED_CLIP}.safetensors")
    a = p.parse_args(argv)
    setup_logging()
    export(a.run, a.out, argv=["export", *argv])


def eval_main(argv: Sequence[str]) -> None:
    from core.evals import cli

    cli.main(["clip", *argv])


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        export_main(argv[1:])
    elif argv[:1] == ["eval"]:
        eval_main(argv[1:])
    else:
        run_training(argv, prog=PROG, config_cls=TrainConfig, make_trainer=ClipTrainer)


if __name__ == "__main__":
    main()
