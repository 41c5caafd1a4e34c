"""Text and images in and out of a Stable-Diffusion-layout model: prompt embeddings and the VAE's latent space.

One place for what the pipeline, the text-to-image path, the trainer and the latent cache all do:
prompts tokenised as Stable Diffusion does (padded to the tokenizer's length), latents scaled as the
U-Net sees them, ``(z - shift_factor) * scaling_factor``, and back.
"""

from __future__ import annotations

from typing import Any

import PIL.Image
import torch
from PIL import ImageOps


def encode_prompts(
    tokenizer: Any, text_encoder: Any, prompts: list[str], device: torch.device | str | None = None
) -> torch.Tensor:
    """Text-encoder embeddings ``(len(prompts), T, D)``; the token ids go to ``device`` (default: the encoder's)."""
    ids = tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return text_encoder(ids.to(device or text_encoder.device))[0]


def latent_factors(vae: Any) -> tuple[float, float]:
    """``(scaling_factor, shift_factor)`` of a VAE (shift 0 where its config has none)."""
    return float(vae.config.scaling_factor), float(getattr(vae.config, "shift_factor", None) or 0.0)


def encode_latents(
    vae: Any,
    pixels: torch.Tensor,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Latents ``(B, C, h, w)`` of images in [-1, 1] ``(B, 3, H, W)`` (on the VAE's device): the posterior's
    mode, or a sample ``mean + std * eps`` with ``eps`` drawn by ``generator`` or given as ``noise`` (standard
    normal, shaped like the latents); scaled and shifted in ``dtype`` (default: the VAE's)."""
    dist = vae.encode(pixels.to(dtype=vae.dtype)).latent_dist
    if noise is not None:
        z = dist.mean + dist.std * noise.to(dist.mean)
    else:
        z = dist.mode() if generator is None else dist.sample(generator=generator)
    scaling, shift = latent_factors(vae)
    return (z.to(dtype or z.dtype) - shift) * scaling


def decode_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Images in about [-1, 1] ``(B, 3, H, W)`` of latents as the U-Net sees them (inverse scaling and shift)."""
    scaling, shift = latent_factors(vae)
    return vae.decode(latents.to(vae.dtype) / scaling + shift).sample


def fit_images(images: list[PIL.Image.Image], width: int, height: int) -> list[PIL.Image.Image]:
    """RGB images centre-cropped to the aspect of ``width x height`` and resized to it (bicubic)."""
    return [ImageOps.fit(im.convert("RGB"), (width, height), PIL.Image.Resampling.BICUBIC) for im in images]
