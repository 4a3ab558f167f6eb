"""``latent-canvas-cli sdedit`` and ``latent-canvas-cli models``; :func:`register` adds them to the CLI."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from core.cli.common import held, progress_bar
from core.errors import LatentCanvasError


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    try:
        return int(w), int(h or w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or WxH, got {text!r}") from None


def cmd_sdedit(a: argparse.Namespace) -> int:
    from core.imageio import load_image, load_mask, save_png
    from core.jobs.params import SDEditParams
    from core.jobs.runner import run_to_completion
    from core.jobs.sdedit import sdedit
    from core.sd.model import load_sd_model

    # The global --device: cpu (default), cuda, mps, or auto (CUDA, else MPS, else CPU).
    load = lambda: load_sd_model(a.model, device=a.device, config=a.config, allow_download=a.allow_download)  # noqa: E731
    model = held(("sd", a.model, a.device, a.config), load)
    guide = load_image(a.image)
    mask = load_mask(a.mask) if a.mask else None
    if mask is not None and mask.shape != guide.shape[:2]:
        raise LatentCanvasError(f"{a.mask} is {mask.shape[1]}x{mask.shape[0]}, the image is not")
    params = SDEditParams(
        guide=guide,
        prompt=a.prompt,
        negative_prompt=a.negative_prompt,
        mask=mask,
        strength=a.strength,
        start_step=a.start_step,
        guidance_scale=a.guidance,
        sampler=a.sampler,
        steps=a.steps,
        steps_from_n=a.steps_from_n,
        seed=a.seed,
        size=a.size,
        mask_feather=a.feather,
        preview="fast" if a.save_previews else "none",
    )
    out, started = Path(a.out), time.perf_counter()

    def on_progress(ev) -> None:
        progress_bar(ev.step, ev.total, f"t={ev.losses['timestep']:.0f}", started)
        if ev.preview is not None:
            save_png(ev.preview[0], out / "previews" / f"step_{ev.step:04d}.png")

    result = run_to_completion(sdedit(params, model), on_progress)
    record = {
        "command": "sdedit",
        "model": model.source,
        "device": str(model.device),
        "dtype": str(model.dtype),
        "image": str(a.image),
        "mask": str(a.mask) if a.mask else None,
        "executed_steps": result.executed_steps,
        "timesteps": result.timesteps,
        "size": result.size,
        "seconds": round(result.seconds, 3),
        "params": {k: v for k, v in asdict(params).items() if k not in ("guide", "mask")},
    }
    save_png(result.image, out / "result.png", metadata=record["params"])
    save_png(guide, out / "guide.png")
    (out / "run.json").write_text(json.dumps(record, indent=1, default=str))
    print(
        f"wrote {out / 'result.png'}: {result.executed_steps} steps from t={result.timesteps[0]}, "
        f"{result.seconds:.1f}s on {model.device}"
    )
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from core.models import manager

    if a.action == "list":
        for e in manager.REGISTRY:
            hit = manager.locate(e)
            where = f"{hit[1]}: {hit[0]}" if hit else "missing"
            size = f"{e.size / 1e9:.2f} GB" if e.size else "-"
            print(f"{e.name:20s} {e.kind:16s} {e.format:16s} {size:>9s}  {e.licence}\n{'':20s} {where}")
        return 0
    if a.action == "verify":
        bad = 0
        for e in manager.REGISTRY:
            ok = manager.verify(e)
            bad += ok is False
            print(f"{e.name:20s} {'-' if ok is None else 'ok' if ok else 'SHA256 MISMATCH'}")
        return 1 if bad else 0
    if a.action == "scan":
        for m in manager.scan():
            print(f"{m.where:9s} {m.format:16s} {m.size / 1e6:10.1f} MB  {m.path}")
        return 0
    if not a.name:
        raise LatentCanvasError("models download needs a NAME (see `latent-canvas-cli models list`)")
    from core.jobs.runner import run_to_completion

    started = time.perf_counter()
    job = manager.download_entry(a.name, dest_dir=Path(a.dest) if a.dest else None)
    res = run_to_completion(
        job, lambda ev: ev.total and progress_bar(ev.done, ev.total, f"{ev.done / 1e6:.0f} MB", started)
    )
    print(f"wrote {res.path} (sha256 {res.sha256})")
    return 0


def register(sub) -> None:
    """Add the ``sdedit`` and ``models`` subcommands to the CLI's subparsers."""
    sd = sub.add_parser(
        "sdedit", help="SDEdit: guided generation (and local inpainting) with a diffusion model"
    )
    sd.add_argument("--image", required=True, help="guide image (PNG/JPEG/WebP/BMP/TIFF)")
    sd.add_argument("--prompt", required=True)
    sd.add_argument("--negative-prompt", default="", help="the unconditional branch of guidance")
    sd.add_argument("--strength", type=float, default=0.6, help="N / T: how far to noise the guide (0, 1]")
    sd.add_argument("--start-step", type=int, help="N of T (e.g. 500 of 1000); overrides --strength")
    sd.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale")
    sd.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim")
    sd.add_argument("--steps", type=int, default=50, help="S over the whole schedule; S x strength run")
    sd.add_argument(
        "--steps-from-n", action="store_true", help="the seed's S: --steps steps run from N (stride N / S)"
    )
    sd.add_argument("--mask", help="regenerate only where this mask is white/opaque (local inpainting)")
    sd.add_argument("--feather", type=float, default=4.0, help="mask edge blur inward, pixels")
    sd.add_argument("--seed", type=int, default=0)
    sd.add_argument("--size", type=_size, help="output N or WxH (default: native area, guide's aspect)")
    sd.add_argument("--model", help="diffusers folder, SD .safetensors/.ckpt, or hub id (default: bundled)")
    sd.add_argument("--config", help="diffusers folder or hub id with a single file's configs")
    sd.add_argument("--allow-download", action="store_true", help="a hub id or configs may be downloaded")
    sd.add_argument("--save-previews", action="store_true", help="write each step's x0 preview")
    sd.add_argument("--out", default="out/sdedit", help="output folder (default: out/sdedit)")
    sd.set_defaults(func=cmd_sdedit)

    mo = sub.add_parser("models", help="known models, where they are, and downloads on request")
    mo.add_argument("action", choices=["list", "scan", "verify", "download"])
    mo.add_argument("name", nargs="?", help="registry name for download")
    mo.add_argument("--dest", help="download folder (default: the user models folder)")
    mo.set_defaults(func=cmd_models)
