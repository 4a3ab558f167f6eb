"""Evaluation: realism and fidelity measures, quality tables, model cards' reports. Beside the library:
nothing in core.jobs or the model packages imports it."""
