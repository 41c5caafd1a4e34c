"""On-disk formats of image sets (JeDi sec. 3.1, supplementary sec. 6): paper files, folders, tar shards.

A set holds 1..N square RGB images of one subject with one caption each. Three layouts:

- **paper**: ``{key}.png`` with the N images stacked vertically (N = H / W) and ``{key}.txt``
  with the captions joined by ``<|split|>``.
- **folder**: one directory per set holding image files and a ``captions.txt`` (one caption
  per line, in the sorted order of the image file names).
- **webdataset**: tar shards whose samples are the paper files, ``{key}.png`` + ``{key}.txt``,
  so one shard member pair is one set and the ``webdataset`` library reads them as-is.

Readers raise :class:`BadSetError` (a ``ValueError``) for corrupt, truncated or non-square
images and mismatched caption counts; loaders catch it, warn, count and skip the set.
Writers are atomic: files appear under their final name only once complete.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import PIL.Image

SPLIT = "<|split|>"  # caption separator of the paper's text files
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
FOLDER_CAPTIONS = "captions.txt"
_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_-]*$")  # no dots: webdataset splits key/extension at the first dot


class BadSetError(ValueError):
    """A stored set that must not be trained on (corrupt image, wrong shape, caption mismatch)."""


@dataclass
class ImageSet:
    """One subject: square RGB images of one size, one caption per image (JeDi sec. 3.1)."""

    images: list[PIL.Image.Image]  # square RGB images of one subject, all the same size
    captions: list[str]  # one caption per image
    key: str = ""  # unique id within a source

    def __post_init__(self) -> None:
        where = f"set '{self.key}'" if self.key else "set"
        if not self.images:
            raise BadSetError(f"{where}: no images")
        if len(self.captions) != len(self.images):
            raise BadSetError(f"{where}: {len(self.images)} images but {len(self.captions)} captions")
        size = self.images[0].size
        for i, im in enumerate(self.images):
            if im.mode != "RGB":
                raise BadSetError(f"{where}: image {i} has mode {im.mode}, expected RGB (use .convert('RGB'))")
            if im.size != size or im.width != im.height:
                raise BadSetError(f"{where}: image {i} is {im.width}x{im.height}; images must be square and {size}")
        for i, c in enumerate(self.captions):
            if not isinstance(c, str) or SPLIT in c:
                raise BadSetError(f"{where}: caption {i} must be a str without '{SPLIT}'")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        """Side length of the (square) images in pixels."""
        return self.images[0].width


def _check_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"invalid set key {key!r}: use letters, digits, '_' and '-' only (no dots or slashes)")
    return key


def stack_images(images: list[PIL.Image.Image]) -> PIL.Image.Image:
    """N square images -> one image of width W and height N*W (the paper's storage layout)."""
    w = images[0].width
    canvas = PIL.Image.new("RGB", (w, w * len(images)))
    for i, im in enumerate(images):
        canvas.paste(im, (0, i * w))
    return canvas


def split_stacked(image: PIL.Image.Image, where: str = "image") -> list[PIL.Image.Image]:
    """Inverse of :func:`stack_images`; raises :class:`BadSetError` unless H is a multiple of W."""
    w, h = image.size
    if w == 0 or h % w != 0:
        raise BadSetError(f"{where}: {w}x{h} is not N square images stacked vertically (height % width != 0)")
    return [image.crop((0, i * w, w, (i + 1) * w)) for i in range(h // w)]


def encode_paper_set(image_set: ImageSet) -> tuple[bytes, bytes]:
    """The paper files of a set as bytes: (PNG of the stacked images, UTF-8 captions joined by SPLIT)."""
    buf = io.BytesIO()
    stack_images(image_set.images).save(buf, format="PNG")
    return buf.getvalue(), SPLIT.join(image_set.captions).encode("utf-8")


def decode_image(data: bytes, where: str) -> PIL.Image.Image:
    """Decode and fully load an image (so truncation is detected here), as RGB."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as e:
        raise BadSetError(f"{where}: unreadable image ({type(e).__name__}: {e})") from e


def decode_captions(data: bytes, where: str) -> list[str]:
    """Captions of a paper text file; whitespace around each caption is stripped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadSetError(f"{where}: captions are not UTF-8") from e
    return [c.strip() for c in text.split(SPLIT)]


def decode_paper_set(image_bytes: bytes, text_bytes: bytes, key: str = "", where: str = "") -> ImageSet:
    """A set from the bytes of its paper files; :class:`BadSetError` if they do not form a valid set."""
    where = where or key or "set"
    images = split_stacked(decode_image(image_bytes, where), where)
    captions = decode_captions(text_bytes, where)
    if len(captions) != len(images):
        raise BadSetError(f"{where}: {len(images)} stacked images but {len(captions)} captions")
    return ImageSet(images=images, captions=captions, key=key)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary file beside ``path``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_paper_set(directory: str | Path, key: str, image_set: ImageSet) -> None:
    """Write ``{key}.png`` (images stacked vertically) and ``{key}.txt`` (captions joined by SPLIT), atomically.

    The text file is renamed into place first, so a visible ``{key}.png`` always has its captions.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    png, txt = encode_paper_set(image_set)
    _atomic_write(directory / f"{_check_key(key)}.txt", txt)
    _atomic_write(directory / f"{key}.png", png)


def read_paper_set(image_path: str | Path, text_path: str | Path | None = None) -> ImageSet:
    """Read a paper-format set; ``text_path`` defaults to the image path with suffix ``.txt``."""
    image_path = Path(image_path)
    text_path = Path(text_path) if text_path is not None else image_path.with_suffix(".txt")
    try:
        image_bytes, text_bytes = image_path.read_bytes(), text_path.read_bytes()
    except OSError as e:
        raise BadSetError(f"{image_path}: cannot read set files ({e})") from e
    return decode_paper_set(image_bytes, text_bytes, key=image_path.stem, where=str(image_path))


def write_folder_set(directory: str | Path, image_set: ImageSet) -> Path:
    """Write a set as a folder ``directory/{key}/`` with ``000.png``, ``001.png``, ... and ``captions.txt``."""
    if any("\n" in c for c in image_set.captions):
        raise ValueError(f"set '{image_set.key}': folder captions are one per line; a caption contains a newline")
    folder = Path(directory) / _check_key(image_set.key)
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(image_set.images):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        _atomic_write(folder / f"{i:03d}.png", buf.getvalue())
    _atomic_write(folder / FOLDER_CAPTIONS, ("\n".join(image_set.captions) + "\n").encode("utf-8"))
    return folder


def read_folder_set(folder: str | Path) -> ImageSet:
    """Read a folder set: image files in sorted name order, ``captions.txt`` one caption per line."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    try:
        lines = (folder / FOLDER_CAPTIONS).read_bytes()
        images = [decode_image(p.read_bytes(), str(p)) for p in files]
    except OSError as e:
        raise BadSetError(f"{folder}: cannot read set files ({e})") from e
    captions = [c.strip() for c in decode_captions(lines, str(folder))[0].splitlines() if c.strip()]
    if len(captions) != len(images):
        raise BadSetError(f"{folder}: {len(images)} images but {len(captions)} captions in {FOLDER_CAPTIONS}")
    return ImageSet(images=images, captions=captions, key=folder.name)


def _tar_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    """A reproducible tar member (fixed mtime/owner) so identical sets give identical shards."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    return info, io.BytesIO(data)


class WebDatasetWriter:
    """Write sets into WebDataset tar shards ``{prefix}-{i:06d}.tar`` (``{key}.png`` + ``{key}.txt`` per set).

    A context manager. Each shard is written to a hidden temporary file and renamed when full
    (or on close), so readers never see a partial shard. Sets without a key get ``{index:09d}``.
    """

    def __init__(self, out_dir: str | Path, prefix: str = "shard", sets_per_shard: int = 1000) -> None:
        if sets_per_shard < 1:
            raise ValueError(f"sets_per_shard must be >= 1, got {sets_per_shard}")
        self.out_dir = Path(out_dir)
        self.prefix = _check_key(prefix)
        self.sets_per_shard = sets_per_shard
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shards: list[Path] = []  # completed shards, in order
        self.count = 0  # sets written
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None
        self._in_shard = 0
        self._keys: set[str] = set()

    def resume(self) -> int:
        """Continue after the shards a previous writer finished in ``out_dir``: drop its partial temporary shards
        and number the next shard after the finished ones (``{prefix}-000000.tar`` on, without a gap). Call it
        before the first :meth:`write`; returns the number of finished shards."""
        if self.count or self._tar is not None:
            raise RuntimeError("resume() must come before the first write()")
        for stale in self.out_dir.glob(f".{self.prefix}-*.tmp"):
            stale.unlink()
        while (self.out_dir / f"{self.prefix}-{len(self.shards):06d}.tar").exists():
            self.shards.append(self.out_dir / f"{self.prefix}-{len(self.shards):06d}.tar")
        return len(self.shards)

    def write(self, image_set: ImageSet) -> None:
        """Append one set; opens a new shard every ``sets_per_shard`` sets."""
        key = _check_key(image_set.key or f"{self.count:09d}")
        if key in self._keys:
            raise ValueError(f"duplicate set key '{key}' in this WebDataset")
        if self._tar is None:
            final = self.out_dir / f"{self.prefix}-{len(self.shards):06d}.tar"
            fd, tmp = tempfile.mkstemp(dir=self.out_dir, prefix=f".{final.name}.", suffix=".tmp")
            os.close(fd)
            self._tmp = Path(tmp)
            self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 - stays open across write() calls; closed in close()/abort()
        png, txt = encode_paper_set(image_set)
        self._tar.addfile(*_tar_member(f"{key}.png", png))
        self._tar.addfile(*_tar_member(f"{key}.txt", txt))
        self._keys.add(key)
        self.count += 1
        self._in_shard += 1
        if self._in_shard >= self.sets_per_shard:
            self._finish_shard()

    def _finish_shard(self) -> None:
        assert self._tar is not None and self._tmp is not None
        self._tar.close()
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())
        final = self.out_dir / f"{self.prefix}-{len(self.shards):06d}.tar"
        os.replace(self._tmp, final)
        self.shards.append(final)
        self._tar, self._tmp, self._in_shard = None, None, 0

    def close(self) -> None:
        """Finish the open shard (if any)."""
        if self._tar is not None:
            self._finish_shard()

    def abort(self) -> None:
        """Drop the open, incomplete shard; completed shards stay."""
        if self._tar is not None:
            self._tar.close()
            assert self._tmp is not None
            self._tmp.unlink(missing_ok=True)
            self._tar, self._tmp, self._in_shard = None, None, 0

    def __enter__(self) -> WebDatasetWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def iter_tar_samples(tar: tarfile.TarFile | str | Path, where: str = "") -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream ``(key, {extension: bytes})`` samples of a WebDataset shard in member order.

    Members are grouped by consecutive key (the base name up to its first dot), as WebDataset
    does. A truncated or corrupt tar raises :class:`BadSetError` after the complete samples
    read before the damage (the sample cut short is dropped).
    """
    if not isinstance(tar, tarfile.TarFile):
        where = where or str(tar)
        try:
            with tarfile.open(tar, "r|*") as opened:
                yield from iter_tar_samples(opened, where)
        except OSError as e:
            raise BadSetError(f"{where}: cannot open shard ({e})") from e
        return
    key: str | None = None
    sample: dict[str, bytes] = {}
    try:
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            if base.startswith(".") or "." not in base:
                continue
            k, ext = base.split(".", 1)
            if k != key:
                if key is not None:
                    yield key, sample
                key, sample = k, {}
            f = tar.extractfile(member)
            sample[ext.lower()] = f.read() if f is not None else b""
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BadSetError(f"{where or 'shard'}: corrupt or truncated shard ({type(e).__name__}: {e})") from e
    if key is not None:
        yield key, sample
