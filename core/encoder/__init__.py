"""Encoders: image / inpainting / scribble -> a generator's w+ in one pass (see :mod:`core.encoder.model`)."""
