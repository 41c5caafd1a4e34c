"""The trade-off front of a model's checkpoints in (CLIP-T, DINO), and how far a point lies beyond it.

DreamBlend (Fig. 6) compares its samples with the DreamBooth checkpoints in the DINO vs CLIP-T
plane: a method improves on fine-tuning when it lies beyond the front the checkpoints trace,
higher DINO at equal CLIP-T or higher CLIP-T at equal DINO."""

from __future__ import annotations

import numpy as np


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (CLIP-T, DINO) points no other point beats on both, sorted by CLIP-T (DINO then falls)."""
    front = [p for p in points if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in points)]
    return sorted(set(front))


def front_gaps(front: list[tuple[float, float]], point: tuple[float, float]) -> tuple[float | None, float | None]:
    """How far ``point`` lies beyond the checkpoints' front: (DINO minus the front's DINO at equal CLIP-T,
    CLIP-T minus the front's CLIP-T at equal DINO), the front linear between its points.

    Left of the front (lower CLIP-T than any front point) the front's DINO is its highest; below it
    (lower DINO) its CLIP-T is its highest, since a checkpoint reaches both. Where no checkpoint
    reaches the point's CLIP-T (or DINO) the gap is undefined: None. Positive: beyond the front."""
    xs, ys = np.array([p[0] for p in front]), np.array([p[1] for p in front])
    x, y = point
    d_dino = None if x > xs.max() else y - float(np.interp(x, xs, ys))  # np.interp clamps left: ys[0], the max
    order = np.argsort(ys)  # DINO rises as CLIP-T falls along the front
    d_clipt = None if y > ys.max() else x - float(np.interp(y, ys[order], xs[order]))  # clamps below: max CLIP-T
    return d_dino, d_clipt
