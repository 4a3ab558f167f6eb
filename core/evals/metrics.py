"""Quality measures of the bundled models, on features of the bundled tiny CLIP.

- Realism of a generator: KID (Binkowski et al. 2018) and FID (Heusel et al. 2017) between the tiny
  CLIP image embeddings of its samples and of held-out procedural images, beside a real-vs-real
  baseline (eval split vs train split).
- The tiny CLIP itself: zero-shot attribute classification of held-out images (fur colour, pattern,
  eye colour, background colour) against chance.
- The "bundled" perceptual loss: whether its distances order distortions of held-out images (blur,
  noise, hue shift, warp, another cat) as a person would.

Feature space: the CLIP's unit image embeddings scaled to norm sqrt(D), so KID's cubic kernel
``(x.y / D + 1) ** 3`` reads the embeddings' cosine. Numbers on these features compare models with
each other and with the baseline here; they are not comparable with Inception-feature FID/KID.

The commands that run them and write the cards: ``python -m core.evals`` (:mod:`core.evals.cli`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from core.imaging import gaussian_blur

if TYPE_CHECKING:
    from core.clip import ClipModel
    from core.gan.base import Generator

log = logging.getLogger(__name__)

ImageBatches = Iterable[torch.Tensor]  # batches [B, 3, H, W] in [-1, 1]


# --- features -----------------------------------------------------------------------------------


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def clip_features(clip: ClipModel, batches: ImageBatches) -> torch.Tensor:
    """Image embeddings [N, D] of all batches, scaled to norm sqrt(D) (see the module docstring)."""
    device = clip.mean.device
    feats = [clip.encode_image(x.to(device)).float().cpu() for x in batches]
    return torch.cat(feats) * math.sqrt(clip.embed_dim)


def procedural_batches(n: int, *, split: str, start: int = 0, batch: int = 250, resolution: int = 64):
    """Procedural images ``start`` .. ``start + n - 1`` of ``split``, rendered batch by batch."""
    from core.data import procedural

    for lo in range(start, start + n, batch):
        size = min(batch, start + n - lo)
        images, _, _ = procedural.make_dataset(
            size, seed=procedural.split_seed(split, lo), resolution=resolution
        )
        yield to_tensor(images)


@torch.no_grad()
def generator_batches(G: Generator, n: int, *, seed: int = 0, batch: int = 250) -> Iterator[torch.Tensor]:
    """``n`` samples of ``G`` from z ~ N(0, I) (no truncation), drawn from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    for lo in range(0, n, batch):
        z = torch.randn(min(batch, n - lo), G.z_dim, generator=gen)
        yield G(z.to(G.device_of())).clamp(-1, 1).cpu()


# --- KID and FID ------------------------------------------------------------------------------


