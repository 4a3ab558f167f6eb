"""The worker process and its protocol: messages round-trip, the decoder refuses what is not a message,
the server runs jobs like the in-process engine, refuses clients without the token, and cancels the job
of a client that goes away."""

import asyncio
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import JobError
from core.jobs.events import Progress
from core.jobs.invert import invert
from core.jobs.params import InvertParams, ProjectionParams, SDEditParams
from core.jobs.runner import run_to_completion
from core.models.io import save_generator
from core.worker import protocol
from core.worker.client import WorkerClient, WorkerConnectionError
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
from core.worker.server import WorkerServer, is_loopback
from tests.conftest import tiny_stylegan

TARGET = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)


def requests():
    mask = np.zeros((16, 16), np.float32)
    mask[4:12, 4:12] = 1
    return [
        JobRequest(1, "load_model", LoadModelRequest("/models/g.safetensors", device="cuda:0")),
        JobRequest(2, "invert", InvertParams(target=TARGET, mask=mask, space="w", steps=7, starts=4)),
        JobRequest(3, "project", ProjectionParams(task="clip", prompt="an orange cat", prior="cluster")),
        JobRequest(4, "sdedit", SDEditRequest(SDEditParams(guide=TARGET, prompt="cat", size=(24, 16)), "x")),
        JobRequest(5, "interpolate_frame", InterpolateFrameRequest([np.ones((4, 8), np.float32)] * 2, "w+", 1)),  # noqa: E501
        JobRequest(6, "unload_model", UnloadModelRequest("all")),
        JobRequest(7, "interpolate_frame", InterpolateFrameRequest([np.ones((4, 8), np.float32), np.ones(12, np.float32)], "s", 0.5, ("w+", "s"))),  # noqa: E501
    ]  # fmt: skip


def same(a, b) -> bool:
    """Deep equality over dataclasses, arrays (dtype and values), tuples, lists, dicts."""
    import dataclasses

    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        )
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(
            same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("req", requests(), ids=lambda r: r.kind)
def test_every_request_round_trips(req):
    back = protocol.read_request(protocol.submit(req))
    assert same(back, req)


def test_events_round_trip_with_results(G):
    p = InvertParams(target=TARGET, steps=3, perceptual_weight=0, num_samples=2)
    result = run_to_completion(invert(p, G))
    preview = np.zeros((2, 16, 16, 3), np.uint8)
    events = [
        WorkerMessage(MsgKind.PROGRESS, 7, Progress(2, 3, {"L1": float("nan")}, preview)),
        WorkerMessage(MsgKind.RESULT, 7, result),
        WorkerMessage(MsgKind.ERROR, 8, "no model", ErrorKind.JOB),
        WorkerMessage(MsgKind.MODEL_LOADED, 9, {"name": "g", "spaces": ["w+"], "samples": result.images}),
        WorkerMessage(MsgKind.RESULT, 10, result.images[0]),
    ]  # fmt: skip
    for ev in events:
        back = protocol.read_event(protocol.event(ev))
        if ev.kind is MsgKind.PROGRESS:
            assert np.isnan(back.payload.losses["L1"])
            assert same(back.payload.preview, ev.payload.preview)
        else:
            assert same(back, ev)


def test_the_decoder_refuses_what_is_not_a_message():
    good = protocol.submit(requests()[1])
    bad = {
        "empty": b"",
        "not ours": b"GET / HTTP/1.1\r\n\r\n",
        "wrong version": good[:3] + bytes([2]) + good[4:],
        "truncated": good[:-10],
        "trailing bytes": good + b"x",
        "text": "hello",
    }
    for name, frame in bad.items():
        with pytest.raises(protocol.ProtocolError):
            protocol.read_request(frame)
        assert name
    # A type outside the allowlist, a field a dataclass lacks, a refused value, an oversized message.
    for body in (
        {"request": {"$dc": "Popen", "fields": {}}},
        {"request": {"$dc": "JobRequest", "fields": {"job_id": 1, "kind": "invert", "params": None, "x": 1}}},
        {"request": {"$dc": "LoadModelRequest", "fields": {"path": 1, "device": "cpu", "evil": 2}}},
        {"request": {"$dc": "JobRequest", "fields": {"job_id": 1, "kind": "rm -rf", "params": None}}},
    ):
        frame = protocol.encode("submit")[:0] + _raw("submit", body)
        with pytest.raises(protocol.ProtocolError):
            protocol.read_request(frame)
    with pytest.raises(protocol.ProtocolError, match="over the"):
        protocol.decode(b"LCW\x01" + b"\0" * protocol.MAX_MESSAGE_BYTES)


def _raw(kind: str, body: dict, arrays: list[dict] | None = None, tail: bytes = b"") -> bytes:
    import json
    import struct

    head = json.dumps({"v": 1, "type": kind, "body": body, "arrays": arrays or []}).encode()
    return b"LCW\x01" + struct.pack(">I", len(head)) + head + tail


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["$dc", "$nd", "$enum", "$tuple", "fields", "value", "job_id", "kind", "params", "a"]
            ),
            inner,
            max_size=4,
        )
    ),  # noqa: E501
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=256),
    body=json_values,
    shape=st.lists(st.integers(-2, 10**12), max_size=8),
    dtype=st.sampled_from(["uint8", "float32", "object", "<U4", "complex64", 3]),
    cut=st.integers(0, 400),
)
def test_fuzzed_frames_get_a_protocol_error_and_never_crash(data, body, shape, dtype, cut):
    good = protocol.submit(requests()[1])
    frames = [
        data,
        b"LCW\x01" + data,
        _raw("submit", {"request": body}),
        _raw("submit", {"request": {"$nd": 0}}, [{"dtype": dtype, "shape": shape}], data),
        good[:cut],
        good[:cut] + data,
    ]
    for frame in frames:
        try:
            protocol.read_request(frame)
        except protocol.ProtocolError:
            pass
        try:
            protocol.read_event(frame)
        except protocol.ProtocolError:
            pass


