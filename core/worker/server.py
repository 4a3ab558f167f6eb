"""``latent-canvas-worker``: the engine behind a WebSocket, for the app on this machine or another.

Why ``websockets``: the protocol is one long-lived, bidirectional stream of binary frames per client
(requests one way; progress, previews and results the other), which is what RFC 6455 is for; the
library does the framing, size limits, keep-alive pings and the HTTP handshake where the bearer
token is checked, with no web framework under it. TLS: ``--ssl-certfile/--ssl-keyfile``, or a
reverse proxy in front (README).

Security: on loopback a token is optional (the app always passes a per-launch one); listening on
any other address requires ``--token-file``. A handshake without ``Authorization: Bearer <token>``
gets HTTP 401 and is logged. Messages are decoded by ``core.worker.protocol`` (no pickle). Model
paths name files on the worker's machine and load through the same safe loaders as the app.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import itertools
import logging
import os
import ssl
import sys
import threading
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from core.worker import protocol
from core.worker.engine import Engine, RequestQueue
from core.worker.messages import JobRequest, MsgKind, WorkerMessage

log = logging.getLogger("latent_canvas.worker")
READY_LINE = "latent-canvas-worker listening on"  # the app reads the URL after it from stdout


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WorkerServer:
    """One engine (one thread running jobs, the models it loaded) shared by the connected clients."""

    def __init__(self, *, token: str | None, preview_interval_s: float = 0.05):
        self.token = token
        self.loop: asyncio.AbstractEventLoop | None = None
        self.requests = RequestQueue()
        self.engine = Engine(self._on_engine_message, preview_interval_s=preview_interval_s)
        self._ids = itertools.count(1)
        self._owners: dict[int, tuple[ServerConnection, int]] = {}  # engine job id -> (client, its id)
        self._owners_lock = threading.Lock()  # the loop adds and drops owners, the engine's thread too
        self._outboxes: dict[ServerConnection, asyncio.Queue] = {}
        self._thread = threading.Thread(target=self.engine.serve, args=(self.requests,), daemon=True)

    # --- the engine's thread ---
    def _on_engine_message(self, msg: WorkerMessage) -> None:
        done = msg.kind in (MsgKind.RESULT, MsgKind.CANCELLED, MsgKind.ERROR, MsgKind.MODEL_LOADED)
        with self._owners_lock:
            owner = self._owners.pop(msg.job_id, None) if done else self._owners.get(msg.job_id)
        if owner is None or self.loop is None:
            return
        conn, client_id = owner
        frame = protocol.event(WorkerMessage(msg.kind, client_id, msg.payload, msg.error_kind))
        self.loop.call_soon_threadsafe(self._post, conn, frame)

    # --- the event loop ---
    def _post(self, conn: ServerConnection, frame: bytes) -> None:
        box = self._outboxes.get(conn)
        if box is not None:
            box.put_nowait(frame)

    def authorise(self, conn: ServerConnection, request):
        """The handshake hook: HTTP 401 unless the bearer token matches (when one is set)."""
        if self.token is None:
            return None
        got = request.headers.get("Authorization", "")
        if hmac.compare_digest(got.encode(), f"Bearer {self.token}".encode()):
            return None
        log.warning("refused a connection from %s: missing or wrong token (HTTP 401)", conn.remote_address)
        return conn.respond(HTTPStatus.UNAUTHORIZED, "a valid bearer token is required\n")

    async def handle(self, conn: ServerConnection) -> None:
        box: asyncio.Queue = asyncio.Queue()
        self._outboxes[conn] = box
        sender = asyncio.create_task(self._send_loop(conn, box))
        log.info("client %s connected", conn.remote_address)
        try:
            box.put_nowait(protocol.hello(self.engine.capabilities() | {"pid": os.getpid()}))
            async for frame in conn:
                self._receive(conn, frame)
        except ConnectionClosed:
            pass
        finally:
            self._client_gone(conn)
            sender.cancel()
            log.info("client %s disconnected", conn.remote_address)

    async def _send_loop(self, conn: ServerConnection, box: asyncio.Queue) -> None:
        try:
            while True:
                await conn.send(await box.get())
        except ConnectionClosed:
            pass

    def _receive(self, conn: ServerConnection, frame: Any) -> None:
        try:
            req = protocol.read_request(frame)
        except protocol.ProtocolError as e:
            log.warning("protocol error from %s: %s", conn.remote_address, e)
            self._post(conn, protocol.protocol_error(str(e)))
            return
        mine = self._owned_by(conn)
        if req is None:  # cancel
            self.engine.cancel_if(mine)
            return
        if req.live:  # live requests supersede this client's running live job (the app's JobQueue: docs)
            self.engine.cancel_if(lambda running: running.live and mine(running))
        job_id = next(self._ids)
        with self._owners_lock:
            self._owners[job_id] = (conn, req.job_id)
        self.requests.put(JobRequest(job_id, req.kind, req.params, live=req.live))

    def _owned_by(self, conn: ServerConnection):
        def mine(req: JobRequest) -> bool:
            with self._owners_lock:
                return self._owners.get(req.job_id, (None, 0))[0] is conn

        return mine

    def _client_gone(self, conn: ServerConnection) -> None:
        """Cancel what it was running (within one step), drop what it queued."""
        mine = self._owned_by(conn)
        self.engine.cancel_if(mine)
        self.requests.drop(lambda req: not mine(req))
        self._outboxes.pop(conn, None)
        running = self.engine.running
        with self._owners_lock:  # keep the running job's owner: its last message is still to come
            for job_id in [j for j, (c, _) in self._owners.items() if c is conn]:
                if running is None or running.job_id != job_id:
                    del self._owners[job_id]

    async def serve(self, host: str, port: int, *, ssl_context=None, ready=None) -> None:
        self.loop = asyncio.get_running_loop()
        self._thread.start()
        async with serve(
            self.handle,
            host,
            port,
            process_request=self.authorise,
            max_size=protocol.MAX_MESSAGE_BYTES,
            ssl=ssl_context,
            compression=None,  # previews are raw arrays; deflate costs more CPU than the link saves
        ) as server:
            sock_port = server.sockets[0].getsockname()[1]
            scheme = "wss" if ssl_context else "ws"
            url = f"{scheme}://{host}:{sock_port}"
            print(f"{READY_LINE} {url}", flush=True)
            if ready is not None:
                ready(url)
            await asyncio.Future()  # until cancelled


def _watch_parent(pid: int) -> None:
    """Exit when the app that started this worker is gone (no orphaned workers holding memory)."""
    import time

    while True:
        time.sleep(1.0)
        if os.getppid() != pid:
            log.info("the app (pid %d) is gone: stopping", pid)
            os._exit(0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latent-canvas-worker", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free port, printed at start)")
    p.add_argument("--token-file", type=Path, help="file holding the bearer token clients must send")
    p.add_argument("--ssl-certfile", type=Path, help="serve wss:// with this certificate (PEM)")
    p.add_argument("--ssl-keyfile", type=Path, help="... and this private key (PEM)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--preview-interval",
        type=float,
        default=0.05,
        help="seconds between previews (the app's repaint)",
    )
    p.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)  # the app that started this worker
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    token = a.token_file.read_text().strip() if a.token_file else None
    if a.token_file and not token:
        sys.exit(f"latent-canvas-worker: {a.token_file} is empty")
    if not is_loopback(a.host) and token is None:
        sys.exit(
            "latent-canvas-worker: listening on a network address needs --token-file "
            "(anyone who can reach the port could run jobs and read files through it)"
        )
    ssl_context = None
    if a.ssl_certfile:
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_context.load_cert_chain(a.ssl_certfile, a.ssl_keyfile)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.parent_pid:
        threading.Thread(target=_watch_parent, args=(a.parent_pid,), daemon=True).start()
    try:
        server = WorkerServer(token=token, preview_interval_s=a.preview_interval)
        asyncio.run(server.serve(a.host, a.port, ssl_context=ssl_context))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
