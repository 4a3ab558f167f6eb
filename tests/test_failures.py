"""Jobs that fail: the error reaches the person as a message, the job's memory is released, the worker
lives on and runs the next job; cancelling stops within one step."""

from __future__ import annotations

import gc
import io
import logging
import weakref

import numpy as np
import pytest
import torch

from core.jobs.invert import invert
from core.jobs.params import InvertParams
from core.jobs.runner import run_to_completion
from core.types import CancelToken
from tests.conftest import tiny_stylegan

pytest.importorskip("PySide6")

from desktop.worker import JobRequest, LoadModelRequest, MsgKind, Worker  # noqa: E402

TARGET = np.full((16, 16, 3), 90, np.uint8)


class FailingSynthesis:
    """Replaces a tiny StyleGAN2's synthesis: raises on chosen calls, as a GPU running out of memory does.

    Each call first allocates a scratch buffer; ``buffers`` keeps weak references to them so a test can
    see whether a failed job's memory is released afterwards.
    """

    def __init__(self, G, fail_on: set[int], error: Exception):
        self.real, self.fail_on, self.error, self.calls = G.synthesis, fail_on, error, 0
        self.buffers: list[weakref.ref] = []

    def __call__(self, ws):
        self.calls += 1
        scratch = torch.empty(256, 1024)  # 1 MiB the job holds while it runs
        self.buffers.append(weakref.ref(scratch))
        if self.calls in self.fail_on:
            # A fresh exception each time, as torch raises: a stored one would keep its traceback alive.
            raise type(self.error)(*self.error.args)
        return self.real(ws)


def failing_generator(fail_on: set[int], error: Exception):
    G = tiny_stylegan()
    G.synthesis = FailingSynthesis(G, fail_on, error)
    return G


OOM_ERRORS = {
    "cuda-oom-runtime-error": RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0)"),
    "torch-oom-error": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "mps-oom": RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB)"),
}


@pytest.fixture
def run_worker(qtbot, monkeypatch):
    """Start a worker whose model is ``G``; returns (worker, messages)."""
    started = []

    def start(G):
        monkeypatch.setattr("core.models.io.load_generator", lambda *a, **k: G)
        worker = Worker(preview_interval_s=0.0)
        got = []
        worker.message.connect(got.append)
        worker.start()
        started.append(worker)
        worker.submit(JobRequest(1, "load_model", LoadModelRequest("failing.safetensors")), supersede=False)
        qtbot.waitUntil(lambda: any(m.kind is MsgKind.MODEL_LOADED for m in got), timeout=20_000)
        return worker, got

    yield start
    for w in started:
        w.stop()


def invert_request(job_id: int, steps: int = 5) -> JobRequest:
    return JobRequest(job_id, "invert", InvertParams(target=TARGET, steps=steps, perceptual_weight=0))


def messages_for(got, job_id):
    return [m for m in got if m.job_id == job_id]


@pytest.mark.parametrize("kind", sorted(OOM_ERRORS))
def test_out_of_memory_is_reported_and_the_next_job_runs(qtbot, run_worker, kind):
    G = failing_generator({4}, OOM_ERRORS[kind])  # call 1 is the model's preview samples
    worker, got = run_worker(G)
    worker.submit(invert_request(2), supersede=False)
    qtbot.waitUntil(lambda: any(m.kind is MsgKind.ERROR for m in got), timeout=30_000)
    worker.submit(invert_request(3), supersede=False)
    qtbot.waitUntil(lambda: any(m.kind is MsgKind.RESULT for m in messages_for(got, 3)), timeout=30_000)

    kinds2 = [m.kind for m in messages_for(got, 2)]
    assert MsgKind.ERROR in kinds2 and MsgKind.RESULT not in kinds2
    error = next(m.payload for m in messages_for(got, 2) if m.kind is MsgKind.ERROR)
    assert "out of memory" in error and "try fewer samples" in error  # a hint, not a traceback
    assert "Traceback" not in error
    result = next(m.payload for m in messages_for(got, 3) if m.kind is MsgKind.RESULT)
    assert len(result.loss_history) == 5 and worker.isRunning()


def test_failed_job_releases_its_memory(qtbot, run_worker, monkeypatch):
    # Log as the app does (to a stream): pytest's own log capture keeps every record's traceback alive.
    log, stream = logging.getLogger("core.worker.engine"), io.StringIO()
    monkeypatch.setattr(log, "propagate", False)
    monkeypatch.setattr(log, "handlers", [logging.StreamHandler(stream)])
    G = failing_generator({3}, RuntimeError("CUDA out of memory."))
    worker, got = run_worker(G)
    worker.submit(invert_request(2), supersede=False)
    qtbot.waitUntil(lambda: any(m.kind is MsgKind.ERROR for m in got), timeout=30_000)
    qtbot.waitUntil(lambda: worker.engine.cancel_token is None, timeout=5_000)  # the worker's cleanup ran
    gc.collect()
    assert G.synthesis.calls == 3 and G.synthesis.buffers[1]() is None
    failing_call_buffer = G.synthesis.buffers[2]
    assert failing_call_buffer() is None  # nothing (traceback, frame, job) keeps the job's tensors
    assert "Traceback" in stream.getvalue()  # the details go to the log, not to the person


def test_other_errors_name_their_type(qtbot, run_worker):
    G = failing_generator({2}, ValueError("shapes do not match"))
    worker, got = run_worker(G)
    worker.submit(invert_request(2), supersede=False)
    qtbot.waitUntil(lambda: any(m.kind is MsgKind.ERROR for m in got), timeout=30_000)
    assert next(m.payload for m in got if m.kind is MsgKind.ERROR) == "ValueError: shapes do not match"


def test_every_job_failing_never_kills_the_worker(qtbot, run_worker):
    G = failing_generator(set(range(2, 10_000)), RuntimeError("CUDA out of memory."))
    worker, got = run_worker(G)
    for job_id in range(2, 7):  # one after another: queued requests would supersede each other
        worker.submit(invert_request(job_id), supersede=False)
        qtbot.waitUntil(lambda j=job_id: any(m.kind is MsgKind.ERROR for m in messages_for(got, j)))
    G.synthesis.fail_on = set()
    worker.submit(invert_request(7), supersede=False)
    qtbot.waitUntil(lambda: any(m.kind is MsgKind.RESULT for m in messages_for(got, 7)), timeout=30_000)


@pytest.mark.parametrize("cancel_after", [1, 3, 7])
def test_cancel_stops_within_one_step(cancel_after):
    token = CancelToken()
    job = invert(InvertParams(target=TARGET, steps=1000, perceptual_weight=0), tiny_stylegan(), cancel=token)
    result = run_to_completion(job, lambda ev: ev.step == cancel_after and token.cancel())
    # The job ended right after the step during which cancel was asked: no further step ran.
    assert result.cancelled and len(result.loss_history) == cancel_after
