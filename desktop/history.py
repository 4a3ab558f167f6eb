"""The history strip: this session's results, newest last, one thumbnail each (no job logic here)."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QAction, QIcon, QPixmap
from PySide6.QtWidgets import QListWidget, QListWidgetItem

from core.document import HistoryEntry
from desktop.canvas import qimage_from_rgb


class HistoryStrip(QListWidget):
    """Results as :class:`HistoryEntry` s in ``entries`` (row i shows entries[i]). Emits
    ``shown(entry)`` when one is clicked and ``ends_changed(entries)`` with the selected entries that
    have latents (the interpolation's key frames)."""

    shown = Signal(object)  # HistoryEntry
    ends_changed = Signal(list)  # [HistoryEntry], the selected ones with latents

    def __init__(self, parent=None):
        super().__init__(parent)
        self.entries: list[HistoryEntry] = []
        self.setViewMode(QListWidget.ViewMode.IconMode)
        self.setFlow(QListWidget.Flow.LeftToRight)
        self.setWrapping(False)
        self.setIconSize(QSize(64, 64))
        self.setFixedHeight(104)
        self.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        self.itemClicked.connect(lambda item: self.shown.emit(self.entry_of(item)))
        self.itemSelectionChanged.connect(
            lambda: self.ends_changed.emit([e for e in self.selected_entries() if e.path_end() is not None])
        )

    def add_action(self, label: str, slot) -> None:
        """A context-menu action on the strip."""
        act = QAction(label, self)
        act.triggered.connect(slot)
        self.addAction(act)

    def add(self, entry: HistoryEntry, tooltip: str = "") -> int:
        """Append ``entry`` and make it current; returns its index."""
        self.entries.append(entry)
        index = len(self.entries) - 1
        item = QListWidgetItem(entry.label(index + 1))
        item.setIcon(QIcon(QPixmap.fromImage(qimage_from_rgb(entry.image).scaled(64, 64))))
        item.setData(Qt.ItemDataRole.UserRole, index)
        item.setToolTip(tooltip)
        self.addItem(item)
        self.setCurrentItem(item)
        return index

    def clear_entries(self) -> None:  # not reset(): that is QAbstractItemView.reset, called by clear()
        self.clear()
        self.entries = []

    def entry_of(self, item: QListWidgetItem) -> HistoryEntry:
        return self.entries[item.data(Qt.ItemDataRole.UserRole)]

    def label_of(self, entry: HistoryEntry) -> str:
        return entry.label(self.entries.index(entry) + 1)

    def selected_entries(self) -> list[HistoryEntry]:
        return [self.entries[r] for r in sorted(self.row(it) for it in self.selectedItems())]

    def current_entry(self) -> HistoryEntry | None:
        item = self.currentItem()
        return None if item is None else self.entry_of(item)
