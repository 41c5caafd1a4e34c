"""Recipes of toys and characters: figure, robot, cartoon, duck, car, monster, plushie."""

from __future__ import annotations

import numpy as np

from jointdiff.data.toyworld.parts import Palette, Part
from jointdiff.data.toyworld.recipes.common import DARK, PI, WHITE, accessory, eyes, uniform


def figure(rng: np.random.Generator, pal: Palette) -> list[Part]:
    """A toy figure: body, head, limbs, face."""
    bw, bh = uniform(rng, 0.16, 0.28), uniform(rng, 0.15, 0.24)
    leg = uniform(rng, 0.08, 0.2)
    by = leg + bh
    hb = uniform(rng, 0.11, 0.19)
    hy = by + bh + hb * 0.85
    body = Part(
        str(rng.choice(["ellipse", "box", "trapezoid"])), (0, by, 0), (bw, bh), pal.color(0), param=0.7, **pal.texture()
    )
    head = Part(
        str(rng.choice(["ellipse", "box"])),
        (0, hy, 0.02),
        (hb * uniform(rng, 0.9, 1.25), hb),
        pal.color(1),
        param=0.4,
        role="head",
    )
    limb = pal.color(2)
    parts = [body, head]
    for s in (-1, 1):
        parts.append(
            Part("capsule", (s * bw * 0.5, leg / 2 + 0.01, -0.02), (leg / 2, 0.045), limb, angle=PI / 2, role="limb")
        )
        a = PI / 2 + s * uniform(rng, 0.3, 1.0)
        parts.append(Part("capsule", (s * (bw + 0.05), by + 0.03, -0.01), (0.1, 0.035), limb, angle=a, role="limb"))
    parts += eyes(rng, 0, hy + hb * 0.1, 0.02 + hb * 0.9, hb * 0.16, hb * 0.38)
    parts += accessory(rng, pal, hy + hb, 0, 0.02, hb)
    return parts


def robot(rng: np.random.Generator, pal: Palette) -> list[Part]:
    """A boxy robot: body, head, antenna, visor or eyes, chest panel, arms, legs or wheels."""
    bw, bh = uniform(rng, 0.17, 0.27), uniform(rng, 0.15, 0.22)
    leg = uniform(rng, 0.08, 0.16)
    by = leg + bh
    hw, hh = uniform(rng, 0.1, 0.2), uniform(rng, 0.09, 0.14)
    hy = by + bh + hh + 0.02
    metal = pal.color(0, v=(0.5, 0.9))
    parts = [
        Part("box", (0, by, 0), (bw, bh), metal, param=0.15, shade="flat", **pal.texture(0.7)),
        Part("box", (0, hy, 0.01), (hw, hh), pal.color(1), param=0.2, shade="flat", role="head"),
        Part(
            "box",
            (0, by + 0.02, 0.16),
            (bw * 0.55, bh * 0.45),
            pal.color(2),
            texture=str(rng.choice(["checks", "stripes", "solid"])),
            freq=3,
            color2=DARK,
            shade="flat",
            role="detail",
            facing=True,
        ),
        Part("capsule", (0, hy + hh + 0.06, 0), (0.06, 0.012), (0.35, 0.35, 0.38), angle=PI / 2, role="limb"),
        Part("ellipse", (0, hy + hh + 0.13, 0), (0.03, 0.03), pal.color(2), role="emissive"),
    ]
    glow = (0.3, 0.95, 0.9) if rng.random() < 0.5 else (1.0, 0.3, 0.2)
    if rng.random() < 0.5:
        parts.append(
            Part("box", (0, hy + 0.01, 0.13), (hw * 0.75, hh * 0.28), glow, param=0.5, role="emissive", facing=True)
        )
    else:
        parts += [
            Part("ellipse", (s * hw * 0.45, hy + 0.01, 0.13), (hh * 0.25,) * 2, glow, role="emissive", facing=True)
            for s in (-1, 1)
        ]
    for s in (-1, 1):
        parts.append(
            Part(
                "capsule",
                (s * (bw + 0.04), by, -0.02),
                (bh * 0.8, 0.03),
                (0.4, 0.4, 0.42),
                angle=PI / 2 + s * 0.2,
                role="limb",
            )
        )
        if rng.random() < 0.5:
            parts.append(
                Part(
                    "box",
                    (s * bw * 0.5, leg / 2, -0.02),
                    (0.05, leg / 2 + 0.01),
                    pal.color(1),
                    param=0.2,
                    shade="flat",
                    role="limb",
                )
            )
        else:
            parts.append(Part("ellipse", (s * bw * 0.6, leg * 0.6, 0.05), (leg * 0.6,) * 2, DARK, role="limb"))
    return parts


