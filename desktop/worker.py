"""The app's two ways to reach the engine (``core.worker.engine``), behind one interface.

- :class:`Worker`: the engine on a thread of this process (``--in-process``; the tests' default).
- :class:`ProcessWorker`: the engine in a worker process, started on this machine (loopback, a free
  port, a per-launch token) or reached at a URL (*File ▸ Connect to worker…*, ``--worker URL``),
  over an asyncio WebSocket connection on the qasync loop of the GUI thread. A
  crash inside torch (a segfault, the OOM killer) then ends the worker, not the app: the app says so,
  starts a new one, reloads the model, and the canvas, history and unsaved work stay as they were.

Both take :class:`JobRequest` s (``submit``, ``cancel_current``, ``stop``) and answer with
:class:`WorkerMessage` s through one Qt signal on the GUI thread (queued from the worker thread, or
emitted by the connection task that runs there).
"""

from __future__ import annotations

import asyncio
import logging

from PySide6.QtCore import QObject, QThread, Signal

from core.worker.engine import START_TRUNCATION, Engine, RequestQueue
from core.worker.messages import (
    ErrorKind,
    InterpolateFrameRequest,
    JobRequest,
    LoadModelRequest,
    MsgKind,
    SDEditRequest,
    UnloadModelRequest,
    WorkerMessage,
)
from desktop.event_loop import qt_loop

__all__ = [
    "START_TRUNCATION", "ErrorKind", "InterpolateFrameRequest", "JobRequest", "LoadModelRequest", "MsgKind",
    "ProcessWorker", "SDEditRequest", "UnloadModelRequest", "Worker", "WorkerMessage",
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
    a remote one at ``url`` (with its ``token``).

    The connection is a qasync task on the GUI thread (``desktop.event_loop``): connecting, reading
    events and restarting a dead worker are coroutines, events are emitted where they arrive, and
    only the blocking parts (starting a process and waiting for its exit code) go to an executor."""

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
        self.client = None  # core.worker.client.WorkerClient while connected
        self._task: asyncio.Task | None = None
        self._pending: list[JobRequest] = []  # submitted while (re)connecting
        self._last_load: JobRequest | None = None
        self._running: int | None = None  # the job id the app last submitted
        self._stopping = False
        self.description = url or "local worker process"

    def start(self) -> None:
        self._task = qt_loop().create_task(self._serve(), name="worker-connection")

    def isRunning(self) -> bool:  # noqa: N802 - the QThread name Worker has
        return self.client is not None

    def submit(self, request: JobRequest, *, supersede: bool = True) -> None:
        if request.kind == "load_model":
            self._last_load = request
        else:
            self._running = request.job_id
        if self.client is None:
            self._pending.append(request)
            return
        if supersede:
            self.client.cancel()
        self.client.submit(request)

    def cancel_current(self) -> None:
        if self.client is not None:
            self.client.cancel()

    def stop(self) -> None:
        self._stopping = True
        self.client = None
        if self._task is not None:
            self._task.cancel()  # its finally closes the connection
        if self.local is not None:
            self.local.stop()
            self.local.remove_token()

    # --- the connection task ---
    async def _serve(self) -> None:
        """Connect (starting the local worker first), read events until the connection ends, and
        restart a local worker that died, with its model reloaded before anything else."""
        from core.worker.client import LocalWorker, WorkerClient, WorkerConnectionError

        loop = asyncio.get_running_loop()
        while not self._stopping:
            client = None
            try:
                url, token = self.url, self.token
                if url is None:
                    if self.local is None:
                        self.local = LocalWorker(extra_args=self.args)
                    url, token = await loop.run_in_executor(None, self.local.start), self.local.token
                client = WorkerClient(url, token=token, on_message=self._on_message)
                caps = await client.connect()
                log.info("connected to the worker at %s (%s)", url, caps)
                self.client, pending, self._pending = client, self._pending, []
                self.connected.emit(caps)
                for req in pending:
                    client.submit(req)
                reason = await client.run()
            except WorkerConnectionError as e:
                log.error("%s", e)
                self.message.emit(WorkerMessage(MsgKind.WORKER_LOST, self._running or 0, str(e)))
                return
            finally:
                self.client = None
                if client is not None:
                    await client.close()
            if self._stopping:
                return
            code = await loop.run_in_executor(None, self.local.exit_code, 2.0) if self.local else None
            stopped = f"the worker stopped (exit code {code})"
            what = stopped if code is not None else f"lost the worker: {reason}"
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
                self._pending.insert(0, JobRequest(self._RELOAD_ID, "load_model", self._last_load.params))

    def _on_message(self, msg: WorkerMessage) -> None:
        if msg.job_id == self._RELOAD_ID:
            if msg.kind is MsgKind.ERROR:  # the model that loaded before no longer does
                self.message.emit(
                    WorkerMessage(MsgKind.WORKER_LOST, 0, f"reloading the model failed: {msg.payload}")
                )
            return
        self.message.emit(msg)
