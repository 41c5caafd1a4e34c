"""What the web app takes in and hands out, without Gradio: upload checks, prompts, result files.

Uploads come from untrusted clients, so every check here fails with a ``ValueError`` whose one-line
message the app shows to the user; no input makes these functions raise anything else.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import PIL.Image

from jointdiff.common.images import load_image, save_grid, save_png, slug

MAX_REFERENCES = 4  # JeDi conditions on a few references (paper: 1-3); more slows every step
MAX_PROMPTS = 8  # targets of one set: all are coupled in one U-Net batch
MAX_UPLOAD_MB = 10  # per file, enforced by the server before the file is stored, and again here
MAX_SIDE = 4096  # pixels per side, read from the header before any pixel is decoded
MAX_STEPS = 200
KEEP_RESULTS = 32  # result folders kept on disk; older ones are deleted as new ones are written
# Decoders of common photo formats only: PIL's other plugins (EPS via Ghostscript, TIFF, ...) are a
# larger attack surface than a reference upload needs.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")


def read_reference(path: str | os.PathLike, name: str | None = None) -> PIL.Image.Image:
    """An uploaded reference as RGB, after checking size, format and dimensions; one-line ValueError otherwise."""
    path = os.fspath(path)
    name = name or Path(path).name
    try:
        size = os.path.getsize(path)
    except OSError:
        raise ValueError(f"{name}: the upload is missing on the server; upload it again") from None
    if size > MAX_UPLOAD_MB * 2**20:
        raise ValueError(f"{name} is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_MB} MB per image")
    try:  # header only: the format and the dimensions, no pixel decoded yet
        with PIL.Image.open(path, formats=IMAGE_FORMATS) as im:
            fmt, (w, h) = im.format, im.size
    except PIL.Image.DecompressionBombError:
        raise ValueError(f"{name}: image dimensions too large (limit {MAX_SIDE}x{MAX_SIDE} px)") from None
    except Exception:  # not an image, or a format outside IMAGE_FORMATS
        raise ValueError(f"{name} is not an image (accepted: {', '.join(IMAGE_FORMATS)})") from None
    if max(w, h) > MAX_SIDE or min(w, h) < 1:
        raise ValueError(f"{name} is {w}x{h} px; the limit is {MAX_SIDE} px per side")
    try:
        return load_image(path)  # full decode: truncated or corrupt data fails here
    except ValueError as e:
        raise ValueError(f"{str(e).replace(path, name)} ({fmt})") from None


def read_references(paths: Sequence[str | os.PathLike] | None) -> list[PIL.Image.Image]:
    """All uploaded references, checked one by one (at most ``MAX_REFERENCES``)."""
    paths = list(paths or [])
    if len(paths) > MAX_REFERENCES:
        raise ValueError(f"got {len(paths)} reference images; upload at most {MAX_REFERENCES}")
    return [read_reference(p) for p in paths]


def parse_prompts(text: str | None) -> list[str]:
    """One prompt per non-empty line (1 to ``MAX_PROMPTS``)."""
    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not prompts:
        raise ValueError("type at least one prompt (one per line)")
    if len(prompts) > MAX_PROMPTS:
        raise ValueError(f"got {len(prompts)} prompts; at most {MAX_PROMPTS} (one per line)")
    return prompts


def parse_reference_captions(text: str | None, references: int) -> list[str]:
    """The references' captions: none, one line for all, or one line per reference in upload order (several
    subjects, issue 33: "a dog" for the dog's image, "a teapot" for the teapot's)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if len(lines) > 1 and len(lines) != references:
        raise ValueError(
            f"got {len(lines)} reference captions for {references} reference image(s): give one line for all, or one "
            "line per reference in upload order"
        )
    return lines


def check_steps_and_seed(steps: Any, seed: Any) -> tuple[int, int]:
    """Steps in ``1..MAX_STEPS`` and a seed in ``0..2**63-1``, as ints (API callers can send anything)."""
    try:
        steps_f, seed_f = float(steps), float(seed)
    except (TypeError, ValueError):
        raise ValueError(f"steps and seed must be numbers, got {steps!r} and {seed!r}") from None
    if steps_f != int(steps_f) or not 1 <= steps_f <= MAX_STEPS:
        raise ValueError(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps}")
    if seed_f != int(seed_f) or not 0 <= seed_f < 2**63:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return int(steps_f), int(seed_f)


