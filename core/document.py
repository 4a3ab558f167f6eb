"""Document files (``.lcproj``): a whole editing session in one versioned zip, plus autosave and recovery.

Layout (specified in ``docs/project-format.md``)::

    project.json                 format "latent-canvas-project/1", layer and history index
    layers/base.png              [H, W] RGB
    layers/scribble.png          [H, W] RGBA; alpha = painted
    layers/mask.png              [H, W] L; 255 = masked
    history/0000/image.png       a result, optional
    history/0000/latent.npy      float32 latent, optional (never pickled)
    history/0000/ws.npy          float32 ws, optional

Loading treats the file as hostile: sizes, member count and total uncompressed bytes are bounded before
anything is decompressed, member names are checked, every field is type-checked, images must be PNGs of
the declared size and mode, and arrays are ``.npy`` float data read with ``allow_pickle=False``. Every
failure is a :class:`DocumentLoadError`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import io
import json
import logging
import math
import os
import re
import sys
import tempfile
import tokenize
import uuid
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core import __version__
from core.errors import LatentCanvasError

log = logging.getLogger(__name__)

FORMAT = "latent-canvas-project/1"
SUFFIX = ".lcproj"
MAX_FILE_BYTES = 512 * 2**20  # the zip itself
MAX_MEMBERS = 4096
MAX_TOTAL_BYTES = 1024 * 2**20  # sum of declared uncompressed sizes; zipfile never yields more
MAX_JSON_BYTES = 16 * 2**20
MAX_SIDE = 4096  # layer width/height; the models work at 64-1024 px
MAX_ARRAY_BYTES = 64 * 2**20
MAX_HISTORY = 1000
MEMBER_NAME = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
ARRAY_DTYPES = ("<f4", "<f8")
LAYER_MODES = {"base": "RGB", "scribble": "RGBA", "mask": "L"}
COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
NPY_ERRORS = (ValueError, OSError, EOFError, SyntaxError, TypeError, OverflowError)
NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class DocumentLoadError(LatentCanvasError):
    """A project file is missing, damaged, too large, of an unknown version, or not a project at all."""


@dataclass(eq=False)  # identity: entries hold arrays
class HistoryEntry:
    """One finished (or stopped) job: what was asked and what came out. The app's history list holds
    these; a saved document keeps each entry's selected sample (image, latent row, ws row)."""

    kind: str  # the job kind: "invert" | "project" | "sdedit" | ...
    params: dict  # every JSON-able parameter of the job (arrays are stored separately)
    seed: int
    images: np.ndarray | None = field(default=None, repr=False)  # [N, H, W, 3] uint8, one per sample
    latent: np.ndarray | None = field(default=None, repr=False)  # float32 [N, ...], the job's latent space
    ws: np.ndarray | None = field(default=None, repr=False)  # float32 [N, num_ws, w_dim]
    space: str | None = None  # the latent space of ``latent`` ("z", "w", "w+", "s")
    cancelled: bool = False
    selected: int = 0  # which sample of a variations grid is "the" result
    losses: list[dict[str, float]] = field(default_factory=list, repr=False)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))

    @property
    def image(self) -> np.ndarray | None:
        """The selected sample [H, W, 3], or None when the entry has no image."""
        return None if self.images is None else self.images[self.selected]

    def label(self, index: int) -> str:
        tag = {"invert": self.space or "gan", "project": self.params.get("prior", "prior"), "sdedit": "sd"}
        n = f" ×{len(self.images)}" if self.images is not None and len(self.images) > 1 else ""
        return f"#{index} {tag.get(self.kind, self.kind)}{n}" + (" (stopped)" if self.cancelled else "")

    def path_end(self) -> tuple[str, np.ndarray] | None:
        """The selected sample as an interpolation key frame: its ws ("w+"), or for a Style-space
        result (which has no ws) its styles ("s"); None when the entry has neither."""
        for space, arr in (("w+", self.ws), ("s", self.latent if self.space == "s" else None)):
            if arr is not None and arr.ndim >= 2 and 0 <= self.selected < len(arr):  # a loaded file's
                return space, arr[self.selected]  # arrays are not trusted to have the right shape
        return None

    def kept(self) -> HistoryEntry:
        """The entry as a document stores it: the selected sample only."""
        row = slice(self.selected, self.selected + 1)
        return HistoryEntry(
            self.kind, self.params, self.seed,
            images=None if self.images is None else self.images[row],
            latent=None if self.latent is None else np.asarray(self.latent[row], np.float32),
            ws=None if self.ws is None else np.asarray(self.ws[row], np.float32),
            space=self.space, cancelled=self.cancelled, created=self.created,
        )  # fmt: skip


