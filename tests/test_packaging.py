"""Packaging: the freedesktop entry, the icon, and the PyInstaller recipe are valid and point at real
things. The full build is a separate, slow command (packaging/README.md)."""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
DESKTOP_FILE = PACKAGING / "latent-canvas.desktop"
SPEC = PACKAGING / "latent-canvas.spec"
ICONS = ROOT / "resources" / "icons"

# --- the .desktop entry (Desktop Entry Specification 1.5) ----------------------------------------

REQUIRED = {"Type", "Name", "Exec"}  # Exec is required for Type=Application
KNOWN_KEYS = {
    "Type", "Version", "Name", "GenericName", "NoDisplay", "Comment", "Icon", "Hidden", "OnlyShowIn",
    "NotShowIn", "DBusActivatable", "TryExec", "Exec", "Path", "Terminal", "Actions", "MimeType",
    "Categories", "Implements", "Keywords", "StartupNotify", "StartupWMClass", "URL", "PrefersNonDefaultGPU",
    "SingleMainWindow",
}  # fmt: skip
BOOLEAN_KEYS = {"NoDisplay", "Hidden", "DBusActivatable", "Terminal", "StartupNotify", "PrefersNonDefaultGPU"}
LIST_KEYS = {"OnlyShowIn", "NotShowIn", "Actions", "MimeType", "Categories", "Implements", "Keywords"}
MAIN_CATEGORIES = {"AudioVideo", "Audio", "Video", "Development", "Education", "Game", "Graphics"}
MAIN_CATEGORIES |= {"Network", "Office", "Science", "Settings", "System", "Utility"}
FIELD_CODES = {"%f", "%F", "%u", "%U", "%i", "%c", "%k", "%%"}


def desktop_entry() -> dict[str, str]:
    text = DESKTOP_FILE.read_text(encoding="utf-8")  # the spec requires UTF-8
    assert text.startswith("[Desktop Entry]\n"), "the first group must be [Desktop Entry]"
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(text)  # strict: a duplicate key or group raises
    assert parser.sections() == ["Desktop Entry"]
    for line in text.splitlines():  # "Key=Value" with no spaces around "=" keeps every parser happy
        if line and not line.startswith(("#", "[")):
            assert re.fullmatch(r"[A-Za-z0-9-]+(\[[^\]]+\])?=\S.*", line), line
    return dict(parser["Desktop Entry"])


def test_desktop_entry_keys_and_values():
    entry = desktop_entry()
    assert REQUIRED <= set(entry) and entry["Type"] == "Application"
    assert set(entry) <= KNOWN_KEYS, set(entry) - KNOWN_KEYS
    for key in BOOLEAN_KEYS & set(entry):
        assert entry[key] in ("true", "false"), key
    for key in LIST_KEYS & set(entry):
        assert entry[key].endswith(";"), f"{key} must end with ';'"
    assert MAIN_CATEGORIES & set(entry["Categories"].split(";")), "needs one main category"
    assert entry["Version"] in ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5")


def console_scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_desktop_entry_exec_is_the_installed_app():
    entry = desktop_entry()
    program, *args = entry["Exec"].split()
    assert all(a in FIELD_CODES or not a.startswith("%") for a in args)
    assert program == entry["TryExec"]
    target = console_scripts()[program]  # the console script pip installs
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func))


def test_desktop_entry_icon_exists():
    name = desktop_entry()["Icon"]
    assert "/" not in name and not name.endswith((".png", ".svg")), "a theme name, installed by README"
    assert (ICONS / f"{name}.svg").is_file() and (ICONS / f"{name}.png").is_file()


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="desktop-file-utils not installed")
def test_desktop_file_validate():
    out = subprocess.run(["desktop-file-validate", str(DESKTOP_FILE)], capture_output=True, text=True)
    assert out.returncode == 0 and "error" not in out.stdout.lower(), out.stdout


# --- the icon -----------------------------------------------------------------------------------


