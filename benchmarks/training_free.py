"""JeDi without training against the trained JeDi, in the toy world (issue 32).

A toy *stock* inpainting model (``configs/toy_inpainting.toml``: single images, random masks, no coupling) sampled
as JeDi samples (coupled self-attention across [reference; target], the replacement trick, joint guidance) is the
training-free variant; the shipped miniature is the trained JeDi. Every row is one ``jointdiff evaluate`` run
through ``benchmarks/toyworld.py``'s rows and protocol (toy backbones, PartID against real views never given,
normalised so the text-only floor is 0 and real renders 1).

1. **Options, on the tuning subjects** (``--tune-subjects`` of the ``tuning`` part): the training-free model with
   JeDi's coupling and with each option of the training-free methods (reference bias beta, coupling in some blocks,
   coupling in the early steps only). Rule, fixed before any run: the highest normalised PartID among the settings
   whose CLIP-T is at least 0.95x the same model's CLIP-T without references (issue 27's guard on prompts).
2. **Table, on the report subjects**: reference rows (real, floor), the inpainting model without references, the
   training-free rows (JeDi's coupling; the chosen options), the trained JeDi with and without references;
   CLIP-T, DINO, PartID, normalised PartID and seconds per image.
3. **Grid**: reference | training-free (chosen) | trained JeDi | no reference (the inpainting model; the trained JeDi),
   on ``--grid-subjects`` report subjects.

A ``## Reading`` section written by hand at the end of an existing record is kept when the record is rewritten.

    python benchmarks/training_free.py --inpainting DIR --record benchmarks/training_free.md
    python benchmarks/training_free.py --inpainting DIR --subjects 2 --tune-subjects 2 --max-prompts 2   # a quick look
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import sys
from pathlib import Path

OPTIONS = {  # name -> (label, evaluate options): the training-free settings measured on the tuning subjects
    "tf": ("JeDi's coupling (beta 0, every block, every step)", []),
    "tf_bias1": ("reference bias beta = 1", ["--reference-bias", "1"]),
    "tf_bias2": ("reference bias beta = 2", ["--reference-bias", "2"]),
    "tf_up": ("coupled in the up blocks only", ["--coupled-layers", "up"]),
    "tf_down_mid": ("coupled in the down and mid blocks only", ["--coupled-layers", "down,mid"]),
    "tf_steps_half": ("coupled in the first half of the steps", ["--coupled-steps", "0.5"]),
}
CLIP_T_GUARD = 0.95  # a setting qualifies when its CLIP-T is at least this x the no-reference row's


def _toyworld():
    """``benchmarks/toyworld.py`` as a module: its rows, evaluate runs, normalisation and tables."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import toyworld

    return toyworld


def _joint(tw, scale: float) -> list[str]:
    return tw.strategy_argv("joint", scale, 1.0)


def option_rows(tw, scale: float) -> list:
    """The tuning rows: the floor and real renders, the inpainting model without references, each option."""
    base = tw.table_rows(scale, 1.0)
    refs = [r for r in base if r.name in ("real", "floor")]
    noref = tw.Row(
        "Inpainting model without references", "noref", ["--method", "jedi-noref", "--guidance-scale", str(scale)]
    )
    opts = [
        tw.Row(f"training-free, {label}", name, [*_joint(tw, scale), *argv]) for name, (label, argv) in OPTIONS.items()
    ]
    return [*refs, noref, *opts]