def scalar_params(params: Any) -> dict[str, Any]:
    """The JSON-ready scalars of a job's params dataclass: arrays (target, mask, latents) are left out."""
    out = {}
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        if isinstance(v, enum.Enum):
            v = v.value
        if v is None or isinstance(v, str | int | float | bool):
            out[f.name] = v
    return out


def entry_from_result(kind: str, result: Any, *, cancelled: bool) -> HistoryEntry:
    """A history entry from a job's result (every result has ``params`` and ``images``; GAN results
    also ``ws`` and ``latent``)."""
    params = result.params
    space = getattr(params, "space", None)
    return HistoryEntry(
        kind=kind,
        params=scalar_params(params),
        seed=int(getattr(params, "seed", 0)),
        images=np.asarray(result.images),
        ws=getattr(result, "ws", None),
        latent=getattr(result, "latent", None),
        space=getattr(space, "value", space),
        cancelled=cancelled,
        losses=list(getattr(result, "loss_history", [])),
    )


@dataclass
class Document:
    """The open session. Layers share one size ``[H, W]``."""

    base: np.ndarray = field(repr=False)  # [H, W, 3] uint8
    scribble: np.ndarray = field(repr=False)  # [H, W, 4] uint8, alpha = painted
    mask: np.ndarray = field(repr=False)  # [H, W] float32 in [0, 1], 1 = masked (stored with 8-bit precision)
    model: str | None = None  # the generator file the session used, as the user chose it
    history: list[HistoryEntry] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # free JSON for the app (tool settings, view)

    @classmethod
    def blank(cls, resolution: int, *, model: str | None = None) -> Document:
        r = resolution
        base = np.full((r, r, 3), 128, np.uint8)
        return cls(base, np.zeros((r, r, 4), np.uint8), np.zeros((r, r), np.float32), model)


# --- saving ------------------------------------------------------------------------------------


def _png_bytes(array: np.ndarray, mode: str) -> bytes:
    im = Image.fromarray(np.ascontiguousarray(array))
    if im.mode != mode:
        raise ValueError(f"expected a uint8 {mode} image, got {array.dtype} {array.shape}")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def _check_layers(p: Document) -> None:
    h, w = p.base.shape[:2]
    shapes = {"base": (h, w, 3), "scribble": (h, w, 4), "mask": (h, w)}
    for name, shape in shapes.items():
        a = getattr(p, name)
        if a.shape != shape:
            raise ValueError(f"project layer {name} has shape {a.shape}, expected {shape}")
    if p.base.dtype != np.uint8 or p.scribble.dtype != np.uint8:
        raise ValueError("base and scribble layers must be uint8")


