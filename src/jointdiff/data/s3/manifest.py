"""Per-set provenance of the S3 dataset: prompts, seeds, model ids, CLIP scores (JeDi sec. 3.1).

One JSON line per set, so a set can be audited (how was it made?) and the dataset filtered later
(e.g. keep sets whose minimum CLIP affinity exceeds a stricter threshold).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from jointdiff.data.s3.config import S3Config
from jointdiff.data.s3.work import DraftSet, Shard

MANIFEST = "manifest.jsonl"


def package_version() -> str:
    """The installed jointdiff version (recorded with every set)."""
    try:
        return version("jointdiff")
    except PackageNotFoundError:
        return "unknown"


def model_ids(config: S3Config) -> dict[str, str | None]:
    """Which model made each part of a set; None for a stage that did not run."""
    llm = config.llm
    return {
        "llm": llm.backend if llm.backend == "template" else f"{llm.backend}:{llm.source}",
        "text_to_image": config.text_to_image.source,
        "detector": config.detector.source,
        "segmenter": config.segmenter.source,
        "clip": config.clip.source,
        "inpainter": config.inpainter.source,
        "stylizer": config.stylizer.source if config.stylizer.probability > 0 else None,
        "captioner": config.captioner.source or None,
    }


def clip_scores(a: np.ndarray, members: list[int]) -> dict[str, Any]:
    """The CLIP affinity sub-matrix of a set's instances, with its minimum and mean off-diagonal value."""
    sub = np.asarray(a)[np.ix_(members, members)]  # (K, K) -> (n, n)
    off = sub[~np.eye(len(members), dtype=bool)]
    return {
        "affinity": np.round(sub, 5).tolist(),
        "min": round(float(off.min()), 5) if off.size else None,
        "mean": round(float(off.mean()), 5) if off.size else None,
    }


def set_record(shard: Shard, draft: DraftSet, config: S3Config) -> dict[str, Any]:
    """The manifest line of one set."""
    c = shard.collages[draft.collage]
    members = [m.instance for m in draft.members]
    return {
        "key": draft.key,
        "shard": shard.shard_id,
        "object": shard.object_name,
        "collage_seed": c.seed,
        "object_prompt": c.object_prompt,
        "collage_prompt": c.prompt,
        "clip": clip_scores(c.affinity, members),
        "images": [
            {
                "instance": m.instance,
                "instance_box": list(c.instances[m.instance].box),
                "detector_score": round(c.instances[m.instance].score, 5),
                "scene_prompt": m.scene_prompt,
                "paste_box": list(m.paste_box) if m.paste_box else None,
                "seed": m.seed,
                "style": m.style,
                "caption": m.caption,
            }
            for m in draft.members
        ],
        "models": model_ids(config),
        "config_hash": config.content_hash(),
        "jointdiff": package_version(),
    }


def read_manifest(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a manifest file."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def write_lines(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records as JSON lines; the number written."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n
