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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the suite runs (CI)")
    ap.add_argument("--model", type=Path, help="generator (default: the bundled one)")
    ap.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    ap.add_argument(
        "--only", nargs="*", help="sections: invert, options, app, start, scaling, prior, sdedit, train"
    )
    a = ap.parse_args(argv)
    from core.models.io import load_generator, save_generator
    from core.paths import DEFAULT_GENERATOR, bundled_model

    if a.quick:
        from core.gan.stylegan2 import StyleGAN2Generator

        torch.manual_seed(0)
        G = StyleGAN2Generator(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16)
        model = save_generator(G.eval(), Path(tempfile.mkdtemp()) / "tiny.safetensors")
    else:
        model = a.model or bundled_model(DEFAULT_GENERATOR)
    G = load_generator(model)
    sections = set(a.only or ["invert", "options", "app", "start", "scaling", "prior", "sdedit", "train"])
    out = [
        f"## Benchmarks, {dt.date.today().isoformat()}",
        "",
        f"Machine: {machine()}",
        f"Model: {model.name}",
        "",
    ]

    def emit(table) -> None:
        text = table.markdown()
        print(text, flush=True)
        out.append(text)
        if a.out:  # after every table: a section that fails later loses nothing already measured
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text("\n".join(out))

    print("\n".join(out), flush=True)
    if "invert" in sections:
        batches = (1, 2) if a.quick else (1, 8)
        emit(invert_speed.run(G, steps=3 if a.quick else 30, batches=batches, repeats=1 if a.quick else 3))
    if "options" in sections:
        from bench import options

        emit(options.run(G, quick=a.quick))
    if "app" in sections:  # each in a fresh process whose GUI thread never ran torch, as the app's
        emit(app_speed.in_child("worker_jobs", model, steps=5 if a.quick else 200))
        if not a.quick:  # the app's default loss: L1 x10 + the bundled perceptual loss x0.01
            emit(app_speed.in_child("worker_jobs", model, steps=200, perceptual_weight=0.01))
        emit(app_speed.in_child("window_stalls", model, steps=5 if a.quick else 200))
    if "start" in sections:
        emit(app_speed.cold_start(model))
        if not a.quick:
            emit(app_speed.all_models_rss())
    if "scaling" in sections:
        quick = dict(
            resolutions=(16, 32), batches=(1, 2), steps=2, cfg=dict(channel_base=128, channel_max=16)
        )
        emit(scaling.run(**quick) if a.quick else scaling.run(cfg=_bundled_widths(G)))
    if "prior" in sections:
        from bench import prior_speed

        emit(prior_speed.run(quick=a.quick))
    if "sdedit" in sections:
        from bench import sdedit_speed

        emit(sdedit_speed.run(quick=a.quick))
    if "train" in sections:
        from bench import train_speed

        emit(train_speed.run(quick=a.quick))
    return 0


def _bundled_widths(G) -> dict:
    cfg = G.config_dict()
    keys = ("z_dim", "w_dim", "channel_base", "channel_max", "mapping_layers")
    return {k: cfg[k] for k in keys if k in cfg}


if __name__ == "__main__":
    sys.exit(main())
