"""Rendering a subject: pose (yaw, flip, roll, scale, position, viewpoint squash), lighting, shadow, reflection.

Parts are placed in a pseudo-3-D frame: a yaw turns the part centres about the vertical axis,
foreshortens parts lying on the front surface and slides textures around curved parts; parts
are painted far to near (painter's algorithm). Each part is shaded from a normal derived from its
signed distance (dome, cylinder or bevelled flat) with Lambert diffuse and Blinn specular terms.
The output is premultiplied RGB and coverage alpha, so the mask is exact at any resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from jointdiff.data.toyworld.parts import Part
from jointdiff.data.toyworld.raster import F32, bbox, blur, coverage, grid, hash_noise, local, shape_sdf, smoothstep
from jointdiff.data.toyworld.subjects import SubjectSpec

PI = float(np.pi)


@dataclass(frozen=True)
class Pose:
    """Where and how a subject stands in the image (lengths in image heights)."""

    yaw: float  # turn about the vertical axis (rad)
    flip: bool  # mirrored: the other side of the subject
    roll: float  # in-plane tilt (rad)
    scale: float  # object height (1 unit) in image heights
    cx: float  # horizontal centre
    base: float  # image row of the ground contact
    sx: float = 1.0  # viewpoint squash, horizontal
    sy: float = 1.0  # viewpoint squash, vertical (< 1: seen from above)


@dataclass(frozen=True)
class Light:
    """A directional light: direction (x right, y up, z to the viewer), colour, intensity, ambient level."""

    direction: tuple[float, float, float]
    color: tuple[float, float, float]
    intensity: float
    ambient: float


def sample_pose(rng: np.random.Generator, aspect: float = 1.0) -> Pose:
    """A random pose: yaw in +-70 deg, flip 0.5, roll +-12 deg, height 0.4-0.72, squash 0.8-1.1."""
    scale = float(rng.uniform(0.4, 0.72))
    return Pose(
        yaw=float(rng.uniform(-1.2, 1.2)),
        flip=bool(rng.random() < 0.5),
        roll=float(rng.normal(0, 0.1)),
        scale=scale,
        cx=float(rng.uniform(0.38, 0.62) * aspect),
        base=float(rng.uniform(0.8, 0.93)),
        sx=float(rng.uniform(0.88, 1.1)),
        sy=float(rng.uniform(0.8, 1.05)),
    )


def subject_extent(subject: SubjectSpec) -> float:
    """The larger of the subject's height and width in object units (its parts' bounding circles)."""
    top = max(p.center[1] + max(p.size) for p in subject.parts)
    left = min(p.center[0] - max(p.size) for p in subject.parts)
    right = max(p.center[0] + max(p.size) for p in subject.parts)
    return float(max(top, right - left, 0.3))


def fit_pose(pose: Pose, subject: SubjectSpec) -> Pose:
    """``pose`` with its scale divided by the subject's extent, so ``pose.scale`` is the subject's size on screen."""
    return replace(pose, scale=pose.scale / subject_extent(subject))


def sample_light(rng: np.random.Generator) -> Light:
    """A random key light from the upper hemisphere, tinted warm or cool."""
    az = rng.uniform(-PI, PI)
    el = rng.uniform(0.3, 1.2)
    d = np.array([np.cos(el) * np.cos(az), abs(np.cos(el) * np.sin(az)) * 0.8 + 0.2, np.sin(el) + 0.3])
    d /= np.linalg.norm(d)
    tint = rng.uniform(-0.12, 0.12)
    return Light(
        direction=(float(d[0]), float(d[1]), float(d[2])),
        color=(1.0 + tint, 1.0, 1.0 - tint),
        intensity=float(rng.uniform(0.6, 1.0)),
        ambient=float(rng.uniform(0.3, 0.5)),
    )


def _texture(p: Part, tu: np.ndarray, tv: np.ndarray, seed: float) -> np.ndarray | None:
    """Blend weight of the second colour in [0, 1] for the part's texture; None for solid."""
    if p.texture == "solid":
        return None
    f = F32(p.freq)
    c, s = F32(np.cos(p.tex_angle)), F32(np.sin(p.tex_angle))
    d = tu * c + tv * s
    if p.texture == "stripes":
        return smoothstep(-0.3, 0.3, np.sin(F32(PI) * f * d))
    if p.texture == "zigzag":
        tri = np.abs((tu * f) % 2 - 1)
        return smoothstep(-0.3, 0.3, np.sin(F32(PI) * f * (tv + 0.35 * tri)))
    if p.texture == "dots":
        fu, fv = (tu * f) % 1 - 0.5, (tv * f) % 1 - 0.5
        return smoothstep(0.34, 0.26, np.sqrt(fu * fu + fv * fv))
    if p.texture == "checks":
        return ((np.floor(tu * f) + np.floor(tv * f)) % 2).astype(F32)
    if p.texture == "gradient":
        return np.clip(d * 0.5 + 0.5, 0, 1)
    if p.texture == "speckle":
        return (hash_noise(tu * f * 2.5, tv * f * 2.5, seed) > 0.6).astype(F32)
    raise ValueError(f"unknown texture {p.texture!r}")


