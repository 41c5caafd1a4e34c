"""The stylisation stage (JeDi sec. 3.1: InstructPix2Pix with a random style prompt, probability 0.5).

Each style is a whole-image filter that keeps the geometry (so the foreground mask still holds):
watercolour, pencil sketch, pixel art, oil painting, pop art, vintage photo, neon drawing.
"""

from __future__ import annotations

import numpy as np

from jointdiff.data.toyworld.raster import F32, blur, fractal_noise, grid, luminance, resize_bilinear


def _edges(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gradient magnitude of the blurred luminance, normalised to about [0, 1]."""
    lum = blur(luminance(img), sigma)
    gy, gx = np.gradient(lum)
    e = np.sqrt(gx * gx + gy * gy) * F32(img.shape[0] / 16)
    return np.clip(e, 0, 1)


def _posterize(img: np.ndarray, levels: int) -> np.ndarray:
    return np.round(img * (levels - 1)) / F32(levels - 1)


def _saturate(img: np.ndarray, k: float) -> np.ndarray:
    lum = luminance(img)[..., None]
    return np.clip(lum + (img - lum) * F32(k), 0, 1)


def stylize(img: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """Apply a style to ``(H, W, 3)`` float32 in [0, 1]; the output has the same shape and range."""
    h, w = img.shape[:2]
    r = h / 64  # filters scale with resolution
    if style == "watercolor":
        soft = blur(img, 1.0 * r)
        paper = 0.93 + 0.07 * fractal_noise(rng, h, w, 8, 2)
        out = _saturate(_posterize(soft, 7), 0.8) * paper[..., None] * (1 - 0.35 * _edges(img, 0.8 * r))[..., None]
        return np.clip(out * 0.92 + 0.08, 0, 1).astype(F32)
    if style == "sketch":
        lum = luminance(img)
        x, y = grid(h, w)
        hatch = (np.sin((x + y) * h * 1.6) > 0.3) & (lum < 0.45)
        out = 1 - 1.3 * _edges(img, 0.6 * r) - 0.25 * hatch
        tint = np.asarray((0.95, 0.94, 0.9), F32)
        return np.clip(out[..., None] * tint, 0, 1).astype(F32)
    if style == "pixel":
        f = max(2, h // 16)  # 16 x 16 blocks at any resolution
        small = (
            img[: h - h % f, : w - w % f].reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3))
        )  # (H, W, 3) -> (H/f, W/f, 3)
        small = _posterize(_saturate(small, 1.3), 5)
        return np.repeat(np.repeat(small, f, axis=0), f, axis=1)[:h, :w].astype(F32)
    if style == "oil":
        strokes = blur(fractal_noise(rng, h, w, 16, 1), 0.6 * r)
        out = _posterize(blur(img, 0.7 * r), 9) * (0.85 + 0.3 * strokes)[..., None]
        return np.clip(_saturate(out, 1.3), 0, 1).astype(F32)
    if style == "pop_art":
        x, y = grid(h, w)
        out = _posterize(_saturate(img, 2.0), 3)
        dots = (np.sin(x * h * 1.5) * np.sin(y * h * 1.5) > 0.4) & (luminance(img) < 0.5)
        out = out * (1 - 0.35 * dots[..., None]) * (1 - _edges(img, 0.5 * r) > 0.5)[..., None]
        return out.astype(F32)
    if style == "vintage":
        lum = luminance(img)
        sepia = lum[..., None] * np.asarray((1.07, 0.9, 0.68), F32) + 0.06
        x, y = grid(h, w)
        vignette = 1 - 0.6 * ((x - w / h / 2) ** 2 + (y - 0.5) ** 2)
        grain = 1 + 0.08 * (rng.random((h, w), dtype=F32) - 0.5)
        return np.clip(sepia * (vignette * grain)[..., None] * 0.9 + 0.05, 0, 1).astype(F32)
    if style == "neon":
        e = _edges(img, 0.5 * r)
        glow = blur(e, 1.2 * r)
        col = _saturate(img, 2.5) + 0.2
        return np.clip(col * (1.6 * e + 0.9 * glow)[..., None] + 0.03, 0, 1).astype(F32)
    raise ValueError(f"unknown style {style!r}")


def downup(img: np.ndarray, factor: int) -> np.ndarray:
    """Downsample by ``factor`` and upsample back (bilinear): the blur of a low-resolution generator."""
    h, w = img.shape[:2]
    small = resize_bilinear(img, max(1, h // factor), max(1, w // factor))
    return resize_bilinear(small, h, w)
