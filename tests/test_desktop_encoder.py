"""The encoder in the app: offered (and the default) only where the model has one; live frames follow a
stroke while it is drawn, then a short refinement starts from the encoder's answer."""

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QPoint, QSettings, Qt  # noqa: E402

from core.encoder.model import encoder_path_for, save_encoder  # noqa: E402
from core.models.io import save_generator  # noqa: E402
from core.models.safe_load import sha256_file  # noqa: E402
from desktop.main_window import MainWindow  # noqa: E402
from tests.conftest import tiny_stylegan  # noqa: E402
from tests.test_encoder import _trained_ish  # noqa: E402


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_CANVAS_AUTOSAVE_DIR", str(tmp_path / "autosave"))
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("confirm_close", False)
    G = tiny_stylegan(resolution=32)
    path = save_generator(G, tmp_path / "tiny32.safetensors")
    meta = {"generator": path.name, "generator_sha256": sha256_file(path)}
    save_encoder(_trained_ish(G), encoder_path_for(path), metadata=meta)
    w = MainWindow(path, settings=settings)
    qtbot.addWidget(w)
    w.resize(1000, 700)
    w.show()
    qtbot.waitUntil(lambda: w.model_info is not None, timeout=60_000)
    w.invert_panel.perc.setValue(0.0)
    yield w
    w.worker.stop()


def test_the_encoder_init_is_offered_and_chosen_when_the_model_has_one(window):
    panel = window.invert_panel
    assert window.model_info["encoder"] == "tiny32.encoder.safetensors"
    assert panel.init.findText("encoder") >= 0 and panel.init.currentText() == "encoder"
    panel.set_encoder(False, "no encoder for this generator")
    assert panel.init.findText("encoder") < 0 and panel.init.currentText() != "encoder"
    assert "no encoder" in panel.init.toolTip()


def test_the_panel_offers_the_encoders_refinements(window):
    """As many ReStyle refinements as the model's encoder has (this one: none); the mode's default
    within them; live frames are the one pass."""
    from core.jobs.params import mode_defaults
    from desktop.panels import MODE_KEYS

    panel = window.invert_panel
    assert window.model_info["encoder_refine"] == 0 and panel.refine.maximum() == 0
    panel.set_encoder(True, "", 3)
    panel.mode.setCurrentIndex(MODE_KEYS.index("invert"))
    assert panel.refine.maximum() == 3
    assert panel.refine.value() == min(3, mode_defaults("invert", has_encoder=True).get("encoder_refine", 0))
    panel.refine.setValue(2)
    assert panel.params(window.canvas).encoder_refine == 2
    assert panel.params(window.canvas, frame=True).encoder_refine == 0
    panel.set_encoder(False, "none here")
    assert panel.refine.maximum() == 0


def test_the_invert_mode_takes_the_encoders_lr_and_ramp_up(window):
    from core.jobs.params import mode_defaults
    from desktop.panels import MODE_KEYS

    panel = window.invert_panel
    d = mode_defaults("invert", has_encoder=True)
    panel.mode.setCurrentIndex(MODE_KEYS.index("invert"))
    assert (panel.lr.value(), panel.rampup.value()) == (d["lr"], d["lr_rampup"]) and d["lr_rampup"] > 0
    assert panel.params(window.canvas).lr_rampup == d["lr_rampup"]
    panel.space.setCurrentText("w+")  # another space chosen: its own lr, no ramp-up
    assert (panel.lr.value(), panel.rampup.value()) == (0.05, 0)
    panel.space.setCurrentText(d["space"])
    assert (panel.lr.value(), panel.rampup.value()) == (d["lr"], d["lr_rampup"])
    panel.mode.setCurrentIndex(MODE_KEYS.index("scribble"))  # a mode without one: off
    assert panel.rampup.value() == 0 and panel.params(window.canvas).lr_rampup == 0


def test_the_scribble_mode_takes_the_encoder_defaults_and_other_modes_give_them_back(window):
    """Steps and learning rate follow the mode (the encoder's short, gentle refinement for scribbles);
    a mode without its own steps gets the panel's back, not the scribble mode's 20."""
    from core.jobs.params import mode_defaults
    from desktop.panels import MODE_KEYS

    panel = window.invert_panel
    scribble = mode_defaults("scribble", has_encoder=True)
    panel.mode.setCurrentIndex(MODE_KEYS.index("scribble"))
    assert (panel.steps.value(), panel.lr.value(), panel.space.currentText()) == (
        scribble["steps"],
        scribble["lr"],
        scribble["space"],
    )
    panel.mode.setCurrentIndex(MODE_KEYS.index("invert"))
    invert = mode_defaults("invert", has_encoder=True)
    assert panel.steps.value() == panel._steps_default and panel.lr.value() == invert.get("lr", 0.05)
    panel.mode.setCurrentIndex(MODE_KEYS.index("inpaint"))
    assert panel.steps.value() == panel._steps_default and panel.lr.value() == 0.05


def test_live_frames_follow_the_stroke_then_a_refinement_runs(window, qtbot):
    sent = []
    real_submit = window.worker.submit
    window.worker.submit = lambda req, **kw: (sent.append(req), real_submit(req, **kw))
    window.invert_panel.steps.setValue(5)
    window.live.setChecked(True)
    c = window.canvas
    r = c.view_rect()
    to_widget = lambda x, y: QPoint(int(r.x() + x * r.width() / 32), int(r.y() + y * r.height() / 32))  # noqa: E731
    shown = []
    real_set_batch = window.result_view.set_batch
    window.result_view.set_batch = lambda images, *a: (shown.append(images), real_set_batch(images, *a))
    qtbot.mousePress(c, Qt.MouseButton.LeftButton, pos=to_widget(4, 4))
    for x in range(4, 28):
        qtbot.mouseMove(c, to_widget(x, x))
        qtbot.wait(5)
    qtbot.waitUntil(lambda: window._frame_inflight is None, timeout=30_000)
    frames = [r for r in sent if r.kind == "invert" and r.params.steps == 0]
    assert frames and all(r.live and r.params.init == "encoder" for r in frames)
    assert len(frames) < 24  # one in flight at a time: not one per mouse move queued up
    assert shown, "no live frame reached the result view"
    qtbot.mouseRelease(c, Qt.MouseButton.LeftButton, pos=to_widget(27, 27))
    qtbot.waitUntil(lambda: len(window.history_entries) >= 1, timeout=60_000)
    refine = [r for r in sent if r.kind == "invert" and r.params.steps > 0]
    assert refine[-1].params.init == "encoder" and refine[-1].params.steps == 5  # not a warm start
