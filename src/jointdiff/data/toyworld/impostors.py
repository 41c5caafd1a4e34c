"""Impostors: images that share something with a subject and are not it (issue 26's impostor ladder).

Subject-level impostors are toy-world subjects built from a subject (pure functions of the subject
and, where random, a generator), so they render in every scene and pose like the subject:

- :func:`recoloured`: the subject with every part's hue turned (parts, textures, layout kept);
- :func:`parts_changed`: the subject's palette on other parts (kinds, textures, proportions changed);
- :func:`palette_matched`: another subject of the class painted in this subject's colours (chosen with
  visibly different parts, :func:`same_class_subject`).

Image-level impostors act on renders: :func:`silhouette` (the subject's mask filled with its mean
colour, the "blob in the right colours") and :func:`blurred` (a Gaussian blur of ``sigma`` pixels).
The part-aware identity encoder is trained with the subject-level ones (randomised) as hard negatives
(``training/evaluators.py``); the ladder (``evaluation/toy/ladder.py``) scores every measure on all.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np

from jointdiff.data.toyworld.parts import KINDS, RGB, TEXTURES
from jointdiff.data.toyworld.raster import blur, hsv_to_rgb, rgb_to_hsv
from jointdiff.data.toyworld.subjects import SEED_RANGES, SubjectSpec, make_subject, with_parts

KEEP_ROLES = ("eye", "emissive")  # eyes and lights keep their colour and shape in every impostor
NEUTRAL_SATURATION = 0.18  # below it a colour is a neutral (white, grey, black): it has no hue to turn
PALETTE_CANDIDATES = 8  # the subject painted in another's palette: the most different of 8 (see same_class_subject)


def _turn(c: RGB | None, shift: float, neutral_hue: float) -> RGB | None:
    """``c`` with its hue turned by ``shift`` (a fraction of the circle); a neutral takes ``neutral_hue``."""
    if c is None:
        return None
    h, s, v = rgb_to_hsv(c)
    if s < NEUTRAL_SATURATION:  # white / grey / black: give it a colour, or a recolouring leaves it unchanged
        return hsv_to_rgb(neutral_hue, 0.6, float(np.clip(v, 0.35, 0.9)))
    return hsv_to_rgb((h + shift) % 1.0, s, v)


def recoloured(subject: SubjectSpec, shift: float = 0.5) -> SubjectSpec:
    """The subject with every part's hue turned by ``shift`` of the circle (0.5 = 180 degrees); neutral parts
    take the turned hue of the body, so no part keeps its colour. Shapes, textures and layout are kept."""
    body_h, body_s, _ = rgb_to_hsv(subject.parts[0].color)
    neutral = (body_h + shift) % 1.0 if body_s >= NEUTRAL_SATURATION else shift
    parts = [
        p
        if p.role in KEEP_ROLES
        else replace(p, color=_turn(p.color, shift, neutral), color2=_turn(p.color2, shift, neutral))
        for p in subject.parts
    ]
    return with_parts(subject, parts)


def parts_changed(subject: SubjectSpec, rng: np.random.Generator, p: float = 1.0, jitter: float = 0.0) -> SubjectSpec:
    """The subject's palette on other parts: each part (eyes and lights excepted) is changed with probability
    ``p`` (the body always) to another primitive kind and another texture; colours, places and sizes are kept,
    sizes and angles up to ``jitter`` (a fraction; 0 = kept exactly)."""
    parts = []
    for i, part in enumerate(subject.parts):
        if part.role in KEEP_ROLES or (i > 0 and rng.random() >= p):
            parts.append(part)
            continue
        kind = str(rng.choice([k for k in KINDS if k != part.kind]))
        texture = str(rng.choice([t for t in TEXTURES if t != part.texture]))
        sx, sy = rng.uniform(1 - jitter, 1 + jitter, size=2)
        parts.append(
            replace(
                part,
                kind=kind,
                texture=texture,
                size=(part.size[0] * float(sx), part.size[1] * float(sy)),
                angle=part.angle + float(rng.uniform(-1.0, 1.0)) * jitter,
                param=float(rng.integers(4, 8)) if kind == "star" else float(rng.uniform(0.2, 0.6)),
                freq=float(rng.uniform(2.0, 5.0)),
            )
        )
    return with_parts(subject, parts)


def palette_of(subject: SubjectSpec) -> dict[str, list[tuple[RGB, RGB | None]]]:
    """The subject's (colour, second colour) pairs by part role, in part order."""
    out: dict[str, list[tuple[RGB, RGB | None]]] = {}
    for part in subject.parts:
        out.setdefault(part.role, []).append((part.color, part.color2))
    return out


