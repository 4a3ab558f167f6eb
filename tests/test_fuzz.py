"""Fuzzing the loaders that read strangers' files: images and project files.

Hypothesis mutates valid files of every accepted kind (byte flips, overwrites, inserts, deletes,
truncation, "interesting" 32-bit values, duplicated regions; for PNGs also with the chunk CRCs fixed up
so that the mutation reaches the decoder; for projects also structure-aware edits of project.json, of
single members, their names and compression). The property: the loader either returns a well-formed
result or raises the documented error (ImageLoadError / DocumentLoadError), never anything else.

CI-short form: 4,900 inputs, derandomised (the same inputs every run). Long form, random:

    LC_FUZZ_EXAMPLES=100000 LC_FUZZ_REPORT=fuzz.json .venv/bin/python -m pytest tests/test_fuzz.py

runs that many inputs per test and writes the outcome counts to ``fuzz.json`` (docs/reliability.md).
"""

from __future__ import annotations

import collections
import io
import json
import os
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.document import Document, DocumentLoadError, HistoryEntry, load_document, save_document
from core.errors import ImageLoadError
from core.imageio import load_image
from tests.image_samples import valid_samples

LONG = int(os.environ.get("LC_FUZZ_EXAMPLES", "0"))
OUTCOMES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
SAMPLES = valid_samples()
PNG_SAMPLES = {k: v for k, v in SAMPLES.items() if k.startswith("png")}
INTERESTING = (0, 1, 7, 255, 256, 4096, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1)
MAGICS = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"RIFF\0\0\0\0WEBPVP8 ",
    b"II*\0",
    b"MM\0*",
    b"BM",
    b"PK\3\4",
)


