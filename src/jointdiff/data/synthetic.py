"""Random image sets for tests, benchmarks and smoke runs (no real data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image

from jointdiff.data.formats import ImageSet, write_paper_set


def random_set(n: int, size: int, seed: int, key: str = "") -> ImageSet:
    """``n`` images of one random 'subject' (a base colour plus per-image noise), ``size`` px square."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    images = [
        PIL.Image.fromarray(np.clip(base + rng.integers(-24, 25, (size, size, 3)), 0, 255).astype(np.uint8))
        for _ in range(n)
    ]
    return ImageSet(images, [f"a subject {seed} view {j}" for j in range(n)], key=key or f"set{seed:06d}")


def write_random_paper_sets(directory: str | Path, count: int, n: int, size: int, seed: int = 0) -> list[ImageSet]:
    """Write ``count`` random sets of ``n`` images in the paper format; returns them."""
    sets = [random_set(n, size, seed + i) for i in range(count)]
    for s in sets:
        write_paper_set(directory, s.key, s)
    return sets
