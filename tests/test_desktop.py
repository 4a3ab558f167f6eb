import json

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QPoint, QPointF, QSettings, Qt  # noqa: E402

from core.models.io import save_generator
from desktop.canvas import Layer, Tool  # noqa: E402
from desktop.main_window import MainWindow  # noqa: E402
from desktop.widgets import StallMeter  # noqa: E402
from desktop.worker import JobRequest, LoadModelRequest, MsgKind, Worker  # noqa: E402
from tests.conftest import tiny_stylegan  # noqa: E402


@pytest.fixture
def model_file(tmp_path):
    return save_generator(tiny_stylegan(), tmp_path / "tiny.safetensors")


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_CANVAS_AUTOSAVE_DIR", str(tmp_path / "autosave"))
    s = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    s.setValue("confirm_close", False)
    return s


@pytest.fixture
def window(qtbot, model_file, settings):
    w = MainWindow(model_file, settings=settings)
    qtbot.addWidget(w)
    w.resize(1000, 700)
    w.show()
    qtbot.waitUntil(lambda: w.model_info is not None, timeout=60_000)
    w.invert_panel.perc.setValue(0.0)  # no perceptual backbone on test machines
    yield w
    w.worker.stop()


def _wait_result(window, qtbot, n=1):
    qtbot.waitUntil(lambda: len(window.history_entries) >= n, timeout=120_000)


def test_stroke_undo_redo(window):
    c = window.canvas
    assert c.resolution == 16
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


def test_mouse_strokes_paint_where_the_pointer_went(window, qtbot):
    c = window.canvas
    r = c.view_rect()
    to_widget = lambda x, y: QPoint(int(r.x() + x * r.width() / 16), int(r.y() + y * r.height() / 16))  # noqa: E731
    qtbot.mousePress(c, Qt.MouseButton.LeftButton, pos=to_widget(3, 3))
    for x in range(3, 13):
        qtbot.mouseMove(c, to_widget(x, x))
    qtbot.mouseRelease(c, Qt.MouseButton.LeftButton, pos=to_widget(12, 12))
    alpha = c.scribble_rgba()[..., 3]
    assert alpha[8, 8] > 0 and alpha[2, 13] == 0  # on the diagonal, not off it
    assert c.undo_stack.count() == 1
    window.canvas.undo_stack.undo()
    assert c.scribble_rgba()[..., 3].sum() == 0


def test_zoom_keeps_the_point_under_the_cursor(window):
    c = window.canvas
    anchor = QPointF(c.width() * 0.3, c.height() * 0.4)
    before = c.to_image(anchor)
    c.set_zoom(3.0, anchor)
    after = c.to_image(anchor)
    assert abs(before.x() - after.x()) < 1e-6 and abs(before.y() - after.y()) < 1e-6
    assert c.view_rect().width() == pytest.approx(3 * min(c.width(), c.height()))
    c.fit()
    assert c.zoom == 1.0


@pytest.mark.slow
def test_scribble_job_runs_and_shows_progress(window, qtbot):
    window.canvas.stroke([(2, 2), (14, 14)])
    window.invert_panel.steps.setValue(12)
    kinds = []
    window.worker.message.connect(lambda m: kinds.append(m.kind))
    assert window.run_job()
    _wait_result(window, qtbot)
    assert MsgKind.PROGRESS in kinds and MsgKind.RESULT in kinds
    entry = window.history_entries[0]
    assert entry.images.shape == (1, 16, 16, 3) and entry.ws.shape[0] == 1
    assert len(entry.losses) == 12 and window.loss_plot.points
    assert window.result_view.image is not None and "done" in window.step_label.text()


def test_empty_scribble_is_refused_without_running(window, monkeypatch):
    shown = []
    monkeypatch.setattr("desktop.main_window.QMessageBox.information", lambda *a: shown.append(a[1:]))
    assert not window.run_job()
    assert shown and window._current_job == 0


def test_truncation_reaches_the_jobs_and_the_start_samples_use_it(window):
    window.canvas.stroke([(2, 2), (14, 14)])
    window.invert_panel.truncation.setValue(0.6)
    window.prior_panel.truncation.setValue(0.4)
    assert window.invert_panel.params(window.canvas).truncation == 0.6
    window.prior_panel.prompt.setText("a cat")
    assert window.prior_panel.params(window.canvas).truncation == 0.4
    assert window.model_info["samples"].shape[0] == 4  # drawn at START_TRUNCATION


