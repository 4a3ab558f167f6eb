"""Measure SDEdit's trade-off on the bundled model: faithfulness to the guide against adherence to the
prompt, as functions of the noise level N, the guidance scale, the sampler and its step count S.

    python -m core.evals.sd --out docs/sdedit.md          # rewrites the results section there

Guides are "painted sketches" of held-out procedural cats (area-downsampled 4x, flat colours by
k-means, nearest-upsampled: flat strokes like the seed's hand-drawn guides). Each guide's prompt is the
caption of another held-out cat with a different fur colour and background, so following the prompt
and keeping the guide pull apart. Per output image:

- L1: mean |output - guide| in [0, 1] units (faithfulness; lower = closer to the guide)
- perceptual: the perceptual distance to the guide (LPIPS-VGG when its weights are on this machine,
  else the bundled tiny-CLIP feature distance; which one is named in the output)
- CLIP(prompt): 100 x cosine(tiny-CLIP image embedding, prompt embedding) (prompt adherence)
- prompt wins: share of images whose CLIP score with the prompt beats that with the guide's own caption
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.jobs.params import SDEditParams
from core.jobs.runner import run_to_completion
from core.jobs.sdedit import sdedit

log = logging.getLogger("latent_canvas.sd.evaluate")

START, END = "<!-- sdedit-eval:start -->", "<!-- sdedit-eval:end -->"


@dataclass(frozen=True)
class Case:
    guide: np.ndarray  # [R, R, 3] uint8 sketch
    guide_caption: str
    prompt: str


def sketch(image: np.ndarray, *, colours: int = 6, block: int = 4, seed: int = 0) -> np.ndarray:
    """A flat-colour 'painted' version of ``image``: blocky strokes in ``colours`` colours."""
    from core.prior.wstats import kmeans

    r = image.shape[0]
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    small = torch.nn.functional.avg_pool2d(x, block)  # [1, 3, r/b, r/b]
    pix = small[0].flatten(1).T  # [n, 3]
    centres, labels, _ = kmeans(pix, min(colours, pix.shape[0]), seed=seed)
    flat = centres[labels].T.reshape(small.shape)
    up = torch.nn.functional.interpolate(flat, size=(r, r), mode="nearest")
    return up[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def make_cases(n: int, resolution: int) -> list[Case]:
    """``n`` held-out cats as sketches, each with the caption of a differently coloured cat as prompt."""
    from core.data import procedural as P

    attrs = [P.attributes_for_seed(P.split_seed("eval", i)) for i in range(n)]
    cases, j = [], 1000
    for a in attrs:
        while True:
            b = P.attributes_for_seed(P.split_seed("eval", j))
            j += 1
            if b.fur != a.fur and b.background != a.background:
                break
        cases.append(Case(sketch(P.render(a, resolution=resolution)), P.caption(a), P.caption(b)))
    return cases


class Scorer:
    def __init__(self, device: torch.device):
        from core.clip import load_clip
        from core.errors import LatentCanvasError
        from core.losses import make_perceptual_loss

        self.clip = load_clip(None, device=device)
        self.device = device
        for kind in ("lpips-vgg", "bundled"):
            try:
                self.perceptual, self.perceptual_kind = make_perceptual_loss(kind, device=device), kind
                break
            except LatentCanvasError as e:
                log.info("perceptual %s unavailable: %s", kind, e)

    @torch.no_grad()
    def __call__(self, images: np.ndarray, case: Case) -> dict[str, np.ndarray]:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().to(self.device) / 127.5 - 1
        g = torch.from_numpy(case.guide).permute(2, 0, 1)[None].float().to(self.device) / 127.5 - 1
        img = self.clip.encode_image(x)
        txt = self.clip.encode_text([case.prompt, case.guide_caption])
        sims = 100 * img @ txt.T  # [n, 2]
        feats = self.perceptual.prepare(g)
        return {
            "l1": ((x - g).abs().mean((1, 2, 3)) / 2).cpu().numpy(),
            "perceptual": self.perceptual(x, feats, None).cpu().numpy(),
            "clip_prompt": sims[:, 0].cpu().numpy(),
            "prompt_wins": (sims[:, 0] > sims[:, 1]).float().cpu().numpy(),
        }


def run_config(model, cases, scorer, *, samples: int, seed: int, **kw) -> dict[str, float]:
    """Mean metrics over every case x sample for one SDEdit setting."""
    per, seconds, steps = [], 0.0, 0
    for i, case in enumerate(cases):
        p = SDEditParams(
            guide=case.guide, prompt=case.prompt, num_samples=samples, seed=seed + i, preview="none", **kw
        )
        res = run_to_completion(sdedit(p, model))
        per.append(scorer(res.images, case))
        seconds += res.seconds
        steps = res.executed_steps
    out = {k: float(np.mean(np.concatenate([m[k] for m in per]))) for k in per[0]}
    return out | {"steps": steps, "s_per_image": seconds / (len(cases) * samples)}


def reference_rows(cases, scorer, resolution: int) -> dict[str, dict[str, float]]:
    """The guides themselves, and the prompts' own cats: the two ends of the trade-off."""
    from core.data import procedural as P

    rows = {"guide itself": [], "prompt's own cat (rendered)": []}
    for case in cases:
        rows["guide itself"].append(scorer(case.guide[None], case))
    j = 1000
    for case in cases:  # re-find each prompt's cat
        while True:
            b = P.attributes_for_seed(P.split_seed("eval", j))
            j += 1
            if P.caption(b) == case.prompt:
                break
        rows["prompt's own cat (rendered)"].append(scorer(P.render(b, resolution=resolution)[None], case))
    return {
        name: {k: float(np.mean([m[k] for m in ms])) for k in ms[0]} | {"steps": 0, "s_per_image": 0.0}
        for name, ms in rows.items()
    }


