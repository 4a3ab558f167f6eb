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

With ``--prior-minutes``, ``--encoder-minutes`` and ``--refiner-minutes`` the same call then retrains
what reads the generator, on the new one, while the GPU is at hand (on the project's 2-core CPUs these
took 2 hours): the W- and S-space diffusion priors, the encoder (fine-tuned from the bundled one) and
its ReStyle refiner. Each stage that fails is logged and the next goes on; what already came out stays.
Those files together pass the device tool's limits, so ``--pack`` ships each stage as one tar, in parts
of at most 15 MiB (``gan.tar``, ``priors.part0`` ..), and ``unpack --from DIR --to DIR`` opens them here.

Back on the CPU machine: ``python -m core.training.gpu_stint join --parts DIR --out RUN/checkpoint.pt``
rebuilds the checkpoint, so the run continues there (``python -m core.training.stylegan2 --out RUN
--resume ...``) with nothing lost. Training settings other than the batch stay the run's own.

Which way a checkpoint can travel: back from the GPU, yes (three parts through $OUT). To the GPU, only
where the working tree leaves room for it: the device tool sends at most 64 MiB, the repository is
about 92 MB (most of it the bundled models), a full checkpoint 32 MB: leave the models the call does
not read out of the tree for it (DEVELOPERS.md). A stint from the bundled export starts with a fresh
discriminator, and that is not cheap: on an H200 (2026-12-04, ~590 images/s) the fresh D sat at chance
for ~80 kimg while G drifted (FID 7.3 -> 16.7), and 141 kimg later it was still above its start
(docs/training.md). Give such a stint the whole call, and bring its checkpoint back to resume from.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

from core.training.common import BEST, CHECKPOINT, PROGRESS, setup_logging

log = logging.getLogger("latent_canvas.training")

PART_BYTES = 15 * 2**20  # under the device tool's 16 MiB a file
MODELS = Path(__file__).resolve().parents[2] / "resources" / "models"
DEFAULT_INIT = MODELS / "stylegan2-cats64.safetensors"
DEFAULT_ENCODER = MODELS / "stylegan2-cats64.encoder.safetensors"


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
    """Train the GAN stint, export it, ship it to ``--out``; then the dependent stages, if asked."""
    out, run = Path(a.out), _fresh(Path(a.scratch))
    run.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    _train_gan(a, run)
    models = Path(a.cache_dir).parent / "models"  # the exports, where the dependent stages read them
    models.mkdir(parents=True, exist_ok=True)
    try:
        model = _export_gan(a, run, models)
    except Exception:  # the training is not lost with the export: ship its checkpoints to export here
        log.exception("export failed; shipping the checkpoints instead (join them, then export here)")
        for name in (CHECKPOINT, BEST):
            if (run / name).is_file():
                split_file(run / name, out)
        raise
    from core.prior.wstats import wstats_path_for

    grids = sorted(run.glob("fakes-*.png"))
    shipped = [model, model.with_suffix(".json"), wstats_path_for(model), run / PROGRESS]
    _ship(a, out, "gan", shipped + grids[-1:])
    if a.checkpoint_parts:
        split_file(run / CHECKPOINT, out)
    for stage, minutes in (("priors", a.prior_minutes), ("encoder", a.encoder_minutes)):
        if minutes > 0:
            try:
                _ship(a, out, stage, STAGES[stage](a, model, models))
            except Exception:  # one failed stage loses neither the GAN nor the other stage
                log.exception("stage %s failed; going on", stage)
    log.info("stint done: %s", sorted(p.name for p in out.iterdir()))
    return model


def _train_gan(a: argparse.Namespace, run: Path) -> None:
    from core.training import stylegan2

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
        return
    from core.training.common import procedural_bank

    # rendered once here with every core, then read from the cache by the GAN and the encoder
    procedural_bank(a.n_train, seed=0, resolution=64, cache_dir=a.cache_dir, workers=os.cpu_count() or 1)
    fid = a.fid_samples if _has_open_clip() else 0
    card = Path(a.init_from).with_suffix(".json")  # --init-from counts the export's minutes as done
    done = json.loads(card.read_text()).get("training", {}).get("minutes", 0.0) if card.is_file() else 0.0
    new = ["--init-from", str(a.init_from), "--batch", str(a.batch), "--r1-gamma", str(a.r1_gamma),
           "--seed", str(a.seed), "--fid-samples", str(fid), "--n-train", str(a.n_train),
           "--precision", a.precision, "--d-warmup-kimg", str(a.d_warmup_kimg)]  # fmt: skip
    stylegan2.main([*common, "--minutes", str(done + a.minutes), *new])


def _export_gan(a: argparse.Namespace, run: Path, models: Path) -> Path:
    from core.training import stylegan2

    model = models / "stylegan2-cats64.safetensors"
    best = ["--best"] if (run / BEST).is_file() else []
    n_stats = ["--wstats-samples", str(a.wstats_samples),
               "--mean-w-samples", str(min(a.wstats_samples, 10_000))]  # fmt: skip
    stylegan2.main(["export", "--run", str(run), "--out", str(model), *n_stats, *best])
    return model


def _train_priors(a: argparse.Namespace, model: Path, models: Path) -> list[Path]:
    """The W- and S-space diffusion priors of the new generator, from scratch, exported with their
    cards' numbers (2048 latents, KID of 500 images), as DEVELOPERS.md's chain does on a CPU."""
    from core.training import wdiffusion

    shipped = []
    for name, space in (("wdiffusion", "w"), ("sdiffusion", "s")):
        run = _fresh(Path(a.cache_dir).parent / name)
        wdiffusion.main(["--generator", str(model), "--out", str(run), "--minutes", str(a.prior_minutes),
                         "--space", space, "--device", a.device])  # fmt: skip
        target = models / f"{name}-cats64.safetensors"
        wdiffusion.main(["export", "--run", str(run), "--out", str(target), "--eval-latents", "2048",
                         "--eval-images", "500"])  # fmt: skip
        shipped += [target, target.with_suffix(".json")]
    return shipped


