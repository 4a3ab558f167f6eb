"""Measure the priors and write the table of docs/prior.md (one command, seeded, CPU-sized).

    python -m core.evals.prior --out docs/prior.md --n 12 --steps 40 --threads 1

Realism is KID (and FID) on the CLIP image features (the bundled tiny CLIP unless ``--clip``) against
real images of the procedural data's eval split; saturation is the mean HSV saturation (the seed's
"colour artefacts"); diversity is the mean pairwise cosine distance of the CLIP image embeddings of
a batch. The seed's claims are listed beside the measured rows, with a verdict computed from them.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from core.clip import load_clip
from core.evals.metrics import clip_features, fid, kid
from core.evals.prior_quality import image_quality, pairwise_distance, real_images, saturation, w_quality
from core.jobs.params import PRIORS, ProjectionParams
from core.jobs.projection import project
from core.jobs.runner import run_to_completion
from core.models.io import load_generator
from core.models.safe_load import sha256_file
from core.paths import BUNDLED_PRIOR, BUNDLED_S_PRIOR, DEFAULT_GENERATOR, bundled_model
from core.prior.model import load_wdiffusion, read_wdiffusion_metadata
from core.prior.wstats import load_wstats, wstats_path_for

log = logging.getLogger("latent_canvas.evaluate")

EVAL_TASKS = ("clip", "similarity", "inpaint")
STRIP = 6  # samples per prior shown in docs/images/prior-<task>.png
CLAIMS = {
    "none": "lowest task loss, but worst realism and most saturation (colour artefacts)",
    "mean": "realistic but low diversity (the same cat coloured differently)",
    "cluster": "realistic but low diversity (interpolates target and nearest mode)",
    "diffusion": "realistic and diverse",
    "task-guided": "(proposed future work; no result in the seed)",
}
# The seed ran inpainting in Style space (its second diffusion model); its figures 15-18, in words.
CLAIMS_S = {
    "none": "matches the kept region, but 'a mess' in the hole",
    "mean": "like an overlay of the mean latent and the target, with more colour distortion",
    "cluster": "(not run in the seed)",
    "diffusion": "colour saturation, but more realistic content in the hole than no prior",
    "task-guided": "(proposed future work; no result in the seed)",
}
STYLE_TASK = "inpaint-s"  # the Style-space inpainting table's key (and docs/images/prior-inpaint-s.png)
TITLES = {STYLE_TASK: "inpaint in Style space (the seed's setting for this task)"}
# Extra rows beside the five priors: stronger penalties, the seed's noise level, our guidance form.
ABLATIONS = {
    "mean, weight 10": {"prior": "mean", "prior_weight": 10.0},
    "cluster, weight 10": {"prior": "cluster", "prior_weight": 10.0},
    "diffusion, 10% noise": {"prior": "diffusion", "noise_start": 0.1},
    "task-guided, xt guidance": {"prior": "task-guided", "guidance": "xt"},
}


_JOB = ProjectionParams(prompt="defaults")  # the job's own defaults, so the table measures what users get


@dataclass(frozen=True)
class EvalConfig:
    n: int = 12  # samples (seeds) per task x prior
    steps: int = 40  # task steps (task-guided: reverse steps)
    lr: float = _JOB.lr  # Adam step size in W units
    prior_weight: float = _JOB.prior_weight  # mean / cluster penalty weight
    guidance_scale: float = _JOB.guidance_scale  # task-guided diffusion
    prompt: str = "a black cat with green eyes on a red background"  # CLIP task
    real_images: int = 500  # procedural eval-split images behind realism
    prior_images: int = 500  # G(w) images per sampler for the prior-quality table
    w_samples: int = 2048  # latents behind the W-space table
    seed: int = 0


def task_inputs(real: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The target (the first eval image, uint8 [R, R, 3]) and the inpainting mask (centre hole)."""
    target = ((real[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    r = target.shape[0]
    mask = np.ones((r, r), np.float32)
    mask[r // 4 : 3 * r // 4, r // 4 : 3 * r // 4] = 0  # 1 = match the target; the hole is the centre
    return target, mask


def perceptual_for_eval(device: str):
    """The best perceptual loss this machine has: our bundled net, then LPIPS-VGG; else None (L1)."""
    from core.errors import LatentCanvasError
    from core.losses import make_perceptual_loss

    for kind in ("bundled", "lpips-vgg"):
        try:
            return make_perceptual_loss(kind, device=device), kind
        except (LatentCanvasError, ValueError) as e:
            log.info("perceptual %s unavailable: %s", kind, e)
    return None, "masked L1 (no perceptual network on this machine)"


def run_cell(G, clip, perc, model, wstats, params: ProjectionParams, ref_feats: torch.Tensor) -> dict:
    started = time.perf_counter()
    result = run_to_completion(
        project(params, G, clip=clip, perceptual_loss=perc, prior_model=model, wstats=wstats)
    )
    seconds = time.perf_counter() - started
    images = torch.from_numpy(result.images).permute(0, 3, 1, 2).float() / 127.5 - 1
    feats = clip_features(clip, [images])
    k_mean, k_std = kid(ref_feats, feats, subset_size=feats.shape[0])
    return {
        "task_loss": float(result.task_loss.mean()),
        "task_loss_std": float(result.task_loss.std()),
        "kid": k_mean,
        "kid_std": k_std,
        "saturation": float(saturation(images).mean()),
        "diversity": pairwise_distance(feats),
        "log_density": float(result.log_density.mean()),
        "seconds": seconds,
        "strip": result.images,
    }


def reference_row(G, clip, model, ref_feats, n: int, seed: int) -> dict:
    """Untouched mapping samples (the same seeds the projections start from): the 'no task' row."""
    w = G.sample_w(n, seed=seed)
    with torch.no_grad():
        images = G.synthesis(G.broadcast(w))
    feats = clip_features(clip, [images])
    from core.prior.priors import log_density_proxy

    k_mean, k_std = kid(ref_feats, feats, subset_size=n)
    return {
        "kid": k_mean,
        "kid_std": k_std,
        "saturation": float(saturation(images).mean()),
        "diversity": pairwise_distance(feats),
        "log_density": float(log_density_proxy(model, w).mean()),
    }


def verdicts(rows: dict[str, dict]) -> dict[str, str]:
    """The seed's qualitative claims checked against one task's measured rows."""

    rows = {k: v for k, v in rows.items() if k in PRIORS}  # ablations are not ranked

    def rank(key: str, prior: str, *, high: bool) -> int:
        vals = sorted((r[key] for r in rows.values()), reverse=high)
        return vals.index(rows[prior][key]) + 1

    n = len(rows)
    out = {}
    none_ranks = (rank("task_loss", "none", high=False), rank("kid", "none", high=True))
    out["none"] = (
        f"task loss rank {none_ranks[0]}/{n} (1 = lowest), realism rank {none_ranks[1]}/{n} "
        f"(1 = worst KID), saturation rank {rank('saturation', 'none', high=True)}/{n} (1 = most)"
    )
    for prior in ("mean", "cluster"):
        realistic = rows[prior]["kid"] < rows["none"]["kid"]
        less_diverse = rows[prior]["diversity"] < rows["diffusion"]["diversity"]
        out[prior] = (
            f"{'more' if realistic else 'less'} realistic than no prior; "
            f"{'less' if less_diverse else 'more'} diverse than diffusion"
        )
    d = rows["diffusion"]
    out["diffusion"] = (
        f"{'more' if d['kid'] < rows['none']['kid'] else 'less'} realistic than no prior; "
        f"diversity rank {rank('diversity', 'diffusion', high=True)}/{n} (1 = most diverse)"
    )
    g = rows["task-guided"]
    out["task-guided"] = (
        f"vs alternating diffusion: task loss {g['task_loss']:.3f} vs {d['task_loss']:.3f}, "
        f"KID {g['kid']:.3f} vs {d['kid']:.3f}, diversity {g['diversity']:.3f} vs {d['diversity']:.3f}"
    )
    return out


def _facts(cfg: EvalConfig, gen_path: Path, prior_path: Path, clip, perc_kind: str, device: str) -> dict:
    return {
        "generator": gen_path.name,
        "generator_sha256": sha256_file(gen_path),
        "prior": prior_path.name,
        "prior_sha256": sha256_file(prior_path),
        "prior_trained_on": read_wdiffusion_metadata(prior_path).get("generator_sha256"),
        "clip": clip.name,
        "perceptual": perc_kind,
        "device": f"{device} ({platform.machine()}, {torch.get_num_threads()} threads)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": cfg.__dict__,
    }


def _task_tables(
    cfg: EvalConfig, G, clip, perc, model, wstats, base: ProjectionParams, ref_feats, s_model=None
) -> dict:
    """Per task: one row per prior and ablation, and the verdicts on them; with a Style-space prior
    (``s_model``), inpainting again in Style space."""

    def measure(variants: dict, model_, wstats_, what: str, **kw) -> dict:
        rows = {}
        for label, overrides in variants.items():
            log.info("%s, %s", what, label)
            params = replace(base, **kw, **overrides)
            rows[label] = run_cell(G, clip, perc, model_, wstats_, params, ref_feats)
        return {"rows": rows, "verdicts": verdicts(rows)}

    priors = {prior: {"prior": prior} for prior in PRIORS}
    tasks = {
        task: measure({**priors, **ABLATIONS}, model, wstats, f"task {task}", task=task)
        for task in EVAL_TASKS
    }
    if s_model is not None:
        variants = {**priors, "diffusion, 10% noise": ABLATIONS["diffusion, 10% noise"]}
        tasks[STYLE_TASK] = measure(
            variants, s_model, None, "task inpaint in Style space", task="inpaint", space="s"
        )
    return tasks


def evaluate(cfg: EvalConfig, *, device: str = "cpu", clip_name: str | None = None) -> dict:
    started = time.perf_counter()
    gen_path, prior_path = bundled_model(DEFAULT_GENERATOR), bundled_model(BUNDLED_PRIOR)
    G = load_generator(gen_path, device=device)
    model = load_wdiffusion(prior_path, device=device)
    wstats = load_wstats(wstats_path_for(gen_path))
    clip = load_clip(clip_name, device=device)
    perc, perc_kind = perceptual_for_eval(device)
    real = real_images(cfg.real_images, G.resolution)
    ref_feats = clip_features(clip, real.split(100))
    log.info("prior quality (W space, images)")
    facts = _facts(cfg, gen_path, prior_path, clip, perc_kind, device)
    wq = w_quality(G, model, n=cfg.w_samples, seed=cfg.seed + 12345)
    iq = image_quality(G, model, n=cfg.prior_images, seed=cfg.seed + 12345, clip=clip, ref_feats=ref_feats)
    real_split = ref_feats.shape[0] // 2
    iq["real_vs_real"] = {  # the noise floor: two halves of the real set
        "kid": kid(ref_feats[:real_split], ref_feats[real_split:])[0],
        "fid": fid(ref_feats[:real_split], ref_feats[real_split:]),
    }
    target, mask = task_inputs(real)
    base = ProjectionParams(
        task="clip",
        prompt=cfg.prompt,
        target=target,
        mask=mask,
        steps=cfg.steps,
        lr=cfg.lr,
        prior_weight=cfg.prior_weight,
        guidance_scale=cfg.guidance_scale,
        num_samples=cfg.n,
        seed=cfg.seed,
        preview_every=cfg.steps,
    )
    s_path = bundled_model(BUNDLED_S_PRIOR)
    s_model = load_wdiffusion(s_path, device=device) if s_path.is_file() else None
    if s_model is not None:
        facts["s_prior"], facts["s_prior_sha256"] = s_path.name, sha256_file(s_path)
        facts["s_dim"], facts["w_dim"] = G.s_dim, G.w_dim
    tasks = _task_tables(cfg, G, clip, perc, model, wstats, base, ref_feats, s_model)
    ref = reference_row(G, clip, model, ref_feats, cfg.n, cfg.seed)
    facts["seconds"] = round(time.perf_counter() - started, 1)
    return {
        "facts": facts,
        "w_quality": wq,
        "image_quality": iq,
        "real_saturation": float(saturation(real).mean()),
        "reference": ref,
        "tasks": tasks,
        "target": target,
        "mask": mask,
    }


# --- the report ----------------------------------------------------------------------------------


def _prior_quality_verdict(rows: dict[str, dict]) -> str:
    mapping = rows["mapping network"]
    name, best = min(
        ((k, v) for k, v in rows.items() if k.startswith("diffusion")), key=lambda kv: kv[1]["fid"]
    )
    return (
        f"Measured: the best sampler ({name}) reaches FID {_f(best['fid'], 1)} against the mapping network's "
        f"{_f(mapping['fid'], 1)} (ratio {best['fid'] / mapping['fid']:.2f}), "
        f"KID {_f(best['kid'], 3)} against "
        f"{_f(mapping['kid'], 3)} (difference {best['kid'] - mapping['kid']:+.3f}, subset std about "
        f"{_f(mapping['kid_std'], 3)})."
    )


def _f(x: float, d: int = 3) -> str:
    return f"{x:.{d}f}"


def write_report(res: dict, out: Path, *, command: str) -> None:
    """docs/prior.md (tables) + docs/images/prior-*.png (one strip per task x prior) + a JSON twin."""
    from core.imageio import save_png

    img_dir = out.parent / "images"
    for task, t in res["tasks"].items():  # one grid per task: a row per prior, the first samples
        grid = np.concatenate([np.concatenate(list(r["strip"][:STRIP]), axis=1) for r in t["rows"].values()])
        save_png(grid, img_dir / f"prior-{task}.png").chmod(0o644)
    lines = _report_lines(res, command, img_dir.relative_to(out.parent))
    out.write_text("\n".join(lines) + "\n")
    clean = {
        k: v for k, v in res.items() if k not in ("target", "mask")
    }  # arrays stay in the PNGs, not the JSON
    for t in clean["tasks"].values():
        for row in t["rows"].values():
            row.pop("strip", None)
    out.with_suffix(".json").write_text(json.dumps(clean, indent=1, default=str) + "\n")


def _report_lines(res: dict, command: str, img_rel: Path) -> list[str]:
    return [*_quality_lines(res, command), *_w_lines(res), *_projection_lines(res, img_rel)]


def _quality_lines(res: dict, command: str) -> list[str]:
    """The header and section 1's image-realism table."""
    f, iq = res["facts"], res["image_quality"]
    c = f["config"]
    lines = [
        "# W-space diffusion prior: measurements",
        "",
        f"Produced by `{command}` in {f['seconds']:.0f} s on {f['device']}, {f['date']}.",
        f"Generator `{f['generator']}` (sha256 `{f['generator_sha256'][:12]}`), prior `{f['prior']}` "
        f"(sha256 `{f['prior_sha256'][:12]}`, trained on generator `{str(f['prior_trained_on'])[:12]}`), "
        f"CLIP `{f['clip']}`, perceptual loss: {f['perceptual']}.",
        "Every number below comes from that run; rerun the command after retraining the generator or prior.",
        "(The prior's model card holds the export-time check of the same quantities, drawn from other",
        "random samples and KID subsets, so its figures differ from these by that sampling noise.)",
        "",
        'Seed paper: "Conditioning GANs at Test Time using Denoising Diffusion" (Volkovskyi). Its claims are',
        "qualitative (figures); here each becomes a measured row with a verdict computed from the numbers.",
        "",
        "## 1. Prior quality",
        "",
        "Seed claim: *the FID of W samples from diffusion is comparable to that of the StyleGAN mapping "
        "network* (Table 1 there).",
        "",
        f"Realism of G(w) against {c['real_images']} real images (procedural eval split), on CLIP image "
        f"features, {c['prior_images']} images per row. Noise floor (half the real set vs the other half): "
        f"KID {_f(iq['real_vs_real']['kid'], 4)}, FID {_f(iq['real_vs_real']['fid'])}.",
        "",
        "| latents | KID vs real (± std) | FID vs real | saturation | diversity |",
        "|---|---|---|---|---|",
    ]
    for name, r in iq["rows"].items():
        lines.append(
            f"| {name} | {_f(r['kid'], 4)} ± {_f(r['kid_std'], 4)} | {_f(r['fid'])} | "
            f"{_f(r['saturation'])} | {_f(r['diversity'])} |"
        )
    return lines


def _w_lines(res: dict) -> list[str]:
    """Section 1 continued: the same in W space, denoising, the log-density proxy; section 2's intro."""
    iq, wq, c = res["image_quality"], res["w_quality"], res["facts"]["config"]
    lines: list[str] = []
    lines += [
        f"| real images | - | - | {_f(res['real_saturation'])} | - |",
        "",
        _prior_quality_verdict(iq["rows"]),
        "",
        "The same in W space (prior's normalised coordinates), against "
        f"{wq['n']} mapping samples: a second mapping draw is the noise floor, a Gaussian with the "
        "mapping samples' mean and covariance the baseline a mean/covariance prior would reach.",
        "",
        "| W samples | FD | KID (± std) |",
        "|---|---|---|",
    ]
    for name, r in wq["vs_mapping_samples"].items():
        lines.append(f"| {name} | {_f(r['fd'])} | {_f(r['kid'], 4)} ± {_f(r['kid_std'], 4)} |")
    lines += [
        "",
        "Denoising: mean squared error to the clean normalised w of noised mapping samples "
        "(lower is better).",
        "",
        "| t | noise std | noisy input | best Gaussian denoiser | diffusion prior |",
        "|---|---|---|---|---|",
    ]
    for r in wq["denoising_mse"]:
        lines.append(
            f"| {r['t']} | {r['noise_std']} | {_f(r['noisy_input'], 4)} | {_f(r['gaussian_denoiser'], 4)} | "
            f"{_f(r['diffusion_prior'], 4)} |"
        )
    ld = wq["log_density_proxy_mapping"]
    lines += [
        "",
        f"Log-density proxy (minus the mean denoising error, higher = more typical) of mapping samples: "
        f"1st percentile {_f(ld['p01'])}, median {_f(ld['p50'])}, 99th {_f(ld['p99'])}.",
        "",
        "## 2. Projection: tasks x priors",
        "",
        f"{c['n']} samples (seeds {c['seed']}..{c['seed'] + c['n'] - 1}) per cell, {c['steps']} task steps "
        f"(Adam lr {c['lr']} in W), K = 10 denoising updates per step with noise 5% -> 0% (diffusion), "
        f"penalty weight {c['prior_weight']} (mean, cluster), task-guided: {c['steps']} guided reverse steps "
        f'from noise with guidance scale {c["guidance_scale"]}. CLIP prompt: "{c["prompt"]}". Similarity '
        "target: eval image 0; inpainting: the same image with its centre half (in each side) as the hole.",
        "",
        "Columns: task loss (mean ± std over samples; lower = task better met), realism (KID of the "
        "batch vs real images, lower = more realistic; tiny batches make it noisy), saturation (mean "
        "HSV saturation), diversity (mean pairwise CLIP-embedding cosine distance), log-density proxy.",
        "",
    ]
    return lines


def _projection_lines(res: dict, img_rel: Path) -> list[str]:
    """Section 2: one table and one strip per task."""
    lines: list[str] = []
    ref = res["reference"]
    lines += [
        "Reading the tables: the CLIP that scores the CLIP task also supplies the realism features, so a",
        "latent can lower the task loss adversarially (no visible change) and KID partly shares that blind",
        "spot; the log-density proxy (W space, from the prior) and the strips below are the independent",
        "checks. KID on a batch of a dozen images is noisy (see its std over subsets); ranks between close",
        "rows are not significant. The bundled generator is an early snapshot, so realism is bounded by it.",
        "",
    ]
    for task, t in res["tasks"].items():
        claims = CLAIMS_S if task == STYLE_TASK else CLAIMS
        lines += [f"### {TITLES.get(task, task)}", ""]
        if task == STYLE_TASK:
            lines += _style_intro(res["facts"])
        lines += [
            "| prior | task loss | KID | saturation | diversity | log-density | s | seed's claim "
            "| measured |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for prior, r in t["rows"].items():
            lines.append(
                f"| {prior} | {_f(r['task_loss'])} ± {_f(r['task_loss_std'])} | "
                f"{_f(r['kid'])} ± {_f(r['kid_std'])} | "
                f"{_f(r['saturation'])} | {_f(r['diversity'])} | {_f(r['log_density'])} | "
                f"{r['seconds']:.0f} | {claims.get(prior, '(ablation)')} | {t['verdicts'].get(prior, '')} |"
            )
        lines += [
            f"| *mapping samples, no task* | - | {_f(ref['kid'])} | {_f(ref['saturation'])} | "
            f"{_f(ref['diversity'])} | {_f(ref['log_density'])} | - | | |",
            "",
        ]
        if task == STYLE_TASK and "inpaint" in res["tasks"]:
            lines += _style_vs_w(t["rows"], res["tasks"]["inpaint"]["rows"])
        lines += [
            f"![{task}: one row per prior, in the table's order]({img_rel}/prior-{task}.png)",
            "",
            f"Rows, top to bottom: {' / '.join(t['rows'])} (the first {STRIP} samples of each).",
            "",
        ]
    return lines


def _style_intro(f: dict) -> list[str]:
    """What the Style-space table is (its latent size, its priors)."""
    return [
        "The same inpainting as above, optimising the Style-space latent s (every modulated",
        f"layer's affine output: {f.get('s_dim', '?')} numbers here, against w's {f.get('w_dim', '?')})",
        "with priors in S: the mean and k-means centres of 10k samples' styles, and the Style-space",
        f"diffusion prior `{f.get('s_prior')}` (sha256 `{str(f.get('s_prior_sha256'))[:12]}`: the W",
        "prior's recipe on styles). Its log-density column is the S prior's: not comparable with the",
        "W tables'.",
        "",
    ]


def _style_vs_w(s_rows: dict, w_rows: dict) -> list[str]:
    """The same priors in S and in W, side by side."""
    lines = [
        "The same priors in S and in W (the table above this one), side by side (the mapping row's",
        "log-density is the W prior's):",
        "",
        "| prior | task loss S / W | KID S / W | diversity S / W |",
        "|---|---|---|---|",
    ]
    for prior, r in s_rows.items():
        if prior in w_rows:
            w = w_rows[prior]
            lines.append(
                f"| {prior} | {_f(r['task_loss'])} / {_f(w['task_loss'])} | {_f(r['kid'])} / "
                f"{_f(w['kid'])} | {_f(r['diversity'])} / {_f(w['diversity'])} |"
            )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m core.evals.prior", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/prior.md")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--clip", default=None, help="CLIP for the task and the features (default: bundled)")
    for name, default in EvalConfig().__dict__.items():
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = EvalConfig(**{k: getattr(a, k) for k in EvalConfig().__dict__})
    res = evaluate(cfg, device=a.device, clip_name=a.clip)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    args = sys.argv[1:] if argv is None else argv
    write_report(res, out, command=" ".join(["python -m core.evals.prior", *args]))
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
