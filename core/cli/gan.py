"""``latent-canvas-cli invert`` (inversion, scribble-to-image, inpainting) and ``interpolate``."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from core.cli.common import format_losses, held, load_generator_arg, progress_bar, read_target, save_run
from core.types import LatentSpace

# Options that, left unset, take the defaults of the job's mode (core.jobs.params.MODE_DEFAULTS).
_MODE_OPTIONS = (("space", "space"), ("init", "init"), ("l1", "l1_weight"), ("spread", "spread_weight"),
                 ("perceptual_weight", "perceptual_weight"), ("starts", "starts"), ("steps", "steps"),
                 ("encoder_jitter", "encoder_jitter"), ("encoder_refine", "encoder_refine"),
                 ("lr", "lr"), ("lr_rampup", "lr_rampup"))  # fmt: skip
# where a mode sets nothing
_FALLBACK = {"steps": 500, "encoder_jitter": 0.0, "encoder_refine": 0, "lr": 0.05, "lr_rampup": 0}


def apply_mode_defaults(
    a: argparse.Namespace, mask: np.ndarray | None, has_encoder: bool = False, spaces=None
) -> None:
    """Unset options take the defaults of the job's mode: scribble, inpaint (--hole) or plain inversion
    (with an encoder for the generator and no other --init asked for, the mode's encoder defaults;
    ``spaces``: the generator's latent spaces)."""
    from core.jobs.params import mode_defaults

    mode = "scribble" if a.scribble else "inpaint" if a.hole and mask is not None else "invert"
    use_encoder = has_encoder and a.init in (None, "encoder")
    defaults = mode_defaults(mode, has_encoder=use_encoder, spaces=spaces, space=a.space)
    for opt, key in _MODE_OPTIONS:
        if getattr(a, opt) is None:
            setattr(a, opt, defaults.get(key, _FALLBACK.get(key)))


def invert_params(a: argparse.Namespace, target: np.ndarray, mask: np.ndarray | None, has_perceptual: bool):
    """The :class:`~core.jobs.params.InvertParams` the arguments ask for (mode defaults applied)."""
    from core.jobs.params import InvertParams

    return InvertParams(
        target=target,
        mask=mask,
        space=LatentSpace(a.space),
        init=a.init,
        encoder_jitter=a.encoder_jitter,
        encoder_refine=a.encoder_refine,
        l1_weight=a.l1,
        perceptual_weight=a.perceptual_weight if has_perceptual else 0.0,
        perceptual_size=a.perceptual_size,
        precision=a.precision,
        l2_delta_weight=a.l2,
        spread_weight=a.spread,
        w_prior_weight=a.w_prior,
        starts=max(a.starts, a.samples) if a.starts else 0,
        start_steps=a.start_steps,
        realism_weight=a.realism_weight,
        truncation=a.truncation,
        class_label=a.class_label,
        paste_back=bool(a.hole and mask is not None),
        optimizer=a.optimizer,
        steps=a.steps,
        lr=a.lr,
        lr_rampup=a.lr_rampup,
        seed=a.seed,
        num_samples=a.samples,
        preview_every=max(1, a.steps // 20),
    )


def cmd_invert(a: argparse.Namespace) -> int:
    import torch

    from core.encoder.model import encoder_path_for
    from core.jobs.invert import invert
    from core.jobs.runner import run_to_completion
    from core.losses import resolve_perceptual

    torch.manual_seed(a.seed)
    G, model_path = load_generator_arg(a.model, a.device)
    target, mask = read_target(a)
    encoder = find_encoder(a, G, model_path)
    apply_mode_defaults(a, mask, has_encoder=encoder is not None, spaces=G.latent_spaces)
    perc, perc_kind = held(
        ("perceptual", a.perceptual, a.perceptual_weight > 0, a.device),
        lambda: resolve_perceptual(a.perceptual, a.perceptual_weight, a.device),
    )
    params = invert_params(a, target, mask, perc is not None)
    started = time.perf_counter()
    job = invert(params, G, perceptual_loss=perc, encoder=encoder)
    result = run_to_completion(
        job, lambda ev: progress_bar(ev.step, ev.total, format_losses(ev.losses), started)
    )
    elapsed = time.perf_counter() - started
    out = Path(a.out)
    run_info = {
        "command": "invert",
        "model": str(model_path),
        "image": str(a.image),
        "mask": str(a.mask) if a.mask else None,
        "perceptual": perc_kind,
        "encoder": None if encoder is None else str(a.encoder or encoder_path_for(model_path)),
        "seconds": round(elapsed, 3),
        "params": {k: v for k, v in asdict(params).items() if k not in ("target", "mask", "init_latent")},
        "loss_history": result.loss_history,
    }
    save_run(out, run_info, result, target=target, model_path=model_path, indexed=False)
    final = result.loss_history[-1] if result.loss_history else {}  # none with --steps 0 (the start)
    print(f"wrote {out} in {elapsed:.1f}s; final loss " + ", ".join(f"{k}={v:.4f}" for k, v in final.items()))
    return 0


def find_encoder(a: argparse.Namespace, G, model_path):
    """The encoder for ``G``: ``--encoder``, or the one beside the generator file; None when there is
    none (a JobError later if ``--init encoder`` asked for it). A file that does not fit is an error."""
    from core.encoder.model import encoder_path_for, load_encoder_for

    if a.encoder is None and not encoder_path_for(model_path).is_file():
        return None
    return held(("encoder", str(model_path), a.encoder, a.device),
                lambda: load_encoder_for(model_path, G, device=a.device, path=a.encoder))  # fmt: skip


def cmd_interpolate(a: argparse.Namespace) -> int:
    from core.gan.latents import load_latent
    from core.imageio import save_png
    from core.jobs.interpolate import Interpolator, ends_in_space

    files = [load_latent(p) for p in a.latents]
    spaces = {f.space for f in files}
    G, model_path = load_generator_arg(a.model or files[0].meta.get("model"), a.device)
    # Mixed spaces meet in w+, which every z, w and w+ latent can be expressed in; with a Style-space
    # latent (it has no ws) in Style space, the others' ws turned into their styles.
    if len(spaces) == 1:
        space, lats = files[0].space, [f.latent[0] for f in files]
    elif LatentSpace.S in spaces:
        space = LatentSpace.S
        own = [(f.latent[0], "s") if f.space is LatentSpace.S else (f.ws[0], "w+") for f in files]
        lats = ends_in_space(G, [x for x, _ in own], [sp for _, sp in own], "s")
    else:
        space, lats = LatentSpace.W_PLUS, [f.ws[0] for f in files]
    frames = Interpolator(G, lats, space).frames(a.frames)
    out = Path(a.out)
    for i, fr in enumerate(frames):
        save_png(fr, out / f"frame_{i:03d}.png")
    strip = np.concatenate(list(frames), axis=1)
    save_png(strip, out / "strip.png")
    run_info = {
        "command": "interpolate",
        "latents": [str(p) for p in a.latents],
        "model": str(model_path),
        "space": space.value,
        "method": "slerp" if space is LatentSpace.Z else "lerp",
        "frames": a.frames,
    }
    (out / "run.json").write_text(json.dumps(run_info, indent=1))
    print(f"wrote {len(frames)} frames ({space.value}) to {out}")
    return 0


def add_parsers(sub) -> None:
    """Register ``invert`` and ``interpolate`` on ``latent-canvas-cli``'s subparsers."""
    inv = sub.add_parser("invert", help="invert an image (or a scribble, or inpaint) into the GAN")
    inv.add_argument("--image", required=True, help="target image (PNG/JPEG/WebP/BMP/TIFF)")
    inv.add_argument("--mask", help="mask image: loss only where white/opaque")
    inv.add_argument("--hole", action="store_true", help="the mask marks a hole to fill (inpainting)")
    inv.add_argument("--scribble", action="store_true", help="image is an RGBA scribble; alpha = mask")
    inv.add_argument("--space", choices=[s.value for s in LatentSpace], help="default: the mode's")
    inv.add_argument("--init", choices=["mean", "random", "encoder"],
                     help="default: the mode's (encoder where the model has one)")  # fmt: skip
    _add_encoder_args(inv)
    inv.add_argument("--steps", type=int, help="default: the mode's (500 without an encoder)")
    inv.add_argument("--optimizer", choices=["adam", "lbfgs"], default="adam")
    inv.add_argument("--lr", type=float, help="Adam step size (default: the mode's, else 0.05)")
    inv.add_argument("--lr-rampup", type=int,
                     help="Adam: steps over which the lr rises from lr/5 to lr (default: the mode's, "
                     "else 0)")  # fmt: skip
    inv.add_argument("--l1", type=float, help="L1 loss weight (default: the mode's)")
    inv.add_argument("--perceptual-weight", type=float, help="default: the mode's")
    inv.add_argument(
        "--perceptual",
        default="auto",
        help="auto, lpips-vgg, lpips-alex, vgg-conv5, vgg19-conv3_1 (the seed's), bundled, none",
    )
    inv.add_argument("--perceptual-size", type=int, default=256,
                     help="larger images are area-downsampled to this for the perceptual loss, as NVlabs' "
                     "projector (0: full size)")  # fmt: skip
    inv.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                     help="bf16: generator and perceptual passes in bf16 (pays on large models on CPUs with "
                     "AVX512-BF16/AMX and on GPUs; docs/performance.md)")  # fmt: skip
    inv.add_argument("--l2", type=float, default=0.0, help="L2 penalty on the latent delta")
    inv.add_argument("--spread", type=float, help="w+ layer-spread penalty weight (default: the mode's)")
    inv.add_argument("--w-prior", type=float, default=0.0, help="W log-density proxy weight")
    inv.add_argument("--starts", type=int, help="multi-start: random starts (0: off; default: the mode's)")
    inv.add_argument(
        "--start-steps",
        type=int,
        default=20,
        help="steps before the best --samples are kept (0: iGAN's search, before any step)",
    )
    inv.add_argument("--realism-weight", type=float, default=1.0, help="W proxy weight when picking starts")
    inv.add_argument(
        "--truncation", type=float, default=1.0, help="psi for random starts in w / w+ (1: none)"
    )
    inv.add_argument("--class", dest="class_label", type=int, help="conditional generators: the class label")
    inv.add_argument("--samples", type=int, default=1, help="latents optimised together")
    inv.add_argument("--seed", type=int, default=0)
    inv.add_argument("--model", help="generator file (.safetensors or StyleGAN2-ADA .pkl)")
    inv.add_argument("--out", required=True)
    inv.set_defaults(func=cmd_invert)

    _add_interpolate_parser(sub)


def _add_encoder_args(inv: argparse.ArgumentParser) -> None:
    inv.add_argument("--encoder", help="encoder file (default: <model>.encoder.safetensors beside the model)")
    inv.add_argument("--encoder-jitter", type=float,
                     help="init encoder, several --samples: W-std spread of the later starts")  # fmt: skip
    inv.add_argument("--encoder-refine", type=int,
                     help="init encoder: ReStyle refinements after its first pass (default: the mode's; "
                     "at most as many as the encoder's refiner offers)")  # fmt: skip


def _add_interpolate_parser(sub) -> None:
    itp = sub.add_parser("interpolate", help="frames between two or more latent .npz files")
    itp.add_argument("latents", nargs="+", help="two or more latent.npz files")
    itp.add_argument("--frames", type=int, default=16)
    itp.add_argument("--model", help="generator file (default: the one the first latent names)")
    itp.add_argument("--out", required=True)
    itp.set_defaults(func=cmd_interpolate)
