"""One panel per job the core offers. A panel owns its controls and turns them, with the canvas
layers, into that job's params dataclass; it never runs model code."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from desktop.canvas import Canvas

INVERT_MODES = ("Scribble to image", "Invert base image", "Inpaint (mask = hole)")


def _form(rows) -> QFormLayout:
    form = QFormLayout()
    for label, widget in rows:
        form.addRow(label, widget)
    return form


class InvertPanel(QWidget):
    """GAN inversion: scribble-to-image (loss where painted), invert the base, or inpaint the hole."""

    kind = "invert"

    def __init__(self, settings, parent=None):
        super().__init__(parent)
        self.mode = QComboBox()
        self.mode.addItems(INVERT_MODES)
        self.space = QComboBox()
        self.space.addItems(["w+", "w", "z"])
        self.init = QComboBox()
        self.init.addItems(["mean", "random"])
        self.optimizer = QComboBox()
        self.optimizer.addItems(["adam", "lbfgs"])
        self.steps = QSpinBox(minimum=1, maximum=5000, value=int(settings.value("invert/steps", 200)))
        self.lr = QDoubleSpinBox(minimum=0.001, maximum=1.0, singleStep=0.01, decimals=3, value=0.05)
        self.l1 = QDoubleSpinBox(minimum=0.0, maximum=100.0, value=10.0)
        self.perc = QDoubleSpinBox(minimum=0.0, maximum=10.0, decimals=3, singleStep=0.01, value=0.01)
        self.l2 = QDoubleSpinBox(minimum=0.0, maximum=100.0, decimals=3, value=0.0)
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        self.samples = QSpinBox(minimum=1, maximum=16, value=1)
        lay = QVBoxLayout(self)
        lay.addLayout(
            _form(
                [
                    ("Mode", self.mode),
                    ("Latent space", self.space),
                    ("Init", self.init),
                    ("Optimiser", self.optimizer),
                    ("Steps", self.steps),
                    ("Learning rate", self.lr),
                    ("L1 weight", self.l1),
                    ("Perceptual weight", self.perc),
                    ("L2 on delta", self.l2),
                    ("Seed", self.seed),
                    ("Samples", self.samples),
                ]
            )
        )
        lay.addStretch(1)

    def set_spaces(self, spaces: list[str]) -> None:
        current = self.space.currentText()
        self.space.clear()
        self.space.addItems([s for s in ("w+", "w", "z") if s in spaces])
        if current in spaces:
            self.space.setCurrentText(current)

    def needs_paint(self, canvas: Canvas) -> str | None:
        """Why the job cannot run yet (nothing painted), or None."""
        mode = self.mode.currentIndex()
        if mode == 0 and canvas.scribble_rgba()[..., 3].max() == 0:
            return "Paint a colour scribble first: the loss is computed only where you painted."
        if mode == 2 and canvas.mask().max() == 0:
            return "Paint the hole with the mask brush first."
        return None

    def params(self, canvas: Canvas, warm_latent: np.ndarray | None = None):
        from core.jobs.params import InvertParams

        mode = self.mode.currentIndex()
        if mode == 0:
            rgba = canvas.scribble_rgba()
            target, mask = np.ascontiguousarray(rgba[..., :3]), rgba[..., 3].astype(np.float32) / 255.0
        elif mode == 1:
            target, mask = canvas.base_rgb(), None
        else:
            target, mask = canvas.base_rgb(), 1.0 - canvas.mask()
        init = {"init": self.init.currentText()}
        if warm_latent is not None:
            init = {"init": "latent", "init_latent": warm_latent}
        return InvertParams(
            target=target, mask=mask, space=self.space.currentText(), **init,
            l1_weight=self.l1.value(), perceptual_weight=self.perc.value(), l2_delta_weight=self.l2.value(),
            optimizer=self.optimizer.currentText(), steps=self.steps.value(), lr=self.lr.value(),
            seed=self.seed.value(), num_samples=self.samples.value() if warm_latent is None else 1,
            preview_every=1,
        )  # fmt: skip


class InterpolatePanel(QWidget):
    """Pick two or more history results with latents; the slider walks the path through them."""

    position = Signal(float)  # t in [0, 1] along the whole path

    def __init__(self, parent=None):
        super().__init__(parent)
        self.ends = QLabel("Select two or more results in the history strip (Ctrl+click).")
        self.ends.setWordWrap(True)
        self.slider = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=1000)
        self.slider.valueChanged.connect(lambda v: self.position.emit(v / 1000))
        lay = QVBoxLayout(self)
        lay.addWidget(self.ends)
        lay.addWidget(self.slider)
        lay.addStretch(1)

    def set_ends(self, labels: list[str]) -> None:
        self.slider.setEnabled(len(labels) >= 2)
        self.ends.setText(
            " → ".join(labels)
            if len(labels) >= 2
            else "Select two or more results in the history strip (Ctrl+click)."
        )