def cartoon(rng: np.random.Generator, pal: Palette) -> list[Part]:
    """A cartoon character: blob body, huge eyes, mouth, stubby limbs."""
    c = pal.color(0, v=(0.6, 1.0))
    w, h = uniform(rng, 0.2, 0.3), uniform(rng, 0.25, 0.36)
    kind = str(rng.choice(["ellipse", "box", "star", "triangle"], p=[0.5, 0.2, 0.15, 0.15]))
    parts = [Part(kind, (0, h + 0.06, 0), (w, h), c, param=6 if kind == "star" else 0.9, **pal.texture(0.7))]
    parts += eyes(rng, 0, h * 1.3 + 0.06, 0.2, w * 0.11, w * 0.32, big=True)
    parts.append(
        Part("halfdisc", (0, h * 0.8, 0.21), (w * 0.3, w * 0.18), (0.5, 0.05, 0.08), role="detail", facing=True)
    )
    for s in (-1, 1):
        parts.append(Part("capsule", (s * w * 0.4, 0.04, -0.01), (0.05, 0.04), pal.color(1), role="limb"))
    return parts


def duck(rng: np.random.Generator, pal: Palette) -> list[Part]:
    """A toy duck: body, head, beak, wing, eye."""
    c = pal.color(0, v=(0.6, 1.0))
    s = 1 if rng.random() < 0.5 else -1
    bw, bh = uniform(rng, 0.26, 0.34), uniform(rng, 0.15, 0.2)
    hr = uniform(rng, 0.11, 0.15)
    hx, hy = s * bw * 0.45, 2 * bh + hr * 0.6
    return [
        Part("ellipse", (0, bh + 0.01, 0), (bw, bh), c, **pal.texture(0.6)),
        Part("ellipse", (hx, hy, 0.03), (hr, hr), c, role="head"),
        Part(
            "triangle",
            (hx + s * hr * 1.1, hy - hr * 0.2, 0.05),
            (hr * 0.55, hr * 0.3),
            (1.0, 0.5, 0.1),
            angle=-s * PI / 2,
            role="detail",
        ),
        Part(
            "ellipse",
            (-s * bw * 0.1, bh * 1.1, 0.15),
            (bw * 0.45, bh * 0.5),
            pal.color(1),
            angle=s * 0.3,
            role="detail",
            facing=True,
        ),
        Part(
            "ellipse", (hx + s * hr * 0.3, hy + hr * 0.25, 0.03 + hr), (hr * 0.18,) * 2, DARK, role="eye", facing=True
        ),
        Part("triangle", (-s * bw * 1.05, bh * 1.5, 0), (0.06, 0.06), c, angle=s * PI / 2, role="limb"),
    ]


def car(rng: np.random.Generator, pal: Palette) -> list[Part]:
    """A toy car: body, cabin, windows, wheels, lights."""
    L, h = uniform(rng, 0.36, 0.46), uniform(rng, 0.08, 0.13)
    wr = uniform(rng, 0.07, 0.1)
    c = pal.color(0)
    parts = [
        Part("box", (0, wr + h, 0), (L, h), c, param=0.4, shade="flat", **pal.texture(0.6)),
        Part(
            "trapezoid", (-L * 0.1, wr + 2 * h + 0.07, -0.01), (L * 0.55, 0.08), c, param=0.7, shade="flat", role="head"
        ),
        Part(
            "box",
            (-L * 0.1, wr + 2 * h + 0.07, 0.12),
            (L * 0.4, 0.05),
            (0.55, 0.75, 0.9),
            param=0.3,
            shade="flat",
            role="detail",
            facing=True,
        ),
        Part("ellipse", (L * 0.92, wr + h * 1.2, 0.1), (0.03, 0.025), (1.0, 0.95, 0.6), role="emissive"),
    ]
    for x in (-0.6, 0.6):
        parts.append(Part("ellipse", (x * L, wr, 0.12), (wr, wr), DARK, role="limb", facing=True))
        parts.append(Part("ellipse", (x * L, wr, 0.13), (wr * 0.4,) * 2, (0.7, 0.7, 0.72), role="limb", facing=True))
    return parts


