"""Quality measures of the W prior and of projection results.

W space (cheap, in the prior's normalised coordinates): denoising error against the noisy input and
the best Gaussian (linear) denoiser; Frechet distance and KID between mapping samples and prior
samples, with a second mapping set as the noise floor and a fitted Gaussian as the baseline; the
log-density proxy's range on mapping samples.

Images: realism as KID (and FID) on the bundled tiny CLIP's image features (KID, FID and the
features are :mod:`core.evals.metrics`'; W-space KID and FD reuse the same estimators),
saturation (the seed's "colour artefacts"), and diversity as mean pairwise embedding distance.
"""

from __future__ import annotations

import torch

from core.evals.metrics import clip_features, fid, kid, procedural_batches
from core.gan.latents import render as render_latent
from core.gan.latents import sample_styles
from core.prior import schedule
from core.prior.model import WDenoiser
from core.prior.priors import _rows, log_density_proxy
from core.prior.samplers import sample_w
from core.types import LatentSpace

DENOISE_TIMES = (0.05, 0.1, 0.2, 0.3, 0.5)


# --- the W prior ------------------------------------------------------------------------------


@torch.no_grad()
def denoising_errors(model: WDenoiser, x0: torch.Tensor, fit: torch.Tensor, *, seed: int = 0) -> list[dict]:
    """Per-dim MSE to clean ``x0`` [n, dim] (normalised) at each of :data:`DENOISE_TIMES`: of the noisy
    input, of the best Gaussian denoiser (fitted on ``fit``), and of the diffusion prior's x0 estimate."""
    gen = torch.Generator().manual_seed(seed)
    mu, cov = fit.mean(0).double(), torch.cov(fit.double().T)
    eye = torch.eye(cov.shape[0], dtype=torch.float64)
    rows = []
    for t in DENOISE_TIMES:
        ab = float(schedule.alpha_bar(t))
        eps = torch.randn(x0.shape, generator=gen)
        tv = torch.full((x0.shape[0],), t)
        x_t = schedule.add_noise(x0, eps, tv)
        # E[x0 | x_t] for x0 ~ N(mu, cov): mu + cov sqrt(ab) (ab cov + (1 - ab) I)^-1 (x_t - sqrt(ab) mu)
        gain = ab**0.5 * cov @ torch.linalg.inv(ab * cov + (1 - ab) * eye)
        gauss = mu + (x_t.double() - ab**0.5 * mu) @ gain.T
        pred = schedule.predict_x0(model(x_t, tv), t, x_t)
        rows.append(
            {
                "t": t,
                "noise_std": round((1 - ab) ** 0.5, 4),
                "noisy_input": float((x_t - x0).square().mean()),
                "gaussian_denoiser": float((gauss.float() - x0).square().mean()),
                "diffusion_prior": float((pred - x0).square().mean()),
            }
        )
    return rows


@torch.no_grad()
def w_quality(G, model: WDenoiser, *, n: int = 2048, seed: int = 12345, steps: int = 50) -> dict:
    """The W-space numbers of a model card (see the module docstring); seeded, CPU-friendly."""
    w_a, w_b, w_fit = (mapping_latents(G, model, n, seed + i).float().cpu() for i in range(3))
    x_a, x_b, x_fit = (model.normalize(_rows(model, w)) for w in (w_a, w_b, w_fit))
    cov = torch.cov(x_fit.double().T)
    if torch.linalg.cholesky_ex(cov).info:  # singular: Style-space styles of w span only w_dim directions
        cov = cov + 1e-4 * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype)
    gauss = torch.distributions.MultivariateNormal(x_fit.mean(0).double(), cov)
    x_gauss = gauss.sample((n,)).float()
    sets = {"mapping (second draw)": x_b, "gaussian fit": x_gauss}
    for sampler in ("ddim", "ancestral", "pc"):
        w = sample_w(model, n, sampler=sampler, steps=steps, seed=seed + 10)
        sets[f"diffusion {sampler} ({steps} steps)"] = model.normalize(_rows(model, w))
    dist = {}
    for name, x in sets.items():
        k_mean, k_std = kid(x_a, x, seed=seed)
        dist[name] = {
            "fd": round(fid(x_a, x), 4),
            "kid": round(k_mean, 5),
            "kid_std": round(k_std, 5),
        }
    ld = log_density_proxy(model, w_a)
    q = torch.quantile(ld, torch.tensor([0.01, 0.5, 0.99]))
    return {
        "n": n,
        "seed": seed,
        "denoising_mse": denoising_errors(model, x_a, x_fit, seed=seed),
        "vs_mapping_samples": dist,
        "log_density_proxy_mapping": {"p01": float(q[0]), "p50": float(q[1]), "p99": float(q[2])},
    }


