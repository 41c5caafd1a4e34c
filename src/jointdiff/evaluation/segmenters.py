"""Foreground segmenters for the masked metrics MCLIP-I and MDINO (JeDi sec. 4).

A segmenter is any callable ``image -> (H, W) bool mask`` (True = subject). A segmenter that
can use the subject (e.g. a text-prompted model given the class word) may also define
``for_subject(subject) -> Segmenter``; the scorer calls it when present.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import PIL.Image
import torch

if TYPE_CHECKING:
    from jointdiff.evaluation.benchmarks import Subject

Segmenter = Callable[[PIL.Image.Image], np.ndarray]  # (H, W) bool foreground mask, True = subject
CLIPSEG_DEFAULT = "CIDAS/clipseg-rd64-refined"
SEGMENTER_OPTION = "--segmenter-model"  # the command-line option naming a segmenter's source


def check_mask(mask: np.ndarray, image: PIL.Image.Image) -> np.ndarray:
    """Validate a foreground mask against its image: (H, W) bool of the image's size."""
    mask = np.asarray(mask)
    if mask.shape != (image.height, image.width):
        raise ValueError(f"mask shape {mask.shape} does not match image size (H, W) = {(image.height, image.width)}")
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be bool (True = subject), got {mask.dtype}")
    return mask


