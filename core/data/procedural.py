"""Procedural stylised cat faces: the training data for the bundled models.

No pretrained weights or photo sets can be downloaded, so the bundled GANs learn from these. Each
image is a pure function of its `CatAttributes`; the attributes are a pure function of a seed, so an
image is reproducible from one integer. Rendering is vectorised numpy (no per-pixel Python): edges
are signed distance fields with one-pixel anti-aliasing ramps, drawn at `_SUPERSAMPLE` times the
output size and box-filtered down; the coat has sphere lighting, smoothed-noise fur grain and soft
pattern masks, so images are shaded rather than flat clip-art. About 600 images/s at 64 px on one
CPU core.

Splits: image ``i`` of a split has seed ``split_seed(split, i)``. Training seeds start at 0 and
held-out evaluation seeds at 10_000_000, so the two never overlap while training sets stay below ten
million images.

    python -m core.data.procedural --n 64 --out grid.png   # contact sheet + captions on stdout
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

# RGB in [0, 1]. Calico is a white base with orange and black patches (see `_fur_colour`).
FUR_COLOURS = {
    "orange": (0.90, 0.50, 0.18),
    "black": (0.14, 0.13, 0.13),
    "white": (0.94, 0.93, 0.90),
    "grey": (0.52, 0.54, 0.57),
    "brown": (0.46, 0.30, 0.18),
    "cream": (0.93, 0.79, 0.58),
    "calico": (0.95, 0.93, 0.88),
}
PATTERNS = ("solid", "tabby", "spotted", "bicolour")
EYE_COLOURS = {
    "green": (0.40, 0.75, 0.22),
    "blue": (0.30, 0.58, 0.95),
    "yellow": (0.96, 0.76, 0.12),
    "brown": (0.58, 0.34, 0.12),
}
EAR_SHAPES = ("pointy", "rounded", "folded")
# Fur-like names (orange, brown, grey, white, black) are left out so a caption's background colour
# is never confused with the cat's when retrieved zero-shot.
BACKGROUND_COLOURS = {
    "blue": (0.28, 0.48, 0.85),
    "green": (0.33, 0.68, 0.35),
    "red": (0.82, 0.22, 0.20),
    "yellow": (0.96, 0.86, 0.36),
    "purple": (0.55, 0.34, 0.76),
    "pink": (0.96, 0.62, 0.74),
    "teal": (0.18, 0.62, 0.62),
}
BACKGROUND_STYLES = ("flat", "vertical", "radial")

SPLIT_SIZE = 10_000_000  # seeds per split
SPLIT_STARTS = {"train": 0, "eval": 10_000_000}

_SUPERSAMPLE = 2  # render at 2x and box-filter down: smooth edges at the output size


@dataclass(frozen=True)
class CatAttributes:
    """Everything that decides one image; `render` is a pure function of it."""

    fur: str  # key of FUR_COLOURS
    pattern: str  # one of PATTERNS
    eyes: str  # key of EYE_COLOURS
    ears: str  # one of EAR_SHAPES
    background: str  # key of BACKGROUND_COLOURS
    background_style: str  # one of BACKGROUND_STYLES
    head_x: float  # head centre offset in canvas units ([-1, 1] spans the image)
    head_y: float
    yaw: float  # [-1, 1]: face features slide sideways as if the head turned
    tilt: float  # in-plane head rotation, radians
    scale: float  # head half-width as a fraction of the half-canvas
    light_angle: float  # direction the light comes from in the image plane, radians (y down)
    pupil: float  # [0, 1]: narrow slit to round pupil
    fur_roughness: float  # fur grain amplitude multiplier, around 1
    brightness: float  # fur colour multiplier, around 1
    texture_seed: int  # seeds the noise fields (fur grain, patches, stripe warp)


def split_seed(split: str, index: int) -> int:
    """Seed of image `index` in `split` ("train" from 0, "eval" from 10_000_000)."""
    if split not in SPLIT_STARTS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_STARTS)}")
    if not 0 <= index < SPLIT_SIZE:
        raise ValueError(f"index must be in [0, {SPLIT_SIZE}), got {index}")
    return SPLIT_STARTS[split] + index


def _pick(options, u: float) -> str:
    options = tuple(options)
    return options[min(int(u * len(options)), len(options) - 1)]


# Continuous jitter: (low, high) of a uniform draw, in the order drawn.
_JITTER = {
    "head_x": (-0.08, 0.08),
    "head_y": (0.0, 0.10),
    "yaw": (-1.0, 1.0),
    "scale": (0.50, 0.62),
    "light_angle": (-2.5, -0.65),  # from the upper left round to the upper right
    "pupil": (0.0, 1.0),
    "fur_roughness": (0.6, 1.4),
    "brightness": (0.9, 1.08),
}


def sample_attributes(rng: np.random.Generator) -> CatAttributes:
    """Draw one cat's attributes; categories are uniform, continuous jitter is bounded.

    All draws come from two calls on `rng` (per-call overhead dominates at this size).
    """
    cat = rng.random(N_CATEGORY_DRAWS)
    u = rng.random(N_JITTER_DRAWS)
    return attributes_from_uniforms(cat, u, texture_seed=int(rng.integers(2**31)))


N_CATEGORY_DRAWS = 6  # fur, pattern, eyes, ears, background, background style
N_JITTER_DRAWS = len(_JITTER) + 2  # the jitter in `_JITTER`'s order, then two for the tilt


def attributes_from_uniforms(
    cat: Sequence[float], u: Sequence[float], *, texture_seed: int = 0
) -> CatAttributes:
    """The attributes that uniform draws in [0, 1) decide: ``cat`` [6] picks the categories, ``u``
    [10] the continuous jitter (see `sample_attributes`, which feeds this from a seeded generator;
    the distilled generator's training pairs feed it from a latent, `core.training.distill`)."""
    if len(cat) != N_CATEGORY_DRAWS or len(u) != N_JITTER_DRAWS:
        raise ValueError(f"need {N_CATEGORY_DRAWS} category and {N_JITTER_DRAWS} jitter draws")
    fur = _pick(FUR_COLOURS, cat[0])
    # A white muzzle on a white cat is invisible, so white cats never draw "bicolour".
    patterns = [p for p in PATTERNS if not (fur == "white" and p == "bicolour")]
    draws = zip(_JITTER.items(), u[: len(_JITTER)], strict=True)
    jitter = {name: lo + (hi - lo) * float(v) for (name, (lo, hi)), v in draws}
    return CatAttributes(
        fur=fur,
        pattern=_pick(patterns, cat[1]),
        eyes=_pick(EYE_COLOURS, cat[2]),
        ears=_pick(EAR_SHAPES, cat[3]),
        background=_pick(BACKGROUND_COLOURS, cat[4]),
        background_style=_pick(BACKGROUND_STYLES, cat[5]),
        tilt=0.3 * (float(u[-2]) + float(u[-1]) - 1.0),  # triangular on [-0.3, 0.3]: mostly upright
        texture_seed=int(texture_seed),
        **jitter,
    )


def attributes_for_seed(seed: int) -> CatAttributes:
    return sample_attributes(np.random.default_rng(seed))


# ---------------------------------------------------------------------------------------------------
# Captions

_PATTERN_PHRASES = {"solid": "solid {fur}", "tabby": "{fur} tabby", "spotted": "spotted {fur}"}
_CAT_WORDS = ("cat", "cat", "kitten")
_TEMPLATES = (
    "{a} {coat} {cat} with {eyes} eyes on a {bg} background",
    "{a} {coat} {cat} with {eyes} eyes in front of a {bg} background",
    "a portrait of {a} {coat} {cat} with {eyes} eyes, {bg} background",
    "{a} {coat} {cat} with {eyes} eyes against a {bg} backdrop",
)
_EAR_PHRASES = {"pointy": "", "rounded": "", "folded": " and folded ears"}


def _coat_phrase(attrs: CatAttributes) -> str:
    if attrs.pattern == "bicolour":
        return f"{attrs.fur} and white"
    return _PATTERN_PHRASES[attrs.pattern].format(fur=attrs.fur)


def caption(attrs: CatAttributes) -> str:
    """Plain-English caption naming fur colour, pattern, eye colour and background colour.

    The wording varies with `texture_seed`, so it is deterministic per image.
    """
    coat = _coat_phrase(attrs)
    variant = attrs.texture_seed
    cat = _CAT_WORDS[variant % len(_CAT_WORDS)]
    template = _TEMPLATES[(variant // len(_CAT_WORDS)) % len(_TEMPLATES)]
    eyes = attrs.eyes + " eyes" + _EAR_PHRASES[attrs.ears]
    text = template.format(a="{a}", coat=coat, cat=cat, eyes=attrs.eyes, bg=attrs.background)
    text = text.replace(f"{attrs.eyes} eyes", eyes, 1)
    article = "an" if coat[0] in "aeiou" else "a"
    return text.replace("{a}", article, 1)


# ---------------------------------------------------------------------------------------------------
# Rendering. One image at a time: per-op work on a 128x128 canvas is small enough that numpy's call
# overhead matters, so each layer runs only inside its own bounding window and only for cats that
# have it (stripes only on tabbies, ...). Images are float32 [3, R, R], channels first so colour
# blends broadcast over long contiguous rows.


def _clip(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    # np.clip goes through two Python wrapper layers; at this array size that overhead dominates.
    out = np.maximum(x, lo)
    return np.minimum(out, hi, out=out)


def _cov(d: np.ndarray, w: float) -> np.ndarray:
    """Coverage of a signed distance field with a one-pixel linear ramp (the anti-aliasing)."""
    return _clip(0.5 - d * (1.0 / w), 0.0, 1.0)


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    # Polynomial smooth max (Quilez): rounds the corner where two half-planes meet by about k.
    h = np.maximum(k - np.abs(a - b), 0.0) * (1.0 / k)
    return np.maximum(a, b) + h * h * (k * 0.25)


def _halfplane(x: np.ndarray, y: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    # Signed distance to the line through a and b, positive on the right of a->b (y down).
    ex, ey = b[0] - a[0], b[1] - a[1]
    n = math.hypot(ex, ey)
    return (x - a[0]) * (ey / n) - (y - a[1]) * (ex / n)


def _blend(img: np.ndarray, colour, alpha: np.ndarray) -> None:
    """Composite `colour` (an RGB triple or a [3, h, w] field) over img [3, h, w] with alpha [h, w]."""
    colour = np.asarray(colour, np.float32)
    if colour.ndim == 1:
        colour = colour.reshape(3, 1, 1)
    img += (colour - img) * alpha


@functools.lru_cache(maxsize=64)
def _upsample_matrix(grid: int, size: int) -> np.ndarray:
    # Separable smoothstep interpolation of `grid` lattice points spanning the canvas: [size, grid].
    t = (np.arange(size) + 0.5) / size * (grid - 1)
    k = np.minimum(t.astype(int), grid - 2)
    f = t - k
    f = f * f * (3 - 2 * f)
    m = np.zeros((size, grid), np.float32)
    m[np.arange(size), k] = 1 - f
    m[np.arange(size), k + 1] = f
    return m


Lattices = dict[str, list[np.ndarray]]  # noise-field name -> one float32 lattice per octave


def lattice_shapes() -> dict[str, list[tuple[int, int]]]:
    """The (rows, cols) of every noise lattice a cat's texture is made of, per field and octave.
    Their entries are i.i.d. standard normal; `render_batch` takes them explicitly via ``lattices``."""
    return {name: [(rows, cols) for rows, cols, _ in octaves] for name, octaves in _NOISE_OCTAVES.items()}


def _lattices(seed: int) -> Lattices:
    # Every field's random lattice, drawn in a fixed order from one generator (seeding costs more
    # than drawing); only the fields a cat uses are then interpolated.
    rng = np.random.default_rng(seed)
    return {
        name: [rng.standard_normal((rows, cols), dtype=np.float32) for rows, cols, _ in octaves]
        for name, octaves in _NOISE_OCTAVES.items()
    }


def _smooth_noise(lattices: list[np.ndarray], octaves, size: int) -> np.ndarray:
    # Octaves are (rows, cols, amplitude); rows < cols stretches blobs vertically, like fur strands.
    # At the output size (up to ~80 px) these matmuls stay under OpenBLAS's threading threshold;
    # its threads thrash on a busy 2-core machine.
    out = np.zeros((size, size), np.float32)
    for g, (rows, cols, amp) in zip(lattices, octaves, strict=True):
        out += amp * (_upsample_matrix(rows, size) @ g @ _upsample_matrix(cols, size).T)
    return out


_NOISE_OCTAVES = {  # lattice sizes are per image side, so patterns do not depend on resolution
    "grain": ((26, 44, 1.0), (10, 14, 0.4)),
    "patch": ((5, 5, 1.0), (10, 10, 0.45)),
    "patch2": ((6, 6, 1.0), (12, 12, 0.45)),
    "warp": ((5, 5, 1.0),),
}


@dataclass
class _Grid:
    """Pixel centres of one square raster, in the head's frame."""

    a: CatAttributes
    x: np.ndarray  # [n, n] head-local x; the head ellipse has half-width 1
    y: np.ndarray  # [n, n] head-local y, down
    px: float  # one pixel in head-local units

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
        """Pixel slices covering the head-local box [x0, x1] x [y0, y1] after rotation, padded."""
        a, n = self.a, self.x.shape[0]
        c, s = math.cos(a.tilt), math.sin(a.tilt)
        cx, cy, hw, hh = (x0 + x1) * 0.5, (y0 + y1) * 0.5, (x1 - x0) * 0.5, (y1 - y0) * 0.5
        k = a.scale * 0.5 * n  # head-local units to pixels
        u = (a.head_x + a.scale * (c * cx - s * cy) + 1) * 0.5 * n
        v = (a.head_y + a.scale * (s * cx + c * cy) + 1) * 0.5 * n
        ru, rv = k * (abs(c) * hw + abs(s) * hh), k * (abs(s) * hw + abs(c) * hh)
        return _span(v - rv, v + rv, n), _span(u - ru, u + ru, n)


def _span(lo: float, hi: float, size: int) -> slice:
    start = min(max(int(lo) - 2, 0), size)
    return slice(start, max(min(int(hi) + 3, size), start))


def _canvas_coords(size: int) -> np.ndarray:
    return (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0


def _grid(a: CatAttributes, size: int) -> _Grid:
    c = _canvas_coords(size)
    dx = ((c - a.head_x) / a.scale)[None, :]
    dy = ((c - a.head_y) / a.scale)[:, None]
    cos, sin = math.cos(a.tilt), math.sin(a.tilt)
    return _Grid(a=a, x=cos * dx + sin * dy, y=cos * dy - sin * dx, px=2.0 / size / a.scale)


@dataclass
class _Canvas:
    """One image being drawn. Smooth fields (background, coat colour and lighting) live on the
    output-size `lo` grid; edges are drawn on the supersampled `hi` grid."""

    a: CatAttributes
    lo: _Grid
    hi: _Grid
    img: np.ndarray  # [3, R, R] float32 RGB in [0, 1] on the hi grid
    fx: float  # horizontal shift of the face features (yaw)
    lattices: dict[str, list[np.ndarray]]  # random lattices behind the noise fields
    _noise: dict[str, np.ndarray] = field(default_factory=dict)

    def noise(self, name: str) -> np.ndarray:
        """Smooth noise field on the lo grid, about unit variance (see `_NOISE_OCTAVES`)."""
        if name not in self._noise:
            size = self.lo.x.shape[0]
            self._noise[name] = _smooth_noise(self.lattices[name], _NOISE_OCTAVES[name], size)
        return self._noise[name]

    def view(self, w: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.img[:, w[0], w[1]], self.hi.x[w], self.hi.y[w]


def _canvas(a: CatAttributes, out_size: int, lattices: Lattices | None = None) -> _Canvas:
    size = out_size * _SUPERSAMPLE
    return _Canvas(
        a=a,
        lo=_grid(a, out_size),
        hi=_grid(a, size),
        img=np.empty((3, size, size), np.float32),
        fx=0.16 * a.yaw,
        lattices=_lattices(a.texture_seed) if lattices is None else lattices,
    )


def _upsample(lo: np.ndarray) -> np.ndarray:
    return lo.repeat(_SUPERSAMPLE, axis=-2).repeat(_SUPERSAMPLE, axis=-1)


# Layers, back to front.


def _background(cv: _Canvas) -> np.ndarray:
    """[3, r, r] on the lo grid: palette colour, gradient, mottling and the head's drop shadow."""
    a = cv.a
    c = _canvas_coords(cv.lo.x.shape[0])
    u, v = c[None, :], c[:, None]
    if a.background_style == "vertical":
        light = 0.98 - 0.24 * v + 0 * u  # brighter at the top
    elif a.background_style == "radial":
        light = 1.12 - 0.32 * np.sqrt(u * u + v * v)  # glow behind the head
    else:
        light = np.full(cv.lo.x.shape, 0.96, np.float32)
    light = light + 0.025 * cv.noise("patch")  # faint mottling: no background is a single colour
    light *= 1.0 - _drop_shadow(cv.lo)
    return np.asarray(BACKGROUND_COLOURS[a.background], np.float32).reshape(3, 1, 1) * light


def _drop_shadow(g: _Grid) -> np.ndarray:
    # A blurred copy of the head pushed away from the light darkens the background behind it.
    sx, sy = -0.2 * math.cos(g.a.light_angle), -0.2 * math.sin(g.a.light_angle)
    d = np.sqrt((g.x - sx) ** 2 + ((g.y - sy) * (1 / 0.9)) ** 2) - 1.0
    return _clip(0.2 - 0.55 * d, 0.0, 0.35)


# Apex, inner base, outer base (head-local, right ear), tip rounding, base rounding. Folded ears are
# flaps bent forward over the head: the "apex" is the tip pointing down and out, the base edge is
# the fold and shows above the skull, so it is rounded too.
_EAR_GEOMETRY = {
    "pointy": ((0.76, -1.30), (0.20, -0.74), (1.02, -0.40), 0.05, 0.0),
    "rounded": ((0.78, -1.14), (0.14, -0.72), (1.06, -0.30), 0.55, 0.0),
    "folded": ((0.84, -0.40), (0.16, -0.90), (0.98, -0.80), 0.25, 0.35),
}


def _ear_sdf(x: np.ndarray, y: np.ndarray, cv: _Canvas) -> np.ndarray:
    """Signed distance to both ears (mirrored about the face)."""
    apex, inner, outer, k_tip, k_base = _EAR_GEOMETRY[cv.a.ears]
    x = np.abs(x - 0.5 * cv.fx)  # the ears turn with the head a little less than the face does
    d = _smax(_halfplane(x, y, inner, apex), _halfplane(x, y, apex, outer), k_tip)
    base = _halfplane(x, y, outer, inner)
    return _smax(d, base, k_base) if k_base else np.maximum(d, base)


def _head_sdf(x: np.ndarray, y: np.ndarray, grain: np.ndarray) -> np.ndarray:
    # Wider at the cheeks than at the crown; fur grain roughens the silhouette.
    y = y - 0.05
    rx = 1.0 + 0.08 * _clip(y, 0.0, 1.0)
    return (np.sqrt((x / rx) ** 2 + (y * (1 / 0.86)) ** 2) - 1.0) * 0.9 + 0.02 * grain


def _body_sdf(x: np.ndarray, y: np.ndarray, grain: np.ndarray) -> np.ndarray:
    return np.sqrt((x * (1 / 1.45)) ** 2 + ((y - 1.75) * (1 / 0.95)) ** 2) * 0.95 - 0.95 + 0.015 * grain


def _coat(cv: _Canvas) -> np.ndarray:
    """[3, r, r] lit coat colour on the lo grid: base, pattern, markings, lighting, fur grain."""
    a, g = cv.a, cv.lo
    base = np.asarray(FUR_COLOURS[a.fur], np.float32) * a.brightness
    coat = np.empty((3,) + g.x.shape, np.float32)
    coat[:] = base.reshape(3, 1, 1)
    if a.fur == "calico":
        _calico_patches(coat, cv)
    if a.pattern == "spotted":
        _blend(coat, _pattern_shade(a), _clip((cv.noise("patch") - 0.35) * 2.5, 0.0, 0.85))
    elif a.pattern == "tabby":
        _blend(coat, _pattern_shade(a), _stripes(cv))
    _whisker_pads(coat, cv, base)
    if a.pattern == "bicolour":
        _white_markings(coat, cv)
    coat *= _lighting(cv)
    return coat


def _pattern_shade(a: CatAttributes) -> tuple[float, float, float]:
    if a.fur == "black":
        return (0.04, 0.04, 0.04)
    if a.fur in ("white", "calico"):
        return (0.45, 0.45, 0.47)
    r, g, b = FUR_COLOURS[a.fur]
    return (0.5 * r, 0.45 * g, 0.42 * b)


def _calico_patches(coat: np.ndarray, cv: _Canvas) -> None:
    _blend(coat, FUR_COLOURS["orange"], _clip((cv.noise("patch") - 0.15) * 3.0, 0.0, 1.0))
    _blend(coat, (0.12, 0.11, 0.11), _clip((cv.noise("patch2") - 0.45) * 3.0, 0.0, 1.0))


def _stripes(cv: _Canvas) -> np.ndarray:
    # Spokes around a point under the nose, mirrored: vertical on the forehead (the "M"),
    # horizontal on the cheeks; the warp field wobbles them and the eyes and muzzle stay clear.
    x = np.abs(cv.lo.x - cv.fx)
    y = 0.3 - cv.lo.y
    s = np.sin(np.arctan2(x, y) * 11.0 + 1.3 * cv.noise("warp") + 1.0)
    fade = _clip((x * x + y * y - 0.36) * 3.0, 0.0, 1.0)
    return _clip((s - 0.15) * 2.0, 0.0, 0.8) * fade


def _whisker_pads(coat: np.ndarray, cv: _Canvas, base: np.ndarray) -> None:
    # Lighter fur on the whisker pads, on every cat.
    w = cv.lo.window(cv.fx - 0.4, cv.fx + 0.4, 0.25, 0.65)
    x, y = np.abs(cv.lo.x[w] - cv.fx), cv.lo.y[w]
    pads = _clip(1.2 - ((x - 0.12) * (1 / 0.2)) ** 2 - ((y - 0.44) * (1 / 0.15)) ** 2, 0.0, 1.0)
    _blend(coat[:, w[0], w[1]], np.minimum(base * 1.25 + 0.08, 1.0), 0.55 * pads)


def _white_markings(coat: np.ndarray, cv: _Canvas) -> None:
    # Bicolour: white muzzle, a blaze up between the eyes, and a white chest.
    x, y = np.abs(cv.lo.x - cv.fx), cv.lo.y
    muzzle = (x * (1 / 0.48)) ** 2 + ((y - 0.42) * (1 / 0.36)) ** 2 - 1.0
    blaze = np.maximum(x - 0.08 - 0.35 * (y + 0.45), -0.55 - y)
    chest = (cv.lo.x * (1 / 0.75)) ** 2 + ((y - 1.9) * (1 / 0.9)) ** 2 - 1.0
    # Ragged edge: the boundary follows the warp field rather than a clean curve.
    d = np.minimum(np.minimum(muzzle, blaze), chest) + 0.08 * cv.noise("warp")
    _blend(coat, (0.96, 0.95, 0.93), _clip(0.5 - d * 8.0, 0.0, 1.0))


def _lighting(cv: _Canvas) -> np.ndarray:
    """[r, r] Lambert shading of the head as a sphere, plus fur grain."""
    a, g = cv.a, cv.lo
    lx, ly = 0.75 * math.cos(a.light_angle), 0.75 * math.sin(a.light_angle)
    nx, ny = g.x, (g.y - 0.05) * (1 / 0.86)
    nz = np.sqrt(_clip(1.0 - nx * nx - ny * ny, 0.0, 1.0))
    diffuse = _clip(nx * lx + ny * ly + nz * 0.66, 0.0, 1.0)
    return 0.5 + 0.6 * diffuse + (0.055 * a.fur_roughness) * cv.noise("grain")


def _fur(cv: _Canvas, coat: np.ndarray, grain: np.ndarray) -> None:
    # Body first, darker below the chin (in the head's shadow); then head and ears as one shape.
    wb = cv.hi.window(-1.8, 1.8, 0.6, 4.0)
    img, x, y = cv.view(wb)
    neck = 0.62 + 0.25 * _clip(y - 1.0, 0.0, 1.0)
    _blend(img, coat[:, wb[0], wb[1]] * neck, _cov(_body_sdf(x, y, grain[wb]), cv.hi.px))
    wh = cv.hi.window(-1.2, 1.2, -1.4, 1.05)
    img, x, y = cv.view(wh)
    head = _head_sdf(x, y, grain[wh])
    ears = _ear_sdf(x, y, cv)
    _blend(img, coat[:, wh[0], wh[1]], _cov(np.minimum(head, ears), cv.hi.px))
    if cv.a.ears == "folded":
        _fold_shadow(img, ears, head, cv.hi.px)
    else:
        _inner_ears(img, y, ears, head, cv)


def _inner_ears(img, y, ears, head, cv: _Canvas) -> None:
    # Pink (or dusky) interiors, darker towards the base, only where the head does not cover them.
    colour = np.asarray(_inner_ear_colour(cv.a), np.float32).reshape(3, 1, 1)
    depth = 0.6 + 0.4 * _clip(-1.0 - y, 0.0, 1.0)
    _blend(img, colour * depth, _cov(ears + 0.12, cv.hi.px) * (1.0 - _cov(head, cv.hi.px)))


def _fold_shadow(img, ears, head, px: float) -> None:
    # Folded ears lie on the head and face down, away from the light: a darker flap, a dark fold
    # line, and a soft shadow on the head just below the flap.
    inside_head = _cov(head, px)
    flap = _cov(ears, px)
    shadow = _clip(1.0 - ears * 10.0, 0.0, 1.0) * (1.0 - flap) * inside_head
    line = _clip(1.0 - np.abs(ears + 0.03) * (1 / 0.025), 0.0, 1.0) * inside_head
    img *= 1.0 - 0.15 * flap - 0.5 * shadow - 0.35 * line


def _inner_ear_colour(a: CatAttributes) -> tuple[float, float, float]:
    if a.fur in ("black", "brown", "grey"):
        return (0.42, 0.30, 0.32)
    return (0.94, 0.64, 0.66)


def _eyes(cv: _Canvas) -> None:
    # Almond = intersection of two circles, slanted up at the outer corner; mirrored about the face.
    a = cv.a
    img, x, y = cv.view(cv.hi.window(cv.fx - 0.7, cv.fx + 0.7, -0.35, 0.22))
    x = np.abs(x - cv.fx) - 0.37
    y = y + 0.06
    ex, ey = 0.96 * x + 0.26 * y, 0.96 * y - 0.26 * x
    half_w, half_h = 0.2, 0.14
    rad = (half_w**2 + half_h**2) / (2 * half_h)
    off = rad - half_h
    ex2 = ex * ex
    d = np.maximum(np.sqrt(ex2 + (ey - off) ** 2), np.sqrt(ex2 + (ey + off) ** 2)) - rad
    _blend(img, (0.05, 0.04, 0.04), _cov(d - 0.035, cv.hi.px))
    # Iris: darker rim and under the upper lid, lighter below the pupil.
    iris = np.asarray(EYE_COLOURS[a.eyes], np.float32).reshape(3, 1, 1)
    shade = _clip(1.15 - 0.9 * np.sqrt(x * x + y * y) * (1 / half_w) + 0.25 * ey * (1 / half_h), 0.35, 1.2)
    inside = _cov(d, cv.hi.px)
    _blend(img, iris * shade, inside)
    pw = 0.025 + 0.08 * a.pupil
    dp = (np.sqrt((x * (1 / pw)) ** 2 + (y * (1 / 0.13)) ** 2) - 1.0) * pw
    _blend(img, (0.02, 0.02, 0.02), _cov(dp, cv.hi.px) * inside)
    hx, hy = x - 0.07 * math.cos(a.light_angle), y - 0.06 * math.sin(a.light_angle)
    _blend(img, (1.0, 1.0, 1.0), 0.9 * _cov(np.sqrt(hx * hx + hy * hy) - 0.035, cv.hi.px))


def _nose_and_mouth(cv: _Canvas) -> None:
    img, x, y = cv.view(cv.hi.window(cv.fx - 0.22, cv.fx + 0.22, 0.2, 0.58))
    x = np.abs(x - cv.fx)
    # Rounded inverted triangle, lit from above.
    nose = _smax(0.25 - y, _halfplane(x, y, (0.11, 0.25), (0.0, 0.36)), 0.05)
    colour = np.asarray(_nose_colour(cv.a), np.float32).reshape(3, 1, 1)
    _blend(img, colour * (1.1 - 2.2 * _clip(y - 0.25, 0.0, 0.12)), _cov(nose, cv.hi.px))
    # Philtrum plus two arcs, drawn as thin lines.
    stem = np.maximum(x, np.abs(y - 0.41) - 0.05)
    arc = np.maximum(np.abs(np.sqrt((x - 0.08) ** 2 + (y - 0.45) ** 2) - 0.08), 0.45 - y)
    _blend(img, (0.1, 0.07, 0.07), 0.85 * _cov(np.minimum(stem, arc) - 0.018, cv.hi.px))


def _nose_colour(a: CatAttributes) -> tuple[float, float, float]:
    if a.fur in ("black", "brown", "grey"):
        return (0.33, 0.24, 0.25)
    return (0.92, 0.55, 0.58)


_WHISKERS = (((0.20, 0.40), (1.32, 0.24)), ((0.20, 0.45), (1.36, 0.42)), ((0.20, 0.50), (1.30, 0.60)))


def _whiskers(cv: _Canvas) -> None:
    img, x, y = cv.view(cv.hi.window(cv.fx - 1.45, cv.fx + 1.45, 0.15, 0.85))
    x = np.abs(x - cv.fx)
    y = y - 0.12 * (x - 0.2) ** 2  # droop
    d = None
    for (ax, ay), (bx, by) in _WHISKERS:
        # Nearly horizontal: vertical distance to the line, cut off past the ends, is close enough.
        slope = (by - ay) / (bx - ax)
        dist = np.maximum(np.abs(y - ay - slope * (x - ax)) * (1 / math.hypot(1, slope)), x - bx)
        d = dist if d is None else np.minimum(d, dist)
    d = np.maximum(d, 0.2 - x)
    colour = (0.9, 0.9, 0.88) if cv.a.fur in ("black", "brown") else (0.98, 0.98, 0.96)
    _blend(img, colour, 0.75 * _cov(d - 0.012, cv.hi.px))


def _box_filter(img: np.ndarray, factor: int) -> np.ndarray:
    """[3, R, R] -> [3, R / factor, R / factor] block means, scaled to [0, 255] and rounded up by 0.5."""
    c, n, _ = img.shape
    # Explicit adds: numpy's reductions over a short middle axis are several times slower.
    blocks = img.reshape(c, n // factor, factor, n)
    rows = sum(blocks[:, :, i] for i in range(1, factor)) + blocks[:, :, 0]
    out = sum(rows[..., j::factor] for j in range(1, factor)) + rows[..., 0::factor]
    return _clip(out * (255.0 / factor**2) + 0.5, 0.0, 255.0)


def _render_one(a: CatAttributes, resolution: int, lattices: Lattices | None = None) -> np.ndarray:
    cv = _canvas(a, resolution, lattices)
    cv.img[:] = _upsample(_background(cv))
    _fur(cv, _upsample(_coat(cv)), _upsample(cv.noise("grain")))
    _eyes(cv)
    _nose_and_mouth(cv)
    _whiskers(cv)
    return _box_filter(cv.img, _SUPERSAMPLE)


# ---------------------------------------------------------------------------------------------------
# Public API


def render_batch(
    attrs: Sequence[CatAttributes], *, resolution: int = 64, lattices: Sequence[Lattices] | None = None
) -> np.ndarray:
    """Render cats into one array.

    Args:
        attrs: one `CatAttributes` per image.
        resolution: output side in pixels (at least 8).
        lattices: one `Lattices` per image (shapes as `lattice_shapes`) to use instead of the ones
            each cat's ``texture_seed`` draws.

    Returns:
        uint8 array [N, resolution, resolution, 3] in [0, 255].
    """
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8, got {resolution}")
    if lattices is not None and len(lattices) != len(attrs):
        raise ValueError(f"{len(attrs)} cats but {len(lattices)} lattice sets")
    out = np.empty((len(attrs), resolution, resolution, 3), np.uint8)
    for i, a in enumerate(attrs):
        # Channel by channel: float -> uint8 truncates (the +0.5 makes it round), and writing
        # whole planes is several times faster than a transposed copy.
        img = _render_one(a, resolution, None if lattices is None else lattices[i])
        for k in range(3):
            out[i, :, :, k] = img[k]
    return out


def render(attrs: CatAttributes, *, resolution: int = 64) -> np.ndarray:
    """Render one cat face: uint8 [resolution, resolution, 3] in [0, 255]."""
    return render_batch([attrs], resolution=resolution)[0]


def make_dataset(n: int, *, seed: int, resolution: int = 64):
    """Images with seeds seed, seed + 1, ..., seed + n - 1 (see `split_seed`).

    Args:
        n: number of images.
        seed: seed of the first image.
        resolution: output side in pixels.

    Returns:
        (uint8 images [n, H, W, 3], list of CatAttributes, list of caption strings)
    """
    attrs = [attributes_for_seed(seed + i) for i in range(n)]
    return render_batch(attrs, resolution=resolution), attrs, [caption(a) for a in attrs]


class ProceduralCats(Dataset):
    """Map-style dataset: item i is the cat with seed `seed + i`, rendered on demand (~2 ms at 64 px).

    Items are (image float32 tensor [3, H, W] in [-1, 1], caption str). Use `split_seed(split, 0)` as
    `seed` to draw from a split; to keep a fixed training set in memory, use `make_dataset`.
    """

    def __init__(self, n: int, seed: int = 0, resolution: int = 64):
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        self.n, self.seed, self.resolution = n, seed, resolution

    def __len__(self) -> int:
        return self.n

    def attributes(self, index: int) -> CatAttributes:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return attributes_for_seed(self.seed + index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        attrs = self.attributes(index)
        img = torch.from_numpy(render(attrs, resolution=self.resolution))
        return img.permute(2, 0, 1).float().div(127.5).sub(1.0), caption(attrs)


# ---------------------------------------------------------------------------------------------------
# CLI: contact sheet


def contact_sheet(images: np.ndarray, *, cols: int = 8, pad: int = 2) -> np.ndarray:
    """Tile uint8 images [N, H, W, 3] into one sheet, row-major, on a white ground."""
    n, h, w, _ = images.shape
    rows = -(-n // cols)
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        top, left = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        sheet[top : top + h, left : left + w] = img
    return sheet


def main(argv: Sequence[str] | None = None) -> int:
    from PIL import Image

    p = argparse.ArgumentParser(description="Write a contact sheet of procedural cats.")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--zoom", type=int, default=1, help="nearest-neighbour upscale of the sheet")
    p.add_argument("--out", type=Path, default=Path("grid.png"))
    p.add_argument("--bench", type=int, default=0, help="also time rendering this many images")
    args = p.parse_args(argv)
    images, _, captions = make_dataset(args.n, seed=args.seed, resolution=args.resolution)
    sheet = contact_sheet(images, cols=args.cols)
    if args.zoom > 1:
        sheet = sheet.repeat(args.zoom, axis=0).repeat(args.zoom, axis=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.out)
    for i, text in enumerate(captions):
        print(f"{args.seed + i:>8}  {text}")
    if args.bench:
        # CPU time as well as wall time: on a shared machine the former is the per-core rate.
        wall, cpu = time.perf_counter(), time.process_time()
        make_dataset(args.bench, seed=args.seed, resolution=args.resolution)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"rendered {args.bench} images at {args.resolution}px: "
            f"{args.bench / wall:.0f} images/s wall, {args.bench / cpu:.0f} images/s per CPU second",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
