"""``latent-canvas-cli project``: projection with a latent prior, headless.

latent-canvas-cli project --task clip --prompt "an orange cat" --prior diffusion --samples 4 --out DIR
latent-canvas-cli project --task inpaint --image cat.png --mask hole.png --hole --prior diffusion --out DIR
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, fields
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from core.jobs.params import DENOISE_SOLVERS, INITS, PRIORS, TASKS, ProjectionParams
from core.paths import bundled_prior
from core.types import LatentSpace

log = logging.getLogger("latent_canvas.cli")


def add_parser(sub) -> None:
    """Register the ``project`` subcommand on ``latent-canvas-cli``'s subparsers."""
    d = SimpleNamespace(**{f.name: f.default for f in fields(ProjectionParams)})
    pr = sub.add_parser(
        "project", help="projection with a prior: CLIP text, inpainting, similarity, scribble"
    )
    pr.add_argument("--task", choices=TASKS, required=True)
    pr.add_argument("--prompt", default="", help="clip: the text to match")
    pr.add_argument("--image", help="target image (inpaint, similarity, scribble)")
    pr.add_argument("--mask", help="mask image: white/opaque = match the target")
    pr.add_argument("--hole", action="store_true", help="the mask marks the hole to fill instead")
    pr.add_argument("--scribble", action="store_true", help="image is an RGBA scribble; alpha = mask")
    pr.add_argument("--prior", choices=PRIORS, default=d.prior)
    pr.add_argument(
        "--space",
        choices=["w", "w+", "s"],
        default=LatentSpace(d.space).value,
        help="s: Style space (StyleGAN2)",
    )
    pr.add_argument("--samples", type=int, default=d.num_samples, help="latents optimised together")
    pr.add_argument("--steps", type=int, default=d.steps, help="task steps (task-guided: reverse steps)")
    pr.add_argument("--lr", type=float, default=d.lr)
    pr.add_argument("--prior-weight", type=float, default=d.prior_weight, help="mean / cluster penalty")
    pr.add_argument("--denoise-steps", type=int, default=d.denoise_steps, help="K per task step")
    pr.add_argument("--noise-start", type=float, default=d.noise_start)
    pr.add_argument("--noise-end", type=float, default=d.noise_end)
    pr.add_argument("--eta", type=float, default=d.denoise_eta, help="0 DDIM, 1 ancestral updates")
    pr.add_argument(
        "--denoise-solver",
        choices=DENOISE_SOLVERS,
        default=d.denoise_solver,
        help="the K updates one by one, all at once by Picard sweeps (settled within 1e-3 of a std), or auto",
    )
    pr.add_argument("--guidance-scale", type=float, default=d.guidance_scale, help="task-guided step size")
    pr.add_argument("--guidance", choices=["x0", "xt"], default=d.guidance, help="task-guided gradient form")
    pr.add_argument("--init", choices=[i for i in INITS if i != "latent"], default=d.init)
    pr.add_argument(
        "--truncation", type=float, default=d.truncation, help="psi for the mapping init (1: none)"
    )
    pr.add_argument("--class", dest="class_label", type=int, help="conditional generators: the class label")
    pr.add_argument("--l1", type=float, default=d.l1_weight, help="scribble: masked L1 weight")
    pr.add_argument("--perceptual-weight", type=float, default=d.perceptual_weight)
    pr.add_argument("--perceptual", default="auto", help="auto, lpips-vgg, lpips-alex, bundled, none")
    pr.add_argument("--clip", default=None, help="CLIP name (default: the bundled tiny CLIP)")
    pr.add_argument("--clip-weights", help="weights file for --clip")
    pr.add_argument("--seed", type=int, default=d.seed)
    pr.add_argument("--model", help="generator file (.safetensors or StyleGAN2-ADA .pkl)")
    pr.add_argument("--prior-model", help="diffusion prior (default: the bundled one of --space)")
    pr.add_argument("--out", required=True)
    pr.set_defaults(func=cmd_project)


