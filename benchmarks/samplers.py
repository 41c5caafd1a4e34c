"""Fewer sampling steps, chosen by the ruler (issue 31): the shipped miniature's samplers over step counts.

Every row is one ``jointdiff evaluate`` run (``benchmarks/toyworld.py``'s rows: toy benchmark, 1 reference,
protocol unseen, joint guidance lambda = 5) on the **tuning** subjects with ``--scheduler S --steps N``; all rows
share the seed, so image k of every row starts from the same noise and rows compare image by image.

The noise. For each row, the difference to the reference setting (DDIM, 25 steps: what the demo and the tables
used) is taken per subject (mean over its prompts) and averaged over subjects; its noise is two standard errors
of that mean over subjects (the subjects are the independent units). A setting is **within the noise** when its
difference in normalised PartID (the part-aware identity, issue 26; floor 0, real renders 1) and in CLIP-T is
above minus two standard errors. The default becomes the fewest steps of any sampler within the noise (ties: the
higher PartID).

    python benchmarks/samplers.py --record benchmarks/samplers.md            # the shipped miniature, tuning part
    python benchmarks/samplers.py --subjects 2 --max-prompts 2 --grid ddim:25 dpmpp:8   # a quick look
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
from collections import defaultdict
from pathlib import Path

GRID = (
    "ddim:25",
    "ddim:15",
    "ddim:10",
    "dpmpp:20",
    "dpmpp:15",
    "dpmpp:10",
    "dpmpp:8",
    "dpmpp:6",
    "unipc:10",
    "unipc:8",
    "unipc:6",
    "euler:15",
    "euler:10",
)
REFERENCE = "ddim:25"


def _toyworld():
    """``benchmarks/toyworld.py`` as a module: its evaluate runs and normalisation."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import toyworld

    return toyworld


def parse_setting(text: str) -> tuple[str, int]:
    """``"dpmpp:8"`` -> ``("dpmpp", 8)``."""
    from jointdiff.jedi.schedulers import SCHEDULERS

    name, _, steps = text.partition(":")
    if name not in SCHEDULERS or not steps.isdigit() or int(steps) < 1:
        raise ValueError(f"a setting is SAMPLER:STEPS with SAMPLER in {', '.join(SCHEDULERS)}, got {text!r}")
    return name, int(steps)


def per_subject(path: Path, metric: str) -> dict[str, float]:
    """A run's ``metric`` per subject: the mean over its images (scores.jsonl)."""
    values: dict[str, list[float]] = defaultdict(list)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get(metric) is not None and "path" in row:
            values[row["subject"]].append(row[metric])
    return {s: statistics.fmean(v) for s, v in values.items()}


def paired(row: dict[str, float], ref: dict[str, float], scale: float = 1.0) -> tuple[float, float]:
    """Mean difference ``row - ref`` over the subjects both have, divided by ``scale``, and its standard error."""
    diffs = [(row[s] - ref[s]) / scale for s in ref if s in row]
    if len(diffs) < 2:
        return (diffs[0] if diffs else math.nan), math.nan
    return statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))


def verdicts(work: Path, settings: list[str], results: dict[str, dict], tw) -> list[dict]:
    """Per setting: normalised PartID and CLIP-T, their differences to the reference setting, noise, within."""
    span = results["real"]["overall"][tw.IDENTITY] - results["floor"]["overall"][tw.IDENTITY]
    ref_id = per_subject(work / _name(REFERENCE) / "scores.jsonl", tw.IDENTITY)
    ref_t = per_subject(work / _name(REFERENCE) / "scores.jsonl", "CLIP-T")
    out = []
    for setting in settings:
        sampler, steps = parse_setting(setting)
        scores = work / _name(setting) / "scores.jsonl"
        d_id, se_id = paired(per_subject(scores, tw.IDENTITY), ref_id, span)
        d_t, se_t = paired(per_subject(scores, "CLIP-T"), ref_t)
        within = setting == REFERENCE or (d_id >= -2 * se_id and d_t >= -2 * se_t)
        out.append(
            {
                "setting": setting,
                "sampler": sampler,
                "steps": steps,
                "partid": tw.identity(results, _name(setting), tw.IDENTITY),
                "clip_t": results[_name(setting)]["overall"]["CLIP-T"],
                "d_partid": d_id,
                "noise_partid": 2 * se_id,
                "d_clip_t": d_t,
                "noise_clip_t": 2 * se_t,
                "within": within,
            }
        )
    return out