def test_variations_grid_and_pick(window, qtbot):
    window.canvas.stroke([(2, 2), (14, 14)])
    window.invert_panel.steps.setValue(3)
    window.invert_panel.samples.setValue(4)
    window.invert_panel.init.setCurrentText("random")
    window.run_job()
    _wait_result(window, qtbot)
    assert len(window.result_view.images) == 4
    window.result_view.picked.emit(2)
    assert window.history_entries[0].selected == 2


def test_stop_discards_accept_keeps(window, qtbot):
    window.canvas.stroke([(2, 2), (14, 14)])
    window.invert_panel.steps.setValue(100_000)
    window.run_job()
    qtbot.waitUntil(lambda: window._last_progress is not None, timeout=60_000)
    window.stop_job()
    qtbot.waitUntil(lambda: window.step_label.text() == "stopped", timeout=60_000)
    assert window.history_entries == []
    window.run_job()
    qtbot.waitUntil(lambda: window._last_progress is not None, timeout=60_000)
    window.accept_current()
    _wait_result(window, qtbot)
    entry = window.history_entries[0]
    assert entry.cancelled and 0 < len(entry.losses) < 100_000


def test_branch_restarts_from_the_current_latent(window, qtbot):
    window.canvas.stroke([(2, 2), (14, 14)])
    window.invert_panel.steps.setValue(100_000)
    window.run_job()
    qtbot.waitUntil(lambda: window._last_progress is not None, timeout=60_000)
    first = window._current_job
    sent = []
    window.worker.submit = lambda req, **kw: (sent.append(req), Worker.submit(window.worker, req, **kw))
    window.branch_from_current()  # stops the running job; the branch starts once it has stopped
    qtbot.waitUntil(lambda: window._current_job != first and bool(sent), timeout=30_000)
    params = sent[-1].params
    assert params.init == "latent" and params.init_latent.shape[0] == 1
    window.stop_job()


def test_live_mode_reruns_after_a_stroke_warm_started(window, qtbot):
    window.invert_panel.steps.setValue(5)
    window.live.setChecked(True)
    window.canvas.stroke([(2, 2), (14, 14)])
    _wait_result(window, qtbot, 1)
    sent = []
    window.worker.submit = lambda req, **kw: (sent.append(req), Worker.submit(window.worker, req, **kw))
    window.canvas.stroke([(2, 14), (14, 2)])
    _wait_result(window, qtbot, 2)
    assert sent[-1].params.init == "latent"  # warm start from the previous result


def _two_results_then_slide_to_the_second(window, qtbot, **second) -> np.ndarray:
    """A scribble result, then a second one with the panel's ``second`` settings (control name ->
    value); both selected, the slider moved to its end: the last interpolation frame that arrived."""
    window.canvas.stroke([(2, 2), (14, 14)])
    window.invert_panel.steps.setValue(4)
    window.run_job()
    _wait_result(window, qtbot, 1)
    for name, value in second.items():
        control = getattr(window.invert_panel, name)
        control.setCurrentText(value) if isinstance(value, str) else control.setValue(value)
    window.run_job()
    _wait_result(window, qtbot, 2)
    window.history.selectAll()
    assert window.interp_panel.slider.isEnabled()
    frames = []
    window.worker.message.connect(lambda m: isinstance(m.payload, np.ndarray) and frames.append(m.payload))
    window.interp_panel.slider.setValue(0)
    window.interp_panel.slider.setValue(1000)
    qtbot.waitUntil(lambda: len(frames) >= 1, timeout=60_000)
    qtbot.wait(300)
    return frames[-1]


@pytest.mark.slow
def test_interpolation_slider_between_two_results(window, qtbot):
    last = _two_results_then_slide_to_the_second(window, qtbot, seed=5, init="random")
    assert last.shape == (16, 16, 3)
    assert np.abs(last.astype(int) - window.history_entries[1].image.astype(int)).max() <= 1


