"""Frozen feature extractors with their own preprocessing (JeDi sec. 4: CLIP ViT-B/32, DINO ViT-S/16).

An image encoder maps PIL images to L2-normalised features ``(n, d)``; a dual encoder also maps
texts. The CLI finds backbone factories by name in ``registry.BACKBONES``; a
factory takes ``(source: str | None, device: str)`` (a Hub id or a local directory; None for its
default) and returns the encoder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import PIL.Image
import torch


@runtime_checkable
class ImageEncoder(Protocol):
    """Frozen image feature extractor: PIL images -> (n, d) L2-normalised features."""

    def encode_images(self, images: Sequence[PIL.Image.Image]) -> torch.Tensor: ...


@runtime_checkable
class DualEncoder(ImageEncoder, Protocol):
    """An image encoder with a text tower in the same embedding space (CLIP-like)."""

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor: ...


CLIP_DEFAULT = "openai/clip-vit-base-patch32"
DINO_DEFAULT = "facebook/dino-vits16"
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def preprocess(
    images: Sequence[PIL.Image.Image],
    resize: int,
    crop: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Shorter side to ``resize`` (bicubic), centre crop ``crop``, normalise: (n, 3, crop, crop)."""
    if resize < crop:
        raise ValueError(f"resize ({resize}) must be >= crop ({crop})")
    out = []
    for image in images:
        image = image.convert("RGB")
        w, h = image.size
        short, long = min(w, h), max(w, h)
        long2 = int(resize * long / short)  # truncation, as transformers' shortest-edge resize
        w2, h2 = (resize, long2) if w <= h else (long2, resize)
        image = image.resize((w2, h2), PIL.Image.Resampling.BICUBIC)
        left, top = (w2 - crop) // 2, (h2 - crop) // 2
        image = image.crop((left, top, left + crop, top + crop))
        x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(crop, crop, 3)
        out.append(x.permute(2, 0, 1))  # (H, W, 3) -> (3, H, W)
    x = torch.stack(out).float() / 255.0  # (n, 3, crop, crop) in [0, 1]
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def batched(
    items: Sequence[Any], batch_size: int, encode: Callable[[Sequence[Any]], torch.Tensor], dim: int
) -> torch.Tensor:
    """``encode`` over ``items`` in batches of ``batch_size``, concatenated on the CPU: ``(n, dim)``, ``(0, dim)`` for none."""
    feats = [encode(items[i : i + batch_size]).cpu() for i in range(0, len(items), batch_size)]
    return torch.cat(feats) if feats else torch.zeros(0, dim)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


class FrozenEncoder(torch.nn.Module):
    """A pretrained transformers model, frozen, encoding in batches; ``name`` identifies it in feature caches."""

    def __init__(self, model: torch.nn.Module, name: str, batch_size: int = 32) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


