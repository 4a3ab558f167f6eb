"""The app on a real worker process: jobs run there, and a worker killed mid-job (as by the OOM killer or
a segfault inside torch) is reported, restarted with the model reloaded, and loses none of the work."""

import asyncio
import os
import signal
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QSettings  # noqa: E402

from core.models.io import save_generator  # noqa: E402
from desktop.canvas import Tool  # noqa: E402
from desktop.main_window import MainWindow  # noqa: E402
from desktop.worker import ProcessWorker  # noqa: E402
from tests.conftest import tiny_stylegan  # noqa: E402

pytestmark = [
    pytest.mark.slow,  # starts worker processes (each imports torch: seconds)
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX"),
]


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_CANVAS_AUTOSAVE_DIR", str(tmp_path / "autosave"))
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("confirm_close", False)
    model = save_generator(tiny_stylegan(), tmp_path / "tiny.safetensors")
    w = MainWindow(model, worker=ProcessWorker(), settings=settings)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.model_info is not None, timeout=120_000)
    w.invert_panel.perc.setValue(0.0)
    w.invert_panel.mode.setCurrentIndex(0)
    yield w
    w.worker.stop()


def test_sigkill_mid_job_keeps_the_work_and_the_next_job_runs(window, qtbot):
    w = window
    w.invert_panel.steps.setValue(3)
    w.canvas.stroke([(2, 2), (14, 14)])
    w.run_job()
    qtbot.waitUntil(lambda: len(w.history_entries) == 1, timeout=60_000)
    w.canvas.tool = Tool.BRUSH
    w.canvas.stroke([(2, 14), (14, 2)])  # unsaved work after the first result
    scribble, undo = w.canvas.scribble_rgba(), w.canvas.undo_stack.count()
    w.invert_panel.steps.setValue(1_000_000)
    w.run_job()
    qtbot.waitUntil(lambda: w._last_progress is not None, timeout=60_000)  # the long job is running
    first = w.worker.local.process.pid
    os.kill(first, signal.SIGKILL)
    qtbot.waitUntil(lambda: w.step_label.text() == "worker stopped", timeout=30_000)
    status = w.statusBar().currentMessage()
    assert "worker stopped (exit code -9)" in status and "restarting" in status
    assert np.array_equal(w.canvas.scribble_rgba(), scribble) and w.canvas.undo_stack.count() == undo
    assert len(w.history_entries) == 1 and w.model_info is not None
    qtbot.waitUntil(lambda: w.worker.isRunning(), timeout=120_000)  # a new process, the model reloaded
    assert w.worker.local.process.pid != first
    w.invert_panel.steps.setValue(3)
    w.run_job()
    qtbot.waitUntil(lambda: len(w.history_entries) == 2, timeout=120_000)
    assert w.history_entries[1].images.shape[1:] == (16, 16, 3)


def test_the_connection_is_a_qasync_task_on_the_gui_thread(window, qtbot):
    """No reader thread: events are emitted by the connection's task on the qasync loop of the GUI
    thread, and the only threads are Qt's and the executor's."""
    import qasync

    w, seen = window, []

    def note(_msg):
        seen.append((threading.current_thread() is threading.main_thread(), asyncio.get_running_loop()))

    w.worker.message.connect(note)
    w.invert_panel.steps.setValue(3)
    w.canvas.stroke([(2, 2), (14, 14)])
    w.run_job()
    qtbot.waitUntil(lambda: len(w.history_entries) == 1, timeout=60_000)
    assert seen and all(main for main, _ in seen)
    assert all(isinstance(loop, qasync.QEventLoop) for _, loop in seen)
    assert not w.worker._task.done() and w.worker._task.get_loop() is seen[0][1]
    assert "worker-client" not in {t.name for t in threading.enumerate()}


@pytest.fixture
def remote(tmp_path):
    """A worker server on loopback standing in for a GPU box: started by the test, not by the app."""
    from core.worker.client import LocalWorker

    server = LocalWorker()
    url = server.start()
    yield url, server.token
    server.stop()
    server.remove_token()


def test_file_connect_to_worker_runs_jobs_there_and_a_wrong_token_is_reported(
    qtbot, tmp_path, monkeypatch, remote
):
    from PySide6.QtWidgets import QInputDialog

    url, token = remote
    monkeypatch.setenv("LATENT_CANVAS_AUTOSAVE_DIR", str(tmp_path / "autosave"))
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("confirm_close", False)
    model = save_generator(tiny_stylegan(), tmp_path / "tiny.safetensors")
    w = MainWindow(model, settings=settings)  # the in-process thread, as the tests' default
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: w.model_info is not None, timeout=60_000)
    answers = iter([(url, True), ("wrong-token", True)])
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: next(answers))
    w.connect_to_worker()  # File > Connect to worker...: URL, then a token the server refuses
    qtbot.waitUntil(lambda: w.step_label.text() == "worker stopped", timeout=30_000)
    assert "401" in w.statusBar().currentMessage() and w.worker_label.text() == url
    assert len(w.history_entries) == 0
    answers = iter([(url, True), (token, True)])
    w.connect_to_worker()
    qtbot.waitUntil(lambda: w.worker.isRunning() and w.model_info is not None, timeout=60_000)
    w.invert_panel.perc.setValue(0.0)
    w.invert_panel.steps.setValue(3)
    w.canvas.stroke([(2, 2), (14, 14)])
    w.run_job()
    qtbot.waitUntil(lambda: len(w.history_entries) == 1, timeout=60_000)
    assert w.history_entries[0].images.shape[1:] == (16, 16, 3) and w.settings.worker_url == url
    w.worker.stop()