@pytest.mark.slow
def test_interpolation_slider_reaches_a_style_space_result(window, qtbot):
    """A Style-space result (no ws) is a key frame too: the path runs in Style space."""
    last = _two_results_then_slide_to_the_second(window, qtbot, space="s")
    assert window.history_entries[1].space == "s" and window.history_entries[1].ws is None
    assert np.abs(last.astype(int) - window.history_entries[1].image.astype(int)).max() <= 1


def test_gui_keeps_serving_while_a_job_runs(window, qtbot):
    window.canvas.stroke([(2, 2), (14, 14)])
    window.invert_panel.steps.setValue(20)
    meter = StallMeter(5)
    meter.start()
    window.run_job()
    _wait_result(window, qtbot)
    stats = meter.stop()
    print("event-loop stalls while a job ran:", stats)
    assert stats["ticks"] > 10
    # A GUI thread running the job would stall for whole steps, every step. Bounds are loose because CI
    # machines are shared; bench/ measures the real figures (p99 < 16 ms goal) on a quiet machine.
    assert stats["p99_ms"] < 250


def test_new_request_supersedes_running_job(qtbot, model_file):
    from core.jobs.params import InvertParams

    worker = Worker()
    got = []
    worker.message.connect(got.append)
    worker.start()
    try:
        worker.submit(JobRequest(1, "load_model", LoadModelRequest(str(model_file))), supersede=False)
        target = np.full((16, 16, 3), 100, np.uint8)
        worker.submit(
            JobRequest(2, "invert", InvertParams(target=target, steps=100_000, perceptual_weight=0))
        )
        qtbot.waitUntil(lambda: any(m.kind is MsgKind.PROGRESS for m in got), timeout=60_000)
        worker.submit(JobRequest(3, "invert", InvertParams(target=target, steps=3, perceptual_weight=0)))
        qtbot.waitUntil(lambda: any(m.job_id == 3 and m.kind is MsgKind.RESULT for m in got), timeout=60_000)
        cancelled = [m for m in got if m.job_id == 2 and m.kind is MsgKind.CANCELLED]
        assert cancelled and len(cancelled[0].payload.loss_history) < 100_000
    finally:
        worker.stop()


def test_missing_model_offers_to_locate(qtbot, tmp_path, monkeypatch, settings):
    shown = []
    monkeypatch.setattr(MainWindow, "_model_failed", lambda self, m: shown.append(m))
    w = MainWindow(tmp_path / "nope.safetensors", settings=settings)
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: bool(shown), timeout=60_000)
    assert "not found" in shown[0]
    w.worker.stop()


def test_model_picker_lists_bundled_generators_only(window):
    names = [window.model_picker.itemText(i) for i in range(window.model_picker.count())]
    assert "stylegan2-cats64" in names and names[-1] == "Open model…"
    assert not any("wstats" in n or "clip" in n for n in names)


def test_layers_clear_and_fill(window):
    window.canvas.fill_layer(Layer.MASK)
    assert window.canvas.mask().min() == 1.0
    window.canvas.clear_layer(Layer.MASK)
    assert window.canvas.mask().max() == 0.0


def test_open_image_recent_and_save_result_metadata(window, qtbot, tmp_path):
    from PIL import Image

    from core.imageio import save_png

    src = save_png(np.full((40, 30, 3), 200, np.uint8), tmp_path / "in.png")
    assert window.open_image(str(src))
    assert window.canvas.base_rgb().shape == (16, 16, 3) and window.recent_files()[0] == str(src.resolve())
    window.canvas.undo_stack.undo()  # setting the base is undoable
    assert window.canvas.base_rgb()[0, 0, 0] == 128
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    warned = []
    window_box = "desktop.main_window.QMessageBox.warning"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(window_box, lambda *a: warned.append(a[2]))
        assert not window.open_image(str(bad))
    assert warned
    window.canvas.stroke([(2, 2), (14, 14)])
    window.invert_panel.steps.setValue(3)
    window.run_job()
    _wait_result(window, qtbot)
    out = window.save_result(str(tmp_path / "out.png"))
    meta = json.loads(Image.open(out).text["latent-canvas"])
    assert meta["kind"] == "invert" and meta["params"]["steps"] == 3


