"""Shared pieces of the class recipes: uniform draws, eyes, intrinsic accessories, fixed colours."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jointdiff.data.toyworld.parts import Palette, Part

Recipe = Callable[[np.random.Generator, Palette], list[Part]]
DARK = (0.08, 0.08, 0.09)
WHITE = (0.96, 0.96, 0.94)
PI = float(np.pi)


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def eyes(rng: np.random.Generator, x: float, y: float, z: float, r: float, gap: float, big: bool = False) -> list[Part]:
    """Two eyes (dark with a white glint; white sclera when ``big``) on a front surface."""
    out = []
    for s in (-1, 1):
        if big:
            out.append(Part("ellipse", (x + s * gap, y, z), (r * 1.6, r * 1.8), WHITE, role="eye", facing=True))
        out.append(Part("ellipse", (x + s * gap, y, z + 0.01), (r, r * 1.1), DARK, role="eye", facing=True))
        out.append(Part("ellipse", (x + s * gap + r * 0.3, y + r * 0.35, z + 0.02), (r * 0.35,) * 2, WHITE, role="eye"))
    return out


def accessory(rng: np.random.Generator, pal: Palette, top: float, x: float, z: float, width: float) -> list[Part]:
    """An optional intrinsic accessory: bow, badge, antenna, band or none."""
    kind = rng.choice(["none", "bow", "badge", "antenna", "band"], p=[0.45, 0.15, 0.15, 0.1, 0.15])
    c = pal.color(2)
    if kind == "bow":
        return [
            Part("triangle", (x + s * width * 0.25, top, z + 0.05), (width * 0.25, width * 0.2), c, angle=s * PI / 2)
            for s in (-1, 1)
        ] + [Part("ellipse", (x, top, z + 0.06), (width * 0.08,) * 2, c, role="accessory")]
    if kind == "badge":
        return [Part("star", (x, top - 0.2, z + 0.12), (0.06, 0.06), c, param=5, role="accessory", facing=True)]
    if kind == "antenna":
        return [
            Part("capsule", (x, top + 0.07, z), (0.07, 0.012), (0.3, 0.3, 0.32), angle=PI / 2, role="accessory"),
            Part("ellipse", (x, top + 0.15, z), (0.035, 0.035), c, role="accessory"),
        ]
    if kind == "band":
        return [Part("box", (x, top - 0.12, z + 0.01), (width, 0.03), c, shade="cyl", role="accessory", facing=True)]
    return []
