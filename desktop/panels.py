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
MODE_KEYS = ("scribble", "invert", "inpaint")  # core.jobs.params.MODE_DEFAULTS, by INVERT_MODES index


def _form(rows) -> QFormLayout:
    form = QFormLayout()
    for label, widget in rows:
        form.addRow(label, widget)
    return form


def _class_box() -> QSpinBox:
    """The class label of a conditional generator; disabled (and unused) for unconditional ones."""
    box = QSpinBox(minimum=0, maximum=0, value=0, toolTip="Conditional generators: the class to draw")
    box.setEnabled(False)
    return box


def set_classes(box: QSpinBox, c_dim: int) -> None:
    box.setMaximum(max(c_dim - 1, 0))
    box.setEnabled(c_dim > 0)


def _class_of(box: QSpinBox) -> int | None:
    return box.value() if box.isEnabled() else None


def _truncation_box() -> QDoubleSpinBox:
    return QDoubleSpinBox(
        minimum=0.0, maximum=1.0, singleStep=0.05, decimals=2, value=1.0,
        toolTip="Truncation ψ for random starts: pulls each start's w towards the mean w "
        "(1 = none; lower = more typical, cleaner images with less variety)",
    )  # fmt: skip


def _jitter_box() -> QDoubleSpinBox:
    return QDoubleSpinBox(
        minimum=0.0, maximum=3.0, decimals=2, singleStep=0.1, value=0.0,
        toolTip="Encoder init, several samples: how far (in W standard deviations) the other samples "
        "start from the encoder's answer",
    )  # fmt: skip


def _count_box(maximum: int, tip: str, *, off: bool = False) -> QSpinBox:
    """A count from 0 to ``maximum`` (0 shown as "off" with ``off``), starting at 0."""
    return QSpinBox(minimum=0, maximum=maximum, value=0, specialValueText="off" if off else "", toolTip=tip)


_REFINE_TIP = ("Encoder init: ReStyle refinements after its first pass (each renders the answer and lets "
               "the encoder correct it; offered when the model's encoder has a refiner)")  # fmt: skip
_RAMPUP_TIP = ("Adam: the learning rate rises from a fifth of its value to it over this many steps (keeps "
               "a good start, such as the encoder's, from being thrown off by the first steps)")  # fmt: skip
_STARTS_TIP = ("Multi-start: this many random starts run together for a few steps, then the best "
               "'Samples' of them (by the loss plus how typical their w is) continue")  # fmt: skip


def _init_box() -> QComboBox:
    box = QComboBox(
        toolTip="Where the latent starts: the mean, random draws, or the generator's "
        "encoder (one pass from your image or paint; offered when the model has one)"
    )
    box.addItems(["mean", "random"])
    return box


