"""Document files: a faithful round trip, atomic saves, and a loader that refuses hostile archives."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import core.document as project_mod
from core.document import (
    FORMAT,
    AutosaveSession,
    Document,
    DocumentLoadError,
    HistoryEntry,
    autosave_dir,
    find_recoverable,
    load_document,
    save_document,
)
from core.errors import LatentCanvasError


def sample_project(size: int = 16) -> Document:
    rng = np.random.default_rng(0)
    p = Document(
        base=rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8),
        scribble=rng.integers(0, 256, (size, size + 3, 4), dtype=np.uint8),
        mask=rng.random((size, size + 3), dtype=np.float32),
        model="models/cats.safetensors",
        meta={"brush": 4.0, "tool": "brush"},
    )
    p.history = [
        HistoryEntry(
            "invert",
            {"space": "w+", "steps": 20, "lr": 0.05, "optimizer": "adam"},
            seed=7,
            latent=rng.standard_normal((1, 6, 8)).astype(np.float32),
            ws=rng.standard_normal((1, 6, 8)),
            images=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)[None],
        ),
        HistoryEntry("interpolate", {"t": 0.5}, seed=0),
    ]
    return p


def members_of(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def write_zip(path, members: dict[str, bytes], method=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return path


@pytest.fixture
def saved(tmp_path):
    return save_document(sample_project(), tmp_path / "session.lcproj")


def test_round_trip(saved):
    p, q = sample_project(), load_document(saved)
    np.testing.assert_array_equal(q.base, p.base)
    np.testing.assert_array_equal(q.scribble, p.scribble)
    np.testing.assert_allclose(q.mask, p.mask, atol=0.5 / 255 + 1e-6)  # 8-bit storage
    assert (q.model, q.meta) == (p.model, p.meta)
    assert [(e.kind, e.params, e.seed, e.created) for e in q.history] == [
        (e.kind, e.params, e.seed, e.created) for e in p.history
    ]
    np.testing.assert_array_equal(q.history[0].latent, p.history[0].latent)
    np.testing.assert_allclose(q.history[0].ws, p.history[0].ws, rtol=1e-6)  # stored as float32
    np.testing.assert_array_equal(q.history[0].image, p.history[0].image)
    assert q.history[1].latent is None and q.history[1].images is None


def test_archive_layout(saved):
    m = members_of(saved)
    header = json.loads(m["project.json"])
    assert header["format"] == FORMAT and header["size"] == [19, 16]
    assert set(m) == {
        "project.json",
        "layers/base.png",
        "layers/scribble.png",
        "layers/mask.png",
        "history/0000/latent.npy",
        "history/0000/ws.npy",
        "history/0000/image.png",
    }
    assert Image.open(io.BytesIO(m["layers/scribble.png"])).mode == "RGBA"


def test_blank_project_round_trip(tmp_path):
    q = load_document(save_document(Document.blank(32, model=None), tmp_path / "b.lcproj"))
    assert q.base.shape == (32, 32, 3) and q.model is None and q.history == []


def test_failed_save_keeps_the_old_file_and_leaves_no_temp(saved):
    before = saved.read_bytes()
    bad = sample_project()
    bad.history[0].params["lr"] = float("nan")  # not JSON
    with pytest.raises(ValueError):
        save_document(bad, saved)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]


def test_inconsistent_layers_are_refused_at_save(tmp_path):
    p = sample_project()
    p.mask = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="mask"):
        save_document(p, tmp_path / "x.lcproj")


def test_error_type_is_documented():
    assert issubclass(DocumentLoadError, LatentCanvasError)


# --- hostile or damaged files --------------------------------------------------------------------


def edited(saved, tmp_path, *, header=None, members=None, drop=()):
    m = members_of(saved)
    if header:
        h = json.loads(m["project.json"])
        h.update(header)
        m["project.json"] = json.dumps(h).encode()
    m.update(members or {})
    for name in drop:
        m.pop(name)
    return write_zip(tmp_path / "edited.lcproj", m)


def test_edit_helper_keeps_a_loadable_project(saved, tmp_path):
    load_document(edited(saved, tmp_path))  # so the refusals below are caused by the edits alone


@pytest.mark.parametrize("fmt", ["latent-canvas-project/2", "latent-canvas-project/0"])
def test_unknown_version_is_refused(saved, tmp_path, fmt):
    with pytest.raises(DocumentLoadError, match="not supported by this version"):
        load_document(edited(saved, tmp_path, header={"format": fmt}))


@pytest.mark.parametrize("fmt", [None, 1, "something-else/1"])
def test_not_a_project(saved, tmp_path, fmt):
    with pytest.raises(DocumentLoadError, match="not a Latent Canvas project|wrong type"):
        load_document(edited(saved, tmp_path, header={"format": fmt}))


@pytest.mark.parametrize("name", ["../evil.png", "/etc/passwd", "layers/../../x", "a\\b.png", "C:/x", "x/"])
def test_path_traversal_names_are_refused(saved, tmp_path, name):
    path = edited(saved, tmp_path, members={name: b"x"})
    with pytest.raises(DocumentLoadError, match="refusing member name"):
        load_document(path)


def test_traversal_reference_in_header_is_refused(saved, tmp_path):
    path = edited(saved, tmp_path, header={"layers": {"base": "../base.png"}})
    with pytest.raises(DocumentLoadError, match="missing member"):
        load_document(path)


def test_missing_member(saved, tmp_path):
    with pytest.raises(DocumentLoadError, match="layers/mask.png"):
        load_document(edited(saved, tmp_path, drop=["layers/mask.png"]))


def test_declared_size_over_the_limit_is_refused_before_reading(saved, tmp_path):
    # A central directory that claims 2 GiB for one member: refused from the directory alone.
    data = bytearray(saved.read_bytes())
    cd = data.rfind(b"PK\x01\x02")  # the last central directory entry
    data[cd + 24 : cd + 28] = struct.pack("<I", 2**31)  # its uncompressed size
    (tmp_path / "lie.lcproj").write_bytes(data)
    with pytest.raises(DocumentLoadError, match="zip bomb"):
        load_document(tmp_path / "lie.lcproj")


def test_member_that_inflates_past_its_declared_size_is_cut_off(saved, tmp_path, monkeypatch):
    # 20 MB of zeros deflate to ~20 KB; the directory claims 200 bytes. zipfile stops at the declared
    # size and the CRC then fails: the loader never holds more than the declared bytes.
    path = tmp_path / "bomb.lcproj"
    m = members_of(saved)
    del m["history/0000/latent.npy"]
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in m.items():
            zf.writestr(name, data)
        zf.writestr("history/0000/latent.npy", b"\0" * 20_000_000, compress_type=zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = data.rfind(sig)
        data[pos + off : pos + off + 4] = struct.pack("<I", 200)
    path.write_bytes(data)
    with pytest.raises(DocumentLoadError, match="latent.npy is damaged: Bad CRC"):
        load_document(path)


def test_real_zip_bomb_is_refused(saved, tmp_path, monkeypatch):
    monkeypatch.setattr(project_mod, "MAX_TOTAL_BYTES", 8 * 2**20)  # the real limit is 1 GiB
    m = members_of(saved)
    m["padding.bin"] = b"\0" * (9 * 2**20)
    path = write_zip(tmp_path / "bomb.lcproj", m, method=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    with pytest.raises(DocumentLoadError, match="zip bomb"):
        load_document(path)


def test_too_many_members(saved, tmp_path):
    m = members_of(saved) | {f"junk/{i}": b"" for i in range(project_mod.MAX_MEMBERS)}
    with pytest.raises(DocumentLoadError, match="too many members"):
        load_document(write_zip(tmp_path / "many.lcproj", m))


def test_oversized_file_is_refused_unread(saved, monkeypatch):
    monkeypatch.setattr(project_mod, "MAX_FILE_BYTES", 100)
    with pytest.raises(DocumentLoadError, match="larger than"):
        load_document(saved)


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_unexpected_compression_is_refused(saved, tmp_path, method):
    with pytest.raises(DocumentLoadError, match="compressed"):
        load_document(write_zip(tmp_path / "c.lcproj", members_of(saved), method=method))


def test_duplicate_member_is_refused(saved, tmp_path):
    path = tmp_path / "dup.lcproj"
    with pytest.warns(UserWarning), zipfile.ZipFile(path, "w") as zf:
        for name, data in members_of(saved).items():
            zf.writestr(name, data)
        zf.writestr("layers/base.png", b"second")
    with pytest.raises(DocumentLoadError, match="duplicate"):
        load_document(path)


class Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def test_pickled_latent_is_refused_without_running_it(saved, tmp_path):
    marker = tmp_path / "MARKER"
    buf = io.BytesIO()
    np.save(buf, np.array([Exploit(marker)], dtype=object), allow_pickle=True)
    path = edited(saved, tmp_path, members={"history/0000/latent.npy": buf.getvalue()})
    with pytest.raises(DocumentLoadError, match="latent.npy"):
        load_document(path)
    assert not marker.exists()
    np.load(io.BytesIO(buf.getvalue()), allow_pickle=True)  # control: the payload is live
    assert marker.exists()


def test_npy_header_promising_a_huge_array_is_refused(saved, tmp_path):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + header.ljust(117).encode() + b"\n" + b"\0" * 64
    with pytest.raises(DocumentLoadError, match="latent.npy"):
        load_document(edited(saved, tmp_path, members={"history/0000/latent.npy": npy}))


def test_npy_header_that_breaks_numpys_parser_is_refused(saved, tmp_path):
    # Found by tests/test_fuzz.py: an unbalanced header makes numpy raise tokenize.TokenError.
    header = ("{'descr': '<f4', 'fortran_order': False, 'shape': (4, }".ljust(117) + "\n").encode()
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 16
    with pytest.raises(DocumentLoadError, match="latent.npy"):
        load_document(edited(saved, tmp_path, members={"history/0000/latent.npy": npy}))


def test_integer_latent_is_refused(saved, tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.arange(4))
    with pytest.raises(DocumentLoadError, match="float32/float64"):
        load_document(edited(saved, tmp_path, members={"history/0000/latent.npy": buf.getvalue()}))


def png(array, mode=None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("layer", "data"),
    [
        ("layers/base.png", png(np.zeros((16, 19, 4), np.uint8))),  # wrong mode
        ("layers/mask.png", png(np.zeros((8, 8), np.uint8))),  # wrong size
        ("layers/scribble.png", b"GIF89a" + b"\0" * 32),  # not a PNG
        ("layers/base.png", png(np.zeros((16, 19, 3), np.uint8))[:50]),  # truncated
    ],
)
def test_bad_layers_are_refused(saved, tmp_path, layer, data):
    with pytest.raises(DocumentLoadError, match=layer):
        load_document(edited(saved, tmp_path, members={layer: data}))


@pytest.mark.parametrize(
    "header",
    [
        {"size": [100_000, 100_000]},
        {"size": [True, 16]},
        {"size": "16x16"},
        {"history": [{"kind": "invert", "params": {}, "seed": "7"}]},
        {"history": [{"kind": "invert", "params": [], "seed": 7}]},
        {"history": "none"},
        {"model": 5},
        {"meta": []},
    ],
)
def test_header_fields_are_type_checked(saved, tmp_path, header):
    with pytest.raises(DocumentLoadError):
        load_document(edited(saved, tmp_path, header=header))


@pytest.mark.parametrize(
    "content", [b"", b"not a zip", b"PK\x05\x06" + b"\0" * 18, b"PK\x03\x04" + b"\xff" * 40]
)
def test_not_a_zip(tmp_path, content):
    (tmp_path / "x.lcproj").write_bytes(content)
    with pytest.raises(DocumentLoadError, match="x.lcproj"):
        load_document(tmp_path / "x.lcproj")


def test_deeply_nested_json_is_refused(saved, tmp_path):
    m = members_of(saved)
    m["project.json"] = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(DocumentLoadError, match="project.json"):
        load_document(write_zip(tmp_path / "deep.lcproj", m))


def test_missing_file(tmp_path):
    with pytest.raises(DocumentLoadError, match="not found"):
        load_document(tmp_path / "gone.lcproj")


# --- autosave and recovery ----------------------------------------------------------------------


def test_autosave_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENT_CANVAS_AUTOSAVE_DIR", str(tmp_path / "as"))
    assert autosave_dir() == tmp_path / "as"
    monkeypatch.delenv("LATENT_CANVAS_AUTOSAVE_DIR")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
        assert autosave_dir() == tmp_path / "state" / "latent-canvas" / "autosave"


def test_own_live_session_is_not_offered_for_recovery(tmp_path):
    session = AutosaveSession.new(tmp_path)
    session.write(sample_project())
    assert session.path.is_file() and find_recoverable(tmp_path) == []
    session.discard()
    assert not session.path.exists()


REPO = Path(__file__).resolve().parents[1]
CHILD = """
import sys
from core.document import AutosaveSession, Document
session = AutosaveSession.new(sys.argv[1])
p = Document.blank(8, model="m.safetensors")
p.meta["writer"] = "child"
session.write(p)
print(session.path)
"""


def test_session_of_a_dead_process_is_recoverable_and_damaged_ones_skipped(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, check=True
    )
    written = tmp_path / os.path.basename(out.stdout.strip())
    damaged = tmp_path / "session-999999999-deadbeef.lcproj"  # no such pid, not a zip
    damaged.write_bytes(b"junk")
    stray_tmp = tmp_path / f".{written.name}.abc.tmp"
    stray_tmp.write_bytes(b"half a save")
    found = find_recoverable(tmp_path)
    assert [r.path for r in found] == [written]
    assert load_document(found[0].path).meta == {"writer": "child"}
    assert damaged.exists() and not stray_tmp.exists()


def test_no_autosave_dir_means_nothing_to_recover(tmp_path):
    assert find_recoverable(tmp_path / "never-created") == []


def test_an_entry_keeps_its_selected_sample_and_its_state(tmp_path):
    rng = np.random.default_rng(5)
    grid = HistoryEntry(
        "invert", {"steps": 3}, seed=2,
        images=rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8),
        latent=rng.standard_normal((4, 3, 8)).astype(np.float32),
        ws=rng.standard_normal((4, 3, 8)).astype(np.float32),
        space="w+", cancelled=True, selected=2,
    )  # fmt: skip
    p = Document.blank(8)
    p.history.append(grid)
    q = load_document(save_document(p, tmp_path / "grid.lcproj")).history[0]
    np.testing.assert_array_equal(q.image, grid.image)
    np.testing.assert_array_equal(q.latent, grid.latent[2:3])
    np.testing.assert_array_equal(q.ws, grid.ws[2:3])
    assert (q.space, q.cancelled, q.selected, q.params) == ("w+", True, 0, {"steps": 3})
    header = json.loads(members_of(tmp_path / "grid.lcproj")["project.json"])
    assert header["history"][0]["samples"] == 4


def test_entries_written_before_they_had_their_own_state_still_read(tmp_path):
    """Files from before 2026-12-02 kept space, cancelled and samples inside params."""
    p = Document.blank(8)
    p.history.append(HistoryEntry("invert", {"space": "w", "cancelled": True, "samples": 4}, seed=1))
    path = save_document(p, tmp_path / "old.lcproj")
    m = members_of(path)
    header = json.loads(m["project.json"])
    for key in ("space", "cancelled", "samples"):
        del header["history"][0][key]
    m["project.json"] = json.dumps(header).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in m.items():
            zf.writestr(name, data)
    q = load_document(path).history[0]
    assert (q.space, q.cancelled, q.params) == ("w", True, {"space": "w"})
