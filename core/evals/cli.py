"""``python -m core.evals``: the measurements behind the model cards and docs.

python -m core.evals realism --write-cards    # KID/FID table into the generators' model cards
python -m core.evals clip --write-card        # zero-shot + perceptual tables into the CLIP card
python -m core.evals inversion --write-card   # PSNR of z / w / w+ inversion
python -m core.evals scribble --write-card    # scribble-to-image on tests/data/scribbles
python -m core.evals scribble-sweep --write-card
python -m core.evals sheet                    # generator samples beside held-out cats
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from core.evals import encoders, inversion_quality
from core.evals.metrics import (
    clip_features,
    distortion_ranking,
    distortion_set,
    generator_batches,
    perceptual_distance,
    pixel_mse,
    procedural_batches,
    realism,
    write_quality,
    zero_shot,
)

log = logging.getLogger("core.evals.metrics")


def _clip_facts(clip_path: Path) -> dict:
    from core.models.safe_load import sha256_file

    return {"file": clip_path.name, "sha256": sha256_file(clip_path)}


def cmd_realism(a: argparse.Namespace) -> int:
    from core.clip import bundled_clip_paths, load_clip
    from core.evals.metrics import swd
    from core.models.io import load_generator
    from core.paths import bundled_model

    clip = load_clip(device=a.device)
    t0 = time.perf_counter()
    eval_imgs = torch.cat(list(procedural_batches(a.n, split="eval")))
    train_imgs = torch.cat(list(procedural_batches(a.n, split="train")))
    eval_feats = clip_features(clip, [eval_imgs])
    rows = {"real eval vs real train": realism(clip_features(clip, [train_imgs]), eval_feats, seed=a.seed)}
    rows["real eval vs real train"]["swd"] = swd(train_imgs, eval_imgs, seed=a.seed)
    for name in a.models:
        G = load_generator(bundled_model(name), device=a.device)
        imgs = torch.cat(list(generator_batches(G, a.n, seed=a.seed)))
        rows[name] = {**realism(clip_features(clip, [imgs]), eval_feats, seed=a.seed),
                      "swd": swd(imgs, eval_imgs, seed=a.seed)}  # fmt: skip
    print(f"realism on {clip.name} image embeddings, {a.n} vs {a.n} held-out procedural images")
    print(f"{'':32s} {'KID':>10s} {'KID std':>10s} {'FID':>10s}  SWD x1e3 (64, 32, 16 px bands, 8 px)")
    for name, r in rows.items():
        print(f"{name:32s} {r['kid']:10.5f} {r['kid_std']:10.5f} {r['fid']:10.4f}  {r['swd']}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    if a.write_cards:
        base = {
            "metric": "KID (cubic kernel, 100 subsets of 1000) and FID on tiny-CLIP image embeddings; "
            "SWD: sliced Wasserstein distance of 7x7 pixel patches per Laplacian-pyramid level (x1e3; "
            "no learned network)",
            "features": _clip_facts(bundled_clip_paths()[1]),
            "n": a.n,
            "reference": "procedural eval split, images 0..n-1",
            "real_vs_real": rows["real eval vs real train"],
            "command": f"python -m core.evals realism --n {a.n} --write-cards",
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
        cmd = f"python -m core.evals.metrics clip --n {a.n} --n-pairs {a.n_pairs} --write-card"
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
    from core.imaging import to_uint8
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
    ap = argparse.ArgumentParser(prog="python -m core.evals", description=__doc__.split("\n\n")[0])
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
    inversion_quality.add_parsers(sub, common)
    encoders.add_parsers(sub, common)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(logging.WARNING)  # open_clip logs model building at INFO on the root
    log.setLevel(logging.INFO)
    logging.getLogger("core.evals.inversion_quality").setLevel(logging.INFO)  # its tables log row by row
    logging.getLogger("core.evals.encoders").setLevel(logging.INFO)
    if a.threads:
        torch.set_num_threads(a.threads)
    return a.func(a)
