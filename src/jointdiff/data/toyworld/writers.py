"""Writing toy-world sets to disk in the training formats of ``jointdiff.data.formats`` (resumable, multi-process).

``write_sets`` renders set indices ``start .. start + count - 1`` of a split with a pool of
worker processes (each set depends only on its index, so the output does not depend on the
number of workers) and writes them in the main process: paper files ``{key}.png`` + ``{key}.txt``
or WebDataset tar shards. A manifest ``toyworld.json`` records the parameters; running the same
command again skips finished sets (paper) or finished shards (webdataset).
"""

from __future__ import annotations

import json
import os
import time
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import PIL.Image
from tqdm import tqdm

if TYPE_CHECKING:
    from jointdiff.data.formats import WebDatasetWriter

MANIFEST = "toyworld.json"
TOYWORLD_VERSION = 1  # bump when rendering changes pixels for a given seed


def _render(args: tuple[int, str, int, int | None, float]) -> tuple[str, list[np.ndarray], list[str], list[np.ndarray]]:
    from jointdiff.data.toyworld.generator import make_set

    index, split, resolution, set_size, style_p = args
    s = make_set(index, split, resolution, set_size, style_p)
    return s.key, [v.image for v in s.views], [v.caption for v in s.views], [v.mask for v in s.views]


def _check_manifest(out: Path, manifest: dict) -> None:
    """Refuse to mix data sets in one directory; the set count may grow between runs (resume, extend)."""
    path = out / MANIFEST
    if path.exists():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in manifest.items() if k != "count" and old.get(k) != v}
        if diff:
            raise ValueError(f"{out} holds another toy-world data set (differs in {diff}); use another --out")
        manifest = {**manifest, "count": max(int(old.get("count", 0)), manifest["count"])}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def write_sets(
    out: str | Path,
    count: int,
    split: str = "train",
    start: int = 0,
    fmt: str = "paper",
    resolution: int = 64,
    set_size: int | None = None,
    style_p: float = 0.5,
    workers: int = 2,
    sets_per_shard: int = 1000,
    masks_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Render and write ``count`` sets; returns counts and the wall time. Rerun to resume."""
    from jointdiff.data.formats import WebDatasetWriter
    from jointdiff.data.toyworld.generator import set_key
    from jointdiff.data.toyworld.subjects import subject_seed

    if fmt not in ("paper", "webdataset"):
        raise ValueError(f"unknown format {fmt!r}; choose paper or webdataset")
    if count < 1 or start < 0 or workers < 1:
        raise ValueError(f"need count >= 1, start >= 0, workers >= 1 (got {count}, {start}, {workers})")
    if not 0.0 <= style_p <= 1.0:
        raise ValueError(f"style_p must be in [0, 1], got {style_p}")
    subject_seed(split, start + count - 1)  # range check of the last index
    out = Path(out)
    if masks_dir is not None and _inside(Path(masks_dir), out):
        raise ValueError(f"--masks {masks_dir} must not be inside --out {out} (the set readers scan --out recursively)")
    manifest = {
        "generator": "jointdiff.data.toyworld",
        "version": TOYWORLD_VERSION,
        "split": split,
        "start": start,
        "count": count,
        "resolution": resolution,
        "set_size": set_size,
        "style_p": style_p,
        "format": fmt,
        "sets_per_shard": sets_per_shard if fmt == "webdataset" else None,
    }
    _check_manifest(out, manifest)
    indices = list(range(start, start + count))
    writer = None
    if fmt == "paper":
        todo = [i for i in indices if not (out / f"{set_key(split, i)}.png").exists()]
    else:  # whole shards are skipped: the finished ones hold the first sets, in order
        writer = WebDatasetWriter(out, prefix="shard", sets_per_shard=sets_per_shard)
        todo = indices[writer.resume() * sets_per_shard :]
    if masks_dir is not None:
        Path(masks_dir).mkdir(parents=True, exist_ok=True)
    jobs = [(i, split, resolution, set_size, style_p) for i in todo]
    t0 = time.perf_counter()
    bar = tqdm(total=count, initial=count - len(todo), unit="set", desc=f"toyworld {split} sets", disable=not progress)
    try:
        n_images = _write_rendered(jobs, out, writer, masks_dir, workers, bar)
    finally:
        bar.close()
    return {
        "out": str(out),
        "format": fmt,
        "written": len(todo),
        "skipped": count - len(todo),
        "images": n_images,
        "seconds": round(time.perf_counter() - t0, 2),
        "workers": workers,
    }


def _write_rendered(
    jobs: list[tuple[int, str, int, int | None, float]],
    out: Path,
    writer: WebDatasetWriter | None,
    masks_dir: str | Path | None,
    workers: int,
    bar: tqdm,
) -> int:
    """Render the sets of ``jobs`` (in a pool of ``workers`` processes) and write them in order: paper files in
    ``out``, or through the WebDataset ``writer`` (closed at the end, its open shard dropped on an error); the
    exact masks in ``masks_dir``. Returns the number of images written."""
    from jointdiff.data.formats import ImageSet, write_paper_set

    n_images = 0
    ctx = get_context("fork") if hasattr(os, "fork") else get_context()
    pool = ctx.Pool(workers) if workers > 1 and len(jobs) > 1 else None
    try:
        results = pool.imap(_render, jobs, chunksize=8) if pool is not None else map(_render, jobs)
        for key, images, captions, masks in results:
            image_set = ImageSet([PIL.Image.fromarray(im, "RGB") for im in images], captions, key=key)
            if writer is not None:
                writer.write(image_set)
            else:
                write_paper_set(out, key, image_set)
            if masks_dir is not None:
                PIL.Image.fromarray(np.concatenate(masks, 0).astype(np.uint8) * 255, "L").save(
                    Path(masks_dir) / f"{key}.png"
                )
            n_images += len(images)
            bar.update(1)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if pool is not None:
            pool.terminate()
    return n_images


SHEET_CONDITIONS = ("studio", "jungle", "snow", "beach", "city", "wheat_field", "water", "mirror", "red", "cube")


def contact_sheet(
    out: str | Path, split: str = "eval", start: int = 0, subjects: int = 8, resolution: int = 64, style_every: int = 4
) -> Path:
    """A PNG grid: one row per subject, one column per condition in ``SHEET_CONDITIONS`` (+ outfits for pets)."""
    from jointdiff.data.toyworld.generator import render_view, sample_style, view_rng
    from jointdiff.data.toyworld.subjects import make_subject, subject_seed

    rows = []
    for i in range(start, start + subjects):
        subject = make_subject(subject_seed(split, i))
        conds = list(SHEET_CONDITIONS)
        if subject.live:
            conds[-2:] = ["red_hat", "wizard"]
        row = []
        for k, c in enumerate(conds):
            rng = view_rng(subject.seed, 5000 + k)
            style = sample_style(rng, 1.0) if k == len(conds) - 1 - style_every else None
            row.append(render_view(subject, c, rng, resolution, style=style).image)
        rows.append(np.concatenate(row, 1))  # (R, C*R, 3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(np.concatenate(rows, 0)).save(out)
    return out
