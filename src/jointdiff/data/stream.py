"""Batches of image sets: weighted mixing of sources, set-size draws, bucketing or slot masks (JeDi sec. 4).

:class:`SetSampler` builds batches for one part (rank x loader worker) from keyed draws and
resumable readers; bad sets are skipped with a warning and counted, never trained on. A draw is
keyed by what it is about, not by the order a part meets it in: a batch's source and set size by
the batch's number (the training step), a set's subset by the set's identity in its source, and
each set carries a seed of its own (``seeds``) for the trainer's draws. So two processes with
batches of b draw for a set what one process with batches of 2b draws for it.
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

from jointdiff.common.seeding import keyed_generator, stable_seed
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


class SetSampler:
    """Draws batches of sets for one part: weighted source choice, set size, subsets; skips bad sets.

    ``slots = (first, stride)``: this part's set ``j`` of a batch is set ``first + stride * j`` of the batch of
    all processes (``(rank, world_size)``), which keys its source and size in ``pad`` batching.
    """

    def __init__(
        self,
        sources: Sequence[WeightedSource],
        spec: BatchSpec,
        seed: int,
        part: Part,
        shuffle: bool = True,
        slots: tuple[int, int] = (0, 1),
    ):
        if not sources:
            raise ValueError("no data sources")
        weights = torch.tensor([s.weight for s in sources], dtype=torch.float64)
        if bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError(f"source weights must be >= 0 with a positive sum, got {weights.tolist()}")
        self.sources, self.spec, self.part, self.seed, self.slots = list(sources), spec, part, seed, slots
        self.weights = weights / weights.sum()
        self.readers: list[SetReader] = [s.source.reader(seed, part, shuffle) for s in sources]
        self.skipped: Counter[str] = Counter()  # "source/bad" -> sets skipped
        self.drawn: Counter[str] = Counter()  # source name -> sets put into batches
        self.batches = 0

    # ---- draws
    def _choose(self, g: torch.Generator) -> tuple[int, int]:
        """A source by weight and a set size ~ U{lo..hi} (capped by the source's ``max_set_size``)."""
        i = int(torch.multinomial(self.weights, 1, generator=g))
        lo, hi = self.spec.set_size
        cap = self.sources[i].max_set_size
        if cap is not None:
            lo, hi = min(lo, cap), min(hi, cap)
        return i, int(torch.randint(lo, hi + 1, (1,), generator=g))

    def _next_set(self, i: int, number: int, j: int) -> tuple[ImageSet | LatentSet, int]:
        """The next good set of source ``i`` and its seed; bad ones are skipped, counted and (rate-limited) logged.

        The seed is keyed by the set's identity in its source; a reader without one keys it by this part,
        the batch ``number`` and the position ``j`` in it (still exact on resume, not across part counts).
        """
        name = self.sources[i].source.name
        for _ in range(MAX_CONSECUTIVE_BAD):
            try:
                item = self.readers[i].next_set()
                identity = self.readers[i].identity()
                if identity is not None:
                    return item, stable_seed(self.seed, "set", i, *identity)
                return item, stable_seed(self.seed, "part", self.part.index, self.part.count, number, j)
            except BadSetError as e:
                self.skipped[f"{name}/bad"] += 1
                count = self.skipped[f"{name}/bad"]
                if count <= 10 or count % 1000 == 0:
                    logger.warning("skipping bad set #%d of source %s: %s", count, name, e)
        raise ValueError(f"source {name}: {MAX_CONSECUTIVE_BAD} unreadable sets in a row; see the warnings above")

    def _subset(self, item: ImageSet | LatentSet, n: int, seed: int) -> tuple[list[int], list[str]]:
        """A random ordered subset of ``n`` images of a set (drawn from the set's ``seed``): indices and captions.

        A latent set's image keeps its short caption variant with ``short_caption_probability``.
        """
        g = keyed_generator(seed, "subset")
        idx = torch.randperm(len(item), generator=g)[:n].tolist()
        if isinstance(item, ImageSet):
            return idx, [item.captions[j] for j in idx]
        short = torch.rand(n, generator=g) < self.spec.short_caption_probability
        return idx, [
            item.captions[j][1 if s and len(item.captions[j]) > 1 else 0]
            for j, s in zip(idx, short.tolist(), strict=True)
        ]

    # ---- batches
    def next_batch(self, number: int | None = None) -> dict[str, Any]:
        """Batch ``number`` (default: this part's count so far), padded to its largest set: ``slot_mask`` (B, N),
        ``captions`` B lists of N, ``keys``, ``seeds`` (B,) int64 (each set's own), and ``pixel_values``
        (B, N, 3, R, R) in [-1, 1] for image sources, or ``latents`` (B, N, C, h, w) and ``foreground``
        (B, N, h, w) in [0, 1] for cached-latent sources (all sources of a run alike), with ``regions`` (B, N, h, w)
        long, each pixel's subject (-1: none), where a set of the batch has subject labels (two-subject sets)."""
        b, r = self.spec.batch_size, self.spec.resolution
        number = self.batches if number is None else number
        members: list[tuple[int, ImageSet | LatentSet, int, list[int], list[str]]] = []
        if self.spec.batching == "bucket":  # one source and size for the batch of every process
            i, n = self._choose(keyed_generator(self.seed, "batch", number))
            sets = [self._next_set(i, number, j) for j in range(b)]
            n = min([n] + [len(s) for s, _ in sets])
            members = [(i, s, sd, *self._subset(s, n, sd)) for s, sd in sets]
        else:  # source and size per set, keyed by its slot in the batch of every process
            first, stride = self.slots
            for j in range(b):
                i, n = self._choose(keyed_generator(self.seed, "slot", number, first + stride * j))
                s, sd = self._next_set(i, number, j)
                members.append((i, s, sd, *self._subset(s, min(n, len(s)), sd)))
        n_max = max(len(m[3]) for m in members)
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
            for row, (_, s, _, idx, _) in enumerate(members):
                assert isinstance(s, LatentSet)
                lat[row, : len(idx)] = s.latents[idx]
                fg[row, : len(idx)] = s.foreground[idx] if s.foreground is not None else 1.0
            batch.update(latents=lat, foreground=fg)
            if any(s.regions is not None for _, s, _, _, _ in members):  # type: ignore[union-attr]
                reg = torch.full((b, n_max, *first.shape[2:]), -1, dtype=torch.long)
                for row, (_, s, _, idx, _) in enumerate(members):
                    if s.regions is not None:  # type: ignore[union-attr]
                        reg[row, : len(idx)] = s.regions[idx].long()  # type: ignore[union-attr]
                batch["regions"] = reg
        else:
            pixels = torch.zeros(b, n_max, 3, r, r)
            for row, (_, s, _, idx, _) in enumerate(members):
                assert isinstance(s, ImageSet)
                for j, k in enumerate(idx):
                    pixels[row, j] = to_tensor(s.images[k], r)
            batch["pixel_values"] = pixels
        for row, (i, _, _, idx, caps) in enumerate(members):
            slot_mask[row, : len(idx)] = True
            captions.append(caps + [""] * (n_max - len(caps)))
            self.drawn[self.sources[i].source.name] += 1
        self.batches += 1
        batch.update(
            slot_mask=slot_mask,
            captions=captions,
            keys=[f"{self.sources[i].source.name}/{s.key}" for i, s, _, _, _ in members],
            seeds=torch.tensor([sd for _, _, sd, _, _ in members], dtype=torch.int64),
        )
        return batch

    # ---- position
    def state_dict(self) -> dict[str, Any]:
        """Everything that decides the following batches (and the counters), for exact resume."""
        return {
            "readers": [rd.state_dict() for rd in self.readers],
            "skipped": dict(self.skipped),
            "drawn": dict(self.drawn),
            "batches": self.batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["readers"]) != len(self.readers):
            raise ValueError(f"data state has {len(state['readers'])} sources, the config has {len(self.readers)}")
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
            slots=(self.rank, self.world_size),
        )
        if role in roles:
            sampler.load_state_dict(roles[role])
        while True:
            # DataLoader serves role r's j-th batch as this rank's batch j * W + r: the step, the same on every rank.
            batch = sampler.next_batch(sampler.batches * workers + role)
            batch["data_state"] = {"role": role, "state": sampler.state_dict()}
            yield batch


def skipped_total(roles: dict[int, dict[str, Any]]) -> Counter[str]:
    """Bad-set counts summed over the latest states of all roles."""
    total: Counter[str] = Counter()
    for state in roles.values():
        total.update(state["skipped"])
    return total
