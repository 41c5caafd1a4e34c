"""Encode image sets once with a VAE into latent shards (``jointdiff cache-latents``).

Inputs are toy-world sets rendered on the fly (with exact foreground masks and short captions)
or any stored image-set source (paper, folder, webdataset). The work is cut into shards that are
pure functions of their index, so worker processes share nothing, a stopped job resumes by
running the same command again (finished shards are skipped) and the result does not depend on
the number of workers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from jointdiff.data.latents import LatentSet, shard_name, vae_fingerprint, write_latent_shard, write_manifest
from jointdiff.jedi.attention import pool_labels
from jointdiff.jedi.encoding import encode_latents, latent_factors


class Record(NamedTuple):
    """One set before encoding."""

    key: str
    images: np.ndarray  # (N, H, W, 3) uint8
    masks: np.ndarray | None  # (N, H, W) foreground coverage in [0, 1], or None
    captions: list[list[str]]  # per image: caption variants
    regions: np.ndarray | None = None  # (N, H, W) int: each pixel's subject (two-subject sets), or None


@dataclass
class CacheJob:
    """What to encode and where (every field is recorded in the cache's ``latents.json``)."""

    out: str
    model: str  # a pipeline directory (its vae/) or an AutoencoderKL directory
    source: str = "toyworld"  # "toyworld", or a stored source "FORMAT:PATH" (paper, folder, webdataset)
    sets: int = 1000  # toyworld: sets to render
    start: int = 0  # toyworld: first set index of the split
    split: str = "train"
    set_size: int = 0  # toyworld: images per set; 0 = 2-4 at random (paper)
    keep_identity: bool = True  # toyworld: no recolouring / cube views, no styles
    resolution: int = 64
    sets_per_shard: int = 1000
    workers: int = 2

    def __post_init__(self) -> None:
        if self.source != "toyworld" and ":" not in self.source:
            raise ValueError(f"source must be 'toyworld' or FORMAT:PATH, got {self.source!r}")
        for name in ("sets", "sets_per_shard", "workers", "resolution"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.set_size < 0:
            raise ValueError(f"set_size must be >= 0, got {self.set_size}")


def toy_set_records(
    indices: list[int], split: str, resolution: int, views: int, keep_identity: bool = True
) -> list[Record]:
    """Rendered toy sets (``views`` images each; 0: 2-4 at random): uint8 images, exact masks and per image its
    full and short (class-word) caption."""
    from jointdiff.data.toyworld.captions import caption
    from jointdiff.data.toyworld.generator import make_set

    records = []
    for i in indices:
        style_p = 0.0 if keep_identity else 0.5
        s = make_set(i, split, resolution, set_size=views or None, style_p=style_p, keep_identity=keep_identity)
        short = [caption(v.condition, s.subject.class_word, "", v.style) for v in s.views]
        records.append(
            Record(
                s.key,
                np.stack([v.image for v in s.views]),
                np.stack([v.mask for v in s.views]).astype(np.float32),
                [[v.caption, sh] if sh != v.caption else [v.caption] for v, sh in zip(s.views, short, strict=True)],
            )
        )
    return records


def toy_pair_records(indices: list[int], split: str, resolution: int, views: int) -> list[Record]:
    """Rendered two-subject sets (issue 33; ``views`` images each, 0: 2-4 at random): views of subject A alone, B
    alone and both (:func:`jointdiff.data.toyworld.pairs.make_pair_set`), the masks of both subjects' pixels,
    per image its full and short (class words) caption, and each pixel's subject (``PairSet.regions``)."""
    from jointdiff.data.toyworld.pairs import make_pair_set, short_caption

    records = []
    for i in indices:
        s = make_pair_set(i, split, resolution, set_size=views or None)
        short = [short_caption(v, s.subjects, shows) for v, shows in zip(s.views, s.shows, strict=True)]
        captions = [[v.caption, sh] if sh != v.caption else [v.caption] for v, sh in zip(s.views, short, strict=True)]
        images = np.stack([v.image for v in s.views])
        records.append(Record(s.key, images, s.masks().astype(np.float32), captions, s.regions()))
    return records


def toy_records(job: CacheJob, shard: int) -> list[Record]:
    """The rendered sets of toyworld shard ``shard``: images, exact masks, full and short captions."""
    lo = job.start + shard * job.sets_per_shard
    hi = min(job.start + job.sets, lo + job.sets_per_shard)
    return toy_set_records(list(range(lo, hi)), job.split, job.resolution, job.set_size, job.keep_identity)


def _source_shards(job: CacheJob) -> tuple[Any, int]:
    """A stored source and its number of output shards (one per input tar, or per ``sets_per_shard`` files)."""
    from jointdiff.data.sources import IndexedSource, open_source

    fmt, path = job.source.split(":", 1)
    source = open_source(fmt, path)
    if isinstance(source, IndexedSource):
        return source, -(-len(source) // job.sets_per_shard)
    return source, len(source)


def source_records(job: CacheJob, shard: int) -> list[Record]:
    """The sets of stored-source shard ``shard`` (images resized to the job's resolution; no masks)."""
    from jointdiff.data.formats import BadSetError
    from jointdiff.data.sources import IndexedSource, decode_sample, read_shard
    from jointdiff.data.stream import to_tensor

    source, _ = _source_shards(job)
    if isinstance(source, IndexedSource):
        items = source.items[shard * job.sets_per_shard : (shard + 1) * job.sets_per_shard]
        sets = []
        for item in items:
            try:
                sets.append(source.read(item))
            except BadSetError as e:
                tqdm.write(f"skipping {item}: {e}")
    else:
        samples, error = read_shard(source.shards[shard])
        if error is not None:
            tqdm.write(f"warning: {error}")
        sets = []
        for key, sample in samples:
            try:
                sets.append(decode_sample(key, sample))
            except BadSetError as e:
                tqdm.write(f"skipping {key}: {e}")
    records = []
    for s in sets:
        pixels = torch.stack([to_tensor(im, job.resolution) for im in s.images])  # (N, 3, R, R) in [-1, 1]
        images = ((pixels.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        records.append(Record(s.key, images, None, [[c] for c in s.captions]))
    return records


def load_vae(model: str) -> Any:
    """The AutoencoderKL of a pipeline directory (``vae/``) or of a VAE directory, in eval mode."""
    from diffusers import AutoencoderKL

    path = Path(model)
    sub = path / "vae" if (path / "vae" / "config.json").is_file() else path
    if not (sub / "config.json").is_file():
        raise ValueError(f"--model: no VAE config in {model} (expected a pipeline directory or a VAE directory)")
    return AutoencoderKL.from_pretrained(sub).eval()


@torch.no_grad()
def encode_records(vae: Any, records: list[Record], batch: int = 256) -> list[LatentSet]:
    """Scaled latents ``(mode - shift) * scaling`` (float32, CPU), area-averaged foreground and, for two-subject sets,
    the subject labels at latent resolution (each latent pixel: the label of most of its pixels) of every set."""
    if not records:
        return []
    images = torch.from_numpy(np.concatenate([r[1] for r in records])).permute(0, 3, 1, 2).float() / 127.5 - 1
    z = torch.cat(
        [encode_latents(vae, images[i : i + batch].to(vae.device)).float().cpu() for i in range(0, len(images), batch)]
    )  # (M, C, h, w)
    factor = images.shape[-1] // z.shape[-1]
    h, w = z.shape[2:]
    out, row = [], 0
    for r in records:
        n = len(r.images)
        fg = regions = None
        if r.masks is not None:
            fg = torch.nn.functional.avg_pool2d(torch.from_numpy(r.masks)[:, None], factor)[:, 0]  # (N, h, w)
        if r.regions is not None:  # (N, H, W) -> (N, h, w)
            regions = pool_labels(torch.from_numpy(r.regions).long(), h * w).reshape(n, h, w).to(torch.int8)
        out.append(LatentSet(z[row : row + n], r.captions, r.key, fg, regions))
        row += n
    return out


def _work(args: tuple[CacheJob, list[int]]) -> int:
    """Worker process: encode and write the listed shards (one thread: the processes share the cores)."""
    job, shards = args
    torch.set_num_threads(1)
    vae = load_vae(job.model)
    produce: Callable[[CacheJob, int], list[Record]] = toy_records if job.source == "toyworld" else source_records
    images = 0
    for shard in shards:
        sets = encode_records(vae, produce(job, shard))
        if sets:
            write_latent_shard(Path(job.out) / shard_name("latents", shard), sets)
        images += sum(len(s) for s in sets)
    return images


def cache_latents(job: CacheJob, progress: bool = True) -> dict[str, Any]:
    """Encode ``job``'s sets into ``job.out`` (resumable); returns counts and throughput."""
    from jointdiff.data.toyworld.writers import TOYWORLD_VERSION

    out = Path(job.out)
    vae = load_vae(job.model)
    shards = -(-job.sets // job.sets_per_shard) if job.source == "toyworld" else _source_shards(job)[1]
    manifest = {
        **{k: v for k, v in asdict(job).items() if k not in ("out", "model", "workers")},
        "vae_fingerprint": vae_fingerprint(vae),
        "scaling_factor": latent_factors(vae)[0],
        "shift_factor": latent_factors(vae)[1],
        "latent_channels": int(vae.config.latent_channels),
        "toyworld_version": TOYWORLD_VERSION if job.source == "toyworld" else None,
    }
    write_manifest(out, manifest, volatile=("sets",))  # a larger --sets extends the cache
    todo = [i for i in range(shards) if not (out / shard_name("latents", i)).exists()]
    t0, images = time.perf_counter(), 0
    chunks = [(job, [i]) for i in todo]
    bar = tqdm(total=len(todo), desc="latent shards", disable=not progress)
    if job.workers == 1:
        for c in chunks:
            images += _work(c)
            bar.update()
    else:
        with ProcessPoolExecutor(job.workers) as pool:
            for n in pool.map(_work, chunks):
                images += n
                bar.update()
    bar.close()
    seconds = time.perf_counter() - t0
    report = {
        "shards": shards,
        "written_now": len(todo),
        "images_now": images,
        "seconds": round(seconds, 1),
        "images_per_second": round(images / seconds, 1) if images and seconds > 0 else None,
    }
    (out / "cache_report.json").write_text(json.dumps(report, indent=2))
    return report
