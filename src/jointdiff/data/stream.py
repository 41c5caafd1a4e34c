"""Batches of image sets: weighted mixing of sources, set-size draws, bucketing or slot masks (JeDi sec. 4).

:class:`SetSampler` builds batches for one part (rank x loader worker) from seeded draws and
resumable readers; bad sets are skipped with a warning and counted, never trained on.
:class:`SetBatchStream` runs one sampler per data-loader worker and tags each batch with its
sampler's state after the batch, so the trainer can checkpoint the exact data position of
every worker (see :func:`resume_offset`).

Batching modes (``set_size = (lo, hi)``):

- ``bucket``: the source and the set size n ~ U{lo..hi} (capped by the source's
  ``max_set_size``) are drawn per batch; every set of the batch keeps a random subset of
  min(n, smallest set of the batch) images, so all sets of a batch have one size and no set
  is thrown away (sources with sets of mixed sizes lean towards their small sizes: use ``pad``).
- ``pad``: source and size are drawn per set; a set keeps min(n, len) images; the batch is
  padded to its largest set and ``slot_mask`` marks the real slots (padding is excluded from
  coupled attention and from the loss).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch
from torch.utils.data import IterableDataset, get_worker_info

from jointdiff.data.formats import BadSetError, ImageSet
from jointdiff.data.latents import LatentSet
from jointdiff.data.sources import Part, SetReader, Source

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_BAD = 1000  # a source that yields this many bad sets in a row is broken, not noisy


@dataclass(frozen=True)
class BatchSpec:
    """Shape of the batches a sampler builds."""

    batch_size: int  # sets per batch
    resolution: int  # side of the square images, pixels
    set_size: tuple[int, int] = (2, 4)  # inclusive range of images per set (paper: 2-4)
    batching: Literal["bucket", "pad"] = "bucket"
    short_caption_probability: float = 0.0  # P(an image's short caption variant), where the data has one

    def __post_init__(self) -> None:
        lo, hi = self.set_size
        if self.batch_size < 1 or self.resolution < 1 or not 1 <= lo <= hi:
            raise ValueError(f"invalid batch spec {self}")
        if not 0.0 <= self.short_caption_probability <= 1.0:
            raise ValueError(f"short_caption_probability must be in [0, 1], got {self.short_caption_probability}")
        if self.batching not in ("bucket", "pad"):
            raise ValueError(f"batching must be 'bucket' or 'pad', got {self.batching!r}")


@dataclass(frozen=True)
class WeightedSource:
    """A source with its mixing weight and an optional cap on images per set (1 for single-image data)."""

    source: Source
    weight: float = 1.0
    max_set_size: int | None = None


def to_tensor(image: PIL.Image.Image, resolution: int) -> torch.Tensor:
    """A square RGB image -> ``(3, R, R)`` float in [-1, 1], resized (bicubic) when needed."""
    if image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), PIL.Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.float32)  # (R, R, 3)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0)  # (R, R, 3) -> (3, R, R)


def _mix_seed(seed: int, part: int) -> int:
    return (seed * 6_364_136_223_846_793_005 + part * 1_442_695_040_888_963_407 + 1) % (2**63)


class SetSampler:
    """Draws batches of sets for one part: weighted source choice, set size, subsets; skips bad sets."""

    def __init__(self, sources: Sequence[WeightedSource], spec: BatchSpec, seed: int, part: Part, shuffle: bool = True):
        if not sources:
            raise ValueError("no data sources")
        weights = torch.tensor([s.weight for s in sources], dtype=torch.float64)
        if bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError(f"source weights must be >= 0 with a positive sum, got {weights.tolist()}")
        self.sources, self.spec, self.part = list(sources), spec, part
        self.weights = weights / weights.sum()
        self.readers: list[SetReader] = [s.source.reader(seed, part, shuffle) for s in sources]
        self.rng = torch.Generator().manual_seed(_mix_seed(seed, part.index))
        self.skipped: Counter[str] = Counter()  # "source/bad" -> sets skipped
        self.drawn: Counter[str] = Counter()  # source name -> sets put into batches
        self.batches = 0

    # ---- draws
    def _choose_source(self) -> int:
        return int(torch.multinomial(self.weights, 1, generator=self.rng))

    def _choose_size(self, i: int) -> int:
        lo, hi = self.spec.set_size
        cap = self.sources[i].max_set_size
        if cap is not None:
            lo, hi = min(lo, cap), min(hi, cap)
        return int(torch.randint(lo, hi + 1, (1,), generator=self.rng))

    def _next_set(self, i: int) -> ImageSet | LatentSet:
        """The next good set of source ``i``; bad ones are skipped, counted and (rate-limited) logged."""
        name = self.sources[i].source.name
        for _ in range(MAX_CONSECUTIVE_BAD):
            try:
                return self.readers[i].next_set()
            except BadSetError as e:
                self.skipped[f"{name}/bad"] += 1
                count = self.skipped[f"{name}/bad"]
                if count <= 10 or count % 1000 == 0:
                    logger.warning("skipping bad set #%d of source %s: %s", count, name, e)
        raise ValueError(f"source {name}: {MAX_CONSECUTIVE_BAD} unreadable sets in a row; see the warnings above")

    def _subset(self, item: ImageSet | LatentSet, n: int) -> tuple[list[int], list[str]]:
        """A random ordered subset of ``n`` images of a set: their indices and captions.

        A latent set's image keeps its short caption variant with ``short_caption_probability``.
        """
        idx = torch.randperm(len(item), generator=self.rng)[:n].tolist()
        if isinstance(item, ImageSet):
            return idx, [item.captions[j] for j in idx]
        short = torch.rand(n, generator=self.rng) < self.spec.short_caption_probability
        return idx, [
            item.captions[j][1 if s and len(item.captions[j]) > 1 else 0]
            for j, s in zip(idx, short.tolist(), strict=True)
        ]

    # ---- batches
    def next_batch(self) -> dict[str, Any]:
        """One batch of sets, padded to its largest set: ``slot_mask`` (B, N), ``captions`` B lists of N, ``keys``,
        and ``pixel_values`` (B, N, 3, R, R) in [-1, 1] for image sources, or ``latents`` (B, N, C, h, w)
        and ``foreground`` (B, N, h, w) in [0, 1] for cached-latent sources (all sources of a run alike)."""
        b, r = self.spec.batch_size, self.spec.resolution
        members: list[tuple[int, ImageSet | LatentSet, list[int], list[str]]] = []
        if self.spec.batching == "bucket":
            i = self._choose_source()
            n = self._choose_size(i)
            sets = [self._next_set(i) for _ in range(b)]
            n = min([n] + [len(s) for s in sets])
            members = [(i, s, *self._subset(s, n)) for s in sets]
        else:
            for _ in range(b):
                i = self._choose_source()
                n = self._choose_size(i)
                s = self._next_set(i)
                members.append((i, s, *self._subset(s, min(n, len(s)))))
        n_max = max(len(m[2]) for m in members)
        latent = [isinstance(m[1], LatentSet) for m in members]
        if any(latent) and not all(latent):
            raise ValueError("cached-latent and image sources cannot be mixed in one run")
        slot_mask = torch.zeros(b, n_max, dtype=torch.bool)
        captions: list[list[str]] = []
        batch: dict[str, Any] = {}
        if all(latent):
            first = members[0][1].latents  # type: ignore[union-attr]
            lat = torch.zeros(b, n_max, *first.shape[1:])
            fg = torch.zeros(b, n_max, *first.shape[2:])
            for row, (_, s, idx, _) in enumerate(members):
                assert isinstance(s, LatentSet)
                lat[row, : len(idx)] = s.latents[idx]
                fg[row, : len(idx)] = s.foreground[idx] if s.foreground is not None else 1.0
            batch.update(latents=lat, foreground=fg)
        else:
            pixels = torch.zeros(b, n_max, 3, r, r)
            for row, (_, s, idx, _) in enumerate(members):
                assert isinstance(s, ImageSet)
                for j, k in enumerate(idx):
                    pixels[row, j] = to_tensor(s.images[k], r)
            batch["pixel_values"] = pixels
        for row, (i, _, idx, caps) in enumerate(members):
            slot_mask[row, : len(idx)] = True
            captions.append(caps + [""] * (n_max - len(caps)))
            self.drawn[self.sources[i].source.name] += 1
        self.batches += 1
        batch.update(
            slot_mask=slot_mask,
            captions=captions,
            keys=[f"{self.sources[i].source.name}/{s.key}" for i, s, _, _ in members],
        )
        return batch

    # ---- position
    def state_dict(self) -> dict[str, Any]:
        """Everything that decides the following batches (and the counters), for exact resume."""
        return {
            "rng": self.rng.get_state(),
            "readers": [rd.state_dict() for rd in self.readers],
            "skipped": dict(self.skipped),
            "drawn": dict(self.drawn),
            "batches": self.batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["readers"]) != len(self.readers):
            raise ValueError(f"data state has {len(state['readers'])} sources, the config has {len(self.readers)}")
        self.rng.set_state(state["rng"])
        for rd, st in zip(self.readers, state["readers"], strict=True):
            rd.load_state_dict(st)
        self.skipped, self.drawn = Counter(state["skipped"]), Counter(state["drawn"])
        self.batches = int(state["batches"])


def resume_offset(consumed: int, num_workers: int) -> int:
    """Role rotation on resume: ``DataLoader`` takes batch k from worker ``k % W``, so after
    ``consumed`` batches the new worker ``w`` continues the stream of old worker ``(w + consumed) % W``."""
    return consumed % max(num_workers, 1)


class SetBatchStream(IterableDataset):
    """Endless batches for one rank; each data-loader worker owns one part (``rank * W + role``).

    Use with ``DataLoader(stream, batch_size=None, num_workers=W)``. Each batch carries
    ``data_state = {"role": r, "state": ...}``: the state of role ``r`` after this batch.
    ``resume = {"consumed": k, "num_workers": W, "roles": {r: state}}`` continues exactly.
    """

    def __init__(
        self,
        sources: Sequence[WeightedSource],
        spec: BatchSpec,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        resume: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.sources, self.spec, self.seed, self.shuffle = list(sources), spec, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.resume = resume

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        role, roles = worker, {}
        if self.resume is not None:
            if int(self.resume["num_workers"]) != workers:
                raise ValueError(
                    f"data state was saved with {self.resume['num_workers']} loader workers, now {workers}: "
                    "exact resume needs the same data.num_workers"
                )
            role = (worker + resume_offset(int(self.resume["consumed"]), workers)) % workers
            roles = self.resume["roles"]
        sampler = SetSampler(
            self.sources,
            self.spec,
            self.seed,
            Part(self.rank * workers + role, self.world_size * workers),
            self.shuffle,
        )
        if role in roles:
            sampler.load_state_dict(roles[role])
        while True:
            batch = sampler.next_batch()
            batch["data_state"] = {"role": role, "state": sampler.state_dict()}
            yield batch


def skipped_total(roles: dict[int, dict[str, Any]]) -> Counter[str]:
    """Bad-set counts summed over the latest states of all roles."""
    total: Counter[str] = Counter()
    for state in roles.values():
        total.update(state["skipped"])
    return total
