"""Captioned image grids: references and generated images side by side, prompts underneath."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont


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