def test_project_save_and_reopen_round_trip(window, qtbot, tmp_path):
    window.canvas.stroke([(2, 2), (14, 14)])
    window.canvas.tool = Tool.MASK
    window.canvas.stroke([(0, 8), (16, 8)])
    window.invert_panel.steps.setValue(3)
    window.invert_panel.mode.setCurrentIndex(0)
    window.run_job()
    _wait_result(window, qtbot)
    saved = window.save_project(path=str(tmp_path / "session"))
    assert saved.name == "session.lcproj"
    scribble, mask = window.canvas.scribble_rgba(), window.canvas.mask()
    ws = window.history_entries[0].ws
    window.canvas.clear_layer(Layer.SCRIBBLE)
    window.history_entries.clear()
    assert window.open_project(str(saved))
    assert np.array_equal(window.canvas.scribble_rgba()[..., 3], scribble[..., 3])
    assert np.abs(window.canvas.mask() - mask).max() < 1 / 255 + 1e-6
    assert len(window.history_entries) == 1 and np.allclose(window.history_entries[0].ws, ws)
    assert window.history_entries[0].params["steps"] == 3


def test_damaged_project_gives_a_message(window, tmp_path, monkeypatch):
    bad = tmp_path / "bad.lcproj"
    bad.write_bytes(b"PK\x03\x04 truncated")
    warned = []
    monkeypatch.setattr("desktop.main_window.QMessageBox.warning", lambda *a: warned.append(a[2]))
    assert not window.open_project(str(bad)) and "bad.lcproj" in warned[0]


def test_killed_app_is_offered_recovery(qtbot, tmp_path, model_file, settings, monkeypatch):
    """Run the real app in a child process, let it autosave, SIGKILL it, then start a window."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from core.imageio import save_png

    autosave = tmp_path / "autosave"
    image = save_png(np.full((16, 16, 3), (200, 30, 60), np.uint8), tmp_path / "red.png")
    conf = tmp_path / "home" / ".config" / "LatentCanvas" / "LatentCanvas.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("[autosave]\nseconds=1\n")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "LATENT_CANVAS_AUTOSAVE_DIR": str(autosave)}
    cmd = [sys.executable, "-m", "desktop.app", "--model", str(model_file), "--image", str(image)]
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while not list(autosave.glob("session-*.lcproj")) and time.time() < deadline:
            time.sleep(0.2)
        assert list(autosave.glob("session-*.lcproj")), "the app never autosaved"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    asked = []
    monkeypatch.setattr(
        "desktop.main_window.QMessageBox.question",
        lambda *a, **k: (
            asked.append(a[2]) or __import__("PySide6.QtWidgets").QtWidgets.QMessageBox.StandardButton.Yes
        ),
    )
    w = MainWindow(model_file, settings=settings)
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: bool(asked), timeout=60_000)
    qtbot.waitUntil(lambda: tuple(w.canvas.base_rgb()[8, 8]) == (200, 30, 60), timeout=60_000)
    w.worker.stop()


def test_image_opened_while_the_model_loads_survives_its_arrival(qtbot, tmp_path, model_file, settings):
    """`latent-canvas --image x.png` opens the image before the worker has loaded the model; the
    model's arrival used to reset the canvas to grey (and an autosave could then keep the grey one)."""
    from core.imageio import save_png

    image = save_png(np.full((16, 16, 3), (200, 30, 60), np.uint8), tmp_path / "red.png")
    w = MainWindow(model_file, settings=settings)
    qtbot.addWidget(w)
    assert w.model_info is None  # the worker's message cannot arrive before the event loop runs
    assert w.open_image(str(image))
    r = w.canvas.resolution  # the size before the model arrives
    w.canvas.stroke([(r / 4, r / 4), (3 * r / 4, 3 * r / 4)])
    qtbot.waitUntil(lambda: w.model_info is not None, timeout=60_000)
    assert tuple(w.canvas.base_rgb()[8, 8]) == (200, 30, 60)
    assert w.canvas.scribble_rgba()[8, 8, 3] > 0  # the scribble too, scaled to the model's 16 px
    w.worker.stop()


