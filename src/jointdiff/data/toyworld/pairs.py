"""Two subjects in one image (issue 33): scenes that show subjects A and B side by side, each with its exact mask,
and same-subject *pair sets* whose views show A alone, B alone, or both.

A pair view places the two subjects left and right of the centre without overlap (poses redrawn until their
silhouettes are apart; after :data:`PLACEMENT_TRIES` tries the nearer one occludes the other and the masks keep
only what is visible), under one light, on one backdrop (each casts its own shadow or reflection), captioned
with both class words: "a green striped dog and a red teapot on the beach". Only scene and neutral conditions
are drawn for two subjects: an outfit or an attribute would have to say which subject it applies to.

A pair set is the training sample of the two-subject task: the views that show one subject are the references a
user gives, the views that show both are what the model learns to make from them. Like every toy-world sample,
it is a pure function of integer seeds.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field, replace

import numpy as np
import PIL.Image

from jointdiff.data.toyworld.captions import (
    NEUTRAL_PROMPTS,
    SCENE_PROMPTS,
    caption,
    sample_descriptor,
    with_article,
)
from jointdiff.data.toyworld.edits import apply_condition
from jointdiff.data.toyworld.generator import (
    View,
    check_render,
    compose,
    finish,
    render_view,
    sample_condition,
    sample_style,
    view_rng,
)
from jointdiff.data.toyworld.render import Light, Pose, draw_subject, fit_pose, sample_light, sample_pose
from jointdiff.data.toyworld.subjects import SEED_RANGES, SubjectSpec, make_subject, subject_seed

PAIR_SALT = zlib.crc32(b"pair")
PLACEMENT_TRIES = 8  # pose draws until the two silhouettes do not touch
PAIR_SCALE = (0.34, 0.5)  # each subject's size on screen (image heights); one subject alone: 0.4-0.72
PAIR_CENTRES = ((0.2, 0.33), (0.67, 0.8))  # horizontal centres of the left and the right subject
PAIR_CONDITIONS = tuple(k for k, _ in SCENE_PROMPTS + NEUTRAL_PROMPTS)  # no outfit, no attribute
JOIN = re.compile(r"\s+and\s+an?\s+")  # "dog and a teapot" -> ["dog", "teapot"]


@dataclass
class PairView:
    """One render of two subjects: RGB pixels, each subject's visible mask, the caption naming both."""

    image: np.ndarray  # (H, W, 3) uint8
    masks: np.ndarray  # (2, H, W) bool: subject A's visible pixels, subject B's
    caption: str
    condition: str  # scene or neutral key (captions.TEMPLATES)
    style: str | None = None

    @property
    def mask(self) -> np.ndarray:
        """Both subjects' pixels, ``(H, W)`` bool (the foreground of the training loss)."""
        return self.masks.any(0)

    def pil(self) -> PIL.Image.Image:
        """The image as a PIL RGB image."""
        return PIL.Image.fromarray(self.image, "RGB")


@dataclass
class PairSet:
    """A two-subject set: views of A, of B and of both (``shows[k]``: "a", "b" or "ab")."""

    key: str
    subjects: tuple[SubjectSpec, SubjectSpec]
    views: list[View | PairView] = field(default_factory=list)
    shows: list[str] = field(default_factory=list)

    def masks(self) -> np.ndarray:
        """Per view, the foreground of both subjects, ``(n, H, W)`` bool."""
        return np.stack([v.mask for v in self.views])

    def regions(self) -> np.ndarray:
        """Per view, each pixel's subject (0: A, 1: B), ``(n, H, W)`` int8 (:func:`view_regions`)."""
        return np.stack([view_regions(v, shows) for v, shows in zip(self.views, self.shows, strict=True)])


