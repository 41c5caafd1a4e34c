"""The miniature JeDi (issue 7): a Stable-Diffusion-shaped model small enough to train from
scratch on toy-world data and to run on a CPU.

Pieces: a word-level CLIP tokenizer over the toy-world vocabulary (BPE merges that rebuild
each vocabulary word, characters as the fallback), a small ``AutoencoderKL`` trained here on toy
renders (64 px -> 16x16x4 latents), a small CLIP text encoder and a reference-conditioned joint
U-Net with attention only at 8x8 and 4x4. :func:`assemble` writes them as a jointdiff pipeline
directory that ``jointdiff train`` (``model.source``) continues from.
"""

from __future__ import annotations

import json
import math
import os
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

RESOLUTION = 64  # pixels of a toy image
VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [32, 64, 64],  # two downsamples: 64 px -> 16x16 latents
    "layers_per_block": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "norm_num_groups": 16,
    "sample_size": RESOLUTION,
}
UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [64, 128, 192],
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],  # attention at 8x8, 4x4
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": 128,
    "attention_head_dim": 32,
    "norm_num_groups": 16,
}
TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
}
TOKENS = 24  # text positions: toy captions are at most ~16 words


def toy_tokenizer(max_length: int = TOKENS) -> Any:
    """A word-level tokenizer over the toy-world vocabulary (CLIP's special tokens, pads with EOS)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from jointdiff.toyworld.captions import vocabulary
    from jointdiff.toyworld.recipes import class_words

    special = ["<|startoftext|>", "<|endoftext|>", "<|unk|>"]
    vocab = {tok: i for i, tok in enumerate([*special, *vocabulary(class_words()), *string.punctuation])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|unk|>",
        model_max_length=max_length,
    )


def render_images(count: int, split: str = "evaluator", start: int = 0, resolution: int = RESOLUTION) -> np.ndarray:
    """``count`` toy renders (uint8, ``(count, H, W, 3)``), one view per subject of ``split``."""
    from jointdiff.toyworld.generator import make_set

    out = np.empty((count, resolution, resolution, 3), dtype=np.uint8)
    for i in tqdm(range(count), desc="rendering", leave=False):
        out[i] = make_set(start + i, split=split, resolution=resolution, set_size=1).views[0].image
    return out


@dataclass
class VaeTraining:
    """Settings of the VAE pre-training (reconstruction + small KL, as SD's autoencoder)."""

    out: str
    steps: int = 3000
    batch_size: int = 32
    learning_rate: float = 1e-3
    kl_weight: float = 1e-6
    images: int = 4000  # training renders (subjects of the "evaluator" seed range)
    heldout: int = 256  # reconstruction check on never-seen subjects ("eval" seed range)
    seed: int = 0
    checkpoint_every: int = 500


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1]."""
    mse = ((a - b) ** 2).mean().item() / 4.0
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def train_vae(cfg: VaeTraining) -> dict[str, float]:
    """Train the miniature ``AutoencoderKL``; resumable (``state.pt``), returns held-out PSNR."""
    from diffusers import AutoencoderKL

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed)
    step = 0
    state_path = out / "state.pt"
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        g.set_state(state["generator"])
        step = state["step"]
    data = torch.from_numpy(render_images(cfg.images)).permute(0, 3, 1, 2).float() / 127.5 - 1  # (N, 3, H, W)
    held = torch.from_numpy(render_images(cfg.heldout, split="eval")).permute(0, 3, 1, 2).float() / 127.5 - 1
    t0 = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc="vae")
    vae.train()
    while step < cfg.steps:
        x = data[torch.randint(len(data), (cfg.batch_size,), generator=g)]
        flip = torch.rand(cfg.batch_size, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean() + cfg.kl_weight * post.kl().mean()
        for group in opt.param_groups:  # cosine decay to 10%
            group["lr"] = cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            tmp = out / "state.pt.tmp"
            torch.save(
                {"vae": vae.state_dict(), "opt": opt.state_dict(), "generator": g.get_state(), "step": step}, tmp
            )
            os.replace(tmp, state_path)
    bar.close()
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(held[i : i + 64]).latent_dist.mode() for i in range(0, len(held), 64)])
        rec = torch.cat([vae.decode(latents[i : i + 64]).sample for i in range(0, len(held), 64)])
    scaling = 1.0 / latents.flatten().std().item()  # unit-variance latents, as SD's 0.18215
    vae.register_to_config(scaling_factor=round(scaling, 5))
    vae.save_pretrained(out / "vae")
    report = {
        "psnr_db_heldout": round(_psnr(rec.clamp(-1, 1), held), 2),
        "scaling_factor": round(scaling, 5),
        "steps": step,
        "seconds_this_run": round(time.time() - t0, 1),
    }
    (out / "vae_report.json").write_text(json.dumps(report, indent=2))
    return report


def assemble(vae_dir: str | Path, out: str | Path, seed: int = 0) -> Path:
    """A from-scratch jointdiff pipeline: trained VAE, random text encoder and converted U-Net."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from jointdiff.model import convert_unet
    from jointdiff.pipeline import JointDiffusionPipeline

    tokenizer = toy_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer.get_vocab()),
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            **TEXT_CONFIG,
        )
    )
    unet = convert_unet(UNet2DConditionModel(**UNET_CONFIG))
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    vae = AutoencoderKL.from_pretrained(vae_dir)
    pipe = JointDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler
    )
    pipe.save_pretrained(str(out))
    return Path(out)


def half_precision_copy(src: str | Path, dst: str | Path) -> None:
    """Rewrite every safetensors file of a pipeline directory in fp16 (the shipped format)."""
    src, dst = Path(src), Path(dst)
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.suffix == ".safetensors":
            target.parent.mkdir(parents=True, exist_ok=True)
            tensors = load_file(path)
            save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
