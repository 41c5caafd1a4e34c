"""One evaluation run: generate (or collect) images, score them, write results and reports.

In several processes (``accelerate launch --num_processes N -m jointdiff.cli evaluate ...``) generation is
split over (subject, input choice) jobs and scoring over subjects; the main process alone writes ``run.json``,
``timing.json``, the results and the reports, which are those of one process.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from jointdiff.evaluation.benchmarks import Benchmark, select_subjects
from jointdiff.evaluation.options import EvalConfig
from jointdiff.evaluation.protocol import Method, collect_images, generate_images
from jointdiff.evaluation.report import COLUMNS, json_safe, write_json, write_report
from jointdiff.evaluation.scoring import IMAGE_METRICS, PROTOCOLS, Scorer, aggregate, score_samples

# EvalConfig fields that change which images are generated (a cache made with others is not reused)
_GENERATION_KEYS = ("refs", "inputs", "num_random", "seed")


def _check_run_file(out: Path, settings: dict[str, Any], overwrite: bool, write: bool = True) -> None:
    """Refuse to mix a cache with images made under other generation settings; record them when ``write``."""
    path = out / "run.json"
    if path.is_file() and not overwrite:
        old = json.loads(path.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(
                f"{str(out)!r} holds images made with other settings ({', '.join(diff)}); "
                "use another --out, or --overwrite to reuse its images anyway"
            )
    out.mkdir(parents=True, exist_ok=True)
    if write:
        write_json(settings, path)


def _identity(overall: dict[str, Any]) -> dict[str, Any]:
    """The identity metrics (those scored against real images) of an overall summary."""
    return {m: overall.get(m) for m in IMAGE_METRICS.values()}


def evaluate(
    out: Path,
    benchmark: Benchmark,
    scorer: Scorer,
    config: EvalConfig,
    method: Method | None = None,
    images_dir: Path | None = None,
    subjects: list[str] | None = None,
    label: str | None = None,
    method_settings: dict[str, Any] | None = None,
    overwrite: bool = False,
    report: bool = True,
    paper: bool = True,
    processes: Any = None,
) -> dict[str, Any]:
    """Evaluate ``method`` (generating into ``out/images``, resumable) or the images in ``images_dir``.

    ``processes``: accelerate's ``PartialState`` when the run is split over several processes (every process
    calls this and gets the results; the main one writes the files)."""
    if (method is None) == (images_dir is None):
        raise ValueError("give exactly one of a method or an images directory")
    main = processes is None or processes.is_main_process
    out = Path(out)
    chosen = select_subjects(benchmark.subjects(), subjects)
    stats: dict[str, int] = {}
    if method is not None:
        settings = {"method": method.name, "benchmark": benchmark.name}
        settings |= {k: asdict(config)[k] for k in _GENERATION_KEYS} | {"method_settings": method_settings or {}}
        _check_run_file(out, settings, overwrite, write=False)  # every process refuses alike
        if processes is not None:
            processes.wait_for_everyone()  # every process has read run.json before the main one writes it
        _check_run_file(out, settings, overwrite, write=main)
        samples, stats = generate_images(method, benchmark, chosen, config, out / "images", processes)
        refs = config.refs
        label = label or f"{method.name} ({refs} input{'s' if refs > 1 else ''})"
    else:
        samples = collect_images(Path(images_dir), benchmark, chosen)  # type: ignore[arg-type]
        stats = {"generated": 0, "cached": len(samples)}
        label = label or Path(images_dir).resolve().name  # type: ignore[arg-type]
        out.mkdir(parents=True, exist_ok=True)
    rows, real = score_samples(samples, benchmark, chosen, scorer, out / "features", config.against, processes)
    summary = aggregate(rows, COLUMNS)
    protocols = {config.against: _identity(summary["overall"])}
    for other in PROTOCOLS:  # the identity metrics under the other protocols, from the same (cached) features
        if other != config.against and all(s.choice is not None for s in samples):
            other_rows, _ = score_samples(samples, benchmark, chosen, scorer, out / "features", other, processes)
            protocols[other] = _identity(aggregate(other_rows, COLUMNS)["overall"])
    results = {
        "label": label,
        "method": method.name if method is not None else None,
        "images_dir": str(images_dir) if images_dir is not None else None,
        "benchmark": benchmark.name,
        "config": asdict(config) | {"input_mode": config.input_mode},
        "method_settings": method_settings or {},
        "scoring": scorer.identity(),
        "num_images": len(samples),
        "num_subjects": len(summary["subjects"]),
        "generation": stats,
        "protocol": {"name": config.against, "meaning": PROTOCOLS[config.against]},
        "overall": summary["overall"],
        "protocols": protocols,  # identity metrics under every protocol (overall is under `protocol`)
        "real_images": real,
        "subjects": summary["subjects"],
        "prompts": summary["prompts"],
    }
    if not main:
        return results
    write_json(results, out / "results.json")
    with open(out / "scores.jsonl", "w") as f:  # per-image scores (and per-group diversity)
        for r in rows:
            f.write(json.dumps(json_safe(r)) + "\n")
    if report:
        write_report([results], out, paper=paper)
    return results
