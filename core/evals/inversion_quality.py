"""Inversion and scribble-to-image quality of the bundled generators (the seed write-up's tables).

- Inversion of held-out procedural cats (never seen in training): PSNR and perceptual distance after
  ``steps`` Adam steps, for every latent space of each generator (z, w, w+ for StyleGAN2; z for the
  DCGAN, the seed's "vanilla GAN") and both starts (mean, random). The seed's expected ordering:
  w+ best, z worst; mean init helps z.
- Scribble-to-image on the fixed scribbles in ``tests/data/scribbles/`` (RGBA, alpha = painted):
  the error on the painted pixels and the realism (KID on tiny-CLIP features) of the results.

    python -m core.evals inversion --write-card
    python -m core.evals scribble --write-card
    python -m core.evals make-scribbles            # rewrites tests/data/scribbles/ (deterministic)

Each configuration inverts its images as one batch (one target per latent), so a table costs
``configs x steps`` generator passes rather than ``images x configs x steps``.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from core.imageio import split_scribble

log = logging.getLogger(__name__)

SCRIBBLE_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "scribbles"
# (name, eval-split image index, strokes, brush radius in px): sparse outlines and dense fills.
SCRIBBLES = (
    ("sparse-0", 0, 6, 2),
    ("dense-0", 0, 40, 4),
    ("sparse-1", 1, 6, 2),
    ("dense-1", 1, 40, 4),
    ("sparse-2", 2, 8, 2),
    ("dense-2", 2, 40, 4),
    ("dense-3", 3, 30, 4),
    ("dense-4", 4, 30, 4),
)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 batches [N, H, W, 3] (peak 255)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def held_out_images(n: int, *, resolution: int = 64, start: int = 100) -> np.ndarray:
    """Eval-split cats ``start`` .. ``start + n - 1`` (the scribbles use 0..9; no overlap)."""
    from core.data import procedural

    return procedural.make_dataset(n, seed=procedural.split_seed("eval", start), resolution=resolution)[0]


def invert_batch(G, targets: np.ndarray, *, space: str, init: str, steps: int, perceptual, mask=None,
                 seed: int = 0, lr: float = 0.05):  # fmt: skip
    """Invert ``targets`` [N, H, W, 3] (one latent each) with the app's job and its default weights."""
    from core.jobs.invert import invert
    from core.jobs.params import InvertParams
    from core.jobs.runner import run_to_completion

    params = InvertParams(
        target=targets, mask=mask, space=space, init=init, steps=steps, lr=lr, seed=seed,
        num_samples=len(targets), preview_every=steps, perceptual_weight=0.01 if perceptual else 0.0,
    )  # fmt: skip
    return run_to_completion(invert(params, G, perceptual_loss=perceptual))


