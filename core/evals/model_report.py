"""Render the bundled models' cards (their ``quality`` sections) as one readable page, with the seed
write-up's claims beside our numbers. Reads JSON only: no model is loaded, nothing is measured here.

    python -m core.evals.model_report --out docs/models.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from core.paths import bundled_model

SG2, DCGAN, CLIP = "stylegan2-cats64", "dcgan-cats64", "lc-tiny-clip"


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _pm(d: dict, key: str, digits: int) -> str:
    """ "mean ± std" of a {key, key_std} or {mean, std} dict."""
    mean, std = (d["mean"], d["std"]) if key == "mean" else (d[key], d[f"{key}_std"])
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _card(name: str) -> dict:
    return json.loads(bundled_model(f"{name}.safetensors").with_suffix(".json").read_text())


def _training(name: str, card: dict) -> str:
    t = card["training"]
    done = "" if t.get("finished", True) else " (stopped at its time budget)"
    return _row(
        name,
        f"{t['kimg']:.1f}",
        f"{t['minutes']:.0f}{done}",
        ", ".join(t["devices"]),
        f"`{t['commands'][0]}`",
    )


def realism_section(sg2: dict, dcgan: dict) -> list[str]:
    r, d = sg2["quality"]["realism"], dcgan["quality"]["realism"]
    base = r["real_vs_real"]
    has_swd = "swd" in base

    def swd(row: dict) -> list[str]:
        return [" / ".join(f"{v:.0f}" for v in row["swd"]) if "swd" in row else "—"] if has_swd else []

    head = [
        "images",
        "KID (± std over subsets)",
        "FID",
        *(["SWD x1e3: 64 / 32 / 16 px bands / 8 px"] if has_swd else []),
    ]
    return [
        "## Generator realism",
        "",
        f"{r['metric']}, {r['n']} generated vs {r['n']} held-out real images. Command: `{r['command']}`.",
        *(
            [
                "SWD reads pixels alone, so it checks the tiny-CLIP numbers with no network in between "
                "(a generator trained against a discriminator on that network's features can lower its FID "
                "without looking better: docs/training.md)."
            ]
            if has_swd
            else []
        ),  # fmt: skip
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        _row("real (eval) vs real (train): the floor", _pm(base, "kid", 4), f"{base['fid']:.2f}", *swd(base)),
        _row("StyleGAN2 (ours)", _pm(r["model"], "kid", 3), f"{r['model']['fid']:.1f}", *swd(r["model"])),
        _row(
            "DCGAN (the seed's vanilla GAN)",
            _pm(d["model"], "kid", 3),
            f"{d['model']['fid']:.1f}",
            *swd(d["model"]),
        ),  # fmt: skip
        "",
    ]


def inversion_section(sg2: dict, dcgan: dict) -> list[str]:
    q = sg2["quality"]["inversion"]
    rows = q["rows"] + dcgan["quality"]["inversion"]["rows"]
    seed_rows = [r for r in rows if r["space"] != "s"]  # the seed compared z, w and w+
    best = max(seed_rows, key=lambda r: r["psnr"]["mean"])
    worst_sg2 = min((r for r in q["rows"]), key=lambda r: r["psnr"]["mean"])
    style = [r for r in q["rows"] if r["space"] == "s"]
    dc_best = max(dcgan["quality"]["inversion"]["rows"], key=lambda r: r["psnr"]["mean"])
    sg2_z = max((r for r in q["rows"] if r["space"] == "z"), key=lambda r: r["psnr"]["mean"])
    lines = [
        "## Inversion of held-out images (the seed's latent-space and GAN comparison)",
        "",
        f"{q['images']}; {q['steps']} steps, {q['optimizer']}, {q['losses']}. Perceptual: {q['perceptual']}.",
        f"Command: `{q['command']}`.",
        "",
        "| generator | space | init | PSNR dB (± std) | perceptual (± std) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        name = "StyleGAN2" if r["model"].startswith("stylegan2") else "DCGAN"
        p, d = r["psnr"], r["perceptual"]
        lines.append(_row(name, r["space"], r["init"], _pm(p, "mean", 2), _pm(d, "mean", 4)))
    mean_z = next(r for r in q["rows"] if r["space"] == "z" and r["init"] == "mean")["psnr"]["mean"]
    rand_z = next(r for r in q["rows"] if r["space"] == "z" and r["init"] == "random")["psnr"]["mean"]
    lines += [
        "",
        "| seed's claim | measured here |",
        "|---|---|",
        f"| w+ gives the best reconstructions | best row: {best['space']} ({best['init']} init), "
        f"{best['psnr']['mean']:.2f} dB |",
        f"| z is the hardest space for StyleGAN | worst StyleGAN2 row: {worst_sg2['space']}, "
        f"{worst_sg2['psnr']['mean']:.2f} dB |",
        _row(
            "the vanilla GAN reconstructs much worse than StyleGAN",
            f"DCGAN {dc_best['psnr']['mean']:.2f} dB vs StyleGAN2 z {sg2_z['psnr']['mean']:.2f} dB "
            f"and w+ {best['psnr']['mean']:.2f} dB",
        ),
        _row(
            "mean init helps z; for w / w+ it matters little",
            f"z: mean {mean_z:.2f} vs random {rand_z:.2f} dB",
        ),
    ]
    if style:  # not the seed's table: its second diffusion model lives in this space
        s_best = max(style, key=lambda r: r["psnr"]["mean"])
        lines.append(
            _row(
                "(ours) Style space is more expressive than w+",
                f"s {s_best['psnr']['mean']:.2f} dB ({s_best['init']} init) vs "
                f"w+ {best['psnr']['mean']:.2f} dB",
            )
        )
    return [*lines, ""]


def scribble_section(sg2: dict) -> list[str]:
    q = sg2["quality"]["scribble"]
    rz = q["realism"]
    lines = [
        "## Scribble-to-image on the fixed scribbles (`tests/data/scribbles/`)",
        "",
        f"{q['space']}, {q['steps']} steps, {q['samples_per_scribble']} random starts per scribble. "
        f"Command: `{q['command']}`. Error: mean |result - paint| on painted pixels, in [0, 1] units.",
        "",
        "| scribble | painted | error on paint (± std) |",
        "|---|---|---|",
    ]
    for name, r in q["scribbles"].items():
        lines.append(_row(name, f"{r['painted_fraction']:.0%}", _pm(r["painted_l1"], "mean", 4)))
    lines += [
        "",
        f"Realism against {rz['reference']}: the {rz['n_results']} results KID {rz['results']['kid']:.3f} "
        f"± {rz['results']['kid_std']:.3f}, the generator's own samples (as many) "
        f"{rz['generator_samples']['kid']:.3f} ± {rz['generator_samples']['kid_std']:.3f}.",
        _scribble_verdict(q),
        "",
    ]
    return lines


def _scribble_verdict(q: dict) -> str:
    rz = q["realism"]
    err = {kind: [r["painted_l1"]["mean"] for n, r in q["scribbles"].items() if n.startswith(kind)]
           for kind in ("sparse", "dense")}  # fmt: skip
    drift = rz["results"]["kid"] > rz["generator_samples"]["kid"]
    sparse, dense = (sum(v) / len(v) for v in (err["sparse"], err["dense"]))
    return (
        "Seed: latents fitted to paint drift from the image manifold (unrealistic results) -- measured: the "
        f"results are {'less' if drift else 'not less'} realistic than plain samples. Mean error on paint: "
        f"sparse scribbles {sparse:.4f}, dense {dense:.4f}."
    )


def curve_section(sg2: dict) -> list[str]:
    """How the bundled StyleGAN2 got here: earlier stints and the learning curve (plan the next one)."""
    t = sg2["training"]
    lines = ["## StyleGAN2: training history and learning curve", ""]
    if t.get("init_from"):
        f = t["init_from"]
        lines.append(
            f"This run started from the earlier bundled export `{f['file']}` "
            f"(sha256 `{str(f['sha256'])[:12]}`, "
            f"{f['kimg']} kimg, {f['minutes']:.0f} min): {f['note']}. Commands of this run: "
            + "; ".join(f"`{c}`" for c in t["commands"])
            + "."
        )
    for ch in t.get("config_changes") or []:
        lines.append(f"At {ch['kimg']:.1f} kimg the settings changed to {ch['changes']}: {ch['why']}.")
    curve = t.get("curve") or []
    if curve:
        key = next(k for k in curve[-1] if k.startswith("fid"))
        lines += [
            "",
            f"Learning curve: tiny-CLIP FID of {key[3:]} G_ema samples against as many held-out cats at each "
            "checkpoint (a smaller n than the table above, so slightly higher), against training kimg and "
            "CPU minutes (the total over all stints).",
            "",
            "| kimg | minutes | FID | SWD x1e3 (64 / 32 / 16 px bands / 8 px; from 2026-12-03) |",
            "|---|---|---|---|",
        ]
        lines += [
            _row(
                f"{p['kimg']:.1f}",
                f"{p['minutes']:.0f}",
                f"{p[key]:.1f}",
                " / ".join(f"{v:.0f}" for v in p["swd"]) if "swd" in p else "",
            )  # fmt: skip
            for p in curve
            if key in p
        ]
    return lines + [""]


def sweep_section(sg2: dict) -> list[str]:
    q = sg2["quality"].get("scribble_sweep")
    if q is None:
        return []
    g = q["generator_samples"]
    commands = list(dict.fromkeys(r.get("command", q["command"]) for r in q["rows"].values()))
    lines = [
        "## Scribble-to-image and inpainting: settings compared",
        "",
        f"Command{'s' if len(commands) > 1 else ''}: {'; '.join(f'`{c}`' for c in commands)}. "
        f"The 8 fixed scribbles, {next(iter(q['rows'].values()))['candidates']} "
        f"candidates each; paint error as above. Realism two ways (reference: {q['reference']}): improved "
        "precision (the share of results inside the k = 3 nearest-neighbour manifold of the real cats' "
        "tiny-CLIP features: judges each image) and KID (a distance between the sets: it also punishes the "
        "results for covering only the scribbles' few cats, so it reads far above the samples' KID). "
        f"Diversity = {q['diversity']}. Inpainting: 16 held-out cats with seeded rectangular holes, one "
        "batch, the target pasted back outside the hole: kept-region PSNR (minimum over the 16) and KID "
        "of the filled images (16 images: noisy); inpaint diversity: the candidates a person gets for "
        "one hole (k per cat, the first 4 cats), as the scribble diversity (measured from 2026-12-03). "
        f"Reference, the generator's own samples (as many): precision {g['precision']:.2f}, KID "
        f"{g['kid']:.3f} ± {g['kid_std']:.3f}, diversity {g['diversity']:.3f}; real against real precision "
        f"{g['real_precision']:.2f}. "
        + _matched_sentence(q)
        + f"Every invert row: {_sweep_base()}. Projection rows run the "
        "projection job (core.jobs.projection) with its own defaults (L1 1, perceptual 1, Adam lr 0.02 "
        "in W, K = 10 denoising updates at noise 5% -> 0% after each step) and inpaint each cat on its "
        "own, the target pasted back outside the hole (its paste_back default).",
        "",
        "| setting | paint error sparse / dense | precision | KID (± std) | diversity / samples "
        "| s per job | inpaint kept PSNR | inpaint KID | inpaint diversity / samples |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += _matched_row(q, g)
    for name, r in q["rows"].items():
        pe, ip = r["paint_error"], r["inpaint"]
        inp_div = f"{ip['diversity'] / g['diversity']:.2f}" if "diversity" in ip else "—"
        lines.append(_row(
            name, f"{pe['sparse']:.4f} / {pe['dense']:.4f}", f"{r['precision']:.2f}",
            f"{r['kid']:.3f} ± {r['kid_std']:.3f}", f"{r['diversity'] / g['diversity']:.2f}",
            f"{r['seconds_per_job']:.1f}", f"{ip['kept_psnr_min']:.0f} dB",
            f"{ip['kid']:.3f} ± {ip['kid_std']:.3f}", inp_div,
        ))  # fmt: skip
    lines += ["", "Gradient shares of the loss terms at the first step (the first scribble):", ""]
    for name, sh in q["gradient_shares"].items():
        parts = ", ".join(f"{k} {v}" for k, v in sh.items())
        lines.append(f"- {name}: {parts}")
    return lines + [""]


def _matched_sentence(q: dict) -> str:
    m = q.get("matched_samples")
    if m is None:
        return ""
    return (
        f"The first row is the fair realism reference for scribble results: for each scribble, the "
        f"generator's own samples that best match its paint (the best of {m['pool']} random samples, "
        "no optimisation). They are G's images, yet their KID is far above the plain samples' because "
        "they cover only what the 8 scribbles ask for, as every result row does: a row's KID is to be "
        "read against this one. "
    )


def _matched_row(q: dict, g: dict) -> list[str]:
    """The matched-samples reference as the sweep table's first row (cards from before 2026-12-04
    do not have it)."""
    m = q.get("matched_samples")
    if m is None:
        return []
    pe = m["paint_error"]
    return [_row(
        f"*reference: G's samples matched to the paint (best {m['k']} of {m['pool']} random samples by "
        "paint error, no optimisation)*",
        f"{pe['sparse']:.4f} / {pe['dense']:.4f}", f"{m['precision']:.2f}",
        f"{m['kid']:.3f} ± {m['kid_std']:.3f}",
        f"{m['diversity'] / g['diversity']:.2f}", "—", "—", "—", "—",
    )]  # fmt: skip


def _sweep_base() -> str:
    from core.evals.inversion_quality import SWEEP_BASE

    return ", ".join(f"{k} {v}" for k, v in SWEEP_BASE.items()) + " unless the row says otherwise"


def clip_section(clip: dict) -> list[str]:
    zs, pr = clip["quality"]["zero_shot"], clip["quality"]["perceptual_ranking"]
    lines = [
        "## Tiny CLIP",
        "",
        f"Zero-shot attribute accuracy on held-out images. Command: `{zs['command']}`.",
        "",
        "| attribute | classes | accuracy | chance | majority class |",
        "|---|---|---|---|---|",
    ]
    for attr, r in zs["attributes"].items():
        lines.append(
            f"| {attr} | {r['classes']} | {r['accuracy']:.3f} | {r['chance']:.3f} | {r['majority']:.3f} |"
        )
    o = pr["overall"]
    lines += [
        "",
        f"Perceptual distance (the bundled offline LPIPS stand-in): share of {pr['n']} held-out images on",
        "which it orders a pair of distortions as a person would (e.g. a small blur before a strong one, a",
        "strong blur before another cat).",
        "",
        "| distance | agreement |",
        "|---|---|",
        f"| bundled (tiny-CLIP features, LPIPS-style) | {o['bundled']:.3f} |",
        f"| the same network untrained | {o['untrained_same_arch']:.3f} |",
        f"| pixel MSE | {o['pixel_mse']:.3f} |",
        "",
    ]
    return lines


def report() -> str:
    sg2, dcgan, clip = _card(SG2), _card(DCGAN), _card(CLIP)
    lines = [
        "# The bundled models: how they were trained and how good they are",
        "",
        "Made by `python -m core.evals.model_report --out docs/models.md` from the model cards in",
        "`resources/models/*.json`; each table names the command that measured it.",
        "",
        "| model | kimg | minutes | device | training command |",
        "|---|---|---|---|---|",
        _training(SG2, sg2),
        _training(DCGAN, dcgan),
        _training(CLIP, clip),
        "",
    ]
    lines += realism_section(sg2, dcgan) + curve_section(sg2) + inversion_section(sg2, dcgan)
    lines += scribble_section(sg2)
    lines += sweep_section(sg2)
    lines += clip_section(clip)
    lines += ["The W-space diffusion prior: `docs/prior.md`. The text-to-image model: `docs/sdedit.md`.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m core.evals.model_report", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--out", type=Path, default=Path("docs/models.md"))
    a = ap.parse_args(argv)
    a.out.write_text(report())
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
