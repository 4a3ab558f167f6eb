"""Timing helpers shared by the benchmarks: the machine's name, best-of-repeats timing, a table."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def machine() -> str:
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cpu = _cpu_model() or platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__} ({threads} threads), {dev}"


def timed(fn: Callable[[], object], *, repeats: int = 3, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[object]] = field(default_factory=list)

    def add(self, *row: object) -> None:
        self.rows.append(list(row))

    def markdown(self) -> str:
        fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        return ""
