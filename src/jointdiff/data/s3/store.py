"""On-disk layout of an S3 run: one directory per shard, each written atomically, resumable.

```
OUT/run.json                      config and its content hash (a rerun must match it)
OUT/shards/<shard>/paper/         <key>.png + <key>.txt per set (paper format)
OUT/shards/<shard>/<shard>-000000.tar   the same sets as one WebDataset shard
OUT/shards/<shard>/manifest.jsonl one provenance record per set
OUT/shards/<shard>/counts.json    what happened in this shard (skips, drops, failures)
OUT/manifest.jsonl, OUT/summary.json    merged over all finished shards at the end of a run
```

A shard is built in ``shards/.tmp-*`` and renamed into place in one step, so a killed job
leaves only hidden temporary directories (removed by the next run) and whole shards.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from jointdiff.data.formats import ImageSet, WebDatasetWriter, write_paper_set
from jointdiff.data.s3.config import S3Config
from jointdiff.data.s3.manifest import MANIFEST, read_manifest, set_record, write_lines
from jointdiff.data.s3.work import Shard

SHARDS = "shards"
RUN = "run.json"
COUNTS = "counts.json"
SUMMARY = "summary.json"
TMP_PREFIX = ".tmp-"


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def prepare_out(out: str | Path, config: S3Config) -> int:
    """Create ``out``, record or check the config, remove leftovers of killed runs; the number removed.

    Once ``out`` holds a finished shard, only a config with the same content hash may add to it.
    """
    out = Path(out)
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    run = out / RUN
    digest = config.content_hash()
    if run.exists() and done_shards(out):  # a run that wrote nothing (e.g. a model failed to load) binds nothing
        try:
            previous = json.loads(run.read_text(encoding="utf-8")).get("config_hash")
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"s3: {run} is unreadable ({e}); use a new --out") from e
        if previous != digest:
            raise ValueError(
                f"s3: {out} holds shards made with another config (hash {previous}, now {digest}); "
                "use a new --out or restore that config"
            )
    else:
        _write_json(run, {"config_hash": digest, "config": config.to_dict()})
    stale = [p for p in (out / SHARDS).iterdir() if p.name.startswith(TMP_PREFIX)]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return len(stale)


def done_shards(out: str | Path) -> set[str]:
    """Ids of the shards already written (a shard directory exists only once complete)."""
    d = Path(out) / SHARDS
    return {p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")} if d.exists() else set()


def image_sets(shard: Shard) -> list[ImageSet]:
    """The finished sets of a shard in the training format of :mod:`jointdiff.data.formats`."""
    return [
        ImageSet(images=[m.image for m in s.members], captions=[m.caption for m in s.members], key=s.key)
        for s in shard.sets
    ]


def write_shard(out: str | Path, shard: Shard, config: S3Config) -> dict[str, Any]:
    """Write one finished shard atomically; returns ``{"shard", "status", "sets", "images", "counts"}``.

    status: ``written``, ``exists`` (another worker finished it first) or ``failed`` (not written).
    """
    result = {"shard": shard.shard_id, "sets": 0, "images": 0, "counts": dict(shard.counts), "error": shard.error}
    if shard.error is not None:
        return {**result, "status": "failed"}
    root = Path(out) / SHARDS
    final = root / shard.shard_id
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f"{TMP_PREFIX}{shard.shard_id}-"))
    try:
        sets = image_sets(shard)
        if "paper" in config.formats:
            for s in sets:
                write_paper_set(tmp / "paper", s.key, s)
        if "webdataset" in config.formats and sets:
            with WebDatasetWriter(tmp, prefix=shard.shard_id, sets_per_shard=len(sets)) as writer:
                for s in sets:
                    writer.write(s)
        write_lines(tmp / MANIFEST, (set_record(shard, d, config) for d in shard.sets))
        counts = Counter(shard.counts)
        counts["sets"] = len(sets)
        counts["images"] = sum(len(s) for s in sets)
        _write_json(tmp / COUNTS, dict(counts))
        try:
            os.rename(tmp, final)  # the commit: one atomic step
        except OSError:
            if final.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
                return {**result, "status": "exists"}
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**result, "status": "written", "sets": counts["sets"], "images": counts["images"], "counts": dict(counts)}


def finalize(out: str | Path) -> dict[str, int]:
    """Merge the shard manifests into ``OUT/manifest.jsonl`` (sorted by shard) and sum their counts."""
    out = Path(out)
    totals: Counter = Counter()
    shards = sorted(done_shards(out))

    def records():
        for s in shards:
            path = out / SHARDS / s / MANIFEST
            if path.exists():
                yield from read_manifest(path)

    tmp = out / f".{MANIFEST}.tmp"
    n = write_lines(tmp, records())
    os.replace(tmp, out / MANIFEST)
    for s in shards:
        path = out / SHARDS / s / COUNTS
        if path.exists():
            totals.update(json.loads(path.read_text(encoding="utf-8")))
    totals["shards"] = len(shards)
    assert totals["sets"] == n, f"manifest has {n} records, counts say {totals['sets']} sets"
    _write_json(out / SUMMARY, dict(totals))
    return dict(totals)
