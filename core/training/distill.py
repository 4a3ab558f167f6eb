"""Paired training data for distilling the procedural renderer into a generator: z -> cat image.

A plain GAN on 2 CPU cores sees about 10 images a second, and the first bundled StyleGAN2 was still a
blur after 27 kimg. The renderer (``core.data.procedural``) is a known function of uniform draws and
standard-normal noise lattices, so a latent z can *be* those draws: the generator then learns a
regression ``G(z) ~ render(z)`` with an L1 + perceptual loss, where every image carries a target,
and the adversarial phase after it only has to sharpen what regression leaves soft. (The issue
asked for this comparison; the model card has the FID-per-CPU-hour table.)

Which z coordinates drive what (``z`` is first normalised to mean square 1, as the mapping network
does, so the generator can see every coordinate it is asked to reproduce):

======== ===================================================================================
z[0:6]   categories (fur, pattern, eyes, ears, background, background style) via Phi(z)
z[6:16]  continuous jitter (position, yaw, scale, light, pupil, roughness, brightness, tilt)
z[16:..] the coarse octave of the "patch", "patch2" and "warp" noise lattices (86 values):
         calico patches, spots, stripe warp
rest     nothing: the fine octaves and the fur grain come from a per-image seed, i.e. they are
         noise the generator cannot predict from z (its noise inputs model them in the GAN phase)
======== ===================================================================================

Coordinates of a normalised 128-d Gaussian are close to N(0, 1), so the rendered images follow the
training distribution (categories within 0.1 % of uniform; checked in the tests).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from core.data import procedural as p

log = logging.getLogger("latent_canvas.training")

# (field, octave) lattices that z drives, in this order after the 16 attribute draws.
Z_LATTICES = (("patch", 0), ("patch2", 0), ("warp", 0))
N_ATTRIBUTE_DRAWS = p.N_CATEGORY_DRAWS + p.N_JITTER_DRAWS
VERSION = 1  # bump when the z -> render map changes (it names the pair cache)


def z_coordinates_used() -> int:
    """How many leading z coordinates the renderer reads (the rest only feed the generator); a
    shorter z (at least the 16 attribute draws) drives that many and leaves the rest to the seed."""
    shapes = p.lattice_shapes()
    return N_ATTRIBUTE_DRAWS + sum(int(np.prod(shapes[f][o])) for f, o in Z_LATTICES)


def normalise(z: np.ndarray) -> np.ndarray:
    """z / rms(z) per row, as StyleGAN's mapping network normalises its input."""
    z = np.asarray(z, np.float64)
    return z / np.sqrt(np.square(z).mean(axis=1, keepdims=True) + 1e-8)


def scenes_from_latents(z: np.ndarray, noise_seeds: np.ndarray) -> tuple[list, list]:
    """The cats that latents ``z`` [N, D] stand for (D >= `z_coordinates_used`): their
    `CatAttributes` and noise lattices. ``noise_seeds`` [N] seed what z does not drive (fine octaves,
    fur grain; also each cat's ``texture_seed``)."""
    z = normalise(z)
    if z.shape[1] < N_ATTRIBUTE_DRAWS:
        raise ValueError(f"z needs at least {N_ATTRIBUTE_DRAWS} coordinates, got {z.shape[1]}")
    u = _normal_cdf(z[:, :N_ATTRIBUTE_DRAWS])
    shapes = p.lattice_shapes()
    attrs, lattices = [], []
    for i in range(z.shape[0]):
        cat, jitter = u[i, : p.N_CATEGORY_DRAWS], u[i, p.N_CATEGORY_DRAWS :]
        attrs.append(p.attributes_from_uniforms(cat, jitter, texture_seed=int(noise_seeds[i])))
        rng = np.random.default_rng(int(noise_seeds[i]))
        lat = {f: [rng.standard_normal(s, dtype=np.float32) for s in octs] for f, octs in shapes.items()}
        k = N_ATTRIBUTE_DRAWS
        for f, o in Z_LATTICES:  # as many lattice values as z has left; the seed draws the rest
            flat = lat[f][o].reshape(-1)  # a view: writes land in the lattice
            m = min(flat.size, z.shape[1] - k)
            flat[:m] = z[i, k : k + m]
            k += m
        lattices.append(lat)
    return attrs, lattices


def render_from_latents(z: np.ndarray, noise_seeds: np.ndarray, *, resolution: int = 64) -> np.ndarray:
    """The images of `scenes_from_latents`: uint8 [N, R, R, 3]."""
    attrs, lattices = scenes_from_latents(z, noise_seeds)
    return p.render_batch(attrs, resolution=resolution, lattices=lattices)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    # math.erf, not torch: this runs in forked render workers, where a torch op can hang on the
    # parent's OpenMP thread pool (seen as a stuck training start).
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2.0)))


def _render_chunk(args: tuple[np.ndarray, np.ndarray, int]) -> np.ndarray:
    z, seeds, resolution = args
    return render_from_latents(z, seeds, resolution=resolution)


def make_pairs(n: int, *, z_dim: int, seed: int, resolution: int, workers: int = 2):
    """``n`` (z, image) pairs: z float32 [n, z_dim] ~ N(0, I) from ``seed``, images uint8 [n, R, R, 3]."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, z_dim), dtype=np.float32)
    noise_seeds = rng.integers(2**31, size=n)
    chunks = [(z[i : i + 2000], noise_seeds[i : i + 2000], resolution) for i in range(0, n, 2000)]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as ex:
            images = np.concatenate(list(ex.map(_render_chunk, chunks)))
    else:
        images = np.concatenate([_render_chunk(c) for c in chunks])
    return z, images


def pair_bank(n: int, *, z_dim: int, seed: int, resolution: int, cache_dir: str | Path | None):
    """`make_pairs`, rendered once and cached as .npz under ``cache_dir`` (keyed by the renderer's
    source and `VERSION`)."""
    src = Path(p.__file__).read_bytes()
    key = f"pairs-v{VERSION}-n{n}-z{z_dim}-seed{seed}-res{resolution}-{hashlib.sha256(src).hexdigest()[:12]}"
    cached = Path(cache_dir) / f"{key}.npz" if cache_dir else None
    if cached is not None and cached.is_file():
        log.info("distillation pairs from cache %s", cached)
        with np.load(cached, allow_pickle=False) as f:
            return f["z"], f["images"]
    t0 = time.perf_counter()
    z, images = make_pairs(n, z_dim=z_dim, seed=seed, resolution=resolution)
    log.info("rendered %d distillation pairs in %.0f s", n, time.perf_counter() - t0)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(cached.name + ".tmp.npz")
        np.savez(tmp, z=z, images=images)
        tmp.replace(cached)
    return z, images
