"""Every job's parameters (inversion, projection, SDEdit) as frozen dataclasses. numpy only, no torch:
the GUI builds these on its own thread."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import JobError
from core.types import DENOISE_SOLVERS, LatentSpace

# The defaults each inversion job starts from, shared by the Invert tab, the CLI and the docs. Plain
# inversion wants fidelity (w+); scribbles and holes want results on the image manifold, chosen from the
# settings table in docs/models.md (python -m core.evals scribble-sweep).
_SEED_WEIGHTS = dict(l1_weight=10.0, perceptual_weight=0.01)  # the seed write-up's L1 and perceptual weights
MODE_DEFAULTS: dict[str, dict] = {
    "invert": dict(space="w+", init="mean", starts=0, spread_weight=0.0, **_SEED_WEIGHTS),
    # The sweep's pick (docs/models.md): 16 random starts, the best kept, the w+ layers held together.
    "scribble": dict(space="w+", init="random", starts=16, spread_weight=1.0, **_SEED_WEIGHTS),
    "inpaint": dict(space="w+", init="mean", starts=0, spread_weight=0.0, **_SEED_WEIGHTS),
}


INVERT_INITS = ("mean", "random", "latent", "encoder")


# Where the loaded generator has an encoder (core.encoder), each mode starts from it instead; measured in
# docs/encoders.md and the sweep in docs/models.md. Scribbles: the sweep's row "encoder: w, spread 1.0,
# 20 steps, lr 0.01" (the encoder's answer first, the other candidates spread 1 W-std around it, then 20
# small steps in W) gave KID 0.52 where the multi-start default without an encoder gives 1.75 (samples:
# 0.12) and diversity 0.27 (more than half the samples' 0.48), 2 s a job; it follows the paint less
# closely (error 0.12 / 0.16 against 0.014 / 0.058): the candidates keep the painted colours as regions
# of a cat rather than reproducing every stroke, and the spread ones may stray from sparse paint
# (docs/images/scribble-settings.png). Spread 0.7 gave KID 0.59 and diversity 0.16; 50 steps at lr 0.05
# turned back into blobs. With the encoder fine-tuned (2026-12-04) its answers vary less: spread 1.0
# gave KID 0.47 but diversity 0.22 (under half the samples'), spread 1.3 KID 0.56 and diversity 0.31.
# On the 277 kimg generator (2026-12-04, samples KID 0.02, diversity 0.48): spread 1.3 KID 0.35 and
# diversity 0.34, spread 1.0 KID 0.29 and diversity 0.25 (just half the samples'); the KIDs of 32
# results differ by less than their spread (0.11), so 1.3 stays, with its margin on diversity.
# With the encoder fine-tuned 50 more minutes (2026-12-04, third session): spread 1.3 KID 0.24,
# diversity 0.34, paint 0.115 / 0.159; spread 1.0 KID 0.27 but diversity 0.24 (under half the
# samples'); "search 256" rows (iGAN's pick of the best random starts) KID 0.27-0.47, diversity
# 0.14-0.21. G's own samples matched to the paint (best 4 of 1024) have KID 0.21 and paint error
# 0.114 / 0.134: the default is within 1.5x of that fair reference. 1.3 stays.
# The encoder's answer after its 3 ReStyle refinements (2026-12-04, fifth session; sweep rows "refine 3"):
# with the same 20 steps in w, paint 0.112 / 0.157 and KID 0.25, level with the default; with no steps
# (w or w+) KID 0.07-0.17 but paint 0.144-0.156 / 0.18-0.19: the candidates leave the painted colours
# (the sheet, looked at, shows blue and purple backgrounds under pink paint). The default stays.
ENCODER_DEFAULTS: dict[str, dict] = {
    # Reconstruction refines the encoder's answer in Style space (its w+ as styles); first at lr 0.05:
    # on the 8 held-out cats of docs/encoders.md it reached 25.04 dB after 50 steps, the 500-step w+
    # quality from the mean (25.96) after 101 steps (10.6 s against 43.8 s), and 27.63 after 500, where
    # the encoder + 500 steps in w+ gave 26.54 (2026-12-04, third session). Style-space results join
    # interpolation paths too (core.jobs.interpolate.ends_in_space).
    # Then (2026-12-04, fourth session) lr 0.2 rising from 0.04 over the first 30 steps (lr_rampup):
    # Adam's first updates move every style by about the lr at once, and large ones throw the good start
    # off. On eval cats 200..207 (not the card's) after 50 steps: constant 0.2 26.71 dB, 0.1 26.72,
    # 0.3 26.31; ramped 0.05 -> 0.3 over 25 / 40 / 60 steps 27.02 / 27.14 / 27.02; lr 0.2 ramped over 30
    # steps 27.12, and 28.71 after 500 steps; a cosine decay from 0.4 instead: 24.89.
    # The start: the encoder's answer after 3 ReStyle refinements (its refiner, 146 kimg on top of the
    # frozen first pass): on eval cats 200..207 the start rose 22.69 -> 23.04 / 23.23 / 23.35 dB after
    # 1 / 2 / 3 refinements, 25.58 -> 25.83 after 20 steps, and was level with the one pass after 50
    # (27.09 / 27.11); each refinement costs one synthesis and one encoder pass (~10 ms at batch 1).
    # Measured on the card's cats 100..107 (docs/encoders.md): 25.87 dB after 50 steps (lr 0.2 without
    # the ramp-up or the refinements: 25.59), the 500-step w+ quality after 54 steps (8.5x sooner than
    # from the mean), 28.01 after 500. With the refiner trained on (2026-12-04, fifth session: +103 kimg
    # on an H200, +95 kimg here; 3 refinements 21.92 -> 22.24 dB): 25.99 after 50 steps, the 500-step
    # w+ quality after 50 steps (10.5x sooner; bench 10.2x), 28.04 after 500.
    "invert": dict(init="encoder", space="s", lr=0.2, lr_rampup=30, encoder_refine=3),
    "scribble": dict(
        init="encoder", space="w", encoder_jitter=1.3, steps=20, lr=0.01, starts=0, spread_weight=0.0
    ),
    # Inpainting: the candidates spread around the encoder's answer, or all four come out the same;
    # the sweep's "encoder: w+, spread 0.7, 200 steps" kept every pixel outside the hole (148 dB) at the
    # same fill KID (-0.146) as spread 0, with candidates that differ (inpaint diversity 0.012 vs 0).
    "inpaint": dict(init="encoder", encoder_jitter=0.7),
}


def mode_defaults(mode: str, *, has_encoder: bool = False, spaces=None, space=None) -> dict:
    """The settings a job of ``mode`` ("invert", "scribble", "inpaint") starts from. ``spaces``: the
    generator's latent spaces, where known; ``space``: the one the person chose, if any. An encoder
    default in a space the generator lacks (Style space on a StyleGAN3) or the person did not choose
    falls back to the mode's own space and optimiser settings (the encoder's were measured in the space
    they name), keeping the encoder's start; a chosen space is kept."""
    encoder = ENCODER_DEFAULTS[mode] if has_encoder else {}
    d = {**MODE_DEFAULTS[mode], **encoder}
    space = None if space is None else str(getattr(space, "value", space))
    chosen = space is not None and space != d["space"]
    if chosen or (spaces is not None and d["space"] not in {str(getattr(s, "value", s)) for s in spaces}):
        start = {k: v for k, v in encoder.items() if k == "init" or k.startswith("encoder_")}
        d = {**MODE_DEFAULTS[mode], **start}
    return {**d, "space": space} if chosen else d


