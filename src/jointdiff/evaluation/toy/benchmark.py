"""The toy DreamBooth benchmark (JeDi sec. 4 protocol on held-out toy subjects) and its reference rows.

``ToyWorldBenchmark``: subjects from the ``eval`` seed range (30 by default, 30% live as in
DreamBooth's 9 pets of 30), each with 5 "real" images (renders in everyday settings: studio,
table, room) and their exact masks, and the 25 DreamBooth prompts of its kind.
``ToyRealMethod`` ("real images" row, the upper bound): fresh renders of the same subject under
each prompt's condition. ``ToyTextOnlyMethod`` (the floor): renders of another subject of the
same class under the prompt, i.e. what a perfect text-only model would draw.
"""

from __future__ import annotations

import zlib

import numpy as np
import PIL.Image

from jointdiff.data.toyworld.captions import parse_prompt, prompt_templates
from jointdiff.data.toyworld.generator import render_view, view_rng
from jointdiff.data.toyworld.scenes import NEUTRAL_SCENES
from jointdiff.data.toyworld.subjects import SEED_RANGES, SubjectSpec, make_subject, subject_seed
from jointdiff.evaluation.benchmarks import Subject
from jointdiff.evaluation.protocol import MethodOptions


def _spec(subject: Subject) -> SubjectSpec:
    if "seed" not in subject.meta:
        raise ValueError(f"subject {subject.name!r} is not a toy-world subject (no meta['seed'])")
    return make_subject(int(subject.meta["seed"]))


def real_subject(spec: SubjectSpec, images: int, resolution: int) -> Subject:
    """A toy subject as the harness sees it: ``images`` renders in everyday settings (the "real images"), masks."""
    views = [
        render_view(spec, NEUTRAL_SCENES[k % len(NEUTRAL_SCENES)], view_rng(spec.seed, 70000 + k), resolution)
        for k in range(images)
    ]
    return Subject(
        name=spec.name,
        class_word=spec.class_word,
        live=spec.live,
        images=[v.pil() for v in views],
        masks=[v.mask for v in views],
        meta={"seed": spec.seed, "recipe": spec.recipe, "unusual": spec.unusual, "resolution": resolution},
    )


class ToyWorldBenchmark:
    """Held-out toy subjects with real renders, exact masks and the DreamBooth prompt lists."""

    name = "toyworld"

    def __init__(
        self, subjects: int = 30, images: int = 5, resolution: int = 64, live_fraction: float = 0.3, start: int = 0
    ) -> None:
        if subjects < 1 or images < 2 or not 0 <= live_fraction <= 1 or resolution < 8:
            raise ValueError(
                "toyworld benchmark needs subjects >= 1, images >= 2, 0 <= live_fraction <= 1, resolution >= 8"
            )
        self.n_subjects, self.n_images, self.resolution = subjects, images, resolution
        self.live_fraction, self.start = live_fraction, start
        self._subjects: list[Subject] | None = None

    def specs(self) -> list[tuple[int, SubjectSpec]]:
        """(index in the eval split, spec) of the benchmark's subjects: the first live and object subjects to fill the quota."""
        n_live = round(self.n_subjects * self.live_fraction)
        live, objects, i = [], [], self.start
        while len(live) < n_live or len(objects) < self.n_subjects - n_live:
            s = make_subject(subject_seed("eval", i))
            (live if s.live else objects).append((i, s))
            i += 1
        return sorted(live[:n_live] + objects[: self.n_subjects - n_live])

    def subjects(self) -> list[Subject]:
        """The subjects with their real images (renders in everyday settings) and exact foreground masks."""
        if self._subjects is None:
            self._subjects = [real_subject(spec, self.n_images, self.resolution) for _, spec in self.specs()]
        return self._subjects

    def prompt_templates(self, subject: Subject) -> list[str]:
        """The 25 DreamBooth prompts of an object or live subject, "{}" = subject phrase."""
        return prompt_templates(subject.live)


def load_toyworld(data: str | None = None) -> ToyWorldBenchmark:
    """Harness factory: ``data`` is None or ``key=value`` pairs, e.g. ``subjects=100,images=5,resolution=32``."""
    kwargs: dict[str, float | int] = {}
    for item in (data or "").split(","):
        if not item.strip():
            continue
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in ("subjects", "images", "resolution", "live_fraction", "start") or not value:
            raise ValueError(
                f"bad toyworld --data item {item!r}; use subjects=N,images=N,resolution=PX,live_fraction=F,start=I"
            )
        kwargs[key] = float(value) if key == "live_fraction" else int(value)
    return ToyWorldBenchmark(**kwargs)  # type: ignore[arg-type]


def _stream(prompt: str, seed: int) -> tuple[int, int]:
    return zlib.crc32(prompt.encode("utf-8")), int(seed)


class ToyRealMethod:
    """The "real images" row: a fresh render of the subject itself under each prompt's condition (upper bound)."""

    identifier = None
    name = "toy-real"

    def __init__(self, resolution: int | None = None) -> None:
        self.resolution = resolution

    def drawn(self, spec: SubjectSpec, prompt: str, seed: int) -> SubjectSpec:
        """The subject rendered for ``prompt``: the subject itself."""
        return spec

    def generate(
        self, subject: Subject, references: list[PIL.Image.Image], prompts: list[str], seed: int
    ) -> list[PIL.Image.Image]:
        """One render per prompt; each depends only on (subject, prompt, seed)."""
        spec = _spec(subject)
        res = self.resolution or int(subject.meta.get("resolution", 64))
        out = []
        for prompt in prompts:
            p, drawn = parse_prompt(prompt), self.drawn(spec, prompt, seed)
            rng = view_rng(drawn.seed, 80000, *_stream(prompt, seed))
            out.append(render_view(drawn, p.condition, rng, res, style=p.style).pil())
        return out


class ToyTextOnlyMethod(ToyRealMethod):
    """The floor: another subject of the same class under the prompt (a perfect text-only generator)."""

    name = "toy-text-only"

    def drawn(self, spec: SubjectSpec, prompt: str, seed: int) -> SubjectSpec:
        """A random training subject with the same class word, chosen by (subject, prompt, seed)."""
        rng = np.random.default_rng([spec.seed, *_stream(prompt, seed)])
        other = spec
        while other.class_word != spec.class_word or other.seed == spec.seed:
            other = make_subject(int(rng.integers(0, len(SEED_RANGES["train"]))))
        return other


def load_toy_real(options: MethodOptions) -> ToyRealMethod:
    """Harness factory of the real-renders row (``--resolution`` overrides the benchmark's)."""
    return ToyRealMethod(options.resolution)


def load_toy_text_only(options: MethodOptions) -> ToyTextOnlyMethod:
    """Harness factory of the text-only floor row."""
    return ToyTextOnlyMethod(options.resolution)
