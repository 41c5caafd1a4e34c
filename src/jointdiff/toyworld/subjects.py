"""Toy-world subjects: composite objects of parts, deterministic from an integer seed (JeDi sec. 3.1 in miniature).

A subject is a frozen :class:`SubjectSpec`: a class word as in the DreamBooth benchmark ("toy",
"vase", "dog", ...), a tuple of :class:`Part` primitives with colours and textures in a 3-D object
frame, and a short descriptor for captions ("green striped"). About a third of the subjects are
*unusual* (free-form assemblages or regular classes with swapped part shapes and odd colours),
the paper's hard case. Subject seeds are split into disjoint ranges (:data:`SEED_RANGES`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np

from jointdiff.toyworld.raster import hsv_to_rgb, rgb_to_hsv

RGB = tuple[float, float, float]

# Disjoint subject-seed ranges; set index i of a split uses subject seed start + i.
SEED_RANGES: dict[str, range] = {
    "train": range(0, 900_000_000),  # training sets for the joint-image model
    "evaluator": range(900_000_000, 1_000_000_000),  # training data of the toy evaluators
    "eval": range(1_000_000_000, 1_100_000_000),  # held-out subjects: benchmark and evaluator checks
}

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


@dataclass(frozen=True)
class SubjectSpec:
    """A toy-world subject: everything needed to render it in any pose, scene and style."""

    seed: int
    class_word: str  # DreamBooth-like class noun used in prompts
    recipe: str  # the generator recipe (several recipes share a class word)
    live: bool  # live subjects (pets) get the live prompt list
    unusual: bool  # free-form or shape-swapped: the hard case
    parts: tuple[Part, ...]
    shininess: float  # specular strength in [0, 1]
    descriptor: str  # caption adjectives, e.g. "green striped"

    @property
    def name(self) -> str:
        """A unique, file-name-safe name."""
        return f"{self.class_word.replace(' ', '_')}-{self.seed}"

    @property
    def color_word(self) -> str:
        """Colour name of the main body part."""
        return color_name(self.parts[0].color)


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


def subject_seed(split: str, index: int) -> int:
    """Subject seed of set/subject ``index`` of a split (see :data:`SEED_RANGES`)."""
    if split not in SEED_RANGES:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SEED_RANGES)}")
    r = SEED_RANGES[split]
    if not 0 <= index < len(r):
        raise ValueError(f"index {index} is outside split {split!r} (0 <= index < {len(r)})")
    return r.start + index


def split_of(seed: int) -> str:
    """The split a subject seed belongs to."""
    for name, r in SEED_RANGES.items():
        if seed in r:
            return name
    raise ValueError(f"subject seed {seed} is outside every split range")


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


def make_subject(seed: int) -> SubjectSpec:
    """The subject of an integer seed (pure function of the seed: same seed, same subject)."""
    from jointdiff.toyworld.recipes import CLASS_RECIPES, unusual_assemblage, unusual_swap

    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"subject seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng([int(seed), zlib.crc32(b"subject")])
    u = rng.random()
    if u < 0.15:  # free-form assemblage: no everyday class at all
        recipe, cls, live, parts = unusual_assemblage(rng, Palette(rng, wild=True))
        unusual = True
    else:
        names = list(CLASS_RECIPES)
        weights = np.array([CLASS_RECIPES[n][2] for n in names], dtype=float)
        recipe = str(rng.choice(names, p=weights / weights.sum()))
        builder, cls, _, live = CLASS_RECIPES[recipe]
        unusual = u > 0.82 and not live  # regular class, odd shapes and colours
        parts = builder(rng, Palette(rng, wild=unusual))
        if unusual:
            parts = unusual_swap(rng, parts)
    body = parts[0]
    words = [color_name(body.color)]
    if body.texture in TEXTURE_WORDS:
        words.append(TEXTURE_WORDS[body.texture])
    shininess = float(rng.beta(1.2, 3.0))
    return SubjectSpec(
        seed=int(seed),
        class_word=cls,
        recipe=recipe,
        live=live,
        unusual=unusual,
        parts=tuple(parts),
        shininess=shininess,
        descriptor=" ".join(words),
    )


def with_parts(subject: SubjectSpec, parts: list[Part] | tuple[Part, ...], **changes: object) -> SubjectSpec:
    """A copy of ``subject`` with new parts (and other field changes); used by prompt edits."""
    return replace(subject, parts=tuple(parts), **changes)  # type: ignore[arg-type]