@dataclass(frozen=True)
class InvertParams:
    target: np.ndarray  # [H, W, 3] uint8 RGB, or [N, H, W, 3]: one per sample; resized to the model's size
    mask: np.ndarray | None = None  # [H, W] (or [N, H, W]) float in [0, 1]; loss only where > 0; None = all
    space: LatentSpace = LatentSpace.W_PLUS
    init: str = "mean"  # "mean" | "random" | "latent" (warm start from init_latent) | "encoder"
    # "encoder": the start is the generator's encoder's answer for (target, mask) in one pass
    # (core.encoder); samples after the first start there plus encoder_jitter x W-std Gaussian noise.
    init_latent: np.ndarray | None = None  # latent in `space`'s shape, for init="latent"
    encoder_jitter: float = 0.0  # init="encoder" with num_samples > 1: spread of the other starts
    # init="encoder": ReStyle iterations after the first pass (each renders the current answer and lets
    # the encoder's refiner correct it); at most as many as the encoder has (one without a refiner: none).
    encoder_refine: int = 0
    l1_weight: float = 10.0  # seed: L1 weight 10
    perceptual_weight: float = 0.01  # seed: 0.01 on conv_5 features; 0 disables
    # Images larger than this are area-downsampled to it before the perceptual loss (target, result
    # and mask), as NVlabs' projector does at 256 (VGG was built for 224 px): at 1024 px it is most
    # of the step's cost otherwise. 0: the loss sees the full size.
    perceptual_size: int = 256
    # Arithmetic of the generator and perceptual passes: "fp32", or "bf16" (autocast; the latent, the
    # optimiser and the loss sums stay fp32). bf16 pays on large models on hardware with native bf16
    # kernels (AVX512-BF16 / AMX CPUs, GPUs); docs/performance.md has the projector rows.
    precision: str = "fp32"
    l2_delta_weight: float = 0.0  # L2 on latent - initial latent
    # Staying on the image manifold (see core.jobs.invert): spread of the w+ layers around their
    # mean, and a W log-density proxy (squared W-normalised distance from the mean w), both /w_dim.
    spread_weight: float = 0.0
    w_prior_weight: float = 0.0
    # iGAN-style multi-start: `starts` random starts optimised together for `start_steps` steps, then
    # the best `num_samples` (task loss + realism_weight x the W proxy) continue. 0: off.
    # start_steps 0 is iGAN's search: the best starts are picked before any step (then `steps` may
    # be 0 too: the generator's own samples that best match the target).
    starts: int = 0
    start_steps: int = 20
    realism_weight: float = 1.0
    truncation: float = 1.0  # psi for random starts: w = mean + psi (w - mean); 1 = none
    class_label: int | None = None  # conditional generators: the class of the mapping (None: 0)
    optimizer: str = "adam"  # "adam" | "lbfgs"
    steps: int = 500  # 0: no optimisation, the start as it is (an encoder's one-pass answer)
    lr: float = 0.05  # Adam step size; L-BFGS uses its own line search with lr 1
    lr_rampup: int = 0  # Adam: the lr rises from lr / 5 to lr over this many steps (0: constant)
    seed: int = 0  # random init and any sampling
    num_samples: int = 1  # latents optimised together (a batch), each from its own init
    preview_every: int = 10  # yield a preview image every k steps (and at the last step)
    # Inpainting: the result keeps the target's pixels where the mask is 1 (feathered into the hole),
    # as inpainting tools do, so only the hole changes. Needs a mask.
    paste_back: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "lbfgs"):
            raise JobError(f"optimizer must be 'adam' or 'lbfgs', got {self.optimizer!r}")
        if self.init not in INVERT_INITS:
            raise JobError(f"init must be one of {', '.join(INVERT_INITS)}; got {self.init!r}")
        if self.init == "latent" and self.init_latent is None:
            raise JobError("init='latent' needs init_latent")
        if self.steps < 0 or self.num_samples < 1 or self.preview_every < 1:
            raise JobError("steps must be >= 0, num_samples and preview_every >= 1")
        if self.init == "encoder" and LatentSpace(self.space) is LatentSpace.Z:
            raise JobError("an encoder gives w and w+ starts: pick the w or w+ space (or another init)")
        if self.encoder_jitter < 0:
            raise JobError(f"encoder_jitter must be >= 0, got {self.encoder_jitter}")
        if self.lr_rampup < 0:
            raise JobError(f"lr_rampup must be >= 0 (0: a constant lr), got {self.lr_rampup}")
        if self.encoder_refine < 0:
            raise JobError(f"encoder_refine must be >= 0, got {self.encoder_refine}")
        if self.precision not in ("fp32", "bf16"):
            raise JobError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.perceptual_size < 0:
            raise JobError(f"perceptual_size must be >= 0 (0: full size), got {self.perceptual_size}")
        if self.starts:
            if self.starts < self.num_samples:
                raise JobError(f"starts ({self.starts}) must be at least num_samples ({self.num_samples})")
            if self.init == "latent" or self.start_steps < 0 or (self.start_steps and self.steps < 1):
                raise JobError(
                    "multi-start needs random, mean or encoder init, start_steps >= 0, and steps >= 1 "
                    "unless start_steps is 0"
                )
            if self.target.ndim == 4 or (self.mask is not None and self.mask.ndim == 3):
                raise JobError("multi-start takes one target (and mask) shared by every start")
        if self.paste_back and self.mask is None:
            raise JobError("paste_back needs a mask (1 = keep the target's pixels)")
        if min(self.spread_weight, self.w_prior_weight, self.realism_weight) < 0:
            raise JobError("spread, W prior and realism weights must be >= 0")
        if not 0 <= self.truncation <= 1:
            raise JobError(f"truncation psi must be in [0, 1], got {self.truncation}")
        for name, a, single in (("target", self.target, 3), ("mask", self.mask, 2)):
            if a is not None and a.ndim == single + 1 and a.shape[0] != self.num_samples:
                raise JobError(f"a batch of {a.shape[0]} {name}s needs num_samples={a.shape[0]}")
        object.__setattr__(self, "space", LatentSpace(self.space))