# --- the tables -------------------------------------------------------------------------------------------

GRID_N = (300, 500, 600, 700, 900)
GRID_W = (1.0, 5.0, 15.0, 50.0)
DDPM_N = (500, 600, 700)
DDPM_W = (5.0, 15.0, 50.0)
SAMPLERS = (
    ("ddpm", 50),
    ("ddpm", 100),
    ("ddpm", 250),
    ("ddpm", 1000),
    ("ddim", 10),
    ("ddim", 20),
    ("ddim", 50),
)


def evaluate(model, *, guides: int, samples: int, seed: int, full: bool) -> dict:
    cases = make_cases(guides, model.native_size)
    scorer = Scorer(model.device)
    res: dict = {
        "refs": reference_rows(cases, scorer, model.native_size),
        "grid": {},
        "ddpm": {},
        "samplers": {},
    }
    res["perceptual_kind"] = scorer.perceptual_kind
    go = lambda **kw: run_config(model, cases, scorer, samples=samples, seed=seed, **kw)  # noqa: E731
    for n in GRID_N:
        for w in GRID_W:
            res["grid"][f"{n},{w:g}"] = go(start_step=n, guidance_scale=w, sampler="ddim", steps=50)
            log.info("ddim N=%d w=%g: %s", n, w, res["grid"][f"{n},{w:g}"])
    for n in DDPM_N:
        for w in DDPM_W:
            res["ddpm"][f"{n},{w:g}"] = go(start_step=n, guidance_scale=w, sampler="ddpm", steps=100)
            log.info("ddpm N=%d w=%g: %s", n, w, res["ddpm"][f"{n},{w:g}"])
    for sampler, s in SAMPLERS:
        if s == 1000 and not full:
            continue
        res["samplers"][f"{sampler},{s}"] = go(start_step=500, guidance_scale=15.0, sampler=sampler, steps=s)
        log.info("%s S=%d: %s", sampler, s, res["samplers"][f"{sampler},{s}"])
    res["inpainting"] = inpainting(model, cases, samples=samples, seed=seed)
    return res