@pytest.mark.slow
def test_prior_panel_runs_a_scribble_projection(window, qtbot):
    window.canvas.stroke([(2, 2), (14, 14)])
    p = window.prior_panel
    window.tabs.setCurrentWidget(p)
    p.task.setCurrentIndex(p.task.findData("scribble"))
    p.prior.setCurrentText("mean")
    p.steps.setValue(3)
    p.samples.setValue(2)
    assert window.run_job()
    _wait_result(window, qtbot)
    entry = window.history_entries[0]
    assert entry.kind == "project" and entry.images.shape[0] == 2 and entry.ws is not None


@pytest.mark.slow
def test_sd_panel_runs_sdedit_on_a_tiny_pipeline(window, qtbot, tmp_path, monkeypatch):
    import core.jobs.sdedit
    from core.sd.tiny import write_tiny_pipeline

    seen, real = [], core.jobs.sdedit.sdedit

    def spy(params, model, **kw):
        seen.append(params)
        return real(params, model, **kw)

    monkeypatch.setattr(core.jobs.sdedit, "sdedit", spy)
    folder = write_tiny_pipeline(tmp_path / "tiny-sd")
    window.canvas.stroke([(2, 2), (14, 14)])
    p = window.sd_panel
    window.tabs.setCurrentWidget(p)
    p.model.setCurrentText(str(folder))
    p.device.setCurrentText("cpu")
    p.steps.setValue(10)
    p.strength.setValue(0.5)
    assert window.run_job()
    _wait_result(window, qtbot)
    entry = window.history_entries[0]
    assert entry.kind == "sdedit" and entry.images.ndim == 4 and entry.params["steps"] == 10
    assert seen[0].preview_interval_s > 0  # the worker decodes no preview it would not forward


def test_model_picker_lists_generators_the_model_manager_finds(qtbot, tmp_path, monkeypatch, settings):
    user = tmp_path / "user-models"
    user.mkdir()
    mine = save_generator(tiny_stylegan(seed=1), user / "my-cats.safetensors")
    (user / "notes.safetensors").write_bytes(b"not a model")  # skipped, never fatal to the listing
    monkeypatch.setenv("LATENT_CANVAS_MODELS", str(user))
    w = MainWindow(mine, settings=settings)
    qtbot.addWidget(w)
    items = {w.model_picker.itemText(i): w.model_picker.itemData(i) for i in range(w.model_picker.count())}
    assert items["my-cats"] == str(mine) and "stylegan2-cats64" in items and "notes" not in items
    w.worker.stop()


def test_missing_model_locate_button_loads_the_chosen_file(
    qtbot, tmp_path, monkeypatch, settings, model_file
):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(model_file), ""))
    messages = []

    def click_locate() -> None:  # the box is modal: find it once it is up and press its Locate button
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(50, click_locate)
            return
        messages.append(box.text())
        next(b for b in box.buttons() if b.text() == "Locate…").click()

    QTimer.singleShot(50, click_locate)
    w = MainWindow(tmp_path / "moved.safetensors", settings=settings)
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: w.model_info is not None, timeout=60_000)
    assert "moved.safetensors" in messages[0] and w.model_path == model_file
    w.worker.stop()


def test_a_finished_job_is_autosaved(window, qtbot):
    from core.document import load_document

    window.canvas.stroke([(2, 2), (14, 14)])
    window.invert_panel.steps.setValue(3)
    window.run_job()
    _wait_result(window, qtbot)
    saved = load_document(window.autosave_session.path)  # written on completion, not by the timer
    assert len(saved.history) == 1 and saved.history[0].latent is not None


