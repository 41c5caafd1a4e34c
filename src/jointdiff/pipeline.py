"""``JointDiffusionPipeline``: a diffusers pipeline over a converted (jointdiff-layout) SD model.

Components are those of Stable Diffusion 1.x/2.x (vae, text_encoder, tokenizer, unet,
scheduler); the U-Net carries the JeDi input layout and gets coupled self-attention when the
pipeline is built. Weights load from safetensors only unless ``use_safetensors=False`` is passed.
"""

from __future__ import annotations

import os
from typing import Any

from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import CLIPTextModel, CLIPTokenizer

from jointdiff.model import JointUNet


class JointDiffusionPipeline(DiffusionPipeline):
    """JeDi (sec. 3.3): personalised text-to-image generation by joint-image inpainting."""

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
    ) -> None:
        super().__init__()
        self.joint_unet = JointUNet(unet)  # validates the layout, installs coupled attention
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> JointDiffusionPipeline:
        """diffusers' loader with ``use_safetensors=True`` unless the caller says otherwise."""
        kwargs.setdefault("use_safetensors", True)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
