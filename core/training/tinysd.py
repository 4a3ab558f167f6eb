"""Train the bundled small text-conditioned diffusion model on procedural cats, and export it.

    python -m core.training.tinysd --out runs/tinysd --minutes 60 --threads 1
    python -m core.training.tinysd --out runs/tinysd --resume --minutes 90 --threads 1
    python -m core.training.tinysd export --run runs/tinysd --out resources/models/tinysd-cats32

A pixel-space DDPM (Ho et al. 2020) at 32 px in diffusers classes: a ``UNet2DConditionModel`` whose
cross-attention reads the per-token hidden states of the bundled tiny CLIP's text encoder (converted to
a transformers ``CLIPTextModel``, see :mod:`core.sd.textclip`), as SD 1.x reads OpenAI CLIP's. The text
encoder is frozen; its weights are stored in the run's checkpoint so a resumed run keeps the encoder it
started with. Captions are dropped (replaced by the empty prompt) 10% of the time so one network gives
both branches of classifier-free guidance (Ho & Salimans 2021). Weights are averaged (EMA) and the
export holds the EMA weights as float16 (they load into float32 on the CPU).

Loss: || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t, c) ||^2 (DDPM eq. 14), t uniform.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from core.models.safe_load import sha256_file
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
)

log = logging.getLogger("latent_canvas.training")

PROG = "python -m core.training.tinysd"
NUM_SAMPLES = 16


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0  # seeds the initial weights, the batches and the noise
    resolution: int = 32  # image size (pixel space)
    channels: str = "32,64,64"  # UNet block widths, 32 -> 16 -> 8 px
    attention: str = "0,0,1"  # 1 = that resolution level has cross-attention (the middle always has)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    batch: int = 32
    lr: float = 3e-4  # AdamW peak learning rate
    warmup: int = 200  # iterations of linear warmup
    ema: float = 0.999  # weight EMA decay per iteration
    caption_dropout: float = 0.1  # fraction of captions replaced by "" (classifier-free guidance)
    beta_schedule: str = "linear"  # DDPM's linear 1e-4 .. 0.02 over 1000 steps
    n_train: int = 20_000  # pre-rendered training images (shared cache with the other runs)
    data_seed: int = 0  # first training-split index of the procedural set
    flip: bool = True  # random horizontal flips (captions never say left or right)
    clip: str = ""  # the CLIP weights the text encoder comes from; "" = the bundled tiny CLIP


def scheduler_config(cfg: TrainConfig) -> dict[str, Any]:
    """The noise schedule the model is trained with and sampled under ("trailing" spacing: the first
    timestep of an SDEdit run at N of 1000 is N - 1, the seed's N)."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 1e-4,
        "beta_end": 0.02,
        "beta_schedule": cfg.beta_schedule,
        "prediction_type": "epsilon",
        "clip_sample": True,  # pixel space: predicted x0 clipped to [-1, 1]
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "timestep_spacing": "trailing",
    }


def build_unet(cfg: TrainConfig, cross_attention_dim: int):
    from diffusers import UNet2DConditionModel

    widths = tuple(int(c) for c in cfg.channels.split(","))
    attn = [a == "1" for a in cfg.attention.split(",")]
    if len(attn) != len(widths):
        raise ValueError(f"attention {cfg.attention!r} needs one flag per level of {cfg.channels!r}")
    return UNet2DConditionModel(
        sample_size=cfg.resolution,
        in_channels=3,
        out_channels=3,
        block_out_channels=widths,
        layers_per_block=cfg.layers_per_block,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=8,
    )


def text_encoder_from_clip(clip_path: str, context_length: int | None = None):
    """(CLIPTextModel, CLIPTokenizer) converted from the bundled tiny CLIP (or ``clip_path``)."""
    from core.clip import load_clip
    from core.sd.textclip import hf_text_model, hf_tokenizer

    clip = load_clip(None, weights=clip_path or None, device="cpu")
    model = hf_text_model(clip.model)
    n = context_length or model.config.max_position_embeddings
    return model, hf_tokenizer(n)


@torch.no_grad()
def encode_captions(text_model, tokenizer, captions: list[str], *, chunk: int = 1024) -> torch.Tensor:
    """[N, L, D] float16 per-token hidden states (what the UNet cross-attends to)."""
    out = []
    for i in range(0, len(captions), chunk):
        ids = tokenizer(
            captions[i : i + chunk],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
        ).input_ids
        out.append(text_model(torch.tensor(ids))[0].half())
    return torch.cat(out)


