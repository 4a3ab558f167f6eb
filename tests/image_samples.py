"""Small valid image files of every kind the loader accepts, built in memory (shared by the image and
fuzz tests). Each is a few hundred bytes to a few KB so that thousands of mutations stay fast."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

H, W = 13, 17  # odd sizes catch transposed shapes


def pixels(seed: int = 0) -> np.ndarray:
    """[H, W, 4] uint8: a smooth gradient with noise, so lossy codecs keep it recognisable."""
    y, x = np.mgrid[0:H, 0:W]
    rng = np.random.default_rng(seed)
    a = np.stack([x * 15, y * 19, (x + y) * 8, 255 - y * 10], axis=-1) + rng.integers(0, 8, (H, W, 4))
    return np.clip(a, 0, 255).astype(np.uint8)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG from raw filtered scanlines: for depths and headers Pillow will not write itself."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def png16_rgb(value: int, width: int = W, height: int = H) -> bytes:
    row = b"\x00" + np.full((width, 3), value, ">u2").tobytes()
    return raw_png(width, height, 16, 2, row * height)


def jpeg_with_orientation(rgb: np.ndarray, orientation: int) -> bytes:
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = orientation
    return encode(im, "JPEG", quality=95, exif=exif.tobytes())


def valid_samples() -> dict[str, bytes]:
    """name -> file bytes, one per format and mode the loader must handle."""
    rgba = Image.fromarray(pixels(), "RGBA")
    rgb = rgba.convert("RGB")
    grey16 = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
    palette = rgb.quantize(16)
    palette.info["transparency"] = 0
    return {
        "png-rgb": encode(rgb, "PNG"),
        "png-rgba": encode(rgba, "PNG"),
        "png-palette-transparent": encode(palette, "PNG"),
        "png-grey": encode(rgb.convert("L"), "PNG"),
        "png-grey-alpha": encode(rgba.convert("LA"), "PNG"),
        "png-grey16": encode(grey16, "PNG"),
        "png-rgb16": png16_rgb(40000),
        "png-1bit": encode(rgb.convert("1"), "PNG"),
        "jpeg-rgb": encode(rgb, "JPEG", quality=90),
        "jpeg-grey": encode(rgb.convert("L"), "JPEG"),
        "jpeg-cmyk": encode(rgb.convert("CMYK"), "JPEG"),
        "jpeg-exif-rot90": jpeg_with_orientation(np.asarray(rgb), 6),
        "webp-lossy": encode(rgb, "WEBP", quality=80),
        "webp-lossless-alpha": encode(rgba, "WEBP", lossless=True),
        "tiff-rgb": encode(rgb, "TIFF"),
        "tiff-cmyk-lzw": encode(rgb.convert("CMYK"), "TIFF", compression="tiff_lzw"),
        "tiff-grey16-deflate": encode(grey16, "TIFF", compression="tiff_adobe_deflate"),
        "tiff-float": encode(Image.fromarray(np.asarray(rgb.convert("L"), np.float32) / 255.0), "TIFF"),
        "tiff-rgba-packbits": encode(rgba, "TIFF", compression="packbits"),
        "bmp-rgb": encode(rgb, "BMP"),
        "bmp-palette": encode(rgb.quantize(16), "BMP"),
    }
