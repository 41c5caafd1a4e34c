"""Cached latents: image sets encoded once by the VAE, stored as safetensors shards (``--cache_latents``).

Training from a latent cache skips the image decode and the VAE forward of every step (on a
2-core CPU the VAE encoder costs more than the miniature U-Net's step). A *latent set* is what
:class:`jointdiff.data.formats.ImageSet` is after ``vae.encode``: the scaled latents of its N
images, each image's caption variants and, where known, its foreground coverage at latent
resolution (for the subject-weighted loss, :class:`jointdiff.training.objective.JediObjective`).

A shard ``{prefix}-{i:06d}.safetensors`` holds the sets of one shard, concatenated:

| tensor | shape | dtype | meaning |
| --- | --- | --- | --- |
| ``latents`` | (M, C, h, w) | fp16 | ``(mode(vae.encode(x)) - shift) * scaling``: what the U-Net sees |
| ``foreground`` | (M, h, w) | uint8 | subject coverage x 255 (area-averaged mask); 255 everywhere when unknown |
| ``offsets`` | (S + 1,) | int64 | images of set s are rows ``offsets[s]:offsets[s + 1]`` |

and, in the safetensors metadata under ``jointdiff_latents``, the JSON list of the sets' keys
and captions (per image a list of variants: ``[0]`` the full caption, ``[1]`` a short one that
names only the class, when the data has one). The directory's ``latents.json`` records the VAE
(fingerprint, scaling and shift factors) and how the cache was made; the trainer refuses a cache
encoded by another VAE than the model's.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from jointdiff.data.formats import BadSetError

META_KEY = "jointdiff_latents"
MANIFEST = "latents.json"


@dataclass
class LatentSet:
    """One subject's images as cached VAE latents (JeDi sec. 3.1 sets, encoded once)."""

    latents: torch.Tensor  # (N, C, h, w) float: scaled latents, as the U-Net sees them
    captions: list[list[str]]  # per image: caption variants, [0] the full caption
    key: str = ""
    foreground: torch.Tensor | None = None  # (N, h, w) float in [0, 1], None when unknown
    regions: torch.Tensor | None = None  # (N, h, w) int8: each pixel's subject (two-subject sets; not in shards)

    def __post_init__(self) -> None:
        where = f"latent set '{self.key}'" if self.key else "latent set"
        if self.latents.ndim != 4 or len(self.latents) == 0:
            raise BadSetError(f"{where}: latents must be (N, C, h, w) with N >= 1, got {tuple(self.latents.shape)}")
        if len(self.captions) != len(self.latents) or not all(self.captions):
            raise BadSetError(f"{where}: {len(self.latents)} images need one non-empty caption list each")
        if self.foreground is not None and self.foreground.shape != (len(self.latents), *self.latents.shape[2:]):
            raise BadSetError(f"{where}: foreground {tuple(self.foreground.shape)} does not match the latents")
        if self.regions is not None and self.regions.shape != (len(self.latents), *self.latents.shape[2:]):
            raise BadSetError(f"{where}: regions {tuple(self.regions.shape)} do not match the latents")

    def __len__(self) -> int:
        return len(self.latents)


def vae_fingerprint(vae: Any) -> str:
    """First 16 hex digits of the SHA-256 of a VAE's weights (fp32, sorted names): which VAE made a cache."""
    h = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def shard_name(prefix: str, index: int) -> str:
    """File name of shard ``index``."""
    return f"{prefix}-{index:06d}.safetensors"


def write_latent_shard(path: str | Path, sets: Sequence[LatentSet]) -> None:
    """Write ``sets`` as one shard, atomically (a reader never sees half a shard)."""
    from safetensors.torch import save_file

    if not sets:
        raise ValueError("a latent shard needs at least one set")
    path = Path(path)
    latents = torch.cat([s.latents for s in sets]).to(torch.float16).contiguous()  # (M, C, h, w)
    fg = torch.cat(
        [
            s.foreground if s.foreground is not None else torch.ones(s.latents.shape[:1] + s.latents.shape[2:])
            for s in sets
        ]
    )  # (M, h, w)
    sizes = torch.tensor([0] + [len(s) for s in sets])
    tensors = {
        "latents": latents,
        "foreground": (fg.clamp(0, 1) * 255).round().to(torch.uint8).contiguous(),
        "offsets": sizes.cumsum(0).to(torch.int64),
    }
    meta = {META_KEY: json.dumps([{"key": s.key, "captions": s.captions} for s in sets])}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def read_latent_shard(path: str) -> tuple[list[tuple[str, LatentSet]], BadSetError | None]:
    """All sets of a shard, plus the error that made it unreadable (then no sets), as ``(key, set)`` pairs."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {})[META_KEY])
            latents, fg, offsets = (f.get_tensor(k) for k in ("latents", "foreground", "offsets"))
    except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as e:
        return [], BadSetError(f"{path}: unreadable latent shard ({type(e).__name__}: {e})")
    if len(offsets) != len(meta) + 1 or int(offsets[-1]) != len(latents) or len(fg) != len(latents):
        return [], BadSetError(f"{path}: offsets, latents and captions disagree")
    sets = []
    latents, fg = latents.float(), fg.float() / 255.0
    for i, item in enumerate(meta):
        a, b = int(offsets[i]), int(offsets[i + 1])
        try:
            sets.append((item["key"], LatentSet(latents[a:b], item["captions"], item["key"], fg[a:b])))
        except BadSetError as e:
            return sets, BadSetError(f"{path}: {e}")
    return sets, None


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The ``latents.json`` of a cache directory, or None."""
    path = Path(directory) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def write_manifest(directory: str | Path, manifest: dict[str, Any], volatile: Sequence[str] = ()) -> None:
    """Write a cache's ``latents.json``; a second run may change only the ``volatile`` keys, else ValueError."""
    directory = Path(directory)
    old = read_manifest(directory)
    if old is not None:
        changed = sorted(k for k in set(old) | set(manifest) if k not in volatile and old.get(k) != manifest.get(k))
        if changed:
            raise ValueError(
                f"{directory} holds a latent cache made with other parameters ({', '.join(changed)}): use another --out"
            )
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, directory / MANIFEST)
