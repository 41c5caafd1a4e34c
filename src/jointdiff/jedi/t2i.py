"""A plain text-to-image view of an SD-layout model, for DreamBooth and DreamBlend.

Works for a diffusers Stable-Diffusion model and for a jointdiff model used without
references (each image a set of one: mask 1, zero reference channels), so the project's
miniature JeDi model can be fine-tuned and blended like any SD model. Sampling is the JeDi
loop itself (:func:`jointdiff.jedi.sampling.replacement_sample` with no references) under
classifier-free guidance (:func:`jointdiff.jedi.guidance.cfg`); with a Stable-Diffusion model it
reproduces diffusers' ``StableDiffusionPipeline`` (tested).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch

from jointdiff.jedi.encoding import SDParts
from jointdiff.jedi.guidance import cfg
from jointdiff.jedi.layouts import joint_layout
from jointdiff.jedi.model import JointUNet
from jointdiff.jedi.sampling import replacement_sample


@dataclass
class TextToImage(SDParts):
    """unet, vae, text encoder, tokenizer and scheduler of one SD-layout model; its text and image parts
    (VAE scale, image processor, prompt and image encoding) are the pipeline's (:class:`SDParts`)."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: Any
    scheduler: Any

    def __post_init__(self) -> None:
        self.joint = JointUNet.with_joint_attention(self.unet) if joint_layout(self.unet) is not None else None
        self.init_image_processing()

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
        """Clean latents ``(B, C, h, w)``: centre crop, resize to the native size, VAE mean, scaled and shifted."""
        return self.encode_pixels(images, self.resolution, self.resolution)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[PIL.Image.Image]:
        """PIL images from latents."""
        return self.decode_to_images(latents)

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
    from jointdiff.jedi.loading import load_base_components
    from jointdiff.jedi.pipeline import JointDiffusionPipeline

    index = Path(path, "model_index.json")
    if index.is_file() and json.loads(index.read_text()).get("_class_name") == JointDiffusionPipeline.__name__:
        kwargs: dict[str, Any] = {"use_safetensors": not allow_pickle}
        if torch_dtype is not None:
            kwargs["torch_dtype"] = torch_dtype
        pipe = JointDiffusionPipeline.from_pretrained(path, **kwargs)
        return TextToImage(**{k: pipe.components[k] for k in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")})
    return TextToImage(**load_base_components(str(path), allow_pickle=allow_pickle, torch_dtype=torch_dtype))


def initial_noise(model: TextToImage, seeds: list[int]) -> torch.Tensor:
    """``(B, C, h, w)`` standard normal latents, image ``b`` drawn from a generator seeded ``seeds[b]``
    (so an image's noise does not depend on the batch it is sampled in)."""
    side = model.unet.config.sample_size
    noise = [
        torch.randn((1, model.latent_channels, side, side), generator=torch.Generator().manual_seed(s)) for s in seeds
    ]
    return torch.cat(noise).to(model.unet.device)


def ddim_scheduler(model: TextToImage, num_inference_steps: int) -> Any:
    """The sampler of :func:`sample` by default: DDIM from the model's scheduler config, timesteps set."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(model.scheduler.config)
    scheduler.set_timesteps(num_inference_steps, device=model.unet.device)
    return scheduler


# diffusers' ``callback_on_step_end(model, i, t, {"latents": (B, C, h, w)}) -> dict``: after each step; a
# ``latents`` entry of the returned dict replaces the latents the loop continues from.
StepEndCallback = Callable[[TextToImage, int, torch.Tensor, dict[str, torch.Tensor]], "dict[str, torch.Tensor] | None"]


def sample(
    model: TextToImage,
    prompts: list[str],
    generator: torch.Generator | None = None,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    latents: torch.Tensor | None = None,
    scheduler: Any = None,
    callback_on_step_end: StepEndCallback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Classifier-free-guided sampling of one image per prompt (DDIM by default): the replacement-trick
    loop with no references, each image a set of one. ``callback_on_step_end`` follows diffusers' contract
    (:data:`StepEndCallback`; DreamBlend's cross-attention guidance edits the latents there). Returns latents."""
    from diffusers.utils.torch_utils import randn_tensor
    from tqdm.auto import tqdm

    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    device = model.unet.device
    if scheduler is None:
        scheduler = ddim_scheduler(model, num_inference_steps)
    else:
        scheduler.set_timesteps(num_inference_steps, device=device)
    b, h = len(prompts), model.unet.config.sample_size
    if latents is None:
        latents = randn_tensor((b, model.latent_channels, h, h), generator=generator, device=device)
        latents = latents * scheduler.init_noise_sigma
    with torch.no_grad():
        text = torch.cat([model.encode_text([""] * b), model.encode_text(prompts)])  # (2B, T, D)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Guided eps of sets of one ``(B, 1, C, h, w)``: the null and the prompt branch in one batch."""
        x = x[:, 0]  # (B, 1, C, h, w) -> (B, C, h, w)
        uncond, cond = model.eps(torch.cat([x, x]), t, text.to(x.dtype)).chunk(2)
        return cfg(uncond, cond, guidance_scale)[:, None]

    callback = None
    if callback_on_step_end is not None:

        def callback(i: int, t: torch.Tensor, sets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            returned = callback_on_step_end(model, i, t, {"latents": sets["latents"][:, 0]}) or {}  # sees (B, C, h, w)
            return {"latents": returned["latents"][:, None]} if "latents" in returned else {}  # -> (B, 1, C, h, w)

    with torch.no_grad():
        out = replacement_sample(
            denoise,
            scheduler,
            scheduler.timesteps,
            latents[:, None],  # (B, C, h, w) -> (B, 1, C, h, w): each image a set of one
            latents.new_zeros(b, 0, *latents.shape[1:]),  # no references
            callback=callback,
            progress=lambda steps: tqdm(steps, disable=not progress, desc="sampling"),
        )
    return out[:, 0]  # (B, 1, C, h, w) -> (B, C, h, w)
