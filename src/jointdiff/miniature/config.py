"""The miniature JeDi's shapes and recipe settings (issue 7): what ``jointdiff miniature`` builds and trains.

A Stable-Diffusion-shaped model small enough to train from scratch on toy-world data and to run on a
CPU: a small ``AutoencoderKL`` (64 px -> 16x16x8 latents), a small CLIP text encoder over a word-level
toy tokenizer, and a reference-conditioned joint U-Net with attention only at 8x8 and 4x4. This module
imports no torch, so the command line reads its defaults cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RESOLUTION = 64  # pixels of a toy image
VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 8,  # 64 px -> 16x16x8 (6x fewer numbers); 4 channels washed colours out (docs/miniature.md)
    "block_out_channels": [32, 64, 128],  # two downsamples: 64 px -> 16x16 latents (widths: docs/miniature.md)
    "layers_per_block": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "norm_num_groups": 16,
    "mid_block_add_attention": False,  # fully convolutional: trains on crops, runs on whole images
    "sample_size": RESOLUTION,
}
UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 8,
    "out_channels": 8,
    "block_out_channels": [48, 96, 192],  # 9.3M parameters; sizes measured in docs/miniature.md
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],  # attention at 8x8, 4x4
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": 128,
    "attention_head_dim": [2, 3, 6],  # diffusers reads this as heads per block: 32 channels a head
    "norm_num_groups": 16,
}
TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
}
TOKENS = 24  # text positions: toy captions are at most ~16 words
IDENTIFIERS = ("sks", "zwx", "qlv", "hta", "pxr", "vgm", "tkd", "bnf")  # rare words for DreamBooth's "a sks dog"


@dataclass
class VaeTraining:
    """Settings of the VAE pre-training (reconstruction + small KL, as SD's autoencoder).

    The network is fully convolutional, so most steps train on random ``crop`` px crops (4x
    cheaper than whole 64 px images on a CPU); the last ``full_res_steps`` train on whole images
    so that the group-norm statistics match how the VAE is used.
    """

    out: str
    steps: int = 4000
    full_res_steps: int = 400
    crop: int = 32
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    kl_weight: float = 1e-6
    images: int = 16000  # training renders (subjects of the "evaluator" seed range)
    heldout: int = 256  # reconstruction check on never-seen subjects ("eval" seed range)
    style_p: float = 0.1  # share of stylised training renders (the joint model trains on plain views)
    seed: int = 0
    checkpoint_every: int = 250
    workers: int = 2  # rendering processes

    def __post_init__(self) -> None:
        if not 0 <= self.full_res_steps <= self.steps:
            raise ValueError(f"full_res_steps: must be in [0, steps], got {self.full_res_steps}")
        if not 8 <= self.crop <= RESOLUTION or self.crop % 4:
            raise ValueError(f"crop: must be a multiple of 4 in [8, {RESOLUTION}], got {self.crop}")
        for name in ("batch_size", "images", "heldout", "checkpoint_every", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
