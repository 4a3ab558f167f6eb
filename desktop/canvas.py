"""The drawing canvas: base image, colour scribble, mask and result layers at the model's resolution,
shown over each other, scaled up with sharp (nearest) pixels, with zoom and pan. Every stroke and
layer operation is one undoable command."""

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
    BASE = "base"
    SCRIBBLE = "scribble"
    MASK = "mask"


MASK_COLOUR = QColor(255, 40, 120)
BACKDROP = QColor(40, 40, 44)
ZOOM_RANGE = (0.25, 16.0)


def qimage_from_rgb(rgb: np.ndarray) -> QImage:
    h, w, _ = rgb.shape
    img = QImage(np.ascontiguousarray(rgb).data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return img.copy()  # own the pixels: the numpy buffer may go away


def rgba_from_qimage(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format.Format_RGBA8888)
    arr = np.frombuffer(img.constBits(), np.uint8, img.sizeInBytes())
    return arr.reshape(img.height(), img.bytesPerLine() // 4, 4)[:, : img.width()].copy()


def qimage_from_rgba(rgba: np.ndarray) -> QImage:
    h, w, _ = rgba.shape
    img = QImage(np.ascontiguousarray(rgba).data, w, h, 4 * w, QImage.Format.Format_RGBA8888)
    return img.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)


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
    """Left button paints with the current tool; wheel zooms about the cursor; middle button (or
    Space + left) pans; double-click with the middle button fits the image again."""

    stroke_finished = Signal()  # a stroke or layer operation changed the inputs
    stroke_moved = Signal()  # a stroke in progress painted more (live encoder frames follow it)
    zoom_changed = Signal(float)

    def __init__(self, resolution: int = 64, parent=None):
        super().__init__(parent)
        self.undo_stack = QUndoStack(self)
        self.tool = Tool.BRUSH
        self.colour = QColor(230, 140, 40)
        self.brush_size = 4.0  # in model pixels
        self.opacity = 1.0
        self.show_mask = True
        self.result: QImage | None = None
        self.result_opacity = 0.0  # the result layer, shown over the base when > 0
        self._stroke_before: QImage | None = None
        self._last: QPointF | None = None
        self._pan_from: QPointF | None = None
        self._space_down = False
        self.zoom = 1.0  # 1 = fit the widget
        self.offset = QPointF(0, 0)  # pan, in widget pixels
        self.setMinimumSize(256, 256)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.reset(resolution)

    def reset(self, resolution: int) -> None:
        self.resolution = resolution
        base = QImage(resolution, resolution, QImage.Format.Format_RGB888)
        base.fill(QColor(128, 128, 128))
        self._install(base, {layer: self._blank() for layer in (Layer.SCRIBBLE, Layer.MASK)})

    def rescale(self, resolution: int) -> None:
        """Keep every layer, scaled to a new model's ``resolution`` (an image opened, a session
        recovered or a scribble drawn while a model was loading must survive its arrival); the result
        and the undo history (snapshots at the old size) go."""
        self.resolution = resolution
        self._install(self._fit(self.base), {layer: self._fit(img) for layer, img in self.layers.items()})

    def _install(self, base: QImage, layers: dict[Layer, QImage]) -> None:
        """New layers at ``self.resolution``: the result and the undo snapshots no longer fit them."""
        self.base, self.layers, self.result = base, layers, None
        self.undo_stack.clear()
        self.update()

    def _blank(self) -> QImage:
        img = QImage(self.resolution, self.resolution, QImage.Format.Format_ARGB32_Premultiplied)
        img.fill(Qt.GlobalColor.transparent)
        return img

    # --- layers ---
    def _fit(self, img: QImage) -> QImage:
        if img.width() == self.resolution and img.height() == self.resolution:
            return img
        return img.scaled(
            self.resolution,
            self.resolution,
            Qt.AspectRatioMode.IgnoreAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )

    def set_base(self, rgb: np.ndarray, *, undoable: bool = True) -> None:
        img = self._fit(qimage_from_rgb(rgb))
        if undoable:
            self.undo_stack.push(LayerEdit(self, Layer.BASE, self.base.copy(), img, "set base image"))
        else:
            self.base = img
            self.update()

    def set_result(self, rgb: np.ndarray | None) -> None:
        self.result = None if rgb is None else self._fit(qimage_from_rgb(rgb))
        self.update()

    def set_layer(self, layer: Layer, img: QImage) -> None:
        if layer is Layer.BASE:
            self.base = img.copy()
        else:
            self.layers[layer] = img.copy()
        self.update()
        self.stroke_finished.emit()

    def set_layer_rgba(self, layer: Layer, rgba: np.ndarray) -> None:
        """Replace a paint layer from [R, R, 4] uint8 without an undo entry (opening a project)."""
        self.layers[layer] = self._fit(qimage_from_rgba(rgba))
        self.update()

    def clear_layer(self, layer: Layer) -> None:
        self.undo_stack.push(
            LayerEdit(self, layer, self.layers[layer].copy(), self._blank(), f"clear {layer.value}")
        )

    def fill_layer(self, layer: Layer) -> None:
        img = self._blank()
        colour = QColor(self.colour if layer is Layer.SCRIBBLE else MASK_COLOUR)
        colour.setAlphaF(self.opacity if layer is Layer.SCRIBBLE else 1.0)
        img.fill(colour)
        self.undo_stack.push(LayerEdit(self, layer, self.layers[layer].copy(), img, f"fill {layer.value}"))

    def scribble_rgba(self) -> np.ndarray:
        """[R, R, 4] uint8: colours where painted (not premultiplied), alpha = how much."""
        return rgba_from_qimage(self.layers[Layer.SCRIBBLE])

    def mask(self) -> np.ndarray:
        """[R, R] float32 in [0, 1]: 1 where the mask is painted."""
        return rgba_from_qimage(self.layers[Layer.MASK])[..., 3].astype(np.float32) / 255.0

    def mask_rgba(self) -> np.ndarray:
        return rgba_from_qimage(self.layers[Layer.MASK])

    def base_rgb(self) -> np.ndarray:
        return rgba_from_qimage(self.base)[..., :3]

    def composite_rgb(self) -> np.ndarray:
        """[R, R, 3] uint8: the scribble painted over the base (SDEdit's guide: a stroke painting)."""
        img = self.base.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
        p = QPainter(img)
        p.drawImage(0, 0, self.layers[Layer.SCRIBBLE])
        p.end()
        return rgba_from_qimage(img)[..., :3]

    # --- view transform ---
    def view_rect(self) -> QRectF:
        side = min(self.width(), self.height()) * self.zoom
        centre = QPointF(self.width() / 2, self.height() / 2) + self.offset
        return QRectF(centre.x() - side / 2, centre.y() - side / 2, side, side)

    def to_image(self, pos: QPointF) -> QPointF:
        r = self.view_rect()
        s = self.resolution / r.width()
        return QPointF((pos.x() - r.x()) * s, (pos.y() - r.y()) * s)

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        """Zoom keeping the image point under ``anchor`` (widget coordinates) in place."""
        zoom = min(max(zoom, ZOOM_RANGE[0]), ZOOM_RANGE[1])
        anchor = anchor if anchor is not None else QPointF(self.width() / 2, self.height() / 2)
        before = self.to_image(anchor)
        self.zoom = zoom
        after = self.to_image(anchor)
        px = self.view_rect().width() / self.resolution  # widget pixels per image pixel
        self.offset += QPointF((after.x() - before.x()) * px, (after.y() - before.y()) * px)
        self.update()
        self.zoom_changed.emit(self.zoom)

    def fit(self) -> None:
        self.zoom, self.offset = 1.0, QPointF(0, 0)
        self.update()
        self.zoom_changed.emit(self.zoom)

    # --- painting ---
    def _active_layer(self) -> Layer:
        return Layer.MASK if self.tool in (Tool.MASK, Tool.MASK_ERASER) else Layer.SCRIBBLE

    def _paint_segment(self, a: QPointF, b: QPointF) -> None:
        layer = self._active_layer()
        painter = QPainter(self.layers[layer])
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        erasing = self.tool in (Tool.ERASER, Tool.MASK_ERASER)
        if erasing:
            painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Clear)
        else:  # a stroke replaces what is under it, so opacity means "this much", not "build up"
            painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Source)
        colour = QColor(self.colour if layer is Layer.SCRIBBLE else MASK_COLOUR)
        colour.setAlphaF(1.0 if erasing or layer is Layer.MASK else self.opacity)
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

    # --- events ---
    def _panning_button(self, e) -> bool:
        return e.button() == Qt.MouseButton.MiddleButton or (
            e.button() == Qt.MouseButton.LeftButton and self._space_down
        )

    def mousePressEvent(self, e) -> None:
        if self._panning_button(e):
            self._pan_from = e.position()
            return
        if e.button() != Qt.MouseButton.LeftButton:
            return
        self._stroke_before = self.layers[self._active_layer()].copy()
        self._last = self.to_image(e.position())
        self._paint_segment(self._last, self._last)
        self.stroke_moved.emit()

    def mouseMoveEvent(self, e) -> None:
        if self._pan_from is not None:
            self.offset += e.position() - self._pan_from
            self._pan_from = e.position()
            self.update()
            return
        if self._last is None:
            return
        p = self.to_image(e.position())
        self._paint_segment(self._last, p)
        self._last = p
        self.stroke_moved.emit()

    def mouseReleaseEvent(self, e) -> None:
        if self._pan_from is not None:
            self._pan_from = None
            return
        if self._last is None:
            return
        layer = self._active_layer()
        self.undo_stack.push(
            LayerEdit(
                self, layer, self._stroke_before, self.layers[layer].copy(), f"{self.tool.value} stroke"
            )
        )
        self._last = self._stroke_before = None

    def mouseDoubleClickEvent(self, e) -> None:
        if e.button() == Qt.MouseButton.MiddleButton:
            self.fit()

    def wheelEvent(self, e) -> None:
        steps = e.angleDelta().y() / 120
        self.set_zoom(self.zoom * (1.25**steps), e.position())

    def keyPressEvent(self, e) -> None:
        if e.key() == Qt.Key.Key_Space and not e.isAutoRepeat():
            self._space_down = True
            self.setCursor(Qt.CursorShape.OpenHandCursor)
        super().keyPressEvent(e)

    def keyReleaseEvent(self, e) -> None:
        if e.key() == Qt.Key.Key_Space and not e.isAutoRepeat():
            self._space_down = False
            self.setCursor(Qt.CursorShape.CrossCursor)
        super().keyReleaseEvent(e)

    def paintEvent(self, _e) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), BACKDROP)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)  # sharp model pixels
        r = self.view_rect()
        p.drawImage(r, self.base)
        if self.result is not None and self.result_opacity > 0:
            p.setOpacity(self.result_opacity)
            p.drawImage(r, self.result)
            p.setOpacity(1.0)
        p.drawImage(r, self.layers[Layer.SCRIBBLE])
        if self.show_mask:
            p.setOpacity(0.45)
            p.drawImage(r, self.layers[Layer.MASK])
        p.end()


