"""The one thread that owns every model and runs all torch work.

The GUI submits :class:`JobRequest` s (a job id and a core params dataclass); the worker answers
with typed :class:`WorkerMessage` s through one Qt signal. A new request supersedes the running one
(it is cancelled within one step) and the queue is drained to the newest request.
"""

from __future__ import annotations

import enum
import logging
import queue
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QThread, Signal

log = logging.getLogger(__name__)
START_TRUNCATION = 0.7  # psi of the four samples shown when a model loads


class MsgKind(enum.Enum):
    MODEL_LOADED = "model_loaded"  # payload: dict(name, path, resolution, spaces, samples [N,H,W,3])
    STARTED = "started"  # payload: None
    PROGRESS = "progress"  # payload: core.jobs.events.Progress
    RESULT = "result"  # payload: the job's result object
    CANCELLED = "cancelled"  # payload: the partial result, or None
    ERROR = "error"  # payload: str, a message for the person


@dataclass(frozen=True)
class WorkerMessage:
    kind: MsgKind
    job_id: int
    payload: Any = None


@dataclass(frozen=True)
class JobRequest:
    job_id: int
    kind: str  # "load_model" | "invert" | "project" | "sdedit" | "interpolate_frame"
    params: Any  # a core params dataclass, a path, or (latents, space, t)


