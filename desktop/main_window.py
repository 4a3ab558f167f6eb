"""The main window: canvas, job panel, live result with step counter and loss, history strip."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QColor, QKeySequence
from PySide6.QtWidgets import (
    QColorDialog,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from desktop.canvas import Canvas, ImageView, Layer, Tool, qimage_from_rgb
from desktop.worker import JobRequest, MsgKind, Worker, WorkerMessage

log = logging.getLogger(__name__)

MODES = ("Scribble to image", "Invert base image", "Inpaint (mask = hole)")


class MainWindow(QMainWindow):
    def __init__(self, model_path: Path, worker: Worker | None = None):
        super().__init__()
        self.setWindowTitle("Latent Canvas")
        self.settings = QSettings("LatentCanvas", "LatentCanvas")
        self.model_path = model_path
        self._ids = itertools.count(1)
        self._current_job = 0
        self._results: list[tuple[np.ndarray, object]] = []  # (image, InvertResult)
        self.worker = worker or Worker()
        self.worker.message.connect(self.on_message)
        self.canvas = Canvas(64)
        self.result_view = ImageView()
        self._build_ui()
        self.worker.start()
        self.load_model(model_path)

    # --- UI ---
    def _build_ui(self) -> None:
        self._build_toolbar()
        panel = self._build_job_panel()
        views = QHBoxLayout()
        views.addWidget(self.canvas, 1)
        views.addWidget(self.result_view, 1)
        self.history = QListWidget()
        self.history.setFlow(QListWidget.Flow.LeftToRight)
        self.history.setFixedHeight(90)
        self.history.itemClicked.connect(self._show_history_item)
        centre = QVBoxLayout()
        centre.addLayout(views, 1)
        centre.addWidget(self.history)
        root = QHBoxLayout()
        root.addLayout(centre, 1)
        root.addWidget(panel)
        w = QWidget()
        w.setLayout(root)
        self.setCentralWidget(w)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.statusBar().addPermanentWidget(self.progress)
        self.resize(1100, 620)

    def _build_toolbar(self) -> None:
        tb = QToolBar("Tools")
        self.addToolBar(tb)
        for label, shortcut, slot in (
            ("Open image…", QKeySequence.StandardKey.Open, self.open_image),
            ("Open model…", None, self.open_model),
        ):
            act = QAction(label, self)
            if shortcut is not None:
                act.setShortcut(shortcut)
            act.triggered.connect(slot)
            tb.addAction(act)
        tb.addSeparator()
        for tool in Tool:
            act = QAction(tool.value.capitalize(), self)
            act.triggered.connect(lambda _=False, t=tool: self._set_tool(t))
            tb.addAction(act)
        colour = QAction("Colour…", self)
        colour.triggered.connect(self._pick_colour)
        tb.addAction(colour)
        self.size_spin = QSpinBox(minimum=1, maximum=32, value=4, suffix=" px")
        self.size_spin.valueChanged.connect(lambda v: setattr(self.canvas, "brush_size", float(v)))
        tb.addWidget(self.size_spin)
        for label, layer in (("Clear scribble", Layer.SCRIBBLE), ("Clear mask", Layer.MASK)):
            act = QAction(label, self)
            act.triggered.connect(lambda _=False, lay=layer: self.canvas.clear_layer(lay))
            tb.addAction(act)
        undo = self.canvas.undo_stack.createUndoAction(self, "Undo")
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        redo = self.canvas.undo_stack.createRedoAction(self, "Redo")
        redo.setShortcut(QKeySequence.StandardKey.Redo)
        tb.addActions([undo, redo])

    def _build_job_panel(self) -> QGroupBox:
        box = QGroupBox("Job")
        form = QFormLayout()
        self.mode = QComboBox()
        self.mode.addItems(MODES)
        self.space = QComboBox()
        self.space.addItems(["w+", "w", "z"])
        self.init = QComboBox()
        self.init.addItems(["mean", "random"])
        self.optimizer = QComboBox()
        self.optimizer.addItems(["adam", "lbfgs"])
        self.steps = QSpinBox(minimum=1, maximum=5000, value=int(self.settings.value("steps", 200)))
        self.lr = QDoubleSpinBox(minimum=0.001, maximum=1.0, singleStep=0.01, decimals=3, value=0.05)
        self.l1 = QDoubleSpinBox(minimum=0.0, maximum=100.0, value=10.0)
        self.perc = QDoubleSpinBox(minimum=0.0, maximum=10.0, decimals=3, singleStep=0.01, value=0.01)
        self.l2 = QDoubleSpinBox(minimum=0.0, maximum=100.0, decimals=3, value=0.0)
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        self.samples = QSpinBox(minimum=1, maximum=16, value=1)
        for label, w in (
            ("Mode", self.mode), ("Latent space", self.space), ("Init", self.init),
            ("Optimiser", self.optimizer), ("Steps", self.steps), ("Learning rate", self.lr),
            ("L1 weight", self.l1), ("Perceptual weight", self.perc), ("L2 on delta", self.l2),
            ("Seed", self.seed), ("Samples", self.samples),
        ):  # fmt: skip
            form.addRow(label, w)
        self.run_button = QPushButton("Run")
        self.run_button.setShortcut("Ctrl+Return")
        self.run_button.clicked.connect(self.run_job)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.worker.cancel_current)
        self.step_label = QLabel("idle")
        self.interp = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=100)
        self.interp.valueChanged.connect(self._interpolate)
        lay = QVBoxLayout()
        lay.addLayout(form)
        lay.addWidget(self.run_button)
        lay.addWidget(self.stop_button)
        lay.addWidget(self.step_label)
        lay.addWidget(QLabel("Interpolate last two results"))
        lay.addWidget(self.interp)
        lay.addStretch(1)
        box.setLayout(lay)
        box.setFixedWidth(260)
        return box

    def _set_tool(self, tool: Tool) -> None:
        self.canvas.tool = tool
        self.statusBar().showMessage(f"tool: {tool.value}", 2000)

    def _pick_colour(self) -> None:
        c = QColorDialog.getColor(self.canvas.colour, self, "Brush colour")
        if c.isValid():
            self.canvas.colour = QColor(c)

    # --- files and models ---
    def open_image(self, path: str | None = None) -> None:
        from core.errors import ImageLoadError  # no torch: core.imageio needs only Pillow
        from core.imageio import load_image

        if not path:
            path, _ = QFileDialog.getOpenFileName(
                self, "Open image", "", "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)"
            )
        if not path:
            return
        try:
            self.canvas.set_base(load_image(path))
        except ImageLoadError as e:
            QMessageBox.warning(self, "Cannot open image", str(e))

    def open_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open model", "", "Generators (*.safetensors *.pkl)")
        if path:
            self.load_model(Path(path))

    def load_model(self, path: Path) -> None:
        self.statusBar().showMessage(f"loading {path.name}…")
        self.worker.submit(JobRequest(next(self._ids), "load_model", str(path)), supersede=False)

    # --- jobs ---
    def job_params(self):
        from core.jobs.params import InvertParams

        mode = self.mode.currentIndex()
        base = self.canvas.base_rgb()
        if mode == 0:
            rgba = self.canvas.scribble_rgba()
            target, mask = np.ascontiguousarray(rgba[..., :3]), rgba[..., 3].astype(np.float32) / 255.0
        elif mode == 1:
            target, mask = base, None
        else:
            target, mask = base, 1.0 - self.canvas.mask()
        return InvertParams(
            target=target, mask=mask, space=self.space.currentText(), init=self.init.currentText(),
            l1_weight=self.l1.value(), perceptual_weight=self.perc.value(), l2_delta_weight=self.l2.value(),
            optimizer=self.optimizer.currentText(), steps=self.steps.value(), lr=self.lr.value(),
            seed=self.seed.value(), num_samples=self.samples.value(), preview_every=1,
        )  # fmt: skip

    def run_job(self) -> None:
        from core.errors import JobError

        try:
            params = self.job_params()
        except JobError as e:
            QMessageBox.warning(self, "Cannot run", str(e))
            return
        if params.mask is not None and float(params.mask.max()) <= 0:
            QMessageBox.information(self, "Nothing painted", "Paint a scribble (or a mask) first.")
            return
        self.settings.setValue("steps", params.steps)
        self._current_job = next(self._ids)
        self.progress.setRange(0, params.steps)
        self.progress.setValue(0)
        self.worker.submit(JobRequest(self._current_job, "invert", params))

    def _interpolate(self, value: int) -> None:
        with_latents = [r for _, r in self._results if r is not None]
        if len(with_latents) < 2:
            return
        a, b = with_latents[-2], with_latents[-1]
        req = JobRequest(next(self._ids), "interpolate_frame", ([a.ws[0], b.ws[0]], "w+", value / 100))
        self._current_job = req.job_id
        self.worker.submit(req)

    # --- worker messages ---
    def on_message(self, msg: WorkerMessage) -> None:
        match msg.kind:
            case MsgKind.MODEL_LOADED:
                self.canvas.reset(msg.payload["resolution"])
                self.statusBar().showMessage(
                    f"model {msg.payload['name']} ({msg.payload['resolution']} px)", 5000
                )
            case MsgKind.ERROR:
                self.step_label.setText("error")
                QMessageBox.warning(self, "Job failed", msg.payload)
            case _ if msg.job_id != self._current_job:
                return  # a superseded job's late message: stale, drop it
            case MsgKind.STARTED:
                self.step_label.setText("starting…")
            case MsgKind.PROGRESS:
                ev = msg.payload
                self.result_view.set_rgb(ev.preview[0])
                self.progress.setValue(ev.step)
                loss = ", ".join(f"{k} {v:.4f}" for k, v in ev.losses.items())
                self.step_label.setText(f"step {ev.step}/{ev.total}\n{loss}")
            case MsgKind.RESULT | MsgKind.CANCELLED if isinstance(msg.payload, np.ndarray):
                self.result_view.set_rgb(msg.payload)  # an interpolation frame
            case MsgKind.RESULT | MsgKind.CANCELLED:
                self._add_result(msg.payload, cancelled=msg.kind is MsgKind.CANCELLED)

    def _add_result(self, result, *, cancelled: bool) -> None:
        image = result.images[0]
        self.result_view.set_rgb(image)
        self._results.append((image, result))
        steps = len(result.loss_history)
        item = QListWidgetItem(f"#{len(self._results)} {result.params.space.value} {steps} st")
        from PySide6.QtGui import QIcon, QPixmap

        item.setIcon(QIcon(QPixmap.fromImage(qimage_from_rgb(image).scaled(64, 64))))
        item.setData(Qt.ItemDataRole.UserRole, len(self._results) - 1)
        self.history.addItem(item)
        self.step_label.setText(("stopped at" if cancelled else "done,") + f" {steps} steps")

    def _show_history_item(self, item: QListWidgetItem) -> None:
        self.result_view.set_rgb(self._results[item.data(Qt.ItemDataRole.UserRole)][0])

    def closeEvent(self, e) -> None:
        self.worker.stop()
        super().closeEvent(e)