class CLIPEncoder(FrozenEncoder):
    """Frozen CLIP image and text towers (JeDi sec. 4: CLIP-T, CLIP-I, MCLIP-I)."""

    def __init__(self, model: torch.nn.Module, tokenizer: object, name: str = "clip", batch_size: int = 32) -> None:
        super().__init__(model, name, batch_size)
        self.tokenizer = tokenizer
        self.crop = int(model.config.vision_config.image_size)  # 224 for ViT-B/32
        self.max_length = int(model.config.text_config.max_position_embeddings)  # 77

    @torch.no_grad()
    def encode_images(self, images: Sequence[PIL.Image.Image]) -> torch.Tensor:
        """(n, d) L2-normalised projected image embeddings; resize = crop = model size, CLIP mean/std."""

        def encode(batch: Sequence[PIL.Image.Image]) -> torch.Tensor:
            x = preprocess(batch, self.crop, self.crop, CLIP_MEAN, CLIP_STD)
            pooled = self.model.vision_model(pixel_values=x.to(self.device, self.dtype)).pooler_output  # (b, hidden)
            return _normalise(self.model.visual_projection(pooled))

        return batched(images, self.batch_size, encode, self.model.config.projection_dim)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, d) L2-normalised projected text embeddings (truncated to the model's context)."""

        def encode(batch: Sequence[str]) -> torch.Tensor:
            tok = self.tokenizer(
                list(batch), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            out = self.model.text_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
            return _normalise(self.model.text_projection(out.pooler_output))

        return batched(texts, self.batch_size, encode, self.model.config.projection_dim)


class DINOEncoder(FrozenEncoder):
    """Frozen DINO ViT, CLS token of the last layer (JeDi sec. 4: DINO, MDINO)."""

    def __init__(self, model: torch.nn.Module, name: str = "dino", batch_size: int = 32) -> None:
        super().__init__(model, name, batch_size)
        self.crop = int(model.config.image_size)  # 224 for ViT-S/16
        self.resize = round(self.crop * 256 / 224)  # 256: the usual ImageNet evaluation ratio

    @torch.no_grad()
    def encode_images(self, images: Sequence[PIL.Image.Image]) -> torch.Tensor:
        """(n, d) L2-normalised CLS embeddings; resize 256 bicubic, centre crop 224, ImageNet mean/std."""

        def encode(batch: Sequence[PIL.Image.Image]) -> torch.Tensor:
            x = preprocess(batch, self.resize, self.crop, IMAGENET_MEAN, IMAGENET_STD)
            hidden = self.model(pixel_values=x.to(self.device, self.dtype)).last_hidden_state  # (b, 1 + L, d)
            return _normalise(hidden[:, 0])  # CLS token

        return batched(images, self.batch_size, encode, self.model.config.hidden_size)


def _looks_local(source: str) -> bool:
    return os.path.isabs(source) or source.startswith((".", "~")) or os.path.exists(source)


def load_pretrained(load: Callable[..., Any], source: str, kind: str, default: str, option: str) -> Any:
    """``load(source)`` from a local directory or the HF cache first, then the Hub; one-line error if missing."""
    try:
        if _looks_local(source):
            if not os.path.isdir(os.path.expanduser(source)):
                raise FileNotFoundError(source)
            return load(os.path.expanduser(source))
        try:
            return load(source, local_files_only=True)
        except OSError:
            if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
                raise
            return load(source)  # may reach the Hub
    except (OSError, ValueError) as e:
        what = "no such directory" if isinstance(e, FileNotFoundError) else "not in the HF cache and not downloadable"
        raise OSError(
            f"cannot load {kind} backbone {source!r} ({what}); to work offline, save it where there is network "
            f"(`hf download {default} --local-dir DIR`, or any transformers checkpoint) and pass {option} DIR"
        ) from e


def load_with_processor(
    model_cls: Any, processor_cls: Any, source: str, kinds: tuple[str, str], default: str, option: str
) -> tuple[Any, Any]:
    """A model and its tokenizer or processor from one source (:func:`load_pretrained` for each)."""
    model = load_pretrained(model_cls.from_pretrained, source, kinds[0], default, option)
    return model, load_pretrained(processor_cls.from_pretrained, source, kinds[1], default, option)


def load_clip(source: str | None = None, device: str = "cpu") -> CLIPEncoder:
    """CLIP dual encoder from a Hub id or a local directory (default ``openai/clip-vit-base-patch32``)."""
    from transformers import AutoTokenizer, CLIPModel

    source = source or CLIP_DEFAULT
    kinds = ("CLIP", "CLIP tokenizer")
    model, tokenizer = load_with_processor(CLIPModel, AutoTokenizer, source, kinds, CLIP_DEFAULT, "--clip-model")
    return CLIPEncoder(model.to(device), tokenizer, name=f"clip:{source}")


def load_dino(source: str | None = None, device: str = "cpu") -> DINOEncoder:
    """DINO ViT from a Hub id or a local directory (default ``facebook/dino-vits16``)."""
    from transformers import ViTModel

    source = source or DINO_DEFAULT

    def load(path: str, **kw: Any) -> Any:
        return ViTModel.from_pretrained(path, add_pooling_layer=False, **kw)

    model = load_pretrained(load, source, "DINO", DINO_DEFAULT, "--dino-model")
    return DINOEncoder(model.to(device), name=f"dino:{source}")
