"""Outdoor nature scenes: jungle, snow, beach, mountain, wheat field, autumn tree, sunflowers, dirt road, forest rug."""

from __future__ import annotations

import numpy as np

from jointdiff.data.toyworld.raster import F32, fractal_noise, grid, hash_noise, over, stamp
from jointdiff.data.toyworld.scenes.paint import (
    Backdrop,
    below,
    fill,
    ground,
    horizon,
    jitter_color,
    landscape,
    side_x,
    sky,
    vgradient,
)


def jungle(rng, h, w, cx, base):
    img = vgradient(h, w, jitter_color(rng, 0.33, 0.7, 0.35), jitter_color(rng, 0.28, 0.7, 0.2))
    for _ in range(int(rng.integers(3, 6))):  # vines
        stamp(
            img,
            "capsule",
            rng.uniform(0, w / h),
            rng.uniform(0.0, 0.4),
            0.35,
            0.008,
            jitter_color(rng, 0.22, 0.6, 0.3),
            angle=np.pi / 2,
        )
    for _ in range(int(rng.integers(30, 45))):  # leaves
        stamp(
            img,
            "ellipse",
            rng.uniform(0, w / h),
            rng.uniform(0, base),
            rng.uniform(0.05, 0.13),
            rng.uniform(0.015, 0.04),
            jitter_color(rng, 0.3, 0.75, rng.uniform(0.3, 0.8), 0.05),
            angle=rng.uniform(0, np.pi),
        )
    ground(rng, h, w, img, base - 0.06, jitter_color(rng, 0.12, 0.6, 0.3))
    for _ in range(5):  # ferns at the ground line
        stamp(
            img,
            "triangle",
            rng.uniform(0, w / h),
            base - 0.02,
            0.05,
            0.05,
            jitter_color(rng, 0.32, 0.8, 0.45),
            angle=rng.uniform(-0.4, 0.4),
        )
    return Backdrop(img)


def snow(rng, h, w, cx, base):
    hz = horizon(rng, base)
    img = vgradient(h, w, jitter_color(rng, 0.6, 0.15, 0.78), jitter_color(rng, 0.6, 0.05, 0.92), 0, hz)
    x, y = grid(h, w)
    hills = hz - 0.06 * (1 + np.sin(x * 6 + rng.uniform(0, 6))) * 0.5
    fill(img, below(y, hills, 0.5 / h), (0.86, 0.89, 0.95))
    ground(rng, h, w, img, hz + 0.04, np.asarray((0.96, 0.97, 1.0), F32), rough=0.12)
    flakes = (hash_noise(x * h * 0.5, y * h * 0.5, rng.uniform(0, 100)) > 0.93).astype(F32) * 0.9
    return Backdrop(img, overlay=(np.ones((h, w, 3), F32), flakes))


def beach(rng, h, w, cx, base):
    hz = horizon(rng, base, 0.3, 0.5)
    img = sky(rng, h, w, hz)
    x, y = grid(h, w)
    shore = hz + rng.uniform(0.1, 0.18) + 0.015 * np.sin(x * 9 + rng.uniform(0, 6))
    sea = jitter_color(rng, 0.52, 0.7, 0.65)
    waves = 0.85 + 0.25 * (np.sin(y * h * 1.3 + np.sin(x * 7) * 3) > 0.6)
    fill(img, below(y, hz, 0.5 / h), sea, waves.astype(F32))
    fill(img, below(y, shore - 0.01, 1 / h), (0.97, 0.97, 0.97))
    ground(rng, h, w, img, shore, jitter_color(rng, 0.12, 0.35, 0.92), rough=0.2)
    return Backdrop(img)


def mountain(rng, h, w, cx, base):
    hz = horizon(rng, base, 0.2, 0.35)
    img = sky(rng, h, w, hz)
    x, y = grid(h, w)
    for depth, (lo, hi, col) in enumerate(
        [(0.45, 0.7, jitter_color(rng, 0.62, 0.25, 0.6)), (0.2, 0.4, jitter_color(rng, 0.35, 0.35, 0.4))]
    ):
        knots = np.linspace(0, w / h, 6)
        peaks = hz - rng.uniform(lo, hi, 6) * (1 - depth * 0.3)
        peaks[::2] = hz - rng.uniform(0.05, lo * 0.6, len(peaks[::2]))
        ridge = np.interp(x[0], knots, peaks)[None, :]
        fill(img, below(y, ridge, 0.7 / h), col)
        if depth == 0:
            fill(img, below(y, ridge, 0.7 / h) * (y < ridge + 0.06), (0.97, 0.97, 1.0))
    ground(rng, h, w, img, hz, jitter_color(rng, 0.27, 0.55, 0.55))
    return Backdrop(img)


def purple_rug_forest(rng, h, w, cx, base):
    hz = horizon(rng, base, 0.15, 0.25)
    img = vgradient(h, w, jitter_color(rng, 0.3, 0.5, 0.5), jitter_color(rng, 0.3, 0.5, 0.35))
    for _ in range(int(rng.integers(5, 9))):
        tx = rng.uniform(0, w / h)
        stamp(img, "box", tx, hz - 0.3, rng.uniform(0.015, 0.035), 0.32, jitter_color(rng, 0.07, 0.5, 0.3))
        stamp(
            img,
            "ellipse",
            tx,
            rng.uniform(0.05, 0.2),
            rng.uniform(0.08, 0.16),
            rng.uniform(0.06, 0.12),
            jitter_color(rng, 0.33, 0.6, 0.4),
        )
    ground(rng, h, w, img, hz, jitter_color(rng, 0.1, 0.5, 0.35))
    rug = jitter_color(rng, 0.78, 0.6, 0.6, 0.02)
    stamp(img, "box", cx, base - 0.01, rng.uniform(0.3, 0.42), rng.uniform(0.06, 0.09), rug, param=0.3)
    stamp(img, "box", cx, base - 0.01, 0.26, 0.035, rug * 1.25, param=0.3)
    return Backdrop(img)


