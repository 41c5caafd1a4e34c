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


def coupled_levels(config: dict) -> list[int]:
    """Latent sides at which a U-Net config has (coupled) attention, e.g. ``[8, 4]`` for version 1."""
    side = int(config["sample_size"])
    levels = []
    for kind in config["down_block_types"]:
        if kind.startswith("CrossAttn"):
            levels.append(side)
        side //= 2
    return levels


def grow_attention(src: str | Path, out: str | Path) -> Path:
    """A trained miniature with attention added at the top latent level (16x16), outputs unchanged.

    Version 1 couples a set's images (JeDi sec. 3.2) only at 8x8 and 4x4, where one token covers 8x8
    pixels (issue 27). The grown U-Net turns the top down block and the last up block into their
    cross-attention versions (self-attention, coupled across the set, and per-image text
    cross-attention at 16x16), copies every trained weight and zeroes each new transformer's
    ``proj_out``: a new block then adds nothing to its residual stream, so the grown pipeline
    predicts exactly what ``src`` predicts until training moves the new weights.
    """
    import torch
    from diffusers import UNet2DConditionModel

    from jointdiff.jedi.pipeline import JointDiffusionPipeline

    pipe = JointDiffusionPipeline.from_pretrained(str(src))  # fp32 (diffusers upcasts the shipped fp16)
    old = pipe.unet
    config = {k: v for k, v in old.config.items() if not k.startswith("_") or k == "_jointdiff"}
    downs, ups = list(config["down_block_types"]), list(config["up_block_types"])
    if downs[0].startswith("CrossAttn") or ups[-1].startswith("CrossAttn"):
        raise ValueError(f"{src}: the U-Net already has attention at its top level ({downs[0]}, {ups[-1]})")
    downs[0], ups[-1] = "CrossAttnDownBlock2D", "CrossAttnUpBlock2D"
    config.update(down_block_types=downs, up_block_types=ups)
    layout = config.pop("_jointdiff")
    unet = UNet2DConditionModel(**config)
    unet.register_to_config(_jointdiff=layout)
    missing, unexpected = unet.load_state_dict(old.state_dict(), strict=False)
    new = ("down_blocks.0.attentions.", f"up_blocks.{len(ups) - 1}.attentions.")
    if unexpected or not all(k.startswith(new) for k in missing):
        raise ValueError(
            f"growing {src}: unexpected weight names {unexpected or [k for k in missing if not k.startswith(new)]}"
        )
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.startswith(new) and name.endswith("proj_out"):
                module.weight.zero_()
                module.bias.zero_()
    pipe.unet = unet
    pipe.register_modules(unet=unet)
    pipe.save_pretrained(str(out))
    return Path(out)


def inpainting_base(src: str | Path, out: str | Path, seed: int = 0) -> Path:
    """The start of a toy *stock* inpainting model (issue 32): ``src``'s VAE, text encoder, tokenizer and scheduler
    with a fresh random U-Net of ``src``'s U-Net's shape in a stock inpainting model's input layout
    (``concat(x_t, M, z_masked)``: 8 + 1 + 8 channels, no jointdiff layout recorded), trained from scratch on single
    images with random masks (``objective.masks = "regions"``), never on sets: the training-free baseline that
    JeDi's joint training is measured against."""
    from diffusers import UNet2DConditionModel

    from jointdiff.jedi.pipeline import JointDiffusionPipeline

    parts = JointDiffusionPipeline.from_pretrained(str(src)).components
    c = int(parts["vae"].config.latent_channels)
    shape = {k: v for k, v in parts["unet"].config.items() if not k.startswith("_")}  # no jointdiff layout record
    with seeded(seed):
        unet = UNet2DConditionModel(**{**shape, "in_channels": 2 * c + 1, "out_channels": c})
    pipe = JointDiffusionPipeline(**{**parts, "unet": unet}, layout="inpainting")
    pipe.save_pretrained(str(out))
    return Path(out)
