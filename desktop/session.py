"""The window's session: the project file (save / open), autosave and crash recovery.

A mixin of :class:`desktop.main_window.MainWindow` (it uses the window's canvas, history and status bar);
kept apart so the window is left with layout and wiring.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QFileDialog, QMessageBox

from desktop.canvas import MASK_COLOUR, Layer

log = logging.getLogger("desktop.main_window")
PROJECT_FILTER = "Latent Canvas projects (*.lcproj)"


class SessionMixin:
    def _mark_dirty(self, *_args) -> None:
        self._dirty = self._unsaved = True

    def _has_work(self) -> bool:
        return bool(self.history_entries) or self.canvas.undo_stack.count() > 0

    def to_project(self):
        from core.document import Document

        history = list(self.history_entries)  # the document keeps each entry's selected sample
        meta = {"brush_size": self.canvas.brush_size, "tab": self.tabs.currentIndex()}
        return Document(
            base=self.canvas.base_rgb(),
            scribble=self.canvas.scribble_rgba(),
            mask=self.canvas.mask(),
            model=str(self.model_path),
            history=history,
            meta=meta,
        )

    def save_project(self, *, ask: bool = False, path: str | None = None) -> Path | None:
        from core.document import save_document

        if path is None and (ask or self.project_path is None):
            path, _ = QFileDialog.getSaveFileName(self, "Save project", self._last_dir(), PROJECT_FILTER)
            if not path:
                return None
        target = Path(path) if path else self.project_path
        if target.suffix != ".lcproj":
            target = target.with_suffix(".lcproj")
        try:
            saved = save_document(self.to_project(), target)
        except (OSError, ValueError) as e:
            QMessageBox.warning(self, "Cannot save project", f"{target.name}: {e}")
            return None
        self.project_path, self._unsaved = saved, False
        self.setWindowTitle(f"Latent Canvas — {saved.name}")
        self.statusBar().showMessage(f"saved {saved}", 4000)
        return saved

    def open_project(self, path: str | None = None) -> bool:
        from core.document import DocumentLoadError, load_document

        if not path:
            path, _ = QFileDialog.getOpenFileName(self, "Open project", self._last_dir(), PROJECT_FILTER)
        if not path:
            return False
        try:
            project = load_document(path)
        except DocumentLoadError as e:
            QMessageBox.warning(self, "Cannot open project", str(e))
            return False
        self.project_path = Path(path)
        self.setWindowTitle(f"Latent Canvas — {self.project_path.name}")
        self._load_project(project)
        return True

    def _load_project(self, project) -> None:
        model = Path(project.model) if project.model else None
        if model is not None and model != self.model_path and model.is_file():
            self._pending_project = project  # applied when the model has loaded (it rescales the canvas)
            self.load_model(model)
        else:
            if model is not None and not model.is_file():
                self.statusBar().showMessage(f"the project's model {model} is missing; using the current one")
            self._apply_project(project)

    def _apply_project(self, project) -> None:
        self.canvas.set_base(project.base, undoable=False)
        self.canvas.set_layer_rgba(Layer.SCRIBBLE, project.scribble)
        self.canvas.set_layer_rgba(Layer.MASK, _mask_rgba(project.mask))
        self.canvas.undo_stack.clear()
        self.history.clear_entries()
        for entry in project.history:
            self.add_result(entry)
        self._dirty = self._unsaved = False

    def _start_autosave(self) -> None:
        from core.document import AutosaveSession, find_recoverable

        self.autosave_session = AutosaveSession.new()
        self._autosave_timer = QTimer(self)
        seconds = self.settings.autosave_seconds
        self._autosave_timer.setInterval(max(seconds, 1) * 1000)
        self._autosave_timer.timeout.connect(self.autosave)
        self._autosave_timer.start()
        recoverable = find_recoverable()
        if recoverable:
            QTimer.singleShot(0, lambda: self._offer_recovery(recoverable[0]))

    def _offer_recovery(self, rec) -> None:
        from datetime import datetime

        from core.document import DocumentLoadError, load_document

        when = datetime.fromtimestamp(rec.saved_at).strftime("%Y-%m-%d %H:%M")
        answer = QMessageBox.question(
            self,
            "Recover session?",
            f"Latent Canvas did not close cleanly. Recover the session autosaved at {when}?",
        )
        if answer == QMessageBox.StandardButton.Yes:
            try:
                self._load_project(load_document(rec.path))
            except DocumentLoadError as e:
                QMessageBox.warning(self, "Cannot recover", str(e))
                return
            self._dirty = True  # recovered work lives only in memory until the next autosave
            self.autosave()
        rec.path.unlink(missing_ok=True)

    def autosave(self) -> None:
        if not self._dirty:
            return
        try:
            self.autosave_session.write(self.to_project())
        except (OSError, ValueError) as e:
            log.warning("autosave failed: %s", e)
            return
        self._dirty = False


def _mask_rgba(mask: np.ndarray) -> np.ndarray:
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[..., :3] = (MASK_COLOUR.red(), MASK_COLOUR.green(), MASK_COLOUR.blue())
    rgba[..., 3] = np.round(np.clip(mask, 0, 1) * 255).astype(np.uint8)
    return rgba
