"""``python -m bench``: every benchmark, side by side in one run, printed as a table (markdown).

``--quick`` is the CI smoke version (tiny sizes; checks the benchmarks still run, asserts no timing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

import torch

from bench import app_speed, invert_speed, scaling
from bench.common import machine

SECTIONS = (
    "invert",
    "options",
    "app",
    "worker",
    "batch",
    "start",
    "scaling",
    "prior",
    "sdedit",
    "train",
    "frozen",
    "encoder",
    "projector",
)


def _model(a: argparse.Namespace) -> Path:
    """The generator to measure: the bundled one, ``--model``, or with ``--quick`` a tiny new one."""
    from core.models.io import save_generator
    from core.paths import DEFAULT_GENERATOR, bundled_model

    if not a.quick:
        return a.model or bundled_model(DEFAULT_GENERATOR)
    from core.gan.stylegan2 import StyleGAN2Generator

    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16)
    return save_generator(G.eval(), Path(tempfile.mkdtemp()) / "tiny.safetensors")


def _tables(section: str, G, model: Path, quick: bool, official_repo: Path | None = None):
    """The tables of one section, each measured when the iterator reaches it."""
    if section == "invert":
        yield invert_speed.run(
            G, steps=3 if quick else 30, batches=(1, 2) if quick else (1, 8), repeats=1 if quick else 3
        )
    elif section == "options":
        from bench import options

        yield options.run(G, quick=quick)
    elif section == "app":  # each in a fresh process whose GUI thread never ran torch, as the app's
        yield app_speed.in_child("worker_jobs", model, steps=5 if quick else 200)
        if not quick:  # the app's default loss: L1 x10 + the bundled perceptual loss x0.01
            yield app_speed.in_child("worker_jobs", model, steps=200, perceptual_weight=0.01)
        yield app_speed.in_child("window_stalls", model, steps=5 if quick else 200)
    elif section == "worker":
        from bench import worker_speed

        yield from worker_speed.tables(model, quick=quick)
    elif section == "batch":  # Ray: the batch extra
        from bench import batch_speed

        yield batch_speed.run(quick=quick, model=model if quick else None)
    elif section == "start":
        yield app_speed.cold_start(model)
        if not quick:
            yield app_speed.all_models_rss()
    elif section == "encoder":
        from bench import encoder_speed

        yield from encoder_speed.run(quick=quick, model=None if quick else model)
    elif section == "projector":  # NVlabs' projector from a checkout, when given (else a "skipped" row)
        from bench import projector_speed

        yield projector_speed.run(official_repo, quick=quick)
    elif section == "scaling":
        tiny = dict(resolutions=(16, 32), batches=(1, 2), steps=2, cfg=dict(channel_base=128, channel_max=16))
        yield scaling.run(**tiny) if quick else scaling.run(cfg=_bundled_widths(G))
    else:  # prior, sdedit, train, frozen: modules named <section>_speed with run(quick=...)
        import importlib

        yield importlib.import_module(f"bench.{section}_speed").run(quick=quick)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the suite runs (CI)")
    ap.add_argument("--model", type=Path, help="generator (default: the bundled one)")
    ap.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    ap.add_argument("--only", nargs="*", choices=SECTIONS, help="sections (default: all)")
    ap.add_argument(
        "--official-repo", type=Path, help="a stylegan2-ada-pytorch checkout: the projector section's peer"
    )
    a = ap.parse_args(argv)
    from core.models.io import load_generator

    model = _model(a)
    G = load_generator(model)
    out = [
        f"## Benchmarks, {dt.date.today().isoformat()}",
        "",
        f"Machine: {machine()}",
        f"Model: {model.name}",
        "",
    ]
    print("\n".join(out), flush=True)
    for section in SECTIONS:
        if a.only and section not in a.only:
            continue
        for table in _tables(section, G, model, a.quick, a.official_repo):
            text = table.markdown()
            print(text, flush=True)
            out.append(text)
            if a.out:  # after every table: a section that fails later loses nothing already measured
                a.out.parent.mkdir(parents=True, exist_ok=True)
                a.out.write_text("\n".join(out))
    return 0


def _bundled_widths(G) -> dict:
    cfg = G.config_dict()
    keys = ("z_dim", "w_dim", "channel_base", "channel_max", "mapping_layers")
    return {k: cfg[k] for k in keys if k in cfg}


if __name__ == "__main__":
    sys.exit(main())
