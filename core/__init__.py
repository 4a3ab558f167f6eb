"""Latent Canvas core: models, losses and jobs, never importing Qt. The layers are in docs/architecture.md:
core.jobs over the model packages over base modules; core.cli, core.evals and core.training beside."""

__version__ = "0.1.0"
