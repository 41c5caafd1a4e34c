"""The miniature's learning curve (issue 14, item 7): reference effect and identity against CPU-hours.

Reads a training run's ``logs/monitor.jsonl`` (written every ``monitor.every`` steps by
``jointdiff train``: 4 held-out toy subjects x 4 scenes, with and without the reference, same
noise) and ``logs/metrics.jsonl`` (loss), appends to the record of earlier parts of the run when
given (a run dir may be lost between sessions: the markdown table is the record), and draws:

    python benchmarks/miniature_curve.py --run runs/mini/train \\
        --table benchmarks/miniature_curve.md --plot benchmarks/miniature_curve.png
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


def read_table(path: Path) -> list[dict[str, float]]:
    """Rows of an earlier table written by this script (empty when there is none)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(COLUMNS) and re.fullmatch(r"\d+", cells[0]):
            rows.append({k: float(v) for k, v in zip(COLUMNS, cells, strict=True)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="jointdiff train output_dir")
    parser.add_argument("--table", required=True, help="markdown record (read, merged, rewritten)")
    parser.add_argument("--plot", required=True, help="PNG to draw")
    args = parser.parse_args(argv)
    table = Path(args.table)
    rows = {int(r["step"]): r for r in read_table(table)}
    log = Path(args.run, "logs", "monitor.jsonl")
    if log.is_file():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            if "normalised_ref" in r:
                rows[int(r["step"])] = {k: float(r[k]) for k in COLUMNS}
    if not rows:
        raise SystemExit(f"no monitor records in {log} or {table}")
    ordered = [rows[k] for k in sorted(rows)]
    head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    body = "".join(
        "| " + " | ".join(str(int(r[k])) if k == "step" else f"{r[k]:.4f}" for k in COLUMNS) + " |\n" for r in ordered
    )
    text = table.read_text() if table.is_file() else ""
    intro = text.split("| step |")[0] if "| step |" in text else "# Miniature learning curve\n\n"
    table.write_text(intro + head + body)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [r["cpu_hours"] for r in ordered]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(hours, [r["normalised_ref"] for r in ordered], "o-", label="JeDi, 1 reference")
    a.plot(hours, [r["normalised_noref"] for r in ordered], "s--", label="no reference (text only)")
    a.axhline(0.5, color="grey", lw=0.8, ls=":")
    a.set(
        xlabel="CPU-hours (2 threads)",
        ylabel="normalised identity (0 floor, 1 real)",
        title="identity, 4 held-out subjects",
    )
    a.legend()
    b.plot(hours, [r["reference_effect"] for r in ordered], "o-", color="C2")
    b.set(xlabel="CPU-hours (2 threads)", ylabel="mean |with - without| (pixels in [0, 1])", title="reference effect")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"{len(ordered)} rows -> {table}, {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
