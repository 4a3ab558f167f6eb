"""Training data for the bundled models: procedural cat faces with captions.

Names resolve lazily (PEP 562) so `python -m core.data.procedural` does not import its own module
twice, and `import core.data` stays cheap until something is used.
"""

__all__ = [
    "CatAttributes",
    "ProceduralCats",
    "attributes_for_seed",
    "caption",
    "make_dataset",
    "render",
    "render_batch",
    "sample_attributes",
    "split_seed",
]


def __getattr__(name: str):
    if name in __all__:
        from core.data import procedural

        return getattr(procedural, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
