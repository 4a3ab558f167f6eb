"""The drawing canvas: base image, colour scribble layer and mask layer at the model's resolution,
shown scaled up with sharp (nearest) pixels. Every stroke is one undoable command."""

from __future__ import annotations

import enum

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QUndoCommand, QUndoStack
from PySide6.QtWidgets import QWidget


class Tool(enum.Enum):
    BRUSH = "brush"
    ERASER = "eraser"
    MASK = "mask"
    MASK_ERASER = "mask eraser"


class Layer(enum.Enum):
    SCRIBBLE = "scribble"
    MASK = "mask"


MASK_COLOUR = QColor(255, 40, 120)


def qimage_from_rgb(rgb: np.ndarray) -> QImage:
    h, w, _ = rgb.shape
    img = QImage(np.ascontiguousarray(rgb).data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return img.copy()  # own the pixels: the numpy buffer may go away


def rgba_from_qimage(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format.Format_RGBA8888)
    arr = np.frombuffer(img.constBits(), np.uint8, img.sizeInBytes())
    return arr.reshape(img.height(), img.bytesPerLine() // 4, 4)[:, : img.width()].copy()


class LayerEdit(QUndoCommand):
    """Swap a layer's pixels between before and after (layers are tiny, so whole copies are cheap)."""

    def __init__(self, canvas: Canvas, layer: Layer, before: QImage, after: QImage, text: str):
        super().__init__(text)
        self.canvas, self.layer, self.before, self.after = canvas, layer, before, after

    def redo(self) -> None:
        self.canvas.set_layer(self.layer, self.after)

    def undo(self) -> None:
        self.canvas.set_layer(self.layer, self.before)


class Canvas(QWidget):
    stroke_finished = Signal()  # a stroke or layer operation changed the inputs

    def __init__(self, resolution: int = 64, parent=None):
        super().__init__(parent)
        self.undo_stack = QUndoStack(self)
        self.tool = Tool.BRUSH
        self.colour = QColor(230, 140, 40)
        self.brush_size = 4.0  # in model pixels
        self.opacity = 1.0
        self.show_mask = True
        self._stroke_before: QImage | None = None
        self._last: QPointF | None = None
        self.setMinimumSize(256, 256)
        self.setMouseTracking(False)
        self.reset(resolution)

    def reset(self, resolution: int) -> None:
        self.resolution = resolution
        self.base = QImage(resolution, resolution, QImage.Format.Format_RGB888)
        self.base.fill(QColor(128, 128, 128))
        self.layers = {layer: self._blank() for layer in Layer}
        self.undo_stack.clear()
        self.update()

    def _blank(self) -> QImage:
        img = QImage(self.resolution, self.resolution, QImage.Format.Format_ARGB32_Premultiplied)
        img.fill(Qt.GlobalColor.transparent)
        return img

    # --- layers ---
    def set_base(self, rgb: np.ndarray) -> None:
        img = qimage_from_rgb(rgb)
        if img.width() != self.resolution or img.height() != self.resolution:
            img = img.scaled(
                self.resolution,
                self.resolution,
                Qt.AspectRatioMode.IgnoreAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
        self.base = img
        self.update()

    def set_layer(self, layer: Layer, img: QImage) -> None:
        self.layers[layer] = img.copy()
        self.update()
        self.stroke_finished.emit()

    def clear_layer(self, layer: Layer) -> None:
        self.undo_stack.push(
            LayerEdit(self, layer, self.layers[layer].copy(), self._blank(), f"clear {layer.value}")
        )

    def fill_layer(self, layer: Layer) -> None:
        img = self._blank()
        img.fill(self.colour if layer is Layer.SCRIBBLE else MASK_COLOUR)
        self.undo_stack.push(LayerEdit(self, layer, self.layers[layer].copy(), img, f"fill {layer.value}"))

    def scribble_rgba(self) -> np.ndarray:
        """[R, R, 4] uint8: colours where painted, alpha = how much."""
        return rgba_from_qimage(self.layers[Layer.SCRIBBLE])

    def mask(self) -> np.ndarray:
        """[R, R] float32 in [0, 1]: 1 where the mask is painted."""
        return rgba_from_qimage(self.layers[Layer.MASK])[..., 3].astype(np.float32) / 255.0

    def base_rgb(self) -> np.ndarray:
        return rgba_from_qimage(self.base)[..., :3]

    # --- painting ---
    def _active_layer(self) -> Layer:
        return Layer.MASK if self.tool in (Tool.MASK, Tool.MASK_ERASER) else Layer.SCRIBBLE

    def _view_rect(self) -> QRectF:
        side = min(self.width(), self.height())
        return QRectF((self.width() - side) / 2, (self.height() - side) / 2, side, side)

    def _to_image(self, pos: QPointF) -> QPointF:
        r = self._view_rect()
        s = self.resolution / r.width()
        return QPointF((pos.x() - r.x()) * s, (pos.y() - r.y()) * s)

    def _paint_segment(self, a: QPointF, b: QPointF) -> None:
        layer = self._active_layer()
        painter = QPainter(self.layers[layer])
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        erasing = self.tool in (Tool.ERASER, Tool.MASK_ERASER)
        if erasing:
            painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Clear)
        colour = QColor(self.colour if layer is Layer.SCRIBBLE else MASK_COLOUR)
        colour.setAlphaF(self.opacity if not erasing else 1.0)
        pen = QPen(
            colour, self.brush_size, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin
        )
        painter.setPen(pen)
        painter.drawLine(a, b)
        painter.end()
        self.update()

    def stroke(self, points: list[tuple[float, float]]) -> None:
        """Paint a polyline in image coordinates as one undoable stroke (used by tests and scripts)."""
        layer = self._active_layer()
        before = self.layers[layer].copy()
        pts = [QPointF(x, y) for x, y in points]
        for a, b in zip(pts, pts[1:] or pts, strict=False):
            self._paint_segment(a, b)
        self.undo_stack.push(
            LayerEdit(self, layer, before, self.layers[layer].copy(), f"{self.tool.value} stroke")
        )

    def mousePressEvent(self, e) -> None:
        if e.button() != Qt.MouseButton.LeftButton:
            return
        self._stroke_before = self.layers[self._active_layer()].copy()
        self._last = self._to_image(e.position())
        self._paint_segment(self._last, self._last)

    def mouseMoveEvent(self, e) -> None:
        if self._last is None:
            return
        p = self._to_image(e.position())
        self._paint_segment(self._last, p)
        self._last = p

    def mouseReleaseEvent(self, e) -> None:
        if self._last is None:
            return
        layer = self._active_layer()
        self.undo_stack.push(
            LayerEdit(
                self, layer, self._stroke_before, self.layers[layer].copy(), f"{self.tool.value} stroke"
            )
        )
        self._last = self._stroke_before = None

    def paintEvent(self, _e) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(40, 40, 44))
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)  # sharp model pixels
        r = self._view_rect()
        p.drawImage(r, self.base)
        p.drawImage(r, self.layers[Layer.SCRIBBLE])
        if self.show_mask:
            p.setOpacity(0.45)
            p.drawImage(r, self.layers[Layer.MASK])
        p.end()


class ImageView(QWidget):
    """Shows an RGB uint8 array scaled up sharply."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.image: QImage | None = None
        self.setMinimumSize(256, 256)

    def set_rgb(self, rgb: np.ndarray | None) -> None:
        self.image = qimage_from_rgb(rgb) if rgb is not None else None
        self.update()

    def paintEvent(self, _e) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(40, 40, 44))
        if self.image is not None:
            side = min(self.width(), self.height())
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            p.drawImage(QRectF((self.width() - side) / 2, (self.height() - side) / 2, side, side), self.image)
        p.end()