def cutout(image: PIL.Image.Image, mask: np.ndarray, fill: tuple[int, int, int] = (0, 0, 0)) -> PIL.Image.Image:
    """The foreground-masked image of MCLIP-I / MDINO (JeDi sec. 4): background set to ``fill``, then
    cropped to the smallest square around the mask (clipped to the image) so centre crops keep the subject.
    An empty mask gives an all-``fill`` image."""
    mask = check_mask(mask, image)
    rgb = np.asarray(image.convert("RGB")).copy()  # (H, W, 3) uint8
    rgb[~mask] = np.asarray(fill, dtype=np.uint8)
    out = PIL.Image.fromarray(rgb)
    if not mask.any():
        return out
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = min(max(bottom - top, right - left), image.height, image.width)
    cy, cx = (top + bottom) // 2, (left + right) // 2
    top = int(np.clip(cy - side // 2, 0, image.height - side))
    left = int(np.clip(cx - side // 2, 0, image.width - side))
    return out.crop((left, top, left + side, top + side))


def for_subject(segmenter: Segmenter, subject: Subject) -> Segmenter:
    """The segmenter specialised to a subject when it supports that (``for_subject``), else itself."""
    specialise = getattr(segmenter, "for_subject", None)
    return specialise(subject) if callable(specialise) else segmenter


def _resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(h, w) -> (H, W) bilinear."""
    return torch.nn.functional.interpolate(logits[None, None].float(), size=size, mode="bilinear")[0, 0]


class ClipSegSegmenter:
    """Text-prompted foreground masks from CLIPSeg, prompted with the subject's class word."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        prompt: str = "object",
        threshold: float = 0.5,
        name: str = "clipseg",
    ) -> None:
        self.name = name  # identifies the model in feature caches (the same for every prompt)
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.threshold = threshold
        self.size = int(model.config.vision_config.image_size)  # 352 for clipseg-rd64-refined

    def for_subject(self, subject: Subject) -> ClipSegSegmenter:
        """The same model prompted with ``subject.class_word``."""
        return ClipSegSegmenter(self.model, self.tokenizer, subject.class_word, self.threshold, self.name)

    @torch.no_grad()
    def __call__(self, image: PIL.Image.Image) -> np.ndarray:
        """(H, W) bool: sigmoid(logits) > threshold, logits resized to the image."""
        from jointdiff.evaluation.features import IMAGENET_MEAN, IMAGENET_STD

        x = image.convert("RGB").resize((self.size, self.size), PIL.Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(x).copy()).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, S, S)
        x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        param = next(self.model.parameters())
        tok = self.tokenizer([self.prompt], padding=True, return_tensors="pt").to(param.device)
        logits = self.model(
            input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=x.to(param)
        ).logits  # (1, h, w) or (h, w)
        logits = logits.reshape(logits.shape[-2:])  # (h, w)
        prob = torch.sigmoid(_resize_logits(logits.cpu(), (image.height, image.width)))
        return (prob > self.threshold).numpy()


class SemanticSegmenter:
    """Foreground = every pixel not labelled background by a transformers semantic-segmentation model."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        background_labels: Sequence[str] = ("background",),
        name: str = "semantic",
    ) -> None:
        self.name = name
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        names = {i: str(n).lower() for i, n in model.config.id2label.items()}
        wanted = {b.lower() for b in background_labels}
        self.background = sorted(i for i, n in names.items() if n in wanted)
        if not self.background:
            raise ValueError(
                f"the segmentation model has no label in {sorted(wanted)} (its labels: {sorted(names.values())[:8]}...)"
            )

    @torch.no_grad()
    def __call__(self, image: PIL.Image.Image) -> np.ndarray:
        """(H, W) bool: argmax label not in the background labels."""
        param = next(self.model.parameters())
        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt")
        logits = self.model(pixel_values=inputs["pixel_values"].to(param)).logits[0]  # (labels, h, w)
        logits = torch.nn.functional.interpolate(
            logits[None].float().cpu(), size=(image.height, image.width), mode="bilinear"
        )
        labels = logits[0].argmax(0)  # (H, W)
        return ~np.isin(labels.numpy(), self.background)


class MaskFileSegmenter:
    """Precomputed masks (white = subject): an image read from ``.../a/b/c.jpg`` takes the mask
    ``mask_dir/a/b/c.png``, the longest such path suffix that exists (e.g. ``mask_dir/<subject>/00.png``)."""

    def __init__(self, mask_dir: str | os.PathLike, max_depth: int = 4) -> None:
        self.mask_dir = Path(mask_dir)
        self.max_depth = max_depth  # how many trailing path components of the image to try
        self.name = f"masks:{self.mask_dir}"
        if not self.mask_dir.is_dir():
            raise FileNotFoundError(f"mask directory {str(self.mask_dir)!r} does not exist")

    def mask_path(self, image: PIL.Image.Image) -> Path:
        """The mask file of ``image`` (FileNotFoundError naming the shortest candidate if none exists)."""
        filename = getattr(image, "filename", "")
        if not filename:
            raise ValueError("mask files need images opened from files (image.filename is empty)")
        parts = Path(filename).with_suffix(".png").parts
        candidates = [self.mask_dir.joinpath(*parts[-k:]) for k in range(min(self.max_depth, len(parts)), 0, -1)]
        for path in candidates:
            if path.is_file():
                return path
        raise FileNotFoundError(f"no mask file for image {filename!r} (expected e.g. {str(candidates[-2:][0])!r})")

    def __call__(self, image: PIL.Image.Image) -> np.ndarray:
        """(H, W) bool read from the mask file (gray > 127)."""
        return check_mask(read_mask(self.mask_path(image)), image)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask image file -> (H, W) bool (gray > 127 = subject)."""
    with PIL.Image.open(path) as m:
        return np.asarray(m.convert("L")) > 127


def load_clipseg(source: str | None = None, device: str = "cpu") -> ClipSegSegmenter:
    """CLIPSeg from a Hub id or local directory (default ``CIDAS/clipseg-rd64-refined``)."""
    from transformers import AutoTokenizer, CLIPSegForImageSegmentation

    from jointdiff.evaluation.features import load_with_processor

    source = source or CLIPSEG_DEFAULT
    kinds = ("CLIPSeg", "CLIPSeg tokenizer")
    model, tokenizer = load_with_processor(
        CLIPSegForImageSegmentation, AutoTokenizer, source, kinds, CLIPSEG_DEFAULT, SEGMENTER_OPTION
    )
    return ClipSegSegmenter(model.to(device), tokenizer, name=f"clipseg:{source}")


def load_semantic(source: str | None = None, device: str = "cpu") -> SemanticSegmenter:
    """A transformers semantic-segmentation model (with a "background" label) and its image processor."""
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    from jointdiff.evaluation.features import load_with_processor

    if not source:
        raise ValueError("--segmenter semantic needs --segmenter-model (a Hub id or directory)")
    kinds = ("segmentation", "segmentation processor")
    model, processor = load_with_processor(
        AutoModelForSemanticSegmentation, AutoImageProcessor, source, kinds, source, SEGMENTER_OPTION
    )
    return SemanticSegmenter(model.to(device), processor, name=f"semantic:{source}")


def load_mask_files(source: str | None = None, device: str = "cpu") -> MaskFileSegmenter:
    """Precomputed mask files under ``source`` (see ``MaskFileSegmenter``)."""
    if not source:
        raise ValueError("--segmenter masks needs --segmenter-model MASK_DIR")
    return MaskFileSegmenter(source)