def fuzz_settings(short: int):
    return settings(
        max_examples=LONG or short,
        derandomize=not LONG,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    yield tmp_path_factory.mktemp("fuzz")
    if report := os.environ.get("LC_FUZZ_REPORT"):
        Path(report).write_text(json.dumps({k: dict(v) for k, v in OUTCOMES.items()}, indent=1))


def run_counted(name: str, test, minimum: int) -> None:
    """Run a hypothesis test and check it really tried ``minimum`` inputs (a config slip would not)."""
    before = sum(OUTCOMES[name].values())
    test()
    assert sum(OUTCOMES[name].values()) - before >= minimum


# --- mutations --------------------------------------------------------------------------------------

positions = st.one_of(st.integers(0, 64), st.integers(0, 2**20))
mutation = st.tuples(
    st.sampled_from(["overwrite", "delete", "insert", "truncate", "int32", "duplicate", "flip"]),
    positions,
    st.binary(min_size=1, max_size=24),
)
mutations = st.lists(mutation, min_size=1, max_size=8)


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, pos, payload in ops:
        p = pos % (len(b) + 1)
        if kind == "overwrite":
            b[p : p + len(payload)] = payload
        elif kind == "delete":
            del b[p : p + payload[0] + 1]
        elif kind == "insert":
            b[p:p] = payload
        elif kind == "truncate":
            del b[p:]
        elif kind == "int32":
            b[p : p + 4] = struct.pack(">I" if payload[0] & 1 else "<I", INTERESTING[payload[0] % 11])
        elif kind == "duplicate":
            b[p:p] = b[p : p + 16 * len(payload)] * (1 + payload[0] % 4)
        elif kind == "flip" and p < len(b):
            b[p] ^= 1 << (payload[0] % 8)
    return bytes(b)


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute every chunk CRC so a mutation gets past the checksum into the decoder."""
    b, p = bytearray(data), 8
    while p + 12 <= len(b):
        (length,) = struct.unpack(">I", b[p : p + 4])
        end = p + 8 + length
        if end + 4 > len(b):
            break
        b[end : end + 4] = struct.pack(">I", zlib.crc32(b[p + 4 : end]))
        p = end + 4
    return bytes(b)


# --- the image loader -------------------------------------------------------------------------------


def check_image(name: str, data: bytes, workdir: Path, keep_alpha: bool) -> None:
    path = workdir / "input.img"
    path.write_bytes(data)
    try:
        out = load_image(path, keep_alpha=keep_alpha)
    except ImageLoadError:
        OUTCOMES[name]["refused (ImageLoadError)"] += 1
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] in ((3, 4) if keep_alpha else (3,))
    OUTCOMES[name]["loaded"] += 1


@pytest.mark.slow
def test_image_loader_on_mutated_files(workdir):
    @fuzz_settings(2500)
    @given(sample=st.sampled_from(sorted(SAMPLES)), ops=mutations, keep_alpha=st.booleans())
    def fuzz(sample, ops, keep_alpha):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF; the outcome is what counts
            check_image("image: mutated files", mutate(SAMPLES[sample], ops), workdir, keep_alpha)

    run_counted("image: mutated files", fuzz, LONG or 2500)


@pytest.mark.slow
def test_image_loader_on_pngs_with_valid_checksums(workdir):
    header_field = st.tuples(st.sampled_from([16, 20, 24, 25, 26, 28]), st.integers(0, 10))

    @fuzz_settings(600)
    @given(sample=st.sampled_from(sorted(PNG_SAMPLES)), ops=mutations, fields=st.lists(header_field))
    def fuzz(sample, ops, fields):
        data = bytearray(mutate(PNG_SAMPLES[sample], ops))
        for offset, which in fields:  # IHDR width/height/depth/colour type/filter: the risky fields
            if offset + 4 <= len(data):
                size = 4 if offset in (16, 20) else 1
                value = INTERESTING[which] % (256**size)
                data[offset : offset + size] = value.to_bytes(size, "big")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_image("image: PNGs with fixed CRCs", fix_png_crcs(bytes(data)), workdir, keep_alpha=True)

    run_counted("image: PNGs with fixed CRCs", fuzz, LONG or 600)


def test_image_loader_on_garbage(workdir):
    @fuzz_settings(400)
    @given(magic=st.sampled_from(MAGICS + (b"",)), body=st.binary(max_size=2048))
    def fuzz(magic, body):
        check_image("image: garbage after a magic number", magic + body, workdir, keep_alpha=False)

    run_counted("image: garbage after a magic number", fuzz, LONG or 400)


# --- the project loader -----------------------------------------------------------------------------


def sample_project() -> Document:
    rng = np.random.default_rng(1)
    p = Document.blank(8, model="tiny.safetensors")
    p.scribble[2:5, 2:5] = (200, 40, 40, 255)
    p.mask[4:, :] = 1.0
    p.history.append(
        HistoryEntry(
            "invert",
            {"space": "w+", "steps": 10, "lr": 0.05},
            seed=3,
            latent=rng.standard_normal((1, 4, 8)).astype(np.float32),
            ws=rng.standard_normal((1, 4, 8)).astype(np.float32),
            images=rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)[None],
        )
    )
    p.history.append(HistoryEntry("invert", {"space": "z"}, seed=4))
    return p


@pytest.fixture(scope="module")
def project_bytes(workdir) -> bytes:
    return save_document(sample_project(), workdir / "seed.lcproj").read_bytes()


def check_project(name: str, data: bytes, workdir: Path) -> None:
    path = workdir / "input.lcproj"
    path.write_bytes(data)
    try:
        p = load_document(path)
    except DocumentLoadError:
        OUTCOMES[name]["refused (DocumentLoadError)"] += 1
        return
    h, w = p.base.shape[:2]
    assert p.base.shape == (h, w, 3) and p.scribble.shape == (h, w, 4) and p.mask.shape == (h, w)
    assert all(e.latent is None or e.latent.dtype == np.float32 for e in p.history)
    OUTCOMES[name]["loaded"] += 1


@pytest.mark.slow
def test_project_loader_on_mutated_bytes(workdir, project_bytes):
    @fuzz_settings(800)
    @given(ops=mutations)
    def fuzz(ops):
        check_project("project: mutated bytes", mutate(project_bytes, ops), workdir)

    run_counted("project: mutated bytes", fuzz, LONG or 800)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
hostile_values = st.sampled_from(
    [
        "latent-canvas-project/2",
        "../../etc/passwd",
        "/abs/layers/base.png",
        "layers/mask.png",
        "history/0000/latent.npy",
        [100000, 100000],
        [4096, 4096],
        [0, 8],
        [8, 8, 8],
        {"base": "layers/mask.png", "scribble": "layers/base.png", "mask": "layers/scribble.png"},
        [{"kind": "x", "params": {}, "seed": 1, "latent": "layers/base.png"}] * 3,
        True,
        1e308,
    ]
)
header_keys = st.sampled_from(
    ["format", "size", "model", "layers", "history", "meta", "layers.base", "layers.mask", "history.0.seed"]
    + ["history.0.latent", "history.0.ws", "history.0.image", "history.0.params", "history.1.kind"]
)
member_names = st.sampled_from(
    ["../evil", "/abs", "a\\b", "layers/base.png", "project.json", "layers//mask.png", "x" * 300, "."]
)
edit = st.one_of(
    st.tuples(st.just("header"), header_keys, json_values | hostile_values),
    st.tuples(st.just("member"), st.integers(0, 20), mutations),
    st.tuples(st.just("rename"), st.integers(0, 20), member_names),
    st.tuples(st.just("drop"), st.integers(0, 20), st.none()),
    st.tuples(st.just("add"), member_names, st.binary(max_size=64)),
    st.tuples(st.just("compression"), st.integers(0, 20), st.sampled_from([0, 8, 12, 14])),
)


def _child(node, key: str):
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list) and key.isdigit() and int(key) < len(node):
        return node[int(key)]
    return None


def set_path(doc: dict, dotted: str, value) -> None:
    """Set ``doc["a"][0]["b"]`` for ``"a.0.b"`` if that path exists (earlier edits may have changed it)."""
    *parents, last = dotted.split(".")
    node = doc
    for key in parents:
        node = _child(node, key)
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value


def _json_or_none(data: bytes):
    try:  # an earlier edit may have mangled it already; then there is nothing to edit
        return json.loads(data)
    except ValueError:
        return None


def apply_edits(project_bytes: bytes, edits) -> bytes:
    with zipfile.ZipFile(io.BytesIO(project_bytes)) as zf:
        members = [[i.filename, zf.read(i), zipfile.ZIP_STORED] for i in zf.infolist()]
    for kind, target, arg in edits:
        k = target % len(members) if isinstance(target, int) and members else 0
        if kind == "header":
            header = _json_or_none(members[0][1]) if members and members[0][0] == "project.json" else None
            if isinstance(header, dict):
                set_path(header, target, arg)
                members[0][1] = json.dumps(header).encode()
        elif kind == "member" and members:
            members[k][1] = mutate(members[k][1], arg)
        elif kind == "rename" and members:
            members[k][0] = arg
        elif kind == "drop" and members:
            del members[k]
        elif kind == "add":
            members.append([target, arg, zipfile.ZIP_STORED])
        elif kind == "compression" and members:
            members[k][2] = arg
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")  # duplicate names are part of the attack
        for name, data, method in members:
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buf.getvalue()


@pytest.mark.slow
def test_project_loader_on_structured_edits(workdir, project_bytes):
    @fuzz_settings(600)
    @given(edits=st.lists(edit, min_size=1, max_size=5))
    def fuzz(edits):
        check_project("project: structured edits", apply_edits(project_bytes, edits), workdir)

    run_counted("project: structured edits", fuzz, LONG or 600)