def test_cancel_through_the_worker_stops_within_one_step(qtbot, model_file, monkeypatch):
    """Cancel from the GUI thread while the worker optimises: at most the step in flight completes."""
    import threading

    from core.gan.stylegan2 import StyleGAN2Generator
    from core.jobs.params import InvertParams

    calls = []
    real = StyleGAN2Generator.synthesis
    step_gate = threading.Semaphore(0)  # the worker may start a step only when the test lets it
    fifth_in_flight = threading.Event()

    def counted(self, ws):
        if ws.requires_grad:  # the optimisation's forward passes, not the final render
            if len(calls) == 4:
                fifth_in_flight.set()
            step_gate.acquire(timeout=30)
            calls.append(1)
        return real(self, ws)

    monkeypatch.setattr(StyleGAN2Generator, "synthesis", counted)
    worker = Worker(preview_interval_s=0.0)
    got = []
    worker.message.connect(got.append)
    worker.start()
    try:
        worker.submit(JobRequest(1, "load_model", LoadModelRequest(str(model_file))), supersede=False)
        qtbot.waitUntil(lambda: any(m.kind is MsgKind.MODEL_LOADED for m in got), timeout=60_000)
        params = InvertParams(target=np.full((16, 16, 3), 90, np.uint8), steps=1000, perceptual_weight=0)
        worker.submit(JobRequest(2, "invert", params))
        for _ in range(4):
            step_gate.release()
        # Cancel while the 5th step is in flight (held at the gate): it may finish, a 6th must not
        # start. (Cancelling after the 5th finished raced the worker into a 6th step.)
        qtbot.waitUntil(fifth_in_flight.is_set, timeout=60_000)
        worker.cancel_current()
        for _ in range(3):
            step_gate.release()
        qtbot.waitUntil(lambda: any(m.kind is MsgKind.CANCELLED for m in got), timeout=60_000)
        (done,) = [m for m in got if m.kind is MsgKind.CANCELLED]
        assert len(done.payload.loss_history) == 5 and len(calls) == 5
    finally:
        for _ in range(10):
            step_gate.release()
        worker.stop()