class InvertPanel(QWidget):
    """GAN inversion: scribble-to-image (loss where painted), invert the base, or inpaint the hole."""

    kind = "invert"

    def __init__(self, settings, parent=None):
        super().__init__(parent)
        self.mode = QComboBox()
        self.mode.addItems(INVERT_MODES)
        self.space = QComboBox()
        self.space.addItems(["w+", "w", "z", "s"])
        self.init = _init_box()
        self.has_encoder = False
        self.jitter = _jitter_box()
        self.refine = _count_box(0, _REFINE_TIP)
        self.optimizer = QComboBox()
        self.optimizer.addItems(["adam", "lbfgs"])
        self.steps = QSpinBox(minimum=1, maximum=5000, value=settings.panel("invert", "steps", 200))
        self._steps_default = self.steps.value()
        self.lr = QDoubleSpinBox(minimum=0.001, maximum=1.0, singleStep=0.01, decimals=3, value=0.05)
        self.rampup = _count_box(1000, _RAMPUP_TIP, off=True)
        self.l1 = QDoubleSpinBox(minimum=0.0, maximum=100.0, value=10.0)
        self.perc = QDoubleSpinBox(minimum=0.0, maximum=10.0, decimals=3, singleStep=0.01, value=0.01)
        self.l2 = QDoubleSpinBox(minimum=0.0, maximum=100.0, decimals=3, value=0.0)
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        self.samples = QSpinBox(minimum=1, maximum=16, value=1)
        self.starts = _count_box(64, _STARTS_TIP, off=True)
        self.spread = QDoubleSpinBox(
            minimum=0.0, maximum=100.0, decimals=3, value=0.0,
            toolTip="w+ only: keeps the per-layer latents close together (nearer the image manifold)",
        )  # fmt: skip
        self.truncation = _truncation_box()
        self.class_label = _class_box()
        lay = QVBoxLayout(self)
        lay.addLayout(
            _form(
                [
                    ("Mode", self.mode),
                    ("Latent space", self.space),
                    ("Init", self.init),
                    ("Encoder spread", self.jitter),
                    ("Encoder refinements", self.refine),
                    ("Optimiser", self.optimizer),
                    ("Steps", self.steps),
                    ("Learning rate", self.lr),
                    ("LR ramp-up", self.rampup),
                    ("L1 weight", self.l1),
                    ("Perceptual weight", self.perc),
                    ("L2 on delta", self.l2),
                    ("w+ spread", self.spread),
                    ("Seed", self.seed),
                    ("Samples", self.samples),
                    ("Starts", self.starts),
                    ("Truncation ψ", self.truncation),
                    ("Class", self.class_label),
                ]
            )
        )
        lay.addStretch(1)
        self.mode.currentIndexChanged.connect(self.apply_mode_defaults)
        self.space.currentTextChanged.connect(self._space_chosen)
        self.apply_mode_defaults(self.mode.currentIndex())

    def apply_mode_defaults(self, mode: int) -> None:
        """Set the controls to the measured defaults of the chosen job (docs/models.md, and
        docs/encoders.md where the model has an encoder)."""
        from core.jobs.params import mode_defaults

        spaces = [self.space.itemText(i) for i in range(self.space.count())]
        d = mode_defaults(MODE_KEYS[mode], has_encoder=self.has_encoder, spaces=spaces)
        if self.space.findText(d["space"]) >= 0:
            self.space.setCurrentText(d["space"])
        self.init.setCurrentText(d["init"])
        self.jitter.setValue(d.get("encoder_jitter", 0.0))
        self.refine.setValue(d.get("encoder_refine", 0))  # capped at what the encoder offers
        self.steps.setValue(d.get("steps", self._steps_default))  # a mode without its own: the panel's
        self.lr.setValue(d.get("lr", 0.05))
        self.rampup.setValue(d.get("lr_rampup", 0))
        self.l1.setValue(d["l1_weight"])
        self.perc.setValue(d["perceptual_weight"])
        self.spread.setValue(d["spread_weight"])
        self.starts.setValue(d["starts"])

    def _space_chosen(self, space: str) -> None:
        """The lr and ramp-up measured for the chosen space (the encoder's Style-space lr is not w+'s)."""
        from core.jobs.params import mode_defaults

        if space:
            d = mode_defaults(MODE_KEYS[self.mode.currentIndex()], has_encoder=self.has_encoder, space=space)
            self.lr.setValue(d.get("lr", 0.05))
            self.rampup.setValue(d.get("lr_rampup", 0))

    def set_encoder(self, available: bool, note: str = "", refine: int = 0) -> None:
        """Offer the "encoder" init only when the loaded generator has an encoder (and make it the
        default then); ``note`` says why there is none; ``refine``: the refinements its refiner offers."""
        self.has_encoder = available
        self.refine.setMaximum(refine if available else 0)
        index = self.init.findText("encoder")
        if available and index < 0:
            self.init.addItem("encoder")
        elif not available and index >= 0:
            self.init.removeItem(index)
        self.init.setToolTip(self.init.toolTip().split("\n")[0] + (f"\n{note}" if note else ""))
        self.apply_mode_defaults(self.mode.currentIndex())

    def set_spaces(self, spaces: list[str]) -> None:
        current = self.space.currentText()
        self.space.clear()
        self.space.addItems([s for s in ("w+", "w", "z", "s") if s in spaces])
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

    def params(self, canvas: Canvas, warm_latent: np.ndarray | None = None, *, frame: bool = False):
        """The job the controls describe. ``frame``: a live frame while a stroke is drawn (the
        encoder's one-pass answer for one sample, no optimisation)."""
        from core.imageio import split_scribble
        from core.jobs.params import InvertParams

        mode = self.mode.currentIndex()
        if mode == 0:
            target, mask = split_scribble(canvas.scribble_rgba())
        elif mode == 1:
            target, mask = canvas.base_rgb(), None
        else:
            target, mask = canvas.base_rgb(), 1.0 - canvas.mask()
        init = {"init": self.init.currentText(), "encoder_jitter": self.jitter.value(),
                "encoder_refine": self.refine.value()}  # fmt: skip
        # Multi-start needs at least as many starts as samples; a warm start (live mode) is one latent.
        starts = max(self.starts.value(), self.samples.value()) if self.starts.value() else 0
        samples = self.samples.value()
        if warm_latent is not None:
            init, starts, samples = {"init": "latent", "init_latent": warm_latent}, 0, 1
        if frame:
            init, starts, samples = {"init": "encoder"}, 0, 1
        return InvertParams(
            target=target, mask=mask, space=self.space.currentText(), **init,
            l1_weight=self.l1.value(), perceptual_weight=self.perc.value(), l2_delta_weight=self.l2.value(),
            optimizer=self.optimizer.currentText(), steps=0 if frame else self.steps.value(),
            lr=self.lr.value(), lr_rampup=self.rampup.value(), seed=self.seed.value(), num_samples=samples,
            preview_every=1, paste_back=mode == 2, spread_weight=self.spread.value(),
            starts=starts, truncation=self.truncation.value(), class_label=_class_of(self.class_label),
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


PRIOR_TASKS = (
    ("CLIP text", "clip"),
    ("Scribble (painted pixels)", "scribble"),
    ("Inpaint (mask = hole)", "inpaint"),
    ("Similarity (whole base)", "similarity"),
)
PRIORS = ("diffusion", "task-guided", "cluster", "mean", "none")


class PriorPanel(QWidget):
    """Prior projection (seed paper): task steps alternating with K diffusion denoising steps."""

    kind = "project"

    def __init__(self, settings, parent=None):
        super().__init__(parent)
        from PySide6.QtWidgets import QLineEdit

        from core.jobs.params import ProjectionParams

        self.task = QComboBox()
        for label, value in PRIOR_TASKS:
            self.task.addItem(label, value)
        self.prompt = QLineEdit(settings.panel("project", "prompt", "an orange tabby cat with green eyes"))
        self.prior = QComboBox()
        self.prior.addItems(PRIORS)
        self.space = QComboBox()
        self.space.addItems(["w", "w+", "s"])
        self.steps = QSpinBox(minimum=1, maximum=2000, value=settings.panel("project", "steps", 50))
        # The job's own defaults: the ones docs/prior.md measured.
        d = ProjectionParams.__dataclass_fields__
        self.k = QSpinBox(
            minimum=1, maximum=100, value=d["denoise_steps"].default, toolTip="denoising steps per task step"
        )
        self.lr = QDoubleSpinBox(
            minimum=0.001, maximum=1.0, singleStep=0.01, decimals=3, value=d["lr"].default
        )
        self.guidance = QDoubleSpinBox(
            minimum=0.0, maximum=1000.0, value=d["guidance_scale"].default, toolTip="task-guided only"
        )
        self.samples = QSpinBox(minimum=1, maximum=16, value=4)
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        self.truncation = _truncation_box()
        self.class_label = _class_box()
        lay = QVBoxLayout(self)
        lay.addLayout(
            _form(
                [
                    ("Task", self.task),
                    ("Prompt", self.prompt),
                    ("Prior", self.prior),
                    ("Latent space", self.space),
                    ("Steps", self.steps),
                    ("Denoise K", self.k),
                    ("Learning rate", self.lr),
                    ("Guidance", self.guidance),
                    ("Samples", self.samples),
                    ("Seed", self.seed),
                    ("Truncation ψ", self.truncation),
                    ("Class", self.class_label),
                ]
            )
        )
        lay.addStretch(1)

    def needs_paint(self, canvas: Canvas) -> str | None:
        task = self.task.currentData()
        if task == "clip" and not self.prompt.text().strip():
            return "Type a prompt for the CLIP task."
        if task == "scribble" and canvas.scribble_rgba()[..., 3].max() == 0:
            return "Paint a colour scribble first."
        if task == "inpaint" and canvas.mask().max() == 0:
            return "Paint the hole with the mask brush first."
        return None

    def params(self, canvas: Canvas):
        from core.imageio import split_scribble
        from core.jobs.params import ProjectionParams

        task = self.task.currentData()
        target = mask = None
        if task == "scribble":
            target, mask = split_scribble(canvas.scribble_rgba())
        elif task in ("inpaint", "similarity"):
            target = canvas.base_rgb()
            mask = 1.0 - canvas.mask() if task == "inpaint" else None
        return ProjectionParams(
            task=task, prompt=self.prompt.text(), target=target, mask=mask, prior=self.prior.currentText(),
            space=self.space.currentText(), steps=self.steps.value(), lr=self.lr.value(),
            denoise_steps=self.k.value(), guidance_scale=self.guidance.value(),
            num_samples=self.samples.value(), seed=self.seed.value(), preview_every=1,
            truncation=self.truncation.value(), class_label=_class_of(self.class_label),
        )  # fmt: skip


class SDPanel(QWidget):
    """SDEdit: the canvas (base with the scribble over it) noised to N, denoised with the prompt."""

    kind = "sdedit"

    def __init__(self, settings, parent=None):
        super().__init__(parent)
        from PySide6.QtWidgets import QCheckBox, QLineEdit

        self.model = QComboBox(editable=True)
        self.model.setToolTip("a diffusers folder, an SD .safetensors file or a hub id in the cache")
        self.model.lineEdit().setPlaceholderText("bundled tiny model")
        self.refresh_models(settings.panel("sdedit", "model", ""))
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.device.setToolTip("auto: CUDA, else Apple MPS, else CPU (float16 on CUDA)")
        self.prompt = QLineEdit(settings.panel("sdedit", "prompt", "a grey cat with blue eyes"))
        self.negative = QLineEdit("")
        self.strength = QDoubleSpinBox(minimum=0.05, maximum=1.0, singleStep=0.05, value=0.6)
        self.guidance = QDoubleSpinBox(minimum=1.0, maximum=50.0, singleStep=0.5, value=5.0)
        self.sampler = QComboBox()
        self.sampler.addItems(["ddim", "ddpm"])
        self.steps = QSpinBox(minimum=1, maximum=1000, value=settings.panel("sdedit", "steps", 25))
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        self.samples = QSpinBox(minimum=1, maximum=8, value=1)
        self.local = QCheckBox("Only inside the mask")
        lay = QVBoxLayout(self)
        lay.addLayout(
            _form(
                [
                    ("Model", self.model),
                    ("Device", self.device),
                    ("Prompt", self.prompt),
                    ("Negative", self.negative),
                    ("Strength (N/T)", self.strength),
                    ("Guidance", self.guidance),
                    ("Sampler", self.sampler),
                    ("Steps S", self.steps),
                    ("Samples", self.samples),
                    ("Seed", self.seed),
                ]
            )
        )
        lay.addWidget(self.local)
        lay.addStretch(1)

    def refresh_models(self, current: str = "") -> None:
        """The bundled model, then what the model manager finds (model folders, Hugging Face cache)."""
        from core.models.manager import BUNDLED_SD, sd_models

        self.model.clear()
        self.model.addItem("", "")  # empty = the bundled model (the placeholder says so)
        for path in sd_models():
            if path.name != BUNDLED_SD:
                self.model.addItem(path.name, str(path))
        self.model.setCurrentText(current)

    def model_source(self) -> str | None:
        """The chosen model: a listed entry's path, or whatever path or hub id was typed."""
        text = self.model.currentText().strip()
        i = self.model.findText(text)
        return (self.model.itemData(i) if i >= 0 else text) or None

    def needs_paint(self, canvas: Canvas) -> str | None:
        if self.local.isChecked() and canvas.mask().max() == 0:
            return "Paint the region to regenerate with the mask brush, or untick 'Only inside the mask'."
        return None

    def params(self, canvas: Canvas):
        from core.jobs.params import SDEditParams
        from core.worker.messages import SDEditRequest

        mask = canvas.mask() if self.local.isChecked() else None
        params = SDEditParams(
            guide=canvas.composite_rgb(), prompt=self.prompt.text(), negative_prompt=self.negative.text(),
            mask=mask, strength=self.strength.value(), guidance_scale=self.guidance.value(),
            sampler=self.sampler.currentText(), steps=self.steps.value(), seed=self.seed.value(),
            num_samples=self.samples.value(),
        )  # fmt: skip
        return SDEditRequest(params, source=self.model_source(), device=self.device.currentText())