# --- images -----------------------------------------------------------------------------------


def saturation(images: torch.Tensor) -> torch.Tensor:
    """Mean HSV saturation per image [N] of ``images`` [N, 3, H, W] in [-1, 1]: (max - min) / max of RGB."""
    x = (images.clamp(-1, 1) + 1) / 2
    hi, lo = x.max(1).values, x.min(1).values
    return ((hi - lo) / hi.clamp_min(1e-6)).flatten(1).mean(1)


def pairwise_distance(emb: torch.Tensor) -> float:
    """Mean pairwise cosine distance of embeddings [N, D] (N >= 2): the diversity of a batch."""
    n = emb.shape[0]
    if n < 2:
        return float("nan")
    emb = torch.nn.functional.normalize(emb.double(), dim=1)
    sim = emb @ emb.T
    return float((1 - sim).sum() / (n * (n - 1)))


@torch.no_grad()
def mapping_latents(G, model: WDenoiser, n: int, seed: int, *, batch: int = 1000) -> torch.Tensor:
    """``n`` seeded mapping samples in the prior's space: w [n, w_dim], or their styles [n, s_dim]."""
    return sample_styles(G, n, seed=seed, batch=batch) if model.cfg.space == "s" else G.sample_w(n, seed=seed)


@torch.no_grad()
def render(G, w: torch.Tensor, *, batch: int = 64, space: str = "w") -> torch.Tensor:
    """Images [N, 3, H, W] in [-1, 1] of latents ``w`` [N, w_dim] or [N, num_ws, w_dim] (or styles
    [N, s_dim] with ``space="s"``), in batches."""
    kind = LatentSpace.S if space == "s" else LatentSpace.W if w.ndim == 2 else LatentSpace.W_PLUS
    return torch.cat([render_latent(G, kind, part) for part in w.split(batch)])


def real_images(n: int, resolution: int) -> torch.Tensor:
    """``n`` procedural eval-split images [n, 3, R, R] in [-1, 1] (never seen in training)."""
    return torch.cat(list(procedural_batches(n, split="eval", resolution=resolution)))


@torch.no_grad()
def image_quality(
    G,
    model: WDenoiser,
    *,
    n: int = 500,
    seed: int = 12345,
    steps: int = 50,
    clip=None,
    ref_feats: torch.Tensor | None = None,
) -> dict:
    """Realism of G(w) for w from the mapping network vs the prior's samplers: KID / FID on CLIP image
    features against real images (``ref_feats``, default ``n`` procedural eval-split images), plus
    saturation and diversity. The seed's Table 1 in our terms."""
    if clip is None:
        from core.clip import load_clip

        clip = load_clip()
    if ref_feats is None:
        ref_feats = clip_features(clip, procedural_batches(n, split="eval", resolution=G.resolution))
    latents = {"mapping network": mapping_latents(G, model, n, seed)}
    for sampler in ("ddim", "ancestral", "pc"):
        name = f"diffusion {sampler} ({steps} steps)"
        latents[name] = sample_w(model, n, sampler=sampler, steps=steps, seed=seed + 10)
    rows = {}
    for name, w in latents.items():
        images = render(G, w, space=model.cfg.space)
        feats = clip_features(clip, images.split(100))
        k_mean, k_std = kid(ref_feats, feats, subset_size=max(2, min(1000, n) // 2), seed=seed)
        rows[name] = {
            "kid": round(k_mean, 5),
            "kid_std": round(k_std, 5),
            "fid": round(fid(ref_feats, feats), 4),
            "saturation": round(float(saturation(images).mean()), 4),
            "diversity": round(pairwise_distance(feats), 4),
        }
    return {"n": n, "seed": seed, "clip": getattr(clip, "name", "?"), "reference": "real", "rows": rows}
