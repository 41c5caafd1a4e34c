"""Benchmarks: subjects with real images and prompt templates (JeDi sec. 4, DreamBooth benchmark).

A benchmark is anything with ``name``, ``subjects()`` and ``prompt_templates(subject)``. The CLI
finds benchmark factories by name in ``registry.BENCHMARKS``; a factory takes
the ``--data`` option (a path or None for the benchmark's default) and returns a ``Benchmark``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import PIL.Image


@dataclass
class Subject:
    """One personalisation subject: its real images and the word naming its class."""

    name: str  # unique within the benchmark; used as a folder name in caches
    class_word: str  # e.g. "dog"; replaces the identifier in CLIP-T prompts
    live: bool  # live subjects (pets) get the live prompt list in DreamBooth
    images: list[PIL.Image.Image]  # the real images of the subject (any mode; consumers convert to RGB)
    masks: list[np.ndarray] | None = None  # (H, W) bool foreground masks of `images` where known
    meta: dict[str, Any] = field(default_factory=dict)  # benchmark-specific extras (e.g. toy-world parameters)
    # Real views that are never given to a method as inputs, only scored against (the toy world renders them;
    # DreamBooth has none, so its held-out gallery is the images that were not the inputs). Masks as `masks`.
    gallery: list[PIL.Image.Image] = field(default_factory=list)
    gallery_masks: list[np.ndarray] = field(default_factory=list)


@runtime_checkable
class Benchmark(Protocol):
    """A set of subjects and, per subject, prompt templates with one "{}" for the subject phrase."""

    name: str

    def subjects(self) -> list[Subject]: ...

    def prompt_templates(self, subject: Subject) -> list[str]: ...


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
DREAMBOOTH_ENV = "JOINTDIFF_DREAMBOOTH"  # where `--data` defaults to when set
DREAMBOOTH_FALLBACK = "../shared/dreambooth"
LIVE_CLASSES = ("cat", "dog")  # DreamBooth's live subjects (the 9 pets); the dataset file does not list them


def open_image(path: str | os.PathLike) -> PIL.Image.Image:
    """A lazily decoded image with ``.filename`` set (features are cached by file, masks found by it)."""
    return PIL.Image.open(path)


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def parse_prompts_and_classes(text: str) -> tuple[dict[str, str], list[str], list[str]]:
    """DreamBooth's ``prompts_and_classes.txt`` -> (subject -> class word, object templates, live templates).

    Templates have one "{}" for the subject phrase (the file's "{0} {1}" = identifier + class word).
    """
    classes: dict[str, str] = {}
    lists: dict[str, list[str]] = {"object": [], "live": []}
    section = "classes"
    for raw in text.splitlines():
        line = raw.strip()
        low = line.lower()
        if low.startswith("object prompts"):
            section = "object"
        elif low.startswith("live subject prompts"):
            section = "live"
        elif section == "classes" and "," in line and not low.startswith("subject_name"):
            name, _, word = line.partition(",")
            classes[name.strip()] = word.strip()
        elif section in lists and (m := re.match(r"""^(['"])(.*)\1\.format\(""", line)):
            template = m.group(2)
            if "{0} {1}" not in template:
                raise ValueError(f"prompt template without '{{0}} {{1}}': {template!r}")
            lists[section].append(template.replace("{0} {1}", "{}"))
    if not classes or not lists["object"] or not lists["live"]:
        raise ValueError("prompts_and_classes.txt: expected a class table and object and live prompt lists")
    return classes, lists["object"], lists["live"]


@dataclass
class DreamBoothBenchmark:
    """The DreamBooth benchmark (Ruiz et al. 2023; JeDi sec. 4): 30 subjects, 25 prompts each."""

    root: Path
    live_classes: tuple[str, ...] = LIVE_CLASSES
    name: str = "dreambooth"

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        spec = self.root / "prompts_and_classes.txt"
        if not spec.is_file():
            raise FileNotFoundError(f"{str(spec)!r} not found: --data must be the DreamBooth dataset root")
        self.classes, self.object_prompts, self.live_prompts = parse_prompts_and_classes(spec.read_text())
        self._subjects: list[Subject] | None = None

    def subjects(self) -> list[Subject]:
        """All subjects with their real images (read once)."""
        if self._subjects is None:
            subjects = []
            for name, word in self.classes.items():
                files = image_files(self.root / name) if (self.root / name).is_dir() else []
                if not files:
                    raise FileNotFoundError(f"no images for subject {name!r} in {str(self.root / name)!r}")
                images = [open_image(f) for f in files]
                subjects.append(Subject(name, word, word in self.live_classes, images))
            self._subjects = subjects
        return self._subjects

    def prompt_templates(self, subject: Subject) -> list[str]:
        """The 25 live-subject or object prompts."""
        return list(self.live_prompts if subject.live else self.object_prompts)


def load_dreambooth(data: str | None = None) -> DreamBoothBenchmark:
    """The DreamBooth benchmark at ``data`` (default: $JOINTDIFF_DREAMBOOTH, else ../shared/dreambooth)."""
    root = data or os.environ.get(DREAMBOOTH_ENV) or DREAMBOOTH_FALLBACK
    if not Path(root).is_dir():
        raise FileNotFoundError(
            f"DreamBooth dataset not found at {root!r}; pass --data DIR (a copy of google/dreambooth's dataset folder)"
        )
    return DreamBoothBenchmark(Path(root))


def select_subjects(subjects: list[Subject], names: list[str] | None) -> list[Subject]:
    """The subjects named in ``names`` (in that order), all when None; ValueError names unknown ones."""
    if not names:
        return subjects
    by_name = {s.name: s for s in subjects}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown subject(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    return [by_name[n] for n in names]
