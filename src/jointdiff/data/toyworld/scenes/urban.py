"""Built scenes: cobblestone street, city skyline, blue house, Eiffel Tower, crowded street."""

from __future__ import annotations

import numpy as np

from jointdiff.data.toyworld.raster import F32, grid, hash_noise, over, smoothstep, stamp
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


def cobblestone(rng, h, w, cx, base):
    hz = horizon(rng, base)
    img = vgradient(h, w, jitter_color(rng, 0.08, 0.35, 0.7), jitter_color(rng, 0.08, 0.3, 0.6))  # a wall
    x, y = grid(h, w)
    s = rng.uniform(0.045, 0.07)
    row = np.floor(y / s)
    u = x / s + 0.5 * (row % 2)
    fu, fv = u % 1 - 0.5, (y / s) % 1 - 0.5
    stone = smoothstep(0.46, 0.36, np.maximum(np.abs(fu), np.abs(fv)))
    tone = 0.55 + 0.35 * hash_noise(u, row, 3.0)
    street = np.where(
        stone[..., None] > 0.5,
        jitter_color(rng, 0.1, 0.08, 0.62) * tone[..., None],
        np.asarray((0.18, 0.17, 0.16), F32),
    )
    over(img, street.astype(F32), below(y, hz, 0.5 / h))
    return Backdrop(img)


def city(rng, h, w, cx, base):
    hz = horizon(rng, base, 0.2, 0.35)
    img = sky(rng, h, w, hz)
    x, y = grid(h, w)
    xs = 0.0
    while xs < w / h:
        bw = rng.uniform(0.08, 0.18)
        top = hz - rng.uniform(0.2, 0.6)
        col = jitter_color(rng, rng.choice([0.6, 0.08, 0.0]), 0.15, rng.uniform(0.35, 0.7))
        inside = (x >= xs) & (x < xs + bw) & (y >= top) & (y < hz)
        win = ((x - xs) % 0.035 < 0.015) & ((y - top) % 0.04 < 0.02) & ((y - top) > 0.02)
        lit = np.where(win[..., None], np.asarray((1.0, 0.9, 0.5), F32), col)
        over(img, lit.astype(F32), inside.astype(F32))
        xs += bw + rng.uniform(0.0, 0.02)
    ground(rng, h, w, img, hz, np.asarray((0.32, 0.32, 0.34), F32), rough=0.1)
    return Backdrop(img)


def blue_house(rng, h, w, cx, base):
    img, hz = landscape(rng, h, w, base, 0.2, 0.3, (0.28, 0.6, 0.55))
    hx = side_x(rng, h, w, [0.25, 0.75], 0.08)
    hw, hh = rng.uniform(0.22, 0.32), rng.uniform(0.18, 0.26)
    blue = jitter_color(rng, 0.6, 0.65, 0.8)
    stamp(img, "box", hx, hz - hh, hw, hh, blue)
    stamp(img, "triangle", hx, hz - 2 * hh - 0.09, hw * 1.15, 0.1, jitter_color(rng, 0.02, 0.6, 0.45))
    stamp(img, "box", hx, hz - 0.07, 0.04, 0.07, jitter_color(rng, 0.08, 0.6, 0.35))
    for s in (-1, 1):
        stamp(img, "box", hx + s * hw * 0.55, hz - hh * 1.2, 0.045, 0.04, (0.9, 0.95, 1.0))
    return Backdrop(img)


def eiffel_tower(rng, h, w, cx, base):
    img, hz = landscape(rng, h, w, base, 0.15, 0.25, (0.25, 0.45, 0.55))
    tx = side_x(rng, h, w, [0.22, 0.78], 0.05)
    iron = jitter_color(rng, 0.08, 0.45, 0.32)
    top = rng.uniform(0.04, 0.1)
    tall = hz - top
    stamp(img, "trapezoid", tx, top + tall * 0.3, 0.03, tall * 0.3, iron, param=0.3)
    stamp(img, "trapezoid", tx, top + tall * 0.75, 0.12, tall * 0.25, iron, param=0.3)
    stamp(
        img,
        "halfdisc",
        tx,
        hz + 0.001,
        0.06,
        0.08,
        img[min(h - 1, int(hz * h) + 2), min(w - 1, int(tx * h))],
        angle=np.pi,
    )
    for fy in (0.5, 0.75):
        stamp(img, "box", tx, top + tall * fy, 0.03 + 0.09 * (fy - 0.4), 0.008, iron)
    stamp(img, "capsule", tx, top, 0.03, 0.004, iron, angle=np.pi / 2)
    return Backdrop(img)


def crowded_street(rng, h, w, cx, base):
    hz = horizon(rng, base, 0.12, 0.2)
    img = vgradient(h, w, jitter_color(rng, 0.08, 0.25, 0.75), jitter_color(rng, 0.6, 0.2, 0.55))
    x, y = grid(h, w)
    for _ in range(int(rng.integers(12, 20))):
        px_ = rng.uniform(0, w / h)
        s = rng.uniform(0.7, 1.2)
        stamp(
            img,
            "capsule",
            px_,
            hz - 0.09 * s,
            0.06 * s,
            0.03 * s,
            jitter_color(rng, rng.random(), 0.6, 0.6, 0.1),
            angle=np.pi / 2,
        )
        stamp(
            img,
            "ellipse",
            px_,
            hz - 0.2 * s,
            0.025 * s,
            0.028 * s,
            jitter_color(rng, 0.07, 0.45, rng.uniform(0.35, 0.9)),
        )
    tiles = 0.9 + 0.1 * (((x % 0.1) < 0.006) | ((y % 0.06) < 0.005))
    fill(img, below(y, hz, 0.5 / h), (0.72, 0.72, 0.7), (1.0 / tiles).astype(F32) * 0.92)
    return Backdrop(img)
