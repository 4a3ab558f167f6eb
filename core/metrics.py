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

    python -m core.metrics realism --write-cards   # KID/FID table into the generators' model cards
    python -m core.metrics clip --write-card       # zero-shot + perceptual tables into the CLIP card
                                                   # (same as python -m core.training.clip eval ...)
    python -m core.metrics inversion --write-card  # PSNR of z / w / w+ inversion (core.inversion_quality)
    python -m core.metrics scribble --write-card   # scribble-to-image on tests/data/scribbles
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

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


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.device)
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


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
    "blur_small": lambda x, g: _gaussian_blur(x, 0.6),
    "blur_strong": lambda x, g: _gaussian_blur(x, 1.6),
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


def _clip_facts(clip_path: Path) -> dict:
    from core.training.common import sha256_file

    return {"file": clip_path.name, "sha256": sha256_file(clip_path)}


def cmd_realism(a: argparse.Namespace) -> int:
    from core.clip import bundled_clip_paths, load_clip
    from core.models.io import load_generator
    from core.paths import bundled_model

    clip = load_clip(device=a.device)
    t0 = time.perf_counter()
    eval_feats = clip_features(clip, procedural_batches(a.n, split="eval"))
    train_feats = clip_features(clip, procedural_batches(a.n, split="train"))
    rows = {"real eval vs real train": realism(train_feats, eval_feats, seed=a.seed)}
    for name in a.models:
        G = load_generator(bundled_model(name), device=a.device)
        rows[name] = realism(
            clip_features(clip, generator_batches(G, a.n, seed=a.seed)), eval_feats, seed=a.seed
        )
    print(f"realism on {clip.name} image embeddings, {a.n} vs {a.n} held-out procedural images")
    print(f"{'':32s} {'KID':>10s} {'KID std':>10s} {'FID':>10s}")
    for name, r in rows.items():
        print(f"{name:32s} {r['kid']:10.5f} {r['kid_std']:10.5f} {r['fid']:10.4f}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    if a.write_cards:
        base = {
            "metric": "KID (cubic kernel, 100 subsets of 1000) and FID on tiny-CLIP image embeddings",
            "features": _clip_facts(bundled_clip_paths()[1]),
            "n": a.n,
            "reference": "procedural eval split, images 0..n-1",
            "real_vs_real": rows["real eval vs real train"],
            "command": f"python -m core.metrics realism --n {a.n} --write-cards",
        }
        for name in a.models:
            card = bundled_model(name).with_suffix(".json")
            write_quality(card, "realism", {**base, "model": rows[name], "sample_seed": a.seed})
        write_quality(bundled_clip_paths()[1].with_suffix(".json"), "realism", {**base, "generators": rows})
    return 0


def cmd_clip(a: argparse.Namespace) -> int:
    from core.clip import build_clip, bundled_clip_paths, load_clip
    from core.losses import ClipFeatureLoss

    weights = Path(a.weights) if a.weights else bundled_clip_paths()[1]
    clip = load_clip(weights=weights, device=a.device)
    t0 = time.perf_counter()
    zs = zero_shot(clip, n=a.n)
    print(f"zero-shot attribute accuracy of {weights.name} on {a.n} held-out images")
    print(f"{'attribute':12s} {'accuracy':>9s} {'chance':>8s} {'majority':>9s}")
    for attr, r in zs.items():
        print(f"{attr:12s} {r['accuracy']:9.3f} {r['chance']:8.3f} {r['majority']:9.3f}")
    ref, variants = distortion_set(a.n_pairs)
    untrained = build_clip(clip.config(), seed=0)
    distances = {
        "bundled": perceptual_distance(ClipFeatureLoss(clip)),
        "untrained_same_arch": perceptual_distance(ClipFeatureLoss(untrained)),
        "pixel_mse": pixel_mse,
    }
    rank = distortion_ranking(distances, ref, variants)
    print(f"\ndistortion ranking agreement on {a.n_pairs} held-out images (fraction with d(a) < d(b))")
    print(f"{'expected order':36s} " + " ".join(f"{k:>20s}" for k in distances))
    for pair, r in [*rank["pairs"].items(), ("overall", rank["overall"])]:
        print(f"{pair:36s} " + " ".join(f"{r[k]:20.3f}" for k in distances))
    print(f"({time.perf_counter() - t0:.0f} s)")
    if a.write_card:
        card = weights.with_suffix(".json")
        cmd = f"python -m core.metrics clip --n {a.n} --n-pairs {a.n_pairs} --write-card"
        write_quality(card, "zero_shot", {"split": "eval", "attributes": zs, "command": cmd})
        rank = {**rank, "distortions": _distortion_doc(), "command": cmd}
        write_quality(card, "perceptual_ranking", rank)
    return 0


def _distortion_doc() -> dict[str, str]:
    return {
        "blur_small / blur_strong": "Gaussian blur, sigma 0.6 / 1.6 px",
        "noise_small / noise_strong": "Gaussian noise, sigma 0.04 / 0.16 in [-1, 1] units",
        "hue_small / hue_strong": "hue rotation about the grey axis, 8 / 45 degrees",
        "warp_small / warp_strong": "smooth random displacement, RMS 0.5 / 2.5 px",
        "shift_1px": "the whole image moved one pixel right and down (edges replicated)",
        "same_caption_cat": "another cat with every captioned attribute of the reference",
        "other_cat": "another held-out cat",
    }


def cmd_sheet(a: argparse.Namespace) -> int:
    """64 random samples of a bundled generator beside 64 held-out procedural cats, one PNG."""
    from PIL import Image

    from core.data.procedural import contact_sheet
    from core.jobs.events import to_uint8
    from core.models.io import load_generator
    from core.paths import bundled_model

    G = load_generator(bundled_model(a.model), device=a.device)
    fake = np.concatenate([to_uint8(b) for b in generator_batches(G, a.n, seed=a.seed, batch=64)])
    real = next(iter(procedural_batches(a.n, split="eval", start=2000, batch=a.n)))
    real = to_uint8(real)
    left, right = contact_sheet(fake), contact_sheet(real)
    gap = np.full((left.shape[0], 12, 3), 255, np.uint8)
    sheet = np.concatenate([left, gap, right], axis=1).repeat(a.zoom, 0).repeat(a.zoom, 1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(a.out)
    print(f"wrote {a.out}: left {a.n} samples of {a.model} (z seed {a.seed}), right {a.n} held-out cats")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m core.metrics", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="cpu")
    common.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "realism", parents=[common], help="KID/FID of the bundled generators and a real-vs-real baseline"
    )
    r.add_argument("--n", type=int, default=5000, help="images per set")
    r.add_argument("--seed", type=int, default=0, help="seeds the generator samples and KID subsets")
    r.add_argument(
        "--models", nargs="+", default=["stylegan2-cats64.safetensors", "dcgan-cats64.safetensors"]
    )
    r.add_argument("--write-cards", action="store_true", help="store the table in the model cards")
    r.set_defaults(func=cmd_realism)
    c = sub.add_parser(
        "clip", parents=[common], help="zero-shot accuracy and perceptual distortion ranking of a tiny CLIP"
    )
    c.add_argument("--weights", help="tiny CLIP .safetensors (default: the bundled one)")
    c.add_argument("--n", type=int, default=1000, help="held-out images for zero-shot accuracy")
    c.add_argument("--n-pairs", type=int, default=200, help="held-out images for the distortion ranking")
    c.add_argument("--write-card", action="store_true", help="store the tables in the CLIP's model card")
    c.set_defaults(func=cmd_clip)
    sh = sub.add_parser("sheet", parents=[common], help="generator samples beside held-out cats (PNG)")
    sh.add_argument("--model", default="stylegan2-cats64.safetensors")
    sh.add_argument("--n", type=int, default=64)
    sh.add_argument("--seed", type=int, default=0, help="seeds the z of the samples")
    sh.add_argument("--zoom", type=int, default=2, help="nearest-neighbour upscale")
    sh.add_argument("--out", type=Path, default=Path("docs/images/stylegan2-samples.png"))
    sh.set_defaults(func=cmd_sheet)
    from core.inversion_quality import add_parsers as add_inversion_parsers

    add_inversion_parsers(sub, common)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(logging.WARNING)  # open_clip logs model building at INFO on the root
    log.setLevel(logging.INFO)
    logging.getLogger("core.inversion_quality").setLevel(logging.INFO)  # its tables log row by row
    if a.threads:
        torch.set_num_threads(a.threads)
    return a.func(a)


if __name__ == "__main__":
    raise SystemExit(main())
