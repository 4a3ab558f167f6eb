"""``latent-canvas-cli batch``: one command (invert, project, sdedit) over a folder of inputs, on Ray.

Each input runs exactly the single command (``latent-canvas-cli <command> <options> --image FILE
--out OUT/<name>``), so a batch result equals the single command's result on that file. Ray
schedules the items on actors, one per device (a CPU actor owns the machine's cores; a GPU actor one
GPU), and each actor keeps the models it loaded between items. A local Ray instance by default;
``--ray-address`` joins a cluster (``ray start --head`` on one machine, ``ray start --address ...`` on
the others: every node needs this package and the model files at the same paths). Resumable: an
input whose ``OUT/<name>/run.json`` exists (written last) is skipped.

Why Ray rather than a process pool: the same code scales from this machine to a cluster of GPU
nodes, with scheduling by device (``num_gpus``), retries and a dashboard, which a pool would need
rebuilt by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from core.errors import LatentCanvasError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
COMMANDS = ("invert", "project", "sdedit")


def add_parser(sub, *, cli_main, cli_parser) -> None:
    """``cli_main`` / ``cli_parser``: the CLI's own entry point and parser, which every item runs."""
    bt = sub.add_parser(
        "batch",
        help="run invert, project or sdedit on every image in a folder, on Ray",
        description=__doc__.split("\n\n")[0],
    )
    bt.add_argument("--inputs", required=True, help="folder of input images (the command's --image)")
    bt.add_argument("--out", required=True, help="folder: one run folder per input, named after it")
    bt.add_argument("--ray-address", help="a Ray cluster to join (default: start a local Ray instance)")
    bt.add_argument(
        "--devices",
        default="auto",
        help="comma-separated devices, one actor each (auto: every GPU, else cpu)",
    )
    bt.add_argument("command", choices=COMMANDS, help="the command to run on each input")
    bt.add_argument("args", nargs=argparse.REMAINDER, help="the command's options (not --image / --out)")
    bt.set_defaults(func=cmd_batch, cli_main=cli_main, cli_parser=cli_parser)


def plan(a: argparse.Namespace) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """``([(name, argv), ...] to run, [names already done])``; refuses bad options before Ray starts."""
    if any(x in ("--image", "--out") for x in a.args):
        raise LatentCanvasError("batch sets --image and --out itself; give --inputs and --out to batch")
    inputs = sorted(p for p in Path(a.inputs).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not inputs:
        raise LatentCanvasError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {a.inputs}")
    names = [p.stem for p in inputs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LatentCanvasError(f"inputs share names (the run folders would clash): {', '.join(dupes)}")
    out = Path(a.out)
    todo, done = [], []
    for p in inputs:  # inputs that failed before run again
        if (out / p.stem / "run.json").is_file():
            done.append(p.stem)
            continue
        argv = [a.command, *a.args, "--image", str(p.resolve()), "--out", str((out / p.stem).resolve())]
        a.cli_parser().parse_args(["--device", "cpu", *argv])  # a typo fails here, not on every item
        todo.append((p.stem, argv))
    return todo, done


def cmd_batch(a: argparse.Namespace) -> int:
    todo, done = plan(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(todo)} to run, {len(done)} already done (skipped)", file=sys.stderr)
    if not todo:
        return 0
    import ray

    ray.init(address=a.ray_address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        failed = _run_on_ray(ray, todo, _devices(ray, a.devices), a=a, out=out)
    finally:
        ray.shutdown()
    if failed:
        print(f"{len(failed)} inputs failed: see {out / 'batch.json'}", file=sys.stderr)
        return 1
    return 0


def _devices(ray, spec: str) -> list[str]:
    if spec != "auto":
        return [d.strip() for d in spec.split(",") if d.strip()]
    gpus = int(ray.cluster_resources().get("GPU", 0))
    return [f"cuda:{i}" for i in range(gpus)] or ["cpu"]


def _run_on_ray(ray, todo, devices: list[str], *, a: argparse.Namespace, out: Path) -> dict[str, str]:
    from core.cli.common import progress_bar

    cpus = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    n_cpu = sum(d == "cpu" for d in devices)
    actors = []
    for d in devices:
        if d == "cpu":  # a CPU actor owns its share of the cores (torch threads = its CPUs)
            share = max(1, cpus // n_cpu)
            actors.append(ray.remote(num_cpus=share)(ItemRunner).remote(a.cli_main, "cpu", share, a.verbose))
        else:  # Ray makes the one GPU it gives the actor visible as cuda:0
            actors.append(
                ray.remote(num_gpus=1, num_cpus=1)(ItemRunner).remote(a.cli_main, "cuda", 0, a.verbose)
            )
    queue, running, failed = list(todo), {}, {}
    started, finished = time.perf_counter(), 0
    for actor in actors:  # one item in flight per actor: the next goes to whichever frees first
        if queue:
            name, argv = queue.pop(0)
            running[actor.run.remote(argv)] = (actor, name)
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        actor, name = running.pop(ready[0])
        try:
            rc, message = ray.get(ready[0])
        except ray.exceptions.RayError as e:  # the actor died (OOM, segfault): the item failed
            rc, message = 1, f"worker failed: {e}"
        if rc != 0:
            failed[name] = message
        finished += 1
        progress_bar(finished, len(todo), f"{name} {'failed' if rc else 'done'}", started)
        _record(out, name, message if rc else None)
        if queue:
            name, argv = queue.pop(0)
            running[actor.run.remote(argv)] = (actor, name)
    return failed


class ItemRunner:
    """A Ray actor: runs single CLI commands in one process, keeping the models they load."""

    def __init__(self, cli_main, device: str, threads: int, verbose: bool):
        from core.cli.common import hold_models

        if threads:
            import torch

            torch.set_num_threads(threads)
        hold_models()
        self.main, self.device, self.verbose = cli_main, device, verbose

    def run(self, argv: list[str]) -> tuple[int, str]:
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = self.main(["--device", self.device, *(["-v"] if self.verbose else []), *argv])
        lines = [ln for ln in err.getvalue().replace("\r", "\n").splitlines() if ln.startswith("error")]
        return rc, (lines[-1] if lines else "") if rc else "ok"


def _state(out: Path) -> dict:
    path = out / "batch.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {}


def _record(out: Path, name: str, error: str | None) -> None:
    """batch.json: the inputs that failed and why (done ones are known by their run.json)."""
    state = _state(out)
    failed = state.setdefault("failed", {})
    if error is None:
        failed.pop(name, None)
    else:
        failed[name] = error
    tmp = out / "batch.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(out / "batch.json")
