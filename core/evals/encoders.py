"""The encoder against optimisation from the mean, side by side in one run, and what it looks like.

    python -m core.evals encoders --write-card

measures on the inversion card's 8 held-out cats (eval split 100..107, the app's losses L1 x10 + bundled
perceptual x0.01, Adam lr 0.05): mean init + 500 steps (w+ and w), the encoder alone (one pass), and
encoder init + 50 / 500 steps, with the PSNR after every step, so the time each start needs to reach
the mean-init 500-step quality is read off the same runs. Also: the encoder's one-pass time and a live
frame (encoder + synthesis) at batch 1. It writes the numbers into the encoder's card, a strip of
live frames during a stroke (``docs/images/encoder-live-strip.png``) and ``docs/encoders.md`` (which
also quotes the encoder rows of the generator card's scribble sweep: ``python -m core.evals
scribble-sweep --only ...``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

log = logging.getLogger(__name__)
CARD_STEPS = 500  # the generator card's inversion budget
REFINE = 50  # the "encoder + 50 steps"
# The refinement in Style space: the encoder's w+ as styles, then Adam at this lr, compared with the
# w+ optimisation from the mean (the reference). 0.2 was the best of 0.05 / 0.1 / 0.2 / 0.4
# after 50 steps on eval cats 200..207 (25.79 / 26.16 / 26.21 / 25.80 dB), not the card's 100..107.
S_REFINE_LR = 0.2
LR = 0.05  # Adam's lr everywhere else: the app's default, and every mean-init run


class Row(NamedTuple):
    """A row of the table: an encoder run (space, Adam's lr and its ramp-up, ReStyle refinements of
    the start) and the space of the mean-init run (lr LR, no ramp-up) it is held to."""

    space: str
    lr: float
    rampup: int
    baseline: str
    refine: int = 0

    def run(self) -> tuple:
        return (self.space, "encoder", self.lr, self.rampup, self.refine)

    def baseline_run(self) -> tuple:
        return (self.baseline, "mean", LR, 0, 0)


# w+ and w each against their own mean-init run; Style space (at the app's first lr, and at
# S_REFINE_LR) against w+.
BASE_ROWS = (
    Row("w+", LR, 0, "w+"),
    Row("w", LR, 0, "w"),
    Row("s", LR, 0, "w+"),
    Row("s", S_REFINE_LR, 0, "w+"),
)


def table_rows(default: Row | None = None) -> tuple[Row, ...]:
    """BASE_ROWS, then the app's default (``default``: its space, lr, ramp-up and refinements, held
    to w+) where it is not one of them, and with refinements the w+ row from the refined start too."""
    rows = list(BASE_ROWS)
    if default is not None and default not in rows:
        if default.refine:
            rows.append(Row("w+", LR, 0, "w+", default.refine))
        rows.append(default)
    return tuple(rows)


def table_runs(rows: tuple[Row, ...]) -> tuple:
    """The runs the rows need (space, init, lr, ramp-up, refinements), each baseline run just before
    the first row that needs it."""
    return tuple(dict.fromkeys(run for row in rows for run in (row.baseline_run(), row.run())))


def _curve(G, targets: np.ndarray, *, space: str, init: str, steps: int, perceptual, encoder,
           lr: float = LR, rampup: int = 0, refine: int = 0) -> dict:  # fmt: skip
    """One invert job over ``targets`` with a preview every step: mean PSNR after each number of
    updates (index 0 = the start) and the wall time at which each was reached."""
    from core.evals.inversion_quality import psnr
    from core.jobs.invert import invert
    from core.jobs.params import InvertParams
    from core.jobs.runner import run_to_completion

    p = InvertParams(target=targets, space=space, init=init, steps=steps, num_samples=len(targets),
                     preview_every=1, perceptual_weight=0.01, lr=lr, lr_rampup=rampup,
                     encoder_refine=refine)  # fmt: skip
    curve, times = [], []
    t0 = time.perf_counter()

    def on(ev) -> None:  # the preview of step k shows the latent after k - 1 updates
        times.append(time.perf_counter() - t0)
        curve.append(float(psnr(ev.preview, targets).mean()))

    result = run_to_completion(invert(p, G, perceptual_loss=perceptual, encoder=encoder), on)
    times.append(time.perf_counter() - t0)
    final = psnr(result.images, targets)
    curve.append(float(final.mean()))
    return {"psnr": curve, "seconds": times, "per_image": [round(float(x), 3) for x in final],
            "images": result.images}  # fmt: skip


def _ms(fn, repeats: int = 30) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


@torch.inference_mode()
def pass_times(G, encoder) -> dict[str, float]:
    """Median ms at batch 1: the encoder's pass, synthesis, and a live frame (both)."""
    x, m = torch.rand(1, 3, G.resolution, G.resolution) * 2 - 1, torch.ones(1, 1, G.resolution, G.resolution)
    ws = encoder(x, m)
    enc = _ms(lambda: encoder(x, m))
    syn = _ms(lambda: G.synthesis(ws))
    frame = _ms(lambda: G.synthesis(encoder(x, m)))
    return {"encoder_ms": round(enc, 2), "synthesis_ms": round(syn, 2), "frame_ms": round(frame, 2),
            "frames_per_s": round(1000 / frame, 1), "threads": torch.get_num_threads()}  # fmt: skip