def view_regions(view: View | PairView, shows: str) -> np.ndarray:
    """Which subject each pixel of a view belongs to, ``(H, W)`` int8, 0 for A and 1 for B: a view of one subject is
    that subject's everywhere; a view of both takes each subject's exact mask, and the background the subject of its
    half of the image (the left subject's left of the centre), as the region bias of sampling splits a target
    into columns (:func:`jointdiff.jedi.attention.region_bias`). The labels of training's region bias (issue 33)."""
    h, w = view.image.shape[:2]
    if shows in ("a", "b"):
        return np.full((h, w), 0 if shows == "a" else 1, np.int8)
    if shows != "ab" or not isinstance(view, PairView):
        raise ValueError(f"a view shows 'a', 'b' or 'ab' (a PairView), got {shows!r}")
    cols = np.arange(w)
    centre = [cols[m.any(0)].mean() if m.any() else None for m in view.masks]  # each subject's mean column
    a, b = centre
    if a is not None and b is not None:
        left = int(b < a)  # the subject on the left
    elif b is not None:  # A hidden (occluded): B's side decides
        left = int(b < w / 2)
    else:
        left = int(a is not None and a >= w / 2)
    labels = np.where(cols < w / 2, left, 1 - left).astype(np.int8)[None].repeat(h, 0)  # (H, W) by halves
    labels[view.masks[0]] = 0
    labels[view.masks[1]] = 1
    return labels


def pair_phrase(a: str, b: str) -> str:
    """The subject phrase of a two-subject prompt: ``"dog and a teapot"`` (the template supplies the first "a")."""
    return with_article(f"{a} and a {b}")


def check_pair_condition(condition: str) -> None:
    """A two-subject view's condition must be a scene or a neutral setting (one-line error)."""
    if condition not in PAIR_CONDITIONS:
        raise ValueError(f"condition {condition!r} is not a scene or neutral setting (two subjects: {PAIR_CONDITIONS})")


def pair_caption(
    condition: str, class_words: tuple[str, str], descriptors: tuple[str, str] = ("", ""), style: str | None = None
) -> str:
    """The caption of a two-subject view: the condition's template with both subjects, the style in front
    (:func:`jointdiff.data.toyworld.captions.caption` with the phrase of both)."""
    check_pair_condition(condition)
    a, b = (f"{d} {c}".strip() for d, c in zip(descriptors, class_words, strict=True))
    return caption(condition, pair_phrase(a, b), "", style)


def split_phrase(phrase: str) -> list[str]:
    """The subject phrases of a prompt's subject slot: ``"dog and a teapot"`` -> ``["dog", "teapot"]``."""
    return [p.strip() for p in JOIN.split(phrase.strip()) if p.strip()]


def sample_pair_poses(rng: np.random.Generator, a: SubjectSpec, b: SubjectSpec, h: int, w: int) -> tuple[Pose, Pose]:
    """Poses of A and B side by side (A left or right at random), redrawn until their silhouettes do not touch."""
    a_left = bool(rng.random() < 0.5)
    for _ in range(PLACEMENT_TRIES):
        poses = []
        for subject, (lo, hi) in zip((a, b), PAIR_CENTRES if a_left else PAIR_CENTRES[::-1], strict=True):
            pose = replace(sample_pose(rng), scale=float(rng.uniform(*PAIR_SCALE)), cx=float(rng.uniform(lo, hi)))
            poses.append(fit_pose(pose, subject))
        pa, pb = poses
        blank = Light(direction=(0.0, 0.0, 1.0), color=(1.0, 1.0, 1.0), intensity=1.0, ambient=0.5)  # any light
        _, alpha_a = draw_subject(a, pa, blank, h, w)
        _, alpha_b = draw_subject(b, pb, blank, h, w)
        if not ((alpha_a > 0.05) & (alpha_b > 0.05)).any():
            break
    return pa, pb


def render_pair_view(
    subjects: tuple[SubjectSpec, SubjectSpec],
    condition: str,
    rng: np.random.Generator,
    resolution: int = 64,
    style: str | None = None,
    descriptors: tuple[str, str] | None = None,
) -> PairView:
    """Render subjects A and B together under ``condition`` (a scene or neutral setting) at ``resolution`` px;
    all randomness comes from ``rng``. ``descriptors`` fixes the caption adjectives (default: sampled)."""
    check_pair_condition(condition)
    check_render(style, resolution)
    h = w = resolution
    a, b = subjects
    poses = sample_pair_poses(rng, a, b, h, w)
    light = sample_light(rng)
    drawn = [
        (*draw_subject(apply_condition(s, condition), p, light, h, w), p) for s, p in zip(subjects, poses, strict=True)
    ]
    order = sorted(range(2), key=lambda i: poses[i].base)  # far (higher ground contact) first
    img, visible = compose(
        condition,
        [drawn[i] for i in order],
        light,
        rng,
        h,
        w,
        (poses[0].cx + poses[1].cx) / 2,
        max(p.base for p in poses),
    )
    masks = np.zeros((2, h, w), bool)
    for i, v in zip(order, visible, strict=True):
        masks[i] = v > 0.5
    image = finish(img, style, rng)
    if descriptors is None:
        descriptors = (sample_descriptor(rng, a.descriptor), sample_descriptor(rng, b.descriptor))
    text = pair_caption(condition, (a.class_word, b.class_word), descriptors, style)
    return PairView(image=image, masks=masks, caption=text, condition=condition, style=style)


