"""Reports of evaluation runs: ``results.json``, a Markdown table shaped like JeDi's Table 2, and a
DINO vs CLIP-T plot (one point per run; the paper's Table 2 rows in grey for reference)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jointdiff.evaluation.metrics import METRICS

# JeDi Table 2 (SD 1.4; measured by the paper's authors, not here): CLIP-T, CLIP-I, MCLIP-I, DINO, MDINO.
PAPER_TABLE2: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("DreamBooth (3 inputs)", (0.2812, 0.8135, 0.8683, 0.6341, 0.7115)),
    ("Custom Diffusion (3 inputs)", (0.3015, 0.7952, 0.8640, 0.6343, 0.7109)),
    ("BLIP Diffusion (1 input)", (0.2934, 0.7899, 0.8620, 0.5855, 0.6692)),
    ("ELITE (1 input)", (0.2961, 0.7924, 0.8615, 0.5922, 0.6805)),
    ("JeDi (1 input)", (0.3040, 0.7818, 0.8764, 0.6190, 0.7510)),
    ("JeDi (3 inputs)", (0.2932, 0.8139, 0.9011, 0.6791, 0.8037)),
)
COLUMNS = (*METRICS, "PartID", "Diversity")  # PartID: the part-aware identity where a backbone gives it (issue 26)


def json_safe(x: Any) -> Any:
    """JSON-safe: NaN -> None, tuples -> lists, recursively."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as indented JSON (NaN as null) atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(json_safe(obj), indent=2) + "\n")
    tmp.replace(path)


def load_results(path: str | Path) -> dict[str, Any]:
    """``results.json`` of a run (a run directory or the file itself)."""
    path = Path(path)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no results.json at {str(path)!r}")
    return json.loads(path.read_text())


def kept_reading(record: Path) -> list[str]:
    """The hand-written ``## Reading`` section that ends an existing benchmark record (empty when there is none):
    what a rewrite of the record's measured part keeps."""
    if not record.is_file():
        return []
    lines = record.read_text().splitlines()
    return lines[lines.index("## Reading") :] if "## Reading" in lines else []


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def markdown_table(runs: Sequence[dict[str, Any]], paper: bool = True) -> str:
    """Table 2 layout: one row per run, a "Real images" row per benchmark, and the paper's rows."""
    head = "| Method | " + " | ".join(f"{c} (↑)" for c in METRICS) + " | PartID (↑) | Diversity | images | s/image |"
    rule = "| --- |" + " ---: |" * (len(METRICS) + 4)
    lines = [head, rule]
    for r in runs:
        o = r["overall"]
        secs = (r.get("generation") or {}).get("seconds_per_image")  # wall seconds per generated image
        lines.append(
            f"| {r['label']} | "
            + " | ".join(_fmt(o.get(c)) for c in COLUMNS)
            + f" | {r['num_images']} | {'-' if secs is None else f'{secs:.2f}'} |"
        )
    seen = set()
    for r in runs:
        if r.get("real_images") and r["benchmark"] not in seen:
            seen.add(r["benchmark"])
            o = r["real_images"]
            name = f"Real images ({r['benchmark']}, distinct pairs)"
            lines.append(f"| {name} | " + " | ".join(_fmt(o.get(c)) for c in COLUMNS) + " | - | - |")
    text = "\n".join(lines) + "\n"
    if paper:
        text += (
            "\nPaper, Table 2 (SD 1.4, reported by the JeDi authors; not measured here):\n\n"
            + head
            + "\n"
            + rule
            + "\n"
        )
        text += "".join(
            f"| {n} | " + " | ".join(f"{v:.4f}" for v in vals) + " | - | - | - | - |\n" for n, vals in PAPER_TABLE2
        )
    protocols = sorted({(r.get("protocol") or {}).get("name", "all") for r in runs})
    if protocols:
        from jointdiff.evaluation.scoring import PROTOCOLS

        text += (
            "\nIdentity metrics (CLIP-I, MCLIP-I, DINO, MDINO, PartID) scored against "
            + "; ".join(f"`{p}`: {PROTOCOLS.get(p, p)}" for p in protocols)
            + ".\n"
        )
    return text


def subject_table(run: dict[str, Any]) -> str:
    """Per-subject scores of one run."""
    lines = ["| Subject | images | " + " | ".join(COLUMNS) + " |", "| --- | ---: |" + " ---: |" * len(COLUMNS)]
    for name, s in run["subjects"].items():
        lines.append(f"| {name} | {s['images']} | " + " | ".join(_fmt(s.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def prompt_table(run: dict[str, Any]) -> str:
    """Per-prompt scores of one run."""
    lines = ["| Prompt | images | " + " | ".join(COLUMNS) + " |", "| --- | ---: |" + " ---: |" * len(COLUMNS)]
    for template, s in run["prompts"].items():
        lines.append(
            f"| {template.format('<subject>')} | {s['images']} | " + " | ".join(_fmt(s.get(c)) for c in COLUMNS) + " |"
        )
    return "\n".join(lines) + "\n"


def plot_dino_clipt(runs: Sequence[dict[str, Any]], path: Path, paper: bool = True) -> None:
    """PNG scatter of DINO (y) against CLIP-T (x), one labelled point per run (matplotlib, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if paper:
        for name, vals in PAPER_TABLE2:
            ax.scatter(vals[0], vals[3], marker="x", color="0.6")
            short = name.replace(" inputs)", ")").replace(" input)", ")")  # "JeDi (3)": fewer overlapping labels
            ax.annotate(short, (vals[0], vals[3]), fontsize=6, color="0.5", xytext=(3, 3), textcoords="offset points")
    for r in runs:
        x, y = r["overall"].get("CLIP-T"), r["overall"].get("DINO")
        if x is None or y is None:
            continue
        ax.scatter(x, y, s=30)
        ax.annotate(r["label"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for r in runs:
        y = (r.get("real_images") or {}).get("DINO")
        if y is not None:
            ax.axhline(y, ls="--", lw=0.8, color="0.3")
            ax.annotate(
                f"real images ({r['benchmark']}, distinct pairs)",
                (ax.get_xlim()[0], y),
                fontsize=6,
                xytext=(2, 2),
                textcoords="offset points",
            )
            break
    if paper:
        ax.set_title("grey x: JeDi paper, Table 2 (SD 1.4; number of inputs)", fontsize=8, color="0.4")
    ax.set_xlabel("CLIP-T (text alignment)")
    ax.set_ylabel("DINO (subject fidelity)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_report(runs: Sequence[dict[str, Any]], out: Path, paper: bool = True) -> list[Path]:
    """``table.md`` (+ per-subject and per-prompt tables for a single run) and ``dino_vs_clipt.png``."""
    out.mkdir(parents=True, exist_ok=True)
    text = "# Evaluation\n\n" + markdown_table(runs, paper)
    if len(runs) == 1:
        text += "\n## Per subject\n\n" + subject_table(runs[0]) + "\n## Per prompt\n\n" + prompt_table(runs[0])
    table = out / "table.md"
    table.write_text(text)
    plot = out / "dino_vs_clipt.png"
    try:
        plot_dino_clipt(runs, plot, paper)
    except ImportError:
        print("jointdiff: note: matplotlib is not installed, no plot written (pip install 'jointdiff[eval]')")
        return [table]
    return [table, plot]
