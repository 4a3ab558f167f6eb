"""``latent-canvas-cli``: headless jobs (inversion, scribble-to-image, inpainting, interpolation,
projection with a prior, SDEdit) and the model list. Beside the library: it imports core.jobs and the
model packages, never the other way round. One module per group of commands; each imports torch only
when its command runs."""

from __future__ import annotations

import argparse
import logging
import sys

from core.compat import check_torch_version
from core.errors import LatentCanvasError

log = logging.getLogger("latent_canvas.cli")


def build_parser() -> argparse.ArgumentParser:
    from core.cli import batch, gan, projection, sd

    ap = argparse.ArgumentParser(prog="latent-canvas-cli", description=__doc__)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)
    gan.add_parsers(sub)
    projection.add_parser(sub)
    sd.register(sub)
    batch.add_parser(sub, cli_main=main, cli_parser=build_parser)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if a.command == "interpolate" and len(a.latents) < 2:
        print("error: interpolate needs at least two latent files", file=sys.stderr)
        return 2
    try:
        check_torch_version()  # torch < 2.6 cannot load model files safely
        return a.func(a)
    except LatentCanvasError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ncancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
