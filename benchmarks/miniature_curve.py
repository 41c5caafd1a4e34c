"""The miniature's learning curve (issue 14, item 7): reference effect and identity against CPU-hours.

Reads a training run's ``logs/monitor.jsonl`` (written every ``monitor.every`` steps by
``jointdiff train``: 4 held-out toy subjects x 4 scenes, with and without the reference, same
noise), appends to the record of earlier parts of the run when given (a run dir may be lost
between sessions: the markdown table is the record), and draws. Monitors since issue 26 also
score PartID (``parts_*``): their tables carry two more columns and the plot shows PartID.

    python benchmarks/miniature_curve.py --run runs/mini/train \\
        --table benchmarks/miniature_curve.md --plot benchmarks/miniature_curve.png

A run that continues an earlier version's weights can be drawn after it (``--before TABLE --before-label
NAME``): the earlier table's curve first, this run's CPU-hours counted on from its last row.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

COLUMNS = (
    "step",
    "cpu_hours",
    "reference_effect",
    "normalised_ref",
    "normalised_noref",
    "identity_ref",
    "identity_noref",
    "clip_t_ref",
    "clip_t_noref",
)
PART_COLUMNS = (*COLUMNS, "parts_normalised_ref", "parts_normalised_noref")  # monitors since issue 26


def read_table(path: Path) -> list[dict[str, float]]:
    """Rows of an earlier table written by this script (empty when there is none), keyed by its header."""
    if not path.is_file():
        return []
    rows, columns = [], COLUMNS
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "step":
            columns = tuple(cells)
        elif len(cells) == len(columns) and re.fullmatch(r"\d+", cells[0]):
            rows.append({k: float(v) for k, v in zip(columns, cells, strict=True)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="jointdiff train output_dir")
    parser.add_argument("--table", required=True, help="markdown record (read, merged, rewritten)")
    parser.add_argument("--plot", required=True, help="PNG to draw")
    parser.add_argument("--threads", default="2 threads", help="how the run was timed (the plot's x label)")
    parser.add_argument("--before", default=None, help="an earlier version's table (this run continues its weights)")
    parser.add_argument("--before-label", default="earlier version", help="its legend name")
    parser.add_argument("--label", default="JeDi", help="this run's legend name")
    args = parser.parse_args(argv)
    table = Path(args.table)
    rows = {int(r["step"]): r for r in read_table(table)}
    log = Path(args.run, "logs", "monitor.jsonl")
    if log.is_file():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            if "normalised_ref" in r:
                rows[int(r["step"])] = {k: float(r[k]) for k in PART_COLUMNS if k in r}
    if not rows:
        raise SystemExit(f"no monitor records in {log} or {table}")
    ordered = [rows[k] for k in sorted(rows)]
    parts = all("parts_normalised_ref" in r for r in ordered)
    columns = PART_COLUMNS if parts else COLUMNS
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join(
        "| " + " | ".join(str(int(r[k])) if k == "step" else f"{r[k]:.4f}" for k in columns) + " |\n" for r in ordered
    )
    text = table.read_text() if table.is_file() else ""
    intro = text.split("| step |")[0] if "| step |" in text else f"# Miniature learning curve: {args.run}\n\n"
    table.write_text(intro + head + body)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = read_table(Path(args.before)) if args.before else []
    if args.before and not before:
        raise SystemExit(f"no rows in {args.before}")
    offset = before[-1]["cpu_hours"] if before else 0.0
    hours = [offset + r["cpu_hours"] for r in ordered]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    key, name = ("parts_normalised", "PartID") if parts else ("normalised", "identity")
    if before:
        if not all(f"{key}_ref" in r for r in before):
            raise SystemExit(f"{args.before} has no {name} columns")
        early = [r["cpu_hours"] for r in before]
        a.plot(early, [r[f"{key}_ref"] for r in before], "o-", color="0.6", label=f"{args.before_label}, 1 reference")
        a.plot(
            early, [r[f"{key}_noref"] for r in before], "s--", color="0.75", label=f"{args.before_label}, no reference"
        )
        b.plot(early, [r["reference_effect"] for r in before], "o-", color="0.6", label=args.before_label)
        for ax in (a, b):
            ax.axvline(offset, color="grey", lw=0.8, ls="--")
    a.plot(hours, [r[f"{key}_ref"] for r in ordered], "o-", color="C0", label=f"{args.label}, 1 reference")
    a.plot(hours, [r[f"{key}_noref"] for r in ordered], "s--", color="C1", label=f"{args.label}, no reference")
    a.axhline(0.5, color="grey", lw=0.8, ls=":")
    a.set(
        xlabel=f"CPU-hours ({args.threads})",
        ylabel=f"normalised {name} (0 floor, 1 real)",
        title=f"{name}, 4 held-out subjects",
    )
    a.legend()
    b.plot(hours, [r["reference_effect"] for r in ordered], "o-", color="C2", label=args.label)
    if before:
        b.legend()
    b.set(
        xlabel=f"CPU-hours ({args.threads})",
        ylabel="mean |with - without| (pixels in [0, 1])",
        title="reference effect",
    )
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"{len(ordered)} rows -> {table}, {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