def test_window_appears_without_importing_torch(tmp_path):
    """The GUI thread never loads torch: building and showing the window (model picker included) must
    leave it unimported; only the worker thread imports it (not started here)."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "import desktop.worker\n"
        "desktop.worker.Worker.start = lambda self: None\n"
        "from desktop.main_window import MainWindow\n"
        "from core.paths import DEFAULT_GENERATOR, bundled_model\n"
        "w = MainWindow(bundled_model(DEFAULT_GENERATOR)); w.show(); app.processEvents()\n"
        "print('picker', w.model_picker.count(), 'torch' in sys.modules, 'open_clip' in sys.modules)\n"
    )
    env = {"QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path), "LATENT_CANVAS_AUTOSAVE_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("picker"))
    _, count, torch_loaded, clip_loaded = line.split()
    assert int(count) >= 3 and torch_loaded == "False" and clip_loaded == "False", out.stderr[-2000:]


def test_sd_panel_lists_models_the_manager_finds(qtbot, tmp_path, monkeypatch, settings, model_file):
    from core.sd.tiny import write_tiny_pipeline

    user = tmp_path / "user-models"
    folder = write_tiny_pipeline(user / "my-sd")
    monkeypatch.setenv("LATENT_CANVAS_MODELS", str(user))
    w = MainWindow(model_file, settings=settings)
    qtbot.addWidget(w)
    p = w.sd_panel
    assert p.model_source() is None  # empty: the bundled model
    p.model.setCurrentIndex(p.model.findText("my-sd"))
    assert p.model_source() == str(folder)
    p.model.setCurrentText("org/some-model")  # typed: a hub id (or any path) is passed through
    assert p.model_source() == "org/some-model"
    w.worker.stop()


def test_live_mode_debounces_strokes_and_drops_stale_results(window, qtbot):
    from desktop.worker import WorkerMessage

    window.invert_panel.steps.setValue(5)
    sent = []
    real_submit = window.worker.submit
    window.worker.submit = lambda req, **kw: (sent.append(req), real_submit(req, **kw))
    window.live.setChecked(True)
    for i in range(4):  # four quick strokes: one run, after the last
        window.canvas.stroke([(2, 2 + i), (14, 14 - i)])
    _wait_result(window, qtbot, 1)
    assert [r.kind for r in sent] == ["invert"]
    before = len(window.history_entries)
    stale = window.history_entries[-1]
    window.on_message(WorkerMessage(MsgKind.RESULT, sent[0].job_id - 1, stale))  # an older job's result
    assert len(window.history_entries) == before


def test_dropping_an_image_file_opens_it_as_the_base(window, tmp_path):
    from PySide6.QtCore import QMimeData, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent

    from core.imageio import save_png

    path = save_png(np.full((16, 16, 3), (10, 200, 90), np.uint8), tmp_path / "dropped.png")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    pos, actions = QPointF(50, 50), Qt.DropAction.CopyAction
    buttons, mods = Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    enter = QDragEnterEvent(pos.toPoint(), actions, mime, buttons, mods)
    window.dragEnterEvent(enter)
    assert enter.isAccepted()
    window.dropEvent(QDropEvent(pos, actions, mime, buttons, mods))
    assert tuple(window.canvas.base_rgb()[8, 8]) == (10, 200, 90)
    window.canvas.undo_stack.undo()  # opening is an undoable layer operation
    assert tuple(window.canvas.base_rgb()[8, 8]) != (10, 200, 90)


def test_ctrl_z_and_redo_shortcuts_undo_and_redo_a_stroke(window, qtbot):
    from PySide6.QtGui import QKeySequence

    window.activateWindow()
    window.canvas.stroke([(2, 2), (14, 14)])
    painted = window.canvas.scribble_rgba()[..., 3].max()
    undo = QKeySequence(QKeySequence.StandardKey.Undo)[0]
    redo = QKeySequence(QKeySequence.StandardKey.Redo)[0]
    qtbot.keyClick(window.canvas, undo.key(), undo.keyboardModifiers())
    assert window.canvas.scribble_rgba()[..., 3].max() == 0
    qtbot.keyClick(window.canvas, redo.key(), redo.keyboardModifiers())
    assert window.canvas.scribble_rgba()[..., 3].max() == painted


def test_a_conditional_generator_offers_its_classes(qtbot, tmp_path, settings):
    import torch

    from core.gan.stylegan2 import StyleGAN2Generator

    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=16, channel_base=64, channel_max=8,
                           mapping_layers=1, c_dim=3).eval()  # fmt: skip
    w = MainWindow(save_generator(G, tmp_path / "cond.safetensors"), settings=settings)
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: w.model_info is not None, timeout=60_000)
    box = w.invert_panel.class_label
    assert box.isEnabled() and box.maximum() == 2
    box.setValue(2)
    w.canvas.stroke([(2, 2), (10, 10)])
    assert w.invert_panel.params(w.canvas).class_label == 2
    w.worker.stop()


def test_an_unconditional_generator_has_no_class_to_pick(window):
    assert not window.invert_panel.class_label.isEnabled()
    window.canvas.stroke([(2, 2), (10, 10)])
    assert window.invert_panel.params(window.canvas).class_label is None


def test_two_runs_queue_and_both_land_in_the_history(window, qtbot):
    from desktop.job_queue import JobState

    window.canvas.stroke([(2, 2), (14, 14)])
    window.invert_panel.mode.setCurrentIndex(0)
    window.invert_panel.steps.setValue(3)
    window.run_job()
    window.invert_panel.seed.setValue(7)
    window.run_job()  # queued behind the first, not superseding it
    _wait_result(window, qtbot, 2)
    assert [j.state for j in window.jobs.jobs[-2:]] == [JobState.FINISHED, JobState.FINISHED]
    assert [e.seed for e in window.history_entries[-2:]] == [0, 7]


def test_a_models_load_warning_is_shown_to_the_person(window, monkeypatch):
    shown = []
    monkeypatch.setattr("desktop.main_window.QMessageBox.warning", lambda *a: shown.append(a[2]))
    note = "g.pkl: its embedded network code is not NVlabs' official source"
    info = dict(window.model_info, warnings=[note])
    window._model_loaded(info)
    assert shown and "not NVlabs' official source" in shown[0]
    window._model_loaded(dict(window.model_info, warnings=[]))
    assert len(shown) == 1


def test_model_free_memory_drops_the_workers_cached_models_and_jobs_run_on(window, qtbot):
    w = window
    w.worker.engine._resources[("clip", "cpu")] = object()  # as a CLIP guidance job leaves it
    act = next(a for a in w.menuBar().actions() if a.text() == "&Model")
    free = next(a for a in act.menu().actions() if a.text().startswith("Free memory"))
    free.trigger()
    qtbot.waitUntil(lambda: "freed 1 cached model" in w.statusBar().currentMessage(), timeout=10_000)
    assert w.worker.engine._resources == {} and w.worker.engine.models()["generator"] is not None
    w.invert_panel.steps.setValue(2)
    w.canvas.stroke([(2, 2), (14, 14)])
    w.run_job()
    _wait_result(w, qtbot)
