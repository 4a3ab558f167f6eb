"""Latent priors for projection (the seed paper "Conditioning GANs at Test Time using Denoising
Diffusion"): none, mean, cluster, and a diffusion model over W.

- :mod:`core.prior.schedule`  continuous-time cosine noise schedule (pure functions)
- :mod:`core.prior.model`     the denoiser MLP, its config and file format
- :mod:`core.prior.samplers`  DDIM / ancestral (ours and diffusers'), predictor-corrector, task guidance
- :mod:`core.prior.priors`    the prior interface (penalty / project), log-density proxy
- :mod:`core.prior.wstats`    W statistics (mean, std, k-means centres) and their file

The projection job is :mod:`core.jobs.projection` (parameters in :mod:`core.jobs.params`, task losses
in :mod:`core.jobs.tasks`), its command ``latent-canvas-cli project`` (:mod:`core.cli.projection`);
the measurements behind docs/prior.md are :mod:`core.evals.prior` and :mod:`core.evals.prior_quality`.

Training: ``python -m core.training.wdiffusion`` (see that module).
"""
