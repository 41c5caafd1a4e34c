"""Assembling the miniature JeDi from scratch (a trained VAE, a random text encoder, a converted U-Net) and
its fp16 shipped form. ``jointdiff train`` (``model.source``) continues from the assembled directory."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from jointdiff.common.seeding import seeded
from jointdiff.miniature.config import TEXT_CONFIG, UNET_CONFIG
from jointdiff.miniature.tokenizer import toy_tokenizer


def assemble(vae_dir: str | Path, out: str | Path, seed: int = 0) -> Path:
    """A from-scratch jointdiff pipeline: trained VAE, random text encoder and converted U-Net."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from jointdiff.jedi.model import convert_unet
    from jointdiff.jedi.pipeline import JointDiffusionPipeline

    tokenizer = toy_tokenizer()
    with seeded(seed):  # the text encoder's, then the U-Net's initial weights
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
    scheduler = DDIMScheduler(  # SD 1.x's schedule; the trainer reads it as DDPM, sampling uses DDIM
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
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