def test_only_loopback_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")


def test_a_network_address_needs_a_token():
    from core.worker.server import main

    with pytest.raises(SystemExit, match="needs --token-file"):
        main(["--host", "0.0.0.0", "--port", "0"])


# --- a server on loopback, in this process -------------------------------------------------------


class ServerThread:
    def __init__(self, token=None):
        self.server = WorkerServer(token=token, preview_interval_s=0.0)
        self.url = None
        ready = threading.Event()

        def run():
            self.loop = asyncio.new_event_loop()
            self.task = self.loop.create_task(
                self.server.serve("127.0.0.1", 0, ready=lambda url: (setattr(self, "url", url), ready.set()))
            )
            try:
                self.loop.run_until_complete(self.task)
            except asyncio.CancelledError:
                pass

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(30)

    def close(self):
        self.server.requests.put(None)
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)


class Inbox:
    """Events of one client, read by its ``run()`` task on the test's asyncio loop."""

    def __init__(self):
        self.got: list[WorkerMessage] = []
        self.reader: asyncio.Task | None = None

    def __call__(self, msg):
        self.got.append(msg)

    async def wait(self, test, timeout=60.0):
        deadline = time.monotonic() + timeout
        while not (found := [m for m in self.got if test(m)]):
            assert time.monotonic() < deadline, f"timed out; got {[(m.kind, m.job_id) for m in self.got]}"
            await asyncio.sleep(0.005)
        return found[0]


