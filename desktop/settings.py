"""The app's persistent settings in one typed place (QSettings underneath: an INI file or the
platform's store). Every key the app reads or writes is named here, with its default."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QSettings

MAX_RECENT = 8
AUTOSAVE_SECONDS = 120


class Settings:
    def __init__(self, store: QSettings | None = None):
        self.store = store if store is not None else QSettings("LatentCanvas", "LatentCanvas")

    def _get(self, key: str, default, kind=None):
        value = (
            self.store.value(key, default, type=kind) if kind is not None else self.store.value(key, default)
        )
        return default if value is None else value

    def _set(self, key: str, value) -> None:
        self.store.setValue(key, value)

    # --- the window ---
    @property
    def geometry(self) -> QByteArray | None:
        return self.store.value("window/geometry")

    @geometry.setter
    def geometry(self, value: QByteArray) -> None:
        self._set("window/geometry", value)

    @property
    def brush_size(self) -> int:
        return int(self._get("brush/size", 4))

    @brush_size.setter
    def brush_size(self, value: int) -> None:
        self._set("brush/size", int(value))

    @property
    def live(self) -> bool:
        return bool(self._get("live", False, bool))

    @live.setter
    def live(self, value: bool) -> None:
        self._set("live", bool(value))

    @property
    def confirm_close(self) -> bool:
        return bool(self._get("confirm_close", True, bool))

    @confirm_close.setter
    def confirm_close(self, value: bool) -> None:
        self._set("confirm_close", bool(value))

    @property
    def autosave_seconds(self) -> int:
        return int(self._get("autosave/seconds", AUTOSAVE_SECONDS))

    # --- files and models ---
    def _paths(self, key: str) -> list[str]:
        return [p for p in (self.store.value(key, []) or []) if isinstance(p, str)]

    @property
    def recent_images(self) -> list[str]:
        return self._paths("recent")

    def add_recent_image(self, path: str) -> None:
        self._set("recent", list(dict.fromkeys([path, *self.recent_images]))[:MAX_RECENT])

    @property
    def models(self) -> list[str]:
        """Generator files opened before (the Model menu lists them beside the bundled ones)."""
        return self._paths("models")

    def add_model(self, path: str) -> None:
        self._set("models", list(dict.fromkeys([path, *self.models]))[:MAX_RECENT])

    @property
    def last_model(self) -> str:
        return str(self._get("model", ""))

    @last_model.setter
    def last_model(self, path: str) -> None:
        self._set("model", path)

    @property
    def worker_url(self) -> str:
        return str(self._get("worker/url", "ws://127.0.0.1:8765"))

    @worker_url.setter
    def worker_url(self, url: str) -> None:
        self._set("worker/url", url)

    # --- what each job panel remembers (steps, prompt, SD model), keyed by the panel's kind ---
    def panel(self, kind: str, key: str, default):
        value = self._get(f"{kind}/{key}", default)
        return type(default)(value) if default is not None else value

    def set_panel(self, kind: str, key: str, value) -> None:
        self._set(f"{kind}/{key}", value)
