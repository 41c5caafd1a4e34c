"""Tiny randomly initialised Stable-Diffusion-layout components, built from the real classes, and the
character tokenizer they use.

No pretrained weights can be downloaded here, so every real-model path is exercised on these (a stock
inpainting model too: the same networks with a 9-channel U-Net, :func:`tiny_components` ``inpainting=True``):
``jointdiff selftest``, ``jointdiff s3 tiny``, the docs examples and the tests build them in well
under a second; ``model.init.tokenizer = "char:N"`` trains a model from scratch with
:func:`char_tokenizer`.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from jointdiff.common.seeding import seeded

TEXT_DIM = 16  # hidden size of the tiny text encoder = cross-attention width of the tiny U-Net


def char_tokenizer(max_length: int = 32) -> CLIPTokenizer:
    """A character-level CLIP tokenizer: lower-case letters, digits and a little punctuation."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + string.digits + ".,'-":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def tiny_components(seed: int = 0, inpainting: bool = False) -> dict[str, Any]:
    """unet, vae, text_encoder, tokenizer, scheduler of a tiny SD 1.x-shaped model (random weights); with
    ``inpainting`` the U-Net takes a stock inpainting model's 9 channels (noisy 4 | mask 1 | masked image 4)."""
    tokenizer = char_tokenizer()
    with seeded(seed):
        unet, vae, text_encoder = _tiny_models(tokenizer, in_channels=9 if inpainting else 4)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    unet.eval(), vae.eval(), text_encoder.eval()  # as from_pretrained returns them
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def _tiny_models(
    tokenizer: CLIPTokenizer, in_channels: int = 4
) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel]:
    """The three networks, drawn in this order from torch's global generator."""
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=4,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer.get_vocab()),
            hidden_size=TEXT_DIM,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    return unet, vae, text_encoder


def save_tiny_base(path: str | Path, seed: int = 0, safe_serialization: bool = True) -> dict[str, Any]:
    """Save a tiny StableDiffusionPipeline directory (the layout ``jointdiff convert`` reads)."""
    components = tiny_components(seed)
    pipe = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(str(path), safe_serialization=safe_serialization)
    return components


def save_tiny_inpainting(path: str | Path, seed: int = 0) -> dict[str, Any]:
    """Save a tiny StableDiffusionInpaintPipeline directory (a stock inpainting model, the layout
    ``jointdiff generate --model`` reads without conversion)."""
    components = tiny_components(seed, inpainting=True)
    pipe = StableDiffusionInpaintPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(str(path), safe_serialization=True)
    return components
