"""The app's side of a worker connection, and starting a local worker process (no Qt here).

The connection is asyncio (``websockets.asyncio.client``): the desktop app runs it on the qasync loop
that shares the GUI thread, so events reach the window without a reader thread or a cross-thread
signal; scripts and tests run it on any asyncio loop.
"""

from __future__ import annotations

import asyncio
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

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from core.errors import LatentCanvasError
from core.worker import protocol
from core.worker.messages import JobRequest, WorkerMessage
from core.worker.server import READY_LINE

log = logging.getLogger(__name__)


class WorkerConnectionError(LatentCanvasError):
    """The worker could not be reached, refused the token, or speaks another protocol version."""


class WorkerClient:
    """One connection, on one asyncio loop: ``await connect()``, then ``await run()`` reads events
    (each passed to ``on_message``, on the loop's thread) until the connection ends and returns why.
    :meth:`submit` and :meth:`cancel` are plain calls from the loop's thread; their frames are sent in
    the order they were made."""

    def __init__(self, url: str, *, token: str | None, on_message: Callable[[WorkerMessage], None]):
        self.url, self._token = url, token
        self._on_message = on_message
        self._ws: ClientConnection | None = None
        self._outbox: asyncio.Queue[bytes] | None = None
        self.capabilities: dict[str, Any] = {}

    async def connect(self, timeout: float = 10.0) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        try:
            self._ws = await connect(
                self.url,
                additional_headers=headers,
                max_size=protocol.MAX_MESSAGE_BYTES,
                compression=None,
                open_timeout=timeout,
            )
            hello = await asyncio.wait_for(self._ws.recv(), timeout)
            self.capabilities = protocol.read_hello(hello)
        except InvalidStatus as e:
            code = e.response.status_code
            why = "HTTP 401: the worker wants its token" if code == 401 else f"HTTP {code}"
            raise WorkerConnectionError(f"{self.url} refused the connection ({why})") from None
        except protocol.ProtocolError as e:
            await self.close()
            raise WorkerConnectionError(f"{self.url} is not a compatible worker: {e}") from None
        except (OSError, TimeoutError, ConnectionClosed) as e:
            await self.close()
            raise WorkerConnectionError(f"cannot reach the worker at {self.url}: {e}") from None
        self._outbox = asyncio.Queue()
        return self.capabilities

    def submit(self, req: JobRequest) -> None:
        self.send(protocol.submit(req))

    def cancel(self) -> None:
        self.send(protocol.cancel())

    def send(self, frame: bytes) -> None:
        """Queue one frame (in order; :meth:`run` sends it)."""
        if self._outbox is None:
            raise WorkerConnectionError("not connected to a worker")
        self._outbox.put_nowait(frame)

    async def run(self) -> str:
        """Send queued frames and read events until the connection ends; returns the reason."""
        if self._ws is None or self._outbox is None:
            raise WorkerConnectionError("not connected to a worker")
        writer = asyncio.create_task(self._write())
        reason = "the connection closed"
        try:
            async for frame in self._ws:
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
        finally:
            writer.cancel()
        return reason

    async def _write(self) -> None:
        while True:
            frame = await self._outbox.get()
            try:
                await self._ws.send(frame)
            except ConnectionClosed:
                return  # run() reports the closed connection

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()


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
