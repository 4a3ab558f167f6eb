"""Model files from strangers: no code runs, every refusal names the file, old torch is refused.

Each malicious file carries an object whose unpickling writes a marker file. A control test opens the
same bytes with plain unpickling and sees the marker appear, so the payload is known to be live; every
safe loader must refuse the file and leave no marker.
"""

from __future__ import annotations

import json
import pickle
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from core.compat import UnsupportedEnvironmentError, check_torch_version, parse_version
from core.errors import ModelLoadError
from core.models.io import load_generator, save_generator
from core.models.safe_load import load_torch_checkpoint
from tests.conftest import tiny_stylegan


class Exploit:
    """Unpickles as ``exec(...)`` writing ``marker``: what a hostile checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def payloads(marker: Path) -> dict[str, object]:
    weights = OrderedDict(weight=torch.ones(2, 2), bias=torch.zeros(2))
    return {
        "bare-object": Exploit(marker),
        "inside-state-dict": {**weights, "evil": Exploit(marker)},
        "lightning-ckpt": {"state_dict": weights, "callbacks": {"x": Exploit(marker)}, "epoch": 3},
        "nested-in-list": {"optimizer": [1, 2, (Exploit(marker),)]},
    }


def write_malicious(tmp_path: Path, kind: str, suffix: str, *, legacy: bool = False) -> tuple[Path, Path]:
    marker = tmp_path / "MARKER"
    path = tmp_path / f"model-{kind}{suffix}"
    torch.save(payloads(marker)[kind], path, _use_new_zipfile_serialization=not legacy)
    return path, marker


def torch_file_loaders():
    """Every function in the app that opens a user-supplied torch checkpoint."""
    loaders = {"safe_load.load_torch_checkpoint": load_torch_checkpoint}
    try:
        from core.models.manager import load_state_dict_file
    except ImportError:  # the model manager is optional in a partial checkout
        pass
    else:
        loaders["manager.load_state_dict_file"] = load_state_dict_file
    return loaders


KINDS = ["bare-object", "inside-state-dict", "lightning-ckpt", "nested-in-list"]


@pytest.mark.parametrize("kind", KINDS)
def test_payload_is_live_under_plain_unpickling(tmp_path, kind):
    path, marker = write_malicious(tmp_path, kind, ".pt")
    torch.load(path, weights_only=False)  # what an unsafe loader would do
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize("loader", sorted(torch_file_loaders()))
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin"])
@pytest.mark.parametrize("kind", KINDS)
def test_malicious_checkpoint_is_refused_naming_the_file(tmp_path, loader, suffix, kind):
    path, marker = write_malicious(tmp_path, kind, suffix)
    with pytest.raises(ModelLoadError, match=f"refused to load {path.name}") as e:
        torch_file_loaders()[loader](path)
    assert "code" in str(e.value)  # says why
    assert "weights_only" not in str(e.value)  # and never passes on torch's advice to load it anyway
    assert not marker.exists()


def test_malicious_legacy_format_checkpoint_is_refused(tmp_path):
    path, marker = write_malicious(tmp_path, "inside-state-dict", ".pt", legacy=True)
    with pytest.raises(ModelLoadError, match=path.name):
        load_torch_checkpoint(path)
    assert not marker.exists()


def test_plain_checkpoint_loads(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"epoch": 2, "name": "x"}}
    torch.save(state, tmp_path / "ok.pt")
    out = load_torch_checkpoint(tmp_path / "ok.pt")
    assert torch.equal(out["w"], state["w"]) and out["meta"] == state["meta"]


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated", "garbage"])
def test_damaged_checkpoint_names_the_file(tmp_path, damage):
    path = tmp_path / "weights.ckpt"
    torch.save({"w": torch.ones(64, 64)}, path)
    data = path.read_bytes()
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(
            {"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"\x80\x02}q" * 50}[damage]
        )
    with pytest.raises(ModelLoadError, match="weights.ckpt"):
        load_torch_checkpoint(path)


# --- StyleGAN2-ADA .pkl -------------------------------------------------------------------------


def test_malicious_pkl_is_refused_and_payload_is_live(tmp_path):
    marker = tmp_path / "MARKER"
    data = pickle.dumps({"G_ema": Exploit(marker)})
    path = tmp_path / "network-snapshot-000100.pkl"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match=path.name):
        load_generator(path)
    assert not marker.exists()
    pickle.loads(data)  # control: plain unpickling runs it
    assert marker.exists()


# --- our safetensors generators -----------------------------------------------------------------


@pytest.fixture
def generator_bytes(tmp_path) -> bytes:
    return save_generator(tiny_stylegan(), tmp_path / "good.safetensors").read_bytes()


def _header_len(data: bytes) -> int:
    return int.from_bytes(data[:8], "little")


DAMAGE = {
    "empty": lambda d: b"",
    "truncated-header": lambda d: d[:20],
    "truncated-weights": lambda d: d[: len(d) - 100],
    "half": lambda d: d[: len(d) // 2],
    "garbage": lambda d: bytes(range(256)) * 8,
    "huge-header-length": lambda d: (2**62).to_bytes(8, "little") + d[8:],
    "header-length-past-end": lambda d: (len(d) * 2).to_bytes(8, "little") + d[8:],
    "header-not-json": lambda d: d[:8] + b"!" * _header_len(d) + d[8 + _header_len(d) :],
    "pickle-instead": lambda d: pickle.dumps({"w": [1.0] * 10}),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_generator_file_names_the_file(tmp_path, generator_bytes, damage):
    path = tmp_path / f"{damage}.safetensors"
    path.write_bytes(DAMAGE[damage](generator_bytes))
    with pytest.raises(ModelLoadError, match=path.name):
        load_generator(path)


BAD_CONFIGS = {
    "config-not-json": "{oops",
    "config-a-list": "[1, 2]",
    "config-wrong-types": json.dumps({"arch": "stylegan2", "z_dim": "x"}),
    "config-negative-size": json.dumps({"arch": "dcgan", "z_dim": -5, "img_resolution": 16}),
    "config-unknown-arch": json.dumps({"arch": "evil"}),
    "config-missing": None,
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_damaged_generator_config_names_the_file(tmp_path, name):
    from safetensors.torch import save_file

    from core.models.io import FORMAT

    meta = {"format": FORMAT} | ({"config": BAD_CONFIGS[name]} if BAD_CONFIGS[name] is not None else {})
    save_file({"w": torch.ones(2)}, str(tmp_path / f"{name}.safetensors"), metadata=meta)
    with pytest.raises(ModelLoadError, match=f"{name}.safetensors|unknown generator architecture"):
        load_generator(tmp_path / f"{name}.safetensors")


def test_missing_generator_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_generator(tmp_path / "moved-away.safetensors")


def test_safetensors_of_someone_else_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="other.safetensors"):
        load_generator(tmp_path / "other.safetensors")


# --- torch version at start-up ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("2.6.0", True),
        ("2.6.0+cu124", True),
        ("2.6", True),
        ("2.7.1+cpu", True),
        ("2.15.0+cu132", True),
        ("2.6.1.post1", True),
        ("3.0.0", True),
        ("2.5.1", False),
        ("2.5.1+cu121", False),
        ("2.6.0a0+git1234abc", False),  # pre-releases of 2.6.0 may predate the fix
        ("2.6.0rc1", False),
        ("2.6.0.dev20241101", False),
        ("1.13.1", False),
        ("0.4.1", False),
    ],
)
def test_torch_version_check(version, ok):
    if ok:
        check_torch_version(version)
    else:
        with pytest.raises(UnsupportedEnvironmentError, match=r"too old.*2\.6"):
            check_torch_version(version)


@pytest.mark.parametrize("version", ["", "latest", "two.six", "2"])
def test_unreadable_torch_version_is_refused(version):
    with pytest.raises(UnsupportedEnvironmentError):
        check_torch_version(version)


def test_parse_version_orders_releases():
    assert (
        parse_version("2.10.0") > parse_version("2.9.9") > parse_version("2.6.0") > parse_version("2.6.0rc1")
    )


def test_installed_torch_passes():
    check_torch_version()  # the venv's torch; a failure here means the venv itself is unsafe


def test_cli_refuses_old_torch(monkeypatch, tmp_path, capsys):
    from core.cli import main

    monkeypatch.setattr("core.compat.installed_torch_version", lambda: "2.5.1")
    rc = main(["interpolate", "a.npz", "b.npz", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "torch 2.5.1 is too old" in err and "Traceback" not in err


def test_desktop_refuses_old_torch_before_opening_a_window(monkeypatch):
    pytest.importorskip("PySide6")
    from desktop.app import main

    monkeypatch.setattr("core.compat.installed_torch_version", lambda: "2.4.0")
    monkeypatch.setattr(sys, "argv", ["latent-canvas"])

    def no_window(*_a, **_k):  # were the check missing, fail here instead of running an event loop
        raise AssertionError("a window was opened before the torch check")

    monkeypatch.setattr("desktop.main_window.MainWindow", no_window)
    with pytest.raises(SystemExit) as e:
        main([])
    assert "torch 2.4.0 is too old" in str(e.value.code)