def kid(
    a: torch.Tensor, b: torch.Tensor, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 with kernel (x.y/d + 1)^3, averaged over subsets.

    Args:
        a, b: features [Na, d] and [Nb, d].
        subsets: random subset pairs (drawn without replacement within a subset).
        subset_size: m, capped at min(Na, Nb).
        seed: seeds the subset draws.

    Returns:
        (mean, standard deviation over subsets). About 0 (and possibly slightly negative: the estimate
        is unbiased) for two samples of one distribution.
    """
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    a, b, d = a.double(), b.double(), a.shape[1]
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(a.shape[0], generator=gen)[:m]]
        y = b[torch.randperm(b.shape[0], generator=gen)[:m]]
        kxx, kyy, kxy = ((p @ q.T / d + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        values.append(float(within - 2 * kxy.mean()))
    v = torch.tensor(values)
    return float(v.mean()), float(v.std()) if subsets > 1 else 0.0


def fid(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to features a [Na, d] and b [Nb, d]."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # tr sqrt(Ca Cb) = sum sqrt(eig(sqrt(Ca) Cb sqrt(Ca))), a symmetric PSD product: stable with eigh.
    ea, va = torch.linalg.eigh(cov_a)
    root_a = va @ torch.diag(ea.clamp_min(0).sqrt()) @ va.T
    tr_sqrt = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * tr_sqrt)


# --- sliced Wasserstein distance on image patches (no feature network) ----------------------------


def _laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass images, finest first, then the coarsest low-pass (ProGAN's 5-tap binomial filter)."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype)
    k = (k[:, None] * k[None, :] / 256).expand(x.shape[1], 1, 5, 5)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(
            torch.nn.functional.pad(t, [2] * 4, mode="reflect"), k, groups=t.shape[1]
        )

    out = []
    for _ in range(levels - 1):
        down = blur(x)[..., ::2, ::2]
        up = torch.nn.functional.interpolate(down, scale_factor=2, mode="nearest")
        out.append(x - blur(up))
        x = down
    return [*out, x]


def _patches(x: torch.Tensor, n: int, gen: torch.Generator, size: int = 7) -> torch.Tensor:
    """``n`` random ``size`` x ``size`` patches per image, flattened: [N * n, 3 * size^2]."""
    N, C, H, W = x.shape
    ys = torch.randint(0, H - size + 1, (N, n), generator=gen)
    xs = torch.randint(0, W - size + 1, (N, n), generator=gen)
    d = torch.arange(size)
    rows = (ys[..., None] + d)[..., :, None].expand(N, n, size, size)
    cols = (xs[..., None] + d)[..., None, :].expand(N, n, size, size)
    idx = torch.arange(N)[:, None, None, None].expand(N, n, size, size)
    p = x.permute(0, 2, 3, 1)[idx, rows, cols]  # [N, n, size, size, C]
    return p.reshape(N * n, -1)


@torch.no_grad()
def swd(a: torch.Tensor, b: torch.Tensor, *, levels: int = 4, patches: int = 16, projections: int = 128,
        repeats: int = 4, seed: int = 0) -> list[float]:  # fmt: skip
    """Sliced Wasserstein distance between the 7x7 patch distributions of two image sets at each
    Laplacian-pyramid level (Karras et al. 2018, ProGAN's SWD), x 1e3; finest level first.

    A realism measure with no learned network: pixel statistics alone, so a generator trained against
    a discriminator on one network's features cannot game it the way it might that network's FID.

    Args:
        a, b: images [N, 3, H, W] in [-1, 1], the same size (N may differ).
        levels: at most this many (fewer for small images: the coarsest stays >= 8 px).
    """
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"swd compares images of one size, got {list(a.shape[1:])} and {list(b.shape[1:])}")
    gen = torch.Generator().manual_seed(seed)
    levels = max(1, min(levels, int(math.log2(max(min(a.shape[-2:]) // 8, 1))) + 1))  # coarsest >= 8 px
    pa, pb = _laplacian_pyramid(a.float(), levels), _laplacian_pyramid(b.float(), levels)
    out = []
    for la, lb in zip(pa, pb, strict=True):
        da, db = _patches(la, patches, gen), _patches(lb, patches, gen)
        m = min(len(da), len(db))
        da, db = (
            da[torch.randperm(len(da), generator=gen)[:m]],
            db[torch.randperm(len(db), generator=gen)[:m]],
        )
        mean, std = torch.cat([da, db]).mean(0), torch.cat([da, db]).std(0).clamp_min(1e-8)
        da, db = (da - mean) / std, (db - mean) / std
        dists = []
        for _ in range(repeats):
            dirs = torch.randn(da.shape[1], projections, generator=gen, dtype=da.dtype)
            dirs = dirs / dirs.norm(dim=0, keepdim=True)
            # sorted along the contiguous axis: sorting [m, P] along dim 0 was 20x slower
            pa_, pb_ = (dirs.T @ da.T).sort(1).values, (dirs.T @ db.T).sort(1).values
            dists.append(float((pa_ - pb_).abs().mean()))
        out.append(round(1e3 * sum(dists) / len(dists), 2))
    return out


def knn_precision(real: torch.Tensor, fake: torch.Tensor, *, k: int = 3) -> float:
    """Improved precision (Kynkaenniemi et al. 2019): the fraction of ``fake`` features that fall
    inside the real manifold, the union of balls around each real feature reaching its k-th nearest
    real neighbour. It scores each image's realism on its own, unlike KID/FID, which also punish a set
    for not covering the real distribution (a few scribbles' results never do)."""
    real, fake = real.double(), fake.double()
    d_rr = torch.cdist(real, real)
    radii = d_rr.kthvalue(k + 1, dim=1).values  # the 0th neighbour is the point itself
    inside = (torch.cdist(fake, real) <= radii[None]).any(1)
    return float(inside.double().mean())


def realism(a: torch.Tensor, b: torch.Tensor, *, seed: int = 0) -> dict[str, float]:
    """KID (mean, std) and FID between two feature sets, rounded for a model card."""
    k, k_std = kid(a, b, seed=seed)
    return {"kid": round(k, 6), "kid_std": round(k_std, 6), "fid": round(fid(a, b), 4)}


def generator_realism(
    G: Generator, clip: ClipModel, *, n: int = 5000, seed: int = 0, reference: torch.Tensor | None = None
) -> dict[str, float]:
    """KID/FID of ``n`` samples of ``G`` against ``n`` held-out procedural images (eval split).

    Args:
        reference: features of the procedural images, if already computed (``clip_features`` of
            ``procedural_batches(n, split="eval")``).
    """
    if reference is None:
        reference = clip_features(clip, procedural_batches(n, split="eval"))
    return realism(clip_features(clip, generator_batches(G, n, seed=seed)), reference, seed=seed)


# --- zero-shot attribute classification -------------------------------------------------------


def _attribute_values() -> dict[str, tuple[str, ...]]:
    from core.data import procedural as p

    return {
        "fur": tuple(p.FUR_COLOURS),
        "pattern": p.PATTERNS,
        "eyes": tuple(p.EYE_COLOURS),
        "background": tuple(p.BACKGROUND_COLOURS),
    }


def attribute_prompts(attribute: str, value: str) -> list[str]:
    """Captions (the training wording) of cats with ``attribute = value``, over all values of the
    other captioned attributes and every template: prompt ensembling that marginalises them out."""
    from core.data import procedural as p

    values = _attribute_values()
    base = p.attributes_for_seed(0)
    others = [k for k in values if k != attribute]
    prompts = []
    for combo in itertools.product(*(values[k] for k in others)):
        fields = dict(zip(others, combo, strict=True), **{attribute: value})
        if fields["fur"] == "white" and fields["pattern"] == "bicolour":
            continue  # never drawn (see procedural.sample_attributes)
        for variant in range(12):  # texture_seed picks the template and the cat word
            prompts.append(
                p.caption(dataclasses.replace(base, texture_seed=variant, ears="pointy", **fields))
            )
    return sorted(set(prompts))


@torch.no_grad()
def class_embeddings(clip: ClipModel, attribute: str, *, max_prompts: int = 96) -> torch.Tensor:
    """[K, D] unit text embeddings, one per value of ``attribute`` (mean of its prompts' embeddings)."""
    rows = []
    for value in _attribute_values()[attribute]:
        prompts = attribute_prompts(attribute, value)
        prompts = random.Random(0).sample(prompts, min(max_prompts, len(prompts)))
        rows.append(clip.encode_text(prompts).mean(0))
    return F.normalize(torch.stack(rows), dim=-1)


@torch.no_grad()
def zero_shot(
    clip: ClipModel,
    *,
    n: int = 1000,
    start: int = 0,
    batch: int = 250,
    attributes: Sequence[str] | None = None,
    max_prompts: int = 96,
) -> dict[str, dict]:
    """Zero-shot accuracy per captioned attribute on eval-split images ``start`` .. ``start + n - 1``.

    Args:
        attributes: a subset of "fur", "pattern", "eyes", "background" (default all).
        max_prompts: prompts averaged per class (a seeded sample of :func:`attribute_prompts`).

    Returns ``{attribute: {"accuracy", "chance" (1 / classes), "majority" (most frequent class's share),
    "classes", "n"}}``.
    """
    from core.data import procedural as p

    attrs = [p.attributes_for_seed(p.split_seed("eval", start + i)) for i in range(n)]
    feats = clip_features(clip, procedural_batches(n, split="eval", start=start, batch=batch))
    feats = F.normalize(feats, dim=-1).to(clip.mean.device)
    report = {}
    for attribute, values in _attribute_values().items():
        if attributes is not None and attribute not in attributes:
            continue
        pred = (feats @ class_embeddings(clip, attribute, max_prompts=max_prompts).T).argmax(1).cpu()
        truth = torch.tensor([values.index(getattr(a, attribute)) for a in attrs])
        report[attribute] = {
            "accuracy": round(float((pred == truth).float().mean()), 4),
            "chance": round(1 / len(values), 4),
            "majority": round(float(torch.bincount(truth).max()) / n, 4),
            "classes": len(values),
            "n": n,
        }
    return report


# --- distortion ranking of a perceptual distance ----------------------------------------------


def _hue_rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    # Rotation about the grey axis of RGB: hue turns, luminance and saturation stay about the same.
    a = math.radians(degrees)
    u = torch.ones(3, dtype=x.dtype) / math.sqrt(3)
    cross = torch.tensor([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]], dtype=x.dtype)
    rot = (
        math.cos(a) * torch.eye(3, dtype=x.dtype)
        + math.sin(a) * cross
        + (1 - math.cos(a)) * torch.outer(u, u)
    )
    y = torch.einsum("ij,njhw->nihw", rot.to(x.device), (x + 1) / 2)
    return (y * 2 - 1).clamp(-1, 1)


def _warp(x: torch.Tensor, pixels: float, gen: torch.Generator) -> torch.Tensor:
    # A smooth random displacement field (4x4 lattice, bicubic), RMS ``pixels`` pixels.
    n, _, h, w = x.shape
    field = torch.randn(n, 2, 4, 4, generator=gen, dtype=x.dtype)
    field = F.interpolate(field, size=(h, w), mode="bicubic", align_corners=True)
    field = field / field.square().mean(dim=(1, 2, 3), keepdim=True).sqrt() * pixels
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    gx = (xs + field[:, 0] + 0.5) / w * 2 - 1
    gy = (ys + field[:, 1] + 0.5) / h * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).to(x.device)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# Severity pairs: (name, function of (images, generator)). In [-1, 1] units, noise 0.04 is 2% of the
# range per pixel (just visible), 0.16 is 8% (obvious grain).
DISTORTIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "blur_small": lambda x, g: gaussian_blur(x, 0.6, padding="reflect"),
    "blur_strong": lambda x, g: gaussian_blur(x, 1.6, padding="reflect"),
    "noise_small": lambda x, g: (x + 0.04 * torch.randn(x.shape, generator=g)).clamp(-1, 1),
    "noise_strong": lambda x, g: (x + 0.16 * torch.randn(x.shape, generator=g)).clamp(-1, 1),
    "hue_small": lambda x, g: _hue_rotate(x, 8.0),
    "hue_strong": lambda x, g: _hue_rotate(x, 45.0),
    "warp_small": lambda x, g: _warp(x, 0.5, g),
    "warp_strong": lambda x, g: _warp(x, 2.5, g),
    "shift_1px": lambda x, g: F.pad(x, (1, 0, 1, 0), mode="replicate")[..., :-1, :-1],
}
MILD = ("blur_small", "noise_small", "hue_small", "warp_small")
STRONG = ("blur_strong", "noise_strong", "hue_strong", "warp_strong")

