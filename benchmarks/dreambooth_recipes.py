"""Issue 28: which DreamBooth recipe brings the miniature into DreamBlend's regime, chosen on tuning subjects.

DreamBlend needs late checkpoints that reproduce their input images (DreamBlend Fig. 1) and early ones that
keep the prompt. Each recipe below runs the checkpoint curve of ``benchmarks/dreamblend.py`` (no DreamBlend,
no Table 2) on the first ``--subjects`` subjects of the toy benchmark's **tuning** part, with the class
images shared between recipes; this script then compares the recipes: normalised PartID against the 3
inputs (how near a checkpoint comes to reproducing them; real renders = 1) and against unseen views,
CLIP-T and its drop from the best earlier checkpoint to the last, diversity, and the fine-tuning cost.

    python benchmarks/dreambooth_recipes.py --work ~/jointdiff-runs/recipes28 --record benchmarks/dreambooth_recipes.md

Everything resumes from ``--work`` (fine-tunes, images, features). A ``## Reading`` section written by hand at
the end of an existing record is kept when the record is rewritten.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
IDENTITY = "PartID"
FULL = ["--lora-rank", "0", "--learning-rate", "2e-4"]  # issue 28's probe: full fine-tuning at 2e-4
# name -> (what, dreamblend.py options)
RECIPES: dict[str, tuple[str, list[str]]] = {
    "lora": ("LoRA rank 4 on attention, LR 1e-3, prior preservation (the last record's)", ["--lora-rank", "4"]),
    "full": ("full U-Net fine-tuning, LR 2e-4, prior preservation", FULL),
    "full-noprior": ("full U-Net, LR 2e-4, no prior preservation", [*FULL, "--no-prior"]),
    "full-text": ("full U-Net and text encoder, LR 2e-4, prior preservation", [*FULL, "--train-text-encoder"]),
    "full-identifier": (
        "full U-Net and the identifier's embedding (LR 5e-3), prior preservation",
        [*FULL, "--train-identifier"],
    ),
}


def results(work: Path, name: str) -> dict:
    return json.loads((work / name / "results.json").read_text())


def normalised(r: dict, real: dict, floor: dict, protocol: str) -> float:
    """PartID on the scale floor = 0, real renders = 1, under ``protocol`` (``unseen`` or ``inputs``)."""

    def get(x: dict) -> float:
        return x["protocols"][protocol][IDENTITY] if protocol != "unseen" else x["overall"][IDENTITY]

    return (get(r) - get(floor)) / (get(real) - get(floor))


def summarise(work: Path, steps: list[int]) -> dict[str, dict]:
    """Per recipe and checkpoint: normalised PartID (inputs, unseen), CLIP-T, diversity; the fine-tune cost."""
    out = {}
    for name in RECIPES:
        w = work / name
        if not (w / "reference-floor" / "results.json").is_file():
            continue
        real, floor = results(w, "reference-real"), results(w, "reference-floor")
        per_step = {}
        for step in [0, *steps]:
            r = results(w, f"dreambooth-{step}")
            per_step[step] = {
                "inputs": normalised(r, real, floor, "inputs"),
                "unseen": normalised(r, real, floor, "unseen"),
                "clip_t": r["overall"]["CLIP-T"],
                "diversity": r["overall"].get("Diversity"),
            }
        hours = []
        for run in sorted((w / "runs").iterdir()):
            lines = (run / "state" / "logs" / "metrics.jsonl").read_text().splitlines()
            hours.append(json.loads(lines[-1])["train/cpu_hours"])
        out[name] = {"steps": per_step, "minutes": 60 * sum(hours) / len(hours)}
    return out


def plot(summary: dict[str, dict], path: Path) -> None:
    """Normalised PartID against the inputs vs CLIP-T, one curve per recipe (checkpoints annotated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    for i, (name, s) in enumerate(summary.items()):
        steps = s["steps"]
        xs = [v["clip_t"] for v in steps.values()]
        ys = [v["inputs"] for v in steps.values()]
        ax.plot(xs, ys, marker="o", ms=3, color=f"C{i}", label=name)
        for step, x, y in zip(steps, xs, ys, strict=True):
            if step in (0, 100, 1000):
                ax.annotate(str(step), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7, color=f"C{i}")
    ax.axhline(1.0, color="gray", ls="--", lw=0.8)
    ax.text(ax.get_xlim()[0], 1.0, " real renders", va="bottom", fontsize=7, color="gray")
    ax.set_xlabel("CLIP-T")
    ax.set_ylabel(f"normalised {IDENTITY} against the inputs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def record(summary: dict[str, dict], steps: list[int], args: argparse.Namespace, path: Path) -> None:
    from jointdiff.evaluation.report import kept_reading

    plot_path = path.with_name(path.stem + ".png")
    plot(summary, plot_path)
    cols = [0, *steps]
    head = "| recipe | " + " | ".join(f"step {s}" for s in cols) + " |"
    rule = "|---|" + "---:|" * len(cols)

    def by_step(key: str, fmt: str) -> list[str]:
        lines = [head, rule]
        for name, s in summary.items():
            lines.append(f"| {name} | " + " | ".join(format(s["steps"][c][key], fmt) for c in cols) + " |")
        return lines

    lines = ["| recipe | what | best unseen (step) | CLIP-T drop to the last | diversity first -> last | CPU-min |"]
    lines.append("|---|---|---:|---:|---:|---:|")
    for name, s in summary.items():
        st, last = s["steps"], cols[-1]
        best_unseen = max(cols, key=lambda c: st[c]["unseen"])
        best_clip = max(cols[:-1], key=lambda c: st[c]["clip_t"])
        drop = 1 - st[last]["clip_t"] / st[best_clip]["clip_t"]
        div = st[0]["diversity"], st[last]["diversity"]
        lines.append(
            f"| {name} | {RECIPES[name][0]} | {st[best_unseen]['unseen']:.3f} ({best_unseen}) | "
            f"{100 * drop:.1f}% (from step {best_clip}) | {div[0]:.3f} -> {div[1]:.3f} | {s['minutes']:.1f} |"
        )
    text = [
        "# DreamBooth recipes on the miniature (issue 28, tuning subjects)",
        "",
        f"Date {datetime.date.today()}; CPU {platform.machine()}; command: `python {' '.join(sys.argv)}`.",
        f"Each recipe: `benchmarks/dreamblend.py` checkpoint curve, {args.subjects} subjects of the **tuning** part x "
        f"{args.max_prompts} prompts x 2 images, 3 inputs per subject, {args.finetune_steps} fine-tuning steps; "
        f"normalised {IDENTITY}: the text-only floor = 0, real renders = 1 (under the same protocol).",
        "",
        f"## Normalised {IDENTITY} against the 3 inputs (reproducing them: 1 = as close as real renders)",
        "",
        *by_step("inputs", ".3f"),
        "",
        f"## Normalised {IDENTITY} against unseen views",
        "",
        *by_step("unseen", ".3f"),
        "",
        "## CLIP-T",
        "",
        *by_step("clip_t", ".4f"),
        "",
        "## Summary",
        "",
        *lines,
        "",
        f"![normalised {IDENTITY} against the inputs vs CLIP-T]({plot_path.name})",
        "",
        *kept_reading(path),
    ]
    path.write_text("\n".join(text).rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--record", type=Path, default=None, help="the markdown report (default: WORK/recipes.md)")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--max-prompts", type=int, default=8)
    p.add_argument("--finetune-steps", type=int, default=1000)
    p.add_argument("--class-images", type=int, default=100)
    p.add_argument("--steps", type=int, default=25, help="sampling steps (DDIM)")
    p.add_argument("--checkpoints", type=int, nargs="+", default=[5, 25, 50, 100, 250, 500, 1000])
    args = p.parse_args(argv)
    if args.checkpoints[-1] != args.finetune_steps:
        p.error("--checkpoints: the last must be --finetune-steps")
    for name in args.recipes:
        cmd = [sys.executable, str(HERE / "dreamblend.py"), "--data", "part=tuning", "--subjects", str(args.subjects)]
        cmd += ["--max-prompts", str(args.max_prompts), "--finetune-steps", str(args.finetune_steps), "--blends"]
        cmd += ["--class-images", str(args.class_images), "--steps", str(args.steps), "--no-table2"]
        cmd += ["--checkpoints", *map(str, args.checkpoints), "--class-data-dir"]
        cmd += [str(args.work / "class-images"), "--work", str(args.work / name)]
        cmd += ["--record", str(args.work / name / "curve.md"), *RECIPES[name][1]]
        print(f"== recipe {name}: {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, check=True)
    summary = {k: v for k, v in summarise(args.work, args.checkpoints).items() if k in args.recipes}
    path = args.record or args.work / "recipes.md"
    record(summary, args.checkpoints, args, path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
