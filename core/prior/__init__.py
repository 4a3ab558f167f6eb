"""Latent priors for projection (the seed paper "Conditioning GANs at Test Time using Denoising
Diffusion"): none, mean, cluster, and a diffusion model over W.

- :mod:`core.prior.schedule`  continuous-time cosine noise schedule (pure functions)
- :mod:`core.prior.model`     the denoiser MLP, its config and file format
- :mod:`core.prior.samplers`  DDIM / ancestral (ours and diffusers'), predictor-corrector, task guidance
- :mod:`core.prior.priors`    the prior interface (penalty / project), W statistics, log-density proxy
- :mod:`core.jobs.params`    the projection job's parameters (torch-free); the job is
  :mod:`core.jobs.projection`, the CLI ``latent-canvas-cli project`` (:mod:`core.cli.projection`)
- :mod:`core.evals.prior_quality`, :mod:`core.evals.prior`  measurements; docs/prior.md

Training: ``python -m core.training.wdiffusion`` (see that module).
"""