def monster(rng: np.random.Generator, pal: Palette) -> list[Part]:
    """A toy monster: lumpy body, horns, several eyes, spikes, claws."""
    c = pal.color(0, v=(0.4, 0.9))
    w, h = uniform(rng, 0.22, 0.3), uniform(rng, 0.22, 0.3)
    parts = [
        Part(
            str(rng.choice(["ellipse", "star"])),
            (0, h + 0.06, 0),
            (w, h),
            c,
            param=int(rng.integers(7, 12)),
            **pal.texture(0.5),
        )
    ]
    n_eyes = int(rng.integers(1, 4))
    for i in range(n_eyes):
        x = (i - (n_eyes - 1) / 2) * w * 0.5
        parts += [
            Part("ellipse", (x, h * 1.35, 0.2), (w * 0.16, w * 0.18), WHITE, role="eye", facing=True),
            Part("ellipse", (x, h * 1.33, 0.21), (w * 0.07,) * 2, DARK, role="eye", facing=True),
        ]
    for s in (-1, 1):
        parts.append(
            Part(
                "triangle",
                (s * w * 0.55, 2 * h + 0.08, -0.02),
                (0.05, 0.09),
                pal.color(1, v=(0.8, 1.0)),
                angle=-s * 0.4,
                role="limb",
            )
        )
        parts.append(Part("capsule", (s * (w + 0.03), h * 0.9, 0), (0.08, 0.04), c, angle=s * 0.8, role="limb"))
    parts.append(
        Part(
            "box",
            (0, h * 0.75, 0.2),
            (w * 0.4, 0.03),
            DARK,
            texture="zigzag",
            color2=WHITE,
            freq=4,
            role="detail",
            facing=True,
        )
    )
    return parts


def plushie(rng: np.random.Generator, pal: Palette) -> list[Part]:
    """A stuffed animal: soft body, head, ears, snout, paws."""
    c = pal.color(0, v=(0.4, 0.9))
    bw, bh = uniform(rng, 0.18, 0.26), uniform(rng, 0.17, 0.24)
    hb = uniform(rng, 0.14, 0.2)
    hy = 2 * bh + hb * 0.8
    long_ears = rng.random() < 0.3
    tex = pal.texture(0.6)
    parts = [
        Part("ellipse", (0, bh + 0.02, 0), (bw, bh), c, **tex),
        Part("ellipse", (0, hy, 0.03), (hb * 1.1, hb), c, role="head", **tex),
        Part(
            "ellipse",
            (0, hy - hb * 0.35, 0.03 + hb * 0.9),
            (hb * 0.45, hb * 0.32),
            pal.color(1, v=(0.7, 1.0)),
            role="detail",
            facing=True,
        ),
        Part("ellipse", (0, hy - hb * 0.25, 0.05 + hb), (hb * 0.14, hb * 0.1), DARK, role="eye", facing=True),
    ]
    for s in (-1, 1):
        if long_ears:
            parts.append(
                Part("ellipse", (s * hb * 0.5, hy + hb * 1.2, 0.0), (0.05, hb * 0.9), c, angle=s * 0.2, role="limb")
            )
        else:
            parts.append(Part("ellipse", (s * hb * 0.8, hy + hb * 0.75, 0.0), (hb * 0.38,) * 2, c, role="limb"))
        parts.append(Part("ellipse", (s * bw * 0.85, bh * 1.2, 0.04), (0.06, 0.1), c, angle=s * 0.5, role="limb"))
        parts.append(Part("ellipse", (s * bw * 0.55, 0.06, 0.08), (0.08, 0.06), c, role="limb"))
    parts += eyes(rng, 0, hy + hb * 0.2, 0.03 + hb * 0.9, hb * 0.11, hb * 0.35)
    return parts + accessory(rng, pal, hy + hb, 0, 0.03, hb)
