"""Image quality under guidance (issue 27): guidance rescale and a guidance interval, chosen on tuning subjects.

At joint guidance lambda = 5 the miniature's samples sit far from real renders in the Frechet distance (FD) while
the row without image guidance sits much closer (``benchmarks/toyworld.md``). Two documented levers act on the
guidance alone, no training: guidance rescale (Lin et al. 2024, sec. 3.4; diffusers' ``guidance_rescale``) and
guidance limited to an interval of the denoising steps (Kynkaanniemi et al. 2024; diffusers' guiders'
``start`` / ``stop``), both options of ``jointdiff evaluate`` (:class:`jointdiff.jedi.guidance.Guidance`).

Stage ``tuning`` runs every setting of :data:`SETTINGS` on the **tuning** subjects and applies :func:`choose`, the
rule written before the run: the lowest FD among the settings whose normalised PartID (protocol unseen) is at most
0.02 below the default's and whose CLIP-T is at least 0.95x the no-reference row's; if the best rescale and the best
interval setting both pass, their combination is run as well and takes part. Stage ``report`` measures the default
and the chosen setting once on the **report** subjects, beside the VAE round trip of the real renders (what any
sample decoded by this VAE can at best reach) and the blur calibration.

    python benchmarks/guidance_quality.py --stage tuning --work ~/jointdiff-runs/quality27
    python benchmarks/guidance_quality.py --stage report --work ~/jointdiff-runs/quality27 --record benchmarks/guidance_quality.md

Every row is one ``jointdiff evaluate`` run (``benchmarks/toyworld.py``'s protocol), cached under ``--work``.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import toyworld as tw  # the toy benchmark's rows, FD and table

# name -> (label, evaluate options beyond joint guidance at lambda = 5), fixed before the tuning run
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "rescale-0.5": ("joint, guidance rescale 0.5", ["--guidance-rescale", "0.5"]),
    "rescale-0.7": ("joint, guidance rescale 0.7", ["--guidance-rescale", "0.7"]),
    "rescale-1": ("joint, guidance rescale 1.0", ["--guidance-rescale", "1.0"]),
    "start-0.2": ("joint, guided from 20% of the steps", ["--guidance-start", "0.2"]),
    "start-0.4": ("joint, guided from 40% of the steps", ["--guidance-start", "0.4"]),
    "stop-0.6": ("joint, guided to 60% of the steps", ["--guidance-stop", "0.6"]),
    "stop-0.8": ("joint, guided to 80% of the steps", ["--guidance-stop", "0.8"]),
}
# the guidance interval on a grid, start x stop (the finer sweep, fixed before its tuning run; 20% to 80% was the
# first sweep's only interval)
SETTINGS |= {
    f"interval-{a:g}-{b:g}": (
        f"joint, guided from {a:.0%} to {b:.0%}",
        ["--guidance-start", f"{a:g}", "--guidance-stop", f"{b:g}"],
    )
    for a, b in itertools.product((0.1, 0.2, 0.3), (0.7, 0.8, 0.9))
}
IDENTITY_SLACK = 0.02  # normalised PartID the chosen setting may lose against the default
CLIP_T_RATIO = 0.95  # the CLIP-T bound, against the no-reference row of the same model
FD_GOAL = tw.FD_GOAL  # issue 27: half of version 1's FD on the report subjects (28.70)


def base_rows(scale: float) -> list[tw.Row]:
    """Real renders, the floor, the second draw, the no-reference row and the default (joint, lambda = ``scale``)."""
    keep = ("real", "floor", "real_again", "noref", "joint")
    return [r for r in tw.table_rows(scale, 1.0) if r.name in keep]


def setting_row(name: str, scale: float) -> tw.Row:
    """The joint row at lambda = ``scale`` with a setting's options (a combination joins names with ``+``)."""
    label = ", ".join(
        SETTINGS[n][0] if i == 0 else SETTINGS[n][0].removeprefix("joint, ") for i, n in enumerate(name.split("+"))
    )
    extra = [a for n in name.split("+") for a in SETTINGS[n][1]]
    return tw.Row(label, name, [*tw.strategy_argv("joint", scale, 1.0), *extra])


