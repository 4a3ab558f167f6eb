"""Results the person can compare, re-use as a base, branch from, or pick as interpolation ends."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(eq=False)  # identity: entries hold arrays
class HistoryEntry:
    kind: str  # "invert" | "project" | "sdedit"
    images: np.ndarray  # [N, H, W, 3] uint8, one per sample
    params: dict[str, Any]  # every scalar parameter of the job (arrays left out), JSON-ready
    seed: int
    ws: np.ndarray | None = None  # [N, num_ws, w_dim] when the result has GAN latents
    latent: np.ndarray | None = None  # in the job's latent space, [N, ...]
    space: str | None = None
    cancelled: bool = False
    selected: int = 0  # which sample of a variations grid is "the" result
    losses: list[dict[str, float]] = field(default_factory=list)

    @property
    def image(self) -> np.ndarray:
        return self.images[self.selected]

    def label(self, index: int) -> str:
        tag = {"invert": self.space or "gan", "project": self.params.get("prior", "prior"), "sdedit": "sd"}
        n = f" ×{len(self.images)}" if len(self.images) > 1 else ""
        return f"#{index} {tag.get(self.kind, self.kind)}{n}" + (" (stopped)" if self.cancelled else "")

    def selected_ws(self) -> np.ndarray | None:
        return None if self.ws is None else self.ws[self.selected]


def scalar_params(params: Any) -> dict[str, Any]:
    """The JSON-ready scalars of a params dataclass: arrays (target, mask, latents) are left out."""
    out = {}
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        if isinstance(v, enum.Enum):
            v = v.value
        if v is None or isinstance(v, str | int | float | bool):
            out[f.name] = v
    return out


def entry_from_result(kind: str, result: Any, *, cancelled: bool) -> HistoryEntry:
    """Turn a core job's result object into a history entry (fields shared by every job result:
    ``params`` and ``images``; GAN results also carry ``ws`` and ``latent``)."""
    params = result.params
    return HistoryEntry(
        kind=kind,
        images=np.asarray(result.images),
        params=scalar_params(params),
        seed=int(getattr(params, "seed", 0)),
        ws=getattr(result, "ws", None),
        latent=getattr(result, "latent", None),
        space=getattr(getattr(params, "space", None), "value", getattr(params, "space", None)),
        cancelled=cancelled,
        losses=list(getattr(result, "loss_history", [])),
    )
