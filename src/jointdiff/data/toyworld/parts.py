"""What toy-world subjects are made of: primitive parts with colours and textures, and the palettes they draw from.

A :class:`Part` lives in a 3-D object frame; a :class:`Palette` draws one subject's colour scheme from its
generator. Recipes (``recipes/``) build parts from palettes; :mod:`subjects` turns them into subjects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jointdiff.data.toyworld.raster import hsv_to_rgb, rgb_to_hsv

RGB = tuple[float, float, float]

KINDS = ("ellipse", "box", "capsule", "triangle", "trapezoid", "star", "ring", "halfdisc")
SHADES = ("dome", "cyl", "flat")
TEXTURES = ("solid", "stripes", "dots", "checks", "gradient", "speckle", "zigzag")
TEXTURE_WORDS = {"stripes": "striped", "dots": "polka-dot", "checks": "checkered", "speckle": "speckled"}
ROLES = ("body", "head", "limb", "detail", "eye", "emissive", "accessory")
COLOR_WORDS = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink", "brown", "white", "grey", "black")


@dataclass(frozen=True)
class Part:
    """One primitive of a subject, in the object frame: x right, y up from the ground (height ~1), z to the viewer."""

    kind: str  # one of KINDS
    center: tuple[float, float, float]
    size: tuple[float, float]  # half extents (a along the part's own u axis, b along v)
    color: RGB
    color2: RGB | None = None  # second texture colour (None: a darker shade of `color`)
    angle: float = 0.0  # in-plane rotation (rad, counter-clockwise)
    texture: str = "solid"  # one of TEXTURES
    freq: float = 3.0  # texture repetitions across the part
    tex_angle: float = 0.0  # texture direction (rad)
    param: float = 0.0  # kind-specific: box corner radius (fraction), star tips, ring thickness, trapezoid top ratio
    shade: str = "dome"  # one of SHADES: surface curvature for lighting
    role: str = "body"  # one of ROLES: attribute and outfit edits act on roles
    facing: bool = False  # lies on the front surface: foreshortened by the yaw


def color_name(rgb: RGB) -> str:
    """The colour word (one of COLOR_WORDS) naming an RGB colour."""
    h, s, v = rgb_to_hsv(rgb)
    if v < 0.22:
        return "black"
    if s < 0.18:
        return "white" if v > 0.8 else "grey"
    if 0.02 <= h < 0.12 and v < 0.6:
        return "brown"
    if h < 0.03 or h >= 0.95:
        return "pink" if s < 0.45 else "red"
    for bound, word in ((0.11, "orange"), (0.18, "yellow"), (0.44, "green"), (0.53, "teal"), (0.71, "blue")):
        if h < bound:
            return word
    return "purple" if h < 0.84 else "pink"


class Palette:
    """Colours of one subject: a scheme around a base hue plus neutrals, drawn from ``rng``."""

    def __init__(self, rng: np.random.Generator, wild: bool = False) -> None:
        self.rng = rng
        base = rng.random()
        scheme = rng.choice(["mono", "complement", "triad", "random"], p=[0.25, 0.3, 0.2, 0.25])
        offsets = {"mono": [0, 0.03, -0.03], "complement": [0, 0.5, 0.05], "triad": [0, 1 / 3, 2 / 3]}.get(
            str(scheme), list(rng.random(3))
        )
        self.hues = [(base + o) % 1.0 for o in offsets]
        self.sat = float(rng.uniform(0.75, 1.0) if wild else rng.uniform(0.35, 0.95))
        self.neutral_p = 0.0 if wild else 0.15

    def color(self, i: int = 0, v: tuple[float, float] = (0.45, 0.95)) -> RGB:
        """Colour ``i`` of the scheme (or, sometimes, a neutral: white, grey, black, brown)."""
        rng = self.rng
        if rng.random() < self.neutral_p:
            return tuple(
                float(c) for c in [(0.93, 0.92, 0.9), (0.55, 0.55, 0.57), (0.12, 0.12, 0.13), (0.45, 0.28, 0.15)][i % 4]
            )  # type: ignore[return-value]
        h = (self.hues[i % len(self.hues)] + rng.normal(0, 0.02)) % 1.0
        return hsv_to_rgb(h, float(np.clip(self.sat + rng.normal(0, 0.08), 0.2, 1.0)), float(rng.uniform(*v)))

    def texture(self, p_solid: float = 0.45) -> dict:
        """Random texture fields for a :class:`Part`."""
        rng = self.rng
        tex = "solid" if rng.random() < p_solid else str(rng.choice(TEXTURES[1:]))
        return {
            "texture": tex,
            "freq": float(rng.uniform(2.0, 5.0)),
            "tex_angle": float(rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4])),
            "color2": self.color(1 + int(rng.integers(2))),
        }
