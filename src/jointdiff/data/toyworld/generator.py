"""Rendering views and same-subject sets (the toy S3 dataset, JeDi sec. 3.1 and Fig. 3 in miniature).

A *view* is one image of a subject under a condition (scene, attribute or outfit) with its
foreground mask and caption; a *set* is 2-4 views of one subject, each with its own condition,
pose, lighting and (with probability 0.5) style. Everything is a pure function of integer
seeds: ``make_set(i, split)`` gives the same pixels on any machine and in any worker.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import PIL.Image

from jointdiff.data.toyworld.captions import (
    ATTRIBUTE_PROMPTS,
    KIND,
    OUTFIT_PROMPTS,
    SCENE_PROMPTS,
    STYLES,
    caption,
    sample_descriptor,
)
from jointdiff.data.toyworld.edits import apply_condition
from jointdiff.data.toyworld.raster import F32
from jointdiff.data.toyworld.render import (
    Light,
    Pose,
    cast_shadow,
    draw_subject,
    fit_pose,
    reflect,
    sample_light,
    sample_pose,
)
from jointdiff.data.toyworld.scenes import NEUTRAL_SCENES, SCENES
from jointdiff.data.toyworld.style import stylize
from jointdiff.data.toyworld.subjects import SubjectSpec, make_subject, subject_seed

if TYPE_CHECKING:
    from jointdiff.data.formats import ImageSet

SET_SALT = zlib.crc32(b"set")
VIEW_SALT = zlib.crc32(b"view")


@dataclass
class View:
    """One render: RGB pixels, foreground mask, caption and what produced them."""

    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool, True = subject (visible part)
    caption: str
    condition: str  # scene, attribute, outfit or neutral key (captions.TEMPLATES)
    scene: str  # the backdrop actually painted (a neutral scene for attributes and outfits)
    style: str | None = None

    def pil(self) -> PIL.Image.Image:
        """The image as a PIL RGB image."""
        return PIL.Image.fromarray(self.image, "RGB")


@dataclass
class ToySet:
    """A same-subject set of views (one JeDi training sample)."""

    key: str
    subject: SubjectSpec
    views: list[View] = field(default_factory=list)

    def image_set(self) -> ImageSet:
        """The set in the training format of ``jointdiff.data.formats`` (PIL images + captions)."""
        from jointdiff.data.formats import ImageSet

        return ImageSet(images=[v.pil() for v in self.views], captions=[v.caption for v in self.views], key=self.key)


def render_view(
    subject: SubjectSpec,
    condition: str,
    rng: np.random.Generator,
    resolution: int = 64,
    style: str | None = None,
    descriptor: str | None = None,
    pose: Pose | None = None,
) -> View:
    """Render ``subject`` under ``condition`` at ``resolution`` px; all randomness comes from ``rng``.

    ``descriptor`` fixes the caption adjectives (default: sampled as a captioner would vary them);
    ``pose`` fixes the pose (default: sampled).
    """
    if condition not in KIND:
        raise ValueError(f"unknown condition {condition!r}")
    check_render(style, resolution)
    h = w = resolution
    # 1. The subject as the prompt asks (recoloured, cube shaped, dressed ...).
    edited = apply_condition(subject, condition)
    scene = condition if KIND[condition] in ("scene", "neutral") else str(rng.choice(NEUTRAL_SCENES))
    # 2. Pose and light, then the subject alone (premultiplied RGB and coverage).
    pose = pose or fit_pose(sample_pose(rng), subject)
    light = sample_light(rng)
    rgb, alpha = draw_subject(edited, pose, light, h, w)
    # 3. The backdrop, shadow or reflection, composite, then what lies in front of the subject.
    img, (visible,) = compose(scene, [(rgb, alpha, pose)], light, rng, h, w, pose.cx, pose.base)
    # 4. Exposure, the optional style, quantisation.
    image = finish(img, style, rng)
    desc = sample_descriptor(rng, subject.descriptor) if descriptor is None else descriptor
    return View(
        image=image,
        mask=visible > 0.5,
        caption=caption(condition, subject.class_word, desc, style),
        condition=condition,
        scene=scene,
        style=style,
    )


def check_render(style: str | None, resolution: int) -> None:
    """The style and resolution of a render, checked (one-line errors)."""
    if style is not None and style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of: {', '.join(STYLES)}")
    if not 8 <= resolution <= 1024:
        raise ValueError(f"resolution must be in [8, 1024] px, got {resolution}")


def compose(
    scene: str,
    layers: list[tuple[np.ndarray, np.ndarray, Pose]],
    light: Light,
    rng: np.random.Generator,
    h: int,
    w: int,
    cx: float,
    base: float,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The backdrop of ``scene`` (painted around ``cx``, ``base``), each layer's shadow or reflection, the layers
    (premultiplied RGB, coverage, pose) composited in the order given (far to near), then the scene's overlay.
    Returns the float image and each layer's visible coverage (what nearer layers and the overlay leave)."""
    backdrop = SCENES[scene](rng, h, w, cx, base)
    bg = backdrop.image
    for rgb, alpha, pose in layers:
        if backdrop.surface == "ground":
            bg = cast_shadow(bg, alpha, pose, light)
        elif backdrop.surface == "mirror":
            bg = reflect(bg, rgb, alpha, pose.base, 0.6)
        else:
            opacity = 0.3 if backdrop.surface == "water" else 0.08
            bg = reflect(bg, rgb, alpha, pose.base - 0.035, opacity, ripple=1.0)
    img = bg
    visible: list[np.ndarray] = []
    for rgb, alpha, _ in layers:
        img = img * (1 - alpha[..., None]) + rgb
        visible = [v * (1 - alpha) for v in visible] + [alpha]
    if backdrop.overlay is not None:
        o_rgb, o_a = backdrop.overlay
        img = img * (1 - o_a[..., None]) + o_rgb * o_a[..., None]
        visible = [v * (1 - o_a) for v in visible]
    return img, visible