# --- projection with a latent prior (core.jobs.projection) -------------------------------------

TASKS = ("clip", "inpaint", "similarity", "scribble")
PRIORS = ("none", "mean", "cluster", "diffusion", "task-guided")
INITS = ("mapping", "mean", "latent")


@dataclass(frozen=True)
class ProjectionParams:
    """Every input of one projection run (seed paper: "Diffusion-augmented Projection Algorithm").

    Tasks: "clip" (cosine distance of CLIP image and text embeddings), "inpaint" (masked LPIPS to the
    target; ``mask`` = 1 where the target must match, 0 in the hole), "similarity" (LPIPS to the
    target everywhere) and "scribble" (masked L1 + LPIPS where ``mask`` marks paint).

    Priors: "none", "mean", "cluster" (penalties), "diffusion" (alternating task step / K denoising
    steps) and "task-guided" (reverse diffusion from noise, every step guided by the task gradient).
    """

    task: str = "clip"
    prompt: str = ""  # clip: the text to match
    target: np.ndarray | None = None  # [H, W, 3] uint8 RGB; image tasks; resized to the model resolution
    mask: np.ndarray | None = None  # [H, W] float in [0, 1], 1 = match the target; inpaint and scribble
    prior: str = "diffusion"  # see PRIORS
    space: LatentSpace = LatentSpace.W  # the latent: w [N, w_dim], w+ [N, num_ws, w_dim], s [N, s_dim]
    steps: int = 50  # task steps (task-guided: reverse diffusion steps from t = 1 to 0)
    lr: float = 0.02  # Adam step size on the latent, in W units
    prior_weight: float = 1.0  # weight of the mean / cluster penalty (mean squared W distance)
    denoise_steps: int = 10  # K: diffusion updates after each task step (seed: 10)
    noise_start: float = 0.05  # diffusion time each group of K updates starts at (seed: 5%)
    noise_end: float = 0.0  # ... and ends at (seed: 0%)
    denoise_eta: float = 0.0  # 0: deterministic DDIM updates; 1: ancestral (fresh noise each update)
    denoise_solver: str = "auto"  # the K updates one by one ("sequential"), by Picard sweeps, or "auto"
    guidance_scale: float = 3.0  # task-guided: size of the task-gradient step in the noise prediction
    guidance: str = "x0"  # task-guided: "x0" (gradient on the clean estimate) or "xt" (through the denoiser)
    guided_eta: float = 1.0  # task-guided: 1 = ancestral reverse steps, 0 = DDIM
    l1_weight: float = 1.0  # scribble: weight of the masked L1 term
    perceptual_weight: float = 1.0  # inpaint, similarity, scribble: weight of the (masked) LPIPS term
    init: str = "mapping"  # "mapping" (seeded mapping samples), "mean" (mean w), "latent" (init_latent)
    init_latent: np.ndarray | None = None  # in `space`'s shape, for init="latent"
    truncation: float = 1.0  # psi for the "mapping" init: w = mean + psi (w - mean); 1 = none
    class_label: int | None = None  # conditional generators: the class of the mapping (None: 0)
    num_samples: int = 4  # latents optimised together, each from its own seed draw
    seed: int = 0  # initial latents, noise of the diffusion updates
    preview_every: int = 5  # yield a preview image every k steps (and at the last step)
    # inpaint: show the target's own pixels where the mask is 1 (the generated hole blended in), as the
    # invert job's inpainting does; False shows G's whole image (what the task loss sees)
    paste_back: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "space", LatentSpace(self.space))
        for name, value, allowed in (("task", self.task, TASKS), ("prior", self.prior, PRIORS)):
            if value not in allowed:
                raise JobError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.denoise_solver not in DENOISE_SOLVERS:
            raise JobError(
                f"denoise_solver must be one of {', '.join(DENOISE_SOLVERS)}; got {self.denoise_solver!r}"
            )
        if self.guidance not in ("x0", "xt"):
            raise JobError(f"guidance must be 'x0' or 'xt'; got {self.guidance!r}")
        if self.init not in INITS:
            raise JobError(f"init must be one of {', '.join(INITS)}; got {self.init!r}")
        if self.space is LatentSpace.Z:
            raise JobError("projection works in w, w+ or s (where the priors live), not z")
        if self.task == "clip" and not self.prompt.strip():
            raise JobError("the CLIP task needs a text prompt")
        if self.task != "clip" and self.target is None:
            raise JobError(f"the {self.task} task needs a target image")
        if self.task in ("inpaint", "scribble") and self.mask is None:
            raise JobError(f"the {self.task} task needs a mask (1 = match the target)")
        if self.init == "latent" and self.init_latent is None:
            raise JobError("init='latent' needs init_latent")
        if not 0 <= self.truncation <= 1:
            raise JobError(f"truncation psi must be in [0, 1], got {self.truncation}")
        if min(self.steps, self.num_samples, self.preview_every, self.denoise_steps) < 1:
            raise JobError("steps, num_samples, preview_every and denoise_steps must be >= 1")
        if not 0 <= self.noise_end < self.noise_start <= 1:
            raise JobError("need 0 <= noise_end < noise_start <= 1")


