"""``latent-canvas-cli``: headless jobs (inversion, scribble-to-image, inpainting, interpolation)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from core.compat import check_torch_version
from core.errors import LatentCanvasError
from core.gan.base import LatentSpace
from core.paths import DEFAULT_GENERATOR, bundled_model

log = logging.getLogger("latent_canvas.cli")


def _progress_bar(step: int, total: int, losses: dict, started: float, width: int = 30) -> None:
    done = int(width * step / total)
    rate = step / max(time.perf_counter() - started, 1e-9)
    loss = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {step}/{total} {rate:5.1f} it/s  {loss}   ")
    if step == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _load_generator(model: str | None, device: str):
    from core.models.io import load_generator

    path = Path(model) if model else bundled_model(DEFAULT_GENERATOR)
    if not model and not path.is_file():
        raise LatentCanvasError(f"the bundled model is missing ({path}); pass --model PATH")
    return load_generator(path, device=device), path


def _perceptual(kind: str, weight: float, device: str):
    """Resolve ``--perceptual``; 'auto' takes real LPIPS when its weights exist, else our bundled net."""
    if weight <= 0 or kind == "none":
        return None, "none"
    from core.losses import make_perceptual_loss

    kinds = ["lpips-vgg", "bundled"] if kind == "auto" else [kind]
    errors = []
    for k in kinds:
        try:
            return make_perceptual_loss(k, device=device), k
        except LatentCanvasError as e:
            errors.append(str(e))
    if kind != "auto":
        raise LatentCanvasError(errors[-1])
    log.warning("no perceptual network available (%s); using L1 only", "; ".join(errors))
    return None, "none"


def read_target(a: argparse.Namespace) -> tuple[np.ndarray, np.ndarray | None]:
    """``--image`` as [H, W, 3] uint8 and the mask [H, W] it implies: ``--mask`` (white/opaque = the
    loss looks here), the image's alpha with ``--scribble``, inverted with ``--hole``; or None."""
    from core.imageio import load_image, load_mask

    target = load_image(a.image, keep_alpha=a.scribble)
    mask = load_mask(a.mask) if a.mask else None
    if a.scribble:
        if target.shape[2] != 4:
            raise LatentCanvasError(
                f"{a.image}: --scribble needs a PNG with transparency (alpha marks paint)"
            )
        mask, target = target[..., 3].astype(np.float32) / 255.0, np.ascontiguousarray(target[..., :3])
    if a.hole and mask is not None:
        mask = 1.0 - mask
    return target, mask


