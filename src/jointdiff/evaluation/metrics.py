"""Metrics as pure functions over L2-normalised features (JeDi sec. 4, supp. "Evaluation metric").

CLIP-T: cosine between a generated image and its prompt (identifier replaced by the class word).
CLIP-I / DINO (and MCLIP-I / MDINO on foreground-masked images): cosine between a generated image
and real images of the subject, averaged over the real images. Diversity: mean pairwise cosine
distance between images generated for one prompt.
"""

from __future__ import annotations

import re

import torch

METRICS = ("CLIP-T", "CLIP-I", "MCLIP-I", "DINO", "MDINO")  # the column order of the paper's Table 2


def _unit(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 2:
        raise ValueError(f"features must be (n, d), got shape {tuple(x.shape)}")
    return torch.nn.functional.normalize(x.double(), dim=-1)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarities ``(n, d), (m, d) -> (n, m)``."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"feature sizes differ: {a.shape[-1]} vs {b.shape[-1]}")
    return _unit(a) @ _unit(b).T


def text_alignment(image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
    """CLIP-T per image: cosine of image i with text i, ``(n, d), (n, d) -> (n,)``."""
    if image_feats.shape != text_feats.shape:
        raise ValueError(f"one text per image needed: {tuple(image_feats.shape)} vs {tuple(text_feats.shape)}")
    return (_unit(image_feats) * _unit(text_feats)).sum(-1)


def image_alignment(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """CLIP-I / DINO / MCLIP-I / MDINO per generated image: mean cosine to the real images, ``-> (n,)``."""
    if real.shape[0] == 0:
        raise ValueError("image alignment needs at least one real image")
    return cosine_matrix(generated, real).mean(dim=1)


def self_similarity(feats: torch.Tensor) -> float:
    """Mean cosine over distinct pairs of one set of images (the "real images" reference row)."""
    n = feats.shape[0]
    if n < 2:
        return float("nan")
    sim = cosine_matrix(feats, feats)
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def diversity(feats: torch.Tensor) -> float:
    """Mean pairwise cosine distance ``1 - cos`` over distinct pairs (images of one prompt); nan if n < 2."""
    return 1.0 - self_similarity(feats)


def clip_t_prompt(prompt: str, class_word: str, identifier: str | None = None) -> str:
    """The CLIP-T prompt: ``identifier`` (a whole word, e.g. "sks") removed so "a sks dog" -> "a dog"."""
    if identifier:
        prompt = re.sub(rf"\s*\b{re.escape(identifier)}\b\s*(?={re.escape(class_word)}\b)", " ", prompt)
        prompt = re.sub(r"\s+", " ", prompt).strip()
    return prompt
