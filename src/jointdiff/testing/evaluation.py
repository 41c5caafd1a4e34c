"""Tiny randomly initialised evaluation backbones (real transformers classes) and hand-made encoders
for tests and offline smoke runs; no weights are downloaded."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from jointdiff.common.seeding import seeded
from jointdiff.common.tiny import char_tokenizer


def _text(tokenizer: object) -> dict:
    """The tiny CLIP text tower of the backbones below: 2 layers of width 32, 77 positions."""
    return {
        "vocab_size": len(tokenizer),  # type: ignore[arg-type]
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }


def _vision(image_size: int) -> dict:
    """The tiny ViT of the CLIP-like backbones below: 2 layers of width 32, patches of 8 px."""
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": 8,
    }


def save_tiny_clip(path: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """A 2-layer CLIPModel with a character tokenizer, saved as a loadable directory."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = char_tokenizer(max_length=77)
    with seeded(seed):
        model = CLIPModel(
            CLIPConfig(text_config=_text(tokenizer), vision_config=_vision(image_size), projection_dim=16)
        )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


def save_tiny_vit(path: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """A 2-layer ViTModel (DINO's architecture), saved as a loadable directory."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=24,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=8,
    )
    with seeded(seed):
        model = ViTModel(config, add_pooling_layer=False)
    model.save_pretrained(path)
    return Path(path)


def save_tiny_clipseg(path: str | Path, seed: int = 0) -> Path:
    """A 1-layer CLIPSegForImageSegmentation with a character tokenizer, saved as a loadable directory."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    tokenizer = char_tokenizer(max_length=77)
    config = CLIPSegConfig(
        text_config=_text(tokenizer),
        vision_config=_vision(32),
        projection_dim=16,
        reduce_dim=8,
        extract_layers=[1],
        decoder_num_attention_heads=2,
        decoder_intermediate_size=16,
    )
    with seeded(seed):
        model = CLIPSegForImageSegmentation(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


class HandMadeEncoder:
    """A deterministic image encoder without weights: :meth:`feature` per image, L2-normalised; counts its calls."""

    dim = 0  # feature size

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0  # images encoded so far (tests count recomputation)

    def feature(self, image: PIL.Image.Image) -> torch.Tensor:
        raise NotImplementedError

    def encode_images(self, images: Sequence[PIL.Image.Image]) -> torch.Tensor:
        """(n, dim) features."""
        self.calls += len(images)
        out = torch.stack([self.feature(im) for im in images]) if images else torch.zeros(0, self.dim)
        return torch.nn.functional.normalize(out, dim=-1)


class HistogramEncoder(HandMadeEncoder):
    """L2-normalised RGB histograms (bins per channel) of a 64 x 64 thumbnail. Similar colours -> high
    cosine; fast enough for protocol tests."""

    def __init__(self, bins: int = 8, name: str = "histogram") -> None:
        super().__init__(name)
        self.bins, self.dim = bins, 3 * bins

    def feature(self, image: PIL.Image.Image) -> torch.Tensor:
        x = np.asarray(image.convert("RGB").resize((64, 64), PIL.Image.Resampling.BILINEAR))  # (64, 64, 3)
        h = [np.histogram(x[..., c], bins=self.bins, range=(0, 256))[0] for c in range(3)]
        return torch.tensor(np.concatenate(h), dtype=torch.float32)


class HistogramDualEncoder(HistogramEncoder):
    """``HistogramEncoder`` with a text tower: each word hashed into one of the feature bins."""

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, 3 * bins) features."""
        out = torch.zeros(len(texts), 3 * self.bins)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % (3 * self.bins)] += 1.0
        return torch.nn.functional.normalize(out, dim=-1)


def write_fake_dreambooth(root: str | Path, images_per_subject: int = 3, size: int = 48, seed: int = 0) -> Path:
    """A DreamBooth-layout dataset in miniature: a dog (live) and a red backpack (object), flat colour
    images with a lighter square "subject", and a prompts_and_classes.txt with 3 prompts per list."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    spec = [("dog", "dog", (120, 80, 40)), ("backpack", "backpack", (200, 30, 30))]
    for name, _, colour in spec:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(images_per_subject):
            x = np.full((size, size, 3), rng.integers(0, 256, 3), dtype=np.uint8)  # random background
            lo = size // 4 + i
            x[lo : lo + size // 2, lo - i : lo - i + size // 2] = colour  # the subject
            PIL.Image.fromarray(x).save(root / name / f"{i:02d}.jpg", quality=95)
    prompts = ["in the jungle", "in the snow", "on the beach"]
    lines = [
        "Classes",
        "",
        "subject_name,class",
        *(f"{n},{c}" for n, c, _ in spec),
        "",
        "Prompts",
        "",
        "Object Prompts",
        "",
    ]
    lines += ["prompt_list = ["] + [f"'a {{0}} {{1}} {p}'.format(unique_token, class_token)," for p in prompts] + ["]"]
    lines += ["", "Live Subject Prompts", "", "prompt_list = ["]
    lines += [f"'a {{0}} {{1}} {p} wearing a red hat'.format(unique_token, class_token)," for p in prompts] + ["]"]
    (root / "prompts_and_classes.txt").write_text("\n".join(lines) + "\n")
    return root


class ThumbnailEncoder(HandMadeEncoder):
    """An ``n x n`` box-filtered thumbnail minus its mean, L2-normalised. Photos of one subject correlate
    (same layout); noise is near-orthogonal to them."""

    def __init__(self, n: int = 8, name: str = "thumbnail") -> None:
        super().__init__(name)
        self.n, self.dim = n, 3 * n * n

    def feature(self, image: PIL.Image.Image) -> torch.Tensor:
        x = np.asarray(image.convert("RGB").resize((self.n, self.n), PIL.Image.Resampling.BOX), dtype=np.float32)
        return torch.from_numpy((x - x.mean()).ravel())  # (n, n, 3) -> (3 n n,)


def write_cache_entries(directory: str, worker: int, rounds: int, start: Any = None) -> None:
    """One concurrent writer of the evaluation caches in ``directory``: ``rounds`` times, a feature of its own into
    the feature file of subject "subject" and an image of its own over ``same.png`` (a process's target).
    ``start``: a ``multiprocessing`` barrier the writers pass together, so their writes overlap."""
    import torch

    from jointdiff.evaluation.cache import FeatureCache, save_image

    if start is not None:
        start.wait()
    for i in range(rounds):
        cache = FeatureCache(Path(directory), "subject", {"clip": "tiny"})
        cache.put(f"w{worker}/{i}", torch.full((4,), float(i)))
        cache.save()
        save_image(PIL.Image.new("RGB", (8, 8), (worker * 100, i, 0)), Path(directory) / "same.png")
