"""Single-process S3 pipeline (supplementary Algorithm 1): no Ray, one shard after another.

Also home of what both pipelines share: building the stage models from a config and the run report.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jointdiff.data.s3.config import S3Config
from jointdiff.data.s3.store import done_shards, finalize, prepare_out, write_shard
from jointdiff.data.s3.work import STEPS, Shard, plan_shards, run_step

STAGE_NAMES = ("llm", "text_to_image", "detector", "segmenter", "clip", "inpainter", "stylizer", "captioner")


def build_stage(name: str, config: S3Config) -> Any:
    """The model adapter of stage ``name`` (None for a disabled optional stage); load errors are one line."""
    from jointdiff.data.s3.adapters_diffusers import (
        DiffusersInpainter,
        DiffusersStylizer,
        DiffusersTextToImage,
        resolve_device,
        resolve_dtype,
    )
    from jointdiff.data.s3.adapters_transformers import (
        Blip2Captioner,
        ClipEmbedder,
        GroundingDinoDetector,
        SamSegmenter,
    )
    from jointdiff.data.s3.llm import build_prompt_writer

    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    spec = getattr(config, name)
    spec = dataclasses.replace(spec, source=config.resolve(spec.source))
    if name == "llm":
        return build_prompt_writer(spec, device, dtype)
    if (name == "stylizer" and spec.probability <= 0) or (name == "captioner" and not spec.source):
        return None
    adapters = {
        "text_to_image": DiffusersTextToImage,
        "detector": GroundingDinoDetector,
        "segmenter": SamSegmenter,
        "clip": ClipEmbedder,
        "inpainter": DiffusersInpainter,
        "stylizer": DiffusersStylizer,
        "captioner": Blip2Captioner,
    }
    return adapters[name](spec, device, dtype)


def preflight(config: S3Config, skip: Iterable[str] = ()) -> None:
    """Check every model source (but ``skip``) before any work: a missing directory fails here, in one line."""
    from jointdiff.data.s3.adapters_diffusers import check_source

    for name in STAGE_NAMES:
        spec = getattr(config, name)
        if (
            name == "llm"
            or name in skip
            or (name == "stylizer" and spec.probability <= 0)
            or (name == "captioner" and not spec.source)
        ):
            continue
        check_source(name, config.resolve(spec.source))


def build_stages(config: S3Config, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """All stage models, with ``overrides`` (name -> object) standing in for some of them."""
    overrides = overrides or {}
    unknown = set(overrides) - set(STAGE_NAMES)
    if unknown:
        raise ValueError(f"s3: unknown stage(s) {sorted(unknown)}; stages are {STAGE_NAMES}")
    return {n: overrides[n] if n in overrides else build_stage(n, config) for n in STAGE_NAMES}


@dataclass
class RunReport:
    """What one run did, and what the output directory holds after it."""

    planned: int = 0  # shards in the job
    skipped: int = 0  # already finished by an earlier run
    written: int = 0
    failed: int = 0  # an unexpected error; not written, a rerun retries them
    stale_removed: int = 0  # temporary directories of killed runs, removed
    counts: Counter = field(default_factory=Counter)  # summed over the shards processed now
    errors: list[str] = field(default_factory=list)  # the first few failures, "shard: step: error"
    totals: dict[str, int] = field(default_factory=dict)  # the whole output directory

    def add(self, result: dict[str, Any]) -> None:
        """Account for one shard's result from :func:`~jointdiff.data.s3.store.write_shard`."""
        self.counts.update(result["counts"])
        if result["status"] == "failed":
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"{result['shard']}: {result['error']}")
        elif result["status"] == "written":
            self.written += 1
        else:
            self.skipped += 1

    def lines(self) -> list[str]:
        """The human-readable report printed at the end of a run."""
        out = [
            f"shards: {self.planned} planned, {self.written} written, {self.skipped} already done, {self.failed} failed"
        ]
        if self.stale_removed:
            out.append(f"removed {self.stale_removed} incomplete shard(s) of an interrupted run")
        if self.counts:
            out.append("this run: " + ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()) if v))
        if self.totals:
            t = self.totals
            out.append(f"output: {t.get('sets', 0)} sets, {t.get('images', 0)} images in {t.get('shards', 0)} shards")
        out += [f"failed {e}" for e in self.errors]
        if self.failed:
            out.append("rerun the same command to retry the failed shards")
        return out


def pending(config: S3Config, out: str | Path, report: RunReport) -> list[Shard]:
    """Prepare ``out`` and return the shards not yet written, filling ``report``'s planning fields."""
    report.stale_removed = prepare_out(out, config)
    shards = plan_shards(config)
    done = done_shards(out)
    report.planned = len(shards)
    report.skipped = sum(s.shard_id in done for s in shards)
    return [s for s in shards if s.shard_id not in done]


def process_shard(shard: Shard, config: S3Config, stages: dict[str, Any]) -> Shard:
    """All steps of Algorithm 1 on one shard."""
    for step in STEPS:
        shard = run_step(step, shard, config, stages)
    return shard


def run_local(
    config: S3Config, out: str | Path, stages: dict[str, Any] | None = None, progress: bool = True
) -> RunReport:
    """Make the dataset in this process; finished shards are skipped, so a rerun resumes."""
    from tqdm.auto import tqdm

    report = RunReport()
    preflight(config, skip=stages or ())
    todo = pending(config, out, report)
    if todo:
        models = build_stages(config, stages)
        for shard in tqdm(todo, desc="s3 shards", unit="shard", disable=not progress):
            report.add(write_shard(out, process_shard(shard, config, models), config))
    report.totals = finalize(out)
    return report
