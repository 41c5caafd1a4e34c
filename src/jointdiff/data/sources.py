"""Sources of image sets and resumable cursors over them (JeDi sec. 4, supplementary sec. 6).

A *source* lists its sets once, in the main process (so a bad path fails at start). A
*reader* is the cursor of one *part* of a source: training splits each source into
``world_size * num_workers`` parts, one per (rank, data-loader worker). Readers loop over epochs
forever; each epoch has a seeded order shared by all parts, so the parts of one epoch
partition the data. A reader's position is a few integers (:meth:`SetReader.state_dict`), so
a run resumes exactly where it stopped.

Paper and folder sources are indexed (random access by file); WebDataset sources are streamed
shard by shard (a shard is read once into memory as bytes, permuted, then decoded set by set).
"""

from __future__ import annotations

import glob
import re
import subprocess
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from jointdiff.data.formats import (
    FOLDER_CAPTIONS,
    IMAGE_EXTENSIONS,
    BadSetError,
    ImageSet,
    decode_paper_set,
    iter_tar_samples,
    read_folder_set,
    read_paper_set,
)

FORMATS = (
    "paper",
    "folder",
    "webdataset",
    "latents",
)  # stored sets; toy subjects made on the fly: training/toystream.py


@dataclass(frozen=True)
class Part:
    """Share ``index`` of ``count`` equal shares of a source (one per rank and loader worker)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"part index {self.index} not in [0, {self.count})")


def _epoch_permutation(n: int, seed: int, epoch: int, salt: int = 0) -> list[int]:
    """The order of ``n`` items in ``epoch``: the same in every part and process."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + salt) % (2**63))
    return torch.randperm(n, generator=g).tolist()


class SetReader(ABC):
    """Endless cursor over one part of a source; ``next_set`` advances even when it raises BadSetError."""

    @abstractmethod
    def next_set(self) -> ImageSet:
        """The next set of this part; raises :class:`BadSetError` for an unreadable one (then skip it)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Position, as plain ints and bools."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position from :meth:`state_dict`."""

    def identity(self) -> tuple[int, ...] | None:
        """What the set last returned is, the same whichever part reads it: ``(epoch, item)``. The trainer keys the
        set's random draws by it, so they do not depend on the number of processes. None: no such identity."""
        return None


class IndexedReader(SetReader):
    """Cursor over a list of set files: seeded permutation per epoch, strided by part."""

    def __init__(
        self, items: list[Path], read: Callable[[Path], ImageSet], seed: int, part: Part, shuffle: bool = True
    ) -> None:
        self.items, self.read, self.seed, self.part, self.shuffle = items, read, seed, part, shuffle
        self.epoch, self.index = 0, 0
        self._order: list[int] | None = None
        self._last: tuple[int, int] | None = None

    def _epoch_order(self) -> list[int]:
        if self._order is None:
            n = len(self.items)
            order = _epoch_permutation(n, self.seed, self.epoch) if self.shuffle else list(range(n))
            # Fewer items than parts: every part walks all items (tiny data); otherwise a stride.
            self._order = order[self.part.index :: self.part.count] if n >= self.part.count else order
        return self._order

    def next_set(self) -> ImageSet:
        order = self._epoch_order()
        if self.index >= len(order):
            self.epoch, self.index, self._order = self.epoch + 1, 0, None
            order = self._epoch_order()
        item = order[self.index]
        self._last = (self.epoch, item)
        self.index += 1
        return self.read(self.items[item])

    def identity(self) -> tuple[int, ...] | None:
        return self._last

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index, self._order = int(state["epoch"]), int(state["index"]), None