def _place(p: Part, pose: Pose) -> tuple[float, float, float, float, float, float, float]:
    """Part -> (depth, cx, cy, a, b, angle, u_shift) in image units, after yaw, flip, squash, roll, scale."""
    cy_, sy_ = np.cos(pose.yaw), np.sin(pose.yaw)
    x3, y3, z3 = p.center
    xr, zr = x3 * cy_ + z3 * sy_, -x3 * sy_ + z3 * cy_
    a, b = p.size
    if p.facing:
        a *= max(abs(cy_), 0.08)
    angle = p.angle
    if pose.flip:
        xr, angle = -xr, -angle
    ox, oy = xr * pose.sx, (y3 - 0.5) * pose.sy
    cr, sr = np.cos(pose.roll), np.sin(pose.roll)
    rx, ry = ox * cr - oy * sr, ox * sr + oy * cr + 0.5 * pose.sy
    u_shift = (-pose.yaw if pose.flip else pose.yaw) * 2 / PI
    return (
        float(zr),
        float(pose.cx + rx * pose.scale),
        float(pose.base - ry * pose.scale),
        float(a * pose.scale * pose.sx),
        float(b * pose.scale * pose.sy),
        float(angle + pose.roll),
        float(u_shift),
    )


def _normals(p: Part, sdf: np.ndarray, u: np.ndarray, a: float, b: float, angle: float) -> tuple[np.ndarray, ...]:
    """Surface normal (nx right, ny up, nz to the viewer) from the signed distance; see the module docstring."""
    m = max(min(a, b), 1e-6)
    if p.shade == "cyl":
        tilt = np.clip(u / F32(a), -1, 1) * F32(0.95)
        nx, ny = tilt * F32(np.cos(angle)), tilt * F32(np.sin(angle))
    else:
        g_row, g_col = np.gradient(sdf)
        gx, gy = g_col, -g_row  # image rows grow downwards; ny points up
        norm = np.sqrt(gx * gx + gy * gy) + F32(1e-8)
        if p.shade == "dome":
            tilt = (1 - np.clip(-sdf / F32(m), 0, 1)) * F32(0.95)
        else:  # flat with a bevelled rim
            tilt = (1 - np.clip(-sdf / F32(0.25 * m), 0, 1)) * F32(0.6)
        nx, ny = tilt * gx / norm, tilt * gy / norm
    nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, 1))
    return nx, ny, nz


