"""Typed requests to the worker and the events it answers with (numpy only: the GUI builds these)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import JobError
from core.jobs.params import InvertParams, ProjectionParams, SDEditParams


class MsgKind(enum.Enum):
    MODEL_LOADED = "model_loaded"  # payload: dict(name, path, resolution, spaces, c_dim, samples [N,H,W,3])
    STARTED = "started"  # payload: None
    PROGRESS = "progress"  # payload: core.jobs.events.Progress
    RESULT = "result"  # payload: the job's result object (an interpolation frame: [H, W, 3] uint8)
    CANCELLED = "cancelled"  # payload: the partial result, or None
    ERROR = "error"  # payload: str, a message for the person (WorkerMessage.error_kind says what failed)
    WORKER_LOST = "worker_lost"  # payload: str; the worker process stopped (the app restarts it)
    MODEL_UNLOADED = "model_unloaded"  # payload: dict(freed=[what was unloaded], models=capabilities' models)


class ErrorKind(enum.Enum):
    MODEL = "model"  # the model could not be loaded (corrupt, refused, missing)
    JOB = "job"  # the job's parameters or inputs were refused
    MEMORY = "memory"  # the device ran out of memory
    INTERNAL = "internal"  # anything else: a bug or an unexpected failure
    PROTOCOL = "protocol"  # a message the worker could not read


@dataclass(frozen=True)
class WorkerMessage:
    kind: MsgKind
    job_id: int
    payload: Any = None
    error_kind: ErrorKind | None = None  # for ERROR


@dataclass(frozen=True)
class LoadModelRequest:
    path: str  # generator file (.safetensors or an NVlabs .pkl) on the worker's machine
    device: str = "cpu"


UNLOAD_WHAT = ("all", "generator", "resources")


@dataclass(frozen=True)
class UnloadModelRequest:
    """Free memory on the worker (a GPU box's VRAM): the generator (with its encoder and perceptual
    loss), the cached resources (Stable Diffusion pipelines, CLIP, priors), or both."""

    what: str = "resources"

    def __post_init__(self) -> None:
        if self.what not in UNLOAD_WHAT:
            raise JobError(f"unload what? {self.what!r}; one of {', '.join(UNLOAD_WHAT)}")


@dataclass(frozen=True)
class SDEditRequest:
    params: SDEditParams
    source: str | None = None  # pipeline folder, single file or hub id; None = the bundled tiny model
    device: str = "cpu"


@dataclass(frozen=True)
class InterpolateFrameRequest:
    latents: list[np.ndarray]  # the key frames: ws [num_ws, w_dim], or styles [s_dim] of Style-space results
    space: str  # the path's space: "w+" for the app's sliders, "s" when a key frame is a Style-space result
    t: float  # position along the path in [0, 1]
    spaces: tuple[str, ...] = ()  # each key frame's own space where they differ ("w+" ends join an "s" path)


REQUEST_TYPES: dict[str, type] = {
    "load_model": LoadModelRequest,
    "unload_model": UnloadModelRequest,
    "invert": InvertParams,
    "project": ProjectionParams,
    "sdedit": SDEditRequest,
    "interpolate_frame": InterpolateFrameRequest,
}


@dataclass(frozen=True)
class JobRequest:
    job_id: int
    kind: str  # a key of REQUEST_TYPES
    params: Any  # the matching request type
    # Live requests (a stroke's re-run, a slider frame) supersede each other: a newer live request
    # cancels the running live job and drops queued ones. Other requests run in order, never dropped.
    live: bool = False

    def __post_init__(self) -> None:
        want = REQUEST_TYPES.get(self.kind)
        if want is None:
            raise JobError(f"unknown job kind {self.kind!r}; known: {', '.join(REQUEST_TYPES)}")
        if not isinstance(self.params, want):
            raise JobError(f"a {self.kind} request takes {want.__name__}, got {type(self.params).__name__}")