def _train_encoder(a: argparse.Namespace, model: Path, models: Path) -> list[Path]:
    """The encoder fine-tuned from ``--encoder-init`` on the new generator, then (``--refiner-minutes``)
    a ReStyle refiner trained on top of it, as DEVELOPERS.md's chain does on a CPU."""
    from core.training import encoder

    target = models / "stylegan2-cats64.encoder.safetensors"
    base = Path(a.cache_dir).parent  # the runs' .cache is the GAN's: the training cats render once
    common = ["--generator", str(model), "--latent-kimg", "0", "--device", a.device,
              "--batch", str(a.encoder_batch)]  # fmt: skip
    run = _fresh(base / "encoder")
    encoder.main([*common, "--out", str(run), "--minutes", str(a.encoder_minutes),
                  "--init-from", str(a.encoder_init)])  # fmt: skip
    encoder.main(["export", "--run", str(run), "--out", str(target)])
    if a.refiner_minutes > 0:
        _ship(a, Path(a.out), "encoder", [target, target.with_suffix(".json")])  # kept if the refiner fails
        run = _fresh(base / "refiner")
        encoder.main([*common, "--out", str(run), "--minutes", str(a.refiner_minutes),
                      "--init-from", str(target), "--refine-steps", "3", "--p-whole", "0.4",
                      "--p-holes", "0.3"])  # fmt: skip
        encoder.main(["export", "--run", str(run), "--out", str(target)])
    return [target, target.with_suffix(".json")]


STAGES = {"priors": _train_priors, "encoder": _train_encoder}


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


def _ship(a: argparse.Namespace, out: Path, stage: str, files: Sequence[Path]) -> None:
    """``files`` into ``out`` as they are, or (``--pack``) as ``<stage>.tar``, split into
    ``<stage>.part0`` .. when larger than a file may be on its way back."""
    if not a.pack:
        for f in files:
            shutil.copy(f, out / f.name)
        return
    tar = out / f"{stage}.tar"
    for old in [tar, *out.glob(f"{stage}.part*")]:  # a stage shipped again replaces what it sent
        old.unlink(missing_ok=True)
    with tarfile.open(tar, "w") as t:
        for f in files:
            t.add(f, arcname=f.name)
    if tar.stat().st_size > PART_BYTES:
        split_file(tar, out, part_bytes=PART_BYTES)
        tar.unlink()
    log.info("shipped %s: %s", stage, ", ".join(f.name for f in files))


def unpack(src: str | Path, dest: str | Path) -> list[str]:
    """Open what ``--pack`` shipped: each ``<stage>.tar`` and each complete ``<stage>.part0`` .. set in
    ``src``, into ``dest``. Returns the names written. Members are plain files by name (tarfile's
    "data" filter refuses links, absolute paths and ``..``)."""
    src, dest = Path(src), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tars, joined = list(src.glob("*.tar")), []
    for part0 in src.glob("*.part0"):
        stem = part0.name.removesuffix(".part0")
        if stem not in ("checkpoint", "best"):  # raw checkpoints: `join` rebuilds those
            joined.append(join_parts(src, dest / f".{stem}.tar", stem=stem))
    names = []
    for tar in sorted(tars + joined):
        with tarfile.open(tar) as t:
            t.extractall(dest, filter="data")
            names += t.getnames()
    for tar in joined:  # the joined copies only; what was shipped stays as it came
        tar.unlink()
    return names


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
    if argv[:1] == ["unpack"]:
        p = argparse.ArgumentParser(prog="python -m core.training.gpu_stint unpack")
        p.add_argument("--from", dest="src", required=True, help="the folder the stint's files came back in")
        p.add_argument("--to", dest="dest", required=True, help="folder for the models and logs inside")
        a = p.parse_args(argv[1:])
        print("\n".join(unpack(a.src, a.dest)))
        return
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
    p.add_argument("--d-warmup-kimg", type=float, default=0.0,
                   help="a new run: its fresh D first trains alone this long (unmeasured)")  # fmt: skip
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--n-train", type=int, default=20_000, help="a new run's procedural training images")
    p.add_argument("--fid-samples", type=int, default=2000)
    p.add_argument("--scratch", default="/tmp/lc-gpu/gan", help="the run folder while training")
    p.add_argument("--cache-dir", default="/tmp/lc-gpu/.cache", help="the rendered training set; its parent "
                   "holds the exports and the dependent stages' runs")  # fmt: skip
    p.add_argument("--prior-minutes", type=float, default=0.0, help="then train each prior this long")
    p.add_argument("--encoder-minutes", type=float, default=0.0, help="then fine-tune the encoder this long")
    p.add_argument("--refiner-minutes", type=float, default=0.0, help="then train its refiner this long")
    p.add_argument("--encoder-init", default=str(DEFAULT_ENCODER), help="the encoder to fine-tune")
    p.add_argument("--encoder-batch", type=int, default=32, help="the encoder runs' batch")
    p.add_argument("--pack", action="store_true", help="ship each stage as a tar in parts of <= 15 MiB")
    p.add_argument("--checkpoint-parts", action=argparse.BooleanOptionalAction, default=True,
                   help="ship the GAN checkpoint in parts (32 MB)")  # fmt: skip
    p.add_argument("--wstats-samples", type=int, default=50_000, help="W statistics of the export")
    run_stint(p.parse_args(argv))


if __name__ == "__main__":
    main()
