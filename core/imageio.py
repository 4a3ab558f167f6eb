"""The one image loader everything uses (an allowlist of formats, safe against bombs and bad files),
the PNG writer, and scribbles split into colour and mask. Pillow and numpy only, no torch."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from core.errors import ImageLoadError, JobError

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")
MAX_PIXELS = 64_000_000  # beyond this Pillow's bomb guard becomes our error


# What Pillow raises on damaged files. tests/test_fuzz.py checks that nothing else escapes (over 100,000
# mutated files so far, see docs/reliability.md); widen this only for a type it has found.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


@contextlib.contextmanager
def _opened(path: Path):
    if not path.is_file():
        raise ImageLoadError(f"image not found: {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        try:
            with Image.open(path, formats=ALLOWED_FORMATS) as im:
                im.load()  # decode now: truncated data fails here, not later in a worker
                yield im
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageLoadError(f"{path.name} is too large to open safely ({e})") from e
        except UnidentifiedImageError as e:
            raise ImageLoadError(f"{path.name}: not an image in an allowed format {ALLOWED_FORMATS}") from e
        except DECODE_ERRORS as e:
            raise ImageLoadError(f"{path.name} is damaged or truncated: {e}") from e


def _to_uint8(a: np.ndarray, hi: float) -> Image.Image:
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=hi, neginf=0.0)
    return Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def _deep_to_8bit(im: Image.Image) -> Image.Image:
    """Greyscale deeper than 8 bits to L, scaled (never clipped) to its nominal range."""
    a = np.asarray(im)
    if im.mode.startswith("I;16"):
        return _to_uint8(a, 65535.0)
    if im.mode == "F":  # float TIFFs are [0, 1] by convention; larger values mean a 0..255 or 16-bit scale
        m = float(np.nanmax(a, initial=0.0)) if np.isfinite(a).any() else 0.0
        return _to_uint8(a, 1.0 if m <= 1.0 else 255.0 if m <= 255.0 else 65535.0)
    # 32-bit "I": the file does not say its bit depth; values above 255 mean 16-bit data.
    return _to_uint8(a, 65535.0 if a.max(initial=0) > 255 else 255.0)


def _to_rgb(im: Image.Image, *, keep_alpha: bool) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        im = _deep_to_8bit(im)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )
    if keep_alpha and has_alpha:
        return im.convert("RGBA")
    if has_alpha:
        # Composite onto white so transparent pixels do not turn into arbitrary colours.
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")  # CMYK, palette, greyscale, YCbCr -> RGB


def load_image(path: str | os.PathLike, *, keep_alpha: bool = False) -> np.ndarray:
    """Read an image file as ``[H, W, 3]`` (or ``[H, W, 4]`` with ``keep_alpha`` and an alpha channel)
    uint8, EXIF orientation applied. 16-bit and float data are scaled to 8 bits, CMYK / palette /
    greyscale converted to RGB, alpha composited onto white unless ``keep_alpha``.

    Raises:
        ImageLoadError: missing, unsupported, truncated, corrupt or too large.
    """
    path = Path(path)
    with _opened(path) as im:
        try:
            im = ImageOps.exif_transpose(im)
            return np.asarray(_to_rgb(im, keep_alpha=keep_alpha)).copy()
        except DECODE_ERRORS as e:
            raise ImageLoadError(f"{path.name} could not be converted to RGB: {e}") from e


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask image as ``[H, W]`` float32 in [0, 1]: its alpha if it has one, else its luminance."""
    a = load_image(path, keep_alpha=True)
    if a.shape[2] == 4:
        return a[..., 3].astype(np.float32) / 255.0
    return a.astype(np.float32).mean(axis=2) / 255.0


def save_png(image: np.ndarray, path: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """Write uint8 ``[H, W, 3|4]`` atomically; ``metadata`` goes into a PNG text chunk as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if metadata:
        info.add_text("latent-canvas", json.dumps(metadata, default=str))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(image).save(f, format="PNG", pnginfo=info)
            f.flush()
            os.fsync(f.fileno())  # on disk before the name points at it (a power cut, not just a kill)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def split_scribble(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An [H, W, 4] uint8 scribble -> (colours [H, W, 3] uint8, mask [H, W] float32 in [0, 1]): the
    alpha marks the painted pixels, the only ones a scribble job constrains."""
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise JobError("a scribble must be an [H, W, 4] RGBA array; alpha marks the painted pixels")
    return np.ascontiguousarray(rgba[..., :3]), rgba[..., 3].astype(np.float32) / 255.0
