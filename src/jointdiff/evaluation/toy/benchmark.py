"""The toy DreamBooth benchmark (JeDi sec. 4 protocol on held-out toy subjects) and its reference rows.

``ToyWorldBenchmark``: subjects from the ``eval`` seed range (30 by default, 30% live as in
DreamBooth's 9 pets of 30), each with 5 "real" images (renders in everyday settings: studio,
table, room; the inputs are chosen among them), 5 more such renders that are never inputs (the
held-out gallery that identity is scored against, issue 26), their exact masks, and the 25
DreamBooth prompts of its kind. The eval range is split in two parts (:data:`PARTS`): defaults,
recipes and thresholds are chosen on ``tuning`` subjects; every reported number comes from
``report`` subjects (the default).
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
from jointdiff.evaluation.options import MethodOptions


def toy_spec(subject: Subject) -> SubjectSpec:
    """The toy-world spec of a benchmark subject (from its ``meta["seed"]``); ValueError for any other subject."""
    if "seed" not in subject.meta:
        raise ValueError(f"subject {subject.name!r} is not a toy-world subject (no meta['seed'])")
    return make_subject(int(subject.meta["seed"]))


# Parts of the eval split (subject indices): choose on "tuning", report on "report" (issue 26).
PARTS: dict[str, int] = {"tuning": 0, "report": 10_000}  # part -> first subject index (10,000 subjects each)
GALLERY_STREAM = 71000  # render streams: real images 70000 + k, gallery 71000 + k


def everyday_views(spec: SubjectSpec, count: int, resolution: int, stream: int = 70000) -> list:
    """``count`` renders of the subject in everyday settings (studio, table, room in turn), fresh pose and light each."""
    return [
        render_view(spec, NEUTRAL_SCENES[k % len(NEUTRAL_SCENES)], view_rng(spec.seed, stream + k), resolution)
        for k in range(count)
    ]


def real_subject(spec: SubjectSpec, images: int, resolution: int, gallery: int = 0) -> Subject:
    """A toy subject as the harness sees it: ``images`` renders in everyday settings (the "real images", among
    which inputs are chosen), ``gallery`` more that are never inputs, and their exact masks."""
    views = everyday_views(spec, images, resolution)
    held = everyday_views(spec, gallery, resolution, GALLERY_STREAM)
    return Subject(
        name=spec.name,
        class_word=spec.class_word,
        live=spec.live,
        images=[v.pil() for v in views],
        masks=[v.mask for v in views],
        meta={"seed": spec.seed, "recipe": spec.recipe, "unusual": spec.unusual, "resolution": resolution},
        gallery=[v.pil() for v in held],
        gallery_masks=[v.mask for v in held],
    )


class ToyWorldBenchmark:
    """Held-out toy subjects with real renders, exact masks and the DreamBooth prompt lists."""

    name = "toyworld"

    def __init__(
        self,
        subjects: int = 30,
        images: int = 5,
        resolution: int = 64,
        live_fraction: float = 0.3,
        start: int | None = None,
        gallery: int = 5,
        part: str = "report",
    ) -> None:
        if subjects < 1 or images < 2 or not 0 <= live_fraction <= 1 or resolution < 8 or gallery < 0:
            raise ValueError(
                "toyworld benchmark needs subjects >= 1, images >= 2, gallery >= 0, 0 <= live_fraction <= 1, "
                "resolution >= 8"
            )
        if part not in PARTS:
            raise ValueError(f"unknown toyworld part {part!r}; choose one of: {', '.join(PARTS)}")
        self.n_subjects, self.n_images, self.resolution, self.n_gallery = subjects, images, resolution, gallery
        self.live_fraction, self.part = live_fraction, part
        self.start = PARTS[part] + (start or 0)  # ``start``: an offset within the part
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
            self._subjects = [
                real_subject(spec, self.n_images, self.resolution, self.n_gallery) for _, spec in self.specs()
            ]
        return self._subjects

    def prompt_templates(self, subject: Subject) -> list[str]:
        """The 25 DreamBooth prompts of an object or live subject, "{}" = subject phrase."""
        return prompt_templates(subject.live)


def load_toyworld(data: str | None = None) -> ToyWorldBenchmark:
    """Harness factory: ``data`` is None or ``key=value`` pairs, e.g. ``subjects=100,images=5,resolution=32,part=tuning``."""
    kwargs: dict[str, float | int | str] = {}
    for item in (data or "").split(","):
        if not item.strip():
            continue
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in ("subjects", "images", "resolution", "live_fraction", "start", "gallery", "part") or not value:
            raise ValueError(
                f"bad toyworld --data item {item!r}; use subjects=N,images=N,gallery=N,resolution=PX,"
                "live_fraction=F,part=tuning|report,start=I"
            )
        try:
            kwargs[key] = value.strip() if key == "part" else float(value) if key == "live_fraction" else int(value)
        except ValueError:
            raise ValueError(f"bad toyworld --data item {item!r}: {key} takes a number") from None
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
        spec = toy_spec(subject)
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