def choose(rows: list[dict]) -> dict:
    """The fewest steps within the noise (ties: the higher normalised PartID)."""
    ok = [r for r in rows if r["within"]]
    return min(ok, key=lambda r: (r["steps"], -r["partid"]))


def _name(setting: str) -> str:
    return setting.replace(":", "-")


def plot(rows: list[dict], path: Path) -> None:
    """Normalised PartID and CLIP-T against steps, one line per sampler, the reference's noise band shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = next(r for r in rows if r["setting"] == REFERENCE)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, noise, label in (
        (axes[0], "partid", "noise_partid", "PartID (normalised: floor 0, real 1)"),
        (axes[1], "clip_t", "noise_clip_t", "toy CLIP-T"),
    ):
        band = max((r[noise] for r in rows if not math.isnan(r[noise])), default=0.0)
        ax.axhspan(ref[key] - band, ref[key] + band, color="0.9", label="DDIM 25 +- the widest row's noise (2 SE)")
        for sampler in dict.fromkeys(r["sampler"] for r in rows):
            pts = sorted((r["steps"], r[key]) for r in rows if r["sampler"] == sampler)
            ax.plot(*zip(*pts, strict=True), marker="o", label=sampler)
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Samplers of the shipped miniature, tuning subjects, 1 reference, joint guidance 5")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="jointdiff pipeline directory (default: the shipped miniature)")
    p.add_argument("--work", type=Path, default=Path("runs/samplers"), help="evaluate runs (caches) live here")
    p.add_argument("--subjects", type=int, default=10)
    p.add_argument("--max-prompts", type=int, default=10)
    p.add_argument("--grid", nargs="+", default=list(GRID), metavar="SAMPLER:STEPS")
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--record", type=Path, default=None, help="write the markdown record here (the plot beside it)")
    args = p.parse_args(argv)
    tw = _toyworld()
    from jointdiff.common.paths import shipped_model

    args.model = args.model or str(shipped_model())
    try:
        settings = list(dict.fromkeys([REFERENCE, *args.grid]))
        for s in settings:
            parse_setting(s)
    except ValueError as e:
        p.error(str(e))
    started = datetime.datetime.now(datetime.timezone.utc)
    args.part, args.steps, args.scale = "tuning", 25, 5.0  # what run_row reads; steps are set per row below
    results = {}
    for row in [r for r in tw.table_rows(5.0, 1.0) if r.name in ("real", "floor")]:
        results[row.name] = tw.run_row(row, args, args.subjects, args.work)
    for setting in settings:
        sampler, steps = parse_setting(setting)
        args.steps = steps
        row = tw.Row(f"{sampler}, {steps} steps", _name(setting), [*tw.strategy_argv("joint", 5.0, 1.0)])
        row.argv += ["--scheduler", sampler]
        results[row.name] = tw.run_row(row, args, args.subjects, args.work)
    rows = verdicts(args.work, settings, results, tw)
    best = choose(rows)
    lines = [
        "| Sampler | Steps | PartID (norm) | CLIP-T | dPartID vs DDIM 25 | noise (2 SE) | dCLIP-T | noise (2 SE) | within |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['partid']:.3f} | {r['clip_t']:.4f} | {r['d_partid']:+.3f} | "
            f"{r['noise_partid']:.3f} | {r['d_clip_t']:+.4f} | {r['noise_clip_t']:.4f} | "
            f"{'yes' if r['within'] else 'no'} |"
        )
    verdict = f"Chosen: **{best['sampler']}, {best['steps']} steps** (the fewest steps within the noise of DDIM 25)."
    print("\n".join([*lines, "", verdict]))
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "samplers.json").write_text(json.dumps(rows, indent=2))
    if args.record:
        plot_path = args.record.with_suffix(".png")
        plot(rows, plot_path)
        head = [
            "# Samplers and steps of the shipped miniature (issue 31)",
            "",
            f"Model {tw.model_label(args.model)}; {args.subjects} tuning subjects x {args.max_prompts} prompts, "
            f"1 reference, joint guidance lambda = 5, seed {args.seed}; {platform.processor() or platform.machine()}, "
            f"{started:%Y-%m-%d}.",
            "",
            "    " + " ".join(["python", "benchmarks/samplers.py", *(argv if argv is not None else sys.argv[1:])]),
            "",
        ]
        args.record.write_text("\n".join([*head, *lines, "", verdict, "", f"![curve]({plot_path.name})", ""]))
        print(f"wrote {args.record}, {plot_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
