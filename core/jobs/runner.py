"""Driving a job generator to its end: for the CLI, evaluation and tests (the app's worker drives jobs
itself, one event at a time, so it can forward previews and cancel)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

E = TypeVar("E")
R = TypeVar("R")


def run_to_completion(job: Generator[E, None, R], on_progress: Callable[[E], object] | None = None) -> R:
    """Run ``job`` until it returns; call ``on_progress`` with every event it yields; return its result."""
    while True:
        try:
            ev = next(job)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(ev)
