"""Prompt-driven edits of a subject: the attribute prompts (red, purple, shiny, wet, cube shaped) and the
outfit prompts of live subjects (hats, scarf, glasses, outfits), as part-level changes that keep
the subject's identity (shapes, layout, textures) so every pose and scene still applies.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np

from jointdiff.data.toyworld.parts import RGB, Part
from jointdiff.data.toyworld.raster import hsv_to_rgb, rgb_to_hsv
from jointdiff.data.toyworld.subjects import SubjectSpec, with_parts

PI = float(np.pi)
BLACK, WHITE, GOLD = (0.06, 0.06, 0.07), (0.96, 0.96, 0.95), (0.95, 0.75, 0.2)


def _rehue(c: RGB | None, hue: float, min_s: float = 0.65) -> RGB | None:
    if c is None:
        return None
    _, s, v = rgb_to_hsv(c)
    return hsv_to_rgb(hue, max(s, min_s), float(np.clip(v, 0.35, 0.95)))


def recolor(
    subject: SubjectSpec, hue: float, roles: tuple[str, ...] = ("body", "head", "limb", "detail", "accessory")
) -> SubjectSpec:
    """Every part with one of ``roles`` takes ``hue``, keeping its lightness (so textures stay visible)."""
    parts = [
        replace(p, color=_rehue(p.color, hue), color2=_rehue(p.color2, hue, 0.4)) if p.role in roles else p
        for p in subject.parts
    ]
    return with_parts(subject, parts)


def _cube(subject: SubjectSpec) -> SubjectSpec:
    parts = []
    for p in subject.parts:
        if p.role in ("body", "head"):
            m = (p.size[0] + p.size[1]) / 2
            p = replace(p, kind="box", size=(m, m), angle=0.0, param=0.08, shade="flat")
        parts.append(p)
    return with_parts(subject, parts)


def _wet(subject: SubjectSpec) -> SubjectSpec:
    rng = np.random.default_rng([subject.seed, zlib.crc32(b"wet")])
    darker = [
        replace(p, color=tuple(0.7 * c for c in p.color)) if p.role not in ("eye", "emissive") else p
        for p in subject.parts
    ]
    body = subject.parts[0]
    (x, y, z), (a, b) = body.center, body.size
    drops = [
        Part(
            "ellipse",
            (x + rng.uniform(-0.7, 0.7) * a, y + rng.uniform(-0.7, 0.7) * b, z + 0.3),
            (0.018, 0.026),
            (0.85, 0.92, 1.0),
            role="accessory",
            facing=True,
        )
        for _ in range(8)
    ]
    return with_parts(subject, darker + drops, shininess=0.9)


def _head(subject: SubjectSpec) -> Part:
    heads = [p for p in subject.parts if p.role == "head"]
    return heads[0] if heads else max(subject.parts, key=lambda p: p.center[1] + p.size[1])


def _hat(head: Part, kind: str, color: RGB, tall: float, brim: RGB | None = None, angle: float = 0.0) -> list[Part]:
    (x, y, z), (a, b) = head.center, head.size
    top = y + b * 0.85
    parts = [
        Part(
            kind,
            (x, top + b * tall * 0.5, z + 0.01),
            (a * 0.62, b * tall * 0.5 + 0.01),
            color,
            angle=angle,
            param=0.2,
            role="accessory",
        )
    ]
    if kind == "halfdisc":
        parts = [Part("halfdisc", (x, top, z + 0.01), (a * 0.75, b * tall), color, angle=PI, role="accessory")]
    if brim is not None:
        parts.append(Part("capsule", (x, top, z + 0.02), (a * 0.9, 0.018), brim, role="accessory"))
    return parts


UNIFORMS = ("chef", "firefighter", "police", "yellow_shirt", "wizard")  # outfits that recolour the body


def _outfit(subject: SubjectSpec, condition: str) -> SubjectSpec:
    """The subject wearing the condition's outfit: an accessory on the head or face, or a uniform."""
    if condition in UNIFORMS:
        subject, add = _uniform(subject, condition)
    else:
        add = _accessory(subject, condition)
    return with_parts(subject, list(subject.parts) + add)


