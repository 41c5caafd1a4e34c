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

from jointdiff.data.toyworld.parts import TEXTURE_WORDS, Palette, Part, color_name
from jointdiff.data.toyworld.recipes import CLASS_RECIPES, unusual_assemblage, unusual_swap

# Disjoint subject-seed ranges; set index i of a split uses subject seed start + i.
SEED_RANGES: dict[str, range] = {
    "train": range(0, 900_000_000),  # training sets for the joint-image model
    "evaluator": range(900_000_000, 1_000_000_000),  # training data of the toy evaluators
    "eval": range(1_000_000_000, 1_100_000_000),  # held-out subjects: benchmark and evaluator checks
}


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


def make_subject(seed: int) -> SubjectSpec:
    """The subject of an integer seed (pure function of the seed: same seed, same subject)."""
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