def finish(img: np.ndarray, style: str | None, rng: np.random.Generator) -> np.ndarray:
    """Exposure (x 0.9-1.1), the optional style, quantisation to uint8."""
    img = img * F32(rng.uniform(0.9, 1.1))
    if style is not None:
        img = stylize(np.clip(img, 0, 1).astype(F32), style, rng)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


IDENTITY_CHANGING = ("red", "purple", "cube")  # attribute edits that change colours or shape


def sample_condition(rng: np.random.Generator, subject: SubjectSpec, keep_identity: bool = False) -> str:
    """A training condition: scene prompts 70%, neutral 15%, attributes 10%, outfits 25% of live subjects' views.

    ``keep_identity``: an identity-changing attribute (recolouring, cube shape) is redrawn, so
    every view shows the subject's own colours and shape (what the reference pathway learns from).
    """
    while True:
        condition = _draw_condition(rng, subject)
        if not keep_identity or condition not in IDENTITY_CHANGING:
            return condition


def _draw_condition(rng: np.random.Generator, subject: SubjectSpec) -> str:
    u = rng.random()
    if subject.live and u < 0.25:
        return OUTFIT_PROMPTS[int(rng.integers(len(OUTFIT_PROMPTS)))][0]
    u = rng.random()
    if u < 0.1:
        return ATTRIBUTE_PROMPTS[int(rng.integers(len(ATTRIBUTE_PROMPTS)))][0]
    if u < 0.25:
        return NEUTRAL_SCENES[int(rng.integers(len(NEUTRAL_SCENES)))]
    return SCENE_PROMPTS[int(rng.integers(len(SCENE_PROMPTS)))][0]


def sample_style(rng: np.random.Generator, p: float = 0.5) -> str | None:
    """A random style with probability ``p`` (JeDi sec. 3.1: 0.5), else None."""
    return str(rng.choice(list(STYLES))) if rng.random() < p else None


def view_rng(seed: int, *stream: int) -> np.random.Generator:
    """The generator of one view: a pure function of the subject seed and a stream of integers."""
    return np.random.default_rng([int(seed), VIEW_SALT, *(int(s) for s in stream)])


def set_key(split: str, index: int) -> str:
    """The key of set ``index`` of a split (file name stem in the paper format)."""
    return f"toy-{split}-{index:09d}"


def make_set(
    index: int,
    split: str = "train",
    resolution: int = 64,
    set_size: int | None = None,
    style_p: float = 0.5,
    keep_identity: bool = False,
) -> ToySet:
    """Set ``index`` of ``split``: subject seed ``SEED_RANGES[split].start + index``, 2-4 views (or ``set_size``).

    ``keep_identity``: no recolouring or cube-shape views (see :func:`sample_condition`).
    """
    seed = subject_seed(split, index)
    subject = make_subject(seed)
    rng = np.random.default_rng([seed, SET_SALT])
    n = int(rng.integers(2, 5)) if set_size is None else set_size
    if not 1 <= n <= 16:
        raise ValueError(f"set_size must be in [1, 16], got {n}")
    views = []
    for k in range(n):
        vr = view_rng(seed, k)
        condition = sample_condition(vr, subject, keep_identity)
        views.append(render_view(subject, condition, vr, resolution, style=sample_style(vr, style_p)))
    return ToySet(key=set_key(split, index), subject=subject, views=views)
