"""Vectorised 2-D drawing on numpy grids: signed distances, coverage, noise, compositing, blur.

Coordinates are in image heights: x right in ``[0, W/H]``, y down in ``[0, 1]``; a pixel is
``1 / H`` wide. Every function works on whole ``(H, W)`` float32 arrays (no per-pixel loops),
so one render costs a few hundred numpy operations on ``H * W`` elements.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

F32 = np.float32


@lru_cache(maxsize=8)
def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(X, Y)``, each ``(H, W)`` float32 and read-only, in image heights."""
    x = (np.arange(w, dtype=F32) + 0.5) / h
    y = (np.arange(h, dtype=F32) + 0.5) / h
    return np.broadcast_to(x[None, :], (h, w)), np.broadcast_to(y[:, None], (h, w))


def local(x: np.ndarray, y: np.ndarray, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates -> a frame centred at ``(cx, cy)``, rotated by ``angle`` (rad, counter-clockwise), v up."""
    dx, dy = x - F32(cx), F32(cy) - y  # y down -> v up
    c, s = F32(np.cos(angle)), F32(np.sin(angle))
    return dx * c + dy * s, -dx * s + dy * c


def coverage(sdf: np.ndarray, px: float) -> np.ndarray:
    """Anti-aliased area coverage of the region ``sdf < 0`` for pixels of width ``px``."""
    return np.clip(F32(0.5) - sdf / F32(px), 0.0, 1.0)


def sd_ellipse(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse with half-axes ``a``, ``b``."""
    r = np.sqrt((u / F32(a)) ** 2 + (v / F32(b)) ** 2)
    return (r - 1.0) * F32(min(a, b))


def sd_box(u: np.ndarray, v: np.ndarray, a: float, b: float, radius: float = 0.0) -> np.ndarray:
    """Signed distance to a box with half-extents ``a``, ``b`` and rounded corners."""
    r = F32(min(radius, a, b))
    qx, qy = np.abs(u) - (F32(a) - r), np.abs(v) - (F32(b) - r)
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


def sd_capsule(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Signed distance to a segment of half-length ``a`` along u, thickened to radius ``b``."""
    qx = np.maximum(np.abs(u) - F32(a), 0)
    return np.sqrt(qx * qx + v * v) - F32(b)


def sd_convex(u: np.ndarray, v: np.ndarray, points: list[tuple[float, float]]) -> np.ndarray:
    """Signed distance (exact inside, a lower bound outside) to a counter-clockwise convex polygon."""
    d = None
    n = len(points)
    for i in range(n):
        (x0, y0), (x1, y1) = points[i], points[(i + 1) % n]
        ex, ey = x1 - x0, y1 - y0
        length = float(np.hypot(ex, ey)) or 1.0
        nx, ny = ey / length, -ex / length  # outward normal of a counter-clockwise edge
        e = (u - F32(x0)) * F32(nx) + (v - F32(y0)) * F32(ny)
        d = e if d is None else np.maximum(d, e)
    assert d is not None
    return d


def sd_star(u: np.ndarray, v: np.ndarray, a: float, b: float, points: int, depth: float = 0.45) -> np.ndarray:
    """Approximate signed distance to a star with ``points`` tips inscribed in the ``a`` x ``b`` ellipse."""
    un, vn = u / F32(a), v / F32(b)
    rho = np.sqrt(un * un + vn * vn)
    theta = np.arctan2(un, vn)  # tip up
    radius = 1.0 - F32(depth) * (0.5 - 0.5 * np.cos(theta * F32(points)))
    return (rho - radius) * F32(min(a, b)) * 0.7


def value_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a random ``(cells + 1)`` lattice, bilinearly upsampled to ``(H, W)``."""
    cw = max(1, round(cells * w / h))
    lattice = rng.random((cells + 1, cw + 1), dtype=F32)
    return resize_bilinear(lattice, h, w, align_corners=True)


def fractal_noise(rng: np.random.Generator, h: int, w: int, cells: int = 4, octaves: int = 3) -> np.ndarray:
    """Sum of value-noise octaves (each twice as fine, half as strong), rescaled to [0, 1]."""
    out, total, amp = np.zeros((h, w), F32), 0.0, 1.0
    for o in range(octaves):
        out += F32(amp) * value_noise(rng, h, w, cells * 2**o)
        total += amp
        amp *= 0.5
    return out / F32(total)


def resize_bilinear(a: np.ndarray, h: int, w: int, align_corners: bool = False) -> np.ndarray:
    """Bilinear resize of ``(h0, w0[, C])`` to ``(h, w[, C])`` with index arithmetic (no loops)."""
    h0, w0 = a.shape[:2]
    if align_corners:
        ys = np.linspace(0, h0 - 1, h, dtype=F32)
        xs = np.linspace(0, w0 - 1, w, dtype=F32)
    else:
        ys = np.clip((np.arange(h, dtype=F32) + 0.5) * h0 / h - 0.5, 0, h0 - 1)
        xs = np.clip((np.arange(w, dtype=F32) + 0.5) * w0 / w - 0.5, 0, w0 - 1)
    y0 = np.minimum(ys.astype(np.int64), h0 - 1)
    x0 = np.minimum(xs.astype(np.int64), w0 - 1)
    y1, x1 = np.minimum(y0 + 1, h0 - 1), np.minimum(x0 + 1, w0 - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    if a.ndim == 3:
        fy, fx = fy[..., None], fx[..., None]
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bottom = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(F32)


def hash_noise(u: np.ndarray, v: np.ndarray, seed: float) -> np.ndarray:
    """Deterministic per-cell pseudo-random values in [0, 1) of integer lattice cells ``floor(u), floor(v)``."""
    iu, iv = np.floor(u), np.floor(v)
    t = np.sin(iu * F32(12.9898) + iv * F32(78.233) + F32(seed)) * F32(43758.5453)
    return (t - np.floor(t)).astype(F32)


def over(canvas: np.ndarray, color: np.ndarray | tuple[float, float, float], alpha: np.ndarray) -> np.ndarray:
    """Composite ``color`` (``(H, W, 3)`` or an RGB triple) over ``canvas`` with coverage ``alpha`` (in place)."""
    a = alpha[..., None]
    col = np.asarray(color, dtype=F32)
    canvas *= 1 - a
    canvas += col * a
    return canvas


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur in pixels (edge-replicated), for ``(H, W)`` or ``(H, W, C)``."""
    if sigma <= 0:
        return img
    r = max(1, int(np.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1, dtype=F32) / F32(sigma)) ** 2)
    k /= k.sum()
    pad = [(r, r), (0, 0)] + [(0, 0)] * (img.ndim - 2)
    p = np.pad(img, pad, mode="edge")
    out = sum(F32(k[i]) * p[i : i + img.shape[0]] for i in range(2 * r + 1))
    pad = [(0, 0), (r, r)] + [(0, 0)] * (img.ndim - 2)
    p = np.pad(out, pad, mode="edge")
    return sum(F32(k[i]) * p[:, i : i + img.shape[1]] for i in range(2 * r + 1)).astype(F32)


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``e0`` to 1 at ``e1``."""
    t = np.clip((x - F32(e0)) / F32(e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    """One HSV colour (all in [0, 1]) -> RGB."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def rgb_to_hsv(rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    """One RGB colour (in [0, 1]) -> HSV."""
    r, g, b = rgb
    mx, mn = max(r, g, b), min(r, g, b)
    d = mx - mn
    if d == 0:
        h = 0.0
    elif mx == r:
        h = ((g - b) / d) % 6
    elif mx == g:
        h = (b - r) / d + 2
    else:
        h = (r - g) / d + 4
    return (h / 6.0) % 1.0, (d / mx if mx > 0 else 0.0), mx


def luminance(img: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of ``(H, W, 3)``."""
    return img[..., 0] * F32(0.299) + img[..., 1] * F32(0.587) + img[..., 2] * F32(0.114)


def shape_sdf(kind: str, u: np.ndarray, v: np.ndarray, a: float, b: float, param: float = 0.0) -> np.ndarray:
    """Signed distance of a primitive in its local frame (see ``subjects.KINDS``); ``param`` is kind-specific."""
    if kind == "ellipse":
        return sd_ellipse(u, v, a, b)
    if kind == "box":
        return sd_box(u, v, a, b, param * min(a, b))
    if kind == "capsule":
        return sd_capsule(u, v, a, b)
    if kind == "triangle":
        return sd_convex(u, v, [(-a, -b), (a, -b), (0.0, b)])
    if kind == "trapezoid":
        t = param or 0.6
        return sd_convex(u, v, [(-a, -b), (a, -b), (a * t, b), (-a * t, b)])
    if kind == "star":
        return sd_star(u, v, a, b, max(3, round(param or 5)))
    if kind == "ring":
        t = min(max(param or 0.3, 0.05), 0.9)
        return np.abs(sd_ellipse(u, v, a * (1 - t / 2), b * (1 - t / 2))) - F32(t * min(a, b) / 2)
    if kind == "halfdisc":
        return np.maximum(sd_ellipse(u, v, a, b), v)
    raise ValueError(f"unknown shape kind {kind!r}")


def bbox(h: int, w: int, cx: float, cy: float, radius: float) -> tuple[slice, slice] | None:
    """Row and column slices of the pixels within ``radius`` (image heights, plus 2 px) of a centre; None if empty."""
    r = radius + 2.0 / h
    r0, r1 = max(0, int((cy - r) * h)), min(h, int(np.ceil((cy + r) * h)))
    c0, c1 = max(0, int((cx - r) * h)), min(w, int(np.ceil((cx + r) * h)))
    if r1 - r0 < 2 or c1 - c0 < 2:
        return None
    return slice(r0, r1), slice(c0, c1)


def stamp(
    img: np.ndarray,
    kind: str,
    cx: float,
    cy: float,
    a: float,
    b: float,
    color: np.ndarray | tuple[float, float, float],
    angle: float = 0.0,
    param: float = 0.0,
    opacity: float = 1.0,
    soft: float = 1.0,
) -> np.ndarray:
    """Paint one flat-coloured primitive onto ``img`` (in place) within its bounding box; ``soft`` widens the edge."""
    h, w = img.shape[:2]
    box = bbox(h, w, cx, cy, max(a, b) * 1.5)
    if box is None:
        return img
    x, y = grid(h, w)
    u, v = local(x[box], y[box], cx, cy, angle)
    cov = coverage(shape_sdf(kind, u, v, a, b, param), soft / h) * F32(opacity)
    col = color[box] if isinstance(color, np.ndarray) and color.ndim == 3 else color
    over(img[box], col, cov)
    return img