class TinySDTrainer:
    """UNet + EMA + AdamW + the frozen text encoder and the captions' hidden states."""

    def __init__(self, cfg: TrainConfig, device: torch.device, bank: ImageBank, *, text=None):
        from diffusers import DDPMScheduler

        from core.training.clip import training_captions

        if bank.resolution != cfg.resolution:
            raise ValueError(f"training images are {bank.resolution} px, the config says {cfg.resolution}")
        self.cfg, self.device, self.bank, self.batch = cfg, torch.device(device), bank, cfg.batch
        self.gen = seed_everything(cfg.seed)
        self.text_model, self.tokenizer = text or text_encoder_from_clip(cfg.clip)
        self.text_model.requires_grad_(False).eval()
        self.unet = build_unet(cfg, self.text_model.config.hidden_size).to(self.device).train()
        self.ema = copy.deepcopy(self.unet).eval().requires_grad_(False)
        self.sched = DDPMScheduler.from_config(scheduler_config(cfg))
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=cfg.lr, weight_decay=0.0)
        self._encode_captions(training_captions(len(bank), seed=cfg.data_seed))
        self.iteration = self.nimg = 0

    def _encode_captions(self, captions: list[str]) -> None:
        self.ctx = encode_captions(self.text_model, self.tokenizer, captions)  # [N, L, D] fp16 (CPU)
        self.empty = encode_captions(self.text_model, self.tokenizer, [""])  # the unconditional context
        self.sample_ctx = encode_captions(self.text_model, self.tokenizer, eval_captions(NUM_SAMPLES))

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.bank), (self.batch,), generator=self.gen)
        x0 = self.bank.images[idx].float() / 127.5 - 1  # [B, 3, R, R]
        if self.cfg.flip:
            mirrored = torch.rand(self.batch, generator=self.gen) < 0.5
            x0 = torch.where(mirrored[:, None, None, None], x0.flip(3), x0)
        ctx = self.ctx[idx].float()  # [B, L, D]
        dropped = torch.rand(self.batch, generator=self.gen) < self.cfg.caption_dropout
        ctx = torch.where(dropped[:, None, None], self.empty.float().expand_as(ctx), ctx)
        return x0, ctx

    def step(self) -> dict[str, float]:
        x0, ctx = self._batch()
        noise = torch.randn(x0.shape, generator=self.gen)
        t = torch.randint(0, self.sched.config.num_train_timesteps, (self.batch,), generator=self.gen)
        xt = self.sched.add_noise(x0, noise, t)
        for g in self.opt.param_groups:
            g["lr"] = self.cfg.lr * min(1.0, (self.iteration + 1) / max(self.cfg.warmup, 1))
        pred = self.unet(
            xt.to(self.device), t.to(self.device), encoder_hidden_states=ctx.to(self.device)
        ).sample
        loss = F.mse_loss(pred.float(), noise.to(self.device))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.opt.step()
        self._update_ema()
        self.iteration += 1
        self.nimg += self.batch
        return {"loss": float(loss.detach()), "grad": float(grad)}

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.cfg.ema, (1 + self.iteration) / (10 + self.iteration))  # short runs: warm start
        for e, p in zip(self.ema.parameters(), self.unet.parameters(), strict=True):
            e.lerp_(p, 1 - decay)

    @torch.no_grad()
    def samples(self, steps: int = 25, guidance: float = 3.0) -> torch.Tensor:
        """Text-to-image from the EMA UNet for held-out captions (DDIM, fixed noise)."""
        from diffusers import DDIMScheduler

        from core.sd.pipeline import guided_noise

        sched = DDIMScheduler.from_config(scheduler_config(self.cfg))
        sched.set_timesteps(steps)
        gen = torch.Generator().manual_seed(1234)
        r = self.cfg.resolution
        x = torch.randn(NUM_SAMPLES, 3, r, r, generator=gen).to(self.device)
        cond = self.sample_ctx.float().to(self.device)
        uncond = self.empty.float().expand_as(cond).to(self.device)
        for t in sched.timesteps:
            eps = guided_noise(self.ema, x, t.to(self.device), cond, uncond, guidance)
            x = sched.step(eps, t, x).prev_sample
        return x.clamp(-1, 1).cpu()

    def state_dict(self) -> dict[str, Any]:
        return {
            "unet": self.unet.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "text_encoder": self.text_model.state_dict(),
            "text_config": self.text_model.config.to_dict(),
            "rng": rng_state(self.gen),
            "iteration": self.iteration,
            "nimg": self.nimg,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.text_model.load_state_dict(state["text_encoder"])
        self._encode_captions(_captions_for(self.cfg, len(self.bank)))  # from the stored encoder
        self.unet.load_state_dict(state["unet"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        set_rng_state(self.gen, state["rng"])
        self.iteration, self.nimg = int(state["iteration"]), int(state["nimg"])


def eval_captions(n: int) -> list[str]:
    """Captions of the first ``n`` held-out (eval split) procedural cats: the progress grid's prompts."""
    from core.data import procedural

    return [
        procedural.caption(procedural.attributes_for_seed(procedural.split_seed("eval", i))) for i in range(n)
    ]


def _captions_for(cfg: TrainConfig, n: int) -> list[str]:
    from core.training.clip import training_captions

    return training_captions(n, seed=cfg.data_seed)


# --- export -----------------------------------------------------------------------------------------------


def export(run_dir: str | Path, out: str | Path, *, argv: Sequence[str] = ()) -> Path:
    """Write the run's EMA UNet, text encoder, tokenizer and schedule as a diffusers folder, plus
    ``model_card.json`` (training facts, file hashes) and ``README.md``."""
    from diffusers import DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from core.sd.textclip import hf_tokenizer
    from core.sd.tiny import write_pipeline_folder

    loaded = load_checkpoint(run_dir)
    if loaded is None:
        raise SystemExit(f"no checkpoint in {run_dir}")
    state, progress = loaded
    cfg = TrainConfig(**progress["config"])
    text = CLIPTextModel(CLIPTextConfig.from_dict(state["text_config"]))
    text.load_state_dict(state["text_encoder"])
    unet = build_unet(cfg, text.config.hidden_size)
    unet.load_state_dict(state["ema"])
    tok = hf_tokenizer(text.config.max_position_embeddings)
    out = Path(out)
    write_pipeline_folder(
        out, unet.half(), None, text.half(), tok, DDIMScheduler.from_config(scheduler_config(cfg))
    )
    facts = export_facts(progress, argv, PROG)
    files = sorted(
        p for p in out.rglob("*") if p.is_file() and p.name not in ("model_card.json", "README.md")
    )
    card = {
        "name": out.name,
        "format": "diffusers folder, pixel space (no VAE), float16 weights",
        "licence": "MIT (trained here on procedural data)",
        "resolution": cfg.resolution,
        "text_encoder": "the bundled tiny CLIP's text tower (lc-tiny-clip), per-token hidden states",
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "schedule": scheduler_config(cfg),
        "training": facts,
        "files": {
            str(p.relative_to(out)): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files
        },
    }
    write_json(out / "model_card.json", card)
    (out / "README.md").write_text(_readme(card))
    log.info("exported %s (kimg %.1f)", out, facts["kimg"])
    return out


def _readme(card: dict) -> str:
    t = card["training"]
    return f"""# {card["name"]}: the bundled small text-conditioned diffusion model

- What: a {card["resolution"]} px pixel-space DDPM, `UNet2DConditionModel` ({card["unet_parameters"]:,}
  parameters) cross-attending to the per-token hidden states of the bundled tiny CLIP's text encoder
  (converted to a `CLIPTextModel`). A diffusers folder; `core.sd.model.load_sd_model()` loads it by default.
- Data: procedural cat faces and their captions (`core/data/procedural.py`), training split only.
- Training: {t["kimg"]} kimg in {t["minutes"]} min on {", ".join(t["devices"])}; captions dropped 10% of
  the time for classifier-free guidance; EMA weights; seed {t["seed"]}.
- Reproduce: `{" ; ".join(t["commands"])}` then `{t["export_command"]}`.
- Limits: it knows only procedural cats, at 32 px; colours and layout follow prompts, fine detail does not.
  Measured behaviour (faithfulness vs prompt adherence) is in docs/sdedit.md.
- Licence: {card["licence"]}. File hashes: model_card.json.
"""


def export_main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog=f"{PROG} export", description="Export a run as a diffusers folder.")
    p.add_argument("--run", required=True, help="run folder with checkpoint.pt")
    p.add_argument("--out", required=True, help="folder to write (e.g. resources/models/tinysd-cats32)")
    a = p.parse_args(argv)
    setup_logging()
    export(a.run, a.out, argv=["export", *argv])


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        export_main(argv[1:])
    else:
        progress = run_training(argv, prog=PROG, config_cls=TrainConfig, make_trainer=TinySDTrainer)
        log.info("done: %s", json.dumps({k: progress[k] for k in ("kimg", "elapsed_s")}))


if __name__ == "__main__":
    main()
