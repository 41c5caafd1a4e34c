"""A plain text-to-image view of an SD-layout model, for DreamBooth and DreamBlend.

Works for a diffusers Stable-Diffusion model and for a jointdiff model used without
references (each image a set of one: mask 1, zero reference channels), so the project's
miniature JeDi model can be fine-tuned and blended like any SD model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import ImageOps

from jointdiff.model import JointUNet, joint_layout


@dataclass
class TextToImage:
    """unet, vae, text encoder, tokenizer and scheduler of one SD-layout model."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: Any
    scheduler: Any

    def __post_init__(self) -> None:
        self.joint = JointUNet(self.unet) if joint_layout(self.unet) is not None else None
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @property
    def resolution(self) -> int:
        """Native image size in pixels."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def eps(self, x: torch.Tensor, t: torch.Tensor | int, text: torch.Tensor) -> torch.Tensor:
        """Noise prediction ``(B, C, h, w)`` for latents ``x`` and text embeddings ``(B, T, D)``."""
        if self.joint is not None:
            return self.joint(x[:, None], t, text[:, None])[:, 0]  # sets of one, no references
        return self.unet(x, t, encoder_hidden_states=text).sample

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """CLIP text embeddings ``(B, T, D)``, tokenised as Stable Diffusion does."""
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder(ids.to(self.text_encoder.device))[0]

    def token_indices(self, prompt: str, words: list[str]) -> list[int]:
        """Positions of the tokens of ``words`` in the tokenised ``prompt`` (for attention maps)."""
        ids = self.tokenizer(prompt, truncation=True).input_ids
        found: list[int] = []
        for word in words:
            sub = self.tokenizer(word, add_special_tokens=False).input_ids
            for i in range(len(ids) - len(sub) + 1):
                if ids[i : i + len(sub)] == sub:
                    found.extend(range(i, i + len(sub)))
                    break
        return sorted(set(found))

    def prompt_tokens(self, prompt: str) -> list[int]:
        """Positions of the prompt's own tokens (no start/end/padding tokens)."""
        n = len(self.tokenizer(prompt, truncation=True).input_ids)
        return list(range(1, n - 1))

    @torch.no_grad()
    def encode_images(self, images: list[PIL.Image.Image]) -> torch.Tensor:
        """Clean latents ``(B, C, h, w)``: centre crop, resize to the native size, VAE mean x scale."""
        size = self.resolution
        fitted = [ImageOps.fit(im.convert("RGB"), (size, size), PIL.Image.Resampling.BICUBIC) for im in images]
        pixels = self.processor.preprocess(fitted, height=size, width=size).to(self.vae.device, self.vae.dtype)
        return self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[PIL.Image.Image]:
        """PIL images from latents."""
        images = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        return self.processor.postprocess(images, output_type="pil")

    def components(self) -> dict[str, Any]:
        return {
            "unet": self.unet,
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "tokenizer": self.tokenizer,
            "scheduler": self.scheduler,
        }


def load_text_to_image(
    path: str | Path, allow_pickle: bool = False, torch_dtype: torch.dtype | None = None
) -> TextToImage:
    """Load a plain SD-layout model or a jointdiff model from a directory (or Hub id)."""
    from jointdiff.convert import load_base_components
    from jointdiff.pipeline import JointDiffusionPipeline

    index = Path(path, "model_index.json")
    if index.is_file() and json.loads(index.read_text()).get("_class_name") == JointDiffusionPipeline.__name__:
        kwargs: dict[str, Any] = {"use_safetensors": not allow_pickle}
        if torch_dtype is not None:
            kwargs["torch_dtype"] = torch_dtype
        pipe = JointDiffusionPipeline.from_pretrained(path, **kwargs)
        return TextToImage(**{k: pipe.components[k] for k in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")})
    return TextToImage(**load_base_components(str(path), allow_pickle=allow_pickle, torch_dtype=torch_dtype))


StepHook = Any  # Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]: (i, t, latents) -> latents


def sample(
    model: TextToImage,
    prompts: list[str],
    generator: torch.Generator | None = None,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    latents: torch.Tensor | None = None,
    scheduler: Any = None,
    before_step: StepHook | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Classifier-free-guided sampling (DDIM by default); ``before_step`` may edit the latents of
    each step before the noise prediction (used by cross-attention guidance). Returns latents."""
    from diffusers import DDIMScheduler
    from diffusers.utils.torch_utils import randn_tensor
    from tqdm.auto import tqdm

    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    device = model.unet.device
    scheduler = scheduler or DDIMScheduler.from_config(model.scheduler.config)
    scheduler.set_timesteps(num_inference_steps, device=device)
    b, h = len(prompts), model.unet.config.sample_size
    if latents is None:
        latents = randn_tensor((b, model.latent_channels, h, h), generator=generator, device=device)
        latents = latents * scheduler.init_noise_sigma
    with torch.no_grad():
        text = torch.cat([model.encode_text([""] * b), model.encode_text(prompts)])  # (2B, T, D)
    for i, t in enumerate(tqdm(scheduler.timesteps, disable=not progress, desc="sampling")):
        if before_step is not None:
            latents = before_step(i, t, latents)
        with torch.no_grad():
            x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            uncond, cond = model.eps(x, t, text.to(x.dtype)).chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
            latents = scheduler.step(eps, t, latents).prev_sample
    return latents
