"""The app's side of a worker connection, and starting a local worker process (no Qt here)."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from core.errors import LatentCanvasError
from core.worker import protocol
from core.worker.messages import JobRequest, WorkerMessage
from core.worker.server import READY_LINE

log = logging.getLogger(__name__)


class WorkerConnectionError(LatentCanvasError):
    """The worker could not be reached, refused the token, or speaks another protocol version."""


class WorkerClient:
    """One connection: :meth:`submit` / :meth:`cancel` from any thread; events arrive on a reader
    thread through ``on_message``; ``on_closed(reason)`` once when the connection ends."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        on_message: Callable[[WorkerMessage], None],
        on_closed: Callable[[str], None] | None = None,
    ):
        self.url, self._token = url, token
        self._on_message, self._on_closed = on_message, on_closed
        self._ws = None
        self.capabilities: dict[str, Any] = {}
        self._closing = False

    def connect(self, timeout: float = 10.0) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        try:
            opened = connect(
                self.url,
                additional_headers=headers,
                max_size=protocol.MAX_MESSAGE_BYTES,
                compression=None,
                open_timeout=timeout,
            )
            # Entered by hand, not in a with-block: the connection outlives this call (close() ends it).
            self._ws = opened.__enter__()
            self.capabilities = protocol.read_hello(self._ws.recv(timeout=timeout))
        except InvalidStatus as e:
            code = e.response.status_code
            why = "HTTP 401: the worker wants its token" if code == 401 else f"HTTP {code}"
            raise WorkerConnectionError(f"{self.url} refused the connection ({why})") from None
        except protocol.ProtocolError as e:
            raise WorkerConnectionError(f"{self.url} is not a compatible worker: {e}") from None
        except (OSError, TimeoutError, ConnectionClosed) as e:
            raise WorkerConnectionError(f"cannot reach the worker at {self.url}: {e}") from None
        threading.Thread(target=self._read, name="worker-client", daemon=True).start()
        return self.capabilities

    def submit(self, req: JobRequest) -> None:
        self._send(protocol.submit(req))

    def cancel(self) -> None:
        self._send(protocol.cancel())

    def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            self._ws.close()

    def _send(self, frame: bytes) -> None:
        if self._ws is None:
            raise WorkerConnectionError("not connected to a worker")
        try:
            self._ws.send(frame)
        except ConnectionClosed:
            pass  # the reader thread reports the closed connection

    def _read(self) -> None:
        reason = "the connection closed"
        try:
            for frame in self._ws:
                try:
                    msg = protocol.read_event(frame)
                except protocol.ProtocolError as e:
                    log.error("unreadable message from the worker: %s", e)
                    continue
                self._on_message(msg)
        except ConnectionClosed as e:
            reason = f"the connection closed ({e})"
        except OSError as e:
            reason = f"the connection failed ({e})"
        if self._on_closed is not None and not self._closing:
            self._on_closed(reason)


class LocalWorker:
    """A worker process on this machine: loopback, a free port, a per-launch token in a 0600 file."""

    def __init__(self, *, python: str = sys.executable, extra_args: tuple[str, ...] = ()):
        self.python, self.extra_args = python, extra_args
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self.token = secrets.token_urlsafe(32)
        fd, name = tempfile.mkstemp(prefix="latent-canvas-worker-", suffix=".token")
        os.write(fd, self.token.encode())
        os.close(fd)  # mkstemp makes it 0600
        self._token_file = Path(name)

    def start(self, timeout: float = 120.0) -> str:
        # A standalone (PyInstaller) build has no python to run -m with: it starts itself as the worker.
        launcher = ["--serve-worker"] if getattr(sys, "frozen", False) else ["-m", "core.worker"]
        cmd = [self.python, *launcher, "--host", "127.0.0.1", "--port", "0"]
        cmd += ["--token-file", str(self._token_file), "--parent-pid", str(os.getpid()), *self.extra_args]
        root = Path(__file__).resolve().parents[2]  # importable from a source checkout too
        path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONPATH=path)
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + timeout
        for line in self.process.stdout:  # the server prints its URL once it listens
            if line.startswith(READY_LINE):
                self.url = line[len(READY_LINE) :].strip()
                threading.Thread(target=self._drain, daemon=True).start()
                return self.url
            if time.monotonic() > deadline:
                break
        code = self.exit_code(wait=5.0)
        self.stop()
        raise WorkerConnectionError(f"the local worker did not start (exit code {code}); see the log")

    def _drain(self) -> None:
        for _ in self.process.stdout:  # keep its stdout pipe from filling up
            pass

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_code(self, wait: float = 0.0) -> int | None:
        """The process's exit code, waiting up to ``wait`` s for it (a closed connection is often seen
        a moment before the process is reaped); None while it runs."""
        if self.process is None:
            return None
        try:
            return self.process.wait(wait) if wait else self.process.poll()
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def remove_token(self) -> None:
        self._token_file.unlink(missing_ok=True)