def wheat_field(rng, h, w, cx, base):
    hz = horizon(rng, base, 0.3, 0.45)
    img = sky(rng, h, w, hz)
    x, y = grid(h, w)
    gold = jitter_color(rng, 0.12, 0.7, 0.85)
    stalks = 0.75 + 0.25 * np.sin(x * h * 1.9 + 3 * fractal_noise(rng, h, w, 4, 2))
    depth = 1.0 - 0.35 * np.clip((y - hz) / 0.6, 0, 1)
    fill(img, below(y, hz, 0.5 / h), gold, (stalks * depth).astype(F32))
    heads = (hash_noise(x * h * 0.7, y * h * 0.35, 5.0) > 0.8) & (y > hz)
    fill(img, heads.astype(F32) * 0.6, gold * 1.15)
    return Backdrop(img)


def autumn_tree(rng, h, w, cx, base):
    img, hz = landscape(rng, h, w, base, 0.2, 0.3, (0.2, 0.55, 0.55))
    tx = side_x(rng, h, w, [0.2, 0.8], 0.08)
    stamp(img, "box", tx, hz - 0.2, 0.035, 0.22, jitter_color(rng, 0.07, 0.6, 0.3))
    for _ in range(40):
        stamp(
            img,
            "ellipse",
            tx + rng.normal(0, 0.14),
            hz - 0.42 + rng.normal(0, 0.1),
            rng.uniform(0.04, 0.08),
            rng.uniform(0.03, 0.06),
            jitter_color(rng, rng.choice([0.0, 0.06, 0.11]), 0.85, 0.85),
        )
    over_rgb, over_a = np.zeros((h, w, 3), F32), np.zeros((h, w), F32)
    for _ in range(12):  # falling and fallen leaves
        tmp = np.zeros((h, w, 3), F32)
        stamp(
            tmp,
            "ellipse",
            rng.uniform(0, w / h),
            rng.uniform(0, 1),
            0.015,
            0.009,
            (1.0, 1.0, 1.0),
            angle=rng.uniform(0, 3),
        )
        col = jitter_color(rng, rng.choice([0.02, 0.07]), 0.85, 0.85)
        over(over_rgb, col, tmp[..., 0])
        over_a = np.maximum(over_a, tmp[..., 0])
    return Backdrop(img, overlay=(over_rgb / np.maximum(over_a, 1e-6)[..., None], over_a))


def sunflowers(rng, h, w, cx, base):
    img, hz = landscape(rng, h, w, base, 0.2, 0.35, (0.3, 0.7, 0.6))
    over_rgb, over_a = np.zeros((h, w, 3), F32), np.zeros((h, w), F32)
    for k in range(int(rng.integers(6, 10))):
        front = k < 2  # two flowers in front of the subject, at the sides
        fx = rng.uniform(0, 0.2) if k == 0 else (w / h - rng.uniform(0, 0.2) if k == 1 else rng.uniform(0, w / h))
        fy = rng.uniform(0.68, 0.85) if front else rng.uniform(hz - 0.12, hz + 0.05)
        r = rng.uniform(0.06, 0.09) if front else rng.uniform(0.03, 0.05)
        target = over_rgb if front else img
        stem = stamp(
            np.zeros((h, w, 3), F32), "capsule", fx, fy + r * 2.5, r * 2.2, r * 0.12, (1, 1, 1), angle=np.pi / 2
        )[..., 0]
        petals = stamp(np.zeros((h, w, 3), F32), "star", fx, fy, r, r, (1, 1, 1), param=12)[..., 0]
        over(target, (0.2, 0.55, 0.15), stem)
        over(target, (1.0, 0.8, 0.1), petals)
        stamp(target, "ellipse", fx, fy, r * 0.42, r * 0.42, (0.35, 0.2, 0.05))
        if front:
            over_a = np.maximum(over_a, np.maximum(stem, petals))
    return Backdrop(img, overlay=(over_rgb / np.maximum(over_a, 1e-6)[..., None], over_a))


def dirt_road(rng, h, w, cx, base):
    img, hz = landscape(rng, h, w, base, 0.3, 0.45, (0.27, 0.55, 0.55))
    x, y = grid(h, w)
    vx = (w / h) * rng.uniform(0.35, 0.65)
    t = np.clip((y - hz) / (1 - hz), 0, 1)
    half = 0.02 + t * rng.uniform(0.5, 0.8)
    road = (np.abs(x - vx - (cx - vx) * t) < half) & (y > hz)
    n = fractal_noise(rng, h, w, 6, 2)
    tracks = 1 - 0.15 * (np.abs(np.abs(x - vx - (cx - vx) * t) - half * 0.5) < 0.02 * (0.3 + t))
    fill(img, road.astype(F32), jitter_color(rng, 0.08, 0.5, 0.5), ((0.8 + 0.35 * n) * tracks).astype(F32))
    return Backdrop(img)
