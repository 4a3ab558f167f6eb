"""Guided generation with text-conditioned diffusion models (SDEdit, local inpainting, previews).

``params`` is torch-free (the GUI builds parameters on its own thread); ``model`` loads any supported
model into one :class:`~core.sd.model.SDModel`; ``sdedit`` is the job; ``cli`` and ``evaluate`` are
the commands. Heavy libraries (torch, diffusers, transformers) load only when those modules do.
"""