def choose(tw, results: dict[str, dict]) -> tuple[str, list[str]]:
    """The rule of the module docstring; returns the chosen option's name and the reasons, one line per setting."""
    floor_t = results["noref"]["overall"]["CLIP-T"]
    lines, best = [], None
    for name in OPTIONS:
        part = tw.identity(results, name, tw.IDENTITY)
        clip_t = results[name]["overall"]["CLIP-T"]
        ok = clip_t >= CLIP_T_GUARD * floor_t
        lines.append(
            f"| {OPTIONS[name][0]} | {part:.3f} | {clip_t:.4f} | {clip_t / floor_t:.3f}x | {'yes' if ok else 'no'} |"
        )
        if ok and (best is None or part > best[1]):
            best = (name, part)
    return (best[0] if best else "tf"), lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inpainting", required=True, help="the toy stock inpainting model (pipeline directory)")
    p.add_argument("--trained", default=None, help="the trained JeDi (default: the shipped miniature)")
    p.add_argument("--work", type=Path, default=Path("runs/training-free"), help="evaluate runs (caches) live here")
    p.add_argument("--subjects", type=int, default=30, help="report subjects of the table")
    p.add_argument("--tune-subjects", type=int, default=16, help="tuning subjects of the option choice")
    p.add_argument("--grid-subjects", type=int, default=6)
    p.add_argument("--max-prompts", type=int, default=None, help="only the first N prompts (quick looks)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--scale", type=float, default=5.0, help="eq. 3 lambda of every row")
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--record", type=Path, default=None, help="the markdown report (PNG beside it)")
    args = p.parse_args(argv)
    if args.trained is None:
        from jointdiff.common.paths import shipped_model

        if shipped_model() is None:
            p.error("no shipped miniature in this install: pass --trained DIR")
        args.trained = str(shipped_model())
    if not (Path(args.inpainting) / "model_index.json").is_file():
        p.error(f"--inpainting: {args.inpainting} is not a pipeline directory (no model_index.json)")
    if min(args.subjects, args.tune_subjects, args.grid_subjects, args.steps, args.batch_size) < 1:
        p.error("--subjects, --tune-subjects, --grid-subjects, --steps and --batch-size must be >= 1")
    if args.grid_subjects > args.subjects:
        p.error("--grid-subjects must not exceed --subjects")
    tw = _toyworld()
    on = {"inpainting": copy.copy(args), "trained": copy.copy(args)}
    on["inpainting"].model, on["trained"].model = args.inpainting, args.trained

    # 1. Options on the tuning subjects.
    tuning = {
        r.name: tw.run_row(r, on["inpainting"], args.tune_subjects, args.work / "tuning", "tuning")
        for r in option_rows(tw, args.scale)
    }
    chosen, reasons = choose(tw, tuning)

    # 2. The table on the report subjects.
    specs = {r.name: r for r in option_rows(tw, args.scale)}
    report = {
        n: tw.run_row(specs[n], on["inpainting"], args.subjects, args.work / "report", "report")
        for n in ("real", "floor", "noref", "tf")
    }
    if chosen != "tf":
        report[chosen] = tw.run_row(specs[chosen], on["inpainting"], args.subjects, args.work / "report", "report")
    trained = [
        tw.Row("Trained JeDi (shipped miniature), 1 ref, joint", "jedi", _joint(tw, args.scale)),
        tw.Row(
            "Trained JeDi without references",
            "jedi_noref",
            ["--method", "jedi-noref", "--guidance-scale", str(args.scale)],
        ),
    ]
    report |= {r.name: tw.run_row(r, on["trained"], args.subjects, args.work / "report", "report") for r in trained}

    # 3. The grid.
    out = args.record or args.work / "training_free.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = out.with_name(out.stem + "_grid.png")
    columns = ((chosen, "training-free"), ("jedi", "trained JeDi"), ("noref", "no reference"))
    columns += (("jedi_noref", "trained, no reference"),)
    tw.figure(args.work / "report", args.grid_subjects, picture, "report", columns)

    import torch

    from jointdiff.evaluation.report import kept_reading

    text = [
        "# JeDi without training vs the trained JeDi (issue 32, toy world)",
        "",
        f"Date {datetime.date.today()}; CPU {platform.machine()}, {torch.get_num_threads()} threads; torch {torch.__version__}.",
        f"Command: `python {' '.join(sys.argv)}`",
        f"Training-free: `{args.inpainting}` (a toy stock inpainting model, `configs/toy_inpainting.toml`); trained: "
        f"{tw.model_label(args.trained)}. {args.steps} DDIM steps, joint guidance lambda = {args.scale:g}, one random "
        f"input choice per subject (seed {args.seed}), {args.max_prompts or 25} prompts a subject; identity against "
        "real views never given (protocol `unseen`), PartID normalised: text-only floor 0, real renders 1.",
        "",
        f"## The options, on {args.tune_subjects} **tuning** subjects",
        "",
        f"Rule (fixed before the runs): the highest normalised PartID with CLIP-T >= {CLIP_T_GUARD}x the inpainting "
        "model without references.",
        "",
        "| setting | norm. PartID | CLIP-T | / no reference | qualifies |",
        "|---|---:|---:|---:|---|",
        *reasons,
        "",
        f"Chosen: **{OPTIONS[chosen][0]}**.",
        "",
        f"## The table, on {args.subjects} **report** subjects",
        "",
        tw.table(report),
        f"![reference | training-free | trained JeDi | no reference | trained, no reference]({picture.name})",
        "",
        *kept_reading(out),
    ]
    out.write_text("\n".join(text).rstrip("\n") + "\n")
    print(f"wrote {out}, {picture}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
