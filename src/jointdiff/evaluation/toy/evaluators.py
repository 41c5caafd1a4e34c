"""The toy evaluators behind the harness interfaces, and their quality on held-out subjects.

- ``ToyDualEncoder`` (``ImageEncoder`` + ``encode_texts``): the CLIP role (CLIP-T, CLIP-I, MCLIP-I).
- ``ToyImageEncoder`` around the identity network: the DINO role (DINO, MDINO); around the part-aware
  identity network: PartID (issue 26), the identity measure that a blob in the right colours cannot earn.
- ``ToySegmenter``: masks of generated images (real renders come with exact masks).

Factories follow the harness signatures ``(source: str | None, device: str)``; ``source`` is a
weights file or a directory holding ``dual.safetensors`` / ``identity.safetensors`` /
``segmenter.safetensors`` (None: the weights shipped in ``jointdiff/weights/toyworld``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from jointdiff.common.paths import TOY_EVALUATORS
from jointdiff.evaluation.features import batched
from jointdiff.evaluation.toy.models import load_model

WEIGHTS_DIR = TOY_EVALUATORS  # the shipped weights


def weights_path(source: str | Path | None, kind: str) -> Path:
    """The weights file of evaluator ``kind`` for a file or directory ``source`` (None: the shipped weights)."""
    p = Path(source) if source else WEIGHTS_DIR
    return p / f"{kind}.safetensors" if p.is_dir() or not p.suffix else p


def to_tensor(images: Sequence[PIL.Image.Image], resolution: int) -> torch.Tensor:
    """PIL images -> ``(n, 3, R, R)`` float in [0, 1]: centre square crop, resize to ``R`` (bilinear, antialiased)."""
    out = []
    for image in images:
        image = image.convert("RGB")
        w, h = image.size
        s = min(w, h)
        if w != h:
            image = image.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        if s != resolution:
            image = image.resize((resolution, resolution), PIL.Image.Resampling.BILINEAR, reducing_gap=None)
        out.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))  # (R, R, 3) -> (3, R, R)
    if not out:
        return torch.zeros(0, 3, resolution, resolution)
    return torch.stack(out).float() / 255.0


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


class ToyImageEncoder:
    """A frozen toy image encoder: PIL images -> ``(n, d)`` L2-normalised features (harness ``ImageEncoder``)."""

    def __init__(self, net: torch.nn.Module, name: str, batch_size: int = 256) -> None:
        self.net = net
        self.name = name  # identifies the weights in feature caches
        self.batch_size = batch_size
        self.resolution = int(net.cfg.resolution)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def encode_images(self, images: Sequence[PIL.Image.Image]) -> torch.Tensor:
        """(n, d) L2-normalised embeddings."""
        encode = lambda batch: self.net.image(to_tensor(batch, self.resolution).to(self.device)).float()  # noqa: E731
        return batched(images, self.batch_size, encode, self.net.cfg.embed_dim)


class ToyDualEncoder(ToyImageEncoder):
    """The toy CLIP: image and caption embeddings in one space (harness ``DualEncoder``)."""

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, d) L2-normalised caption embeddings (unknown words, e.g. an identifier, map to one token)."""
        encode = lambda batch: self.net.text(self.net.tokenize(list(batch)).to(self.device)).float()  # noqa: E731
        return batched(texts, self.batch_size, encode, self.net.cfg.embed_dim)


class ToySegmenter:
    """Foreground masks from the toy U-Net: ``image -> (H, W) bool`` at the image's own size."""

    def __init__(self, net: torch.nn.Module, name: str, threshold: float = 0.0) -> None:
        self.net = net
        self.name = name
        self.threshold = threshold  # on the logits (0 = probability 0.5)
        self.resolution = int(net.cfg.resolution)

    @torch.no_grad()
    def batch(self, images: Sequence[PIL.Image.Image]) -> list[np.ndarray]:
        """Masks of several images, one network call."""
        x = to_tensor(images, self.resolution).to(next(self.net.parameters()).device)
        logits = self.net(x).float().cpu()  # (n, R, R)
        out = []
        for im, lg in zip(images, logits, strict=True):
            w, h = im.size
            s = min(w, h)
            full = F.interpolate(lg[None, None], size=(s, s), mode="bilinear", align_corners=False)[0, 0]
            mask = np.zeros((h, w), dtype=bool)
            top, left = (h - s) // 2, (w - s) // 2
            mask[top : top + s, left : left + s] = (full > self.threshold).numpy()
            out.append(mask)
        return out

    def __call__(self, image: PIL.Image.Image) -> np.ndarray:
        return self.batch([image])[0]


def _load(source: str | None, kind: str, device: str) -> tuple[torch.nn.Module, str]:
    path = weights_path(source, kind)
    if not path.is_file():
        hint = "train them with `jointdiff toyworld train-evaluators`" if source else "the shipped weights are missing"
        raise OSError(f"no toy {kind} weights at {path} ({hint})")
    return load_model(path, device), f"toy-{kind}:{_digest(path)}"


def load_toy_dual(source: str | None = None, device: str = "cpu") -> ToyDualEncoder:
    """The toy CLIP (harness backbone factory)."""
    net, name = _load(source, "dual", device)
    return ToyDualEncoder(net, name)


def load_toy_identity(source: str | None = None, device: str = "cpu") -> ToyImageEncoder:
    """The toy DINO (harness backbone factory)."""
    net, name = _load(source, "identity", device)
    return ToyImageEncoder(net, name)


def load_toy_parts(source: str | None = None, device: str = "cpu") -> ToyImageEncoder:
    """The part-aware toy identity, PartID (harness backbone factory; issue 26): the toy DINO fine-tuned with
    hard negatives that keep a subject's colours and change its parts (``training/part_identity.py``)."""
    net, name = _load(source, "parts", device)
    return ToyImageEncoder(net, name)


def load_toy_segmenter(source: str | None = None, device: str = "cpu") -> ToySegmenter:
    """The toy segmenter (harness segmenter factory)."""
    net, name = _load(source, "segmenter", device)
    return ToySegmenter(net, name)


def retrieval_top1(query: torch.Tensor, gallery: torch.Tensor) -> float:
    """Fraction of queries whose most similar gallery row has the same index (rows = subjects)."""
    if len(query) == 0:
        return float("nan")
    return float(((query @ gallery.T).argmax(1) == torch.arange(len(query))).float().mean())


def iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    union = np.logical_or(pred, true).sum()
    return float(np.logical_and(pred, true).sum() / union) if union else 1.0
