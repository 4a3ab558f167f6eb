"""What the training scripts share: device and seeding, the pre-rendered image bank, resumable
checkpoints, sample grids, k-means, export bookkeeping and the time-budgeted training loop.

A run lives in one folder (``--out``)::

    checkpoint.pt    latest resumable state: plain state dicts, RNG states and the progress dict
    progress.json    the same progress dict, readable while the run goes on
    reals.png        a grid of training images
    fakes-KKKKKK.png samples of fixed z at KKKKKK kimg (StyleGAN2: from G_ema)

Checkpoints are loaded with ``torch.load(weights_only=True)``: they hold tensors, numbers, strings,
lists and dicts only, never pickled objects.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from core.models.safe_load import sha256_file

log = logging.getLogger("latent_canvas.training")

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"  # copy of the checkpoint with the lowest learning-curve FID so far
PROGRESS = "progress.json"


# --- device, seeds, RNG state -----------------------------------------------------------------


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNGs (used by ops without a generator argument) and return a CPU generator
    that every sampling step of a trainer draws from."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    state = {"gen": gen.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(gen: torch.Generator, state: dict[str, Any]) -> None:
    gen.set_state(state["gen"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ModelEmaState:
    """``state_dict`` / ``load_state_dict`` of a trainer that holds ``model``, its ``ema`` copy, one
    optimiser ``opt``, the counters ``nimg`` and ``steps`` and a random generator ``gen`` (the W prior's
    and the encoder's trainers). The checkpoint's keys are part of the run format: resumes rely on them."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "nimg": self.nimg,
            "steps": self.steps,
            "rng": rng_state(self.gen),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.nimg, self.steps = int(state["nimg"]), int(state["steps"])
        set_rng_state(self.gen, state["rng"])


# --- files --------------------------------------------------------------------------------------


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write through a temporary name then rename: a crash never leaves a half file under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    return _atomic(Path(path), lambda p: p.write_text(text))


def save_checkpoint(out_dir: str | Path, state: dict[str, Any], progress: dict[str, Any]) -> Path:
    """Atomically write ``checkpoint.pt`` ({"state": ..., "progress": ...}) and ``progress.json``."""
    out_dir = Path(out_dir)
    path = _atomic(out_dir / CHECKPOINT, lambda p: torch.save({"state": state, "progress": progress}, p))
    write_json(out_dir / PROGRESS, progress)
    return path


def load_checkpoint(
    out_dir: str | Path, name: str = CHECKPOINT
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(state, progress)`` of the run in ``out_dir``, or None when it has no checkpoint yet.

    ``name``: ``CHECKPOINT`` (the latest) or ``BEST`` (lowest learning-curve FID). Tensors load on
    the CPU; trainers move them where they belong.
    """
    path = Path(out_dir) / name
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt["state"], ckpt["progress"]


# --- images -------------------------------------------------------------------------------------


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] floats in [-1, 1] -> [N, H, W, 3] uint8."""
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_grid(images: torch.Tensor, path: str | Path, *, ncol: int = 8, scale: int = 2) -> Path:
    """Tile [N, 3, H, W] images in [-1, 1] into one PNG (``scale``x nearest upsampling to be seen)."""
    x = to_uint8_hwc(images)
    n, h, w, c = x.shape
    nrow = math.ceil(n / ncol)
    grid = np.zeros((nrow * h, ncol * w, c), np.uint8)
    for i, img in enumerate(x):
        r, k = divmod(i, ncol)
        grid[r * h : (r + 1) * h, k * w : (k + 1) * w] = img
    im = Image.fromarray(grid).resize((ncol * w * scale, nrow * h * scale), Image.NEAREST)
    return _atomic(Path(path), lambda p: im.save(p, format="PNG"))


class ImageBank:
    """Training images held in memory as uint8 [N, H, W, 3], sampled with random horizontal flips."""

    def __init__(self, images: np.ndarray | torch.Tensor, *, cache_dir: str | Path | None = None):
        self.cache_dir = Path(cache_dir) if cache_dir else None  # where derived data may be cached
        images = torch.as_tensor(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
        self.images = images.permute(0, 3, 1, 2).contiguous()  # [N, 3, H, W] uint8
        self.resolution = images.shape[1]

    def __len__(self) -> int:
        return self.images.shape[0]

    def sample(self, batch: int, gen: torch.Generator, *, flip: bool = True) -> torch.Tensor:
        """``batch`` random images [B, 3, H, W] float32 in [-1, 1] (CPU)."""
        idx = torch.randint(len(self), (batch,), generator=gen)
        x = self.images[idx].float() / 127.5 - 1
        if flip:
            mirrored = torch.rand(batch, generator=gen) < 0.5
            x = torch.where(mirrored[:, None, None, None], x.flip(3), x)
        return x


def procedural_bank(
    n: int, *, seed: int, resolution: int, cache_dir: str | Path | None, workers: int = 1
) -> ImageBank:
    """``n`` procedural cat faces (training split, indices ``seed`` ..), rendered once then cached as
    .npy under ``cache_dir``; ``workers`` > 1 renders in that many processes (the same images: each
    cat is a function of its seed alone): 20000 cats took 3 s on a lent GPU machine's 16 cores, where
    one process takes ~30 s, time the GPU would otherwise sit idle.

    The cache name carries the hash of the renderer's source, so a changed renderer re-renders.
    """
    from core.data import procedural

    src = Path(procedural.__file__).read_bytes()
    key = f"cats-n{n}-seed{seed}-res{resolution}-{hashlib.sha256(src).hexdigest()[:12]}.npy"
    cached = Path(cache_dir) / key if cache_dir else None
    if cached is not None and cached.is_file():
        log.info("training images from cache %s", cached)
        return ImageBank(np.load(cached, allow_pickle=False), cache_dir=cache_dir)
    t0 = time.perf_counter()
    first = procedural.split_seed("train", seed)
    procedural.split_seed("train", seed + n - 1)  # raises if the set would run into the eval split
    if workers > 1 and n >= 2 * workers:
        from concurrent.futures import ProcessPoolExecutor

        bounds = np.linspace(0, n, workers + 1).astype(int)
        with ProcessPoolExecutor(workers) as pool:
            jobs = [(first + a, b - a, resolution) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            images = np.concatenate(list(pool.map(_render_chunk, jobs)))
    else:
        images = _render_chunk((first, n, resolution))
    log.info("rendered %d training images in %.0f s", n, time.perf_counter() - t0)
    if cached is not None:
        _atomic(cached, lambda p: _save_npy(p, images))
    return ImageBank(images, cache_dir=cache_dir)


def _render_chunk(job: tuple[int, int, int]) -> np.ndarray:
    from core.data import procedural

    first, n, resolution = job
    return procedural.make_dataset(n, seed=first, resolution=resolution)[0]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append .npy to a path
        np.save(f, array, allow_pickle=False)


# --- k-means (for the W statistics shipped with a generator) ----------------------------------


# --- the training loop --------------------------------------------------------------------------


class Trainer(Protocol):
    batch: int
    bank: ImageBank
    nimg: int  # training images shown so far

    def step(self) -> dict[str, float]:
        """One iteration (``batch`` images); returns this iteration's loss values."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def samples(self) -> torch.Tensor:
        """Images [N, 3, H, W] in [-1, 1] from the trainer's fixed z, for the progress grid."""
        ...


@dataclass(frozen=True)
class Budget:
    kimg: float | None = None  # stop after this many thousand training images (total over resumes)
    minutes: float | None = None  # stop after this much wall-clock training time (total over resumes)

    def done(self, nimg: int, elapsed_s: float) -> bool:
        if self.kimg is not None and nimg >= self.kimg * 1000:
            return True
        return self.minutes is not None and elapsed_s >= self.minutes * 60


class ProgressPrinter:
    """Logs one line every ``every_s`` seconds: kimg, mean losses since the last line, img/s, time."""

    def __init__(self, every_s: float = 30.0):
        self.every_s = every_s
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._last_t = time.monotonic()
        self._last_nimg: int | None = None

    def update(self, nimg: int, losses: dict[str, float], elapsed_s: float, *, force: bool = False) -> None:
        for k, v in losses.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
            self._counts[k] = self._counts.get(k, 0) + 1
        if self._last_nimg is None:
            self._last_nimg = nimg  # first call: the rate counts from here
        now = time.monotonic()
        if not self._sums or (not force and now - self._last_t < self.every_s):
            return
        rate = (nimg - self._last_nimg) / max(now - self._last_t, 1e-9)
        loss = "  ".join(f"{k} {self._sums[k] / self._counts[k]:.4f}" for k in self._sums)
        log.info("kimg %8.2f  %s  %6.1f img/s  elapsed %s", nimg / 1000, loss, rate, _hms(elapsed_s))
        self._sums.clear()
        self._counts.clear()
        self._last_t, self._last_nimg = now, nimg


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


def train_loop(
    trainer: Trainer,
    out_dir: str | Path,
    *,
    progress: dict[str, Any],
    budget: Budget,
    checkpoint_minutes: float = 5.0,
    log_every_s: float = 30.0,
) -> dict[str, Any]:
    """Step ``trainer`` until ``budget`` is spent, checkpointing every ``checkpoint_minutes``.

    ``progress`` is the JSON-able dict stored with every checkpoint; its ``elapsed_s`` (training time
    of earlier sessions of this run) is carried on. Returns the final progress dict.
    """
    out_dir = Path(out_dir)
    start, elapsed0 = time.monotonic(), float(progress.get("elapsed_s", 0.0))
    last_ckpt = start
    printer = ProgressPrinter(log_every_s)
    printer.update(trainer.nimg, {}, elapsed0)

    def elapsed() -> float:
        return elapsed0 + time.monotonic() - start

    def checkpoint(done: bool) -> None:
        progress.update(nimg=trainer.nimg, kimg=trainer.nimg / 1000, elapsed_s=elapsed(), done=done)
        evaluate = getattr(trainer, "evaluate", None)  # optional: a learning-curve point
        if evaluate is not None and trainer.nimg > 0:
            t0 = time.monotonic()
            point = {"kimg": round(trainer.nimg / 1000, 3), "minutes": round(elapsed() / 60, 2), **evaluate()}
            progress.setdefault("curve", []).append(point)
            log.info("evaluation %s (%.0f s, not counted as training time)", point, time.monotonic() - t0)
            nonlocal start
            start += time.monotonic() - t0
        save_grid(trainer.samples(), out_dir / f"fakes-{trainer.nimg // 1000:06d}.png")
        path = save_checkpoint(out_dir, trainer.state_dict(), progress)
        log.info("checkpoint at kimg %.2f -> %s", trainer.nimg / 1000, path)
        if _is_best(progress.get("curve", []), trainer.nimg):
            _atomic(out_dir / BEST, lambda p: shutil.copyfile(path, p))
            log.info("lowest FID so far: kept as %s", out_dir / BEST)

    if not (out_dir / CHECKPOINT).is_file():
        checkpoint(done=False)  # the starting point, so even a killed run can resume and show kimg 0
    while not budget.done(trainer.nimg, elapsed()):
        losses = trainer.step()
        if not all(math.isfinite(v) for v in losses.values()):
            raise FloatingPointError(f"non-finite loss at kimg {trainer.nimg / 1000:.2f}: {losses}")
        printer.update(trainer.nimg, losses, elapsed())
        if time.monotonic() - last_ckpt >= checkpoint_minutes * 60:
            checkpoint(done=False)
            last_ckpt = time.monotonic()
    printer.update(trainer.nimg, {}, elapsed(), force=True)
    checkpoint(done=True)
    return progress


def _is_best(curve: list[dict[str, Any]], nimg: int) -> bool:
    """Whether the curve's point at ``nimg`` has the lowest FID of all points (GAN FID goes up and
    down between checkpoints, so the export takes the best one, not just the last)."""
    fids = [(p["kimg"], v) for p in curve for k, v in p.items() if k.startswith("fid")]
    if not fids:
        return False
    best_kimg = min(fids, key=lambda kv: kv[1])[0]
    return abs(best_kimg - nimg / 1000) < 1e-6


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")


# --- command line ---------------------------------------------------------------------------------


def add_config_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--field-name`` option per field of the config dataclass ``cls``, defaulting to its default."""
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default, metavar=f.name.upper())


def train_parser(prog: str, config_cls: type) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train (or with --resume continue) a run in --out. On resume the model and "
        "training settings come from the checkpoint; only the session options below apply.",
    )
    s = p.add_argument_group("session options")
    s.add_argument("--out", required=True, help="run folder (checkpoint, progress.json, sample grids)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    s.add_argument("--minutes", type=float, default=None, help="stop at this total training time")
    s.add_argument("--kimg", type=float, default=None, help="stop at this total of thousand images")
    s.add_argument("--checkpoint-minutes", type=float, default=5.0, help="checkpoint + grid cadence")
    s.add_argument("--log-every", type=float, default=30.0, help="seconds between progress lines")
    s.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda:0")
    s.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    s.add_argument("--cache-dir", default="runs/.cache", help="where pre-rendered training sets are kept")
    s.add_argument(
        "--init-from",
        help="new run only: start from an exported model (.safetensors with its .json card) when the "
        "run's checkpoint is gone; its kimg and minutes carry on, the rest of the state starts fresh",
    )
    add_config_args(p.add_argument_group("model and training settings (fixed for a run)"), config_cls)
    return p


def run_training(
    argv: Sequence[str],
    *,
    prog: str,
    config_cls: type,
    make_trainer: Callable[[Any, torch.device, ImageBank], Trainer],
) -> dict[str, Any]:
    """Parse ``argv``, start or resume the run in ``--out`` and train until the budget is spent."""
    parser = train_parser(prog, config_cls)
    args = parser.parse_args(argv)
    setup_logging()
    if args.minutes is None and args.kimg is None:
        parser.error("give a budget: --minutes and/or --kimg")
    if args.threads:
        torch.set_num_threads(args.threads)
    device, out = pick_device(args.device), Path(args.out)
    loaded = load_checkpoint(out)
    if loaded is not None and not args.resume:
        parser.error(f"{out} already holds a run: pass --resume to continue it, or another --out")
    if loaded is not None:
        state, progress = loaded
        cfg = config_from(config_cls, progress["config"])
    else:
        cfg = config_cls(**{f.name: getattr(args, f.name) for f in fields(config_cls)})
        progress = {"config": asdict(cfg), "sessions": [], "nimg": 0, "elapsed_s": 0.0}
    bank = procedural_bank(
        cfg.n_train, seed=cfg.data_seed, resolution=cfg.resolution, cache_dir=args.cache_dir
    )
    trainer = make_trainer(cfg, device, bank)
    if args.init_from and loaded is not None:
        parser.error("--init-from starts a new run; this one resumes from its checkpoint")
    if loaded is not None:
        trainer.load_state_dict(state)
        log.info("resumed %s at kimg %.2f", out, trainer.nimg / 1000)
    else:
        if args.init_from:
            if not hasattr(trainer, "init_from"):
                parser.error(f"{prog} cannot start from an exported model")
            facts = trainer.init_from(args.init_from)
            progress.update(init_from=facts, nimg=trainer.nimg, elapsed_s=facts["minutes"] * 60)
            log.info("started from %s (kimg %.2f): %s", args.init_from, trainer.nimg / 1000, facts["note"])
        save_grid(bank.sample(32, torch.Generator().manual_seed(0), flip=False), out / "reals.png")
    progress["sessions"].append(_session_facts(prog, argv, device, trainer.nimg))
    log.info("config %s", json.dumps(asdict(cfg)))
    budget = Budget(kimg=args.kimg, minutes=args.minutes)
    return train_loop(
        trainer,
        out,
        progress=progress,
        budget=budget,
        checkpoint_minutes=args.checkpoint_minutes,
        log_every_s=args.log_every,
    )


def change_settings(run_dir: str | Path, config_cls: type, changes: dict[str, Any], why: str) -> dict:
    """Change a stopped run's training settings before it resumes; the change, the kimg it happened at
    and ``why`` are kept in ``progress['config_changes']`` and end up in the model card."""
    state, progress = load_checkpoint(run_dir) or (None, None)
    if state is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir}")
    types = {f.name: type(f.default) for f in fields(config_cls)}
    unknown = sorted(set(changes) - set(types))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {sorted(types)}")

    def convert(name: str, value: Any) -> Any:
        if types[name] is bool and isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return types[name](value)

    changes = {k: convert(k, v) for k, v in changes.items()}
    progress.setdefault("config_changes", []).append(
        {"kimg": progress["nimg"] / 1000, "changes": changes, "why": why}
    )
    progress["config"].update(changes)
    save_checkpoint(run_dir, state, progress)
    return progress


def generator_run(parser: argparse.ArgumentParser, a: argparse.Namespace, config_cls: type, out: Path):
    """Start or resume a run trained against a generator (the W prior, an encoder): ``(config,
    generator path, progress, checkpoint state or None)``. On resume the settings come from the
    checkpoint and the generator must be the one the run started with (sha256); errors go through
    ``parser.error``."""
    loaded = load_checkpoint(out)
    if loaded is not None and not a.resume:
        parser.error(f"{out} already holds a run: pass --resume to continue it, or another --out")
    if loaded is None and not a.generator:
        parser.error("a new run needs --generator")
    if loaded is not None:
        state, progress = loaded
        gen_path = Path(a.generator or progress["generator"])
        if sha256_file(gen_path) != progress["generator_sha256"]:
            parser.error(f"{gen_path} is not the generator this run was started with (sha256 differs)")
        return config_cls(**progress["config"]), gen_path, progress, state
    cfg = config_cls(**{f.name: getattr(a, f.name) for f in fields(config_cls)})
    gen_path = Path(a.generator)
    progress = {"config": asdict(cfg), "sessions": [], "nimg": 0, "elapsed_s": 0.0,
                "generator": str(gen_path), "generator_sha256": sha256_file(gen_path)}  # fmt: skip
    return cfg, gen_path, progress, None


def change_main(argv: Sequence[str], *, prog: str, config_cls: type) -> None:
    """``<prog> change --run DIR --set lr=1e-4 --why "..."``: change a stopped run's settings (recorded
    in the run and, at export, in the model card)."""
    p = argparse.ArgumentParser(prog=f"{prog} change", description=change_main.__doc__)
    p.add_argument("--run", required=True)
    p.add_argument("--set", action="append", required=True, metavar="NAME=VALUE")
    p.add_argument("--why", required=True, help="the reason, kept in the model card")
    a = p.parse_args(argv)
    changes = dict(item.split("=", 1) for item in a.set)
    progress = change_settings(a.run, config_cls, changes, a.why)
    print(progress["config_changes"][-1])


def config_from(config_cls: type, stored: dict[str, Any]):
    """A run's config from its stored dict. A setting this code no longer has is dropped when it was
    off (0, False, empty) in the run, so old runs resume; one that was on is an error, since the
    run cannot be continued as it was trained."""
    known = {f.name for f in fields(config_cls)}
    gone = {k: v for k, v in stored.items() if k not in known}
    if any(gone.values()):
        raise ValueError(f"this run used settings this version lacks: {gone}")
    return config_cls(**{k: v for k, v in stored.items() if k in known})


def _session_facts(prog: str, argv: Sequence[str], device: torch.device, nimg: int) -> dict[str, Any]:
    return {
        "command": " ".join([prog, *argv]),
        "device": _device_name(device),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "start_kimg": nimg / 1000,
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def export_facts(progress: dict[str, Any], argv: Sequence[str], prog: str) -> dict[str, Any]:
    """Training facts for a model's JSON sidecar, from the run's progress dict."""
    sessions = progress.get("sessions", [])
    return {
        "kimg": round(progress.get("nimg", 0) / 1000, 3),
        "minutes": round(progress.get("elapsed_s", 0.0) / 60, 2),
        "seed": progress["config"].get("seed"),
        "devices": sorted({s["device"] for s in sessions}),
        "commands": [s["command"] for s in sessions],
        "finished": bool(progress.get("done")),
        "train_config": progress["config"],
        "config_changes": progress.get("config_changes", []),  # settings changed mid-run, at which kimg
        "init_from": progress.get("init_from"),  # the exported model a new run started from, if any
        "curve": progress.get("curve", []),  # learning-curve points (StyleGAN2: FID of G_ema samples)
        "export_command": " ".join([prog, *argv]),
        "exported": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
    }


def write_sidecar(model_path: str | Path, *, config: dict, training: dict, extra: dict | None = None) -> Path:
    """``<model>.json`` next to the weights: file name, sha256, generator config and training facts."""
    model_path = Path(model_path)
    doc = {
        "file": model_path.name,
        "sha256": sha256_file(model_path),
        "bytes": model_path.stat().st_size,
        "config": config,
        "training": training,
        **(extra or {}),
    }
    return write_json(model_path.with_suffix(".json"), doc)
