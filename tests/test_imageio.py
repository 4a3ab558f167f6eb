"""The one image loader: every accepted mode converts correctly, and every bad file is a clear
ImageLoadError naming the file (never a traceback, never a hang on a bomb)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.errors import ImageLoadError
from core.imageio import MAX_PIXELS, load_image, load_mask
from tests.image_samples import jpeg_with_orientation, pixels, png16_rgb, raw_png, valid_samples


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", sorted(valid_samples()))
def test_every_sample_loads_as_uint8_rgb(tmp_path, name):
    out = load_image(write(tmp_path, name, valid_samples()[name]))
    expected = (17, 13) if "rot90" in name else (13, 17)
    assert out.dtype == np.uint8 and out.shape == (*expected, 3)


# --- bit depths ---------------------------------------------------------------------------------


def test_16bit_grey_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)  # 0..65535 in 256 steps
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    out = load_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[..., 0], np.arange(256).reshape(16, 16))
    assert (out[..., 0] == out[..., 2]).all()


def test_dark_16bit_image_stays_dark(tmp_path):
    # Values up to 255 of 65535 are near-black; they must not be read as 8-bit full-range data.
    Image.fromarray(np.full((4, 4), 200, np.uint16)).save(tmp_path / "dark16.tif")
    assert load_image(tmp_path / "dark16.tif").max() <= 1


def test_16bit_rgb_png(tmp_path):
    out = load_image(write(tmp_path, "rgb16.png", png16_rgb(40000)))
    assert out.shape == (13, 17, 3) and (out == round(40000 / 65535 * 255)).all()


def test_float_tiff_in_unit_range(tmp_path):
    a = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    a[0, 0] = np.nan  # a NaN pixel must not poison the image
    Image.fromarray(a).save(tmp_path / "f.tif")
    out = load_image(tmp_path / "f.tif")[..., 0]
    assert out[0, 0] == 0 and out[-1, -1] == 255 and abs(int(out[2, 0]) - round(8 / 15 * 255)) <= 1


# --- colour modes -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_converts_to_rgb(tmp_path, fmt):
    cmyk = np.zeros((8, 8, 4), np.uint8)
    cmyk[:, :4] = (0, 255, 255, 0)  # red
    cmyk[:, 4:] = (0, 0, 0, 0)  # white
    Image.frombytes("CMYK", (8, 8), cmyk.tobytes()).save(tmp_path / "c.img", format=fmt, quality=100)
    out = load_image(tmp_path / "c.img").astype(int)
    np.testing.assert_allclose(out[4, 1], (255, 0, 0), atol=12)
    np.testing.assert_allclose(out[4, 6], (255, 255, 255), atol=12)


def test_palette_with_transparency(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:, 2:] = (10, 200, 30)
    im = Image.fromarray(rgb).quantize(4)
    transparent = im.getpixel((0, 0))
    im.save(tmp_path / "p.png", transparency=transparent)
    rgba = load_image(tmp_path / "p.png", keep_alpha=True)
    assert rgba.shape == (4, 4, 4) and (rgba[:, :2, 3] == 0).all() and (rgba[:, 2:, 3] == 255).all()
    flat = load_image(tmp_path / "p.png")
    assert (flat[:, :2] == 255).all()  # transparent composited onto white, not black
    np.testing.assert_array_equal(flat[0, 3], (10, 200, 30))


def test_rgba_keep_alpha_is_exact_and_flattening_uses_white(tmp_path):
    a = pixels()
    a[0, 0, 3] = 0
    Image.fromarray(a).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png", keep_alpha=True), a)
    flat = load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(flat[0, 0], (255, 255, 255))
    alpha = a[5, 5, 3] / 255
    expected = np.round(a[5, 5, :3] * alpha + 255 * (1 - alpha))
    np.testing.assert_allclose(flat[5, 5], expected, atol=1)


def test_grey_and_grey_alpha(tmp_path):
    grey = pixels()[..., 0]
    Image.fromarray(grey).save(tmp_path / "l.png")
    out = load_image(tmp_path / "l.png")
    assert (out == grey[..., None]).all()
    la = np.stack([grey, np.full_like(grey, 128)], axis=-1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    rgba = load_image(tmp_path / "la.png", keep_alpha=True)
    assert rgba.shape[2] == 4 and (rgba[..., 3] == 128).all() and (rgba[..., 1] == grey).all()


def test_grey_without_alpha_has_no_alpha_channel(tmp_path):
    Image.fromarray(pixels()[..., 0]).save(tmp_path / "l.png")
    assert load_image(tmp_path / "l.png", keep_alpha=True).shape[2] == 3


def test_mask_from_alpha_and_from_luminance(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[:2, :, 3] = 255
    Image.fromarray(a).save(tmp_path / "m.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png"), (a[..., 3] / 255).astype(np.float32))
    Image.fromarray(np.full((4, 4), 51, np.uint8)).save(tmp_path / "l.png")
    np.testing.assert_allclose(load_mask(tmp_path / "l.png"), 0.2)


def test_multi_frame_files_give_the_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((4, 4, 3), v, np.uint8)) for v in (10, 100, 200)]
    frames[0].save(tmp_path / "m.tif", save_all=True, append_images=frames[1:])
    assert (load_image(tmp_path / "m.tif") == 10).all()


# --- EXIF orientation ---------------------------------------------------------------------------

# What a viewer must do to the stored pixels for each EXIF orientation value.
ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: np.rot90(a, k=2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_png(tmp_path, orientation):
    a = pixels()[..., :3]
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.png", exif=exif.tobytes())
    np.testing.assert_array_equal(load_image(tmp_path / "o.png"), ORIENTATIONS[orientation](a))


def test_exif_orientation_jpeg(tmp_path):
    a = np.zeros((16, 32, 3), np.uint8)
    a[:8, :8] = 255  # a white block in the top-left corner of the stored pixels
    out = load_image(write(tmp_path, "o.jpg", jpeg_with_orientation(a, 6)))
    assert out.shape == (32, 16, 3)
    assert out[:8, 8:].mean() > 200 and out[:8, :8].mean() < 50  # rotated 90° clockwise: top-right


# --- bad files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["png-rgb", "jpeg-rgb", "webp-lossy", "tiff-rgb", "bmp-rgb"])
def test_truncated_files_are_refused(tmp_path, name):
    data = valid_samples()[name]
    path = write(tmp_path, f"cut-{name}", data[: len(data) * 2 // 3])
    with pytest.raises(ImageLoadError, match=f"cut-{name}"):
        load_image(path)


@pytest.mark.parametrize("side", [(9000, 9000), (20000, 20000), (2**31 - 1, 1)])
def test_decompression_bombs_are_refused_before_decoding(tmp_path, side):
    # A header that declares a huge canvas over a few bytes of data: refused on the header alone.
    assert side[0] * side[1] > MAX_PIXELS
    path = write(tmp_path, "bomb.png", raw_png(*side, 8, 0, b"\0" * 64))
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(path)


def test_real_compressed_bomb_is_refused(tmp_path):
    # 12000 x 6000 grey zeros compress to ~70 KB but would decode to 72 MB.
    Image.new("L", (12000, 6000)).save(tmp_path / "zeros.png", optimize=True)
    assert (tmp_path / "zeros.png").stat().st_size < 200_000
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(tmp_path / "zeros.png")


def test_zero_size_header_is_refused(tmp_path):
    with pytest.raises(ImageLoadError):
        load_image(write(tmp_path, "zero.png", raw_png(0, 0, 8, 0, b"")))


@pytest.mark.parametrize("fmt", ["GIF", "ICO", "PPM", "TGA", "PCX", "EPS"])
def test_disallowed_formats_are_refused(tmp_path, fmt):
    path = tmp_path / f"image.{fmt.lower()}"
    try:
        Image.fromarray(pixels()[..., :3]).save(path, format=fmt)
    except (OSError, KeyError) as e:  # EPS needs ghostscript only to read; writing may still fail
        pytest.skip(f"Pillow cannot write {fmt} here: {e}")
    with pytest.raises(ImageLoadError, match="allowed format"):
        load_image(path)


@pytest.mark.parametrize("content", [b"", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"\x89PNG\r\n"])
def test_non_images_are_refused(tmp_path, content):
    with pytest.raises(ImageLoadError, match="not-an-image"):
        load_image(write(tmp_path, "not-an-image", content))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path)


def test_cli_reports_a_bad_image_without_traceback(tmp_path, capsys):
    from core.cli import main
    from core.models.io import save_generator
    from tests.conftest import tiny_stylegan

    model = save_generator(tiny_stylegan(), tmp_path / "tiny.safetensors")
    bad = write(tmp_path, "broken.png", valid_samples()["png-rgb"][:60])
    rc = main(["invert", "--image", str(bad), "--model", str(model), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "broken.png" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