# (closer, farther) as a person would judge them against the reference image. The last group is where
# pixel distances famously disagree with people (Zhang et al. 2018): a one-pixel shift or a sub-pixel
# warp is invisible, yet moves every edge pixel.
EXPECTED_ORDER: tuple[tuple[str, str], ...] = (
    *((m, s) for m, s in zip(MILD, STRONG, strict=True)),  # a stronger distortion is farther
    *((m, "same_caption_cat") for m in MILD),  # a mild distortion is closer than another cat
    ("same_caption_cat", "other_cat"),  # another cat with the same description is closer than any cat
    *((s, "other_cat") for s in STRONG),  # the reference, however distorted, is closer than any cat
    *((m, s) for m in ("shift_1px", "warp_small") for s in ("blur_strong", "noise_strong", "hue_strong")),
    ("shift_1px", "same_caption_cat"),
)


def distortion_set(n: int, *, start: int = 0, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Held-out references [n, 3, 64, 64] and their distorted versions (plus two other-cat variants).

    ``same_caption_cat`` keeps every captioned attribute of the reference (fur, pattern, eyes, ears,
    background and its style) and redraws pose, size, lighting and texture from another eval seed;
    ``other_cat`` is simply another held-out cat.
    """
    from core.data import procedural as p

    seeds = [p.split_seed("eval", start + i) for i in range(n)]
    attrs = [p.attributes_for_seed(s) for s in seeds]
    others = [p.attributes_for_seed(p.split_seed("eval", start + n + i)) for i in range(n)]
    kept = ("fur", "pattern", "eyes", "ears", "background", "background_style")
    same = [
        dataclasses.replace(o, **{k: getattr(a, k) for k in kept}) for a, o in zip(attrs, others, strict=True)
    ]
    ref = to_tensor(p.render_batch(attrs))
    gen = torch.Generator().manual_seed(seed)
    variants = {name: f(ref, gen) for name, f in DISTORTIONS.items()}
    variants["same_caption_cat"] = to_tensor(p.render_batch(same))
    variants["other_cat"] = to_tensor(p.render_batch(others[::-1]))  # reversed: never the "same" draw
    return ref, variants


Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (ref, other) -> [N]


def perceptual_distance(loss) -> Distance:
    """A :class:`core.losses.PerceptualLoss` as a plain distance (ref, other) -> [N]."""

    @torch.no_grad()
    def dist(ref: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return loss(other, loss.prepare(ref)).cpu()

    return dist


def pixel_mse(ref: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    return (ref - other).square().mean(dim=(1, 2, 3))


def distortion_ranking(
    distances: dict[str, Distance], ref: torch.Tensor, variants: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """How often each distance orders the :data:`EXPECTED_ORDER` pairs as a person would.

    Returns ``{"pairs": {"a<b": {name: agreement}}, "overall": {name: agreement},
    "mean_distance": {name: {variant: mean}}, "n": images}``; agreement is the fraction of images on
    which d(ref, a) < d(ref, b).
    """
    d = {name: {v: f(ref, x) for v, x in variants.items()} for name, f in distances.items()}
    pairs = {
        f"{a} < {b}": {name: round(float((dv[a] < dv[b]).float().mean()), 4) for name, dv in d.items()}
        for a, b in EXPECTED_ORDER
    }
    overall = {name: round(float(np.mean([p[name] for p in pairs.values()])), 4) for name in distances}
    means = {name: {v: round(float(x.mean()), 5) for v, x in dv.items()} for name, dv in d.items()}
    return {"pairs": pairs, "overall": overall, "mean_distance": means, "n": int(ref.shape[0])}


# --- commands ---------------------------------------------------------------------------------


def _load_card(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def write_quality(card: Path, key: str, value: dict) -> None:
    """Set ``quality[key]`` in a model card JSON, leaving the rest of it as it is."""
    from core.training.common import write_json

    doc = _load_card(card)
    if not doc:
        raise FileNotFoundError(f"no model card at {card}; export the model first")
    doc.setdefault("quality", {})[key] = value
    write_json(card, doc)
    log.info("wrote quality.%s into %s", key, card)