@torch.no_grad()
def perceptual_distances(loss, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from core.evals.metrics import to_tensor

    return loss(to_tensor(b), loss.prepare(to_tensor(a))).cpu().numpy()


def _summary(x: np.ndarray) -> dict[str, float]:
    return {"mean": round(float(x.mean()), 4), "std": round(float(x.std()), 4)}


def inversion_table(models: dict, *, n: int, steps: int, perceptual) -> list[dict]:
    """One row per (generator, space, init): PSNR and perceptual distance over ``n`` held-out cats."""
    targets = held_out_images(n)
    rows = []
    for name, G in models.items():
        for space in [s.value for s in G.latent_spaces]:
            for init in ("mean", "random"):
                t0 = time.perf_counter()
                r = invert_batch(G, targets, space=space, init=init, steps=steps, perceptual=perceptual)
                per_image = psnr(r.images, targets)
                row = {
                    "model": name, "space": space, "init": init,
                    "psnr": _summary(per_image), "psnr_per_image": [round(float(x), 3) for x in per_image],
                    "perceptual": _summary(perceptual_distances(perceptual, targets, r.images)),
                    "seconds": round(time.perf_counter() - t0, 1),
                }  # fmt: skip
                log.info("%s %s %s: PSNR %.2f dB", name, space, init, row["psnr"]["mean"])
                rows.append(row)
    return rows


# --- scribbles ---------------------------------------------------------------------------------


def make_scribble(image: np.ndarray, *, strokes: int, radius: int, seed: int) -> np.ndarray:
    """A person-like colour scribble of ``image``: ``strokes`` random-walk strokes, each in the flat
    colour of the image where it starts. Returns RGBA uint8 [H, W, 4], alpha 255 where painted."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    h, w, _ = image.shape
    canvas = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for _ in range(strokes):
        p = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h])
        colour = tuple(int(c) for c in image[int(p[1]), int(p[0])]) + (255,)
        heading = rng.uniform(0, 2 * math.pi)
        pts = [tuple(p)]
        for _ in range(int(rng.integers(3, 8))):
            heading += rng.normal(0, 0.6)
            p = np.clip(p + 3.0 * np.array([math.cos(heading), math.sin(heading)]), 0, [w - 1, h - 1])
            pts.append(tuple(p))
        draw.line(pts, fill=colour, width=2 * radius, joint="curve")
    return np.asarray(canvas)


def write_scribbles(folder: Path = SCRIBBLE_DIR) -> list[Path]:
    from core.imageio import save_png

    images = held_out_images(10, start=0)
    out = []
    for i, (name, idx, strokes, radius) in enumerate(SCRIBBLES):
        rgba = make_scribble(images[idx], strokes=strokes, radius=radius, seed=i)
        out.append(save_png(rgba, folder / f"{name}.png"))
    return out


def load_scribbles(folder: Path = SCRIBBLE_DIR) -> dict[str, np.ndarray]:
    from core.imageio import load_image

    files = sorted(folder.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no scribbles in {folder}; run python -m core.evals make-scribbles")
    return {f.stem: load_image(f, keep_alpha=True) for f in files}


def painted_error(result: np.ndarray, scribble: np.ndarray) -> float:
    """Mean absolute error on the painted pixels, in [0, 1] units."""
    painted = scribble[..., 3] > 0
    diff = np.abs(result.astype(np.float32) - scribble[..., :3].astype(np.float32)) / 255.0
    return float(diff[painted].mean())


def scribble_table(G, scribbles: dict[str, np.ndarray], *, samples: int, steps: int, perceptual,
                   space: str = "w+") -> dict:  # fmt: skip
    """Scribble-to-image with ``samples`` random starts per scribble: painted-pixel error per scribble,
    and the results' realism against held-out real cats (beside G's own samples)."""
    from core.clip import load_clip
    from core.evals.metrics import clip_features, generator_batches, procedural_batches, realism, to_tensor

    per, results = {}, []
    for name, rgba in scribbles.items():
        targets = np.repeat(rgba[None, ..., :3], samples, 0)
        masks = np.repeat(rgba[None, ..., 3].astype(np.float32) / 255.0, samples, 0)
        r = invert_batch(G, targets, mask=masks, space=space, init="random", steps=steps,
                         perceptual=perceptual, seed=len(results))  # fmt: skip
        errs = np.array([painted_error(img, rgba) for img in r.images])
        per[name] = {
            "painted_fraction": round(float((rgba[..., 3] > 0).mean()), 3),
            "painted_l1": _summary(errs),
        }
        results.append(r.images)
    clip = load_clip(device="cpu")
    real = clip_features(clip, procedural_batches(500, split="eval", start=1000))
    made = clip_features(clip, [to_tensor(np.concatenate(results))])
    plain = clip_features(clip, generator_batches(G, len(made), seed=0))
    return {
        "space": space, "steps": steps, "samples_per_scribble": samples, "init": "random",
        "scribbles": per,
        "painted_l1_mean": round(float(np.mean([v["painted_l1"]["mean"] for v in per.values()])), 4),
        "realism": {"results": realism(made, real), "generator_samples": realism(plain, real),
                    "n_results": len(made), "reference": "500 eval-split cats (1000..1499)"},
    }  # fmt: skip


# --- the scribble / inpainting sweep (which settings keep results realistic and varied) ----------

# Each row: a name and InvertParams overrides. "before" is what the app did until this table.
SWEEP_BASE = dict(l1_weight=10.0, perceptual_weight=0.01, steps=200, lr=0.05)
SWEEP_SETTINGS = (
    ("before: w+, mean init", dict(space="w+", init="mean")),
    ("w, multi-start 16", dict(space="w", init="random", starts=16)),
    ("w+, multi-start 16, spread 1", dict(space="w+", init="random", starts=16, spread_weight=1.0)),
    ("w+, multi-start 16, spread 1, psi 0.7", dict(space="w+", init="random", starts=16, spread_weight=1.0,
                                                  truncation=0.7)),
    ("w, multi-start 16, L1 1 + perc 1", dict(space="w", init="random", starts=16, l1_weight=1.0,
                                             perceptual_weight=1.0)),
    ("w+, multi-start 8, 60 steps, spread 1, psi 0.7", dict(space="w+", init="random", starts=8,
                                                           start_steps=10, steps=60, spread_weight=1.0,
                                                           truncation=0.7)),
    ("projection: w, diffusion prior K 10, 40 steps", dict(job="projection", space="w", prior="diffusion",
                                                          steps=40)),
    ("projection: w, prior K 10, 40 steps, L1 10, lr 0.05", dict(job="projection", space="w",
                                                                prior="diffusion", steps=40, l1_weight=10.0,
                                                                lr=0.05)),
    ("projection: w+, prior K 10, 40 steps, L1 10, lr 0.05", dict(job="projection", space="w+",
                                                                 prior="diffusion", steps=40, l1_weight=10.0,
                                                                 lr=0.05)),
    # iGAN's search (start_steps 0): of 256 random starts, the 4 that fit the paint best (task loss + the
    # W proxy), as they are or with 20 small steps; with the encoder, its answer is one of the starts.
    ("w, search 256, no steps", dict(space="w", init="random", starts=256, start_steps=0, steps=0)),
    ("w, search 256, 20 steps, lr 0.01", dict(space="w", init="random", starts=256, start_steps=0, steps=20,
                                              lr=0.01)),
    ("encoder: w, search 256, 20 steps, lr 0.01", dict(space="w", init="encoder", starts=256, start_steps=0,
                                                      steps=20, lr=0.01)),
    # The encoder (core.encoder): its one-pass answer, candidates spread around it, then a short refinement.
    ("encoder: w, spread 0.7, no steps", dict(space="w", init="encoder", encoder_jitter=0.7, steps=0)),
    ("encoder: w, spread 0.7, 50 steps", dict(space="w", init="encoder", encoder_jitter=0.7, steps=50)),
    ("encoder: w+, spread 0.7, 50 steps, w+ spread 1", dict(space="w+", init="encoder", encoder_jitter=0.7,
                                                           steps=50, spread_weight=1.0)),
    ("encoder: w, spread 1.0, 50 steps", dict(space="w", init="encoder", encoder_jitter=1.0, steps=50)),
    # inpainting with the encoder as the app runs it (w+, 200 steps), without and with spread candidates
    ("encoder: w+, 200 steps", dict(space="w+", init="encoder", steps=200)),
    ("encoder: w+, spread 0.7, 200 steps", dict(space="w+", init="encoder", encoder_jitter=0.7, steps=200)),
    # gentler refinements: a smaller step, balanced losses, the W log-density proxy as a term
    ("encoder: w, spread 0.7, 20 steps, lr 0.01", dict(space="w", init="encoder", encoder_jitter=0.7,
                                                      steps=20, lr=0.01)),
    ("encoder: w, spread 1.0, 20 steps, lr 0.01", dict(space="w", init="encoder", encoder_jitter=1.0,
                                                      steps=20, lr=0.01)),
    ("encoder: w, spread 1.0, 10 steps, lr 0.01", dict(space="w", init="encoder", encoder_jitter=1.0,
                                                      steps=10, lr=0.01)),
    ("encoder: w, spread 1.3, 20 steps, lr 0.01", dict(space="w", init="encoder", encoder_jitter=1.3,
                                                      steps=20, lr=0.01)),
    ("encoder: w, spread 0.7, 50 steps, L1 1 + perc 1, lr 0.01", dict(space="w", init="encoder",
                                                                     encoder_jitter=0.7, steps=50, lr=0.01,
                                                                     l1_weight=1.0, perceptual_weight=1.0)),
    ("encoder: w, spread 0.7, 50 steps, L1 1 + perc 1, W prior 1", dict(space="w", init="encoder",
                                                                       encoder_jitter=0.7, steps=50,
                                                                       l1_weight=1.0, perceptual_weight=1.0,
                                                                       w_prior_weight=1.0)),
    ("encoder: w, spread 0.7, 50 steps, W prior 10, lr 0.02", dict(space="w", init="encoder",
                                                                  encoder_jitter=0.7, steps=50, lr=0.02,
                                                                  w_prior_weight=10.0)),
    # the encoder's answer after its 3 ReStyle refinements (each sees its rendering beside the paint)
    ("encoder: w, refine 3, spread 1.3, no steps", dict(space="w", init="encoder", encoder_refine=3,
                                                       encoder_jitter=1.3, steps=0)),
    ("encoder: w, refine 3, spread 1.3, 20 steps, lr 0.01", dict(space="w", init="encoder", encoder_refine=3,
                                                                encoder_jitter=1.3, steps=20, lr=0.01)),
    ("encoder: w+, refine 3, spread 1.3, no steps", dict(space="w+", init="encoder", encoder_refine=3,
                                                        encoder_jitter=1.3, steps=0)),
    ("encoder: w+, refine 3, spread 1.3, 20 steps, lr 0.01", dict(space="w+", init="encoder",
                                                                 encoder_refine=3, encoder_jitter=1.3,
                                                                 steps=20, lr=0.01)),
)  # fmt: skip
ENCODER_ROWS = tuple(name for name, cfg in SWEEP_SETTINGS if cfg.get("init") == "encoder")


def gradient_shares(G, target: np.ndarray, mask, perceptual, **overrides) -> dict[str, float]:
    """Each weighted loss term's gradient norm w.r.t. the starting latent, and its share of their sum
    (what the defaults make each term count for in the first update)."""
    from core.gan.latents import latent_to_ws
    from core.imaging import image_to_tensor, mask_to_tensor
    from core.jobs.invert import initial_latent
    from core.jobs.params import InvertParams
    from core.losses import masked_l1

    p = InvertParams(target=target, mask=mask, **{**SWEEP_BASE, **overrides})
    dev = G.device_of()
    tgt = image_to_tensor(target, G.resolution, dev)
    m = mask_to_tensor(mask, G.resolution, dev)
    lat = initial_latent(G, p, dev).requires_grad_(True)
    terms = {"l1": (p.l1_weight, lambda img: masked_l1(img, tgt, m))}
    if perceptual is not None:
        feats = perceptual.prepare(tgt)
        terms["perceptual"] = (p.perceptual_weight, lambda img: perceptual(img, feats, m))
    norms = {}
    for name, (weight, fn) in terms.items():
        (g,) = torch.autograd.grad(weight * fn(G.synthesis(latent_to_ws(G, p.space, lat))).sum(), lat)
        norms[name] = float(g.norm())
    total = sum(norms.values()) or 1.0
    return {**{f"{k}_grad": round(v, 5) for k, v in norms.items()},
            **{f"{k}_share": round(v / total, 4) for k, v in norms.items()}}  # fmt: skip


def _pairwise(perceptual, images: np.ndarray) -> float:
    """Mean perceptual distance over all pairs of ``images`` [k, H, W, 3]."""
    d = [float(perceptual_distances(perceptual, images[i : i + 1], images[j : j + 1])[0])
         for i in range(len(images)) for j in range(i + 1, len(images))]  # fmt: skip
    return float(np.mean(d))


def inpaint_holes(n: int, resolution: int = 64, seed: int = 0) -> np.ndarray:
    """``n`` rectangular holes [n, R, R] (1 = fill), a quarter to a third of the side, near the face."""
    rng = np.random.default_rng(seed)
    holes = np.zeros((n, resolution, resolution), np.float32)
    for h in holes:
        size = rng.integers(resolution // 4, resolution // 3 + 1, 2)
        y, x = rng.integers(resolution // 6, resolution - resolution // 6 - size)
        h[y : y + size[0], x : x + size[1]] = 1.0
    return holes


def _scribble_job(
    G, rgba: np.ndarray, cfg: dict, *, k: int, seed: int, perceptual, prior_model, encoder=None
):
    """One scribble's k candidates: the invert job, or the projection job with a prior (cfg "job")."""
    from core.jobs.invert import invert, scribble_params
    from core.jobs.runner import run_to_completion

    if cfg.get("job", "invert") == "invert":
        p = scribble_params(rgba, num_samples=k, seed=seed, preview_every=max(cfg["steps"], 1), **cfg)
        return run_to_completion(invert(p, G, perceptual_loss=perceptual, encoder=encoder))
    from core.jobs.params import ProjectionParams
    from core.jobs.projection import project

    target, mask = split_scribble(rgba)
    p = ProjectionParams(task="scribble", target=target, mask=mask, num_samples=k, seed=seed,
                         preview_every=cfg["steps"], **_projection_settings(cfg))  # fmt: skip
    return run_to_completion(project(p, G, perceptual_loss=perceptual, prior_model=prior_model))


