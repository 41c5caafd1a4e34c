"""The demo: the shipped miniature JeDi personalises a never-seen toy subject (or your images) offline.

One reference image, six DreamBooth scenes (JeDi sec. 4), each generated as its own set of the
reference and one target (sec. 3.3: replacement trick, image guidance eq. 3); the same scenes
without the reference beside them; two identity scores of the outputs, the toy DINO (led by colour)
and the part-aware PartID (issue 26: a blob in the right colours cannot earn it), both against five
real views of the subject that were never the reference, and toy CLIP-T, with the real-render and
text-only rows of the same subject and prompts so the numbers can be read. The default subject is
from the ``report`` part of the held-out subjects. The miniature knows only the toy world: a photo
runs, but is not a toy subject (then only CLIP-T and the identity against your other images).

``jointdiff demo`` is :func:`run_demo` and :func:`format_scores`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jointdiff.jedi.coupling import SEVERAL_SUBJECTS_REGION_BIAS  # two subjects: each column its reference
from jointdiff.jedi.guidance import DEFAULT  # joint guidance (eq. 3), the measured default

if TYPE_CHECKING:
    import PIL.Image

    from jointdiff.evaluation.benchmarks import Subject

DEMO_SCENES = (0, 1, 2, 3, 6, 9)  # jungle, snow, beach, cobblestone street, city, purple rug in a forest
DEMO_STEPS = 25  # with --model (its own scheduler); the shipped miniature: SHIPPED_STEPS of SHIPPED_SAMPLER


@dataclass
class DemoResult:
    """What :func:`run_demo` made and measured."""

    grid: Path
    prompts: list[str]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # row -> {"identity", "parts", "clip_t"}
    seconds: float = 0.0


@dataclass
class DemoSubject:
    """Whom the demo personalises: the reference first among ``real``, the class word of the prompts, the views
    identity is scored against (never the reference), and the toy subject when it is one (for its reference rows)."""

    real: list[PIL.Image.Image]
    class_word: str
    gallery: list[PIL.Image.Image]
    toy: Subject | None = None  # the toy-world subject, or None for your images

    def prompts(self) -> list[str]:
        """The demo's scenes (:data:`DEMO_SCENES`) of the DreamBooth prompt list, with the subject's class word."""
        from jointdiff.data.toyworld.captions import prompt_templates

        templates = prompt_templates(self.toy.live if self.toy is not None else False)
        return [templates[k].format(self.class_word) for k in DEMO_SCENES]


def demo_subject(
    references: list[PIL.Image.Image] | None = None, subject: int = 0, class_word: str = "toy"
) -> DemoSubject:
    """Your ``references`` (the first is the reference, the others are scored against), or else held-out toy
    subject ``subject`` of the report part: one render as the reference, five views never given."""
    from jointdiff.data.toyworld.subjects import make_subject, subject_seed
    from jointdiff.evaluation.toy.benchmark import PARTS, real_subject

    if subject < 0:
        raise ValueError(f"--subject must be >= 0, got {subject}")
    if references:
        real = [im.convert("RGB") for im in references]
        return DemoSubject(real, class_word, real[1:])  # your other images, if any, are the views never given
    toy = real_subject(
        make_subject(subject_seed("eval", PARTS["report"] + subject)), images=1, resolution=64, gallery=5
    )
    return DemoSubject(toy.images, toy.class_word, toy.gallery, toy)


def score_demo(
    made: list[PIL.Image.Image], plain: list[PIL.Image.Image], prompts: list[str], subject: DemoSubject, seed: int
) -> dict[str, dict[str, float]]:
    """Identity (toy DINO, PartID; against the gallery) and toy CLIP-T of the images made with the reference and
    without it; for a toy subject also the real renders (upper bound) and the text-only floor."""
    import numpy as np

    from jointdiff.evaluation.toy.evaluators import load_toy_dual
    from jointdiff.evaluation.toy.probe import clip_t, identity_measures, identity_per_image, reference_rows

    measures, dual = identity_measures(), load_toy_dual()
    gallery = subject.gallery

    def score(images: list[PIL.Image.Image]) -> dict[str, float]:
        out = {m: float(np.mean(identity_per_image(enc, images, gallery))) for m, enc in measures.items() if gallery}
        return out | {"clip_t": clip_t(dual, images, prompts)}

    scores = {"JeDi, 1 reference": score(made), "same model, no reference": score(plain)}
    if subject.toy is not None:
        rows = reference_rows(subject.toy, prompts, measures, seed, dual)
        scores["real renders (upper bound)"], scores["text-only floor"] = rows["real"], rows["floor"]
    return scores


def draw_demo(
    out: Path,
    references: list[PIL.Image.Image],
    made: list[PIL.Image.Image],
    plain: list[PIL.Image.Image],
    prompts: list[str],
) -> Path:
    """Each image as ``NN-jedi.png`` / ``NN-no-reference.png`` and the captioned ``grid.png`` (the references, then
    the scenes; below, the scenes without them) in ``out``; returns the grid's path."""
    import PIL.Image

    from jointdiff.common.images import captioned_grid

    out.mkdir(parents=True, exist_ok=True)
    for k, (a, b) in enumerate(zip(made, plain, strict=True)):
        a.save(out / f"{k:02d}-jedi.png")
        b.save(out / f"{k:02d}-no-reference.png")
    names = ["reference"] if len(references) == 1 else [f"reference {chr(65 + i)}" for i in range(len(references))]
    blank = [(PIL.Image.new("RGB", r.size, "white"), "") for r in references]
    rows = [
        list(zip(references, names, strict=True)) + [(im, p) for im, p in zip(made, prompts, strict=True)],
        blank + [(im, "no reference") for im in plain],
    ]
    grid = out / "grid.png"
    captioned_grid(rows, cell=128).save(grid)
    return grid


