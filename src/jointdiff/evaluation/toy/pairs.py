"""Scoring two-subject images (issue 33): each subject inside its own region, with the part-aware identity.

An image that should show subjects A and B is scored per subject:

1. **Regions.** Real renders come with each subject's exact mask. A generated image is segmented by the toy
   segmenter; its connected components (4-neighbour) larger than :data:`MIN_AREA` of the image are the candidate
   regions, the two largest kept. One component that holds both subjects (they touch) is split in two by
   2-means on its columns when both halves hold at least :data:`MIN_SPLIT` of it.
2. **Crops.** A subject's crop is the square around its region, :data:`MARGIN` wider on each side, with the other
   region's pixels painted in the crop's median background colour, resized to the image size: the subject in
   its scene as single-subject views show it, without the other one (:func:`subject_crop`).
3. **Assignment.** Which region is A is decided by the identity itself: of the two ways to give the regions to
   A and B, the one with the larger summed part-aware identity (each crop against its subject's real views).
   This favours a generated image (its better match is taken); the text-only floor is scored the same way, so
   the normalised score keeps the advantage out. One region only: it goes to the subject it matches better, and
   the other subject is *missing* (scored at the floor, and counted).
4. **Scores.** PartID of A = mean cosine of A's crop to A's real views never given as input (the unseen protocol
   of issue 26); the same for B. **Leakage** = the cosine of B's crop to A's real views (and of A's crop to
   B's): subject A's parts appearing on B. A clean scene's level of it is the real renders' row. CLIP-T = the
   toy CLIP's cosine of the whole image to the prompt naming both class words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch

from jointdiff.data.toyworld.captions import SCENE_PROMPTS, parse_prompt, with_article
from jointdiff.data.toyworld.generator import View, render_view, view_rng
from jointdiff.data.toyworld.pairs import PairView, pair_phrase, render_pair_view
from jointdiff.data.toyworld.subjects import SubjectSpec
from jointdiff.evaluation.benchmarks import Subject
from jointdiff.evaluation.metrics import text_alignment
from jointdiff.evaluation.toy.benchmark import ToyTextOnlyMethod, toy_spec

MIN_AREA = 0.01  # of the image: smaller components are noise
MIN_SPLIT = 0.25  # of a component: each half of a split holds at least this much
MARGIN = 0.15  # of the region's larger side, on each side of the crop


def components(mask: np.ndarray) -> list[np.ndarray]:
    """The 4-connected components of a bool mask, largest first, as bool masks of the mask's shape."""
    h, w = mask.shape
    label = np.zeros((h, w), np.int32)
    out: list[np.ndarray] = []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if label[y0, x0]:
            continue
        n = len(out) + 1
        label[y0, x0] = n
        stack, pixels = [(y0, x0)], []
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not label[yy, xx]:
                    label[yy, xx] = n
                    stack.append((yy, xx))
        out.append(label == n)
    return sorted(out, key=lambda m: -int(m.sum()))


def large_components(mask: np.ndarray) -> list[np.ndarray]:
    """The components of at least :data:`MIN_AREA` of the image, largest first (smaller ones are noise)."""
    return [c for c in components(mask) if c.sum() >= MIN_AREA * mask.size]


