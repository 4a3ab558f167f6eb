"""Generators behind one interface (see :class:`core.gan.base.Generator`)."""

from core.gan.base import Generator, LatentSpace

__all__ = ["Generator", "LatentSpace"]