def _steps(model: str | Path | None, steps: int | None) -> int:
    """Sampling steps: as given, else the shipped miniature's measured count, else :data:`DEMO_STEPS`."""
    from jointdiff.jedi.schedulers import SHIPPED_STEPS

    if steps is not None:
        return steps
    return SHIPPED_STEPS if model is None else DEMO_STEPS


def _load(model: str | Path | None, onnx: str = "off") -> Any:
    """The demo's pipeline: ``model`` or the shipped miniature (its measured dtype and sampler), progress bars off, the
    U-Net through ONNX Runtime if asked (``onnx``: :func:`jointdiff.jedi.onnx.apply_mode`)."""
    import torch

    from jointdiff.common.paths import shipped_model
    from jointdiff.jedi.cpu import shipped_cpu_dtype
    from jointdiff.jedi.onnx import apply_mode
    from jointdiff.jedi.pipeline import JointDiffusionPipeline
    from jointdiff.jedi.schedulers import SHIPPED_SAMPLER, make_scheduler

    path = Path(model) if model is not None else shipped_model()
    if path is None:
        raise ValueError(
            "no shipped miniature model in this install (src/jointdiff/weights/miniature): pass --model DIR "
            "or train one (docs/miniature.md)"
        )
    if model is None:  # the shipped miniature: its measured dtype and sampler (jointdiff.jedi.cpu, samplers.md)
        dtype = shipped_cpu_dtype() if onnx == "off" else torch.float32  # ONNX Runtime serves fp32 only
        pipe = JointDiffusionPipeline.from_pretrained(str(path), torch_dtype=dtype)
        pipe.scheduler = make_scheduler(SHIPPED_SAMPLER, pipe.scheduler.config)
    else:
        pipe = JointDiffusionPipeline.from_pretrained(str(path))
    pipe.set_progress_bar_config(disable=True)
    apply_mode(pipe, onnx)
    return pipe


def run_demo(
    out: str | Path,
    model: str | Path | None = None,
    references: list[PIL.Image.Image] | None = None,
    subject: int = 0,
    prompts: list[str] | None = None,
    class_word: str = "toy",
    seed: int = 0,
    steps: int | None = None,
    guidance_scale: float = DEFAULT.scale,
    onnx: str = "off",
) -> DemoResult:
    """Generate, score and draw the demo into ``out`` (``grid.png``); see the module docstring."""
    from jointdiff.evaluation.toy.probe import generate_pairs

    t0 = time.perf_counter()
    steps = _steps(model, steps)
    pipe = _load(model, onnx)
    who = demo_subject(references, subject, class_word)
    prompts = prompts or who.prompts()
    made, plain = generate_pairs(pipe, prompts, who.real[0], who.class_word, steps, guidance_scale, seed)
    scores = score_demo(made, plain, prompts, who, seed)
    grid = draw_demo(Path(out), [who.real[0]], made, plain, prompts)
    return DemoResult(grid, prompts, scores, time.perf_counter() - t0)