def run(coro, timeout=120.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def model_path(tmp_path):
    return save_generator(tiny_stylegan(), tmp_path / "tiny.safetensors")


@pytest.fixture
def server():
    s = ServerThread(token="s3cret")
    yield s
    s.close()


async def connect(server, token="s3cret"):
    inbox = Inbox()
    client = WorkerClient(server.url, token=token, on_message=inbox)
    await client.connect()
    inbox.reader = asyncio.create_task(client.run())
    return client, inbox


def test_a_job_over_the_connection_equals_the_job_in_process(server, model_path, G):
    async def body():
        client, inbox = await connect(server)
        assert "cpu" in client.capabilities["devices"] and "invert" in client.capabilities["jobs"]
        client.submit(JobRequest(1, "load_model", LoadModelRequest(str(model_path))))
        info = (await inbox.wait(lambda m: m.job_id == 1)).payload
        assert info["resolution"] == 16 and info["samples"].shape == (4, 16, 16, 3)
        p = InvertParams(target=TARGET, steps=6, preview_every=2, perceptual_weight=0, num_samples=2, seed=3)
        client.submit(JobRequest(2, "invert", p))
        result = (await inbox.wait(lambda m: m.job_id == 2 and m.kind is MsgKind.RESULT)).payload
        await client.close()
        assert "closed" in await inbox.reader  # run() ends with the reason once the connection closes
        return p, result, [m for m in inbox.got if m.job_id == 2 and m.kind is MsgKind.PROGRESS]

    p, result, previews = run(body())
    assert [m.payload.step for m in previews] == [2, 4, 6]
    local = run_to_completion(invert(p, tiny_stylegan()))
    assert np.array_equal(result.images, local.images) and np.allclose(result.latent, local.latent, atol=1e-6)


def test_errors_carry_a_kind_and_the_worker_serves_on(server, tmp_path, model_path):
    async def body():
        client, inbox = await connect(server)
        client.submit(JobRequest(1, "invert", InvertParams(target=TARGET, steps=2, perceptual_weight=0)))
        err = await inbox.wait(lambda m: m.job_id == 1)
        assert err.kind is MsgKind.ERROR and err.error_kind is ErrorKind.JOB and "no model" in err.payload
        (tmp_path / "bad.safetensors").write_bytes(b"not a model")
        client.submit(JobRequest(2, "load_model", LoadModelRequest(str(tmp_path / "bad.safetensors"))))
        err = await inbox.wait(lambda m: m.job_id == 2)
        assert err.kind is MsgKind.ERROR and err.error_kind is ErrorKind.MODEL
        client.send(b"LCW\x01garbage")  # a malformed frame: a protocol error back, the connection lives
        await inbox.wait(lambda m: m.error_kind is ErrorKind.PROTOCOL)
        client.submit(JobRequest(3, "load_model", LoadModelRequest(str(model_path))))
        assert (await inbox.wait(lambda m: m.job_id == 3)).kind is MsgKind.MODEL_LOADED
        await client.close()

    run(body())


def test_a_client_without_the_token_gets_401_and_nothing_runs(server, caplog):
    async def body():
        for token in (None, "wrong"):
            with pytest.raises(WorkerConnectionError, match="401"):
                await connect(server, token=token)

    run(body())
    assert server.server.engine.running is None and server.server._owners == {}
    assert any("401" in r.getMessage() for r in caplog.records)


def test_a_client_that_goes_away_has_its_job_cancelled_and_the_next_client_is_served(server, model_path):
    async def body():
        a, inbox_a = await connect(server)
        a.submit(JobRequest(1, "load_model", LoadModelRequest(str(model_path))))
        await inbox_a.wait(lambda m: m.job_id == 1)
        a.submit(JobRequest(2, "invert", InvertParams(target=TARGET, steps=1_000_000, perceptual_weight=0)))
        await inbox_a.wait(lambda m: m.job_id == 2 and m.kind is MsgKind.STARTED)
        engine = server.server.engine
        await a.close()
        deadline = time.monotonic() + 10
        while engine.running is not None:  # cancelled within a step, not after a million
            assert time.monotonic() < deadline, "the job of the client that left kept running"
            await asyncio.sleep(0.01)
        b, inbox_b = await connect(server)
        b.submit(JobRequest(1, "invert", InvertParams(target=TARGET, steps=3, perceptual_weight=0)))
        done = await inbox_b.wait(lambda m: m.job_id == 1 and m.kind in (MsgKind.RESULT, MsgKind.ERROR))
        assert done.kind is MsgKind.RESULT
        await b.close()

    run(body())


def test_live_requests_supersede_live_jobs_and_queued_jobs_wait_their_turn(server, model_path):
    async def body():
        client, inbox = await connect(server)
        client.submit(JobRequest(1, "load_model", LoadModelRequest(str(model_path))))
        await inbox.wait(lambda m: m.job_id == 1)
        long = InvertParams(target=TARGET, steps=1_000_000, perceptual_weight=0)
        short = InvertParams(target=TARGET, steps=3, perceptual_weight=0)
        client.submit(JobRequest(2, "invert", long, live=True))
        await inbox.wait(lambda m: m.job_id == 2 and m.kind is MsgKind.STARTED)
        client.submit(JobRequest(3, "invert", short, live=True))  # supersedes 2
        superseded = await inbox.wait(lambda m: m.job_id == 2 and m.kind is not MsgKind.STARTED)
        assert superseded.kind is MsgKind.CANCELLED
        assert await inbox.wait(lambda m: m.job_id == 3 and m.kind is MsgKind.RESULT)
        client.submit(JobRequest(4, "invert", InvertParams(target=TARGET, steps=40, perceptual_weight=0)))
        client.submit(JobRequest(5, "invert", short))  # queued behind 4: both run, in order
        assert await inbox.wait(lambda m: m.job_id == 5 and m.kind is MsgKind.RESULT)
        done = [m.job_id for m in inbox.got if m.kind is MsgKind.RESULT]
        assert done[-2:] == [4, 5]
        client.cancel()
        await client.close()

    run(body())


def test_unload_frees_what_was_asked_and_the_hello_lists_the_models(model_path):
    from core.worker.engine import Engine

    with pytest.raises(JobError, match="unload what"):
        UnloadModelRequest("everything")
    got = []
    engine = Engine(got.append)
    engine.handle(JobRequest(1, "load_model", LoadModelRequest(str(model_path))))
    engine._resources[("clip", "cpu")] = object()  # as a CLIP job leaves it
    models = engine.capabilities()["models"]
    assert models["generator"] == str(model_path) and models["resources"] == ["('clip', 'cpu')"]
    assert all(isinstance(p, str) for p in models["available"])
    engine.handle(JobRequest(2, "unload_model", UnloadModelRequest("resources")))
    assert got[-1].kind is MsgKind.MODEL_UNLOADED and got[-1].payload["freed"] == ["('clip', 'cpu')"]
    assert engine._resources == {} and got[-1].payload["models"]["generator"] == str(model_path)
    engine.handle(JobRequest(3, "invert", InvertParams(target=TARGET, steps=1, perceptual_weight=0)))
    assert got[-1].kind is MsgKind.RESULT  # the generator stayed
    engine.handle(JobRequest(4, "unload_model", UnloadModelRequest("all")))
    assert got[-1].payload["freed"] == [str(model_path)] and engine.models()["generator"] is None
    engine.handle(JobRequest(5, "invert", InvertParams(target=TARGET, steps=1, perceptual_weight=0)))
    assert got[-1].kind is MsgKind.ERROR and "no model" in got[-1].payload


def test_the_request_queue_keeps_order_and_only_the_newest_live_request():
    from core.worker.engine import RequestQueue

    q = RequestQueue()
    p = InvertParams(target=TARGET, steps=1)
    for job_id, live in ((1, False), (2, True), (3, True), (4, False), (5, True), (6, True), (7, True)):
        q.put(JobRequest(job_id, "invert", p, live=live))
    q.put(None)
    order, dropped = [], []
    q.on_drop = lambda r: dropped.append(r.job_id)
    while (r := q.next()) is not None:
        order.append(r.job_id)
    assert order == [1, 3, 4, 7] and dropped == [2, 5, 6]


def test_what_the_loader_warns_about_reaches_the_app(monkeypatch, model_path):
    import logging

    from core.worker.engine import Engine

    real = __import__("core.models.io", fromlist=["load_generator"]).load_generator

    def load_and_warn(path, **kw):
        logging.getLogger("core.models.stylegan_pkl").warning(
            "g.pkl: its embedded network code is not NVlabs'"
        )
        return real(path, **kw)

    monkeypatch.setattr("core.models.io.load_generator", load_and_warn)
    got = []
    Engine(got.append).handle(JobRequest(1, "load_model", LoadModelRequest(str(model_path))))
    assert got[0].kind is MsgKind.MODEL_LOADED and got[0].payload["warnings"] == [
        "g.pkl: its embedded network code is not NVlabs'"
    ]  # noqa: E501
    got.clear()
    monkeypatch.setattr("core.models.io.load_generator", real)
    Engine(got.append).handle(JobRequest(2, "load_model", LoadModelRequest(str(model_path))))
    assert got[0].payload["warnings"] == []