def app_default_row(encoder) -> Row:
    """The app's plain inversion with this encoder as a row (its space, lr, ramp-up and refinements,
    these capped at the encoder's), held to the w+ mean init."""
    from core.jobs.params import mode_defaults

    d = mode_defaults("invert", has_encoder=True)
    refine = min(d.get("encoder_refine", 0), encoder.cfg.refine_steps)
    return Row(d["space"], d.get("lr", LR), d.get("lr_rampup", 0), "w+", refine)


@torch.inference_mode()
def refine_answers(G, encoder, *, n: int = 8) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The held-out cats and the encoder's answers for them (no optimisation) after 0, 1, ...
    refine_steps ReStyle refinements, as images."""
    from core.evals.inversion_quality import held_out_images
    from core.imaging import to_uint8

    targets = held_out_images(n)
    x = torch.from_numpy(targets).permute(0, 3, 1, 2).float() / 127.5 - 1
    answers = {k: to_uint8(G.synthesis(encoder.encode(x, None, G.synthesis, k)))
               for k in range(encoder.cfg.refine_steps + 1)}  # fmt: skip
    return targets, answers


@torch.inference_mode()
def refine_curve(G, encoder, targets: np.ndarray, answers: dict[int, np.ndarray]) -> list[dict]:
    """Of :func:`refine_answers`: the mean PSNR after each number of refinements, and the median ms of
    the answer at batch 1 (each refinement renders the current answer)."""
    from core.evals.inversion_quality import psnr

    x = torch.from_numpy(targets[:1]).permute(0, 3, 1, 2).float() / 127.5 - 1
    return [
        {"refinements": k, "psnr": round(float(psnr(images, targets).mean()), 3),
         "ms": round(_ms(lambda k=k: encoder.encode(x, None, G.synthesis, k), repeats=15), 2)}
        for k, images in answers.items()
    ]  # fmt: skip


def inversion_rows(G, encoder, perceptual, *, n: int = 8, steps: int = CARD_STEPS) -> dict:
    """Mean-init and encoder-init runs side by side; the times to reach the mean-init quality."""
    from core.evals.inversion_quality import held_out_images

    targets = held_out_images(n)
    rows = table_rows(app_default_row(encoder))
    runs = {}
    for run in table_runs(rows):
        space, init, lr, rampup, k = run
        runs[run] = r = _curve(
            G, targets, space=space, init=init, steps=steps, perceptual=perceptual, encoder=encoder, lr=lr,
            rampup=rampup, refine=k,
        )  # fmt: skip
        log.info("%s: start %.2f, %d steps %.2f dB (%.0f s)", run, r["psnr"][0], steps, r["psnr"][-1],
                 r["seconds"][-1])  # fmt: skip
    default = app_default_row(encoder)
    out = [_row(runs[row.baseline_run()], runs[row.run()], row, steps) | {"app_default": row == default}
           for row in rows]  # fmt: skip
    images = {_run_name(run): r["images"] for run, r in runs.items()}
    return {"rows": out, "targets": targets, "images": images}


def _run_name(run: tuple) -> str:
    space, init, lr, rampup, k = run
    name = f"{space} {init} init, lr {lr}"
    return name + (f" (ramp-up {rampup})" if rampup else "") + (f", {k} refinements" if k else "")


def _row(mean: dict, enc: dict, row: Row, steps: int) -> dict:
    goal = mean["psnr"][-1]
    reach = next((i for i, v in enumerate(enc["psnr"]) if v >= goal), None)
    return {
        "space": row.space, "mean_init_space": row.baseline, "lr": row.lr, "lr_rampup": row.rampup,
        "refine": row.refine,
        "mean_init": {"steps": steps, "psnr": round(goal, 3), "seconds": round(mean["seconds"][-1], 2),
                      "psnr_per_image": mean["per_image"]},
        "encoder_alone": round(enc["psnr"][0], 3),
        f"encoder_plus_{REFINE}": round(enc["psnr"][REFINE], 3),
        "encoder_plus_steps": {"steps": steps, "psnr": round(enc["psnr"][-1], 3),
                               "psnr_per_image": enc["per_image"]},
        "steps_to_mean_init_quality": reach,
        "seconds_to_mean_init_quality": None if reach is None else round(enc["seconds"][reach], 2),
        "speedup_to_mean_init_quality": None if reach is None else round(mean["seconds"][-1]
                                                                         / enc["seconds"][reach], 1),
    }  # fmt: skip


def live_strip(G, encoder, out: Path, *, index: int = 3, frames: int = 8) -> Path:
    """Frames of a stroke-by-stroke scribble: the paint so far (top) and the encoder's one-pass result
    for it (below), then the refinement that follows the stroke's end (last column)."""
    from PIL import Image

    from core.evals.inversion_quality import held_out_images, make_scribble
    from core.imaging import to_uint8
    from core.jobs.invert import invert, scribble_params
    from core.jobs.runner import run_to_completion

    cat = held_out_images(index + 1, start=200)[index]
    full = make_scribble(cat, strokes=24, radius=3, seed=7)
    # Reveal the scribble in growing rings of stroke pixels, as a person's hand adds them.
    painted = np.argwhere(full[..., 3] > 0)
    order = np.argsort(painted[:, 1] * 0.6 + painted[:, 0])  # roughly top-left to bottom-right
    tiles_top, tiles_bottom = [], []
    for f in range(1, frames + 1):
        rgba = np.zeros_like(full)
        keep = painted[order[: len(order) * f // frames]]
        rgba[keep[:, 0], keep[:, 1]] = full[keep[:, 0], keep[:, 1]]
        r = run_to_completion(invert(scribble_params(rgba, init="encoder", steps=0, perceptual_weight=0),
                                     G, encoder=encoder))  # fmt: skip
        shown = np.where(rgba[..., 3:] > 0, rgba[..., :3], 200).astype(np.uint8)
        tiles_top.append(shown)
        tiles_bottom.append(r.images[0])
    # the app's refinement when the stroke ends: the scribble mode's encoder defaults (no perceptual net here)
    from core.jobs.params import mode_defaults

    settings = {**mode_defaults("scribble", has_encoder=True), "perceptual_weight": 0.0}
    refined = run_to_completion(invert(scribble_params(full, **settings), G, encoder=encoder))
    tiles_top.append(cat)
    tiles_bottom.append(refined.images[0])
    grid = np.concatenate([np.concatenate(tiles_top, 1), np.concatenate(tiles_bottom, 1)], 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(torch.from_numpy(grid).permute(2, 0, 1)[None].float() / 127.5 - 1)[0]).resize(
        (grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST
    ).save(out)
    return out


def inversion_sheet(targets: np.ndarray, images: dict[str, np.ndarray], out: Path) -> Path:
    """Rows: held-out cats, then each run's result (same order as the table)."""
    from PIL import Image

    rows = [np.concatenate(list(targets), 1)] + [np.concatenate(list(v), 1) for v in images.values()]
    grid = np.concatenate(rows, 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(out)
    return out


# --- the doc ---------------------------------------------------------------------------------------


def write_doc(out: Path, card: dict, gen_card: dict, *, command: str) -> Path:
    q = card["quality"]
    inv, speed = q["inversion"], q["speed"]
    lines = [
        "# Encoders",
        "",
        f"Made by `{command}` (numbers from the encoder card "
        f"`{card['file'].removesuffix('.safetensors')}.json`; do not edit by hand).",
        "",
        f"Encoder `{card['file']}` for `{card['generator']}` (sha256 `{card['generator_sha256'][:12]}`): "
        + _training_line(card["training"]),
        "",
    ]
    lines += _inversion_lines(inv)
    lines += [
        "",
        "![held-out cats, then each run's result](images/encoder-inversion.png)",
        "",
        "Rows: the held-out cats, then each run's result after 500 steps, in this order: "
        + "; ".join(inv.get("runs", []))
        + ".",
        "",
        _invert_default_line(),
        "",
        *_refine_lines(q.get("refine")),
        "## Speed (batch 1, median)",
        "",
        "| encoder pass | synthesis | live frame (encoder + synthesis) | frames per second | threads |",
        "|---|---|---|---|---|",
        f"| {speed['encoder_ms']} ms | {speed['synthesis_ms']} ms | {speed['frame_ms']} ms | "
        f"{speed['frames_per_s']} | {speed['threads']} |",
        "",
        "The live frame rate in the app (strokes drawn into the window, frames through the worker, GUI "
        "stalls) is measured by `python -m bench --only encoder` (docs/performance.md).",
        "",
        *_live_lines(),
    ]
    lines += _sweep_lines(gen_card, str(card.get("sha256", ""))[:12])
    out.write_text("\n".join(lines) + "\n")
    return out


def _live_lines() -> list[str]:
    """The live strip's caption, with the refinement the scribble mode runs when the stroke ends."""
    from core.jobs.params import mode_defaults

    d = mode_defaults("scribble", has_encoder=True)
    after = f"the {d['steps']}-step refinement ({d['space']}, lr {d['lr']}) that runs when the stroke ends"
    return [
        "## Live frames during a stroke",
        "",
        "![paint so far, and the encoder's frame for it; last column: the cat the paint came from, and "
        f"{after}](images/encoder-live-strip.png)",
        "",
        "Top: the paint so far (from a held-out cat, eval image 203, grey = unpainted); below: the "
        "encoder's one-pass result the app shows for it. Last column: the cat the paint was taken from, "
        f"and {after}.",
        "",
    ]


def _training_line(t: dict) -> str:
    """How the exported encoder was trained: one run, or (a ReStyle refiner) the refiner's runs on top
    of the encoder whose first pass they kept, oldest first, as far back as the cards record them."""

    def facts(e: dict) -> str:
        return f"{e.get('kimg')} kimg in {e.get('minutes')} minutes ({', '.join(e.get('devices', []))})"

    run = facts(t)
    if not t.get("train_config", {}).get("refine_steps"):
        return f"{run}. Training: `{t['commands'][0]}`."
    runs, base = [run], t.get("init_from") or {}
    while base.get("training", {}).get("refine_steps"):  # the start was a refiner run too: go back
        e = base["training"]
        runs.insert(0, facts(e))
        base = e.get("init_from") or {}
    return (
        f"its first pass is the encoder `{base.get('sha256', '?')[:12]}` (its last run: {base.get('kimg')} "
        f"kimg in {base.get('minutes')} minutes), kept frozen; its ReStyle refiner trained "
        f"{', then '.join(runs)} on top of it; the last run: `{t['commands'][0]}`."
    )


def _invert_default_line() -> str:
    from core.jobs.params import mode_defaults

    d = mode_defaults("invert", has_encoder=True)
    refine = d.get("encoder_refine", 0)
    start = f"its answer after {refine} ReStyle refinements" if refine else "its one-pass answer"
    rampup = (
        f", ramped up from a fifth of it over the first {d['lr_rampup']} steps" if d.get("lr_rampup") else ""
    )
    return (
        f"The app's plain inversion with an encoder starts from {start} and refines it in {d['space']} "
        f"with Adam at lr {d.get('lr', LR)}{rampup} (`core.jobs.params.ENCODER_DEFAULTS`, where the choice "
        "is measured)."
    )


def _refine_lines(refine: dict | None) -> list[str]:
    if not refine:
        return []
    lines = [
        "## ReStyle refinements (the encoder alone)",
        "",
        "The encoder's refiner (ReStyle, Alaluf et al. 2021) renders the current answer and corrects it "
        f"from the target beside it; {refine['images']}, PSNR in dB, time of the answer at batch 1.",
        "",
        "| refinements | PSNR | ms |",
        "|---|---|---|",
    ]
    lines += [f"| {r['refinements']} | {r['psnr']:.2f} | {r['ms']} |" for r in refine["rows"]]
    return lines + [
        "",
        "![held-out cats, then the encoder's answer after 0, 1, ... refinements]"
        "(images/encoder-refinements.png)",
        "",
        "Rows: the held-out cats, then the encoder's answer (no optimisation) after 0, 1, ... refinements.",
        "",
    ]


def _row_label(r: dict) -> str:
    space = r["space"]
    if r.get("mean_init_space", space) != space:  # refined in another space than its baseline
        rampup = f", ramp-up {r['lr_rampup']} steps" if r.get("lr_rampup") else ""
        space = f"{space} from the encoder's w+ (lr {r['lr']}{rampup}), against {r['mean_init_space']}"
    if r.get("refine"):
        space += f", after {r['refine']} ReStyle refinements"
    return space


def _inversion_lines(inv: dict) -> list[str]:
    lines = [
        "## Inversion of held-out cats",
        "",
        f"{inv['images']}; {inv['losses']}, {inv['optimizer']}. PSNR in dB (mean of the images).",
        "",
        f"| space | mean init, 500 steps | encoder alone | encoder + {REFINE} steps | encoder + 500 steps "
        "| steps (s) to the mean-init quality | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in inv["rows"]:
        m = r["mean_init"]
        steps, secs = r["steps_to_mean_init_quality"], r["seconds_to_mean_init_quality"]
        reach = "not reached" if steps is None else f"{steps} ({secs} s)"
        speedup = (
            "—" if r["speedup_to_mean_init_quality"] is None else f"{r['speedup_to_mean_init_quality']}x"
        )
        label = _row_label(r) + (" (**the app's default**)" if r.get("app_default") else "")
        lines.append(
            f"| {label} | {m['psnr']:.2f} ({m['seconds']} s) | {r['encoder_alone']:.2f} | "
            f"{r[f'encoder_plus_{REFINE}']:.2f} | {r['encoder_plus_steps']['psnr']:.2f} | {reach} "
            f"| {speedup} |"
        )
    return lines


def _sweep_lines(gen_card: dict, encoder_sha: str = "") -> list[str]:
    from core.evals.inversion_quality import SWEEP_BASE
    from core.jobs.params import MODE_DEFAULTS, mode_defaults

    sweep = gen_card.get("quality", {}).get("scribble_sweep")
    if not sweep:
        return ["## Scribbles and inpainting", "", "Not measured yet: run the scribble sweep.", ""]
    lines = _sweep_header(sweep)
    default = MODE_DEFAULTS["scribble"]
    with_encoder = mode_defaults("scribble", has_encoder=True)
    for name, r in sweep["rows"].items():
        s = r["settings"]
        is_default = (
            all(s.get(k) == v for k, v in default.items() if k in s) and s.get("init") == default["init"]
        )
        is_encoder_default = all(s.get(k, SWEEP_BASE.get(k)) == v for k, v in with_encoder.items()
                                 if k not in ("starts", "spread_weight") or k in s)  # fmt: skip
        if s.get("init") != "encoder" and not is_default and not name.startswith("before"):
            continue
        pe, ip = r["paint_error"], r["inpaint"]
        mark = (
            " (default without an encoder)"
            if is_default
            else " (**the default**)"
            if is_encoder_default
            else ""
        )
        if s.get("init") == "encoder" and r.get("encoder_sha256", "") != encoder_sha:
            mark += " †"  # measured with an earlier encoder than the bundled one
        lines.append(
            f"| {name}{mark} | {pe['sparse']:.4f} / "
            f"{pe['dense']:.4f} | {r['kid']:.3f} | {r['diversity']:.3f} | {r['seconds_per_job']} | "
            f"{ip['kept_psnr_min']:.1f} | {ip['kid']:.3f} | "
            + (f"{ip['diversity']:.3f} |" if "diversity" in ip else "— |")
        )
    lines += _stale_encoder_note(sweep, encoder_sha)
    if not any(r["settings"].get("init") == "encoder" for r in sweep["rows"].values()):
        from core.evals.inversion_quality import ENCODER_ROWS

        names = " ".join(f'"{n}"' for n in ENCODER_ROWS)
        lines += ["", "**The sweep's encoder rows have not been measured yet**: run `python -m core.evals "
                  f"scribble-sweep --k 4 --write-card --only {names}`, then this command again."]  # fmt: skip
    lines += ["", "All rows: `docs/models.md` (the same table with every setting tried).", "",
              "What the rows look like (each line: the scribble, then its 4 candidates; made by `python -m "
              "core.evals sweep-figure --rows ...` with the rows named on it):", "",
              "![five settings, three scribbles](images/scribble-settings.png)", ""]  # fmt: skip
    return lines


def _sweep_header(sweep: dict) -> list[str]:
    g = sweep["generator_samples"]
    return [
        "## Scribbles and inpainting (the generator card's scribble sweep)",
        "",
        f"8 fixed scribbles x {next(iter(sweep['rows'].values()))['candidates']} candidates; KID against "
        f"{sweep['reference']}. Generator samples: KID {g['kid']:.3f}, diversity "
        f"{g['diversity']:.3f}. Goals (scribble issue): KID within 1.5x of the samples "
        f"({1.5 * g['kid']:.3f}), paint error no worse than sparse 0.0105 / dense 0.049, diversity at "
        f"least half the samples' ({g['diversity'] / 2:.3f}).",
        *_matched_lines(sweep),
        "",
        "| setting | paint error sparse / dense | KID | diversity | s per job | inpaint kept PSNR "
        "| inpaint KID | inpaint diversity |",
        "|---|---|---|---|---|---|---|---|",
    ]


def _matched_lines(sweep: dict) -> list[str]:
    """The matched-samples reference (docs/models.md): what the KID goal should be read against."""
    m = sweep.get("matched_samples")
    if m is None:
        return []
    pe = m["paint_error"]
    return [
        "",
        f"The fair reference for a scribble result's KID: the generator's own samples that best match "
        f"each scribble's paint (best {m['k']} of {m['pool']} random samples, no optimisation) have KID "
        f"{m['kid']:.3f} ± {m['kid_std']:.3f}, paint error {pe['sparse']:.4f} / {pe['dense']:.4f} and "
        f"diversity {m['diversity']:.3f}: they are G's images, but cover only what the scribbles ask for, "
        f"as the results do. Within 1.5x of them: KID {1.5 * m['kid']:.3f}.",
    ]


def _stale_encoder_note(sweep: dict, encoder_sha: str) -> list[str]:
    """The footnote for encoder rows measured with another encoder than the bundled one (marked †)."""
    stale = [
        n
        for n, r in sweep["rows"].items()
        if r["settings"].get("init") == "encoder" and r.get("encoder_sha256") != encoder_sha
    ]
    if not stale:
        return []
    return ["", f"† measured with an earlier encoder than the bundled one (sha256 `{encoder_sha}`); "
            "not re-run since it was fine-tuned."]  # fmt: skip


# --- command ---------------------------------------------------------------------------------------


def cmd_encoders(a: argparse.Namespace) -> int:
    from core.encoder.model import encoder_path_for, load_encoder_for
    from core.evals.metrics import write_quality
    from core.losses import make_perceptual_loss
    from core.models.io import load_generator
    from core.paths import bundled_model

    gen_path = bundled_model(a.model)
    G = load_generator(gen_path)
    encoder = load_encoder_for(gen_path, G)
    card_path = encoder_path_for(gen_path).with_suffix(".json")
    if a.doc_only:  # the tables as measured; the strip shows today's refinement defaults
        live_strip(G, encoder, Path(a.docs) / "images" / "encoder-live-strip.png")
        if encoder.cfg.refine_steps:
            inversion_sheet(
                *refine_answers(G, encoder, n=a.n), Path(a.docs) / "images" / "encoder-refinements.png"
            )
        card, gen_card = (json.loads(p.read_text()) for p in (card_path, gen_path.with_suffix(".json")))
        print(
            write_doc(
                Path(a.docs) / "encoders.md", card, gen_card, command=card["quality"]["inversion"]["command"]
            )
        )
        return 0
    perceptual = make_perceptual_loss("bundled")
    speed = pass_times(G, encoder)
    print("speed:", speed)
    answers = refine_answers(G, encoder, n=a.n) if encoder.cfg.refine_steps else None
    refine = refine_curve(G, encoder, *answers) if answers else None
    print("refinements:", refine)
    table = inversion_rows(G, encoder, perceptual, n=a.n, steps=a.steps)
    for r in table["rows"]:
        print(json.dumps(r))
    if not a.write_card:
        return 0
    command = f"python -m core.evals encoders --n {a.n} --steps {a.steps} --write-card"
    images = f"procedural eval split, images 100..{99 + a.n} (held out from training)"
    inv = {
        "command": command, "images": images,
        "losses": "L1 x10 + bundled perceptual x0.01",
        "optimizer": f"adam (mean init: lr {LR}; each encoder row's lr and ramp-up as it says)",
        "rows": table["rows"], "runs": list(table["images"]),
    }  # fmt: skip
    write_quality(card_path, "inversion", inv)
    write_quality(card_path, "speed", {**speed, "command": command})
    if refine:
        write_quality(card_path, "refine", {"rows": refine, "images": images, "command": command})
    docs = Path(a.docs)
    inversion_sheet(table["targets"], table["images"], docs / "images" / "encoder-inversion.png")
    live_strip(G, encoder, docs / "images" / "encoder-live-strip.png")
    if answers:
        inversion_sheet(*answers, docs / "images" / "encoder-refinements.png")
    card = json.loads(card_path.read_text())
    gen_card = json.loads(gen_path.with_suffix(".json").read_text())
    print(write_doc(docs / "encoders.md", card, gen_card, command=command))
    return 0


def add_parsers(sub, common) -> None:
    e = sub.add_parser("encoders", parents=[common], help="encoder vs optimisation: PSNR, time, live strip")
    e.add_argument("--model", default="stylegan2-cats64.safetensors")
    e.add_argument("--n", type=int, default=8, help="held-out images")
    e.add_argument("--steps", type=int, default=CARD_STEPS)
    e.add_argument("--docs", default="docs", help="where encoders.md and its images go")
    e.add_argument("--write-card", action="store_true", help="store the tables in the encoder card + docs")
    e.add_argument("--doc-only", action="store_true", help="rewrite encoders.md and the strip from the cards")
    e.set_defaults(func=cmd_encoders)