def run_two_subject_demo(
    out: str | Path,
    model: str | Path | None = None,
    subject: int = 0,
    seed: int = 0,
    steps: int | None = None,
    guidance_scale: float = DEFAULT.scale,
    onnx: str = "off",
    region_bias: float = SEVERAL_SUBJECTS_REGION_BIAS,
) -> DemoResult:
    """Two held-out toy subjects in one image (issue 33): the report part's subjects ``subject`` (A) and the next
    (B), one reference each with its own caption, the demo's scenes with both class words; with the references and
    without them, each subject scored in its own region (``jointdiff.evaluation.toy.pairs``) beside the real
    two-subject renders and the text-only floor. Each target's left column copies A, its right column B (the
    ``region_bias`` of :class:`jointdiff.jedi.coupling.Coupling`; 0: off). Writes ``grid.png`` (and the images)
    into ``out``."""
    from jointdiff.data.toyworld.subjects import make_subject, subject_seed
    from jointdiff.evaluation.toy.benchmark import PARTS, real_subject
    from jointdiff.evaluation.toy.evaluators import load_toy_dual, load_toy_parts, load_toy_segmenter
    from jointdiff.evaluation.toy.pairs import TEMPLATES, PairCase, PairScorer, pair_prompts, render_pairs, summarise
    from jointdiff.evaluation.toy.probe import with_and_without

    t0 = time.perf_counter()
    if subject < 0:
        raise ValueError(f"--subject must be >= 0, got {subject}")
    steps = _steps(model, steps)
    pipe = _load(model, onnx)
    a, b = (
        real_subject(make_subject(subject_seed("eval", PARTS["report"] + i)), images=1, resolution=64, gallery=5)
        for i in (subject, subject + 1)
    )
    case = PairCase(a, b)
    templates = [TEMPLATES[k] for k in DEMO_SCENES]
    prompts = pair_prompts(case, templates)
    captions = [f"a photo of a {a.class_word}", f"a photo of a {b.class_word}"]
    regions = {"region_bias": region_bias}
    made, plain = with_and_without(
        pipe, prompts, [a.images[0], b.images[0]], captions, steps, guidance_scale, seed, regions
    )
    scorer = PairScorer(load_toy_parts(), load_toy_segmenter(), load_toy_dual())
    real, floor = render_pairs(case, templates, 64, seed=seed), render_pairs(case, templates, 64, floor=True, seed=seed)
    rows = {
        "JeDi, references of A and B": scorer.score_two(case, made, prompts),
        "same model, no reference": scorer.score_two(case, plain, prompts),
        "real two-subject renders": scorer.score_two(case, [v.pil() for v in real], prompts, [v.masks for v in real]),
        "text-only floor": scorer.score_two(case, [v.pil() for v in floor], prompts, [v.masks for v in floor]),
    }
    summary = summarise({k: {case.name: v} for k, v in rows.items()}, "real two-subject renders", "text-only floor")
    grid = draw_demo(Path(out), [a.images[0], b.images[0]], made, plain, prompts)
    return DemoResult(grid, prompts, summary, time.perf_counter() - t0)


def format_pair_scores(result: DemoResult) -> str:
    """The two-subject demo's score table: per subject PartID, normalised, leakage, found, CLIP-T."""
    columns = ("PartID A", "PartID B", "PartID (norm)", "leakage", "found", "CLIP-T")
    lines = [f"{'':30s}" + "".join(f" {c:>13s}" for c in columns)]
    for name, row in result.scores.items():
        lines.append(f"{name:30s}" + "".join(f" {'-':>13s}" if row[c] is None else f" {row[c]:13.3f}" for c in columns))
    lines.append(
        "each subject scored in its own region against real views never given (normalised: floor 0, real 1); "
        "leakage: a subject's region against the other subject's views; found: share of the two subjects found"
    )
    return "\n".join(lines)


def format_scores(result: DemoResult) -> str:
    """The score table a user reads, with the normalised identities where the toy rows exist."""
    s = result.scores
    columns = [
        (k, title) for k, title in (("identity", "toy DINO"), ("parts", "PartID")) if k in s["JeDi, 1 reference"]
    ]
    lines = [f"{'':32s}" + "".join(f" {title:>9s}" for _, title in columns) + f" {'CLIP-T':>7s}"]
    for name, row in s.items():
        lines.append(f"{name:32s}" + "".join(f" {row[k]:9.3f}" for k, _ in columns) + f" {row['clip_t']:7.3f}")
    if "text-only floor" in s:
        lo, hi = s["text-only floor"], s["real renders (upper bound)"]
        norm = {k: (s["JeDi, 1 reference"][k] - lo[k]) / max(hi[k] - lo[k], 1e-6) for k, _ in columns}
        lines.append(
            "normalised identity (0 = text-only floor, 1 = real renders): "
            + ", ".join(f"{title} {norm[k]:.2f}" for k, title in columns)
        )
    lines.append(
        "identity: cosine to real views never given as the reference; toy DINO is led by colour, PartID also needs "
        "the parts (benchmarks/impostors.md); CLIP-T: toy CLIP image-prompt cosine"
    )
    return "\n".join(lines)


OWN_IMAGE = "Your own image: jointdiff demo --ref my.png --class-word dog"
OWN_TWO = (
    'Your own two subjects: jointdiff generate --ref dog.png --ref-prompt "a dog" --ref pot.png --ref-prompt "a teapot" '
    '--prompt "a dog and a teapot on the beach" --out out/'
)


def closing_lines(shipped: bool, two_subjects: bool = False) -> list[str]:
    """What the demo prints last: what the shipped miniature can and cannot do (when it ran), and the one command
    that runs it on a user's own image(s) (two subjects: `jointdiff generate` with one caption per reference)."""
    from jointdiff.common.paths import MINIATURE_SCOPE

    own = OWN_TWO if two_subjects else OWN_IMAGE
    return [MINIATURE_SCOPE, own] if shipped else [own]