def inpainting(model, cases, *, samples: int, seed: int) -> dict[str, dict[str, float]]:
    """Regenerate the top half (the background above the head); L1 outside / inside the mask."""
    r = model.native_size
    mask = np.zeros((r, r), np.float32)
    mask[: r // 2] = 1
    out = {}
    for n in (500, 700, 900):
        inside, outside = [], []
        for i, case in enumerate(cases):
            p = SDEditParams(
                guide=case.guide,
                prompt=case.prompt,
                mask=mask,
                start_step=n,
                guidance_scale=5.0,
                steps=50,
                num_samples=samples,
                seed=seed + i,
                mask_feather=0.0,
                paste_back=False,
                preview="none",
            )
            imgs = run_to_completion(sdedit(p, model)).images.astype(np.float32)
            diff = np.abs(imgs - case.guide.astype(np.float32)) / 255
            inside.append(diff[:, : r // 2].mean())
            outside.append(diff[:, r // 2 :].mean())
        out[str(n)] = {"l1_inside": float(np.mean(inside)), "l1_outside": float(np.mean(outside))}
    return out


GRID_COLUMNS = (
    *(
        {"start_step": n, "guidance_scale": 15.0, "sampler": "ddpm", "steps": 100}
        for n in (300, 500, 700, 900)
    ),
    *({"start_step": 600, "guidance_scale": w, "sampler": "ddpm", "steps": 100} for w in (1.0, 5.0, 50.0)),
    *({"start_step": 500, "guidance_scale": 5.0, "sampler": "ddim", "steps": s} for s in (10, 20, 50)),
)


def picture(model, path: Path, *, cases: int = 3, scale: int = 3) -> Path:
    """A contact sheet: per row a guide, then DDPM (S = 100, w = 15) at N = 300, 500, 700, 900; DDPM at
    N = 600 with w = 1, 5, 50; DDIM (N = 500, w = 5) with S = 10, 20, 50. Seed 0 throughout."""
    from PIL import Image

    rows = []
    for case in make_cases(cases, model.native_size):
        row = [case.guide]
        for kw in GRID_COLUMNS:
            p = SDEditParams(guide=case.guide, prompt=case.prompt, preview="none", **kw)
            row.append(run_to_completion(sdedit(p, model)).image)
        rows.append(np.concatenate(row, 1))
    sheet = np.concatenate(rows, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).resize((sheet.shape[1] * scale, sheet.shape[0] * scale), Image.NEAREST).save(path)
    return path


def markdown(res: dict, meta: dict) -> str:
    pk = "LPIPS-VGG" if res["perceptual_kind"] == "lpips-vgg" else "tiny-CLIP feature distance"
    lines = [
        START,
        f"Measured by `{meta['command']}` on {meta['device']} ({meta['when']}, {meta['minutes']:.0f} min): "
        f"model `{meta['model']}`, {meta['guides']} guides x {meta['samples']} samples per cell. "
        f"Perceptual distance: {pk}. Each cell: L1 to guide / CLIP(prompt) / prompt wins.",
        "",
        "**References.**",
        "",
        "| image | L1 to guide | perceptual | CLIP(prompt) | prompt wins |",
        "|---|---|---|---|---|",
    ]
    for name, m in res["refs"].items():
        cells = (
            f"{m['l1']:.3f}",
            f"{m['perceptual']:.3f}",
            f"{m['clip_prompt']:.1f}",
            f"{m['prompt_wins']:.2f}",
        )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "**N and guidance, DDIM S = 50** (int(50 N / 1000) steps run).", ""]
    lines += _grid(res["grid"], GRID_N, GRID_W)
    lines += ["", "**N and guidance, DDPM S = 100** (ancestral, stride 10).", ""]
    lines += _grid(res["ddpm"], DDPM_N, DDPM_W)
    lines += [
        "",
        "**Samplers at N = 500, guidance 15** (DDPM S = 1000 is the seed's full ancestral sampler).",
        "",
        "| sampler | S | steps run | L1 to guide | perceptual | CLIP(prompt) | prompt wins | s / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, m in res["samplers"].items():
        sampler, s = key.split(",")
        lines.append(
            f"| {sampler.upper()} | {s} | {m['steps']} | {m['l1']:.3f} | {m['perceptual']:.3f} | "
            f"{m['clip_prompt']:.1f} | {m['prompt_wins']:.2f} | {m['s_per_image']:.2f} |"
        )
    lines += [
        "",
        "**Local inpainting** (top half regenerated, no feather, no paste-back; DDIM S = 50, guidance 5).",
        "",
        "| N | L1 inside mask | L1 outside mask |",
        "|---|---|---|",
    ]
    for n, m in res["inpainting"].items():
        lines.append(f"| {n} | {m['l1_inside']:.3f} | {m['l1_outside']:.4f} |")
    return "\n".join(lines + [END])


def _grid(cells: dict, ns: Sequence[int], ws: Sequence[float]) -> list[str]:
    head = "| N \\ guidance | " + " | ".join(f"{w:g}" for w in ws) + " |"
    rows = [head, "|---" * (len(ws) + 1) + "|"]
    for n in ns:
        vals = [cells[f"{n},{w:g}"] for w in ws]
        rows.append(
            f"| {n} | "
            + " | ".join(f"{m['l1']:.3f} / {m['clip_prompt']:.1f} / {m['prompt_wins']:.2f}" for m in vals)
            + " |"
        )
    return rows


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.is_file() else f"# SDEdit\n\n{START}\n{END}\n"
    if START not in text:
        text += f"\n{START}\n{END}\n"
    text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    from core.sd.model import load_sd_model

    ap = argparse.ArgumentParser(prog="python -m core.evals.sd", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="default: the bundled model")
    ap.add_argument("--guides", type=int, default=4)
    ap.add_argument("--samples", type=int, default=4, help="images per guide and setting")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-full-ddpm", action="store_true", help="skip DDPM with S = 1000 (the slowest row)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--out", default="docs/sdedit.md", help="markdown file whose results section is rewritten"
    )
    ap.add_argument("--json", default="runs/sdedit-eval.json", help="raw numbers")
    ap.add_argument("--picture", default="runs/sdedit-grid.png", help="contact sheet of example edits")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(a.threads)
    started = time.time()
    model = load_sd_model(a.model, device=a.device)
    res = evaluate(model, guides=a.guides, samples=a.samples, seed=a.seed, full=not a.no_full_ddpm)
    picture(model, Path(a.picture))
    meta = {
        "command": " ".join(["python -m core.evals.sd", *(sys.argv[1:] if argv is None else argv)]),
        "device": f"{model.device} ({a.threads} thread{'s' if a.threads > 1 else ''})",
        "when": time.strftime("%Y-%m-%d"),
        "minutes": (time.time() - started) / 60,
        "model": Path(model.source).name,
        "guides": a.guides,
        "samples": a.samples,
    }
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"meta": meta, **res}, indent=1))
    write_section(Path(a.out), markdown(res, meta))
    log.info("wrote %s and %s", a.out, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
