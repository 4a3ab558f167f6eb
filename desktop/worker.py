"""The app's two ways to reach the engine (``core.worker.engine``), behind one interface.

- :class:`Worker`: the engine on a thread of this process (``--in-process``; the tests' default).
- :class:`ProcessWorker`: the engine in a worker process, started on this machine (loopback, a free
  port, a per-launch token) or reached at a URL (*File ▸ Connect to worker…*, ``--worker URL``). A
  crash inside torch (a segfault, the OOM killer) then ends the worker, not the app: the app says so,
  starts a new one, reloads the model, and the canvas, history and unsaved work stay as they were.

Both take :class:`JobRequest` s (``submit``, ``cancel_current``, ``stop``) and answer with
:class:`WorkerMessage` s through one Qt signal, delivered queued to the GUI thread.
"""

from __future__ import annotations

import logging
import threading

from PySide6.QtCore import QObject, QThread, Signal

from core.worker.engine import START_TRUNCATION, Engine, RequestQueue
from core.worker.messages import (
    ErrorKind,
    InterpolateFrameRequest,
    JobRequest,
    LoadModelRequest,
    MsgKind,
    SDEditRequest,
    WorkerMessage,
)

__all__ = [
    "START_TRUNCATION", "ErrorKind", "InterpolateFrameRequest", "JobRequest", "LoadModelRequest", "MsgKind",
    "ProcessWorker", "SDEditRequest", "Worker", "WorkerMessage",
]  # fmt: skip

log = logging.getLogger(__name__)


class Worker(QThread):
    """The engine on one thread of the app's process."""

    message = Signal(object)  # WorkerMessage

    def __init__(self, preview_interval_s: float = 0.05):
        super().__init__()
        self.requests = RequestQueue()
        self.engine = Engine(self.message.emit, preview_interval_s=preview_interval_s)
        self.description = "in-process worker"

    # --- called from the GUI thread ---
    def submit(self, request: JobRequest, *, supersede: bool = True) -> None:
        if supersede:
            self.engine.cancel_current()
        self.requests.put(request)

    def cancel_current(self) -> None:
        self.engine.cancel_current()

    def stop(self) -> None:
        self.engine.cancel_current()
        self.requests.put(None)
        self.wait(5000)

    # --- the worker thread ---
    def run(self) -> None:
        self.engine.serve(self.requests)


class ProcessWorker(QObject):
    """The engine in a worker process: a local one this object starts (and restarts when it dies), or
    a remote one at ``url`` (with its ``token``)."""

    message = Signal(object)  # WorkerMessage
    connected = Signal(dict)  # the worker's capabilities, at each (re)connection
    _RELOAD_ID = -1  # the job id of the model reload after a restart (its answer is not the app's)

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        restart: bool = True,
        args: tuple[str, ...] = (),
    ):
        super().__init__()
        self.args = args  # extra command-line options of a local worker
        self.url, self.token, self.restart = url, token, restart
        self.local = None  # core.worker.client.LocalWorker when this object started the process
        self.client = None
        self._lock = threading.Lock()
        self._pending: list[JobRequest] = []  # submitted while (re)connecting
        self._last_load: JobRequest | None = None
        self._running: int | None = None  # the job id the app last submitted
        self._stopping = False
        self.description = url or "local worker process"

    def start(self) -> None:
        threading.Thread(target=self._connect, name="worker-connect", daemon=True).start()

    def isRunning(self) -> bool:  # noqa: N802 - the QThread name Worker has
        return self.client is not None

    def submit(self, request: JobRequest, *, supersede: bool = True) -> None:
        if request.kind == "load_model":
            self._last_load = request
        else:
            self._running = request.job_id
        with self._lock:
            if self.client is None:
                self._pending.append(request)
                return
            client = self.client
        if supersede:
            client.cancel()
        client.submit(request)

    def cancel_current(self) -> None:
        with self._lock:
            client = self.client
        if client is not None:
            client.cancel()

    def stop(self) -> None:
        self._stopping = True
        with self._lock:
            client, self.client = self.client, None
        if client is not None:
            client.close()
        if self.local is not None:
            self.local.stop()
            self.local.remove_token()

    # --- background threads ---
    def _connect(self) -> None:
        from core.worker.client import LocalWorker, WorkerClient, WorkerConnectionError

        try:
            url, token = self.url, self.token
            if url is None:
                if self.local is None:
                    self.local = LocalWorker(extra_args=self.args)
                url, token = self.local.start(), self.local.token
            client = WorkerClient(url, token=token, on_message=self._on_message, on_closed=self._on_closed)
            caps = client.connect()
        except WorkerConnectionError as e:
            log.error("%s", e)
            self.message.emit(WorkerMessage(MsgKind.WORKER_LOST, self._running or 0, str(e)))
            return
        log.info("connected to the worker at %s (%s)", url, caps)
        with self._lock:
            self.client, pending, self._pending = client, self._pending, []
        self.connected.emit(caps)
        for req in pending:
            client.submit(req)

    def _on_message(self, msg: WorkerMessage) -> None:
        if msg.job_id == self._RELOAD_ID:
            if msg.kind is MsgKind.ERROR:  # the model that loaded before no longer does
                self.message.emit(
                    WorkerMessage(MsgKind.WORKER_LOST, 0, f"reloading the model failed: {msg.payload}")
                )
            return
        self.message.emit(msg)

    def _on_closed(self, reason: str) -> None:
        with self._lock:
            self.client = None
        if self._stopping:
            return
        code = self.local.exit_code(wait=2.0) if self.local is not None else None
        what = f"the worker stopped (exit code {code})" if code is not None else f"lost the worker: {reason}"
        log.error("%s", what)
        can_restart = self.restart and self.local is not None
        self.message.emit(
            WorkerMessage(
                MsgKind.WORKER_LOST, self._running or 0, what + ("; restarting it" if can_restart else "")
            )
        )
        if not can_restart:
            return
        if self._last_load is not None:  # the new process loads the same model before anything else
            with self._lock:
                self._pending.insert(0, JobRequest(self._RELOAD_ID, "load_model", self._last_load.params))
        self._connect()