def _target_and_mask(a: argparse.Namespace) -> tuple[np.ndarray | None, np.ndarray | None]:
    from core.cli.common import read_target

    return (None, None) if a.image is None else read_target(a)


def _resources(a: argparse.Namespace, G, model_path: Path):
    """(prior model or None, W statistics or None) for the chosen prior."""
    from core.cli.common import held
    from core.prior.model import load_wdiffusion
    from core.prior.wstats import load_wstats, wstats_path_for

    model = None
    if a.prior in ("diffusion", "task-guided") or a.prior_model:
        path = Path(a.prior_model) if a.prior_model else bundled_prior(a.space)
        model = held(("prior", str(path), a.device), lambda: load_wdiffusion(path, device=a.device))
    stats_path = wstats_path_for(model_path)
    wstats = load_wstats(stats_path) if a.prior in ("mean", "cluster") and stats_path.is_file() else None
    return model, wstats


def projection_params(a: argparse.Namespace, target, mask) -> ProjectionParams:
    return ProjectionParams(
        task=a.task,
        prompt=a.prompt,
        target=target,
        mask=mask,
        prior=a.prior,
        space=LatentSpace(a.space),
        steps=a.steps,
        lr=a.lr,
        prior_weight=a.prior_weight,
        denoise_steps=a.denoise_steps,
        noise_start=a.noise_start,
        noise_end=a.noise_end,
        denoise_eta=a.eta,
        denoise_solver=a.denoise_solver,
        guidance_scale=a.guidance_scale,
        guidance=a.guidance,
        l1_weight=a.l1,
        perceptual_weight=a.perceptual_weight,
        init=a.init,
        truncation=a.truncation,
        class_label=a.class_label,
        num_samples=a.samples,
        seed=a.seed,
        preview_every=max(1, a.steps // 10),
    )


def cmd_project(a: argparse.Namespace) -> int:
    from core.cli.common import held, load_generator_arg, progress_bar, save_run
    from core.jobs.projection import project
    from core.jobs.runner import run_to_completion
    from core.losses import resolve_perceptual

    G, model_path = load_generator_arg(a.model, a.device)
    target, mask = _target_and_mask(a)
    params = projection_params(a, target, mask)
    clip = None
    if a.task == "clip":
        from core.clip import load_clip

        clip = held(
            ("clip", a.clip, a.clip_weights, a.device),
            lambda: load_clip(a.clip, device=a.device, weights=a.clip_weights),
        )
    perc, perc_kind = (
        (None, "none")
        if a.task == "clip"
        else held(
            ("perceptual", a.perceptual, a.perceptual_weight > 0, a.device),
            lambda: resolve_perceptual(a.perceptual, a.perceptual_weight, a.device),
        )
    )
    prior_model, wstats = _resources(a, G, model_path)
    started = time.perf_counter()
    job = project(params, G, clip=clip, perceptual_loss=perc, prior_model=prior_model, wstats=wstats)
    result = run_to_completion(
        job, lambda ev: progress_bar(ev.step, ev.total, f"task {ev.losses['task']:.4f}", started)
    )
    elapsed = time.perf_counter() - started
    out = Path(a.out)
    run_info = {
        "command": "project",
        "model": str(model_path),
        "prior_model": str(a.prior_model or bundled_prior(a.space)) if prior_model is not None else None,
        "clip": getattr(clip, "name", None),
        "perceptual": perc_kind,
        "seconds": round(elapsed, 3),
        "params": {k: v for k, v in asdict(params).items() if k not in ("target", "mask", "init_latent")},
        "task_loss": result.task_loss.tolist(),
        "log_density_proxy": None if result.log_density is None else result.log_density.tolist(),
        "loss_history": result.loss_history,
    }
    save_run(out, run_info, result, target=target, model_path=model_path, indexed=True, strip=True)
    loss = float(result.task_loss.mean())
    print(f"wrote {len(result.images)} samples to {out} in {elapsed:.1f}s; task loss {loss:.4f}")
    return 0
