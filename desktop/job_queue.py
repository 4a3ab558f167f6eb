"""The app's job queue: what is queued, running, finished, failed or cancelled, as a Qt list model.

Jobs run one at a time in the order they were queued; a live request (a stroke's re-run while Live
is on) supersedes only live requests: it cancels a running live job and replaces queued live jobs,
and leaves the person's queued jobs alone. Slider frames do not pass through here (the worker keeps
only the newest of them).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, Qt, Signal

from core.worker.messages import JobRequest, MsgKind, WorkerMessage


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


DONE = (JobState.FINISHED, JobState.FAILED, JobState.CANCELLED)
KEEP_DONE = 20  # finished jobs the list keeps showing


@dataclass
class QueuedJob:
    job_id: int
    kind: str
    params: Any
    live: bool = False
    state: JobState = JobState.QUEUED
    message: str = ""
    queued_at: float = field(default_factory=time.monotonic)


class JobQueue(QAbstractListModel):
    job_started = Signal(object)  # QueuedJob, when it is handed to the worker

    def __init__(self, worker, parent=None):
        super().__init__(parent)
        self.worker = worker
        self.jobs: list[QueuedJob] = []
        self.active: QueuedJob | None = None  # handed to the worker, not finished yet

    # --- the model ---
    def rowCount(self, parent=None) -> int:  # noqa: N802 - Qt's name
        return 0 if parent is not None and parent.isValid() else len(self.jobs)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or role != Qt.ItemDataRole.DisplayRole:
            return None
        j = self.jobs[index.row()]
        text = f"#{j.job_id} {j.kind}{' (live)' if j.live else ''}: {j.state.value}"
        return f"{text} ({j.message})" if j.message else text

    # --- queueing ---
    def submit(self, job_id: int, kind: str, params, *, live: bool = False) -> QueuedJob:
        job = QueuedJob(job_id, kind, params, live)
        if live:
            for j in self.jobs:
                if j.live and j.state is JobState.QUEUED:
                    self._set(j, JobState.CANCELLED, "superseded")
            if self.active is not None and self.active.live:
                self.worker.cancel_current()
        self._append(job)
        self._pump()
        return job

    def queued(self) -> list[QueuedJob]:
        return [j for j in self.jobs if j.state is JobState.QUEUED]

    def cancel_queued(self) -> None:
        for j in self.queued():
            self._set(j, JobState.CANCELLED, "removed")

    def set_worker(self, worker) -> None:
        """A new worker (reconnected, or another one): the job it was running is lost."""
        self.worker = worker
        self.worker_lost("the worker changed")

    def find(self, job_id: int) -> QueuedJob | None:
        return next((j for j in reversed(self.jobs) if j.job_id == job_id), None)

    # --- the worker's answers ---
    def handle(self, msg: WorkerMessage) -> QueuedJob | None:
        """Update the job ``msg`` is about; returns it (None for messages about no queued job)."""
        job = self.find(msg.job_id)
        if job is None:
            return None
        if msg.kind is MsgKind.RESULT:
            self._set(job, JobState.FINISHED)
        elif msg.kind is MsgKind.CANCELLED:
            self._set(job, JobState.CANCELLED)
        elif msg.kind is MsgKind.ERROR:
            self._set(job, JobState.FAILED, str(msg.payload))
        if job.state in DONE and job is self.active:
            self.active = None
            self._pump()
        return job

    def worker_lost(self, why: str) -> None:
        """The worker stopped: its job failed; the queue goes on with the next worker."""
        if self.active is not None:
            self._set(self.active, JobState.FAILED, why)
            self.active = None
        self._pump()

    def _pump(self) -> None:
        if self.active is not None:
            return
        nxt = next(iter(self.queued()), None)
        if nxt is None:
            return
        self.active = nxt
        self._set(nxt, JobState.RUNNING)
        self.worker.submit(JobRequest(nxt.job_id, nxt.kind, nxt.params, live=nxt.live), supersede=False)
        self.job_started.emit(nxt)

    def _append(self, job: QueuedJob) -> None:
        done = [i for i, j in enumerate(self.jobs) if j.state in DONE]
        if len(done) >= KEEP_DONE:  # forget the oldest finished job
            i = done[0]
            self.beginRemoveRows(QModelIndex(), i, i)
            del self.jobs[i]
            self.endRemoveRows()
        self.beginInsertRows(QModelIndex(), len(self.jobs), len(self.jobs))
        self.jobs.append(job)
        self.endInsertRows()

    def _set(self, job: QueuedJob, state: JobState, message: str = "") -> None:
        job.state, job.message = state, message
        row = self.jobs.index(job)
        self.dataChanged.emit(self.index(row), self.index(row))