def _members(p: Document) -> tuple[dict, dict[str, Callable[[], bytes]]]:
    """The header and, per member, a function encoding it: saving encodes one member at a time while
    the temporary file is open, so memory holds one encoded member, not the whole archive."""
    _check_layers(p)
    mask8 = np.clip(np.asarray(p.mask, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    arrays = {"base": p.base, "scribble": p.scribble, "mask": mask8}
    files = {f"layers/{k}.png": partial(_png_bytes, a, LAYER_MODES[k]) for k, a in arrays.items()}
    history = []
    for i, e in enumerate(p.history):
        samples = 0 if e.images is None else len(e.images)
        e = e.kept()  # the selected sample
        entry = {"kind": e.kind, "params": e.params, "seed": int(e.seed), "created": e.created}
        entry.update(space=e.space, cancelled=e.cancelled, samples=samples)
        for key, arr in (("latent", e.latent), ("ws", e.ws)):
            if arr is not None:
                entry[key] = f"history/{i:04d}/{key}.npy"
                files[entry[key]] = partial(_npy_bytes, arr)
        if e.images is not None:
            entry["image"] = f"history/{i:04d}/image.png"
            files[entry["image"]] = partial(_png_bytes, e.images[0], "RGB")
        history.append(entry)
    h, w = p.base.shape[:2]
    header = {
        "format": FORMAT,
        "app_version": __version__,
        "size": [w, h],
        "model": p.model,
        "layers": {k: f"layers/{k}.png" for k in LAYER_MODES},
        "history": history,
        "meta": p.meta,
    }
    return header, files


def _fsync_dir(directory: Path) -> None:
    if sys.platform == "win32":
        return  # directories cannot be opened for fsync on Windows; os.replace is still atomic there
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_document(project: Document, path: str | os.PathLike) -> Path:
    """Write ``project`` to ``path`` atomically: a crash at any moment leaves either the old file or the
    complete new one under ``path``, never a partial file.

    Args:
        project: the session to save.
        path: destination, conventionally ending in ``.lcproj``.

    Raises:
        ValueError: layers of inconsistent shape or dtype, or params that are not JSON.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header, files = _members(project)
    header_bytes = json.dumps(header, indent=1, allow_nan=False).encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("project.json", header_bytes)
                for name, encode in files.items():
                    # PNG and npy float data barely compress; store them and save the time.
                    zf.writestr(name, encode(), compress_type=zipfile.ZIP_STORED)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


# --- loading -----------------------------------------------------------------------------------


def _fail(path: Path, why: str) -> DocumentLoadError:
    return DocumentLoadError(f"{path.name}: {why}")


def _check_archive(zf: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _fail(path, f"too many members ({len(infos)} > {MAX_MEMBERS})")
    if sum(i.file_size for i in infos) > MAX_TOTAL_BYTES:
        raise _fail(path, f"unpacks to more than {MAX_TOTAL_BYTES // 2**20} MiB (a zip bomb?)")
    by_name: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        if not MEMBER_NAME.fullmatch(name) or ".." in name.split("/"):
            raise _fail(path, f"refusing member name {name!r} (absolute or outside the project)")
        if name in by_name:
            raise _fail(path, f"duplicate member {name!r}")
        if info.flag_bits & 0x1 or info.compress_type not in COMPRESSIONS:
            raise _fail(path, f"{name} is encrypted or compressed in a way projects never are")
        by_name[name] = info
    return by_name


class _Reader:
    """Reads members of an already-checked archive, turning every decoder failure into DocumentLoadError."""

    def __init__(self, zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], path: Path):
        self.zf, self.infos, self.path = zf, infos, path

    def read(self, name: object, limit: int) -> bytes:
        if not isinstance(name, str) or name not in self.infos:
            raise _fail(self.path, f"missing member {name!r}")
        info = self.infos[name]
        if info.file_size > limit:
            raise _fail(self.path, f"{name} is too large ({info.file_size} bytes)")
        try:
            with self.zf.open(info) as f:
                return f.read(limit + 1)  # zipfile stops at the declared size and checks the CRC
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as e:
            raise _fail(self.path, f"{name} is damaged: {e}") from e

    def png(self, name: object, mode: str, size: tuple[int, int] | None) -> np.ndarray:
        """A PNG of exactly ``mode`` and ``size`` (None: any size up to MAX_SIDE square)."""
        data = self.read(name, limit=MAX_SIDE * MAX_SIDE * 4 + 2**20)
        try:
            with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
                # Check the header before decoding: a tiny PNG can declare a gigantic canvas.
                ok_size = im.size == size if size else max(im.size) <= MAX_SIDE and min(im.size) >= 1
                if not ok_size or im.mode != mode:
                    raise _fail(self.path, f"{name} is {im.mode} {im.size}, expected {mode} {size or ''}")
                im.load()
                return np.asarray(im).copy()
        except DocumentLoadError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
            raise _fail(self.path, f"{name} is not a readable PNG: {e}") from e

    def npy(self, name: object) -> np.ndarray:
        data = self.read(name, limit=MAX_ARRAY_BYTES + 2**16)
        f = io.BytesIO(data)
        try:
            version = np.lib.format.read_magic(f)
            if version not in NPY_HEADER_READERS:
                raise ValueError(f"unsupported .npy version {version}")
            shape, _fortran, dtype = NPY_HEADER_READERS[version](f)
            # Validate what the header promises before numpy allocates for it.
            if dtype.str not in ARRAY_DTYPES or dtype.hasobject:
                raise ValueError(f"dtype {dtype} is not float32/float64")
            nbytes = math.prod(shape) * dtype.itemsize  # Python ints: a crafted shape cannot overflow
            if nbytes > MAX_ARRAY_BYTES or nbytes != len(data) - f.tell():
                raise ValueError(f"header promises {nbytes} bytes, file holds {len(data) - f.tell()}")
            f.seek(0)
            return np.load(f, allow_pickle=False).astype(np.float32)
        except (*NPY_ERRORS, tokenize.TokenError) as e:  # numpy parses the header with tokenize/ast
            raise _fail(self.path, f"{name} is not a float .npy array: {e}") from e


def _expect(path: Path, value: object, kind: type, what: str):
    # bool is an int subclass in Python, but never a valid seed or size.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _fail(path, f"{what} has the wrong type ({type(value).__name__})")
    return value


def _read_header(reader: _Reader) -> dict:
    path = reader.path
    raw = reader.read("project.json", MAX_JSON_BYTES)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: JSON, int digit limit
        raise _fail(path, f"project.json is not valid JSON: {e}") from e
    _expect(path, header, dict, "project.json")
    fmt = header.get("format")
    if not isinstance(fmt, str) or not fmt.startswith("latent-canvas-project/"):
        raise _fail(path, "not a Latent Canvas project (no project format in project.json)")
    if fmt != FORMAT:
        raise _fail(path, f"project format {fmt!r} is not supported by this version (reads {FORMAT!r})")
    return header


def _read_size(path: Path, header: dict) -> tuple[int, int]:
    size = _expect(path, header.get("size"), list, "size")
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
        raise _fail(path, "size must be [width, height]")
    w, h = size
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise _fail(path, f"layer size {w}x{h} is outside 1..{MAX_SIDE}")
    return w, h


def _read_entry(reader: _Reader, raw: object, i: int) -> HistoryEntry:
    path = reader.path
    e = _expect(path, raw, dict, f"history[{i}]")
    params = _expect(path, e.get("params"), dict, f"history[{i}].params")
    if "cancelled" not in e:  # written before the entry kept these fields of its own, in its params
        params = dict(params)
        e = {**e, "cancelled": params.pop("cancelled", False), "space": params.get("space")}
        params.pop("samples", None)
    space = e.get("space")
    entry = HistoryEntry(
        kind=_expect(path, e.get("kind"), str, f"history[{i}].kind"),
        params=params,
        seed=_expect(path, e.get("seed"), int, f"history[{i}].seed"),
        space=None if space is None else _expect(path, space, str, f"history[{i}].space"),
        cancelled=_expect(path, e.get("cancelled"), bool, f"history[{i}].cancelled"),
        created=_expect(path, e.get("created", ""), str, f"history[{i}].created"),
    )
    if e.get("latent") is not None:
        entry.latent = reader.npy(e["latent"])
    if e.get("ws") is not None:
        entry.ws = reader.npy(e["ws"])
    if e.get("image") is not None:
        entry.images = reader.png(e["image"], "RGB", None)[None]
    return entry


def _read_project(reader: _Reader) -> Document:
    path = reader.path
    header = _read_header(reader)
    size = _read_size(path, header)
    layers = _expect(path, header.get("layers"), dict, "layers")
    arrays = {k: reader.png(layers.get(k), mode, size) for k, mode in LAYER_MODES.items()}
    history = _expect(path, header.get("history", []), list, "history")
    if len(history) > MAX_HISTORY:
        raise _fail(path, f"more than {MAX_HISTORY} history entries")
    model = header.get("model")
    return Document(
        base=arrays["base"],
        scribble=arrays["scribble"],
        mask=arrays["mask"].astype(np.float32) / 255.0,
        model=_expect(path, model, str, "model") if model is not None else None,
        history=[_read_entry(reader, e, i) for i, e in enumerate(history)],
        meta=_expect(path, header.get("meta", {}), dict, "meta"),
    )


def load_document(path: str | os.PathLike) -> Document:
    """Read a project written by :func:`save_document`, validating everything in it.

    Args:
        path: the ``.lcproj`` file.

    Raises:
        DocumentLoadError: missing, not a zip, too large, a zip bomb, unsafe member names, unknown format
            version, or any member missing, damaged or of the wrong type, size or mode. The message names
            the file.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, f"project file not found ({path})")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise _fail(path, f"larger than {MAX_FILE_BYTES // 2**20} MiB")
    try:
        with zipfile.ZipFile(path) as zf:
            return _read_project(_Reader(zf, _check_archive(zf, path), path))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError) as e:
        raise _fail(path, f"not a readable project archive: {e}") from e
    except OSError as e:  # a truncated central directory seeks before the file start
        raise _fail(path, f"cannot read the archive: {e}") from e


