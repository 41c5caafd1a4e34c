"""Live subjects (dogs and cats) and the unusual subjects: free-form assemblages and shape swaps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from jointdiff.data.toyworld.parts import KINDS, Palette, Part
from jointdiff.data.toyworld.recipes.common import DARK, PI, eyes, uniform

UNUSUAL_CLASSES = ("sculpture", "gadget", "creature", "ornament")  # class words of free-form subjects


def quadruped(rng: np.random.Generator, pal: Palette, cat: bool = False) -> list[Part]:
    """A dog or a cat (live subjects): body, head, snout, ears, legs, tail."""
    furs = [
        (0.55, 0.35, 0.18),
        (0.85, 0.7, 0.45),
        (0.15, 0.13, 0.12),
        (0.92, 0.9, 0.86),
        (0.5, 0.5, 0.52),
        (0.9, 0.55, 0.25),
    ]
    c = furs[int(rng.integers(len(furs)))]
    c2 = furs[int(rng.integers(len(furs)))]
    tex = {
        "texture": str(rng.choice(["solid", "dots", "speckle", "stripes" if cat else "gradient"])),
        "color2": c2,
        "freq": uniform(rng, 2, 4),
        "tex_angle": PI / 2,
    }
    s = 1 if rng.random() < 0.5 else -1
    bw, bh = uniform(rng, 0.26, 0.34), uniform(rng, 0.12, 0.17)
    leg = uniform(rng, 0.12, 0.2)
    hr = uniform(rng, 0.1, 0.14) if cat else uniform(rng, 0.12, 0.17)
    by = leg + bh
    hx, hy = s * bw * 0.85, by + bh + hr * 0.6
    parts = [
        Part("ellipse", (0, by, 0), (bw, bh), c, **tex),
        Part("ellipse", (hx, hy, 0.05), (hr, hr * 0.95), c, role="head", **tex),
        Part(
            "ellipse",
            (hx + s * hr * 0.55, hy - hr * 0.35, 0.05 + hr * 0.6),
            (hr * (0.35 if cat else 0.55), hr * 0.35),
            c2 if not cat else c,
            role="detail",
        ),
        Part(
            "ellipse",
            (hx + s * hr * (0.8 if cat else 1.0), hy - hr * 0.25, 0.06 + hr),
            (hr * 0.14, hr * 0.1),
            (0.9, 0.5, 0.55) if cat else DARK,
            role="eye",
        ),
    ]
    for e in (-1, 1):
        if cat:
            parts.append(
                Part(
                    "triangle",
                    (hx + e * hr * 0.55, hy + hr * 0.95, 0.03),
                    (hr * 0.35, hr * 0.45),
                    c,
                    angle=-e * 0.2,
                    role="limb",
                )
            )
        else:
            parts.append(
                Part(
                    "ellipse",
                    (hx + e * hr * 0.8, hy + hr * 0.1, 0.0 + e * 0.02),
                    (hr * 0.3, hr * 0.65),
                    c2,
                    angle=-e * 0.3,
                    role="limb",
                )
            )
        parts.append(
            Part(
                "ellipse",
                (hx + s * hr * 0.2 + e * hr * 0.3, hy + hr * 0.15, 0.05 + hr * 0.9),
                (hr * 0.11,) * 2,
                DARK,
                role="eye",
                facing=True,
            )
        )
    for x, z in ((-0.7, -0.08), (-0.45, 0.08), (0.45, -0.08), (0.7, 0.08)):
        parts.append(
            Part("capsule", (x * bw, leg / 2 + 0.01, z), (leg / 2 + 0.01, 0.035), c, angle=PI / 2, role="limb")
        )
    tail = (-s * (bw + 0.08), by + bh * (0.8 if cat else 0.5), -0.05)
    parts.append(
        Part(
            "capsule",
            tail,
            (0.13 if cat else 0.08, 0.02 if cat else 0.03),
            c,
            angle=s * (1.2 if cat else 0.6),
            role="limb",
        )
    )
    return parts


def unusual_assemblage(rng: np.random.Generator, pal: Palette) -> tuple[str, str, bool, list[Part]]:
    """A free-form subject: 3-7 random primitives stacked or clustered; returns (recipe, class, live, parts)."""
    cls = str(rng.choice(list(UNUSUAL_CLASSES)))
    n = int(rng.integers(3, 8))
    parts, y = [], 0.0
    stacked = rng.random() < 0.6
    for i in range(n):
        kind = str(rng.choice(KINDS))
        a, b = uniform(rng, 0.06, 0.26), uniform(rng, 0.06, 0.2)
        if stacked:
            cy = y + b
            y = cy + b * 0.7
            x = uniform(rng, -0.08, 0.08)
        else:
            cy, x = uniform(rng, 0.15, 0.7), uniform(rng, -0.25, 0.25)
        parts.append(
            Part(
                kind,
                (x, cy, uniform(rng, -0.1, 0.1) + 0.001 * i),
                (a, b),
                pal.color(i),
                angle=uniform(rng, -0.6, 0.6),
                param=float(rng.integers(4, 8)) if kind == "star" else uniform(rng, 0.2, 0.8),
                shade=str(rng.choice(["dome", "cyl", "flat"])),
                role="body" if i == 0 else "limb",
                **{k: v for k, v in pal.texture(0.3).items() if k != "color2"},
                color2=pal.color(i + 1),
            )
        )
    if stacked and y > 1.0:  # keep the object about one unit tall
        k = 1.0 / y
        parts = [
            replace(p, center=(p.center[0], p.center[1] * k, p.center[2]), size=(p.size[0] * k, p.size[1] * k))
            for p in parts
        ]
    if cls == "creature" or rng.random() < 0.3:
        top = max(parts, key=lambda p: p.center[1])
        parts += eyes(rng, top.center[0], top.center[1], top.center[2] + 0.15, 0.025, 0.05)
    return f"assemblage-{cls}", cls, False, parts


def unusual_swap(rng: np.random.Generator, parts: list[Part]) -> list[Part]:
    """Make a regular subject unusual: swap the shapes of its body-like parts and squash proportions."""
    out = []
    for p in parts:
        if p.role in ("body", "head", "limb") and rng.random() < 0.6:
            kind = str(rng.choice(["star", "triangle", "ring", "box", "ellipse", "trapezoid"]))
            p = replace(p, kind=kind, param=float(rng.integers(4, 8)) if kind == "star" else 0.35)
        out.append(p)
    sx = uniform(rng, 0.75, 1.3)
    return [
        replace(p, center=(p.center[0] * sx, p.center[1], p.center[2]), size=(p.size[0] * sx, p.size[1])) for p in out
    ]
