"""Small widgets: the live loss curve, a colour swatch button, and the event-loop stall meter."""

from __future__ import annotations

import math
import time

import numpy as np
from PySide6.QtCore import QObject, QPointF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QColorDialog, QToolButton, QWidget


class LossPlot(QWidget):
    """Total loss per step on a log scale, redrawn as progress arrives."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.points: list[tuple[int, float]] = []
        self.total = 1
        self.setMinimumHeight(70)

    def reset(self, total: int) -> None:
        self.points, self.total = [], max(total, 1)
        self.update()

    def add(self, step: int, losses: dict[str, float]) -> None:
        value = losses.get("total", sum(losses.values()) if losses else float("nan"))
        if math.isfinite(value) and value > 0:
            self.points.append((step, value))
            self.update()

    def paintEvent(self, _e) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(30, 30, 34))
        if len(self.points) >= 2:
            logs = np.log10([v for _, v in self.points])
            lo, hi = float(logs.min()), float(logs.max())
            span = max(hi - lo, 1e-6)
            w, h = self.width() - 8, self.height() - 8
            path = QPainterPath()
            for i, ((step, _), lv) in enumerate(zip(self.points, logs, strict=True)):
                pt = QPointF(4 + w * step / self.total, 4 + h * (hi - lv) / span)
                path.moveTo(pt) if i == 0 else path.lineTo(pt)
            p.setRenderHint(QPainter.RenderHint.Antialiasing)
            p.setPen(QPen(QColor(120, 200, 255), 1.5))
            p.drawPath(path)
            p.setPen(QColor(200, 200, 200))
            p.drawText(6, 14, f"loss {self.points[-1][1]:.4g}")
        p.end()


class ColourButton(QToolButton):
    colour_changed = Signal(QColor)

    def __init__(self, colour: QColor, parent=None):
        super().__init__(parent)
        self.setToolTip("Brush colour")
        self.clicked.connect(self._pick)
        self.set_colour(colour)

    def set_colour(self, colour: QColor) -> None:
        self.colour = QColor(colour)
        self.setStyleSheet(f"background: {self.colour.name()}; min-width: 22px; border: 1px solid #888")
        self.colour_changed.emit(self.colour)

    def _pick(self) -> None:
        c = QColorDialog.getColor(self.colour, self, "Brush colour")
        if c.isValid():
            self.set_colour(c)


class StallMeter(QObject):
    """Measures how long the GUI event loop goes without serving a timer that should fire every
    ``interval_ms``: the extra delay of each tick is a stall the person would feel."""

    def __init__(self, interval_ms: int = 5, parent=None):
        super().__init__(parent)
        self.interval = interval_ms / 1000
        self.stalls_ms: list[float] = []
        self._last = 0.0
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def start(self) -> None:
        self.stalls_ms.clear()
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> dict[str, float]:
        self._timer.stop()
        return self.summary()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.stalls_ms.append(max(0.0, (now - self._last - self.interval) * 1000))
        self._last = now

    def summary(self) -> dict[str, float]:
        s = np.asarray(self.stalls_ms or [0.0])
        return {"ticks": len(self.stalls_ms), "max_ms": float(s.max()), "p99_ms": float(np.percentile(s, 99))}