def cmd_invert(a: argparse.Namespace) -> int:
    import torch

    from core.imageio import save_png
    from core.jobs.invert import InvertParams, invert, run_to_completion
    from core.jobs.params import MODE_DEFAULTS
    from core.latents import save_latent

    torch.manual_seed(a.seed)
    G, model_path = _load_generator(a.model, a.device)
    target, mask = read_target(a)
    # Unset options take the defaults of the job: scribble, inpaint (--hole) or plain inversion.
    mode = "scribble" if a.scribble else "inpaint" if a.hole and mask is not None else "invert"
    for opt, key in (("space", "space"), ("init", "init"), ("l1", "l1_weight"), ("spread", "spread_weight"),
                     ("perceptual_weight", "perceptual_weight"), ("starts", "starts")):  # fmt: skip
        if getattr(a, opt) is None:
            setattr(a, opt, MODE_DEFAULTS[mode][key])
    perc, perc_kind = _perceptual(a.perceptual, a.perceptual_weight, a.device)
    params = InvertParams(
        target=target,
        mask=mask,
        space=LatentSpace(a.space),
        init=a.init,
        l1_weight=a.l1,
        perceptual_weight=a.perceptual_weight if perc is not None else 0.0,
        l2_delta_weight=a.l2,
        spread_weight=a.spread,
        w_prior_weight=a.w_prior,
        starts=max(a.starts, a.samples) if a.starts else 0,
        start_steps=a.start_steps,
        realism_weight=a.realism_weight,
        paste_back=bool(a.hole and mask is not None),
        optimizer=a.optimizer,
        steps=a.steps,
        lr=a.lr,
        seed=a.seed,
        num_samples=a.samples,
        preview_every=max(1, a.steps // 20),
    )
    started = time.perf_counter()
    job = invert(params, G, perceptual_loss=perc)
    result = run_to_completion(job, lambda ev: _progress_bar(ev.step, ev.total, ev.losses, started))
    elapsed = time.perf_counter() - started
    out = Path(a.out)
    run_info = {
        "command": "invert",
        "model": str(model_path),
        "image": str(a.image),
        "mask": str(a.mask) if a.mask else None,
        "perceptual": perc_kind,
        "seconds": round(elapsed, 3),
        "params": {k: v for k, v in asdict(params).items() if k not in ("target", "mask", "init_latent")},
        "loss_history": result.loss_history,
    }
    for i, img in enumerate(result.images):
        save_png(
            img,
            out / (f"result_{i}.png" if len(result.images) > 1 else "result.png"),
            metadata=run_info["params"],
        )
    save_png(target, out / "target.png")
    save_latent(out / "latent.npz", params.space, result.latent, result.ws, {"model": str(model_path)})
    (out / "run.json").write_text(json.dumps(run_info, indent=1, default=str))
    final = result.loss_history[-1]
    print(f"wrote {out} in {elapsed:.1f}s; final loss " + ", ".join(f"{k}={v:.4f}" for k, v in final.items()))
    return 0


def cmd_interpolate(a: argparse.Namespace) -> int:
    from core.imageio import save_png
    from core.jobs.interpolate import Interpolator
    from core.latents import load_latent

    files = [load_latent(p) for p in a.latents]
    spaces = {f.space for f in files}
    # Mixed spaces meet in w+, which every latent can be expressed in.
    space, lats = (
        (files[0].space, [f.latent[0] for f in files])
        if len(spaces) == 1
        else (
            LatentSpace.W_PLUS,
            [f.ws[0] for f in files],
        )
    )
    G, model_path = _load_generator(a.model or files[0].meta.get("model"), a.device)
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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="latent-canvas-cli", description=__doc__)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)

    inv = sub.add_parser("invert", help="invert an image (or a scribble, or inpaint) into the GAN")
    inv.add_argument("--image", required=True, help="target image (PNG/JPEG/WebP/BMP/TIFF)")
    inv.add_argument("--mask", help="mask image: loss only where white/opaque")
    inv.add_argument("--hole", action="store_true", help="the mask marks a hole to fill (inpainting)")
    inv.add_argument("--scribble", action="store_true", help="image is an RGBA scribble; alpha = mask")
    inv.add_argument("--space", choices=[s.value for s in LatentSpace], help="default: the mode's")
    inv.add_argument("--init", choices=["mean", "random"], help="default: the mode's")
    inv.add_argument("--steps", type=int, default=500)
    inv.add_argument("--optimizer", choices=["adam", "lbfgs"], default="adam")
    inv.add_argument("--lr", type=float, default=0.05)
    inv.add_argument("--l1", type=float, help="L1 loss weight (default: the mode's)")
    inv.add_argument("--perceptual-weight", type=float, help="default: the mode's")
    inv.add_argument(
        "--perceptual",
        default="auto",
        help="auto, lpips-vgg, lpips-alex, vgg-conv5, vgg19-conv3_1 (the seed's), bundled, none",
    )
    inv.add_argument("--l2", type=float, default=0.0, help="L2 penalty on the latent delta")
    inv.add_argument("--spread", type=float, help="w+ layer-spread penalty weight (default: the mode's)")
    inv.add_argument("--w-prior", type=float, default=0.0, help="W log-density proxy weight")
    inv.add_argument("--starts", type=int, help="multi-start: random starts (0: off; default: the mode's)")
    inv.add_argument("--start-steps", type=int, default=20, help="steps before the best --samples are kept")
    inv.add_argument("--realism-weight", type=float, default=1.0, help="W proxy weight when picking starts")
    inv.add_argument("--samples", type=int, default=1, help="latents optimised together")
    inv.add_argument("--seed", type=int, default=0)
    inv.add_argument("--model", help="generator file (.safetensors or StyleGAN2-ADA .pkl)")
    inv.add_argument("--out", required=True)
    inv.set_defaults(func=cmd_invert)

    itp = sub.add_parser("interpolate", help="frames between two or more latent .npz files")
    itp.add_argument("latents", nargs="+", help="two or more latent.npz files")
    itp.add_argument("--frames", type=int, default=16)
    itp.add_argument("--model", help="generator file (default: the one the first latent names)")
    itp.add_argument("--out", required=True)
    itp.set_defaults(func=cmd_interpolate)

    from core.prior.cli import add_parser as add_project_parser  # torch-free until the command runs

    add_project_parser(sub)

    from core.sd.cli import register as add_sd_parsers  # torch-free until the command runs

    add_sd_parsers(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if a.command == "interpolate" and len(a.latents) < 2:
        print("error: interpolate needs at least two latent files", file=sys.stderr)
        return 2
    try:
        check_torch_version()  # torch < 2.6 cannot load model files safely
        return a.func(a)
    except LatentCanvasError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ncancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