# --- autosave and recovery ---------------------------------------------------------------------


def autosave_dir() -> Path:
    """Where autosaves live: ``$LATENT_CANVAS_AUTOSAVE_DIR``, else the platform's per-user state folder
    (``~/.local/state/latent-canvas/autosave`` on Linux)."""
    if env := os.environ.get("LATENT_CANVAS_AUTOSAVE_DIR"):
        return Path(env)
    if sys.platform == "win32":
        root = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "Latent Canvas"
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Application Support" / "Latent Canvas"
    else:
        root = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "latent-canvas"
    return root / "autosave"


@dataclass(frozen=True)
class AutosaveSession:
    """This process's autosave slot: one file, rewritten atomically each time."""

    path: Path

    @classmethod
    def new(cls, directory: str | os.PathLike | None = None) -> AutosaveSession:
        d = Path(directory) if directory is not None else autosave_dir()
        return cls(d / f"session-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}")

    def write(self, project: Document) -> Path:
        return save_document(project, self.path)

    def discard(self) -> None:
        """Call on a clean exit (or after the user declined recovery): nothing is left to recover."""
        self.path.unlink(missing_ok=True)


def write_autosave(project: Document, session: AutosaveSession | None = None) -> AutosaveSession:
    """Autosave ``project`` into ``session`` (a new one in :func:`autosave_dir` if None); returns it."""
    session = session or AutosaveSession.new()
    session.write(project)
    return session


