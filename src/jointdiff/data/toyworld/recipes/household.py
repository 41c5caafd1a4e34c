"""Recipes of household objects: vase, teapot, backpack, can, candle, bowl, clock, shoes, glasses."""

from __future__ import annotations

import numpy as np

from jointdiff.data.toyworld.parts import Palette, Part
from jointdiff.data.toyworld.recipes.common import DARK, PI, WHITE, uniform


def vase(rng: np.random.Generator, pal: Palette) -> list[Part]:
    """A vase: patterned body, neck, lip, optional handles."""
    bw, bh = uniform(rng, 0.16, 0.3), uniform(rng, 0.2, 0.32)
    nh = uniform(rng, 0.06, 0.16)
    c = pal.color(0)
    parts = [
        Part(
            str(rng.choice(["ellipse", "ellipse", "trapezoid", "box"])),
            (0, bh + 0.01, 0),
            (bw, bh),
            c,
            param=0.6,
            shade="cyl",
            **pal.texture(0.3),
        ),
        Part(
            "trapezoid",
            (0, 2 * bh + nh, 0.0),
            (bw * uniform(rng, 0.3, 0.5), nh),
            c,
            param=uniform(rng, 0.6, 1.1),
            shade="cyl",
            role="limb",
        ),
        Part("ellipse", (0, 2 * bh + 2 * nh, 0.01), (bw * uniform(rng, 0.35, 0.6), 0.03), pal.color(1), role="limb"),
    ]
    if rng.random() < 0.35:
        parts += [
            Part("ring", (s * bw * 0.95, bh * 1.4, -0.03), (0.07, 0.09), c, param=0.35, role="limb") for s in (-1, 1)
        ]
    return parts


def teapot(rng: np.random.Generator, pal: Palette) -> list[Part]:
    """A teapot: round body, lid and knob, spout, handle."""
    bw, bh = uniform(rng, 0.22, 0.32), uniform(rng, 0.16, 0.24)
    c = pal.color(0)
    side = 1 if rng.random() < 0.5 else -1
    return [
        Part(
            str(rng.choice(["ellipse", "ellipse", "box"])),
            (0, bh + 0.02, 0),
            (bw, bh),
            c,
            param=0.8,
            **pal.texture(0.5),
        ),
        Part("halfdisc", (0, 2 * bh + 0.01, 0.01), (bw * 0.5, 0.07), pal.color(1), angle=PI, role="head"),
        Part("ellipse", (0, 2 * bh + 0.09, 0.01), (0.035, 0.03), pal.color(2), role="limb"),
        Part(
            "capsule",
            (side * (bw + 0.07), bh * 1.35, 0.0),
            (0.1, 0.028),
            c,
            angle=side * uniform(rng, 0.5, 0.9),
            role="limb",
        ),
        Part("ring", (-side * (bw + 0.02), bh * 1.1, -0.02), (0.09, 0.1), c, param=0.3, role="limb"),
        Part("box", (0, 0.02, 0.0), (bw * 0.6, 0.025), pal.color(1), param=0.5, shade="cyl", role="limb"),
    ]


def backpack(rng: np.random.Generator, pal: Palette) -> list[Part]:
    """A backpack: rounded body, front pocket, flap, top handle, straps."""
    bw, bh = uniform(rng, 0.2, 0.3), uniform(rng, 0.28, 0.38)
    c = pal.color(0)
    return [
        Part("box", (0, bh + 0.01, 0), (bw, bh), c, param=uniform(rng, 0.3, 0.9), shade="flat", **pal.texture(0.5)),
        Part(
            "box",
            (0, bh * 0.6, 0.15),
            (bw * 0.7, bh * 0.35),
            pal.color(1),
            param=0.4,
            shade="flat",
            role="detail",
            facing=True,
        ),
        Part(
            "halfdisc",
            (0, bh * 1.75, 0.14),
            (bw * 0.95, bh * 0.35),
            pal.color(int(rng.integers(3))),
            angle=PI,
            role="detail",
            facing=True,
        ),
        Part("ring", (0, 2 * bh + 0.04, -0.02), (0.07, 0.05), DARK, param=0.35, role="limb"),
        Part("capsule", (0, bh * 1.2, 0.16), (bw * 0.5, 0.008), DARK, role="detail", facing=True),
    ] + [
        Part("capsule", (s * (bw + 0.01), bh, -0.05), (bh * 0.8, 0.025), DARK, angle=PI / 2, role="limb")
        for s in (-1, 1)
    ]


