"""The app's job queue (order, states, live requests superseding only live ones) and its settings."""

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QSettings  # noqa: E402

from desktop.job_queue import JobQueue, JobState  # noqa: E402
from desktop.settings import Settings  # noqa: E402
from desktop.worker import InterpolateFrameRequest, MsgKind, WorkerMessage  # noqa: E402

P = InterpolateFrameRequest([], "w+", 0.0)  # any request of the kind the jobs below name


class FakeWorker:
    def __init__(self):
        self.sent, self.cancels = [], 0

    def submit(self, req, *, supersede=True):
        assert not supersede  # the queue decides what to cancel
        self.sent.append(req)

    def cancel_current(self):
        self.cancels += 1


def states(q):
    return [(j.job_id, j.state) for j in q.jobs]


def test_jobs_run_one_at_a_time_in_order(qapp):
    w = FakeWorker()
    q = JobQueue(w)
    started = []
    q.job_started.connect(lambda j: started.append(j.job_id))
    for i in (1, 2, 3):
        q.submit(i, "interpolate_frame", P)
    assert [r.job_id for r in w.sent] == [1] and states(q)[1:] == [(2, JobState.QUEUED), (3, JobState.QUEUED)]
    q.handle(WorkerMessage(MsgKind.STARTED, 1))
    q.handle(WorkerMessage(MsgKind.RESULT, 1, None))
    q.handle(WorkerMessage(MsgKind.ERROR, 2, "bad input"))
    assert [r.job_id for r in w.sent] == [1, 2, 3] and started == [1, 2, 3]
    assert states(q) == [(1, JobState.FINISHED), (2, JobState.FAILED), (3, JobState.RUNNING)]
    assert q.data(q.index(1)) == "#2 interpolate_frame: failed (bad input)"
    assert q.rowCount() == 3


def test_a_live_request_supersedes_only_live_requests(qapp):
    w = FakeWorker()
    q = JobQueue(w)
    q.submit(1, "interpolate_frame", P)  # the person's job: runs
    q.submit(2, "interpolate_frame", P, live=True)  # a stroke's re-run: waits, does not cancel job 1
    q.submit(3, "interpolate_frame", P)
    q.submit(4, "interpolate_frame", P, live=True)  # replaces the queued live job 2, not job 3
    assert w.cancels == 0
    assert states(q) == [
        (1, JobState.RUNNING),
        (2, JobState.CANCELLED),
        (3, JobState.QUEUED),
        (4, JobState.QUEUED),
    ]
    q.handle(WorkerMessage(MsgKind.RESULT, 1))
    q.handle(WorkerMessage(MsgKind.RESULT, 3))
    assert q.active.job_id == 4 and q.active.live
    q.submit(5, "interpolate_frame", P, live=True)  # a running live job is cancelled for the newer one
    assert w.cancels == 1
    q.handle(WorkerMessage(MsgKind.CANCELLED, 4))
    assert [r.job_id for r in w.sent] == [1, 3, 4, 5] and all(r.live == (r.job_id in (4, 5)) for r in w.sent)


def test_a_lost_worker_fails_its_job_and_the_queue_goes_on(qapp):
    w = FakeWorker()
    q = JobQueue(w)
    q.submit(1, "interpolate_frame", P)
    q.submit(2, "interpolate_frame", P)
    q.worker_lost("the worker stopped (exit code -9)")
    assert states(q) == [(1, JobState.FAILED), (2, JobState.RUNNING)]
    assert "exit code -9" in q.jobs[0].message
    q.cancel_queued()  # nothing queued: the running job is the worker's to stop
    assert q.jobs[1].state is JobState.RUNNING


def test_settings_round_trip_with_defaults(tmp_path):
    s = Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert s.brush_size == 4 and s.live is False and s.confirm_close is True and s.autosave_seconds == 120
    assert s.panel("invert", "steps", 200) == 200 and s.recent_images == []
    s.brush_size, s.live, s.worker_url = 9, True, "wss://gpu:8765"
    s.set_panel("invert", "steps", 50)
    for i in range(10):
        s.add_recent_image(f"/img/{i}.png")
    s.add_recent_image("/img/3.png")
    again = Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert (again.brush_size, again.live, again.worker_url) == (9, True, "wss://gpu:8765")
    assert again.panel("invert", "steps", 200) == 50
    assert again.recent_images[0] == "/img/3.png" and len(again.recent_images) == 8