def sample_pair_condition(rng: np.random.Generator) -> str:
    """A setting for two subjects: a scene prompt (85%) or a neutral setting (15%)."""
    if rng.random() < 0.15:
        return NEUTRAL_PROMPTS[int(rng.integers(len(NEUTRAL_PROMPTS)))][0]
    return SCENE_PROMPTS[int(rng.integers(len(SCENE_PROMPTS)))][0]


def partner_index(index: int, split: str) -> int:
    """The index of subject B of pair set ``index`` of a split: another subject of the same range, from a hash."""
    n = len(SEED_RANGES[split])
    if n < 2:
        raise ValueError(f"the {split} range has fewer than two subjects")
    rng = np.random.default_rng([subject_seed(split, index), PAIR_SALT])
    return (index + 1 + int(rng.integers(n - 1))) % n


def pair_set_key(split: str, index: int) -> str:
    """The key of pair set ``index`` of a split."""
    return f"toypair-{split}-{index:09d}"


def view_plan(n: int, rng: np.random.Generator) -> list[str]:
    """What the ``n`` views of a pair set show: A alone and B alone, then both; two views: one alone, then both."""
    if not 2 <= n <= 16:
        raise ValueError(f"a pair set has 2 to 16 views, got {n}")
    if n == 2:
        return [str(rng.choice(["a", "b"])), "ab"]
    return ["a", "b"] + ["ab"] * (n - 2)


def make_pair_set(
    index: int,
    split: str = "train",
    resolution: int = 64,
    set_size: int | None = None,
    style_p: float = 0.0,
    subjects: tuple[SubjectSpec, SubjectSpec] | None = None,
) -> PairSet:
    """Pair set ``index`` of ``split``: subject A is the split's subject ``index``, subject B its partner
    (:func:`partner_index`), unless ``subjects`` are given; 2-4 views (or ``set_size``) as :func:`view_plan` says.
    Single-subject views keep the subject's identity (no recolouring or cube shape)."""
    if subjects is None:
        subjects = (
            make_subject(subject_seed(split, index)),
            make_subject(subject_seed(split, partner_index(index, split))),
        )
    a, b = subjects
    rng = np.random.default_rng([a.seed, b.seed, PAIR_SALT])
    n = int(rng.integers(2, 5)) if set_size is None else set_size
    shows = view_plan(n, rng)
    views: list[View | PairView] = []
    for k, what in enumerate(shows):
        vr = view_rng(a.seed, b.seed, PAIR_SALT, k)
        if what == "ab":
            views.append(
                render_pair_view(subjects, sample_pair_condition(vr), vr, resolution, sample_style(vr, style_p))
            )
        else:
            s = a if what == "a" else b
            condition = sample_condition(vr, s, keep_identity=True)
            views.append(render_view(s, condition, vr, resolution, style=sample_style(vr, style_p)))
    return PairSet(key=pair_set_key(split, index), subjects=subjects, views=views, shows=shows)


def short_caption(view: View | PairView, subjects: tuple[SubjectSpec, SubjectSpec], shows: str) -> str:
    """The caption with class words only ("a dog and a teapot on the beach"), as the short training captions."""
    if shows == "ab":
        return pair_caption(view.condition, (subjects[0].class_word, subjects[1].class_word), ("", ""), view.style)
    s = subjects[0] if shows == "a" else subjects[1]
    return caption(view.condition, s.class_word, "", view.style)