class Worker(QThread):
    message = Signal(object)  # WorkerMessage, delivered queued to the GUI thread

    def __init__(self, preview_interval_s: float = 0.05):
        super().__init__()
        self._queue: queue.Queue[JobRequest | None] = queue.Queue()
        self._cancel = None  # CancelToken of the running job (set in the worker thread)
        self._generator = None
        self._model_path: Path | None = None
        self._perceptual = None
        self._resources: dict[str, Any] = {}  # loaded priors, CLIP, diffusion pipelines, by key
        self._preview_interval = preview_interval_s

    # --- called from the GUI thread ---
    def submit(self, request: JobRequest, *, supersede: bool = True) -> None:
        if supersede and self._cancel is not None:
            self._cancel.cancel()
        self._queue.put(request)

    def cancel_current(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    def stop(self) -> None:
        self.cancel_current()
        self._queue.put(None)
        self.wait(5000)

    # --- the worker thread ---
    def run(self) -> None:
        while True:
            req = self._next_request()
            if req is None:
                return
            try:
                self._handle(req)
            except Exception as e:  # noqa: BLE001 - any job failure becomes a message, the worker lives on
                log.exception("job %s failed", req.job_id)
                self._emit(MsgKind.ERROR, req.job_id, _describe(e))
                del e  # the traceback's frames hold the failed job's tensors: drop them, then collect
                _free_memory()
            finally:
                self._cancel = None
            # A job that ends normally frees its tensors by reference counting. A full gc.collect() after
            # every request held the GIL long enough for slider frames and GUI ticks to wait on it.

    def _next_request(self) -> JobRequest | None:
        req = self._queue.get()
        while req is not None and req.kind != "load_model":
            try:  # newest request wins: drop stale ones queued behind it
                newer = self._queue.get_nowait()
            except queue.Empty:
                break
            if newer is None or newer.kind == "load_model":
                self._queue.put(newer)
                break
            req = newer
        return req

    def _emit(self, kind: MsgKind, job_id: int, payload: Any = None) -> None:
        self.message.emit(WorkerMessage(kind, job_id, payload))

    def _handle(self, req: JobRequest) -> None:
        handlers = {
            "load_model": self._load_model,
            "invert": self._run_invert,
            "project": self._run_project,
            "sdedit": self._run_sdedit,
            "interpolate_frame": self._interpolate_frame,
        }
        if req.kind not in handlers:
            raise ValueError(f"unknown job kind {req.kind!r}")
        handlers[req.kind](req)

    def _load_model(self, req: JobRequest) -> None:
        import torch

        from core.gan.latents import start_w
        from core.imaging import to_uint8
        from core.models.io import load_generator
        from core.types import LatentSpace

        path = Path(req.params)
        self._generator = G = load_generator(path)
        self._model_path = path
        self._perceptual = None
        with torch.inference_mode():  # a first look at what the model makes, from fixed seeds
            # With a W space, truncated as StyleGAN viewers show samples (psi 0.7: typical images).
            psi = START_TRUNCATION if LatentSpace.W in G.latent_spaces else 1.0
            samples = to_uint8(
                G.synthesis(G.broadcast(start_w(G, False, 4, 0, G.device_of(), truncation=psi)))
            )
        info = {
            "name": path.name,
            "path": str(path),
            "resolution": G.resolution,
            "spaces": [s.value for s in G.latent_spaces],
            "c_dim": G.c_dim,
            "samples": samples,
        }
        self._emit(MsgKind.MODEL_LOADED, req.job_id, info)

    def _perceptual_for(self, weight: float):
        if weight <= 0:
            return None
        if self._perceptual is None:
            from core.losses import resolve_perceptual

            self._perceptual, _ = resolve_perceptual("auto", weight, "cpu")
        return self._perceptual

    def _run_invert(self, req: JobRequest) -> None:
        from core.jobs.invert import invert
        from core.types import CancelToken

        self._require_generator()
        params = req.params
        perc = self._perceptual_for(params.perceptual_weight)
        if perc is None:
            params = replace(params, perceptual_weight=0.0)
        self._cancel = token = CancelToken()
        self._emit(MsgKind.STARTED, req.job_id)
        self._drive(req, invert(params, self._generator, perceptual_loss=perc, cancel=token))

    def _drive(self, req: JobRequest, job) -> None:
        """Run a core job generator to its end, forwarding throttled progress and the result."""
        from core.jobs.runner import run_to_completion

        last_emit = 0.0

        def forward(ev) -> None:
            nonlocal last_emit
            now = time.perf_counter()
            # Previews at most every preview_interval: the GUI repaints, it does not queue up.
            if ev.preview is not None and (now - last_emit >= self._preview_interval or ev.step == ev.total):
                self._emit(MsgKind.PROGRESS, req.job_id, ev)
                last_emit = now

        result = run_to_completion(job, forward)
        self._emit(MsgKind.CANCELLED if result.cancelled else MsgKind.RESULT, req.job_id, result)

    def _require_generator(self) -> None:
        if self._generator is None:
            raise RuntimeError("no model is loaded: pick one with Model ▸ Open model…")

    def _resource(self, key, load):
        """Load once per worker (CLIP, the diffusion prior, SD pipelines), keyed by what was loaded."""
        if key not in self._resources:
            self._resources[key] = load()
        return self._resources[key]

    def _run_project(self, req: JobRequest) -> None:
        from core.jobs.projection import project
        from core.types import CancelToken

        self._require_generator()
        p = req.params
        clip = perc = model = wstats = None
        if p.task == "clip":
            from core.clip import load_clip

            clip = self._resource("clip", lambda: load_clip(device="cpu"))
        elif p.perceptual_weight > 0:
            perc = self._perceptual_for(p.perceptual_weight)
        if p.prior in ("diffusion", "task-guided"):
            from core.paths import BUNDLED_PRIOR, bundled_model
            from core.prior.model import load_wdiffusion

            model = self._resource("prior", lambda: load_wdiffusion(bundled_model(BUNDLED_PRIOR)))
        elif p.prior in ("mean", "cluster"):
            from core.prior.wstats import load_wstats, wstats_path_for

            stats = wstats_path_for(self._model_path)
            if stats.is_file():
                wstats = self._resource(("wstats", str(stats)), lambda: load_wstats(stats))
        self._cancel = token = CancelToken()
        self._emit(MsgKind.STARTED, req.job_id)
        job = project(
            p,
            self._generator,
            clip=clip,
            perceptual_loss=perc,
            prior_model=model,
            wstats=wstats,
            cancel=token,
        )
        self._drive(req, job)

    def _run_sdedit(self, req: JobRequest) -> None:
        from core.jobs.sdedit import sdedit
        from core.sd.model import load_sd_model
        from core.types import CancelToken

        source, device, params = req.params  # (folder/file/hub id or None = bundled, device, SDEditParams)
        model = self._resource(("sd", source, device), lambda: load_sd_model(source, device=device))
        self._cancel = token = CancelToken()
        self._emit(MsgKind.STARTED, req.job_id)
        # Decode no more previews than _drive forwards: each costs a (tiny) VAE pass.
        params = replace(params, preview_interval_s=self._preview_interval)
        self._drive(req, sdedit(params, model, cancel=token))

    def _interpolate_frame(self, req: JobRequest) -> None:
        from core.jobs.interpolate import Interpolator

        latents, space, t = req.params
        image = Interpolator(self._generator, latents, space).image_at(t)
        self._emit(MsgKind.RESULT, req.job_id, image)


def _describe(e: Exception) -> str:
    from core.errors import LatentCanvasError

    if isinstance(e, LatentCanvasError):
        return str(e)
    # torch.OutOfMemoryError, or a RuntimeError saying so (MPS, older CUDA paths, some extensions).
    if type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower():
        return "the device ran out of memory: try fewer samples or a smaller model"
    return f"{type(e).__name__}: {e}"


def _free_memory() -> None:
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