def draw_subject(subject: SubjectSpec, pose: Pose, light: Light, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Render ``subject`` alone: premultiplied RGB ``(H, W, 3)`` and coverage alpha ``(H, W)``, float32."""
    x, y = grid(h, w)
    rgb = np.zeros((h, w, 3), F32)
    alpha = np.zeros((h, w), F32)
    L = np.asarray(light.direction, F32)
    half = L + np.array([0, 0, 1], F32)
    half /= np.linalg.norm(half)
    lc = np.asarray(light.color, F32)
    power = F32(8 + 40 * subject.shininess)
    strength = F32(0.15 + 0.7 * subject.shininess)
    placed = sorted(((_place(p, pose), i, p) for i, p in enumerate(subject.parts)), key=lambda t: (t[0][0], t[1]))
    for (_, cx, cy, a, b, angle, u_shift), i, p in placed:
        box = bbox(h, w, cx, cy, max(a, b) * 1.45)
        if box is None:
            continue
        u, v = local(x[box], y[box], cx, cy, angle)
        sdf = shape_sdf(p.kind, u, v, a, b, p.param)
        cov = coverage(sdf, 1.0 / h)
        tu, tv = u / F32(max(a, 1e-4)), v / F32(max(b, 1e-4))
        if p.shade in ("dome", "cyl") and not p.facing:  # texture wraps around the curved surface
            tu = np.arcsin(np.clip(tu, -1, 1)) * F32(2 / PI) - F32(u_shift)
        t = _texture(p, tu, tv, seed=float(subject.seed % 9973 + 17 * i))
        c1 = np.asarray(p.color, F32)
        col = np.broadcast_to(c1, (*u.shape, 3))
        if t is not None:
            c2 = np.asarray(p.color2 if p.color2 is not None else tuple(0.55 * c for c in p.color), F32)
            col = c1 * (1 - t[..., None]) + c2 * t[..., None]
        if p.role != "emissive":
            nx, ny, nz = _normals(p, sdf, u, a, b, angle)
            diffuse = np.clip(nx * L[0] + ny * L[1] + nz * L[2], 0, 1)
            spec = np.clip(nx * half[0] + ny * half[1] + nz * half[2], 0, 1) ** power * strength
            shade = F32(light.ambient) + F32(light.intensity) * diffuse
            col = col * (shade[..., None] * lc) + (spec[..., None] * lc)
        a_ = cov[..., None]
        rgb[box] = rgb[box] * (1 - a_) + np.clip(col, 0, 1) * a_
        alpha[box] = alpha[box] * (1 - cov) + cov
    return rgb, alpha


def cast_shadow(bg: np.ndarray, alpha: np.ndarray, pose: Pose, light: Light, strength: float = 0.45) -> np.ndarray:
    """Darken ``bg`` under the subject: its silhouette squashed onto the ground, offset away from the light, blurred."""
    h = alpha.shape[0]
    rows = np.arange(h, dtype=F32) / h
    base_row = pose.base
    # map each ground row back to a subject row: squash 4x towards the base line
    src = base_row - (base_row - rows) * 4.0
    src_idx = np.clip((src * h).astype(np.int64), 0, h - 1)
    sh = alpha[src_idx] * (rows <= base_row + 0.02)[:, None]
    shift = round(-light.direction[0] * 0.08 * h)
    sh = np.roll(sh, shift, axis=1)
    sh = blur(sh, max(0.6, h / 64 * 1.2))
    bg *= 1 - F32(strength) * sh[..., None]
    return bg


def reflect(
    bg: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, base: float, opacity: float, ripple: float = 0.0
) -> np.ndarray:
    """Composite the subject mirrored about the row ``base`` onto ``bg`` (mirror or water surface)."""
    h, w = alpha.shape
    rows = np.arange(h)
    b = round(base * h)
    src = np.clip(2 * b - rows, 0, h - 1)
    valid = (rows >= b)[:, None].astype(F32)
    r_rgb, r_a = rgb[src] * valid[..., None], alpha[src] * valid
    if ripple:
        shift = (np.sin(rows * 1.7) * ripple * w / 64).astype(np.int64)
        cols = (np.arange(w)[None, :] - shift[:, None]) % w
        r_rgb, r_a = r_rgb[rows[:, None], cols], r_a[rows[:, None], cols]
    a = r_a[..., None] * F32(opacity)
    bg *= 1 - a
    bg += r_rgb * F32(opacity)
    return bg


def clean_mask(alpha: np.ndarray) -> np.ndarray:
    """The foreground mask of a coverage map: pixels more than half covered."""
    return alpha > 0.5
