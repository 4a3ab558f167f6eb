"""Inversion and scribble-to-image quality of the bundled generators (the seed write-up's tables).

- Inversion of held-out procedural cats (never seen in training): PSNR and perceptual distance after
  ``steps`` Adam steps, for every latent space of each generator (z, w, w+ for StyleGAN2; z for the
  DCGAN, the seed's "vanilla GAN") and both starts (mean, random). The seed's expected ordering:
  w+ best, z worst; mean init helps z.
- Scribble-to-image on the fixed scribbles in ``tests/data/scribbles/`` (RGBA, alpha = painted):
  the error on the painted pixels and the realism (KID on tiny-CLIP features) of the results.

    python -m core.metrics inversion --write-card
    python -m core.metrics scribble --write-card
    python -m core.metrics make-scribbles            # rewrites tests/data/scribbles/ (deterministic)

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

log = logging.getLogger(__name__)

SCRIBBLE_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "scribbles"
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
    from core.jobs.invert import invert, run_to_completion
    from core.jobs.params import InvertParams

    params = InvertParams(
        target=targets, mask=mask, space=space, init=init, steps=steps, lr=lr, seed=seed,
        num_samples=len(targets), preview_every=steps, perceptual_weight=0.01 if perceptual else 0.0,
    )  # fmt: skip
    return run_to_completion(invert(params, G, perceptual_loss=perceptual))


@torch.no_grad()
def perceptual_distances(loss, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from core.metrics import to_tensor

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
        raise FileNotFoundError(f"no scribbles in {folder}; run python -m core.metrics make-scribbles")
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
    from core.metrics import clip_features, generator_batches, procedural_batches, realism, to_tensor

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


# --- commands (registered by core.metrics) -------------------------------------------------------


def _bundled_generators(names):
    from core.models.io import load_generator
    from core.paths import bundled_model

    return {name: load_generator(bundled_model(name)) for name in names}


def cmd_inversion(a: argparse.Namespace) -> int:
    from core.losses import make_perceptual_loss
    from core.metrics import write_quality
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
            "command": f"python -m core.metrics inversion --n {a.n} --steps {a.steps} --write-card",
            "images": f"procedural eval split, images 100..{99 + a.n} (held out from training)",
            "steps": a.steps, "optimizer": "adam, lr 0.05", "losses": "L1 x10 + bundled perceptual x0.01",
            "perceptual": "bundled (tiny-CLIP features, LPIPS-style); lower = closer",
        }  # fmt: skip
        for name in a.models:
            mine = [r for r in rows if r["model"] == name]
            write_quality(bundled_model(name).with_suffix(".json"), "inversion", {**doc, "rows": mine})
    return 0


def cmd_scribble(a: argparse.Namespace) -> int:
    from core.losses import make_perceptual_loss
    from core.metrics import write_quality
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
        cmd = f"python -m core.metrics scribble --samples {a.samples} --steps {a.steps} --write-card"
        write_quality(bundled_model(a.model).with_suffix(".json"), "scribble", {**table, "command": cmd})
    return 0


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
    m = sub.add_parser(
        "make-scribbles", parents=[common], help="rewrite tests/data/scribbles (deterministic)"
    )
    m.set_defaults(func=cmd_make_scribbles)