def can(rng: np.random.Generator, pal: Palette) -> list[Part]:
    """A can: metallic cylinder, top rim, printed label band."""
    w, h = uniform(rng, 0.14, 0.22), uniform(rng, 0.25, 0.38)
    metal = (0.75, 0.76, 0.78) if rng.random() < 0.5 else pal.color(2)
    return [
        Part("box", (0, h + 0.01, 0), (w, h), pal.color(0), param=0.1, shade="cyl", **pal.texture(0.4)),
        Part("ellipse", (0, 2 * h, 0.01), (w, 0.035), metal, role="limb"),
        Part(
            "box",
            (0, h + uniform(rng, -0.1, 0.1), 0.02),
            (w * 1.001, h * uniform(rng, 0.2, 0.4)),
            pal.color(1),
            shade="cyl",
            role="detail",
            **{k: v for k, v in pal.texture(0.5).items() if k != "color2"},
        ),
        Part("capsule", (0, 2 * h + 0.01, 0.02), (0.03, 0.008), (0.5, 0.5, 0.52), role="limb"),
    ]


def candle(rng: np.random.Generator, pal: Palette) -> list[Part]:
    """A candle: wax cylinder, wick, glowing flame, optional dish and drips."""
    w, h = uniform(rng, 0.08, 0.16), uniform(rng, 0.2, 0.34)
    base = 0.05 if rng.random() < 0.5 else 0.0
    wax = pal.color(0, v=(0.7, 0.98))
    parts = [
        Part("box", (0, base + h, 0), (w, h), wax, param=0.1, shade="cyl", **pal.texture(0.6)),
        Part("capsule", (0, base + 2 * h + 0.03, 0), (0.03, 0.008), DARK, angle=PI / 2, role="limb"),
        Part("ellipse", (0, base + 2 * h + 0.1, 0.01), (0.035, 0.07), (1.0, 0.7, 0.2), role="emissive"),
        Part("ellipse", (0, base + 2 * h + 0.085, 0.02), (0.015, 0.035), (1.0, 0.97, 0.8), role="emissive"),
    ]
    if base:
        parts.append(Part("ellipse", (0, base * 0.6, 0.03), (w * 2.2, base * 0.7), pal.color(1), role="limb"))
    if rng.random() < 0.5:
        parts.append(
            Part("capsule", (w * 0.5, base + 2 * h - 0.05, 0.12), (0.05, 0.015), wax, angle=PI / 2, role="detail")
        )
    return parts


def bowl(rng: np.random.Generator, pal: Palette) -> list[Part]:
    """A bowl of berries: half-disc body, rim, a heap of small round fruit."""
    w, h = uniform(rng, 0.26, 0.36), uniform(rng, 0.14, 0.22)
    fruit = [(0.75, 0.05, 0.15), (0.2, 0.15, 0.55), (0.35, 0.05, 0.35), (0.9, 0.3, 0.1)][int(rng.integers(4))]
    parts = [
        Part("halfdisc", (0, h + 0.02, 0), (w, h), pal.color(0), shade="cyl", **pal.texture(0.4)),
        Part("ellipse", (0, h + 0.02, -0.05), (w, 0.05), pal.color(1), role="limb"),
        Part("box", (0, 0.02, 0), (w * 0.4, 0.025), pal.color(0), shade="cyl", role="limb"),
    ]
    for i in range(int(rng.integers(4, 9))):
        x = uniform(rng, -w * 0.75, w * 0.75)
        parts.append(
            Part(
                "ellipse",
                (x, h + 0.04 + uniform(rng, 0, 0.07), -0.04 + 0.001 * i),
                (0.045, 0.045),
                fruit,
                role="detail",
            )
        )
    return parts


