"""Tiny randomly initialised S3 stage models, built from the real diffusers / transformers classes.

``save_tiny_models(root)`` writes one loadable directory per stage (SD text-to-image, SD inpainting,
InstructPix2Pix, GroundingDINO, SAM, CLIP, BLIP-2) and returns a config dict that points at them:
``jointdiff s3 tiny``, the tests, the CPU benchmark and the docs run the real adapters on these in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jointdiff.common.seeding import seeded
from jointdiff.common.tiny import tiny_components

IMAGE = 32  # side of every tiny model's images
_VISION = {  # the tiny ViT of CLIP and BLIP-2
    "hidden_size": 16,
    "intermediate_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": IMAGE,
    "patch_size": 8,
}


def byte_tokenizer() -> Any:
    """A byte-level BPE tokenizer with no merges (every byte one token) plus the usual special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for special in ("<pad>", "</s>", "<unk>", "<image>"):
        vocab[special] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        eos_token="</s>",
        bos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )


def _save_diffusers(path: Path, kind: str, seed: int) -> None:
    """An SD text-to-image (4-channel U-Net), inpainting (9) or InstructPix2Pix (8) pipeline directory."""
    from diffusers import (
        StableDiffusionInpaintPipeline,
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    parts = tiny_components(seed)
    cls, channels = {
        "text_to_image": (StableDiffusionPipeline, 4),
        "inpainter": (StableDiffusionInpaintPipeline, 9),
        "stylizer": (StableDiffusionInstructPix2PixPipeline, 8),
    }[kind]
    if channels != 4:
        with seeded(seed):
            parts["unet"] = UNet2DConditionModel.from_config({**parts["unet"].config, "in_channels": channels})
    pipe = cls(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(path))


def _save_detector(path: Path) -> None:
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    path.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *"abcdefghijklmnopqrstuvwxyz"]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(path / "vocab.txt"))
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(
            image_size=IMAGE,
            patch_size=4,
            embed_dim=8,
            depths=[1, 1],
            num_heads=[1, 1],
            window_size=2,
            out_features=["stage1", "stage2"],
        ),
        text_config=BertConfig(
            vocab_size=len(words),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            max_position_embeddings=32,
        ),
        d_model=32,  # GroupNorm(32, d_model) inside the model
        encoder_layers=1,
        decoder_layers=2,  # the decoder's box heads are tied across layers: needs >= 2
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=8,
        num_feature_levels=2,
        max_text_len=16,
        encoder_n_points=2,
        decoder_n_points=2,
    )
    GroundingDinoForObjectDetection(config).save_pretrained(str(path))
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": IMAGE, "longest_edge": IMAGE})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(path))


def _save_segmenter(path: Path) -> None:
    from transformers import (
        SamConfig,
        SamImageProcessor,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    config = SamConfig(
        vision_config=SamVisionConfig(
            hidden_size=16,
            output_channels=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=IMAGE,
            patch_size=8,
            mlp_dim=16,
            global_attn_indexes=[0],
            window_size=2,
            num_pos_feats=4,
        ),
        prompt_encoder_config=SamPromptEncoderConfig(
            hidden_size=8, image_size=IMAGE, patch_size=8, mask_input_channels=4
        ),
        mask_decoder_config=SamMaskDecoderConfig(
            hidden_size=8, num_hidden_layers=1, num_attention_heads=2, mlp_dim=16, iou_head_hidden_dim=8
        ),
    )
    SamModel(config).save_pretrained(str(path))
    side = IMAGE // 4  # the low-resolution mask side of this tiny SAM
    image_processor = SamImageProcessor(
        size={"longest_edge": IMAGE},
        pad_size={"height": IMAGE, "width": IMAGE},
        mask_size={"longest_edge": side},
        mask_pad_size={"height": side, "width": side},
    )
    SamProcessor(image_processor=image_processor).save_pretrained(str(path))


def _save_clip(path: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    config = CLIPConfig(
        text_config=CLIPTextConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ).to_dict(),
        vision_config=CLIPVisionConfig(**_VISION).to_dict(),
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(str(path))
    CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}).save_pretrained(
        str(path)
    )


def _save_captioner(path: Path) -> None:
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        OPTConfig,
    )

    tok = byte_tokenizer()
    vocab = tok.get_vocab()
    config = Blip2Config(
        vision_config=Blip2VisionConfig(**_VISION).to_dict(),
        qformer_config=Blip2QFormerConfig(
            vocab_size=32,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            encoder_hidden_size=16,
            max_position_embeddings=32,
        ).to_dict(),
        text_config=OPTConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=16,
            num_attention_heads=2,
            max_position_embeddings=64,
            word_embed_proj_dim=16,
            pad_token_id=vocab["<pad>"],
            eos_token_id=vocab["</s>"],
            bos_token_id=vocab["</s>"],
        ).to_dict(),
        num_query_tokens=4,
        image_token_index=vocab["<image>"],
    )
    Blip2ForConditionalGeneration(config).save_pretrained(str(path))
    image_processor = BlipImageProcessor(size={"height": IMAGE, "width": IMAGE})
    Blip2Processor(image_processor=image_processor, tokenizer=tok, num_query_tokens=4).save_pretrained(str(path))


def save_tiny_models(root: str | Path, seed: int = 0) -> dict[str, Any]:
    """Write every stage model under ``root`` and return a config dict using them (template LLM)."""
    root = Path(root)
    for kind in ("text_to_image", "inpainter", "stylizer"):
        _save_diffusers(root / kind, kind, seed)
    with seeded(seed):  # one stream of initial weights for the four transformers models, in this order
        for name, save in (
            ("detector", _save_detector),
            ("segmenter", _save_segmenter),
            ("clip", _save_clip),
            ("captioner", _save_captioner),
        ):
            save(root / name)
    return tiny_config(root)


def tiny_config(root: str | Path) -> dict[str, Any]:
    """A config dict for the tiny models under ``root``: two objects, 32-px images, two denoising steps."""
    root = Path(root)
    return {
        "objects": ["teddy bear", "red backpack"],
        "collages_per_object": 2,
        "collages_per_shard": 1,
        "device": "cpu",
        "dtype": "fp32",
        "text_to_image": {"source": str(root / "text_to_image"), "size": IMAGE, "steps": 2},
        "detector": {
            "source": str(root / "detector"),
            "box_threshold": 0.0,  # a random detector's scores mean nothing: keep every query
            "text_threshold": 0.0,
            "min_box_fraction": 0.0,
            "max_instances": 4,
        },
        "segmenter": {"source": str(root / "segmenter"), "min_mask_fraction": 0.0},
        "clip": {"source": str(root / "clip"), "threshold": 0.5},
        "inpainter": {"source": str(root / "inpainter"), "size": IMAGE, "steps": 2},
        "stylizer": {"source": str(root / "stylizer"), "steps": 2},
        "captioner": {"source": str(root / "captioner"), "max_new_tokens": 4},
        "ray": {"fuse": True, "actor_cpus": 0.5, "task_cpus": 0.5},  # a laptop: one actor holds every model
    }