def _open_stream(url: str) -> tuple[IO[bytes], subprocess.Popen[bytes] | None]:
    """A byte stream of a shard: a local file, or the stdout of ``pipe:COMMAND`` (e.g. ``pipe:aws s3 cp s3://b/x.tar -``)."""
    if url.startswith("pipe:"):
        proc = subprocess.Popen(url[5:], shell=True, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        return proc.stdout, proc
    return open(url, "rb"), None


def read_shard(url: str) -> tuple[list[tuple[str, dict[str, bytes]]], BadSetError | None]:
    """All samples of a shard as bytes, plus the error that cut it short (truncated or corrupt), if any."""
    samples: list[tuple[str, dict[str, bytes]]] = []
    try:
        stream, proc = _open_stream(url)
    except OSError as e:
        return samples, BadSetError(f"{url}: cannot open shard ({e})")
    error: BadSetError | None = None
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            samples.extend(iter_tar_samples(tar, where=url))
    except BadSetError as e:
        error = e
    except (tarfile.TarError, OSError, EOFError) as e:
        error = BadSetError(f"{url}: corrupt or truncated shard ({type(e).__name__}: {e})")
    finally:
        stream.close()
        if proc is not None and proc.wait() != 0 and error is None:
            error = BadSetError(f"{url}: command exited with status {proc.returncode}")
    return samples, error


class ShardReader(SetReader):
    """Streaming cursor over shards: shards split among parts, one shard in memory at a time.

    ``load(url)`` reads a whole shard as ``(key, sample)`` pairs plus the error that cut it short;
    ``decode(key, sample)`` makes a set of a sample (default: WebDataset tars of paper sets).

    With at least as many shards as parts, each part reads its own shards (seeded order per
    epoch); with fewer, every part reads every shard and keeps every ``count``-th sample of
    the epoch (counted across shards). A part left without samples for a whole epoch (fewer
    samples than parts) falls back to reading all samples.
    """

    def __init__(
        self,
        shards: list[str],
        seed: int,
        part: Part,
        shuffle: bool = True,
        load: Callable[[str], tuple[list[tuple[str, Any]], BadSetError | None]] | None = None,
        decode: Callable[[str, Any], Any] | None = None,
    ) -> None:
        self.shards, self.seed, self.part, self.shuffle = shards, seed, part, shuffle
        self.load = load or read_shard
        self.decode = decode or decode_sample
        self.sample_split = len(shards) < part.count
        self.epoch, self.shard_pos, self.sample_pos = 0, 0, 0
        self.base = 0  # samples in the earlier shards of this epoch (sample-level split)
        self.kept_in_epoch = 0  # samples this part got in this epoch so far
        self.everything = False  # fallback: this part reads every sample
        self.error_reported = False
        self._order: list[int] | None = None
        self._samples: list[tuple[str, Any]] | None = None
        self._ids: list[int] = []  # each loaded sample's index in its shard (before splitting and shuffling)
        self._last: tuple[int, int, int] | None = None
        self._shard_total = 0
        self._error: BadSetError | None = None

    def _shard_order(self) -> list[int]:
        if self._order is None:
            n = len(self.shards)
            order = _epoch_permutation(n, self.seed, self.epoch) if self.shuffle else list(range(n))
            self._order = order if self.sample_split else order[self.part.index :: self.part.count]
        return self._order

    def _load(self) -> None:
        shard = self._shard_order()[self.shard_pos]
        samples, self._error = self.load(self.shards[shard])
        self._shard_total = len(samples)
        ids = list(range(len(samples)))
        if self.sample_split and not self.everything:
            ids = [i for i in ids if (self.base + i) % self.part.count == self.part.index]
        if self.shuffle:
            order = _epoch_permutation(len(ids), self.seed, self.epoch, salt=shard + 1)
            ids = [ids[i] for i in order]
        self._samples, self._ids = [samples[i] for i in ids], ids

    def _advance_shard(self) -> None:
        self.base += self._shard_total
        self.kept_in_epoch += len(self._samples or [])
        self.shard_pos, self.sample_pos, self._samples, self.error_reported = self.shard_pos + 1, 0, None, False
        if self.shard_pos >= len(self._shard_order()):
            if self.kept_in_epoch == 0:
                if self.everything or self.base == 0:
                    raise ValueError(f"WebDataset {self.shards[0]}...: no readable samples in any shard")
                self.everything = True
            self.epoch, self.shard_pos, self.base, self.kept_in_epoch, self._order = self.epoch + 1, 0, 0, 0, None

    def next_set(self) -> ImageSet:
        while True:
            if self._samples is None:
                self._load()
            assert self._samples is not None
            if self._error is not None and not self.error_reported:
                self.error_reported = True  # reported once; the samples read before the damage are still used
                raise self._error
            if self.sample_pos < len(self._samples):
                key, sample = self._samples[self.sample_pos]
                self._last = (self.epoch, self._shard_order()[self.shard_pos], self._ids[self.sample_pos])
                self.sample_pos += 1
                return self.decode(key, sample)
            self._advance_shard()

    def identity(self) -> tuple[int, ...] | None:
        return self._last

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "shard_pos": self.shard_pos,
            "sample_pos": self.sample_pos,
            "base": self.base,
            "kept_in_epoch": self.kept_in_epoch,
            "everything": self.everything,
            "error_reported": self.error_reported,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.shard_pos, self.sample_pos = (
            int(state["epoch"]),
            int(state["shard_pos"]),
            int(state["sample_pos"]),
        )
        self.base, self.kept_in_epoch = int(state["base"]), int(state["kept_in_epoch"])
        self.everything, self.error_reported = bool(state["everything"]), bool(state["error_reported"])
        self._order, self._samples, self._error = None, None, None


def decode_sample(key: str, sample: dict[str, bytes]) -> ImageSet:
    """A WebDataset sample (``png``/``jpg`` + ``txt``) -> ImageSet, or BadSetError."""
    image = next((sample[e] for e in ("png", "jpg", "jpeg", "webp") if e in sample), None)
    if image is None or "txt" not in sample:
        raise BadSetError(f"sample '{key}': needs an image (png/jpg/webp) and a txt member, has {sorted(sample)}")
    return decode_paper_set(image, sample["txt"], key=key)


_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_braces(pattern: str) -> list[str]:
    """WebDataset shard patterns: ``shard-{000000..000009}.tar`` -> 10 names (zero padding kept)."""
    m = _BRACES.search(pattern)
    if m is None:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    width = len(lo) if lo.startswith("0") else 0
    head, tail = pattern[: m.start()], pattern[m.end() :]
    return [x for i in range(int(lo), int(hi) + 1) for x in expand_braces(f"{head}{i:0{width}d}{tail}")]


class Source(ABC):
    """A listed collection of sets in one format; ``reader(seed, part)`` opens a cursor in a worker."""

    format: str

    def __init__(self, path: str, name: str = "") -> None:
        self.path = path
        self.name = name or Path(path.rstrip("/")).name or path

    @abstractmethod
    def __len__(self) -> int:
        """Number of set files (paper, folder) or shards (webdataset)."""

    @abstractmethod
    def reader(self, seed: int, part: Part, shuffle: bool = True) -> SetReader:
        """A cursor over ``part`` of this source."""


class IndexedSource(Source):
    """A source of one file or directory per set (``items``), read by ``read``: random access."""

    items: list[Path]

    @staticmethod
    @abstractmethod
    def read(item: Path) -> ImageSet:
        """The set stored at ``item`` (BadSetError when unreadable)."""

    def __len__(self) -> int:
        return len(self.items)

    def reader(self, seed: int, part: Part, shuffle: bool = True) -> SetReader:
        return IndexedReader(self.items, self.read, seed, part, shuffle)


class PaperSource(IndexedSource):
    """Paper-format sets under a directory (recursive): every image file with a ``.txt`` beside it."""

    format = "paper"
    read = staticmethod(read_paper_set)

    def __init__(self, path: str, name: str = "") -> None:
        super().__init__(path, name)
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"no such directory: {path}")
        self.items = sorted(
            p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )


