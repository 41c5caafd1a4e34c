"""One small interface per stage of the S3 pipeline (JeDi sec. 3.1, Fig. 3, supplementary Algorithm 1).

Every model is replaceable: anything with the method below can stand in for the real adapters
(:mod:`jointdiff.data.s3.adapters_diffusers`, :mod:`jointdiff.data.s3.adapters_transformers`, :mod:`jointdiff.data.s3.llm`).
Batched stages take lists so GPU adapters can batch; the pure image helpers live here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import PIL.Image

Image = PIL.Image.Image


class LLMError(RuntimeError):
    """The prompt writer gave no usable answer after its retries; the item is skipped and counted."""


@runtime_checkable
class PromptWriter(Protocol):
    """GPT(l, object) and GPT(l, scene) of Algorithm 1 (lines 10 and 19); raises LLMError on failure."""

    def object_prompt(self, name: str, seed: int) -> str: ...

    def scene_prompt(self, name: str, seed: int) -> str: ...


class TextToImage(Protocol):
    """x_0 <- G(t_o): one collage per prompt and seed (Algorithm 1, line 11)."""

    def __call__(self, prompts: list[str], seeds: list[int]) -> list[Image]: ...


class Detector(Protocol):
    """Boxes (K, 4) as x0, y0, x1, y1 in pixels and scores (K,) of ``label`` in ``image``."""

    def __call__(self, image: Image, label: str) -> tuple[np.ndarray, np.ndarray]: ...


class Segmenter(Protocol):
    """Foreground masks (K, H, W) bool, one per box (Algorithm 1, line 12, with the detector)."""

    def __call__(self, image: Image, boxes: np.ndarray) -> np.ndarray: ...


class ImageEmbedder(Protocol):
    """CLIP image features (K, D), one row per image (Algorithm 1, line 13)."""

    def __call__(self, images: list[Image]) -> np.ndarray: ...


class Inpainter(Protocol):
    """x <- G_I(x, t_s): repaint where ``masks`` are white (255), keep where black (Algorithm 1, line 21)."""

    def __call__(
        self, images: list[Image], masks: list[Image], prompts: list[str], seeds: list[int]
    ) -> list[Image]: ...


class Stylizer(Protocol):
    """Edit each image by its instruction (InstructPix2Pix in sec. 3.1)."""

    def __call__(self, images: list[Image], instructions: list[str], seeds: list[int]) -> list[Image]: ...


class Captioner(Protocol):
    """One caption per image (BLIP-2 in the supplementary)."""

    def __call__(self, images: list[Image]) -> list[str]: ...


@dataclass
class Instance:
    """One object instance cut out of a collage: RGBA crop (alpha = mask), its box and score."""

    image: Image  # RGBA, cropped to the box; alpha 0 outside the segmentation mask
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in collage pixels
    score: float  # detector score


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (Ka, Kb) of boxes given as x0, y0, x1, y1."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (Ka, Kb, 2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (Ka, Kb, 2)
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    return inter / np.clip(area_a[:, None] + area_b[None, :] - inter, 1e-12, None)


def select_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    image_size: tuple[int, int],
    nms_iou: float = 0.5,
    min_fraction: float = 0.01,
    max_fraction: float = 0.8,
    max_boxes: int = 8,
) -> list[int]:
    """Indices of the boxes to keep: area within bounds, greedy non-maximum suppression, top ``max_boxes``.

    Duplicate detections of one instance would otherwise form a fake same-subject pair.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = image_size
    frac = (boxes[:, 2:] - boxes[:, :2]).clip(0).prod(-1) / float(w * h)
    order = [int(i) for i in np.argsort(-np.asarray(scores), kind="stable") if min_fraction <= frac[i] <= max_fraction]
    keep: list[int] = []
    for i in order:
        if len(keep) == max_boxes:
            break
        if not keep or box_iou(boxes[i : i + 1], boxes[keep]).max() <= nms_iou:
            keep.append(i)
    return keep


def cut_instance(image: Image, box: np.ndarray, mask: np.ndarray, score: float) -> Instance:
    """Crop ``box`` out of ``image`` with ``mask`` (H, W) as alpha (Algorithm 1, line 12)."""
    w, h = image.size
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    rgba = image.convert("RGB").crop((x0, y0, x1, y1)).convert("RGBA")
    alpha = (np.asarray(mask, dtype=bool)[y0:y1, x0:x1] * 255).astype(np.uint8)  # (h, w) crop of (H, W)
    rgba.putalpha(PIL.Image.fromarray(alpha, mode="L"))
    return Instance(image=rgba, box=(x0, y0, x1, y1), score=float(score))


def on_background(instance: Image, color: tuple[int, int, int] = (255, 255, 255)) -> Image:
    """An RGBA cut-out composited on a plain background (what CLIP sees of an instance)."""
    bg = PIL.Image.new("RGB", instance.size, color)
    bg.paste(instance, (0, 0), instance)
    return bg


def paste_on_canvas(
    instance: Image, size: int, rng: np.random.Generator, scale: tuple[float, float] = (0.3, 0.6)
) -> tuple[Image, Image, tuple[int, int, int, int]]:
    """Paste an RGBA instance at a random location of an empty ``size`` x ``size`` canvas (Algorithm 1, line 20).

    The instance is resized so its longer side is ``U(scale) * size``. Returns the RGB canvas, the
    inpainting mask (L: 255 = background to inpaint, 0 = object to keep) and the pasted box.
    """
    side = max(1, round(float(rng.uniform(*scale)) * size))
    w, h = instance.size
    f = side / max(w, h)
    w2, h2 = max(1, round(w * f)), max(1, round(h * f))
    obj = instance.resize((w2, h2), PIL.Image.Resampling.BICUBIC)
    x = int(rng.integers(0, size - w2 + 1))
    y = int(rng.integers(0, size - h2 + 1))
    canvas = PIL.Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(obj, (x, y), obj)
    mask = PIL.Image.new("L", (size, size), 255)
    keep = PIL.Image.fromarray(((np.asarray(obj.getchannel("A")) > 127) * 255).astype(np.uint8), mode="L")
    mask.paste(0, (x, y), keep)  # black where the object is
    return canvas, mask, (x, y, x + w2, y + h2)