def scores(results: dict[str, dict], fd: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per row: normalised PartID (unseen), CLIP-T and FD."""
    return {
        n: {"partid": tw.identity(results, n, tw.IDENTITY), "clip_t": r["overall"]["CLIP-T"], "fd": fd.get(n, 0.0)}
        for n, r in results.items()
    }


def passes(s: dict[str, dict[str, float]], name: str) -> bool:
    """The rule's two bounds: PartID within :data:`IDENTITY_SLACK` of the default, CLIP-T >= 0.95x no reference."""
    return (
        s[name]["partid"] >= s["joint"]["partid"] - IDENTITY_SLACK
        and s[name]["clip_t"] >= CLIP_T_RATIO * s["noref"]["clip_t"]
    )


def choose(s: dict[str, dict[str, float]], names: list[str]) -> str:
    """The rule: the lowest FD among the settings that pass; ``"joint"`` (the default) if none beats its FD."""
    ok = [n for n in names if passes(s, n) and s[n]["fd"] < s["joint"]["fd"]]
    return min(ok, key=lambda n: s[n]["fd"]) if ok else "joint"


def vae_round_trip(run: Path, model: str, out: Path) -> Path:
    """The images of evaluate run ``run`` encoded and decoded by ``model``'s VAE, as a run folder ``out``
    (``images/<subject>/<input>/*.png``) that :func:`toyworld.frechet_to_real` reads; cached."""
    import numpy as np
    import PIL.Image
    import torch
    from diffusers import AutoencoderKL

    paths = sorted((run / "images").glob("*/*/*.png"))
    if (out / "done").exists():
        return out
    vae = AutoencoderKL.from_pretrained(model, subfolder="vae").eval()
    with torch.no_grad():
        for i in range(0, len(paths), 50):
            batch = paths[i : i + 50]
            x = torch.stack([torch.from_numpy(np.array(PIL.Image.open(p).convert("RGB"))) for p in batch])
            x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
            y = vae.decode(vae.encode(x).latent_dist.mode()).sample
            y = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            for p, im in zip(batch, y, strict=True):
                dest = out / p.relative_to(run)
                dest.parent.mkdir(parents=True, exist_ok=True)
                PIL.Image.fromarray(im).save(dest)
    (out / "done").write_text("")
    return out


def rows_table(results: dict[str, dict], s: dict[str, dict[str, float]], chosen: str | None = None) -> str:
    """Markdown: each row's normalised PartID, CLIP-T (and its ratio to no reference), FD, whether it passes."""
    lines = ["| Row | norm. PartID | CLIP-T | / no ref | FD | passes |", "|---|---:|---:|---:|---:|---|"]
    for n, r in results.items():
        if n in ("real", "floor", "real_again"):
            continue
        mark = "" if n in ("noref", "joint") else ("yes" if passes(s, n) else "no")
        label = r["label"] + (" **(chosen)**" if n == chosen else "")
        v = s[n]
        ratio = v["clip_t"] / s["noref"]["clip_t"]
        lines.append(f"| {label} | {v['partid']:.3f} | {v['clip_t']:.4f} | {ratio:.3f}x | {v['fd']:.2f} | {mark} |")
    return "\n".join(lines) + "\n"


def plot(s: dict[str, dict[str, float]], names: list[str], labels: dict[str, str], path: Path) -> None:
    """FD against normalised PartID for the default and every setting (tuning subjects)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.4), dpi=120)
    for n in ["joint", *names]:
        ax.scatter(s[n]["partid"], s[n]["fd"], color="black" if n == "joint" else "tab:blue")
        ax.annotate(
            labels[n].removeprefix("joint, "),
            (s[n]["partid"], s[n]["fd"]),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.axvline(s["joint"]["partid"] - IDENTITY_SLACK, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("normalised PartID (protocol unseen)")
    ax.set_ylabel("FD to real renders (toy features)")
    ax.set_title("Guidance rescale and interval, tuning subjects (lower FD is better)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", required=True, choices=["tuning", "report"])
    p.add_argument("--model", default=None, help="jointdiff pipeline directory (default: the shipped miniature)")
    p.add_argument("--work", type=Path, default=Path("runs/guidance-quality"))
    p.add_argument("--tuning-subjects", type=int, default=16)
    p.add_argument("--subjects", type=int, default=30, help="report subjects")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--scale", type=float, default=5.0)
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure-subjects", type=int, default=8)
    p.add_argument("--record", type=Path, default=None, help="report stage: the markdown record (PNGs beside it)")
    args = p.parse_args(argv)
    args.max_prompts = None
    if args.model is None:
        from jointdiff.common.paths import shipped_model

        if shipped_model() is None:
            p.error("no shipped miniature in this install: pass --model DIR")
        args.model = str(shipped_model())

    # tuning: every setting (and the combination the rule allows), on the tuning part
    tune = args.work / "tuning"
    args.part = "tuning"
    results = {r.name: tw.run_row(r, args, args.tuning_subjects, tune) for r in base_rows(args.scale)}
    names = list(SETTINGS)
    results |= {n: tw.run_row(setting_row(n, args.scale), args, args.tuning_subjects, tune) for n in names}
    s = scores(results, tw.frechet(tune, list(results)))
    best = {
        kind: choose(s, [n for n in names if n.startswith(kind)]) for kind in ("rescale", ("start", "stop", "interval"))
    }
    if all(b != "joint" for b in best.values()):
        combo = "+".join(best.values())
        names.append(combo)
        results[combo] = tw.run_row(setting_row(combo, args.scale), args, args.tuning_subjects, tune)
        s = scores(results, tw.frechet(tune, list(results)))
    chosen = choose(s, names)
    (args.work / "choice.json").write_text(json.dumps({"chosen": chosen, "scores": s}, indent=1))
    print(rows_table(results, s, chosen))
    print(f"chosen on the tuning subjects: {chosen}")
    if args.stage == "tuning":
        return 0

    # report: the default and the chosen setting, once, on the report part
    report = args.work / "report"
    args.part = "report"
    rep = {r.name: tw.run_row(r, args, args.subjects, report) for r in base_rows(args.scale)}
    if chosen != "joint":
        rep[chosen] = tw.run_row(setting_row(chosen, args.scale), args, args.subjects, report)
    # every setting measured on the report part before (an earlier choice) stays in the record
    rep |= {
        n: tw.run_row(setting_row(n, args.scale), args, args.subjects, report)
        for n in names
        if n not in rep and (report / n / "results.json").exists()
    }
    fd = tw.frechet(report, list(rep))
    trip = vae_round_trip(report / "real_again", args.model, args.work / "vae_round_trip")
    fd |= {"vae": tw.frechet_to_real(report / "real", {"vae": trip})["vae"]}
    rs = scores(rep, fd)

    out = args.record or args.work / "guidance_quality.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    scatter = out.with_name(out.stem + "_tuning.png")
    grid = out.with_name(out.stem + "_grid.png")
    plot(s, names, {n: r["label"] for n, r in results.items()}, scatter)
    tw.figure(
        report,
        args.figure_subjects,
        grid,
        "report",
        (("joint", "default"), (chosen, "chosen")) if chosen != "joint" else (("joint", "default"),),
    )
    import torch

    goal = rs[chosen]["fd"] <= FD_GOAL
    text = [
        "# Image quality under guidance: guidance rescale and a guidance interval (issue 27)",
        "",
        f"Date {datetime.date.today()}; CPU {platform.machine()}, {torch.get_num_threads()} threads; torch {torch.__version__}.",
        f"Command: `python {' '.join(sys.argv)}`",
        f"Model: {tw.model_label(args.model)}; {args.steps} DDIM steps; joint guidance lambda = {args.scale:g}; one random "
        f"input per subject (seed {args.seed}); 25 prompts a subject; identity against real views never given "
        "(protocol unseen), normalised (text-only floor 0, real renders 1). FD: toy-feature Frechet distance to the "
        "real renders of the same subjects and prompts (`benchmarks/toyworld.md`).",
        "",
        f"The rule, fixed before the run: the lowest FD among the settings whose normalised PartID is at most "
        f"{IDENTITY_SLACK} below the default's and whose CLIP-T is at least {CLIP_T_RATIO}x the no-reference row's; the "
        "combination of the best rescale and the best interval setting is run when both pass.",
        "",
        f"## Tuning: {args.tuning_subjects} subjects of the **tuning** part ({args.tuning_subjects * 25} images a row)",
        "",
        rows_table(results, s, chosen),
        f"FD floor (a second draw of real renders) at this image count: {s['real_again']['fd']:.2f}.",
        "",
        f"![FD against PartID]({scatter.name})",
        "",
        f"## Report: {args.subjects} subjects of the **report** part, measured once",
        "",
        rows_table(rep, rs, chosen),
        f"FD floor (a second draw of real renders): {fd['real_again']:.2f}; the same draw through the VAE "
        f"(encode, decode: the best any sample of this latent model can reach): **{fd['vae']:.2f}**"
        + "".join(f"; blurred by {k.split()[1]} px: {v:.2f}" for k, v in fd.items() if k.startswith("blur"))
        + ".",
        "",
        f"- FD at most {FD_GOAL} (half of version 1's 28.70): **{'holds' if goal else 'does not hold'}** "
        f"({rs[chosen]['fd']:.2f}, {'the chosen setting' if chosen != 'joint' else 'the default'}).",
        "",
        f"![grid]({grid.name})",
        "",
    ]
    from jointdiff.evaluation.report import kept_reading

    reading = kept_reading(out)
    out.write_text("\n".join(text + ([*reading, ""] if reading else [])))
    print(f"wrote {out}, {scatter}, {grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
