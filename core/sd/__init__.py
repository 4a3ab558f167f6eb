"""Guided generation with text-conditioned diffusion models (SDEdit, local inpainting, previews).

``model`` loads any supported model into one :class:`~core.sd.model.SDModel`; ``pipeline`` holds
SDEdit's pieces (schedule, encode/decode, guidance, previews). The job is :mod:`core.jobs.sdedit`
(parameters in :mod:`core.jobs.params`), its command :mod:`core.cli.sd`, its measurements
:mod:`core.evals.sd`. Heavy libraries (torch, diffusers, transformers) load only when those modules do.
"""
