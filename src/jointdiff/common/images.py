"""Image files in and out: reference images read with one-line errors, generated images written as
PNGs that carry their settings, and captioned grids (references and outputs side by side).

Every command and the web app write their outputs here, so a PNG of ``jointdiff generate``, of the
app and of ``jointdiff blend`` holds its settings the same way: JSON in the text chunk ``jointdiff``
(and the prompt in the chunk ``prompt``).
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps
from PIL.PngImagePlugin import PngInfo


def load_image(path: str | os.PathLike) -> Image.Image:
    """An RGB image from disk, or a one-line error naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im).convert("RGB")  # camera photos: honour EXIF rotation
    except FileNotFoundError:
        raise ValueError(f"reference image not found: {path}") from None
    except Exception as e:  # not an image, truncated, decompression bomb, ...
        raise ValueError(f"cannot read reference image {path}: {type(e).__name__}: {e}") from None


def slug(text: str, n: int = 40) -> str:
    """A file-name-safe form of a prompt: lower-case letters and digits, ``_`` elsewhere, at most ``n``."""
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower())[:n].strip("_") or "image"


def png_info(settings: dict[str, Any], prompt: str | None = None) -> PngInfo:
    """PNG text chunks: ``settings`` (with the prompt) as JSON under ``jointdiff``, and ``prompt`` when given."""
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", prompt)
        settings = {**settings, "prompt": prompt}
    info.add_text("jointdiff", json.dumps(settings))
    return info


def save_png(image: Image.Image, path: str | os.PathLike, settings: dict[str, Any], prompt: str | None = None) -> Path:
    """Write ``image`` as a PNG that carries its settings (:func:`png_info`); returns the path."""
    image.save(path, pnginfo=png_info(settings, prompt))
    return Path(path)


def save_grid(rows: Sequence[Sequence[tuple[Image.Image, str]]], path: str | os.PathLike, **options: Any) -> Path:
    """Write :func:`captioned_grid` of ``rows``, cells the size of the outputs (each row's last cell; >= 128 px);
    ``options`` go to PIL's ``save`` (``quality=90`` for a ``.jpg``)."""
    captioned_grid(rows, cell=max(128, rows[0][-1][0].width)).save(path, **options)
    return Path(path)


def captioned_grid(
    rows: Sequence[Sequence[tuple[Image.Image, str]]],
    cell: int = 256,
    caption_lines: int = 3,
    pad: int = 4,
) -> Image.Image:
    """A grid of ``rows`` of ``(image, caption)`` cells, each image resized to ``cell`` px square."""
    if not rows or not any(rows):
        raise ValueError("captioned_grid needs at least one image")
    font = ImageFont.load_default(size=max(10, cell // 16))
    line_h = font.getbbox("Ag")[3] + 2
    chars = max(8, int(cell / (font.getlength("x") or 6)))
    cap_h = caption_lines * line_h + pad
    cols = max(len(r) for r in rows)
    grid = Image.new("RGB", (cols * (cell + pad) + pad, len(rows) * (cell + cap_h + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        for c, (image, caption) in enumerate(row):
            x, y = pad + c * (cell + pad), pad + r * (cell + cap_h + pad)
            grid.paste(image.convert("RGB").resize((cell, cell), Image.Resampling.LANCZOS), (x, y))
            lines = textwrap.wrap(caption, chars)[:caption_lines]
            for i, line in enumerate(lines):
                draw.text((x, y + cell + 2 + i * line_h), line, fill="black", font=font)
    return grid