def palette_matched(subject: SubjectSpec, other: SubjectSpec) -> SubjectSpec:
    """``other`` painted in ``subject``'s colours: each part takes the colours of the subject's part of the same
    role (cycling through them; the body's when the subject has no part of that role). ``other``'s shapes,
    textures and layout are kept; its seed and name stay ``other``'s."""
    palette = palette_of(subject)
    body = palette["body"][0] if "body" in palette else (subject.parts[0].color, subject.parts[0].color2)
    seen: dict[str, int] = {}
    parts = []
    for part in other.parts:
        if part.role in KEEP_ROLES:
            parts.append(part)
            continue
        options = palette.get(part.role, [body])
        k = seen.get(part.role, 0)
        seen[part.role] = k + 1
        color, color2 = options[k % len(options)]
        parts.append(replace(part, color=color, color2=color2))
    return with_parts(other, parts)


def part_signature(subject: SubjectSpec) -> Counter:
    """The multiset of (role, kind, texture) of the subject's parts, eyes and lights left out."""
    return Counter((p.role, p.kind, p.texture) for p in subject.parts if p.role not in KEEP_ROLES)


def part_difference(a: SubjectSpec, b: SubjectSpec) -> float:
    """How different two subjects' parts are: 1 - multiset Jaccard of their :func:`part_signature` (0 = the same
    kinds and textures in the same roles, 1 = none shared)."""
    sa, sb = part_signature(a), part_signature(b)
    union = sum((sa | sb).values())
    return 1.0 - sum((sa & sb).values()) / union if union else 0.0


def same_class_subject(
    subject: SubjectSpec, rng: np.random.Generator, split: str = "train", candidates: int = 1
) -> SubjectSpec:
    """A random subject of ``split`` with the subject's class word and recipe (not the subject itself): of
    ``candidates`` such subjects drawn, the one whose parts differ most from the subject's
    (:func:`part_difference`; the first drawn on ties).

    Why more than one candidate: two subjects of one recipe share their layout, so in the same colours they
    are often twins (a tenth of pairs share every part kind and texture); "another subject in this subject's
    palette" is meant to be one a person tells apart by its parts (:data:`PALETTE_CANDIDATES`)."""
    r = SEED_RANGES[split]
    found: list[SubjectSpec] = []
    for _ in range(20_000 * candidates):
        other = make_subject(int(rng.integers(r.start, r.stop)))
        if other.class_word == subject.class_word and other.recipe == subject.recipe and other.seed != subject.seed:
            found.append(other)
            if len(found) == candidates:
                return max(found, key=lambda o: part_difference(subject, o))
    raise ValueError(f"no other {subject.recipe!r} subject found in split {split!r}")


def silhouette(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A render with the subject's visible pixels (``mask``) filled with their mean colour: a blob of the
    subject's outline and average colour, every part gone. ``(H, W, 3)`` uint8 -> same."""
    out = image.copy()
    if mask.any():
        out[mask] = np.round(image[mask].reshape(-1, 3).astype(np.float64).mean(0)).astype(np.uint8)
    return out


def blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    """A render blurred by a Gaussian of ``sigma`` pixels (edges replicated). ``(H, W, 3)`` uint8 -> same."""
    out = blur(image.astype(np.float32) / 255.0, sigma)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