class FolderSource(IndexedSource):
    """One set per directory (recursive) holding images and ``captions.txt``."""

    format = "folder"
    read = staticmethod(read_folder_set)

    def __init__(self, path: str, name: str = "") -> None:
        super().__init__(path, name)
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"no such directory: {path}")
        dirs = {p.parent for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS or p.name == FOLDER_CAPTIONS}
        self.items = sorted(dirs)


class WebDatasetSource(Source):
    """Tar shards: a directory (its ``*.tar``), a glob, a brace pattern, or ``pipe:`` commands; comma-separated."""

    format = "webdataset"
    suffix = ".tar"

    def __init__(self, path: str, name: str = "") -> None:
        super().__init__(path, name)
        shards: list[str] = []
        for spec in (s.strip() for s in path.split(",") if s.strip()):
            for url in expand_braces(spec):
                if url.startswith("pipe:"):
                    shards.append(url)
                elif Path(url).is_dir():
                    shards.extend(str(p) for p in sorted(Path(url).glob(f"*{self.suffix}")))
                elif any(c in url for c in "*?["):
                    shards.extend(sorted(glob.glob(url)))
                elif Path(url).is_file():
                    shards.append(url)
                else:
                    raise ValueError(f"no such shard or directory: {url}")
        self.shards = shards

    def __len__(self) -> int:
        return len(self.shards)

    def reader(self, seed: int, part: Part, shuffle: bool = True) -> SetReader:
        return ShardReader(self.shards, seed, part, shuffle)


def _as_is(_key: str, sample: Any) -> Any:
    return sample


class LatentSource(WebDatasetSource):
    """Cached-latent shards (:mod:`jointdiff.data.latents`): a directory (its ``*.safetensors``), globs, brace patterns."""

    format = "latents"
    suffix = ".safetensors"

    def __init__(self, path: str, name: str = "") -> None:
        super().__init__(path, name)
        if any(s.startswith("pipe:") for s in self.shards):
            raise ValueError("latent shards are read from files; pipe: is for webdataset tars")

    def reader(self, seed: int, part: Part, shuffle: bool = True) -> SetReader:
        from jointdiff.data.latents import read_latent_shard

        return ShardReader(self.shards, seed, part, shuffle, load=read_latent_shard, decode=_as_is)

    def manifests(self) -> list[dict[str, Any]]:
        """The ``latents.json`` of every directory holding these shards (which VAE encoded them)."""
        from jointdiff.data.latents import read_manifest

        found = [read_manifest(d) for d in sorted({str(Path(s).parent) for s in self.shards})]
        return [m for m in found if m is not None]


def open_source(format: str, path: str, name: str = "") -> Source:
    """List a source; ValueError when the path is missing or holds no sets."""
    classes = {"paper": PaperSource, "folder": FolderSource, "webdataset": WebDatasetSource, "latents": LatentSource}
    if format not in classes:
        raise ValueError(f"unknown data format '{format}' (choose from {', '.join(FORMATS)})")
    source = classes[format](path, name)
    if len(source) == 0:
        raise ValueError(f"{path}: no {format} sets found")
    return source


def iter_sets(source: Source) -> Iterator[ImageSet | BadSetError]:
    """One pass over a source in storage order (tools and tests): each set, or the error of a bad one."""
    reader = source.reader(seed=0, part=Part(), shuffle=False)
    state = reader.state_dict()
    while True:
        try:
            item: ImageSet | BadSetError = reader.next_set()
        except BadSetError as e:
            item = e
        if reader.state_dict().get("epoch", 0) > state.get("epoch", 0):
            return
        yield item
