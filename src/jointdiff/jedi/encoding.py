"""Text and images in and out of a Stable-Diffusion-layout model: prompt embeddings and the VAE's latent space.

One place for what the pipeline, the text-to-image path, the trainer and the latent cache all do:
prompts tokenised as Stable Diffusion does (padded to the tokenizer's length), latents scaled as the
U-Net sees them, ``(z - shift_factor) * scaling_factor``, and back. :class:`SDParts` holds them as the
pipeline's methods (VAE scale, image processor, prompt and image encoding, decoding), shared by
``JointDiffusionPipeline`` and the text-to-image view ``TextToImage``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import PIL.Image
import torch
from PIL import ImageOps

if TYPE_CHECKING:
    from diffusers.image_processor import VaeImageProcessor


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


def fully_masked_latent(
    vae: Any, height: int, width: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The latent ``(C, h, w)`` a stock inpainting U-Net reads where everything is masked: diffusers feeds
    ``vae.encode(image * (mask < 0.5))``, a mid-grey image (0 in [-1, 1]) when all is masked; here the posterior
    mode, deterministic as the references' latents, in ``dtype`` (default: the VAE's)."""
    grey = torch.zeros(1, 3, height, width, device=device, dtype=vae.dtype)
    with torch.no_grad():
        return encode_latents(vae, grey, dtype=dtype)[0]


def decode_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Images in about [-1, 1] ``(B, 3, H, W)`` of latents as the U-Net sees them (inverse scaling and shift)."""
    scaling, shift = latent_factors(vae)
    return vae.decode(latents.to(vae.dtype) / scaling + shift).sample


def fit_images(images: list[PIL.Image.Image], width: int, height: int) -> list[PIL.Image.Image]:
    """RGB images centre-cropped to the aspect of ``width x height`` and resized to it (bicubic)."""
    return [ImageOps.fit(im.convert("RGB"), (width, height), PIL.Image.Resampling.BICUBIC) for im in images]


class SDParts:
    """The text and image parts of a Stable-Diffusion-layout model (``vae``, ``text_encoder``, ``tokenizer``,
    ``unet`` attributes of the class using it): the VAE's scale factor and diffusers' image processor, prompt
    embeddings, and images to latents and back. ``JointDiffusionPipeline`` and ``TextToImage`` share them."""

    vae: Any
    text_encoder: Any
    tokenizer: Any
    unet: Any
    vae_scale_factor: int
    image_processor: VaeImageProcessor

    def init_image_processing(self) -> None:
        """Set ``vae_scale_factor`` (pixels per latent) and the ``image_processor``, as diffusers' pipelines do."""
        from diffusers.image_processor import VaeImageProcessor

        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    def encode_text(self, prompts: list[str], device: torch.device | str | None = None) -> torch.Tensor:
        """CLIP text embeddings ``(len(prompts), T, D)`` in the U-Net's dtype, tokenised as Stable Diffusion does."""
        return encode_prompts(self.tokenizer, self.text_encoder, prompts, device).to(self.unet.dtype)

    def encode_pixels(
        self, images: list[PIL.Image.Image], height: int, width: int, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Clean latents ``(n, C, h, w)`` in the U-Net's dtype: centre-crop to the output aspect, resize, VAE mean."""
        pixels = self.image_processor.preprocess(fit_images(images, width, height), height=height, width=width)
        return encode_latents(self.vae, pixels.to(device or self.vae.device)).to(self.unet.dtype)

    def decode_to_images(self, latents: torch.Tensor, output_type: str = "pil") -> Any:
        """Images of latents ``(B, C, h, w)`` as the U-Net sees them: PIL, ``np`` or ``pt`` (``output_type``)."""
        return self.image_processor.postprocess(decode_latents(self.vae, latents), output_type=output_type)
