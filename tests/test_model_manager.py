"""The model manager: registry, local lookup, safe weight loading, and resumable, verified downloads
(served by a local http.server on 127.0.0.1; nothing here reaches the internet)."""

from __future__ import annotations

import hashlib
import http.server
import pickle
import socket
import threading

import pytest
import torch

from core.errors import ModelLoadError
from core.jobs.runner import run_to_completion
from core.models import manager
from core.models.manager import DownloadError, download, load_state_dict_file
from core.types import CancelToken

PAYLOAD = bytes(range(256)) * 1000  # 256 kB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail the test if anything connects anywhere but 127.0.0.1."""
    real_connect, outside = socket.socket.connect, []

    def connect(self, address, *a, **k):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "localhost"):
            outside.append(address)
            raise OSError(f"network access attempted in a test: {address}")
        return real_connect(self, address, *a, **k)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # downloads here go to the local server only
    monkeypatch.delenv("LATENT_CANVAS_OFFLINE", raising=False)
    yield
    assert not outside, f"tried to connect to {outside}"


class Server:
    """A local file server that honours (or, when told to, ignores) HTTP Range requests."""

    def __init__(self, body: bytes, *, ranges: bool = True, etag: str | None = None, redirect: bool = False):
        self.body, self.ranges, self.etag, self.redirect, self.requests = body, ranges, etag, redirect, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/redirect":  # as the hub does: hash on the redirect, bytes elsewhere
                    self.send_response(302)
                    self.send_header("Location", "/model.safetensors")
                    self.send_header("X-Linked-ETag", f'"{server.etag}"')
                    self.end_headers()
                    return
                rng = self.headers.get("Range")
                server.requests.append(rng)
                start = int(rng.removeprefix("bytes=").rstrip("-")) if rng and server.ranges else 0
                if start >= len(server.body) and rng:
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if server.etag and not server.redirect:
                    self.send_header("X-Linked-ETag", f'"{server.etag}"')
                self.send_header("Content-Length", str(len(server.body) - start))
                self.end_headers()
                self.wfile.write(server.body[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/model.safetensors"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def drive(job):
    events = []
    return run_to_completion(job, events.append), events


# --- downloads -------------------------------------------------------------------------------------------


def test_download_verifies_sha256_and_reports_progress(tmp_path):
    with Server(PAYLOAD) as srv:
        res, events = drive(download(srv.url, tmp_path / "m.safetensors", sha256=SHA, chunk_size=32_768))
    assert res.path == tmp_path / "m.safetensors" and res.path.read_bytes() == PAYLOAD
    assert res.sha256 == SHA and res.resumed_from == 0 and not res.cancelled
    assert not (tmp_path / "m.safetensors.part").exists()
    assert events[0].done == 0 and events[-1].done == len(PAYLOAD)
    assert all(e.total == len(PAYLOAD) for e in events) and len(events) == 1 + -(-len(PAYLOAD) // 32_768)
    assert srv.requests == [None]


def test_interrupted_download_resumes_with_a_range_request(tmp_path):
    dest = tmp_path / "m.safetensors"
    (tmp_path / "m.safetensors.part").write_bytes(PAYLOAD[:100_000])
    with Server(PAYLOAD) as srv:
        res, events = drive(download(srv.url, dest, sha256=SHA))
    assert srv.requests == ["bytes=100000-"]
    assert res.resumed_from == 100_000 and events[0].done == 100_000
    assert dest.read_bytes() == PAYLOAD and res.sha256 == SHA  # the hash covers the resumed prefix too


def test_cancel_keeps_the_part_file_and_a_rerun_finishes(tmp_path):
    dest, token = tmp_path / "m.safetensors", CancelToken()
    with Server(PAYLOAD) as srv:
        job = download(srv.url, dest, sha256=SHA, cancel=token, chunk_size=10_000)
        next(job)  # the start
        next(job)  # one chunk
        token.cancel()
        res, _ = drive(job)
        assert res.cancelled and res.path is None and not dest.exists()
        kept = (tmp_path / "m.safetensors.part").stat().st_size
        assert 10_000 <= kept <= 20_000  # stopped within one chunk of the cancel
        res2, _ = drive(download(srv.url, dest, sha256=SHA))
    assert srv.requests[-1] == f"bytes={kept}-" and dest.read_bytes() == PAYLOAD


def test_a_server_ignoring_range_restarts_from_zero(tmp_path):
    dest = tmp_path / "m.bin"
    (tmp_path / "m.bin.part").write_bytes(b"garbage that must not survive")
    with Server(PAYLOAD, ranges=False) as srv:
        res, _ = drive(download(srv.url, dest, sha256=SHA))
    assert res.resumed_from == 0 and dest.read_bytes() == PAYLOAD


def test_complete_part_file_is_verified_without_refetching(tmp_path):
    dest = tmp_path / "m.bin"
    (tmp_path / "m.bin.part").write_bytes(PAYLOAD)
    with Server(PAYLOAD) as srv:
        res, _ = drive(download(srv.url, dest, sha256=SHA, size=len(PAYLOAD)))
    assert srv.requests == [f"bytes={len(PAYLOAD)}-"] and dest.read_bytes() == PAYLOAD


def test_sha256_mismatch_is_refused_and_deleted(tmp_path):
    dest = tmp_path / "m.safetensors"
    with Server(PAYLOAD) as srv, pytest.raises(DownloadError, match="sha256 mismatch"):
        drive(download(srv.url, dest, sha256="0" * 64))
    assert not dest.exists() and not (tmp_path / "m.safetensors.part").exists()


def test_hub_lfs_etag_is_checked_when_no_hash_is_pinned(tmp_path):
    with Server(PAYLOAD, etag=SHA) as srv:
        res, _ = drive(download(srv.url, tmp_path / "a.bin"))
    assert res.sha256 == SHA
    with Server(PAYLOAD, etag="f" * 64) as srv, pytest.raises(DownloadError, match="mismatch"):
        drive(download(srv.url, tmp_path / "b.bin"))
    with Server(PAYLOAD, etag="e" * 64, redirect=True) as srv, pytest.raises(DownloadError, match="mismatch"):
        drive(download(srv.url.replace("/model.safetensors", "/redirect"), tmp_path / "d.bin"))
    with Server(PAYLOAD, etag=SHA, redirect=True) as srv:
        res, _ = drive(download(srv.url.replace("/model.safetensors", "/redirect"), tmp_path / "e.bin"))
    assert res.sha256 == SHA and srv.requests == [None]  # the redirect target served the bytes
    with Server(PAYLOAD) as srv:  # no hash anywhere: recorded, trust on first download
        res, _ = drive(download(srv.url, tmp_path / "c.bin"))
    assert '"verified": false' in (tmp_path / "c.bin.sha256.json").read_text()


def test_offline_mode_never_opens_a_socket(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    opened = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: opened.append(addr))
    with pytest.raises(DownloadError, match="offline"):
        next(download("http://127.0.0.1:9/x", tmp_path / "x"))
    with pytest.raises(DownloadError, match="offline"):
        next(manager.download_entry("sd15", dest_dir=tmp_path))
    assert opened == [] and not list(tmp_path.iterdir())


def test_http_errors_are_download_errors(tmp_path):
    with Server(PAYLOAD) as srv:
        url = srv.url
    with pytest.raises(DownloadError, match="failed"):
        next(download(url, tmp_path / "x", timeout=2))  # the server is gone


# --- the registry and local models ----------------------------------------------------------------------


def test_registry_has_the_known_models_with_their_facts():
    reg = manager.registry()
    for name in ("tinysd-cats32", "sd15", "sd21", "stylegan2-ada-ffhq", "vit-b-32-laion2b", "lc-tiny-clip"):
        assert name in reg
    for e in reg.values():
        assert e.kind and e.format and e.licence and e.source
        assert e.sha256 is None or (len(e.sha256) == 64 and int(e.sha256, 16) >= 0)
        assert e.bundled or e.url or e.hf_repo
    assert reg["sd15"].sha256 and reg["sd15"].url.endswith(".safetensors")
    with pytest.raises(DownloadError, match="bundled"):
        next(manager.download_entry("tinysd-cats32"))
    with pytest.raises(ModelLoadError, match="unknown model"):
        manager.entry("sdxl-turbo")


def test_models_are_found_in_folders_and_the_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_CANVAS_MODELS", str(tmp_path / "mine"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("LATENT_CANVAS_RESOURCES", str(tmp_path / "res"))
    sd15, clip = manager.entry("sd15"), manager.entry("vit-b-32-laion2b")
    assert manager.status(sd15) == "missing" and manager.status(clip) == "missing"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / sd15.filename).write_bytes(b"x")
    assert manager.locate(sd15) == (tmp_path / "mine" / sd15.filename, "folder")
    snap = _fake_hf_cache(tmp_path / "hub", clip.hf_repo, {clip.hf_filename: b"weights"})
    assert manager.locate(clip) == (snap / clip.hf_filename, "hf-cache")


def test_verify_checks_files_against_their_stated_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_CANVAS_RESOURCES", str(tmp_path / "res"))
    models = tmp_path / "res" / "models"
    models.mkdir(parents=True)
    e = manager.entry("stylegan2-cats64")
    assert manager.verify(e) is None  # missing
    (models / e.filename).write_bytes(PAYLOAD)
    (models / "stylegan2-cats64.json").write_text(f'{{"sha256": "{SHA}"}}')
    assert manager.verify(e) is True
    (models / e.filename).write_bytes(PAYLOAD[:-1])
    assert manager.verify(e) is False


def _fake_hf_cache(root, repo, files):
    """The layout huggingface_hub writes: blobs by hash, snapshot symlinks, refs/main."""
    base = root / f"models--{repo.replace('/', '--')}"
    rev = "0" * 40
    snap = base / "snapshots" / rev
    snap.mkdir(parents=True)
    (base / "blobs").mkdir()
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(rev)
    for name, data in files.items():
        blob = base / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).symlink_to(blob)
    return snap


def test_scan_lists_weight_files_folders_and_cached_diffusers_repos(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    folder = tmp_path / "models"
    (folder / "pipe").mkdir(parents=True)
    (folder / "pipe" / "model_index.json").write_text("{}")
    for name in ("a.safetensors", "b.ckpt", "c.pkl", "d.safetensors.part", "notes.txt"):
        (folder / name).write_bytes(b"0")
    _fake_hf_cache(tmp_path / "hub", "someone/sd", {"model_index.json": b"{}"})
    found = {(m.path.name, m.format, m.where) for m in manager.scan([folder])}
    assert found == {
        ("pipe", "diffusers-folder", "folder"),
        ("a.safetensors", "safetensors", "folder"),
        ("b.ckpt", "checkpoint", "folder"),
        ("c.pkl", "stylegan2-pkl", "folder"),
        ("0" * 40, "diffusers-folder", "hf-cache"),
    }


# --- safe loading ---------------------------------------------------------------------------------------


class _Payload:
    """What a malicious checkpoint smuggles in: unpickling it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.slow
def test_malicious_ckpt_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(ModelLoadError, match=r"refused to load evil\.ckpt") as err:
        load_state_dict_file(path)
    assert ".safetensors" in str(err.value)
    assert not marker.exists()
    # The same refusal through the diffusion-model loader.
    from core.sd.model import load_sd_model

    with pytest.raises(ModelLoadError, match="evil.ckpt"):
        load_sd_model(path, device="cpu")
    assert not marker.exists()
    # Control: the payload really is live under plain pickle (so the test can fail).
    with open(tmp_path / "p.pkl", "wb") as f:
        pickle.dump(_Payload(marker), f)
    with open(tmp_path / "p.pkl", "rb") as f:
        pickle.load(f).close()
    assert marker.exists()


def test_plain_checkpoints_and_safetensors_load(tmp_path):
    from safetensors.torch import save_file

    torch.save({"state_dict": {"w": torch.ones(3)}, "global_step": 7}, tmp_path / "ok.ckpt")
    assert torch.equal(load_state_dict_file(tmp_path / "ok.ckpt")["w"], torch.ones(3))
    save_file({"w": torch.ones(2)}, str(tmp_path / "ok.safetensors"))
    assert torch.equal(load_state_dict_file(tmp_path / "ok.safetensors")["w"], torch.ones(2))
    (tmp_path / "bad.safetensors").write_bytes(b"not really")
    with pytest.raises(ModelLoadError, match="bad.safetensors"):
        load_state_dict_file(tmp_path / "bad.safetensors")
    with pytest.raises(ModelLoadError, match="unsupported"):
        (tmp_path / "m.onnx").write_bytes(b"0")
        load_state_dict_file(tmp_path / "m.onnx")


def test_sd_models_finds_diffusers_folders_and_sd_single_files(tmp_path, monkeypatch):
    import numpy as np
    from safetensors.numpy import save_file

    from core.models import manager
    from core.sd.tiny import write_tiny_pipeline

    folder = write_tiny_pipeline(tmp_path / "my-sd")
    save_file(
        {"model.diffusion_model.input_blocks.0.0.weight": np.zeros(4, np.float32)},
        str(tmp_path / "sd.safetensors"),
    )
    save_file({"synthesis.b4.conv1.weight": np.zeros(4, np.float32)}, str(tmp_path / "gan.safetensors"))
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 64)
    monkeypatch.setattr(manager, "SD_SINGLE_FILE_MIN_BYTES", 0)
    found = manager.sd_models([tmp_path], hf_cache=False)
    assert set(found) == {folder, tmp_path / "sd.safetensors"}
