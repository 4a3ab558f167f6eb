"""Jobs: the library's top floor. Each job is a frozen params dataclass (all in :mod:`core.jobs.params`,
torch-free) and a generator function that yields :class:`~core.jobs.events.Progress` every step and
returns its result: :mod:`~core.jobs.invert` (inversion, scribble-to-image, inpainting),
:mod:`~core.jobs.interpolate`, :mod:`~core.jobs.projection` (with a latent prior) and
:mod:`~core.jobs.sdedit`. :func:`core.jobs.runner.run_to_completion` drives any of them."""