@dataclass(frozen=True)
class Recoverable:
    path: Path
    saved_at: float  # POSIX time of the autosave
    pid: int  # the process that wrote it (no longer running)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if sys.platform == "win32":
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # QUERY_LIMITED_INFORMATION
        if handle:
            ctypes.windll.kernel32.CloseHandle(handle)
        return bool(handle)
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def find_recoverable(directory: str | os.PathLike | None = None) -> list[Recoverable]:
    """Autosaves left by sessions that did not exit cleanly (their process is gone), newest first.

    Files that are damaged are skipped with a warning (and left in place for a person to inspect);
    stray temporary files from a save that was interrupted are removed.
    """
    d = Path(directory) if directory is not None else autosave_dir()
    if not d.is_dir():
        return []
    found = []
    for p in d.glob(f".session-*{SUFFIX}.*.tmp"):
        pid = _pid_of(p.name.lstrip("."))
        if pid is not None and not _pid_alive(pid):
            p.unlink(missing_ok=True)
    for p in d.glob(f"session-*{SUFFIX}"):
        pid = _pid_of(p.name)
        if pid is None or _pid_alive(pid):
            continue
        try:
            load_document(p)
        except DocumentLoadError as e:
            log.warning("skipping damaged autosave: %s", e)
            continue
        found.append(Recoverable(p, p.stat().st_mtime, pid))
    return sorted(found, key=lambda r: r.saved_at, reverse=True)


def _pid_of(name: str) -> int | None:
    m = re.match(r"session-(\d+)-", name)
    return int(m.group(1)) if m else None