class ImageView(QWidget):
    """Shows one RGB uint8 image, or a grid of samples, scaled up sharply. Clicking a grid cell
    picks that sample (``picked``)."""

    picked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.images: list[QImage] = []
        self.selected = 0
        self.setMinimumSize(256, 256)

    @property
    def image(self) -> QImage | None:
        return self.images[self.selected] if self.images else None

    def set_rgb(self, rgb: np.ndarray | None) -> None:
        self.set_batch(None if rgb is None else rgb[None])

    def set_batch(self, batch: np.ndarray | None, selected: int = 0) -> None:
        """``batch``: [N, H, W, 3] uint8; N > 1 shows a variations grid."""
        self.images = [] if batch is None else [qimage_from_rgb(x) for x in batch]
        self.selected = min(selected, max(len(self.images) - 1, 0))
        self.update()

    def _cells(self) -> list[QRectF]:
        n = len(self.images)
        cols = int(np.ceil(np.sqrt(n))) if n else 1
        rows = int(np.ceil(n / cols)) if n else 1
        side = min(self.width() / cols, self.height() / rows)
        x0 = (self.width() - side * cols) / 2
        y0 = (self.height() - side * rows) / 2
        return [QRectF(x0 + (i % cols) * side, y0 + (i // cols) * side, side, side) for i in range(n)]

    def mousePressEvent(self, e) -> None:
        for i, cell in enumerate(self._cells()):
            if cell.contains(e.position()) and len(self.images) > 1:
                self.selected = i
                self.update()
                self.picked.emit(i)

    def paintEvent(self, _e) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), BACKDROP)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        for i, (img, cell) in enumerate(zip(self.images, self._cells(), strict=True)):
            p.drawImage(cell.adjusted(1, 1, -1, -1), img)
            if len(self.images) > 1 and i == self.selected:
                p.setPen(QPen(QColor(255, 210, 80), 2))
                p.drawRect(cell.adjusted(1, 1, -1, -1))
        p.end()
