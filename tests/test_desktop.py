import numpy as np
import pytest

pytest.importorskip("PySide6")

from core.models.io import save_generator  # noqa: E402
from desktop.canvas import Layer, Tool  # noqa: E402
from desktop.main_window import MainWindow  # noqa: E402
from desktop.worker import JobRequest, MsgKind, Worker  # noqa: E402
from tests.conftest import tiny_stylegan  # noqa: E402


@pytest.fixture
def model_file(tmp_path):
    return save_generator(tiny_stylegan(), tmp_path / "tiny.safetensors")


@pytest.fixture
def window(qtbot, model_file):
    w = MainWindow(model_file)
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: w.canvas.resolution == 16, timeout=20_000)
    yield w
    w.worker.stop()


def test_stroke_undo_redo(window):
    c = window.canvas
    c.tool = Tool.BRUSH
    c.stroke([(2, 2), (12, 12)])
    painted = c.scribble_rgba()[..., 3].sum()
    assert painted > 0
    c.undo_stack.undo()
    assert c.scribble_rgba()[..., 3].sum() == 0
    c.undo_stack.redo()
    assert c.scribble_rgba()[..., 3].sum() == painted
    c.tool = Tool.MASK
    c.stroke([(0, 8), (16, 8)])
    assert c.mask().max() > 0.5 and c.scribble_rgba()[..., 3].sum() == painted


def test_scribble_job_runs_and_shows_progress(window, qtbot):
    window.canvas.stroke([(2, 2), (14, 14)])
    window.steps.setValue(12)
    window.perc.setValue(0.0)
    progress = []
    window.worker.message.connect(lambda m: progress.append(m.kind))
    window.run_job()
    qtbot.waitUntil(lambda: window.history.count() == 1, timeout=30_000)
    assert MsgKind.PROGRESS in progress and MsgKind.RESULT in progress
    assert window.result_view.image is not None
    assert "done" in window.step_label.text()


def test_empty_scribble_is_refused_without_running(window, monkeypatch):
    shown = []
    monkeypatch.setattr("desktop.main_window.QMessageBox.information", lambda *a: shown.append(a[1:]))
    window.run_job()
    assert shown and window._current_job == 0


def test_new_request_supersedes_running_job(qtbot, model_file):
    from core.jobs.params import InvertParams

    worker = Worker()
    got = []
    worker.message.connect(got.append)
    worker.start()
    try:
        worker.submit(JobRequest(1, "load_model", str(model_file)), supersede=False)
        target = np.full((16, 16, 3), 100, np.uint8)
        worker.submit(
            JobRequest(2, "invert", InvertParams(target=target, steps=100_000, perceptual_weight=0))
        )
        qtbot.waitUntil(lambda: any(m.kind is MsgKind.PROGRESS for m in got), timeout=20_000)
        worker.submit(JobRequest(3, "invert", InvertParams(target=target, steps=3, perceptual_weight=0)))
        qtbot.waitUntil(lambda: any(m.job_id == 3 and m.kind is MsgKind.RESULT for m in got), timeout=20_000)
        cancelled = [m for m in got if m.job_id == 2 and m.kind is MsgKind.CANCELLED]
        assert cancelled and len(cancelled[0].payload.loss_history) < 100_000
    finally:
        worker.stop()


def test_missing_model_shows_error(qtbot, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("desktop.main_window.QMessageBox.warning", lambda *a: shown.append(a[2]))
    w = MainWindow(tmp_path / "nope.safetensors")
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: bool(shown), timeout=20_000)
    assert "not found" in shown[0]
    w.worker.stop()


def test_layers_clear_and_fill(window):
    window.canvas.fill_layer(Layer.MASK)
    assert window.canvas.mask().min() == 1.0
    window.canvas.clear_layer(Layer.MASK)
    assert window.canvas.mask().max() == 0.0