def _projection_settings(cfg: dict) -> dict:
    """A projection row's settings for ProjectionParams (the job's own defaults for the rest)."""
    return {k: v for k, v in cfg.items() if k != "job"}


def _inpaint_jobs(
    G, cfg: dict, *, perceptual, prior_model, encoder=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(targets, holes, filled images) for the 16 held-out cats. The invert job runs them as one batch
    (each latent its own target and hole, the target pasted back; multi-start takes a single target,
    so these run without it); the projection job runs each cat on its own (pasting back by default)."""
    from core.jobs.invert import inpaint_params, invert
    from core.jobs.runner import run_to_completion

    targets, holes = held_out_images(16), inpaint_holes(16)
    if cfg.get("job", "invert") == "invert":
        # One candidate per cat: no multi-start and no spread of encoder starts.
        inp = {k_: v for k_, v in cfg.items() if k_ not in ("starts", "start_steps", "job", "encoder_jitter")}
        p = inpaint_params(targets, holes, num_samples=16, preview_every=max(cfg["steps"], 1), **inp)
        job = invert(p, G, perceptual_loss=perceptual, encoder=encoder)
        return targets, holes, run_to_completion(job).images
    from core.jobs.params import ProjectionParams
    from core.jobs.projection import project

    filled = []
    for i, (t, h) in enumerate(zip(targets, holes, strict=True)):
        p = ProjectionParams(task="inpaint", target=t, mask=1.0 - h, num_samples=1, seed=i,
                             preview_every=cfg["steps"], **_projection_settings(cfg))  # fmt: skip
        filled.append(
            run_to_completion(project(p, G, perceptual_loss=perceptual, prior_model=prior_model)).images[0]
        )
    return targets, holes, np.stack(filled)


def _inpaint_diversity(
    G, cfg: dict, *, k: int, perceptual, prior_model, encoder=None, cats: int = 4
) -> float:
    """Mean pairwise perceptual distance between the ``k`` candidates a person gets for one hole
    (the first ``cats`` held-out cats; the kept pixels are pasted back, so only the holes differ)."""
    from core.jobs.invert import inpaint_params, invert
    from core.jobs.runner import run_to_completion

    targets, holes = held_out_images(cats), inpaint_holes(cats)
    spreads = []
    for i, (t, h) in enumerate(zip(targets, holes, strict=True)):
        if cfg.get("job", "invert") == "invert":
            inp = {k_: v for k_, v in cfg.items() if k_ not in ("starts", "start_steps", "job")}
            p = inpaint_params(t, h, num_samples=k, seed=i, preview_every=max(cfg["steps"], 1), **inp)
            images = run_to_completion(invert(p, G, perceptual_loss=perceptual, encoder=encoder)).images
        else:
            from core.jobs.params import ProjectionParams
            from core.jobs.projection import project

            p = ProjectionParams(task="inpaint", target=t, mask=1.0 - h, num_samples=k, seed=i,
                                 preview_every=cfg["steps"], **_projection_settings(cfg))  # fmt: skip
            images = run_to_completion(
                project(p, G, perceptual_loss=perceptual, prior_model=prior_model)
            ).images
        spreads.append(_pairwise(perceptual, images))
    return float(np.mean(spreads))


def sweep_row(
    G, scribbles: dict, settings: dict, *, k: int, perceptual, clip, real, prior_model=None, encoder=None
) -> dict:
    """One setting: scribble paint error (sparse/dense), realism (KID), candidate diversity, time;
    inpainting of 16 held-out cats (kept-region PSNR, realism of the filled images)."""
    from core.evals.metrics import clip_features, kid, knn_precision, to_tensor

    cfg = {**SWEEP_BASE, **settings} if settings.get("job", "invert") == "invert" else dict(settings)
    err: dict[str, list[float]] = {"sparse": [], "dense": []}
    made, spread, seconds = [], [], []
    for i, (name, rgba) in enumerate(scribbles.items()):
        t0 = time.perf_counter()
        r = _scribble_job(G, rgba, cfg, k=k, seed=i, perceptual=perceptual, prior_model=prior_model,
                          encoder=encoder)  # fmt: skip
        seconds.append(time.perf_counter() - t0)
        err[name.split("-")[0]] += [painted_error(img, rgba) for img in r.images]
        spread.append(_pairwise(perceptual, r.images))
        made.append(r.images)
    targets, holes, filled = _inpaint_jobs(G, cfg, perceptual=perceptual, prior_model=prior_model,
                                           encoder=encoder)  # fmt: skip
    keep = holes == 0
    kept_psnr = [
        float(psnr(img[m][None], t[m][None])[0]) for img, t, m in zip(filled, targets, keep, strict=True)
    ]
    feats = clip_features(clip, [to_tensor(np.concatenate(made))])
    fill_feats = clip_features(clip, [to_tensor(np.asarray(filled))])
    kid_s, kid_s_std = kid(feats, real)
    kid_i, kid_i_std = kid(fill_feats, real)
    return {
        "settings": cfg, "candidates": k, "n_results": len(feats),
        "paint_error": {kind: round(float(np.mean(v)), 4) for kind, v in err.items()},
        "kid": round(kid_s, 4), "kid_std": round(kid_s_std, 4),
        "precision": round(knn_precision(real, feats), 4),
        "diversity": round(float(np.mean(spread)), 4),
        "seconds_per_job": round(float(np.median(seconds)), 2),
        "inpaint": {"kept_psnr_min": round(min(kept_psnr), 2), "kid": round(kid_i, 4),
                    "precision": round(knn_precision(real, fill_feats), 4),
                    "kid_std": round(kid_i_std, 4), "n": len(filled),
                    "diversity": round(_inpaint_diversity(G, cfg, k=k, perceptual=perceptual,
                                                          prior_model=prior_model, encoder=encoder), 4)},
    }  # fmt: skip


MATCH_POOL = 1024  # random generator samples searched per scribble for the matched reference


def matched_samples(G, scribbles: dict, *, k: int, perceptual, clip, real, pool: int = MATCH_POOL) -> dict:
    """The realism reference a scribble result can fairly be held to: for each scribble, the ``k``
    of ``pool`` seeded random generator samples with the lowest paint error (iGAN's first search,
    with no optimisation). They are G's own images, so perfectly "realistic", but they cover only
    what the scribbles ask for, as the results do; the plain samples' KID also rewards covering the
    whole distribution, which 8 scribbles x k candidates cannot (see docs/models.md)."""
    from core.evals.metrics import clip_features, generator_batches, kid, knn_precision, to_tensor

    images = np.concatenate(list(_uint8_batches(generator_batches(G, pool, seed=1))))
    err: dict[str, list[float]] = {"sparse": [], "dense": []}
    picked, spread = [], []
    for name, rgba in scribbles.items():
        errors = np.array([painted_error(img, rgba) for img in images])
        best = np.argsort(errors)[:k]
        err[name.split("-")[0]] += errors[best].tolist()
        spread.append(_pairwise(perceptual, images[best]))
        picked.append(images[best])
    feats = clip_features(clip, [to_tensor(np.concatenate(picked))])
    kid_m, kid_std = kid(feats, real)
    return {"pool": pool, "k": k, "kid": round(kid_m, 4), "kid_std": round(kid_std, 4),
            "precision": round(knn_precision(real, feats), 4), "diversity": round(float(np.mean(spread)), 4),
            "paint_error": {kind: round(float(np.mean(v)), 4) for kind, v in err.items()}}  # fmt: skip


def _bundled_prior():
    from core.paths import BUNDLED_PRIOR, bundled_model
    from core.prior.model import load_wdiffusion

    return load_wdiffusion(bundled_model(BUNDLED_PRIOR))


def sweep_table(G, *, k: int = 4, perceptual, names=None, encoder=None) -> dict:
    from core.clip import load_clip
    from core.evals.metrics import (
        clip_features,
        generator_batches,
        kid,
        knn_precision,
        procedural_batches,
        to_tensor,
    )

    scribbles = load_scribbles()
    clip = load_clip(device="cpu")
    real = clip_features(clip, procedural_batches(500, split="eval", start=1000))
    n = len(scribbles) * k
    plain = np.concatenate([b for b in _uint8_batches(generator_batches(G, n, seed=0))])
    plain_feats = clip_features(clip, [to_tensor(plain)])
    plain_kid = kid(plain_feats, real)
    plain_spread = float(np.mean([_pairwise(perceptual, plain[i : i + k]) for i in range(0, n, k)]))
    matched = matched_samples(G, scribbles, k=k, perceptual=perceptual, clip=clip, real=real)
    rows = {}
    for name, settings in SWEEP_SETTINGS:
        if (names and name not in names) or (settings.get("init") == "encoder" and encoder is None):
            continue
        t0 = time.perf_counter()
        prior = _bundled_prior() if settings.get("job") == "projection" else None
        rows[name] = sweep_row(G, scribbles, settings, k=k, perceptual=perceptual, clip=clip, real=real,
                               prior_model=prior, encoder=encoder)  # fmt: skip
        log.info("%s: %s (%.0f s)", name, rows[name], time.perf_counter() - t0)
    target, mask = split_scribble(next(iter(scribbles.values())))
    shares = {
        "before (L1 10, perc 0.01)": gradient_shares(G, target, mask, perceptual, space="w+"),
        "L1 1, perc 1": gradient_shares(G, target, mask, perceptual, space="w", l1_weight=1.0,
                                        perceptual_weight=1.0),
    }  # fmt: skip
    return {
        "reference": "500 eval-split cats (1000..1499); inpainting: eval cats 100..115, seeded holes",
        "generator_samples": {"kid": round(plain_kid[0], 4), "kid_std": round(plain_kid[1], 4), "n": n,
                              "precision": round(knn_precision(real, plain_feats), 4),
                              "real_precision": round(knn_precision(real[: len(real) // 2],
                                                                    real[len(real) // 2 :]), 4),
                              "diversity": round(plain_spread, 4)},
        "matched_samples": matched, "rows": rows, "gradient_shares": shares,
        "diversity": f"mean bundled-perceptual distance between the {k} candidates of one scribble",
    }  # fmt: skip


def _uint8_batches(batches):
    from core.imaging import to_uint8

    for b in batches:
        yield to_uint8(b)


# --- commands (registered by core.evals.metrics) -------------------------------------------------------


def _bundled_generators(names):
    from core.models.io import load_generator
    from core.paths import bundled_model

    return {name: load_generator(bundled_model(name)) for name in names}


def cmd_inversion(a: argparse.Namespace) -> int:
    from core.evals.metrics import write_quality
    from core.losses import make_perceptual_loss
    from core.paths import bundled_model

    perc = make_perceptual_loss("bundled")
    t0 = time.perf_counter()
    rows = inversion_table(_bundled_generators(a.models), n=a.n, steps=a.steps, perceptual=perc)
    print(
        f"inversion of {a.n} held-out cats, {a.steps} Adam steps (lr 0.05), L1 x10 + bundled perceptual x0.01"
    )
    print(f"{'model':28s} {'space':5s} {'init':6s} {'PSNR dB':>14s} {'perceptual':>16s}")
    for r in rows:
        p, d = r["psnr"], r["perceptual"]
        print(f"{r['model']:28s} {r['space']:5s} {r['init']:6s} {p['mean']:7.2f} ± {p['std']:4.2f}"
              f" {d['mean']:8.4f} ± {d['std']:.4f}")  # fmt: skip
    print(f"({time.perf_counter() - t0:.0f} s)")
    if a.write_card:
        doc = {
            "command": f"python -m core.evals inversion --n {a.n} --steps {a.steps} --write-card",
            "images": f"procedural eval split, images 100..{99 + a.n} (held out from training)",
            "steps": a.steps, "optimizer": "adam, lr 0.05", "losses": "L1 x10 + bundled perceptual x0.01",
            "perceptual": "bundled (tiny-CLIP features, LPIPS-style); lower = closer",
        }  # fmt: skip
        for name in a.models:
            mine = [r for r in rows if r["model"] == name]
            write_quality(bundled_model(name).with_suffix(".json"), "inversion", {**doc, "rows": mine})
    return 0


def cmd_scribble(a: argparse.Namespace) -> int:
    from core.evals.metrics import write_quality
    from core.losses import make_perceptual_loss
    from core.paths import bundled_model

    (G,) = _bundled_generators([a.model]).values()
    t0 = time.perf_counter()
    table = scribble_table(G, load_scribbles(), samples=a.samples, steps=a.steps,
                           perceptual=make_perceptual_loss("bundled"))  # fmt: skip
    print(f"scribble-to-image, {a.steps} steps in w+, {a.samples} random starts per scribble")
    for name, r in table["scribbles"].items():
        print(f"{name:10s} painted {r['painted_fraction']:5.1%}  L1 on paint {r['painted_l1']['mean']:.4f}")
    rz = table["realism"]
    kids = rz["results"]["kid"], rz["generator_samples"]["kid"]
    print("KID vs real: results {:.4f}, plain G samples {:.4f}".format(*kids))
    print(f"({time.perf_counter() - t0:.0f} s)")
    if a.write_card:
        cmd = f"python -m core.evals scribble --samples {a.samples} --steps {a.steps} --write-card"
        write_quality(bundled_model(a.model).with_suffix(".json"), "scribble", {**table, "command": cmd})
    return 0


def cmd_sweep(a: argparse.Namespace) -> int:
    from core.evals.metrics import write_quality
    from core.losses import make_perceptual_loss
    from core.paths import bundled_model

    (G,) = _bundled_generators([a.model]).values()
    encoder = _bundled_encoder(a.model, G)
    t0 = time.perf_counter()
    table = sweep_table(G, k=a.k, perceptual=make_perceptual_loss("bundled"), names=a.only, encoder=encoder)
    g = table["generator_samples"]
    print(f"generator samples: KID {g['kid']:.4f}, diversity {g['diversity']:.4f}")
    for name, r in table["rows"].items():
        print(f"{name:45s} paint {r['paint_error']}  KID {r['kid']:.4f}  diversity {r['diversity']:.4f}  "
              f"{r['seconds_per_job']:.2f} s/job  inpaint {r['inpaint']}")  # fmt: skip
    print(table["gradient_shares"])
    print(f"({time.perf_counter() - t0:.0f} s)")
    if a.write_card:
        cmd = f"python -m core.evals scribble-sweep --k {a.k} --write-card"
        if a.only:  # the rows that ran
            cmd += " --only " + " ".join(f'"{n}"' for n in a.only)
        enc_sha = None
        if encoder is not None:
            from core.encoder.model import encoder_path_for
            from core.models.safe_load import sha256_file

            enc_sha = sha256_file(encoder_path_for(bundled_model(a.model)))[:12]
        for row in table["rows"].values():
            row["command"] = cmd
            if enc_sha and row["settings"].get("init") == "encoder":
                row["encoder_sha256"] = enc_sha  # which encoder measured it (docs/encoders.md marks others)
        card = bundled_model(a.model).with_suffix(".json")
        if a.only:  # the other rows stay as they were measured (on this generator: a retrain clears them)
            old = _card_quality(card).get("scribble_sweep", {}).get("rows", {})
            table["rows"] = {**{n: r for n, r in old.items() if n not in table["rows"]}, **table["rows"]}
        write_quality(card, "scribble_sweep", {**table, "command": cmd})
    return 0


def sweep_figure(G, rows: list[str], scribbles: dict, *, k: int, perceptual, encoder, out: Path) -> Path:
    """A sheet for looking at the sweep: per scribble, a line per row (the scribble over grey, then the
    row's ``k`` candidates, seeded as the table's), 2x upscaled, a white gap between scribbles."""
    from PIL import Image, ImageDraw

    settings = dict(SWEEP_SETTINGS)
    unknown = [r for r in rows if r not in settings]
    if unknown:
        raise SystemExit(f"unknown sweep rows {unknown}; known: {list(settings)}")
    all_names = list(load_scribbles())
    lines: list[tuple[str, list[np.ndarray]]] = []
    for name, rgba in scribbles.items():
        alpha = rgba[..., 3:].astype(np.float32) / 255
        shown = (rgba[..., :3] * alpha + 128 * (1 - alpha)).astype(np.uint8)
        for row in rows:
            cfg = (
                {**SWEEP_BASE, **settings[row]}
                if settings[row].get("job", "invert") == "invert"
                else settings[row]
            )
            r = _scribble_job(G, rgba, cfg, k=k, seed=all_names.index(name), perceptual=perceptual,
                              prior_model=None, encoder=encoder)  # fmt: skip
            lines.append((f"{name}: {row}", [shown, *r.images]))
    res, label_w, gap = G.resolution * 2, 260, 4
    sheet = Image.new("RGB", (label_w + (k + 1) * (res + gap), len(lines) * (res + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, images) in enumerate(lines):
        y = i * (res + gap)
        draw.text((4, y + res // 2 - 6), label, fill="black")
        for j, img in enumerate(images):
            tile = Image.fromarray(np.ascontiguousarray(img)).resize((res, res), Image.NEAREST)
            sheet.paste(tile, (label_w + j * (res + gap), y))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def cmd_sweep_figure(a: argparse.Namespace) -> int:
    from core.losses import make_perceptual_loss

    (G,) = _bundled_generators([a.model]).values()
    scribbles = {n: v for n, v in load_scribbles().items() if n in a.scribbles}
    out = sweep_figure(G, a.rows, scribbles, k=a.k, perceptual=make_perceptual_loss("bundled"),
                       encoder=_bundled_encoder(a.model, G), out=Path(a.out))  # fmt: skip
    print(out)
    return 0


def _card_quality(card: Path) -> dict:
    import json

    return json.loads(card.read_text()).get("quality", {}) if card.is_file() else {}


def _bundled_encoder(model_name: str, G):
    """The encoder beside a bundled generator, or None (its sweep rows are then skipped)."""
    from core.encoder.model import encoder_path_for, load_encoder_for
    from core.paths import bundled_model

    path = bundled_model(model_name)
    return load_encoder_for(path, G) if encoder_path_for(path).is_file() else None


def cmd_make_scribbles(a: argparse.Namespace) -> int:
    for p in write_scribbles():
        print(p)
    return 0


def add_parsers(sub, common) -> None:
    i = sub.add_parser(
        "inversion", parents=[common], help="PSNR / perceptual distance of inversion (z, w, w+)"
    )
    i.add_argument("--n", type=int, default=8, help="held-out images")
    i.add_argument("--steps", type=int, default=500)
    i.add_argument(
        "--models", nargs="+", default=["stylegan2-cats64.safetensors", "dcgan-cats64.safetensors"]
    )
    i.add_argument("--write-card", action="store_true", help="store the table in the model cards")
    i.set_defaults(func=cmd_inversion)
    s = sub.add_parser("scribble", parents=[common], help="scribble-to-image on tests/data/scribbles")
    s.add_argument("--model", default="stylegan2-cats64.safetensors")
    s.add_argument("--samples", type=int, default=3, help="random starts per scribble")
    s.add_argument("--steps", type=int, default=200)
    s.add_argument("--write-card", action="store_true", help="store the table in the model card")
    s.set_defaults(func=cmd_scribble)
    w = sub.add_parser("scribble-sweep", parents=[common], help="scribble / inpainting settings table")
    w.add_argument("--model", default="stylegan2-cats64.safetensors")
    w.add_argument("--k", type=int, default=4, help="candidates per scribble")
    w.add_argument("--only", nargs="*", help="setting names to run (default: all)")
    w.add_argument("--write-card", action="store_true", help="store the table in the model card")
    w.set_defaults(func=cmd_sweep)
    f = sub.add_parser("sweep-figure", parents=[common], help="candidates of chosen sweep rows, as a PNG")
    f.add_argument("--model", default="stylegan2-cats64.safetensors")
    f.add_argument("--rows", nargs="+", required=True, help="sweep row names (scribble-sweep's)")
    f.add_argument("--scribbles", nargs="+", default=["sparse-0", "dense-0", "dense-1"])
    f.add_argument("--k", type=int, default=4)
    f.add_argument("--out", default="docs/images/scribble-settings.png")
    f.set_defaults(func=cmd_sweep_figure)
    m = sub.add_parser(
        "make-scribbles", parents=[common], help="rewrite tests/data/scribbles (deterministic)"
    )
    m.set_defaults(func=cmd_make_scribbles)