# --- SDEdit (core.jobs.sdedit) -----------------------------------------------------------------

SAMPLERS = ("ddpm", "ddim")
PREVIEWS = ("fast", "full", "none")


@dataclass(frozen=True)
class SDEditParams:
    """Every input of one SDEdit run (Meng et al. 2022): noise the guide to level N, then denoise.

    ``strength`` is N / T (T = the model's training timesteps, 1000 for Stable Diffusion); give
    ``start_step`` = N instead to set N directly. ``steps`` S spans the whole schedule, so
    int(S * strength) steps run (the img2img convention): S = 1000 with DDPM is the seed write-up's
    full ancestral sampler, N = 500 of 1000 runs 500 steps.
    """

    guide: np.ndarray  # [H, W, 3] uint8 RGB; resized to `size`
    prompt: str = ""
    negative_prompt: str = ""  # the unconditional branch of classifier-free guidance
    mask: np.ndarray | None = None  # [H, W] float in [0, 1]; 1 = regenerate here; None = everywhere
    strength: float = 0.6  # N / T in (0, 1]; ignored when start_step is given
    start_step: int | None = None  # N of T (seed: 500, 600, 700 of 1000)
    guidance_scale: float = 7.5  # classifier-free guidance; <= 1 = the conditional prediction only
    sampler: str = "ddim"  # "ddpm" (ancestral, Ho et al. 2020) | "ddim" (eta = 0, Song et al. 2021)
    steps: int = 50  # S over the full schedule; int(S * strength) of them run (see steps_from_n)
    steps_from_n: bool = False  # the seed's S instead: S steps run from N (a stride of N / S)
    seed: int = 0  # the noise added to the guide and DDPM's per-step noise
    num_samples: int = 1  # images made together from this guide, each from its own noise
    size: tuple[int, int] | None = None  # output (width, height); None = the native area in the guide aspect
    mask_feather: float = 4.0  # Gaussian sigma of the mask edge, in output pixels
    paste_back: bool = True  # composite the guide over the unmasked region of the decoded result
    preview: str = "fast"  # "fast" (tiny decoder or linear latent->RGB), "full" (VAE decode), "none"
    preview_every: int = 1  # a preview every k steps (and at the last)
    preview_interval_s: float = 0.0  # and at most one per this many seconds (the app: its repaint rate)

    def __post_init__(self) -> None:
        g = self.guide
        if not isinstance(g, np.ndarray) or g.ndim != 3 or g.shape[2] != 3 or g.dtype != np.uint8:
            raise JobError("guide must be an [H, W, 3] uint8 RGB array")
        if self.mask is not None and (self.mask.ndim != 2 or self.mask.shape != g.shape[:2]):
            raise JobError(f"mask must be [H, W] = {list(g.shape[:2])}, got {list(self.mask.shape)}")
        if self.start_step is None and not 0 < self.strength <= 1:
            raise JobError(f"strength must be in (0, 1], got {self.strength}")
        if self.start_step is not None and self.start_step < 1:
            raise JobError(f"start_step must be >= 1, got {self.start_step}")
        if self.sampler not in SAMPLERS:
            raise JobError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.preview not in PREVIEWS:
            raise JobError(f"preview must be one of {PREVIEWS}, got {self.preview!r}")
        if self.steps < 1 or self.preview_every < 1 or self.num_samples < 1:
            raise JobError("steps, preview_every and num_samples must be >= 1")
        if not self.preview_interval_s >= 0:
            raise JobError(f"preview_interval_s must be >= 0, got {self.preview_interval_s}")
        if self.guidance_scale < 0 or self.mask_feather < 0:
            raise JobError("guidance_scale and mask_feather must be >= 0")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 8):
            raise JobError(f"size must be (width, height) of at least 8 px, got {self.size}")

    def schedule_steps(self, num_train_timesteps: int) -> int:
        """The sampler schedule's length over all T steps: ``steps``, or with ``steps_from_n`` the
        length whose last int(length x strength) steps are ``steps`` steps from N."""
        if not self.steps_from_n:
            return self.steps
        strength = self.strength_for(num_train_timesteps)
        total = max(self.steps, round(self.steps / strength))
        while int(total * strength) < self.steps:  # float rounding: never run fewer than asked
            total += 1
        return min(total, num_train_timesteps)

    def strength_for(self, num_train_timesteps: int) -> float:
        """N / T, with N from ``start_step`` when given."""
        if self.start_step is None:
            return self.strength
        if self.start_step > num_train_timesteps:
            raise JobError(f"start_step {self.start_step} is beyond the model's {num_train_timesteps} steps")
        return self.start_step / num_train_timesteps
