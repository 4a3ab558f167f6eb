"""Start-up checks on the environment, run by both entry points before any model is touched."""

from __future__ import annotations

import importlib.metadata
import re

from core.errors import LatentCanvasError

MIN_TORCH = (2, 6, 0)
# 2.6 is the first release whose torch.load(weights_only=True) cannot be bypassed (CVE-2025-32434);
# every .pt/.ckpt we open relies on it.
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?((?:a|b|rc|\.dev|dev)\d*)?(?:\.post\d+)?(?:\+[\w.]+)?")


class UnsupportedEnvironmentError(LatentCanvasError):
    """An installed dependency is too old (or missing) to run safely."""


def parse_version(version: str) -> tuple[int, int, int, bool]:
    """``"2.6.0+cu124"`` -> ``(2, 6, 0, True)``; the flag is False for pre-releases (a, b, rc, dev).

    Raises:
        UnsupportedEnvironmentError: not a version string.
    """
    m = _VERSION.fullmatch(version.strip())
    if not m:
        raise UnsupportedEnvironmentError(f"cannot read the torch version {version!r}")
    major, minor, patch, pre = m.groups()
    return int(major), int(minor), int(patch or 0), pre is None


def installed_torch_version() -> str | None:
    """The installed torch's version, read from package metadata (importing torch takes seconds)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_torch_version(version: str | None = None) -> None:
    """Refuse torch older than 2.6 (pre-releases of 2.6.0 count as older).

    Args:
        version: a version string to check; None checks the installed torch.

    Raises:
        UnsupportedEnvironmentError: torch missing, unreadable version, or older than 2.6.
    """
    version = version if version is not None else installed_torch_version()
    if version is None:
        raise UnsupportedEnvironmentError("torch is not installed: pip install 'torch>=2.6'")
    if parse_version(version) < (*MIN_TORCH, True):
        raise UnsupportedEnvironmentError(
            f"torch {version} is too old: Latent Canvas needs torch >= 2.6, whose safe loading of model "
            "files cannot be bypassed by a crafted file (CVE-2025-32434). Upgrade with "
            "pip install -U 'torch>=2.6'"
        )


def torch_version_problem(version: str | None = None) -> str | None:
    """The message :func:`check_torch_version` would raise, or None when torch is fine."""
    try:
        check_torch_version(version)
    except UnsupportedEnvironmentError as e:
        return str(e)
    return None
