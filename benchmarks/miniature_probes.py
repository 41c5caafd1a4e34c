"""Probes of issue 27's levers at equal CPU-hours, each from the shipped miniature (version 1).

Each probe trains ``configs/miniature_v2.toml`` (toy subjects rendered and encoded in the data path) from
a starting pipeline for a number of steps that gives every probe about the same CPU time, exports its EMA
weights and is measured on the **tuning** part of the eval split (it chooses the long run's recipe),
through the harness with the protocol of ``benchmarks/toyworld.md``: JeDi 1 reference, joint guidance 5,
normalised PartID and DINO against unseen views, CLIP-T against the text-only row, and the Frechet
distance to real renders of the same subjects and prompts. Version 1 itself is the first row.

- ``continue``: version 1 trained further as it was (constant LR 3e-4);
- ``grow``: version 1 with coupled attention added at 16x16 (``jointdiff miniature grow``), same LR;
  a grown step costs ~1.27x, so it gets ~1/1.27 of the steps;
- ``anneal``: version 1 trained further with the LR decayed linearly to 0 over the probe.

Everything resumes from ``--work`` (training checkpoints, exported weights, evaluation caches):

    python benchmarks/miniature_probes.py --work ~/jointdiff-runs/probes27 --record benchmarks/miniature_probes.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass
class Probe:
    name: str
    what: str
    base: str  # "shipped" or "grown"
    steps: int  # 0: the starting point, not trained
    overrides: list[str] = field(default_factory=list)


def probes(steps: int, grown_cost: float) -> list[Probe]:
    """The probes of a budget of ``steps`` version-1 steps (a grown step costs ``grown_cost`` of them)."""
    constant = ["optim.lr_schedule='constant_with_warmup'", "optim.warmup_steps=50"]
    linear = ["optim.lr_schedule='linear'", "optim.warmup_steps=50"]
    return [
        Probe("v1", "version 1 as shipped (the starting point)", "shipped", 0),
        Probe("continue", "version 1 trained further, constant LR 3e-4", "shipped", steps, constant),
        Probe(
            "grow", "coupled attention added at 16x16, constant LR 3e-4", "grown", round(steps / grown_cost), constant
        ),
        Probe(
            "anneal",
            "version 1 trained further, LR decayed linearly to 0",
            "shipped",
            steps,
            linear,
        ),
    ]


def _toyworld():
    """``benchmarks/toyworld.py`` as a module: its rows, evaluate runs, normalisation and FD."""
    sys.path.insert(0, str(HERE))
    import toyworld

    return toyworld


def _jointdiff(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "jointdiff", *argv], check=True)


def trained_model(probe: Probe, work: Path, shipped: str) -> tuple[str, float]:
    """The probe's exported EMA pipeline (trained and exported unless already there) and its training CPU-hours."""
    if probe.steps == 0:
        return shipped, 0.0
    base = work / "grown" if probe.base == "grown" else Path(shipped)
    if probe.base == "grown" and not (base / "model_index.json").is_file():
        _jointdiff("miniature", "grow", "--model", shipped, "--out", str(base))
    run, model = work / probe.name / "train", work / probe.name / "model"
    if not (model / "model_index.json").is_file():
        sets = [
            f"train.output_dir={str(run)!r}",
            f"model.source={str(base)!r}",
            f"train.max_steps={probe.steps}",
            "train.checkpoint_every=50",
            "monitor.every=0",
            *probe.overrides,
        ]
        _jointdiff(
            "train", "--config", str(ROOT / "configs" / "miniature_v2.toml"), *(x for s in sets for x in ("--set", s))
        )
        _jointdiff("miniature", "export", "--run", str(run), "--out", str(model))
    last = (run / "logs" / "metrics.jsonl").read_text().splitlines()[-1]
    return str(model), float(json.loads(last)["train/cpu_hours"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="runs, exports and evaluation caches (resumable)")
    p.add_argument("--steps", type=int, default=1400, help="version-1 steps of every probe's budget")
    p.add_argument("--grown-cost", type=float, default=1.27, help="CPU of a grown step / a version-1 step")
    p.add_argument("--subjects", type=int, default=16, help="tuning subjects measured (25 prompts each)")
    p.add_argument("--only", nargs="+", default=None, help="only these probes (names)")
    p.add_argument("--record", type=Path, default=None, help="write the markdown record here")
    args = p.parse_args(argv)
    from jointdiff.common.paths import shipped_model

    shipped = str(shipped_model())
    tw = _toyworld()
    chosen = [q for q in probes(args.steps, args.grown_cost) if args.only is None or q.name in args.only]
    ev = argparse.Namespace(part="tuning", seed=0, max_prompts=None, steps=25, batch_size=25, model=shipped)
    rows = tw.table_rows(5.0, 1.0)
    by = {r.name: r for r in rows}
    common = {n: tw.run_row(by[n], ev, args.subjects, args.work / "eval") for n in ("real", "floor")}
    results = []
    for probe in chosen:
        model, hours = trained_model(probe, args.work, shipped)
        ev.model = model
        joint = tw.run_row(by["joint"], ev, args.subjects, args.work / "eval" / probe.name)
        table = {**common, "joint": joint}
        fd = tw.frechet_to_real(args.work / "eval" / "real", {"joint": args.work / "eval" / probe.name / "joint"})[
            "joint"
        ]
        o = joint["overall"]
        results.append(
            {
                "probe": probe.name,
                "what": probe.what,
                "steps": probe.steps,
                "cpu_hours": round(hours, 2),
                "PartID": round(tw.identity(table, "joint", "PartID"), 3),
                "DINO": round(tw.identity(table, "joint", "DINO"), 3),
                "CLIP-T ratio": round(o["CLIP-T"] / common["floor"]["overall"]["CLIP-T"], 3),
                "FD": round(fd, 2),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    (args.work / "probes.json").write_text(json.dumps(results, indent=1))
    if args.record:
        lines = [
            "# Issue 27's levers at equal CPU-hours (probes from version 1)",
            "",
            f"Date {datetime.date.today()}; CPU {platform.machine()}; command: `python benchmarks/miniature_probes.py "
            + " ".join(sys.argv[1:] if argv is None else argv)
            + "`.",
            f"Measured on {args.subjects} subjects of the **tuning** part x 25 prompts (JeDi 1 reference, joint guidance 5, "
            "25 DDIM steps): normalised PartID and DINO against unseen views, CLIP-T / the text-only row, Frechet "
            "distance to real renders of the same subjects and prompts (toy features).",
            "",
            "| probe | what | steps | training CPU-h | norm. PartID | norm. DINO | CLIP-T ratio | FD |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
            *(
                f"| {r['probe']} | {r['what']} | {r['steps']} | {r['cpu_hours']:.2f} | {r['PartID']:.3f} | {r['DINO']:.3f} "
                f"| {r['CLIP-T ratio']:.3f} | {r['FD']:.2f} |"
                for r in results
            ),
            "",
        ]
        from jointdiff.evaluation.report import kept_reading

        args.record.write_text("\n".join(lines + kept_reading(args.record)) + "\n")
        print(f"wrote {args.record}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
