"""The evaluation protocol (JeDi supp. "Evaluation metric"): inputs, generation, caching, scoring."""

from __future__ import annotations

import itertools
import json
import random
import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import PIL.Image
from tqdm.auto import tqdm

from jointdiff.evaluation.benchmarks import Benchmark, Subject
from jointdiff.evaluation.cache import load_cached_image, save_image
from jointdiff.evaluation.options import EvalConfig


@runtime_checkable
class Method(Protocol):
    """A personalisation method: generates one image per prompt given reference images.

    ``prompts`` are the benchmark templates filled with the subject phrase (the class word, or
    ``f"{method.identifier} {class_word}"`` when the method defines a non-empty ``identifier``).
    For resumable runs to reproduce full runs, each output should depend only on
    ``(subject, references, prompt, seed)``, not on which other prompts share the call.
    """

    name: str

    def generate(
        self, subject: Subject, references: list[PIL.Image.Image], prompts: list[str], seed: int
    ) -> list[PIL.Image.Image]: ...


def stable_int(*parts: object) -> int:
    """A 31-bit integer from ``parts`` that is the same in every process (unlike ``hash``)."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def input_choices(n_images: int, subject: str, config: EvalConfig) -> list[tuple[int, ...]]:
    """Indices of the input images per generation: every ``refs``-subset ("all", JeDi's 1-input protocol)
    or ``num_random`` distinct random subsets seeded by (seed, subject) (the 3-input protocol)."""
    if config.refs > n_images:
        raise ValueError(f"subject {subject!r} has {n_images} images, fewer than refs={config.refs}")
    combos = list(itertools.combinations(range(n_images), config.refs))
    if config.input_mode == "all":
        return combos
    rng = random.Random(stable_int(config.seed, subject, "inputs"))
    return sorted(rng.sample(combos, min(config.num_random, len(combos))))


def generation_seed(seed: int, subject: str, choice: tuple[int, ...], sample: int) -> int:
    """The seed passed to ``Method.generate`` for one (subject, input choice, sample)."""
    return stable_int(seed, subject, choice, sample)


def subject_phrase(method: object, subject: Subject) -> str:
    """What fills a template's "{}" for generation: the class word, after the method's identifier if any."""
    identifier = getattr(method, "identifier", None)
    return f"{identifier} {subject.class_word}" if identifier else subject.class_word


def choice_name(choice: tuple[int, ...] | None) -> str:
    """The cache folder of an input choice, e.g. (0, 3) -> "in0-3"."""
    return "in" + "-".join(map(str, choice)) if choice is not None else "in-unknown"


@dataclass(frozen=True)
class Sample:
    """One image to score: where it is and what produced it."""

    subject: str
    prompt_index: int
    template: str
    choice: tuple[int, ...] | None  # input images used (None: unknown, e.g. --images without in* folders)
    sample: str
    path: Path


def image_path(images_dir: Path, subject: str, choice: tuple[int, ...], prompt_index: int, sample: int) -> Path:
    """``images/<subject>/in<i-j>/p<NN>_s<J>.png``."""
    return images_dir / subject / choice_name(choice) / f"p{prompt_index:02d}_s{sample}.png"


def generate_images(
    method: Method,
    benchmark: Benchmark,
    subjects: Sequence[Subject],
    config: EvalConfig,
    images_dir: Path,
    processes: Any = None,
) -> tuple[list[Sample], dict[str, int]]:
    """Generate every missing image (resumable: valid cached files are kept, corrupt ones redone).

    With ``processes`` (accelerate's ``PartialState`` of several), the (subject, input choice) jobs are split
    between them (``split_between_processes``); an image's seed depends only on its subject, inputs and sample,
    so the images are the ones one process makes. Every process returns every sample and the summed stats.
    The stats count generated and cached images and give the wall seconds per generated image over every
    invocation that generated into ``images_dir`` (kept in ``images_dir/timing.json``, by the main process)."""
    main = processes is None or processes.is_main_process
    samples: list[Sample] = []
    stats: dict[str, Any] = {"generated": 0, "cached": 0, "seconds": 0.0}
    timing_file = images_dir / "timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {"seconds": 0.0, "images": 0}
    jobs = [(s, c) for s in subjects for c in input_choices(len(s.images), s.name, config)]
    with _split(processes, jobs) as mine:
        for subject, choice in tqdm(
            mine, desc=f"generate ({method.name})", unit="input", leave=False, disable=not main
        ):
            _generate_job(method, benchmark, subject, choice, config, images_dir, stats)
    if processes is not None and processes.num_processes > 1:
        from accelerate.utils import gather_object

        parts = gather_object([stats])  # every process's counts, on every process
        stats = {k: sum(p[k] for p in parts) for k in stats}
    if stats["generated"] and main:
        timing = {"seconds": timing["seconds"] + stats["seconds"], "images": timing["images"] + stats["generated"]}
        timing_file.write_text(json.dumps(timing))
    for subject, choice in jobs:
        templates = benchmark.prompt_templates(subject)[: config.max_prompts]
        for j in range(config.images_per_prompt):
            paths = [image_path(images_dir, subject.name, choice, k, j) for k in range(len(templates))]
            samples += [Sample(subject.name, k, templates[k], choice, str(j), paths[k]) for k in range(len(templates))]
    stats.pop("seconds")
    stats["seconds_per_image"] = timing["seconds"] / timing["images"] if timing["images"] else None
    return samples, stats


def _split(processes: Any, items: list[Any]) -> Any:
    """This process's share of ``items`` (a context manager): all of them in one process."""
    from contextlib import nullcontext

    return nullcontext(items) if processes is None else processes.split_between_processes(items)


def _generate_job(
    method: Method,
    benchmark: Benchmark,
    subject: Subject,
    choice: tuple[int, ...],
    config: EvalConfig,
    images_dir: Path,
    stats: dict[str, Any],
) -> None:
    """The missing images of one subject and input choice; counts into ``stats``."""
    templates = benchmark.prompt_templates(subject)[: config.max_prompts]
    prompts = [t.format(subject_phrase(method, subject)) for t in templates]
    references = [subject.images[i] for i in choice]
    for j in range(config.images_per_prompt):
        paths = [image_path(images_dir, subject.name, choice, k, j) for k in range(len(templates))]
        missing = [k for k, p in enumerate(paths) if load_cached_image(p) is None]
        stats["cached"] += len(paths) - len(missing)
        if not missing:
            continue
        seed = generation_seed(config.seed, subject.name, choice, j)
        t0 = time.perf_counter()
        images = method.generate(subject, references, [prompts[k] for k in missing], seed)
        stats["seconds"] += time.perf_counter() - t0
        if len(images) != len(missing):
            raise ValueError(f"method {method.name!r} returned {len(images)} images for {len(missing)} prompts")
        for k, image in zip(missing, images, strict=True):
            save_image(image, paths[k])
        stats["generated"] += len(missing)


_NAME = re.compile(r"^p?(\d+)(?:[_\-.](.*))?$")
_CHOICE = re.compile(r"^in(\d+(?:-\d+)*)$")


def collect_images(images_dir: Path, benchmark: Benchmark, subjects: Sequence[Subject]) -> list[Sample]:
    """Images made by another system: ``DIR/<subject>/[in<i-j>/]<NN>[_anything].<ext>``, NN = prompt index."""
    from jointdiff.evaluation.benchmarks import IMAGE_EXTENSIONS

    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images directory {str(images_dir)!r} does not exist")
    samples: list[Sample] = []
    for subject in subjects:
        folder = images_dir / subject.name
        if not folder.is_dir():
            continue
        templates = benchmark.prompt_templates(subject)
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS):
            m = _NAME.match(path.stem)
            if m is None:
                raise ValueError(f"{str(path)!r}: file names must start with the prompt index (e.g. 03_0.png)")
            k = int(m.group(1))
            if k >= len(templates):
                raise ValueError(f"{str(path)!r}: prompt index {k} out of range (subject has {len(templates)})")
            c = _CHOICE.match(path.parent.name) if path.parent != folder else None
            choice = tuple(int(i) for i in c.group(1).split("-")) if c else None
            if choice is not None and max(choice) >= len(subject.images):
                raise ValueError(f"{str(path)!r}: input index out of range ({len(subject.images)} real images)")
            samples.append(Sample(subject.name, k, templates[k], choice, str(path.relative_to(folder)), path))
    if not samples:
        raise ValueError(f"no images found under {str(images_dir)!r} for the selected subjects")
    return samples
