"""The main window: tools, canvas and live result, job panels, history strip, interpolation.

Every model call happens on the :class:`Worker` thread; this file builds params dataclasses from the
panels and canvas, submits them, and reacts to typed worker messages in one ``match``.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListView,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from core.document import HistoryEntry, entry_from_result
from desktop.canvas import Canvas, ImageView, Layer, Tool
from desktop.history import HistoryStrip
from desktop.job_queue import JobQueue
from desktop.panels import InterpolatePanel, InvertPanel, PriorPanel, SDPanel, set_classes
from desktop.session import SessionMixin
from desktop.settings import Settings
from desktop.widgets import ColourButton, LossPlot
from desktop.worker import (
    InterpolateFrameRequest,
    JobRequest,
    LoadModelRequest,
    MsgKind,
    SDEditRequest,
    UnloadModelRequest,
    Worker,
    WorkerMessage,
)

log = logging.getLogger(__name__)

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)"
LIVE_DEBOUNCE_MS = 350


class MainWindow(SessionMixin, QMainWindow):
    model_ready = Signal(dict)  # the worker loaded a model (its info)
    result_added = Signal(int)  # index of a new history entry

    def __init__(
        self, model_path: Path, worker: Worker | None = None, settings: Settings | QSettings | None = None
    ):
        super().__init__()
        self.setWindowTitle("Latent Canvas")
        self.setAcceptDrops(True)
        self.settings = settings if isinstance(settings, Settings) else Settings(settings)
        self.model_path = Path(model_path)
        self.model_info: dict | None = None
        self._ids = itertools.count(1)
        self._current_job = 0
        self._current_kind = ""
        self._load_id = 0
        self._last_progress = None  # the running job's latest Progress (for Accept / Branch)
        self._accept_requested = False
        self.worker = worker or Worker()
        self.worker.message.connect(self.on_message)
        self.worker_label = QLabel(self.worker.description)
        self.jobs = JobQueue(self.worker, self)
        self.jobs.job_started.connect(self._job_started)
        self._frames: set[int] = set()  # slider frame requests (not queued jobs)
        self.canvas = Canvas(64)
        self.result_view = ImageView()
        self.result_view.picked.connect(self._pick_sample)
        self._live_timer = QTimer(self, singleShot=True, interval=LIVE_DEBOUNCE_MS)
        self._live_timer.timeout.connect(lambda: self.run_job(live=True))
        self.canvas.stroke_finished.connect(self._maybe_live)
        self.canvas.stroke_moved.connect(self._live_frame)
        self._frame_inflight: int | None = None  # the live encoder frame being made (one at a time)
        self._frame_dirty = False  # the paint changed while it was being made
        self.project_path: Path | None = None
        self._pending_project = None  # layers to apply once the project's model has loaded
        self._dirty = False  # changed since the last autosave
        self._unsaved = False  # changed since the last project save
        self.canvas.undo_stack.indexChanged.connect(self._mark_dirty)
        self._build_ui()
        self._build_menus()
        self._start_autosave()
        self.worker.start()
        self.load_model(self.model_path)

    # --- UI ---
    def _build_ui(self) -> None:
        self._build_toolbar()
        views = QSplitter()
        views.addWidget(self.canvas)
        views.addWidget(self.result_view)
        self.history = HistoryStrip()
        self.history.shown.connect(self._show_entry)
        self.history.ends_changed.connect(
            lambda ends: self.interp_panel.set_ends([self.history.label_of(e) for e in ends])
        )
        self.history.add_action("Use as base image", self.use_result_as_base)
        self.history.add_action("Branch from this (warm start)", self.branch_from_selected)
        self.history.add_action("Show parameters", self._show_params)
        centre = QVBoxLayout()
        centre.addWidget(views, 1)
        centre.addWidget(self.history)
        root = QHBoxLayout()
        root.addLayout(centre, 1)
        root.addWidget(self._build_side_panel())
        w = QWidget()
        w.setLayout(root)
        self.setCentralWidget(w)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.statusBar().addPermanentWidget(self.worker_label)
        self.statusBar().addPermanentWidget(self.progress)
        geometry = self.settings.geometry
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 760)

    def _build_toolbar(self) -> None:
        tb = QToolBar("Tools", objectName="tools")
        self.addToolBar(tb)
        self.model_picker = QComboBox(minimumContentsLength=18)
        self.model_picker.setToolTip("Generator model")
        self.model_picker.activated.connect(self._model_picked)
        tb.addWidget(QLabel(" Model "))
        tb.addWidget(self.model_picker)
        tb.addSeparator()
        group = QActionGroup(self)
        self.tool_actions = {}
        for tool, key in zip(Tool, ("B", "E", "M", "Shift+M"), strict=True):
            act = QAction(tool.value.capitalize(), self, checkable=True, shortcut=key)
            act.triggered.connect(lambda _=False, t=tool: self._set_tool(t))
            group.addAction(act)
            tb.addAction(act)
            self.tool_actions[tool] = act
        self.tool_actions[Tool.BRUSH].setChecked(True)
        self.colour_button = ColourButton(self.canvas.colour)
        self.colour_button.colour_changed.connect(lambda c: setattr(self.canvas, "colour", c))
        tb.addWidget(self.colour_button)
        self.size_spin = QSpinBox(minimum=1, maximum=64, suffix=" px", toolTip="Brush size (model pixels)")
        self.size_spin.setValue(self.settings.brush_size)
        self.size_spin.valueChanged.connect(self._brush_size)
        self._brush_size(self.size_spin.value())
        tb.addWidget(self.size_spin)
        self.opacity_spin = QDoubleSpinBox(minimum=0.05, maximum=1.0, singleStep=0.1, value=1.0)
        self.opacity_spin.setToolTip("Brush opacity")
        self.opacity_spin.valueChanged.connect(lambda v: setattr(self.canvas, "opacity", v))
        tb.addWidget(self.opacity_spin)
        tb.addSeparator()
        self.live = QCheckBox("Live", toolTip="Re-run the job when a stroke ends (newest wins)")
        self.live.setChecked(self.settings.live)
        tb.addWidget(self.live)

    def _build_side_panel(self) -> QWidget:
        self.tabs = QTabWidget()
        self.invert_panel = InvertPanel(self.settings)
        self.interp_panel = InterpolatePanel()
        self.interp_panel.position.connect(self._interpolate)
        self.prior_panel = PriorPanel(self.settings)
        self.sd_panel = SDPanel(self.settings)
        self.tabs.addTab(self.invert_panel, "Invert")
        self.tabs.addTab(self.prior_panel, "Prior")
        self.tabs.addTab(self.sd_panel, "SD")
        self.tabs.addTab(self.interp_panel, "Interpolate")
        self.run_button = QPushButton("Run", shortcut="Ctrl+Return")
        self.run_button.clicked.connect(lambda: self.run_job())
        self.stop_button = QPushButton("Stop", shortcut="Esc", toolTip="Stop and discard")
        self.stop_button.clicked.connect(self.stop_job)
        self.accept_button = QPushButton("Accept", toolTip="Stop now and keep the current step")
        self.accept_button.clicked.connect(self.accept_current)
        self.branch_button = QPushButton("Branch", toolTip="Restart from the current step's latent")
        self.branch_button.clicked.connect(self.branch_from_current)
        buttons = QHBoxLayout()
        for b in (self.run_button, self.stop_button, self.accept_button, self.branch_button):
            buttons.addWidget(b)
        self.step_label = QLabel("idle")
        self.loss_plot = LossPlot()
        self.job_list = QListView()
        self.job_list.setModel(self.jobs)
        self.job_list.setMaximumHeight(90)
        self.job_list.setToolTip("Jobs: queued ones run in order; a live re-run replaces only live ones")
        self.job_list.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        remove = QAction("Remove queued jobs", self.job_list)
        remove.triggered.connect(self.jobs.cancel_queued)
        self.job_list.addAction(remove)
        lay = QVBoxLayout()
        lay.addWidget(self.tabs, 1)
        lay.addLayout(buttons)
        lay.addWidget(self.step_label)
        lay.addWidget(self.loss_plot)
        lay.addWidget(self.job_list)
        panel = QWidget()
        panel.setLayout(lay)
        panel.setFixedWidth(330)
        self._set_running(False)
        return panel

    def _build_menus(self) -> None:
        mb = self.menuBar()
        file = mb.addMenu("&File")
        self._add(file, "Open image…", self.open_image, QKeySequence.StandardKey.Open)
        self.recent_menu = file.addMenu("Open recent")
        self._refresh_recent()
        self._add(file, "Save result as PNG…", self.save_result, "Ctrl+Shift+E")
        file.addSeparator()
        self._add(file, "Open project…", self.open_project, "Ctrl+Shift+O")
        self._add(file, "Save project", self.save_project, QKeySequence.StandardKey.Save)
        self._add(file, "Save project as…", lambda: self.save_project(ask=True), "Ctrl+Shift+S")
        file.addSeparator()
        self._add(file, "Connect to worker…", self.connect_to_worker)
        file.addSeparator()
        self._add(file, "Quit", self.close, QKeySequence.StandardKey.Quit)
        edit = mb.addMenu("&Edit")
        undo = self.canvas.undo_stack.createUndoAction(self, "Undo")
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        redo = self.canvas.undo_stack.createRedoAction(self, "Redo")
        redo.setShortcut(QKeySequence.StandardKey.Redo)
        edit.addActions([undo, redo])
        edit.addSeparator()
        for layer in (Layer.SCRIBBLE, Layer.MASK):
            self._add(edit, f"Fill {layer.value}", lambda _=False, x=layer: self.canvas.fill_layer(x))
            self._add(edit, f"Clear {layer.value}", lambda _=False, x=layer: self.canvas.clear_layer(x))
        self._add(edit, "Use result as base", self.use_result_as_base, "Ctrl+B")
        view = mb.addMenu("&View")
        self._add(view, "Fit", self.canvas.fit, "Ctrl+0")
        self._add(view, "Zoom in", lambda: self.canvas.set_zoom(self.canvas.zoom * 1.25), "Ctrl+=")
        self._add(view, "Zoom out", lambda: self.canvas.set_zoom(self.canvas.zoom / 1.25), "Ctrl+-")
        show_mask = self._add(view, "Show mask", self._toggle_mask, "Ctrl+M")
        show_mask.setCheckable(True)
        show_mask.setChecked(True)
        overlay = self._add(view, "Result over base", self._toggle_overlay, "Ctrl+R")
        overlay.setCheckable(True)
        model = mb.addMenu("&Model")
        self._add(model, "Open model…", self.open_model)
        self._add(model, "Free memory (unload Stable Diffusion, CLIP, priors)", self.free_memory)

    def _add(self, menu, label, slot, shortcut=None) -> QAction:
        act = QAction(label, self)
        if shortcut is not None:
            act.setShortcut(shortcut)
        act.triggered.connect(slot)
        menu.addAction(act)
        return act

    def _set_running(self, running: bool) -> None:
        for b in (self.stop_button, self.accept_button, self.branch_button):
            b.setEnabled(running)

    def _set_tool(self, tool: Tool) -> None:
        self.canvas.tool = tool
        self.tool_actions[tool].setChecked(True)

    def _brush_size(self, v: int) -> None:
        self.canvas.brush_size = float(v)
        self.settings.brush_size = v

    def _toggle_mask(self, on: bool) -> None:
        self.canvas.show_mask = on
        self.canvas.update()

    def _toggle_overlay(self, on: bool) -> None:
        self.canvas.result_opacity = 0.7 if on else 0.0
        self.canvas.update()

    # --- files ---
    def open_image(self, path: str | None = None) -> bool:
        from core.errors import ImageLoadError  # no torch: core.imageio needs only Pillow
        from core.imageio import load_image

        if not path:
            path, _ = QFileDialog.getOpenFileName(self, "Open image", self._last_dir(), IMAGE_FILTER)
        if not path:
            return False
        try:
            self.canvas.set_base(load_image(path))
        except ImageLoadError as e:
            QMessageBox.warning(self, "Cannot open image", str(e))
            return False
        self._remember(path)
        return True

    def save_result(self, path: str | None = None) -> Path | None:
        from core.imageio import save_png

        entry = self._selected_entry()
        if entry is None:
            QMessageBox.information(self, "Nothing to save", "Run a job first.")
            return None
        if not path:
            path, _ = QFileDialog.getSaveFileName(self, "Save result", self._last_dir(), "PNG (*.png)")
        if not path:
            return None
        meta = {"kind": entry.kind, "seed": entry.seed, "params": entry.params, "model": self.model_path.name}
        return save_png(entry.image, path, metadata=meta)

    def _last_dir(self) -> str:
        recent = self.recent_files()
        return str(Path(recent[0]).parent) if recent else ""

    def recent_files(self) -> list[str]:
        return self.settings.recent_images

    def _remember(self, path: str) -> None:
        self.settings.add_recent_image(str(Path(path).resolve()))
        self._refresh_recent()

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        for p in self.recent_files():
            self._add(self.recent_menu, p, lambda _=False, x=p: self.open_image(x))
        self.recent_menu.setEnabled(bool(self.recent_files()))

    def dragEnterEvent(self, e) -> None:
        if e.mimeData().hasUrls():
            e.acceptProposedAction()

    def dropEvent(self, e) -> None:
        for url in e.mimeData().urls():
            if url.isLocalFile():
                path = url.toLocalFile()
                self.open_project(path) if path.endswith(".lcproj") else self.open_image(path)
                break

    # --- models ---
    def known_models(self) -> list[Path]:
        """The bundled generators, then those the model manager finds in the user's model folders,
        then files opened before, then the current one."""
        from core.models.manager import generator_files

        found = generator_files()  # reads safetensors headers only: cheap, and torch-free
        extra = [Path(p) for p in self.settings.models]
        return list(dict.fromkeys([*found, *extra, self.model_path]))

    def _refresh_models(self) -> None:
        self.model_picker.blockSignals(True)
        self.model_picker.clear()
        for p in self.known_models():
            self.model_picker.addItem(p.stem, str(p))
        self.model_picker.addItem("Open model…", None)
        idx = self.model_picker.findData(str(self.model_path))
        self.model_picker.setCurrentIndex(max(idx, 0))
        self.model_picker.blockSignals(False)

    def _model_picked(self, index: int) -> None:
        data = self.model_picker.itemData(index)
        if data is None:
            self.open_model()
        else:
            self.load_model(Path(data))

    def open_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open model", "", "Generators (*.safetensors *.pkl);;All files (*)"
        )
        if path:
            self.settings.add_model(path)
            self.load_model(Path(path))
        else:
            self._refresh_models()

    def load_model(self, path: Path) -> None:
        self.model_path = Path(path)
        self._refresh_models()
        self.statusBar().showMessage(f"loading {path.name}…")
        self._load_id = next(self._ids)
        self.worker.submit(
            JobRequest(self._load_id, "load_model", LoadModelRequest(str(path))), supersede=False
        )

    def free_memory(self) -> None:
        """Model ▸ Free memory: the worker drops its cached pipelines (a GPU box's VRAM); the generator
        stays loaded, and what was dropped loads again when a job needs it."""
        req = JobRequest(next(self._ids), "unload_model", UnloadModelRequest("resources"))
        self.worker.submit(req, supersede=False)

    def _model_failed(self, message: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, "Cannot load model", message, parent=self)
        locate = box.addButton("Locate…", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Close)
        box.exec()
        if box.clickedButton() is locate:
            self.open_model()

    # --- jobs ---
    def _panel(self):
        return self.tabs.currentWidget()

    def _maybe_live(self) -> None:
        if self.live.isChecked() and hasattr(self._panel(), "params"):
            self._live_timer.start()

    def run_job(self, *, live: bool = False, warm_latent: np.ndarray | None = None) -> bool:
        from core.errors import JobError

        panel = self._panel()
        if not hasattr(panel, "params"):
            panel = self.invert_panel
            self.tabs.setCurrentWidget(panel)
        reason = panel.needs_paint(self.canvas)
        if reason:
            if not live:
                QMessageBox.information(self, "Nothing painted", reason)
            return False
        if live and warm_latent is None and panel.kind == "invert" and panel.init.currentText() != "encoder":
            warm_latent = self._warm_latent(panel)  # with an encoder, the refinement starts from its answer
        try:
            params = (
                panel.params(self.canvas, warm_latent)
                if panel.kind == "invert"
                else panel.params(self.canvas)
            )
        except JobError as e:
            QMessageBox.warning(self, "Cannot run", str(e))
            return False
        job_params = _job_params(params)
        if isinstance(params, SDEditRequest):
            self.settings.set_panel(panel.kind, "model", params.source or "")
        self.settings.set_panel(panel.kind, "steps", getattr(job_params, "steps", 0))
        if hasattr(job_params, "prompt"):
            self.settings.set_panel(panel.kind, "prompt", job_params.prompt)
        self.submit_job(panel.kind, params, live=live)
        return True

    def submit_job(self, kind: str, params, *, live: bool = False) -> int:
        """Queue a job (it runs when those before it are done; a live one replaces live ones)."""
        job = self.jobs.submit(next(self._ids), kind, params, live=live)
        if job.state.value == "queued":
            self.statusBar().showMessage(f"queued: {len(self.jobs.queued())} job(s) waiting", 4000)
        return job.job_id

    def _job_started(self, job) -> None:
        self._current_job, self._current_kind = job.job_id, job.kind
        self._last_progress = None
        self._accept_requested = False
        total = int(getattr(_job_params(job.params), "steps", 0) or 0)
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(0)
        self.loss_plot.reset(total)
        self._set_running(True)

    def _warm_latent(self, panel) -> np.ndarray | None:
        """Live mode starts from the newest result's latent when it is in the same latent space."""
        for entry in reversed(self.history_entries):
            if entry.kind == "invert" and entry.latent is not None:
                if entry.space == panel.space.currentText():
                    return entry.latent[entry.selected][None]
                return None
        return None

    def stop_job(self) -> None:
        self._accept_requested = False
        self.worker.cancel_current()

    def accept_current(self) -> None:
        self._accept_requested = True
        self.worker.cancel_current()

    def branch_from_current(self) -> None:
        ev = self._last_progress
        if ev is None or ev.latent is None or self._current_kind != "invert":
            return
        self.worker.cancel_current()
        self.run_job(warm_latent=np.asarray(ev.latent[:1]))

    def branch_from_selected(self) -> None:
        entry = self._selected_entry()
        if entry is None or entry.latent is None or entry.kind != "invert":
            return
        self.tabs.setCurrentWidget(self.invert_panel)
        self.invert_panel.space.setCurrentText(entry.space)
        self.run_job(warm_latent=entry.latent[entry.selected][None])

    def _encoder_live(self) -> bool:
        """Live frames follow the brush: Live on, the Invert tab, encoder init (the model has one)."""
        panel = self.invert_panel
        return self.live.isChecked() and self._panel() is panel and panel.init.currentText() == "encoder"

    def _live_frame(self) -> None:
        """While a stroke is drawn: the encoder's one-pass result for the paint so far, one frame in
        flight at a time (a stroke that moves on meanwhile asks for the next frame when it lands)."""
        if not self._encoder_live() or self.invert_panel.needs_paint(self.canvas):
            return
        if self._frame_inflight is not None:
            self._frame_dirty = True
            return
        if self.jobs.active is not None and self.jobs.active.live:
            self.worker.cancel_current()  # the last stroke's refinement: this stroke supersedes it
        from core.errors import JobError

        try:
            params = self.invert_panel.params(self.canvas, frame=True)
        except JobError as e:  # e.g. encoder init with the z space: say so, and the stroke goes on
            self.statusBar().showMessage(f"live frame: {e}", 8000)
            return
        req = JobRequest(next(self._ids), "invert", params, live=True)
        self._frames.add(req.job_id)
        self._frame_inflight, self._frame_dirty = req.job_id, False
        self.worker.submit(req, supersede=False)

    def _frame_done(self, msg: WorkerMessage) -> None:
        """A slider or live-encoder frame arrived (or was dropped): show it; ask for the next frame."""
        if msg.kind is MsgKind.RESULT:
            payload = msg.payload
            if isinstance(payload, np.ndarray):
                self.result_view.set_rgb(payload)  # an interpolation frame
            else:
                self.result_view.set_batch(payload.images)  # an encoder frame (InvertResult)
        if msg.kind in (MsgKind.RESULT, MsgKind.ERROR, MsgKind.CANCELLED):
            self._frames.discard(msg.job_id)
            if msg.job_id == self._frame_inflight:
                self._frame_inflight = None
                if msg.kind is MsgKind.ERROR:
                    self.statusBar().showMessage(f"live frame: {msg.payload}", 8000)
                elif self._frame_dirty:
                    self._live_frame()
            elif msg.kind is MsgKind.ERROR:  # a slider frame (e.g. key frames of another model)
                self.statusBar().showMessage(f"interpolation: {msg.payload}", 8000)

    def _interpolate(self, t: float) -> None:
        ends = [end for e in self._selected_entries() if (end := e.path_end()) is not None]
        if len(ends) < 2:
            return
        spaces = tuple(space for space, _ in ends)
        path = "s" if "s" in spaces else "w+"  # a Style-space result: the w+ ends join it as styles
        frame = InterpolateFrameRequest([lat for _, lat in ends], path, t, spaces if path == "s" else ())
        req = JobRequest(next(self._ids), "interpolate_frame", frame, live=True)
        self._frames.add(req.job_id)
        self.worker.submit(req, supersede=False)

    # --- worker messages ---
    def on_message(self, msg: WorkerMessage) -> None:
        """React to the worker, then let the queue move on (which may start the next job)."""
        self._react(msg)
        if msg.kind is MsgKind.WORKER_LOST:
            self.jobs.worker_lost(str(msg.payload))
        else:
            self.jobs.handle(msg)

    def _react(self, msg: WorkerMessage) -> None:
        if msg.job_id in self._frames:
            self._frame_done(msg)
            return
        match msg.kind:
            case MsgKind.MODEL_LOADED:
                self._model_loaded(msg.payload)
            case MsgKind.WORKER_LOST:
                self._worker_lost(msg.payload)
            case MsgKind.MODEL_UNLOADED:
                freed = msg.payload["freed"]
                self.statusBar().showMessage(f"freed {len(freed)} cached model(s) on the worker", 8000)
            case MsgKind.ERROR if msg.job_id == self._load_id:
                self._model_failed(msg.payload)
            case MsgKind.ERROR:
                self.step_label.setText("error")
                self._set_running(False)
                QMessageBox.warning(self, "Job failed", msg.payload)
            case _ if msg.job_id != self._current_job:
                return  # a superseded job's late message: stale, drop it
            case MsgKind.STARTED:
                self.step_label.setText("starting…")
            case MsgKind.PROGRESS:
                self._progress(msg.payload)
            case MsgKind.CANCELLED if not self._accept_requested:
                self._set_running(False)
                self.step_label.setText("stopped")
            case MsgKind.RESULT | MsgKind.CANCELLED:
                self._set_running(False)
                cancelled = msg.kind is MsgKind.CANCELLED
                self.add_result(entry_from_result(self._current_kind, msg.payload, cancelled=cancelled))

    def _worker_lost(self, message: str) -> None:
        """The worker process stopped (or could not be reached): canvas, history and unsaved work stay;
        a local worker is restarted with the model reloaded, so the next job runs."""
        self._set_running(False)
        self.step_label.setText("worker stopped")
        self.statusBar().showMessage(message, 15000)

    def connect_to_worker(self) -> None:
        """File ▸ Connect to worker…: a worker server on another machine (``latent-canvas-worker``)."""
        from desktop.worker import ProcessWorker

        title, last = "Connect to worker", self.settings.worker_url
        url, ok = QInputDialog.getText(self, title, "Worker URL (ws://host:port or wss://…):", text=last)
        if not ok or not url.strip():
            return
        token, ok = QInputDialog.getText(
            self, "Connect to worker", "Token (empty: none):", QLineEdit.EchoMode.Password
        )
        if not ok:
            return
        self.settings.worker_url = url.strip()
        self.use_worker(ProcessWorker(url.strip(), token.strip() or None, restart=False))

    def use_worker(self, worker) -> None:
        """Switch to another worker (in-process, local process or remote) and load the model there."""
        old, self.worker = self.worker, worker
        old.message.disconnect(self.on_message)
        old.stop()
        worker.message.connect(self.on_message)
        self.worker_label.setText(worker.description)
        self.jobs.set_worker(worker)
        worker.start()
        self.load_model(self.model_path)

    def _model_loaded(self, info: dict) -> None:
        self.model_info = info
        self.canvas.rescale(info["resolution"])
        if self._pending_project is not None:
            self._apply_project(self._pending_project)
            self._pending_project = None
        self.invert_panel.set_spaces(info["spaces"])
        self.invert_panel.set_encoder(
            bool(info.get("encoder")), info.get("encoder_note", ""), int(info.get("encoder_refine") or 0)
        )
        for panel in (self.invert_panel, self.prior_panel):
            set_classes(panel.class_label, info.get("c_dim", 0))
        self.result_view.set_batch(info["samples"])
        self.settings.last_model = info["path"]
        self.statusBar().showMessage(f"model {info['name']} ({info['resolution']} px)", 5000)
        if info.get("warnings"):  # e.g. a pickle whose embedded network code is not NVlabs' own
            QMessageBox.warning(self, "About this model", "\n\n".join(info["warnings"]))
        self.model_ready.emit(info)

    def _progress(self, ev) -> None:
        self._last_progress = ev
        if self.progress.maximum() != ev.total:  # e.g. SDEdit runs int(S x strength) of S steps
            self.progress.setRange(0, ev.total)
            self.loss_plot.total = ev.total
        self.result_view.set_batch(ev.preview, self.result_view.selected)
        self.canvas.set_result(ev.preview[self.result_view.selected])
        self.progress.setValue(ev.step)
        self.loss_plot.add(ev.step, ev.losses)
        loss = ", ".join(f"{k} {v:.4f}" for k, v in ev.losses.items())
        self.step_label.setText(f"step {ev.step}/{ev.total}\n{loss}")

    @property
    def history_entries(self) -> list[HistoryEntry]:
        return self.history.entries

    def add_result(self, entry: HistoryEntry) -> None:
        index = self.history.add(entry, tooltip=_describe_params(entry))
        self._show_entry(entry)
        steps = len(entry.losses)
        self.step_label.setText(f"done, {steps} steps" if steps else "done")
        self._mark_dirty()
        self.autosave()
        self.result_added.emit(index)

    def _pick_sample(self, i: int) -> None:
        entry = self._selected_entry()
        if entry is not None and i < len(entry.images):
            entry.selected = i
            self.canvas.set_result(entry.image)

    def _selected_entries(self) -> list[HistoryEntry]:
        return self.history.selected_entries()

    def _selected_entry(self) -> HistoryEntry | None:
        return self.history.current_entry()

    def _show_entry(self, entry: HistoryEntry) -> None:
        self.result_view.set_batch(entry.images, entry.selected)
        self.canvas.set_result(entry.image)

    def use_result_as_base(self) -> None:
        entry = self._selected_entry()
        if entry is not None:
            self.canvas.set_base(entry.image)

    def _show_params(self) -> None:
        entry = self._selected_entry()
        if entry is not None:
            QMessageBox.information(self, "Parameters", _describe_params(entry))

    def closeEvent(self, e) -> None:
        if self._unsaved and self._has_work() and self.settings.confirm_close:
            answer = QMessageBox.question(
                self,
                "Save the session?",
                "Save your drawing and results as a project before closing?",
                QMessageBox.StandardButton.Save
                | QMessageBox.StandardButton.Discard
                | QMessageBox.StandardButton.Cancel,
            )
            if answer == QMessageBox.StandardButton.Cancel or (
                answer == QMessageBox.StandardButton.Save and self.save_project() is None
            ):
                e.ignore()
                return
        self.settings.geometry = self.saveGeometry()
        self.settings.live = self.live.isChecked()
        self.worker.stop()
        self._autosave_timer.stop()
        self.autosave_session.discard()  # a clean exit leaves nothing to recover
        super().closeEvent(e)


def _job_params(params):
    """The core params dataclass of a request: SD requests wrap theirs with the model and device."""
    return params.params if isinstance(params, SDEditRequest) else params


def _describe_params(entry: HistoryEntry) -> str:
    lines = [f"{entry.kind}, seed {entry.seed}"] + [f"{k}: {v}" for k, v in entry.params.items()]
    return "\n".join(lines)