def _accessory(subject: SubjectSpec, condition: str) -> list[Part]:
    """Parts of a hat, scarf, monocle or glasses on the subject's head."""
    head = _head(subject)
    (x, y, z), (a, b) = head.center, head.size
    front = z + b * 0.9
    eyes = [p for p in subject.parts if p.role == "eye" and p.facing and p.size[0] > 0.012]
    eye_xy = [(p.center[0], p.center[1]) for p in eyes[:2]] or [
        (x - a * 0.35, y + b * 0.1),
        (x + a * 0.35, y + b * 0.1),
    ]
    add: list[Part] = []
    if condition == "red_hat":
        add = _hat(head, "halfdisc", (0.85, 0.08, 0.08), 0.55, brim=(0.7, 0.05, 0.05))
    elif condition == "santa_hat":
        add = _hat(head, "triangle", (0.85, 0.05, 0.07), 1.2, angle=-0.35)
        add += [
            Part("capsule", (x, y + b * 0.85, z + 0.02), (a * 0.75, 0.03), WHITE, role="accessory"),
            Part("ellipse", (x + a * 0.45, y + b * 2.0, z + 0.02), (0.035, 0.035), WHITE, role="accessory"),
        ]
    elif condition == "rainbow_scarf":
        for k, c in enumerate([(0.9, 0.1, 0.1), (0.95, 0.8, 0.1), (0.15, 0.7, 0.2), (0.15, 0.35, 0.9)]):
            add.append(Part("capsule", (x, y - b * 0.8 - 0.025 * k, z + 0.06), (a * 0.9, 0.014), c, role="accessory"))
    elif condition == "top_hat_monocle":
        add = _hat(head, "box", BLACK, 1.1, brim=BLACK)
        ex, ey = eye_xy[-1]
        add.append(
            Part("ring", (ex, ey, front + 0.05), (b * 0.26, b * 0.26), GOLD, param=0.3, role="accessory", facing=True)
        )
    elif condition == "pink_glasses":
        for ex, ey in eye_xy:
            add.append(
                Part(
                    "ring",
                    (ex, ey, front + 0.05),
                    (b * 0.26, b * 0.22),
                    (1.0, 0.45, 0.7),
                    param=0.35,
                    role="accessory",
                    facing=True,
                )
            )
        (x0, y0), (x1, y1) = eye_xy[0], eye_xy[-1]
        add.append(
            Part(
                "capsule",
                ((x0 + x1) / 2, (y0 + y1) / 2 + 0.01, front + 0.05),
                (abs(x1 - x0) / 2, 0.01),
                (1.0, 0.45, 0.7),
                role="accessory",
                facing=True,
            )
        )
    else:
        raise ValueError(f"unknown outfit {condition!r}")
    return add


def _uniform(s: SubjectSpec, condition: str) -> tuple[SubjectSpec, list[Part]]:
    """The subject's body in the uniform's colour and the uniform's hat and badge."""
    head = _head(s)
    (x, y, z), b = head.center, head.size[1]
    add: list[Part] = []
    body_hue = {"chef": None, "firefighter": 0.0, "police": 0.63, "yellow_shirt": 0.15, "wizard": 0.78}[condition]
    if body_hue is None:
        s = with_parts(s, [replace(p, color=WHITE, texture="solid") if p.role == "body" else p for p in s.parts])
    else:
        s = recolor(s, body_hue, roles=("body",))
    body = s.parts[0]
    (bx, by, bz), (ba, bb) = body.center, body.size
    if condition == "chef":
        add = _hat(head, "ellipse", WHITE, 1.0, brim=WHITE)
    elif condition == "firefighter":
        add = _hat(head, "halfdisc", (0.8, 0.1, 0.05), 0.5, brim=(0.15, 0.1, 0.05))
        add.append(
            Part(
                "box",
                (bx, by - bb * 0.3, bz + 0.2),
                (ba * 0.9, 0.02),
                (0.95, 0.9, 0.2),
                role="accessory",
                facing=True,
            )
        )
    elif condition == "police":
        add = _hat(head, "box", (0.08, 0.12, 0.35), 0.45, brim=BLACK)
        add.append(
            Part(
                "star",
                (bx + ba * 0.3, by + bb * 0.3, bz + 0.25),
                (0.04, 0.04),
                GOLD,
                param=5,
                role="accessory",
                facing=True,
            )
        )
    elif condition == "wizard":
        add = _hat(head, "triangle", (0.45, 0.15, 0.6), 2.0, brim=(0.45, 0.15, 0.6))
        add.append(
            Part(
                "star",
                (x, y + b * 1.8, z + 0.05),
                (0.035, 0.035),
                (1.0, 0.9, 0.2),
                param=5,
                role="accessory",
                facing=True,
            )
        )
    return s, add


def apply_condition(subject: SubjectSpec, condition: str) -> SubjectSpec:
    """The subject as the condition's prompt asks (attributes and outfits); scenes leave it unchanged."""
    from jointdiff.data.toyworld.captions import KIND

    kind = KIND.get(condition)
    if kind is None:
        raise ValueError(f"unknown condition {condition!r}")
    if kind in ("scene", "neutral"):
        return subject
    if condition == "red":
        return recolor(subject, 0.0)
    if condition == "purple":
        return recolor(subject, 0.78)
    if condition == "shiny":
        return with_parts(subject, subject.parts, shininess=1.0)
    if condition == "wet":
        return _wet(subject)
    if condition == "cube":
        return _cube(subject)
    return _outfit(subject, condition)
