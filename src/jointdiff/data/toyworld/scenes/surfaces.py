"""Surfaces and interiors: pink fabric, wooden floor, white rug, water, milk, mirror, and the neutral studio, table, room."""

from __future__ import annotations

import numpy as np

from jointdiff.data.toyworld.raster import F32, fractal_noise, grid, hash_noise, over, smoothstep, stamp
from jointdiff.data.toyworld.scenes.paint import Backdrop, below, fill, ground, horizon, jitter_color, sky, vgradient


def pink_fabric(rng, h, w, cx, base):
    x, y = grid(h, w)
    n = fractal_noise(rng, h, w, 3, 2)
    folds = 0.78 + 0.22 * np.sin(x * rng.uniform(10, 18) + y * rng.uniform(-6, 6) + n * 5)
    weave = 0.97 + 0.03 * np.sin(x * h * 2.5) * np.sin(y * h * 2.5)
    img = np.ones((h, w, 3), F32) * jitter_color(rng, 0.93, 0.4, 0.95, 0.02)
    return Backdrop((img * (folds * weave)[..., None]).astype(F32))


def wooden_floor(rng, h, w, cx, base):
    hz = horizon(rng, base)
    img = np.ones((h, w, 3), F32) * jitter_color(rng, rng.random(), 0.2, 0.85)
    x, y = grid(h, w)
    ph = rng.uniform(0.06, 0.1)
    plank = np.floor(y / ph)
    wood = jitter_color(rng, 0.07, 0.6, 0.6)
    tone = 0.75 + 0.3 * hash_noise(plank, plank * 3, 1.0)
    grain = 0.92 + 0.08 * np.sin(x * 60 + 4 * fractal_noise(rng, h, w, 3, 2))
    seam = smoothstep(0.0, 0.12, (y / ph) % 1)
    floor = wood * (tone * grain * (0.55 + 0.45 * seam))[..., None]
    over(img, floor.astype(F32), below(y, hz, 0.5 / h))
    return Backdrop(img)


def white_rug(rng, h, w, cx, base):
    hz = horizon(rng, base, 0.2, 0.3)
    img = np.ones((h, w, 3), F32) * jitter_color(rng, rng.random(), 0.3, 0.6)
    ground(rng, h, w, img, hz, jitter_color(rng, 0.08, 0.4, 0.45))
    x, y = grid(h, w)
    fluff = 0.88 + 0.12 * hash_noise(x * h * 1.0, y * h * 1.0, 7.0) * fractal_noise(rng, h, w, 8, 1)
    rug = np.clip(1 - ((x - cx) / 0.42) ** 2 - ((y - base) / 0.16) ** 2, 0, 1) > 0
    fill(img, rug.astype(F32), (0.97, 0.96, 0.94), fluff.astype(F32))
    return Backdrop(img)


def _liquid(rng, h, w, base, color: np.ndarray, contrast: float, opacity: float, surface: str) -> Backdrop:
    hz = base - rng.uniform(0.35, 0.55)
    img = sky(rng, h, w, hz)
    x, y = grid(h, w)
    ripples = 1 + contrast * np.sin(y * h * 1.1 + np.sin(x * 11 + rng.uniform(0, 6)) * 2) * np.clip((y - hz) * 3, 0, 1)
    depth = 1 - 0.25 * np.clip((y - hz) / 0.6, 0, 1)
    fill(img, below(y, hz, 0.5 / h), color, (ripples * depth).astype(F32))
    line = base - 0.035
    a = below(y, line, 0.6 / h) * F32(opacity)
    surface_rgb = np.broadcast_to(color * (ripples * 0.95)[..., None], (h, w, 3)).astype(F32)
    return Backdrop(img, surface=surface, overlay=(surface_rgb, a.astype(F32)))


def water(rng, h, w, cx, base):
    return _liquid(rng, h, w, base, jitter_color(rng, 0.56, 0.7, 0.7), 0.18, 0.55, "water")


def milk(rng, h, w, cx, base):
    return _liquid(rng, h, w, base, jitter_color(rng, 0.12, 0.06, 0.97, 0.01), 0.05, 0.93, "milk")


def mirror(rng, h, w, cx, base):
    hz = horizon(rng, base, 0.15, 0.3)
    img = np.ones((h, w, 3), F32) * jitter_color(rng, rng.random(), 0.15, 0.75)
    x, y = grid(h, w)
    glass = vgradient(h, w, np.asarray((0.78, 0.84, 0.9), F32), np.asarray((0.55, 0.6, 0.68), F32), hz, 1.0)
    streak = 1 + 0.18 * (np.sin((x - y) * 25) > 0.85)
    over(img, (glass * streak[..., None]).astype(F32), below(y, hz, 0.5 / h))
    fill(img, (np.abs(y - hz) < 0.012).astype(F32), jitter_color(rng, 0.12, 0.6, 0.7))
    return Backdrop(img, surface="mirror")


def studio(rng, h, w, cx, base):
    hue = rng.random()
    img = vgradient(h, w, jitter_color(rng, hue, 0.25, 0.9), jitter_color(rng, hue, 0.3, 0.6))
    x, y = grid(h, w)
    vignette = 1 - 0.25 * ((x - w / h / 2) ** 2 + (y - 0.5) ** 2)
    return Backdrop((img * vignette[..., None]).astype(F32))


def table(rng, h, w, cx, base):
    hz = horizon(rng, base, 0.12, 0.25)
    img = np.ones((h, w, 3), F32) * jitter_color(rng, rng.random(), 0.25, 0.8)
    ground(rng, h, w, img, hz, jitter_color(rng, rng.choice([0.07, rng.random()]), 0.45, 0.6), rough=0.1)
    _, y = grid(h, w)
    fill(img, (np.abs(y - hz) < 0.01).astype(F32), (0.2, 0.15, 0.1))
    return Backdrop(img)


def room(rng, h, w, cx, base):
    hz = horizon(rng, base, 0.25, 0.4)
    img = np.ones((h, w, 3), F32) * jitter_color(rng, rng.random(), 0.2, 0.8)
    fx = (w / h) * rng.choice([0.2, 0.8])
    stamp(img, "box", fx, hz - 0.3, 0.1, 0.08, jitter_color(rng, 0.08, 0.5, 0.35))
    stamp(img, "box", fx, hz - 0.3, 0.085, 0.065, jitter_color(rng, rng.random(), 0.5, 0.8))
    ground(rng, h, w, img, hz, jitter_color(rng, rng.random(), 0.3, 0.5), rough=0.2)
    return Backdrop(img)