def split_columns(region: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A region cut in two by 2-means on its pixels' columns (left part first), or None when a part would hold
    less than :data:`MIN_SPLIT` of it."""
    ys, xs = np.nonzero(region)
    if len(xs) < 2:
        return None
    lo, hi = float(xs.min()), float(xs.max())
    for _ in range(20):
        cut = (lo + hi) / 2
        left, right = xs[xs <= cut], xs[xs > cut]
        if len(left) == 0 or len(right) == 0:
            return None
        lo, hi = float(left.mean()), float(right.mean())
    on_left = xs <= (lo + hi) / 2
    if min(on_left.sum(), (~on_left).sum()) < MIN_SPLIT * len(xs):
        return None
    parts = np.zeros((2, *region.shape), bool)
    parts[0, ys[on_left], xs[on_left]] = True
    parts[1, ys[~on_left], xs[~on_left]] = True
    return parts[0], parts[1]


def regions(mask: np.ndarray) -> list[np.ndarray]:
    """Up to two subject regions of a segmented image (module docstring, step 1), largest first."""
    big = large_components(mask)
    if len(big) >= 2:
        return big[:2]
    if len(big) == 1:
        halves = split_columns(big[0])
        return sorted(halves, key=lambda m: -int(m.sum())) if halves is not None else big
    return []


def subject_crop(image: np.ndarray, own: np.ndarray, other: np.ndarray | None = None) -> PIL.Image.Image:
    """The subject of region ``own`` alone in its scene (module docstring, step 2): the square around ``own`` with a
    margin, the ``other`` region painted in the crop's median background colour, resized to the image's size."""
    h, w = own.shape
    ys, xs = np.nonzero(own)
    if len(ys) == 0:
        raise ValueError("subject_crop: empty region")
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = round(float(max(bottom - top, right - left)) * (1 + 2 * MARGIN))
    side = min(max(side, 4), h, w)
    cy, cx = (top + bottom) // 2, (left + right) // 2
    t = int(np.clip(cy - side // 2, 0, h - side))
    lft = int(np.clip(cx - side // 2, 0, w - side))
    crop = image[t : t + side, lft : lft + side].copy()
    if other is not None:
        o = other[t : t + side, lft : lft + side]
        background = ~(o | own[t : t + side, lft : lft + side])
        if o.any() and background.any():
            crop[o] = np.median(crop[background], axis=0).astype(np.uint8)
    return PIL.Image.fromarray(crop).resize((w, h), PIL.Image.Resampling.BILINEAR)


@dataclass
class PairScore:
    """The per-subject scores of one two-subject image (None: the subject was not found)."""

    identity: tuple[float | None, float | None]  # PartID of A's region vs A's views, B's vs B's
    leakage: tuple[float | None, float | None]  # A's region vs B's views, B's region vs A's views
    found: int  # regions found (0, 1 or 2)


def score_regions(
    crops: Callable[[list[tuple[np.ndarray, np.ndarray | None]]], torch.Tensor],
    image: np.ndarray,
    found: Sequence[np.ndarray],
    galleries: tuple[torch.Tensor, torch.Tensor],
    assign: bool,
) -> PairScore:
    """Scores of one image whose subject regions are ``found`` (in A, B order when ``assign`` is False: exact
    masks, where an empty mask is a subject out of sight; else assigned by identity, step 3). ``crops`` turns (own,
    other) region pairs of ``image`` into L2-normalised part-aware features; ``galleries`` hold each subject's real
    views' features."""
    found = list(found)[:2]
    if not assign:  # exact masks, A then B: score the subjects in sight
        seen = [i for i, m in enumerate(found) if m.any()]
        slots = seen
        pairs = [(found[i], found[1 - i] if len(found) == 2 else None) for i in seen]
    else:
        slots = []
        pairs = [(m, found[1 - i] if len(found) == 2 else None) for i, m in enumerate(found)]
    if not pairs:
        return PairScore(identity=(None, None), leakage=(None, None), found=0)
    feats = crops(pairs)  # (r, d)
    sim = torch.stack([(feats @ g.T).mean(1) for g in galleries], 1)  # (r regions, 2 subjects)
    if assign and len(pairs) == 2:  # the assignment with the larger summed identity
        slots = [0, 1] if sim[0, 0] + sim[1, 1] >= sim[0, 1] + sim[1, 0] else [1, 0]
    elif assign:  # one region: the subject it matches better
        slots = [int(sim[0].argmax())]
    identity: list[float | None] = [None, None]
    leakage: list[float | None] = [None, None]
    for row, subject in enumerate(slots):
        identity[subject], leakage[subject] = float(sim[row, subject]), float(sim[row, 1 - subject])
    return PairScore(identity=(identity[0], identity[1]), leakage=(leakage[0], leakage[1]), found=len(slots))


# --------------------------------------------------------------------------------------------------------------------
# The two-subject benchmark: pairs of held-out subjects, the 20 scene prompts with both class words, reference rows.

TEMPLATES: tuple[str, ...] = tuple(t for _, t in SCENE_PROMPTS)  # scenes: both subjects fit every one
RENDER_STREAM = 90000  # render streams of the real and floor rows (the everyday views use 70000 and 71000)


@dataclass(frozen=True)
class PairCase:
    """Two held-out subjects that a two-subject image should show (A first)."""

    a: Subject
    b: Subject

    @property
    def name(self) -> str:
        return f"{self.a.name}+{self.b.name}"

    def specs(self) -> tuple[SubjectSpec, SubjectSpec]:
        """The toy-world specs of A and B."""
        return toy_spec(self.a), toy_spec(self.b)


def pair_cases(subjects: Sequence[Subject]) -> list[PairCase]:
    """Each subject with the next one (the last with the first): every subject is A once and B once."""
    if len(subjects) < 2:
        raise ValueError(f"two-subject scenes need at least 2 subjects, got {len(subjects)}")
    if len(subjects) == 2:
        return [PairCase(subjects[0], subjects[1])]
    return [PairCase(s, subjects[(i + 1) % len(subjects)]) for i, s in enumerate(subjects)]


def pair_prompts(case: PairCase, templates: Sequence[str] = TEMPLATES) -> list[str]:
    """The prompts of a case: each template with both class words, "a dog and a teapot on the beach"."""
    return [with_article(t.format(pair_phrase(case.a.class_word, case.b.class_word))) for t in templates]


def single_prompts(case: PairCase, templates: Sequence[str] = TEMPLATES) -> list[str]:
    """The same templates with subject A alone (the single-subject rows of the comparison)."""
    return [with_article(t.format(case.a.class_word)) for t in templates]


def render_pairs(
    case: PairCase, templates: Sequence[str], resolution: int, floor: bool = False, seed: int = 0
) -> list[PairView]:
    """Real two-subject renders of a case under each template's scene (``floor``: two other subjects of the same
    classes, what a perfect text-only model draws), each a pure function of (subjects, template index, seed)."""
    a, b = case.specs()
    out = []
    for k, template in enumerate(templates):
        condition = parse_prompt(template.format(a.class_word)).condition
        drawn = (_other(a, template, seed), _other(b, template, seed + 1)) if floor else (a, b)
        rng = view_rng(a.seed, b.seed, RENDER_STREAM, k, seed)
        out.append(render_pair_view(drawn, condition, rng, resolution))
    return out


def render_singles(
    case: PairCase, templates: Sequence[str], resolution: int, floor: bool = False, seed: int = 0
) -> list[View]:
    """Real renders of subject A alone under each template's scene (``floor``: another subject of its class)."""
    a = toy_spec(case.a)
    out = []
    for k, template in enumerate(templates):
        condition = parse_prompt(template.format(a.class_word)).condition
        drawn = _other(a, template, seed) if floor else a
        out.append(render_view(drawn, condition, view_rng(a.seed, RENDER_STREAM + 1, k, seed), resolution))
    return out


def _other(spec: SubjectSpec, template: str, seed: int) -> SubjectSpec:
    """The floor's subject: a training subject of the same class (:class:`ToyTextOnlyMethod`)."""
    return ToyTextOnlyMethod().drawn(spec, template, seed)


class PairScorer:
    """Per-subject part-aware identity, leakage and CLIP-T of two-subject (and single-subject) images.

    ``parts``: the part-aware toy encoder (PartID); ``segmenter``: the toy segmenter (generated images);
    ``dual``: the toy CLIP (CLIP-T). Each subject's real views never given as input (its gallery) are what
    identity is measured against."""

    def __init__(self, parts: Any, segmenter: Any, dual: Any) -> None:
        self.parts, self.segmenter, self.dual = parts, segmenter, dual
        self._galleries: dict[str, torch.Tensor] = {}

    def gallery(self, subject: Subject) -> torch.Tensor:
        """The subject's unseen real views, part-aware features ``(g, d)``."""
        if subject.name not in self._galleries:
            if not subject.gallery:
                raise ValueError(f"subject {subject.name} has no held-out gallery to score identity against")
            self._galleries[subject.name] = self.parts.encode_images(subject.gallery)
        return self._galleries[subject.name]

    def _crops(self, image: np.ndarray) -> Callable[[list[tuple[np.ndarray, np.ndarray | None]]], torch.Tensor]:
        def encode(pairs: list[tuple[np.ndarray, np.ndarray | None]]) -> torch.Tensor:
            return self.parts.encode_images([subject_crop(image, own, other) for own, other in pairs])

        return encode

    def regions(self, images: Sequence[PIL.Image.Image]) -> list[list[np.ndarray]]:
        """The subject regions of generated images (segmenter, components, split; module docstring step 1)."""
        return [regions(m) for m in self.segmenter.batch(list(images))]

    def score_two(
        self,
        case: PairCase,
        images: Sequence[PIL.Image.Image],
        prompts: Sequence[str],
        masks: Sequence[np.ndarray] | None = None,
    ) -> list[dict[str, Any]]:
        """One row per image of both subjects: ``id_a``, ``id_b``, ``leak_a`` (A's region vs B's views), ``leak_b``,
        ``found``, ``clip_t``. ``masks`` ``(2, H, W)`` per image (real renders: exact, in A, B order) or None
        (generated: segmented and assigned)."""
        galleries = (self.gallery(case.a), self.gallery(case.b))
        found = [list(m) for m in masks] if masks is not None else self.regions(images)
        clip_t = self._clip_t(images, prompts)
        rows = []
        for image, regs, ct in zip(images, found, clip_t, strict=True):
            arr = np.asarray(image.convert("RGB"))
            s = score_regions(self._crops(arr), arr, regs, galleries, assign=masks is None)
            rows.append(
                {"id_a": s.identity[0], "id_b": s.identity[1], "leak_a": s.leakage[0], "leak_b": s.leakage[1]}
                | {"found": s.found, "clip_t": ct}
            )
        return rows

    def score_one(
        self,
        case: PairCase,
        images: Sequence[PIL.Image.Image],
        prompts: Sequence[str],
        masks: Sequence[np.ndarray] | None = None,
    ) -> list[dict[str, Any]]:
        """One row per image of subject A alone: ``id_a``, ``found``, ``clip_t``; its region is the exact mask or the
        largest segmented component (two components: the larger)."""
        gallery = self.gallery(case.a)
        if masks is not None:
            found = [[m] for m in masks]
        else:
            found = [large_components(m)[:1] for m in self.segmenter.batch(list(images))]
        clip_t = self._clip_t(images, prompts)
        rows = []
        for image, regs, ct in zip(images, found, clip_t, strict=True):
            if not regs or not regs[0].any():  # nothing segmented, or the subject out of sight
                rows.append({"id_a": None, "found": 0, "clip_t": ct})
                continue
            arr = np.asarray(image.convert("RGB"))
            feats = self._crops(arr)([(regs[0], None)])
            rows.append({"id_a": float((feats @ gallery.T).mean()), "found": 1, "clip_t": ct})
        return rows

    def _clip_t(self, images: Sequence[PIL.Image.Image], prompts: Sequence[str]) -> list[float]:
        feats = self.dual.encode_images([im.convert("RGB") for im in images])
        text = self.dual.encode_texts(list(prompts))
        return text_alignment(feats, text).tolist()


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarise(
    rows: dict[str, dict[str, list[dict[str, Any]]]], real: str, floor: str, slots: tuple[str, ...] = ("a", "b")
) -> dict[str, dict[str, float | None]]:
    """Per row name: mean identity per slot (raw), normalised identity (per case and slot, the ``floor`` row's mean
    is 0 and the ``real`` row's 1; a subject not found scores the floor), found rate, leakage and CLIP-T, each
    averaged over a case's images, then over cases. ``rows[name][case]`` are the score rows of one case."""
    out: dict[str, dict[str, float | None]] = {}
    for name, cases in rows.items():
        norm, raw = [], {s: [] for s in slots}
        for case, rs in cases.items():
            for s in slots:
                r, f = _mean(x[f"id_{s}"] for x in rows[real][case]), _mean(x[f"id_{s}"] for x in rows[floor][case])
                x = _mean(v if (v := row[f"id_{s}"]) is not None else f for row in rs)
                raw[s].append(x)
                if None not in (r, f, x) and r != f:  # type: ignore[operator]
                    norm.append((x - f) / (r - f))  # type: ignore[operator]
        summary: dict[str, float | None] = {f"PartID {s.upper()}": _mean(raw[s]) for s in slots}
        summary["PartID (norm)"] = _mean(norm)
        case_means = [_mean(_found_rate(r, len(slots)) for r in rs) for rs in cases.values()]
        summary["found"] = _mean(case_means)
        if "leak_a" in next(iter(next(iter(cases.values()))), {}):
            summary["leakage"] = _mean(_mean(_mean((r["leak_a"], r["leak_b"])) for r in rs) for rs in cases.values())
        summary["CLIP-T"] = _mean(_mean(r["clip_t"] for r in rs) for rs in cases.values())
        out[name] = summary
    return out


def _found_rate(row: dict[str, Any], slots: int) -> float:
    return min(row["found"], slots) / slots


PROBE_SCENES = (0, 2, 6, 16)  # jungle, beach, city, mirror: the two-subject probe's prompts


@torch.no_grad()
def pair_probe(
    pipe: Any,
    subjects: int = 4,
    steps: int = 20,
    guidance_scale: float = 5.0,
    seed: int = 0,
    region_bias: float = 0.0,
) -> dict[str, float]:
    """Two subjects in training (the ``toyworld_pairs`` monitor): the first ``subjects`` tuning subjects paired with
    the next (:func:`pair_cases`), :data:`PROBE_SCENES` with both class words, both references with their own
    captions; per-subject normalised PartID against the real two-subject renders and the floor of the same scenes
    (``pairs_normalised``), the share of subjects found, leakage and the raw identity. ``region_bias``: sampling's
    region bias with both references (0: off)."""
    from jointdiff.evaluation.toy.benchmark import ToyWorldBenchmark
    from jointdiff.evaluation.toy.evaluators import load_toy_dual, load_toy_parts, load_toy_segmenter
    from jointdiff.evaluation.toy.probe import with_and_without

    cases = pair_cases(ToyWorldBenchmark(subjects=subjects, images=2, part="tuning").subjects())
    templates = [TEMPLATES[k] for k in PROBE_SCENES]
    scorer = PairScorer(load_toy_parts(), load_toy_segmenter(), load_toy_dual())
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {"model": {}, "real": {}, "floor": {}}
    for case in cases:
        prompts = pair_prompts(case, templates)
        captions = [f"a photo of a {case.a.class_word}", f"a photo of a {case.b.class_word}"]
        refs = [case.a.images[0], case.b.images[0]]
        options = {"region_bias": region_bias} if region_bias else None
        made, _ = with_and_without(pipe, prompts, refs, captions, steps, guidance_scale, seed, options)
        real, floor = render_pairs(case, templates, 64), render_pairs(case, templates, 64, floor=True)
        rows["model"][case.name] = scorer.score_two(case, made, prompts)
        rows["real"][case.name] = scorer.score_two(case, [v.pil() for v in real], prompts, [v.masks for v in real])
        rows["floor"][case.name] = scorer.score_two(case, [v.pil() for v in floor], prompts, [v.masks for v in floor])
    s = summarise(rows, real="real", floor="floor")["model"]
    raw = _mean((s["PartID A"], s["PartID B"]))
    out = {"pairs_normalised": s["PartID (norm)"], "pairs_identity": raw, "pairs_found": s["found"]}
    out |= {"pairs_leakage": s.get("leakage")}
    return {k: round(float(v), 4) for k, v in out.items() if v is not None}
