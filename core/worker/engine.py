"""The engine: owns the loaded models and runs :class:`JobRequest` s, reporting through a callback.

No Qt and no network: the app runs one on a thread (``desktop.worker.Worker``), the worker server
(``core.worker.server``) runs one behind a WebSocket. Requests run in order; live requests (a stroke's
re-run, a slider frame) supersede each other (:class:`RequestQueue` keeps the newest of a run of them).
Cancelling stops the running job within one step.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.worker.messages import ErrorKind, JobRequest, MsgKind, WorkerMessage

log = logging.getLogger(__name__)
START_TRUNCATION = 0.7  # psi of the four samples shown when a model loads


class RequestQueue:
    """Requests waiting for the engine; ``None`` stops :meth:`Engine.serve`."""

    def __init__(self) -> None:
        self._q: queue.Queue[JobRequest | None] = queue.Queue()
        self.on_drop: Callable[[JobRequest], None] | None = None  # told of each stale live request dropped

    def put(self, req: JobRequest | None) -> None:
        self._q.put(req)

    def drop(self, keep: Callable[[JobRequest], bool]) -> None:
        """Remove the queued requests ``keep`` rejects (a client that went away)."""
        with self._q.mutex:
            items = [r for r in self._q.queue if r is None or keep(r)]
            self._q.queue.clear()
            self._q.queue.extend(items)

    def next(self) -> JobRequest | None:
        """The next request to run, in order; of a run of live requests only the newest (the stale ones
        are dropped). Other requests and the stop sentinel are never skipped."""
        req = self._q.get()
        while req is not None and req.live:
            with self._q.mutex:
                newer_live = bool(self._q.queue) and self._q.queue[0] is not None and self._q.queue[0].live
                if not newer_live:
                    break
                stale, req = req, self._q.queue.popleft()
            if self.on_drop is not None:
                self.on_drop(stale)
        return req


class Engine:
    def __init__(self, emit: Callable[[WorkerMessage], None], *, preview_interval_s: float = 0.05):
        self._emit_fn = emit
        self.cancel_token = None  # CancelToken of the running job (set on the engine's thread)
        self.running: JobRequest | None = None
        self._lock = threading.Lock()
        self._generator = None
        self._model_path: Path | None = None
        self._device = "cpu"
        self._perceptual = None
        self._encoder = None  # the loaded generator's encoder (core.encoder), when one matches it
        self._resources: dict[Any, Any] = {}  # loaded priors, CLIP, diffusion pipelines, by key
        self._preview_interval = preview_interval_s

    # --- any thread ---
    def cancel_current(self) -> None:
        with self._lock:
            if self.cancel_token is not None:
                self.cancel_token.cancel()

    def cancel_if(self, test: Callable[[JobRequest], bool]) -> None:
        """Cancel the running job when ``test`` accepts its request."""
        with self._lock:
            if self.running is not None and self.cancel_token is not None and test(self.running):
                self.cancel_token.cancel()

    def capabilities(self) -> dict[str, Any]:
        import torch

        devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            devices.append("mps")
        return {
            "devices": devices,
            "jobs": sorted(_HANDLERS),
            "torch": str(torch.__version__),
            "models": self.models(),
        }

    def models(self) -> dict[str, Any]:
        """What is loaded, and the generator files this machine has (paths on the worker's machine)."""
        from core.models.manager import generator_files

        return {
            "generator": str(self._model_path) if self._generator is not None else None,
            "resources": self._resource_names(),
            "available": [str(p) for p in generator_files()],
        }

    # --- the engine's thread ---
    def serve(self, requests: RequestQueue) -> None:
        """Run requests until the ``None`` sentinel. A stale live request that is dropped is answered
        CANCELLED (no result), so every request gets an answer."""
        requests.on_drop = lambda req: self._emit(MsgKind.CANCELLED, req.job_id, None)
        while (req := requests.next()) is not None:
            self.handle(req)

    def handle(self, req: JobRequest) -> None:
        """Run one request to its end; any failure becomes an ERROR message and the engine lives on."""
        self.running = req
        try:
            getattr(self, _HANDLERS[req.kind])(req)
        except Exception as e:  # noqa: BLE001 - any job failure becomes a message
            log.exception("job %s failed", req.job_id)
            kind = _error_kind(e, req)
            self._emit(MsgKind.ERROR, req.job_id, _describe(e), error_kind=kind)
            del e  # the traceback's frames hold the failed job's tensors: drop them, then collect
            _free_memory()
        finally:
            with self._lock:
                self.cancel_token = None
                self.running = None
        # A job that ends normally frees its tensors by reference counting. A full gc.collect() after
        # every request held the GIL long enough for slider frames and GUI ticks to wait on it.

    def _emit(self, kind: MsgKind, job_id: int, payload: Any = None, **extra) -> None:
        self._emit_fn(WorkerMessage(kind, job_id, payload, **extra))

    def _new_token(self):
        from core.types import CancelToken

        with self._lock:
            self.cancel_token = CancelToken()
            return self.cancel_token

    def _load_model(self, req: JobRequest) -> None:
        import torch

        from core.gan.latents import start_w
        from core.imaging import to_uint8
        from core.models.io import load_generator
        from core.types import LatentSpace

        path, device = Path(req.params.path), req.params.device
        if not path.exists():  # a remote worker: the app's bundled model is this install's bundled model
            from core.paths import bundled_model

            if bundled_model(path.name).is_file():
                path = bundled_model(path.name)
        with _captured_warnings("core.models") as warnings:  # e.g. a pickle's unofficial network source
            self._generator = G = load_generator(path, device=device)
        self._model_path, self._device = path, device
        self._perceptual = None
        self._encoder, encoder_info = _find_encoder(path, G, device)
        with torch.inference_mode():  # a first look at what the model makes, from fixed seeds
            # With a W space, truncated as StyleGAN viewers show samples (psi 0.7: typical images).
            psi = START_TRUNCATION if LatentSpace.W in G.latent_spaces else 1.0
            samples = to_uint8(
                G.synthesis(G.broadcast(start_w(G, False, 4, 0, G.device_of(), truncation=psi)))
            )
        info = {
            "name": path.name,
            "path": str(path),
            "device": device,
            "resolution": G.resolution,
            "spaces": [s.value for s in G.latent_spaces],
            "c_dim": G.c_dim,
            "samples": samples,
            "warnings": warnings,  # what the loader warned about, for the person (not only the log)
            **encoder_info,  # "encoder": its file name or None, "encoder_note": why there is none
        }
        self._emit(MsgKind.MODEL_LOADED, req.job_id, info)

    def _resource_names(self) -> list[str]:
        return sorted(str(k) for k in list(self._resources))

    def _unload_model(self, req: JobRequest) -> None:
        what, freed = req.params.what, []
        if what in ("all", "generator") and self._generator is not None:
            freed.append(str(self._model_path))
            self._generator = self._encoder = self._perceptual = None
            self._model_path = None
        if what in ("all", "resources"):
            freed += self._resource_names()
            self._resources.clear()
        _free_memory()
        self._emit(MsgKind.MODEL_UNLOADED, req.job_id, {"freed": freed, "models": self.models()})

    def _perceptual_for(self, weight: float):
        if weight <= 0:
            return None
        if self._perceptual is None:
            from core.losses import resolve_perceptual

            self._perceptual, _ = resolve_perceptual("auto", weight, self._device)
        return self._perceptual

    def _run_invert(self, req: JobRequest) -> None:
        from core.jobs.invert import invert

        self._require_generator()
        params = req.params
        perc = self._perceptual_for(params.perceptual_weight)
        if perc is None:
            params = replace(params, perceptual_weight=0.0)
        token = self._new_token()
        self._emit(MsgKind.STARTED, req.job_id)
        job = invert(params, self._generator, perceptual_loss=perc, cancel=token, encoder=self._encoder)
        self._drive(req, job)

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
            from core.errors import JobError

            raise JobError("no model is loaded: pick one with Model ▸ Open model…")

    def _resource(self, key, load):
        """Load once per engine (CLIP, the diffusion prior, SD pipelines), keyed by what was loaded."""
        if key not in self._resources:
            self._resources[key] = load()
        return self._resources[key]

    def _run_project(self, req: JobRequest) -> None:
        from core.jobs.projection import project

        self._require_generator()
        p = req.params
        clip = perc = model = wstats = None
        if p.task == "clip":
            from core.clip import load_clip

            clip = self._resource(("clip", self._device), lambda: load_clip(device=self._device))
        elif p.perceptual_weight > 0:
            perc = self._perceptual_for(p.perceptual_weight)
        if p.prior in ("diffusion", "task-guided"):
            from core.paths import bundled_prior
            from core.prior.model import load_wdiffusion

            path = bundled_prior(p.space)
            model = self._resource(("prior", str(path)), lambda: load_wdiffusion(path))
        elif p.prior in ("mean", "cluster"):
            from core.prior.wstats import load_wstats, wstats_path_for

            stats = wstats_path_for(self._model_path)
            if stats.is_file():
                wstats = self._resource(("wstats", str(stats)), lambda: load_wstats(stats))
        token = self._new_token()
        self._emit(MsgKind.STARTED, req.job_id)
        kw = dict(clip=clip, perceptual_loss=perc, prior_model=model, wstats=wstats, cancel=token)
        self._drive(req, project(p, self._generator, **kw))

    def _run_sdedit(self, req: JobRequest) -> None:
        from core.jobs.sdedit import sdedit
        from core.sd.model import load_sd_model

        r = req.params
        model = self._resource(("sd", r.source, r.device), lambda: load_sd_model(r.source, device=r.device))
        token = self._new_token()
        self._emit(MsgKind.STARTED, req.job_id)
        # Decode no more previews than _drive forwards: each costs a (tiny) VAE pass.
        params = replace(r.params, preview_interval_s=self._preview_interval)
        self._drive(req, sdedit(params, model, cancel=token))

    def _interpolate_frame(self, req: JobRequest) -> None:
        from core.jobs.interpolate import Interpolator, ends_in_space

        self._require_generator()
        r, G = req.params, self._generator
        ends = ends_in_space(G, r.latents, r.spaces, r.space) if r.spaces else r.latents
        image = Interpolator(G, ends, r.space).image_at(r.t)
        self._emit(MsgKind.RESULT, req.job_id, image)


_HANDLERS = {
    "load_model": "_load_model",
    "unload_model": "_unload_model",
    "invert": "_run_invert",
    "project": "_run_project",
    "sdedit": "_run_sdedit",
    "interpolate_frame": "_interpolate_frame",
}


def _find_encoder(path: Path, G, device) -> tuple[Any, dict[str, Any]]:
    """The encoder beside the generator file, if one was trained for it: (encoder or None, info)."""
    from core.encoder.model import encoder_path_for, load_encoder_for
    from core.errors import ModelLoadError

    if not encoder_path_for(path).is_file():
        return None, {"encoder": None, "encoder_refine": 0,
                      "encoder_note": "no encoder for this generator (mean init is used)"}  # fmt: skip
    try:
        enc = load_encoder_for(path, G, device=device)
    except ModelLoadError as e:
        log.warning("%s", e)
        return None, {"encoder": None, "encoder_note": str(e), "encoder_refine": 0}
    return enc, {"encoder": encoder_path_for(path).name, "encoder_note": "",
                 "encoder_refine": enc.cfg.refine_steps}  # fmt: skip


class _captured_warnings:  # noqa: N801 - used as a context manager
    """Collect the WARNING (and worse) messages logged under ``logger`` inside the block."""

    def __init__(self, logger: str):
        self.logger, self.messages = logging.getLogger(logger), []
        self.handler = logging.Handler(logging.WARNING)
        self.handler.emit = lambda record: self.messages.append(record.getMessage())

    def __enter__(self) -> list[str]:
        self.logger.addHandler(self.handler)
        return self.messages

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self.handler)


def _is_oom(e: Exception) -> bool:
    # torch.OutOfMemoryError, or a RuntimeError saying so (MPS, older CUDA paths, some extensions).
    return type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()


def _error_kind(e: Exception, req: JobRequest) -> ErrorKind:
    from core.errors import JobError, LatentCanvasError, ModelLoadError

    if _is_oom(e):
        return ErrorKind.MEMORY
    if isinstance(e, ModelLoadError) or (req.kind == "load_model" and isinstance(e, OSError)):
        return ErrorKind.MODEL
    if isinstance(e, JobError | LatentCanvasError):
        return ErrorKind.JOB
    return ErrorKind.INTERNAL


def _describe(e: Exception) -> str:
    from core.errors import LatentCanvasError

    if isinstance(e, LatentCanvasError):
        return str(e)
    if _is_oom(e):
        return "the device ran out of memory: try fewer samples or a smaller model"
    return f"{type(e).__name__}: {e}"


def _free_memory() -> None:
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
