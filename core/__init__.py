"""Latent Canvas core: models, losses and jobs. Never imports Qt."""

__version__ = "0.1.0"
