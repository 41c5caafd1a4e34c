"""Variety statistics of the subject generator (spec level, and pixel level from canonical renders)."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from jointdiff.data.toyworld.parts import color_name
from jointdiff.data.toyworld.render import Light, Pose, draw_subject, fit_pose
from jointdiff.data.toyworld.subjects import SubjectSpec, make_subject, subject_seed

CANONICAL_POSE = Pose(yaw=0.35, flip=False, roll=0.0, scale=0.8, cx=0.5, base=0.9)
CANONICAL_LIGHT = Light(direction=(0.4, 0.5, 0.77), color=(1.0, 1.0, 1.0), intensity=0.8, ambient=0.4)


def canonical_render(subject: SubjectSpec, resolution: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The subject in a fixed pose and light on mid grey: (``(R, R, 3)`` float32 in [0, 1], ``(R, R)`` bool mask)."""
    rgb, alpha = draw_subject(subject, fit_pose(CANONICAL_POSE, subject), CANONICAL_LIGHT, resolution, resolution)
    return rgb + 0.5 * (1 - alpha[..., None]), alpha > 0.5


def _fractions(counter: Counter, n: int) -> dict[str, float]:
    return {k: round(v / n, 4) for k, v in counter.most_common()}


def variety_stats(split: str = "train", count: int = 1000, start: int = 0, render_resolution: int = 32) -> dict:
    """Class, shape, colour and texture statistics over ``count`` subjects; pixel statistics when rendering."""
    subjects = [make_subject(subject_seed(split, start + i)) for i in range(count)]
    classes = Counter(s.class_word for s in subjects)
    n_parts = np.array([len(s.parts) for s in subjects])
    signature = {(s.recipe, s.descriptor, len(s.parts), tuple(p.kind for p in s.parts)) for s in subjects}
    stats: dict = {
        "subjects": count,
        "split": split,
        "classes": len(classes),
        "class_fractions": _fractions(classes, count),
        "recipes": len({s.recipe for s in subjects}),
        "unusual_fraction": round(float(np.mean([s.unusual for s in subjects])), 4),
        "live_fraction": round(float(np.mean([s.live for s in subjects])), 4),
        "body_colour_fractions": _fractions(Counter(color_name(s.parts[0].color) for s in subjects), count),
        "body_texture_fractions": _fractions(Counter(s.parts[0].texture for s in subjects), count),
        "parts_per_subject": {
            "mean": round(float(n_parts.mean()), 2),
            "min": int(n_parts.min()),
            "max": int(n_parts.max()),
        },
        "distinct_specs": len({s.parts for s in subjects}),
        "distinct_coarse_signatures": len(
            signature
        ),  # (recipe, descriptor, part kinds): near-identical designs share one
    }
    if render_resolution:
        t0 = time.perf_counter()
        renders = [canonical_render(s, render_resolution) for s in subjects]
        dt = time.perf_counter() - t0
        x = np.stack([r[0].reshape(-1) for r in renders]).astype(np.float64)  # (N, R*R*3)
        area = np.array([r[1].mean() for r in renders])
        fg_mean = np.stack([r[0][r[1]].mean(0) if r[1].any() else np.full(3, 0.5) for r in renders])  # (N, 3)
        sq = (x * x).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
        np.fill_diagonal(d2, np.inf)
        nn = np.sqrt(d2.min(1) / x.shape[1])  # RMS pixel distance to the nearest other subject, in [0, 1]
        stats["pixels"] = {
            "resolution": render_resolution,
            "mask_area": {
                "mean": round(float(area.mean()), 4),
                "min": round(float(area.min()), 4),
                "max": round(float(area.max()), 4),
            },
            "foreground_rgb_std": [round(float(v), 4) for v in fg_mean.std(0)],
            "nearest_neighbour_rms": {
                "min": round(float(nn.min()), 4),
                "p01": round(float(np.quantile(nn, 0.01)), 4),
                "median": round(float(np.median(nn)), 4),
            },
            "near_duplicates_rms_below_0.02": int((nn < 0.02).sum()),
            "ms_per_canonical_render": round(1000 * dt / count, 2),
        }
    return stats
