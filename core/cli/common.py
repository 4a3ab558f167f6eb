"""What every ``latent-canvas-cli`` command shares: the progress bar, the generator argument, the
target image and mask, and the run folder it writes."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from core.errors import LatentCanvasError
from core.paths import DEFAULT_GENERATOR, bundled_model


def progress_bar(step: int, total: int, text: str, started: float, width: int = 30) -> None:
    """One ``\r``-refreshed line on stderr: bar, step, rate and ``text``; a newline at the end."""
    done = int(width * step / max(total, 1))
    rate = step / max(time.perf_counter() - started, 1e-9)
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {step}/{total} {rate:5.1f} it/s  {text}   ")
    if step >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def format_losses(losses: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in losses.items())


_HELD: dict | None = None  # set by hold_models(): loaded models kept between commands in one process


def hold_models() -> None:
    """Keep what commands load (generators, perceptual nets, CLIP, SD pipelines) for the next command in
    this process: a batch worker (core.cli.batch) runs the same command on many inputs."""
    global _HELD
    if _HELD is None:
        _HELD = {}


def held(key: tuple, load):
    """``load()``, or while models are held, the object an earlier call with ``key`` loaded."""
    if _HELD is None:
        return load()
    if key not in _HELD:
        _HELD[key] = load()
    return _HELD[key]


def load_generator_arg(model: str | None, device: str):
    """``--model`` (or the bundled generator) -> ``(generator, path)``."""
    from core.models.io import load_generator

    path = Path(model) if model else bundled_model(DEFAULT_GENERATOR)
    if not model and not path.is_file():
        raise LatentCanvasError(f"the bundled model is missing ({path}); pass --model PATH")
    return held(("generator", str(path), device), lambda: load_generator(path, device=device)), path


def read_target(a: argparse.Namespace) -> tuple[np.ndarray, np.ndarray | None]:
    """``--image`` as [H, W, 3] uint8 and the mask [H, W] it implies: ``--mask`` (white/opaque = the
    loss looks here), the image's alpha with ``--scribble``, inverted with ``--hole``; or None."""
    from core.imageio import load_image, load_mask, split_scribble

    target = load_image(a.image, keep_alpha=a.scribble)
    mask = load_mask(a.mask) if a.mask else None
    if a.scribble:
        if target.shape[2] != 4:
            raise LatentCanvasError(
                f"{a.image}: --scribble needs a PNG with transparency (alpha marks paint)"
            )
        target, mask = split_scribble(target)
    if a.hole and mask is not None:
        mask = 1.0 - mask
    return target, mask


def save_run(
    out: Path,
    run_info: dict,
    result,
    *,
    target: np.ndarray | None,
    model_path: Path,
    indexed: bool,
    strip: bool = False,
) -> None:
    """A job's run folder: ``result[_i].png`` (with the params as PNG text), ``strip.png``,
    ``target.png``, ``latent.npz`` and ``run.json``. ``result`` has images, latent, ws and params."""
    from core.gan.latents import save_latent
    from core.imageio import save_png

    for i, img in enumerate(result.images):
        name = f"result_{i}.png" if indexed or len(result.images) > 1 else "result.png"
        save_png(img, out / name, metadata=run_info["params"])
    if strip:
        save_png(np.concatenate(list(result.images), axis=1), out / "strip.png")
    if target is not None:
        save_png(target, out / "target.png")
    save_latent(out / "latent.npz", result.params.space, result.latent, result.ws, {"model": str(model_path)})
    (out / "run.json").write_text(json.dumps(run_info, indent=1, default=str))