def toy_references(index: Any, count: Any, resolution: int, out: Path) -> tuple[list[Path], str]:
    """``count`` renders of held-out toy-world subject ``index`` (``eval`` split) as PNGs, and its caption."""
    try:
        from jointdiff.data.toyworld.captions import with_article
        from jointdiff.data.toyworld.generator import make_set
        from jointdiff.data.toyworld.subjects import SEED_RANGES
    except ImportError as e:
        raise ValueError(f"the toy world is not available in this install ({e})") from None
    n_subjects = len(SEED_RANGES["eval"])
    try:
        i, n = float(index), float(count)
    except (TypeError, ValueError):
        i = n = -1.0
    if i != int(i) or not 0 <= i < n_subjects:
        raise ValueError(f"toy subject must be an integer from 0 to {n_subjects - 1}, got {index}")
    if n != int(n) or not 1 <= n <= MAX_REFERENCES:
        raise ValueError(f"toy views must be an integer from 1 to {MAX_REFERENCES}, got {count}")
    toy = make_set(int(i), split="eval", resolution=resolution, set_size=int(n), style_p=0.0)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, view in enumerate(toy.views):
        paths.append(out / f"{toy.subject.name}-{k}.png")
        view.pil().save(paths[-1])
    return paths, with_article(" ".join(w for w in ("a", toy.subject.descriptor, toy.subject.class_word) if w))


def toy_pair_references(index: Any, resolution: int, out: Path) -> tuple[list[Path], list[str], list[str]]:
    """Two held-out toy subjects, ``index`` and the next (issue 33): one render of each as PNGs, one caption each,
    and prompts that name both."""
    try:
        from jointdiff.data.toyworld.captions import with_article
        from jointdiff.data.toyworld.pairs import pair_phrase
    except ImportError as e:
        raise ValueError(f"the toy world is not available in this install ({e})") from None
    try:
        i = float(index)
    except (TypeError, ValueError):
        i = -1.0
    if i != int(i) or i < 0:
        raise ValueError(f"toy subject must be a non-negative integer, got {index}")
    paths, captions = [], []
    for k in (int(i), int(i) + 1):
        found, caption = toy_references(k, 1, resolution, out)
        paths += found
        captions.append(caption)
    both = pair_phrase(*(c.split(" ", 1)[1] for c in captions))  # "a green toy" -> "green toy"
    prompts = [f"a {both} on the beach", f"a {both} in the snow"]
    return paths, captions, [with_article(p) for p in prompts]


def write_results(
    out: Path,
    references: Sequence[PIL.Image.Image],
    prompts: Sequence[str],
    images: Sequence[PIL.Image.Image],
    settings: dict[str, Any],
) -> tuple[list[Path], Path, Path]:
    """One PNG per target (settings in its text chunk), ``grid.png`` and ``jointdiff-images.zip`` of all."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        save_png(image, out / f"{j:02d}-{slug(prompt)}.png", {**settings, "target": j}, prompt)
        for j, (prompt, image) in enumerate(zip(prompts, images, strict=True))
    ]
    row = [(im, f"reference {i + 1}") for i, im in enumerate(references)] + list(zip(images, prompts, strict=True))
    grid = save_grid([row], out / "grid.png")
    archive = out / "jointdiff-images.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in [*paths, grid]:
            z.write(p, p.name)
        z.writestr("settings.json", json.dumps({**settings, "prompts": list(prompts)}, indent=2))
    return paths, grid, archive


class ResultFolders:
    """Per-request result folders under one work directory, keeping the newest ``KEEP_RESULTS``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def new(self) -> Path:
        old = sorted(p for p in self.root.iterdir() if p.is_dir())
        for p in old[: max(0, len(old) - KEEP_RESULTS + 1)]:
            shutil.rmtree(p, ignore_errors=True)
        path = self.root / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path
