"""Resumable caches of an evaluation run: generated images (PNG files) and image features.

Images are written atomically (temporary file, then rename); an unreadable cached image is deleted
and reported as missing so the protocol regenerates it. Features are keyed by the SHA-1 of the image
file (or of the pixels for in-memory images), so a regenerated image never reuses stale features.

Both are safe with concurrent writers (processes of one run, or runs sharing ``--out``): every writer
has its own temporary file, and a feature file is updated under a lock by merging into what is on disk
(no writer's features are lost, no reader sees half a file).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import PIL.Image
import torch
from safetensors.torch import load_file, save_file


def load_cached_image(path: Path) -> PIL.Image.Image | None:
    """The fully decoded cached image, or None if absent; a corrupt file is deleted and None returned."""
    if not path.is_file():
        return None
    try:
        with PIL.Image.open(path) as f:
            f.load()  # decode all pixels: truncated or garbled files fail here
            image = f.convert("RGB")
    except (OSError, SyntaxError, ValueError):
        path.unlink(missing_ok=True)
        return None
    image.filename = str(path)  # type: ignore[attr-defined]
    return image


def save_image(image: PIL.Image.Image, path: Path) -> PIL.Image.Image:
    """Write ``image`` as PNG atomically; return it with ``.filename`` set to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            image.convert("RGB").save(f, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    image = image.convert("RGB")
    image.filename = str(path)  # type: ignore[attr-defined]
    return image


def image_key(image: PIL.Image.Image) -> str:
    """SHA-1 of the image's file when it was read from one, else of its size, mode and pixels."""
    filename = getattr(image, "filename", "")
    h = hashlib.sha1()
    if filename and os.path.isfile(filename):
        with open(filename, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return "f" + h.hexdigest()
    h.update(f"{image.size}{image.mode}".encode())
    h.update(image.tobytes())
    return "p" + h.hexdigest()


class FeatureCache:
    """Features of one subject under ``dir/<subject>.safetensors``, valid only for one ``identity``
    (the backbones and segmenter); a file written for another identity is ignored and overwritten."""

    def __init__(self, directory: Path, subject: str, identity: Mapping[str, str]) -> None:
        self.path = Path(directory) / f"{subject}.safetensors"
        self.identity = json.dumps(dict(identity), sort_keys=True)
        self.tensors: dict[str, torch.Tensor] = self._read()
        self.added: set[str] = set()

    @property
    def dirty(self) -> bool:
        return bool(self.added)

    def _read(self) -> dict[str, torch.Tensor]:
        """The features on disk for this identity (none for another identity or a corrupt file)."""
        if not self.path.is_file():
            return {}
        try:
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as f:
                same = (f.metadata() or {}).get("identity") == self.identity
            return load_file(str(self.path)) if same else {}
        except (OSError, ValueError, RuntimeError):  # a corrupt cache file is recomputed
            return {}

    def get(self, key: str) -> torch.Tensor | None:
        return self.tensors.get(key)

    def put(self, key: str, value: torch.Tensor) -> None:
        self.tensors[key] = value.detach().float().cpu().contiguous()
        self.added.add(key)

    def save(self) -> None:
        """Merge what was added into the file on disk, under a lock, and replace it atomically (if anything was)."""
        if not self.added:
            return
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            merged = self._read() | {k: self.tensors[k] for k in self.added}  # another writer's features kept
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            os.close(fd)
            try:
                save_file(merged, tmp, metadata={"identity": self.identity})
                os.replace(tmp, self.path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        self.tensors = merged | self.tensors
        self.added = set()