def clock(rng: np.random.Generator, pal: Palette) -> list[Part]:
    """An alarm clock: rim, face, hands, bells, legs (or a square face)."""
    r = uniform(rng, 0.2, 0.3)
    cy = r + 0.07
    square = rng.random() < 0.3
    parts = [
        Part("box" if square else "ellipse", (0, cy, 0), (r, r), pal.color(0), param=0.3, **pal.texture(0.6)),
        Part(
            "box" if square else "ellipse",
            (0, cy, 0.12),
            (r * 0.78, r * 0.78),
            (0.95, 0.93, 0.86),
            param=0.3,
            role="detail",
            shade="flat",
            facing=True,
        ),
        Part("capsule", (0.0, cy + r * 0.22, 0.13), (r * 0.25, 0.012), DARK, angle=PI / 2, role="detail", facing=True),
        Part(
            "capsule",
            (r * 0.17, cy - r * 0.1, 0.13),
            (r * 0.2, 0.012),
            DARK,
            angle=uniform(rng, -1.0, 0.5),
            role="detail",
            facing=True,
        ),
    ]
    for s in (-1, 1):
        parts.append(
            Part("capsule", (s * r * 0.6, 0.04, -0.02), (0.05, 0.015), DARK, angle=PI / 2 + s * 0.5, role="limb")
        )
        if rng.random() < 0.7:
            parts.append(
                Part(
                    "halfdisc",
                    (s * r * 0.6, cy + r * 0.85, -0.03),
                    (r * 0.35, r * 0.3),
                    pal.color(1),
                    angle=s * 0.5 + PI,
                    role="limb",
                )
            )
    return parts


def shoe(rng: np.random.Generator, pal: Palette, boot: bool = False) -> list[Part]:
    """A sneaker or boot: sole, upper, toe cap, laces, (shaft)."""
    L = uniform(rng, 0.36, 0.46)
    sole = WHITE if rng.random() < 0.5 else pal.color(2)
    upper_h = uniform(rng, 0.12, 0.18)
    parts = [
        Part("ellipse", (0.02, 0.04 + upper_h, 0), (L * 0.85, upper_h), pal.color(0), **pal.texture(0.4)),
        Part("capsule", (0, 0.04, 0.01), (L * 0.85, 0.04), sole, role="limb"),
        Part("ellipse", (L * 0.65, 0.1, 0.03), (L * 0.28, 0.08), pal.color(1), role="detail"),
    ]
    if boot:
        parts.append(
            Part(
                "box",
                (-L * 0.35, 0.1 + upper_h + 0.18, -0.02),
                (L * 0.38, 0.24),
                pal.color(0),
                param=0.2,
                shade="cyl",
                role="head",
            )
        )
    else:
        parts.append(
            Part("box", (-L * 0.25, 0.12 + upper_h, -0.01), (L * 0.35, 0.08), pal.color(0), param=0.6, role="head")
        )
    lace = WHITE if sole != WHITE else DARK
    for i in range(3):
        parts.append(
            Part(
                "capsule",
                (L * (0.05 + 0.12 * i), 0.06 + upper_h * 1.6, 0.12),
                (0.05, 0.012),
                lace,
                angle=0.5,
                role="detail",
                facing=True,
            )
        )
    return parts


def glasses(rng: np.random.Generator, pal: Palette) -> list[Part]:
    """A pair of glasses: two framed lenses, bridge, temples."""
    r = uniform(rng, 0.12, 0.17)
    shape = str(rng.choice(["ellipse", "box", "star"]))
    frame = pal.color(0)
    tint = pal.color(1, v=(0.25, 0.6))
    parts = [Part("ring", (-r * 1.15, 0.25, 0.05), (r, r * 0.85), frame, param=0.2, role="body")]
    for s in (-1, 1):
        if s == 1:
            parts.append(Part("ring", (r * 1.15, 0.25, 0.05), (r, r * 0.85), frame, param=0.2, role="body"))
        parts.append(
            Part(
                shape,
                (s * r * 1.15, 0.25, 0.04),
                (r * 0.85, r * 0.72),
                tint,
                param=5 if shape == "star" else 0.4,
                shade="flat",
                role="detail",
                facing=True,
            )
        )
        parts.append(Part("capsule", (s * r * 2.2, 0.25, -0.15), (0.12, 0.015), frame, angle=s * 0.3, role="limb"))
    parts.append(Part("capsule", (0, 0.29, 0.05), (r * 0.3, 0.018), frame, role="limb"))
    return parts