def test_svg_icon_is_square_svg():
    root = ET.parse(ICONS / "latent-canvas.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    x, y, w, h = map(float, root.attrib["viewBox"].split())
    assert w == h


def test_png_icon_is_256_rgba_with_transparent_corners():
    with Image.open(ICONS / "latent-canvas.png") as im:
        assert im.size == (256, 256) and im.mode == "RGBA"
        a = np.asarray(im)
    assert a[0, 0, 3] == 0 and a[-1, -1, 3] == 0 and a[128, 128, 3] == 255


def test_png_icon_matches_the_svg(qapp):
    from PySide6.QtGui import QImage

    sys.path.insert(0, str(PACKAGING))
    try:
        from render_icon import render
    finally:
        sys.path.remove(str(PACKAGING))
    image = render(ICONS / "latent-canvas.svg").convertToFormat(QImage.Format.Format_RGBA8888)
    fresh = np.frombuffer(image.constBits(), np.uint8).reshape(256, 256, 4).astype(int)
    with Image.open(ICONS / "latent-canvas.png") as im:
        stored = np.asarray(im).astype(int)
    assert np.abs(fresh - stored).mean() < 2, "the PNG is stale: run packaging/render_icon.py"


@pytest.fixture
def qapp():
    pytest.importorskip("PySide6")
    from PySide6.QtGui import QGuiApplication

    return QGuiApplication.instance() or QGuiApplication([])


# --- the PyInstaller recipe ---------------------------------------------------------------------


class Recorder:
    """Stands in for one of PyInstaller's spec classes, recording how the spec calls it."""

    def __init__(self, kind: str, calls: list[tuple[str, tuple, dict]]):
        self.kind, self.calls = kind, calls

    def __call__(self, *args, **kwargs):
        self.calls.append((self.kind, args, kwargs))
        return SimpleNamespace(pure=["pure"], scripts=["scripts"], binaries=["bin"], datas=["datas"])


def run_spec(monkeypatch, env: dict[str, str] | None = None) -> dict[str, tuple[tuple, dict]]:
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    calls: list = []
    namespace = {"SPECPATH": str(PACKAGING), "__file__": str(SPEC)}
    namespace |= {k: Recorder(k, calls) for k in ("Analysis", "PYZ", "EXE", "COLLECT")}
    exec(compile(SPEC.read_text(), str(SPEC), "exec"), namespace)
    assert [c[0] for c in calls] == ["Analysis", "PYZ", "EXE", "COLLECT"]
    return {kind: (args, kwargs) for kind, args, kwargs in calls}


def test_spec_paths_exist_and_imports_resolve(monkeypatch):
    calls = run_spec(monkeypatch)
    (scripts,), analysis = calls["Analysis"]
    assert all(Path(s).is_file() for s in scripts)
    for src, dest in analysis["datas"]:
        assert Path(src).exists(), src
        assert not Path(dest).is_absolute() and ".." not in Path(dest).parts
    missing = [m for m in analysis["hiddenimports"] if importlib.util.find_spec(m) is None]
    assert not missing, f"hiddenimports that do not exist: {missing}"
    assert "torch" not in analysis["excludes"] and "PySide6" not in analysis["excludes"]


def test_spec_bundles_resources_where_core_paths_looks():
    # core/paths.py resolves resources as <dir of core>/../resources; in the bundle core/ sits at the root.
    from core import paths

    assert paths.REPO_RESOURCES == Path(paths.__file__).resolve().parents[1] / "resources"


def test_spec_is_onedir_windowed_with_icon(monkeypatch):
    calls = run_spec(monkeypatch)
    exe_args, exe = calls["EXE"]
    assert exe["exclude_binaries"] is True and exe["console"] is False  # onedir, no console window
    assert Path(exe["icon"]).is_file()
    coll_args, coll = calls["COLLECT"]
    assert coll["name"] == exe["name"] == "latent-canvas"


def test_spec_sd_extras_switch(monkeypatch):
    without = run_spec(monkeypatch)["Analysis"][1]["excludes"]
    with_sd = run_spec(monkeypatch, {"LC_BUNDLE_SD": "1"})["Analysis"][1]["excludes"]
    assert "diffusers" in without and "diffusers" not in with_sd


def test_spec_keywords_match_pyinstaller_signatures(monkeypatch):
    pyi = pytest.importorskip("PyInstaller.building.build_main", reason="PyInstaller not installed")
    from PyInstaller.building.api import COLLECT, EXE, PYZ

    real = {"Analysis": pyi.Analysis, "PYZ": PYZ, "EXE": EXE, "COLLECT": COLLECT}
    for kind, (_args, kwargs) in run_spec(monkeypatch).items():
        params = inspect.signature(real[kind].__init__).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        assert takes_any or set(kwargs) <= set(params), (kind, set(kwargs) - set(params))


def test_launch_script_starts_the_app_entry_point():
    tree = ast.parse((PACKAGING / "launch.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert any(n.module == "desktop.app" and n.names[0].name == "main" for n in imports)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # as the spec's pathex does
    cmd = [sys.executable, str(PACKAGING / "launch.py"), "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0 and "usage: latent-canvas" in out.stdout
