"""One command for a short StyleGAN2 stint on a borrowed GPU, with everything it made in one folder.

    python -m core.training.gpu_stint --out $OUT --minutes 9
    python -m core.training.gpu_stint --out $OUT --minutes 9 --resume-parts DIR   # continue a stint

A lent accelerator comes for minutes, starts bare, and hands back only a few files of limited size
(the device tool: at most 8 files of 16 MiB). So this command:

1. starts the run in a scratch folder: from a full checkpoint when ``--resume-parts`` holds one (the
   parts a previous stint wrote, or a CPU run's ``checkpoint.pt`` split by :func:`split_file`), else
   from the bundled generator's export (``--init-from``: a fresh discriminator);
2. trains on the GPU (``--device``, default cuda) with a GPU-sized batch until ``--minutes`` of
   training time, with learning-curve points (tiny-CLIP FID of 2000 samples, when open_clip is
   importable there) and checkpoints every ``--checkpoint-minutes``;
3. writes to ``--out``: the exported G_ema of the best curve point (``stylegan2-cats64.safetensors``
   with its card and W statistics: what ships), ``progress.json``, the last sample grid, and the full
   checkpoint split into parts of at most 15 MiB (``checkpoint.part0`` ..) to resume from next time.

Back on the CPU machine: ``python -m core.training.gpu_stint join --parts DIR --out RUN/checkpoint.pt``
rebuilds the checkpoint, so the run continues there (``python -m core.training.stylegan2 --out RUN
--resume ...``) with nothing lost. Training settings other than the batch stay the run's own.

Which way a checkpoint can travel: back from the GPU, yes (three parts through $OUT). To the GPU, only
where the working tree leaves room for it: the device tool sends at most 64 MiB, the repository is
about 58 MB (most of it the bundled models), a full checkpoint 32 MB. So a stint on a lent GPU starts
from the bundled export with a fresh discriminator; at a GPU's hundreds of images a second the few
kimg a fresh D costs are seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from core.training.common import BEST, CHECKPOINT, PROGRESS, setup_logging

log = logging.getLogger("latent_canvas.training")

PART_BYTES = 15 * 2**20  # under the device tool's 16 MiB a file
DEFAULT_INIT = Path(__file__).resolve().parents[2] / "resources" / "models" / "stylegan2-cats64.safetensors"


def split_file(path: str | Path, out_dir: str | Path, *, part_bytes: int = PART_BYTES) -> list[Path]:
    """``path`` as ``<name>.part0``, ``.part1``, .. in ``out_dir``, each at most ``part_bytes``."""
    path, out_dir = Path(path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    with open(path, "rb") as f:
        while chunk := f.read(part_bytes):
            part = out_dir / f"{path.stem}.part{len(parts)}"
            part.write_bytes(chunk)
            parts.append(part)
    return parts


def join_parts(parts_dir: str | Path, out: str | Path, *, stem: str = "checkpoint") -> Path:
    """Concatenate ``<stem>.part0`` .. in ``parts_dir`` into ``out`` (written atomically)."""
    parts_dir, out = Path(parts_dir), Path(out)
    parts = sorted(parts_dir.glob(f"{stem}.part*"), key=lambda p: int(p.suffix.removeprefix(".part")))
    if not parts or parts[0].suffix != ".part0" or len(parts) != int(parts[-1].suffix[5:]) + 1:
        raise FileNotFoundError(f"{parts_dir} has no complete set of {stem}.part0 .. parts")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        for p in parts:
            f.write(p.read_bytes())
    tmp.replace(out)
    return out


def run_stint(a: argparse.Namespace) -> Path:
    from core.training import stylegan2

    out, run = Path(a.out), Path(a.scratch)
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    common = ["--out", str(run), "--checkpoint-minutes", str(a.checkpoint_minutes), "--device", a.device,
              "--cache-dir", str(a.cache_dir)]  # fmt: skip
    if a.resume_parts and list(Path(a.resume_parts).glob("checkpoint.part*")):
        join_parts(a.resume_parts, run / CHECKPOINT)
        shutil.copy(run / CHECKPOINT, run / BEST)  # the best so far, unless the stint beats it
        progress = json.loads((run / PROGRESS).read_text()) if (run / PROGRESS).is_file() else None
        if progress is None:  # the parts carry the progress inside the checkpoint
            from core.training.common import load_checkpoint, write_json

            progress = load_checkpoint(run)[1]
            write_json(run / PROGRESS, progress)
        if progress["config"]["batch"] != a.batch:
            stylegan2.main(["change", "--run", str(run), "--set", f"batch={a.batch}",
                            "--why", f"stint on {a.device}: a batch its size"])  # fmt: skip
        if progress["config"].get("precision", "fp32") != a.precision:
            stylegan2.main(["change", "--run", str(run), "--set", f"precision={a.precision}",
                            "--why", f"stint on {a.device}: its arithmetic"])  # fmt: skip
        minutes = progress.get("elapsed_s", 0.0) / 60 + a.minutes  # the budget counts from here
        stylegan2.main([*common, "--resume", "--minutes", str(minutes)])
    else:
        fid = a.fid_samples if _has_open_clip() else 0
        card = Path(a.init_from).with_suffix(".json")  # --init-from counts the export's minutes as done
        done = json.loads(card.read_text()).get("training", {}).get("minutes", 0.0) if card.is_file() else 0.0
        new = ["--init-from", str(a.init_from), "--batch", str(a.batch), "--r1-gamma", str(a.r1_gamma),
               "--seed", str(a.seed), "--fid-samples", str(fid), "--n-train", str(a.n_train),
               "--precision", a.precision]  # fmt: skip
        stylegan2.main([*common, "--minutes", str(done + a.minutes), *new])
    out.mkdir(parents=True, exist_ok=True)
    model = out / "stylegan2-cats64.safetensors"
    best = ["--best"] if (run / BEST).is_file() else []
    n_stats = [
        "--wstats-samples",
        str(a.wstats_samples),
        "--mean-w-samples",
        str(min(a.wstats_samples, 10_000)),
    ]
    stylegan2.main(["export", "--run", str(run), "--out", str(model), *n_stats, *best])
    shutil.copy(run / PROGRESS, out / PROGRESS)
    grids = sorted(run.glob("fakes-*.png"))
    if grids:
        shutil.copy(grids[-1], out / grids[-1].name)
    split_file(run / CHECKPOINT, out)
    log.info("stint done: %s", sorted(p.name for p in out.iterdir()))
    return model


def _has_open_clip() -> bool:
    try:
        import open_clip  # noqa: F401
    except ImportError:
        log.warning("open_clip is not importable here: no learning-curve FID in this stint")
        return False
    return True


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    if argv[:1] == ["join"]:
        p = argparse.ArgumentParser(prog="python -m core.training.gpu_stint join")
        p.add_argument("--parts", required=True, help="folder with checkpoint.part0 ..")
        p.add_argument("--out", required=True, help="checkpoint.pt to write (in the run folder)")
        a = p.parse_args(argv[1:])
        print(join_parts(a.parts, a.out))
        return
    p = argparse.ArgumentParser(
        prog="python -m core.training.gpu_stint", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", required=True, help="folder for what comes back (the device tool's $OUT)")
    p.add_argument("--minutes", type=float, default=9.0, help="training time of this stint")
    p.add_argument("--checkpoint-minutes", type=float, default=2.0)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=64, help="images per iteration on the GPU")
    p.add_argument(
        "--precision",
        default="fp32",
        help="fp32, bf16 or auto; bf16 trained worse per minute on a CPU (docs/training.md)",
    )
    p.add_argument("--resume-parts", help="a folder with checkpoint.part0 ..: continue that run")
    p.add_argument("--init-from", default=str(DEFAULT_INIT), help="exported generator of a new run")
    p.add_argument("--r1-gamma", type=float, default=8.0, help="a new run's R1 weight (stint 4's)")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--n-train", type=int, default=20_000, help="a new run's procedural training images")
    p.add_argument("--fid-samples", type=int, default=2000)
    p.add_argument("--scratch", default="/tmp/lc-gpu-stint", help="the run folder while training")
    p.add_argument("--cache-dir", default="/tmp/lc-cache", help="the rendered training set")
    p.add_argument("--wstats-samples", type=int, default=50_000, help="W statistics of the export")
    run_stint(p.parse_args(argv))


if __name__ == "__main__":
    main()
