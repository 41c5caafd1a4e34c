"""Toy-world sets rendered and VAE-encoded in the data path, through a latent replay buffer (issue 27).

The alternative to a latent cache (:mod:`jointdiff.training.latent_cache`) when the machine may be
fresh: version 1's cache of 130,000 subjects took 85 minutes of both cores to build, and a run that
moves to a new machine would pay it again. Here a reader renders subjects of the toy world's
``train`` range as it goes (2.7 ms of CPU an image at 64 px) and encodes them with the model's VAE
(8.9 ms), which costs about a fifth of a miniature training step if every set drawn is new. So it
keeps the last ``buffer`` sets it made and serves draws from them at random; ``refresh`` new sets
enter per set drawn (0.25: each subject is drawn about four times, and the data path costs about
5% of a step). ``buffer = 0`` streams: every draw is a new subject.

The buffer is a pure function of how many sets the reader has made, so the reader's state is two
integers (sets made, sets drawn) and a resumed run rebuilds exactly the buffer it had: ``buffer``
renders and encodes, the only state a fresh machine rebuilds (4,000 sets of 4 views: ~3 CPU-minutes).

A source's ``path`` is ``SPLIT:START``: subjects ``START, START + 1, ...`` of a toy-world seed range
(``train:130000``: the subjects after version 1's cache). Parts (ranks x loader workers) take every
``count``-th subject, so they never render the same one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jointdiff.data.formats import BadSetError
from jointdiff.data.latents import LatentSet
from jointdiff.data.sources import Part, SetReader, Source
from jointdiff.data.toyworld.subjects import SEED_RANGES
from jointdiff.training.latent_cache import encode_records, toy_pair_records, toy_set_records

ENCODE_CHUNK = 16  # new sets made together once the buffer is full (one VAE call of 64 images; at most the buffer)


def parse_spec(path: str) -> tuple[str, int]:
    """``"train:130000"`` -> ``("train", 130000)``; ValueError naming the expected form."""
    split, _, start = path.partition(":")
    if split not in SEED_RANGES or not start.isdigit():
        raise ValueError(f"a toyworld source path is SPLIT:START with SPLIT in {', '.join(SEED_RANGES)}, got {path!r}")
    if int(start) >= len(SEED_RANGES[split]):
        raise ValueError(f"{path}: the {split} range has {len(SEED_RANGES[split])} subjects")
    return split, int(start)


class ToyWorldReader(SetReader):
    """One part's cursor: new subjects in order, served through a replay buffer of encoded sets."""

    def __init__(self, source: ToyWorldSource, seed: int, part: Part) -> None:
        if source.vae is None:
            raise ValueError(f"toyworld source {source.name}: no VAE attached (the trainer attaches the model's)")
        self.source, self.seed, self.part = source, seed, part
        self.made, self.drawn = 0, 0  # sets rendered so far by this part; draws served
        self._buffer: dict[int, LatentSet] = {}  # slot (made-index % buffer) -> set
        self._last: tuple[int, ...] | None = None

    def _index(self, k: int) -> int:
        """Subject index of this part's ``k``-th set."""
        return self.source.start + k * self.part.count + self.part.index

    def _make(self, ks: range) -> None:
        """Render and encode this part's sets ``ks`` into their buffer slots."""
        src = self.source
        for lo in range(ks.start, ks.stop, 256):
            chunk = range(lo, min(lo + 256, ks.stop))
            render = toy_pair_records if src.two_subjects else toy_set_records
            records = render([self._index(k) for k in chunk], src.split, src.resolution, src.views)
            for k, s in zip(chunk, encode_records(src.vae, records), strict=True):
                self._buffer[k % max(src.buffer, 1)] = s

    def _target(self) -> int:
        """Sets that must have been made before draw number ``drawn``: the full buffer plus the refreshes, in chunks."""
        b = self.source.buffer
        fresh = int(self.drawn * self.source.refresh)
        return b + fresh - fresh % min(ENCODE_CHUNK, b)

    def next_set(self) -> LatentSet:
        b = self.source.buffer
        if b == 0:  # streaming: a new subject per draw
            self._make(range(self.made, self.made + 1))
            self._last = (self._index(self.made),)
            self.made += 1
            self.drawn += 1
            return self._buffer.pop(0)
        target = self._target()
        if not self._buffer:  # start or resume: rebuild the buffer as it was
            self._make(range(max(0, self.made - b), self.made))
        if self.made < target:
            self._make(range(max(self.made, target - b), target))
            self.made = target
        self._last = None  # a replay: no identity shared across part counts
        rng = np.random.default_rng([self.seed, self.part.index, self.part.count, self.drawn])
        slot = int(rng.integers(b))
        self.drawn += 1
        found = self._buffer.get(slot)
        if found is None:
            raise BadSetError(f"toyworld buffer slot {slot} is empty")  # cannot happen: the buffer is full
        return found

    def identity(self) -> tuple[int, ...] | None:
        """Streaming: the subject's index (the same whichever part renders it); replays from the buffer: None."""
        return self._last

    def state_dict(self) -> dict[str, Any]:
        return {"made": self.made, "drawn": self.drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.made, self.drawn = int(state["made"]), int(state["drawn"])
        self._buffer = {}


class ToyWorldSource(Source):
    """Endless toy-world subjects, rendered and encoded on the fly (format ``toyworld``, path ``SPLIT:START``).

    ``views`` images per set (the sets' poses, settings and lights vary; the subject does not),
    ``buffer`` sets kept for replay and ``refresh`` new sets per set drawn (module docstring). The
    VAE and the resolution come from the model being trained (:meth:`attach`). ``two_subjects``: pair sets
    (issue 33), views of subject ``START + k`` alone, of a partner alone and of both
    (:func:`jointdiff.data.toyworld.pairs.make_pair_set`).
    """

    format = "toyworld"

    def __init__(
        self,
        path: str,
        name: str = "",
        views: int = 4,
        buffer: int = 0,
        refresh: float = 0.25,
        two_subjects: bool = False,
    ) -> None:
        super().__init__(path, name or path)
        self.split, self.start = parse_spec(path)
        if views < 1 or buffer < 0 or not 0.0 < refresh <= 1.0:
            raise ValueError(
                f"toyworld source: views >= 1, buffer >= 0, 0 < refresh <= 1; got {views}, {buffer}, {refresh}"
            )
        if two_subjects and views < 2:
            raise ValueError(f"toyworld source: a two-subject set has at least 2 views, got {views}")
        self.views, self.buffer, self.refresh, self.two_subjects = views, buffer, refresh, two_subjects
        self.vae: Any | None = None
        self.resolution = 64

    def attach(self, vae: Any, resolution: int) -> None:
        """Encode with ``vae`` (frozen, eval mode) at ``resolution`` pixels."""
        self.vae, self.resolution = vae, resolution

    def __len__(self) -> int:
        return len(SEED_RANGES[self.split]) - self.start  # the seed range's subjects from ``start``

    def reader(self, seed: int, part: Part, shuffle: bool = True) -> SetReader:
        return ToyWorldReader(self, seed, part)


def attach_vae(sources: list[Any], vae: Any, resolution: int) -> int:
    """Give every toyworld source among ``sources`` (WeightedSource or Source) the model's VAE; how many."""
    count = 0
    for s in sources:
        source = getattr(s, "source", s)
        if isinstance(source, ToyWorldSource):
            source.attach(vae, resolution)
            count += 1
    return count
