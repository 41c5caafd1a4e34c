"""Shared painting helpers of the scenes: the Backdrop record, colours, gradients, sky, ground, horizon."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from jointdiff.data.toyworld.raster import F32, fractal_noise, grid, hsv_to_rgb, over, smoothstep


@dataclass
class Backdrop:
    """A painted background and how the subject sits in it."""

    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    surface: str = "ground"  # ground | water | milk | mirror
    overlay: tuple[np.ndarray, np.ndarray] | None = (
        None  # (rgb (H, W, 3), alpha (H, W)) over the subject, straight alpha
    )


Painter = Callable[[np.random.Generator, int, int, float, float], Backdrop]


def jitter_color(rng: np.random.Generator, h: float, s: float, v: float, j: float = 0.04) -> np.ndarray:
    """An HSV colour jittered by ``j``, as a float32 RGB array."""
    hj = (h + rng.normal(0, j)) % 1.0
    return np.asarray(
        hsv_to_rgb(hj, float(np.clip(s + rng.normal(0, j * 2), 0, 1)), float(np.clip(v + rng.normal(0, j * 2), 0, 1))),
        F32,
    )


def vgradient(h: int, w: int, top: np.ndarray, bottom: np.ndarray, y0: float = 0.0, y1: float = 1.0) -> np.ndarray:
    """Vertical gradient from ``top`` at row ``y0`` to ``bottom`` at ``y1`` (image heights)."""
    _, y = grid(h, w)
    t = np.clip((y - y0) / max(y1 - y0, 1e-6), 0, 1)[..., None]
    return (top * (1 - t) + bottom * t).astype(F32)


def fill(
    img: np.ndarray, mask: np.ndarray, color: np.ndarray | tuple[float, float, float], shade: np.ndarray | None = None
) -> None:
    """Paint ``color`` (optionally modulated by ``shade``) where ``mask`` (coverage) is set."""
    col = np.asarray(color, F32)
    if shade is not None:
        col = col * shade[..., None]
    over(img, col, mask.astype(F32))


def below(y: np.ndarray, row: float | np.ndarray, soft: float) -> np.ndarray:
    return smoothstep(-soft, soft, y - row)


def sky(rng: np.random.Generator, h: int, w: int, horizon: float) -> np.ndarray:
    top, bottom = jitter_color(rng, 0.58, 0.55, 0.85), jitter_color(rng, 0.55, 0.2, 0.97)
    return vgradient(h, w, top, bottom, 0.0, horizon)


def ground(
    rng: np.random.Generator, h: int, w: int, img: np.ndarray, horizon: float, color: np.ndarray, rough: float = 0.25
) -> None:
    _, y = grid(h, w)
    n = fractal_noise(rng, h, w, 4, 3)
    shade = (1 - F32(rough) / 2) + F32(rough) * n + 0.15 * (y - horizon)
    fill(img, below(y, horizon, 0.5 / h), color, shade)


def horizon(rng: np.random.Generator, base: float, lo: float = 0.25, hi: float = 0.45) -> float:
    return float(base - rng.uniform(lo, hi))


def landscape(
    rng: np.random.Generator, h: int, w: int, base: float, lo: float, hi: float, ground_hsv: tuple[float, float, float]
) -> tuple[np.ndarray, float]:
    """Sky over ground (of a colour jittered around ``ground_hsv``) at a random horizon: (image, horizon)."""
    hz = horizon(rng, base, lo, hi)
    img = sky(rng, h, w, hz)
    ground(rng, h, w, img, hz, jitter_color(rng, *ground_hsv))
    return img, hz


def side_x(rng: np.random.Generator, h: int, w: int, sides: list[float], spread: float) -> float:
    """The x of a landmark on one side of the picture (``sides``: fractions of the width), jittered by ``spread``."""
    return (w / h) * rng.choice(sides) + rng.uniform(-spread, spread)
