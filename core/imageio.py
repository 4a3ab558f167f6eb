"""The one image loader everything uses: an allowlist of formats, safe against bombs and bad files."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from core.errors import ImageLoadError

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")
MAX_PIXELS = 64_000_000  # beyond this Pillow's bomb guard becomes our error


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise ImageLoadError(f"image not found: {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        try:
            im = Image.open(path, formats=ALLOWED_FORMATS)
            im.load()  # decode now: truncated data fails here, not later in a worker
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageLoadError(f"{path.name} is too large to open safely ({e})") from e
        except UnidentifiedImageError as e:
            raise ImageLoadError(f"{path.name}: not an image in an allowed format {ALLOWED_FORMATS}") from e
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageLoadError(f"{path.name} is damaged or truncated: {e}") from e
    return im


def _to_rgb(im: Image.Image, *, keep_alpha: bool) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bit by the actual range, never by clipping.
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
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
    uint8, EXIF orientation applied.

    Raises:
        ImageLoadError: missing, unsupported, truncated, corrupt or too large.
    """
    path = Path(path)
    im = _open(path)
    try:
        im = ImageOps.exif_transpose(im)
        return np.asarray(_to_rgb(im, keep_alpha=keep_alpha)).copy()
    except (OSError, ValueError, SyntaxError) as e:
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
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
