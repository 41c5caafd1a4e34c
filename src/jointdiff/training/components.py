"""What a run trains on: the model (a jointdiff pipeline, a base converted at start, or one built from configs) and the data sources.

``model.source`` is a jointdiff directory (loaded), or a plain Stable-Diffusion-layout
directory / Hub id (converted by :func:`jointdiff.jedi.convert.convert_pipeline`); ``[model.init]``
builds random components from config dicts (a miniature trained from scratch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jointdiff.common.paths import is_hub_id
from jointdiff.data.sources import open_source
from jointdiff.data.stream import WeightedSource
from jointdiff.training.config import DataConfig, ModelConfig, ModelInit


def _is_jointdiff_dir(source: str) -> bool:
    index = Path(source, "model_index.json")
    if not index.is_file():
        return False
    try:
        return json.loads(index.read_text()).get("_class_name") == "JointDiffusionPipeline"
    except (OSError, json.JSONDecodeError):
        return False


def build_tokenizer(spec: str) -> Any:
    """A CLIPTokenizer from a directory / Hub id, or ``char:N``: the character tokenizer with N positions."""
    from transformers import CLIPTokenizer

    if spec.startswith("char:"):
        from jointdiff.common.tiny import char_tokenizer

        try:
            n = int(spec[5:])
        except ValueError as e:
            raise ValueError(f"model.init.tokenizer: 'char:N' needs an integer N, got {spec!r}") from e
        return char_tokenizer(max_length=n)
    try:
        return CLIPTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"model.init.tokenizer: cannot load a CLIPTokenizer from {spec!r}: {str(e).splitlines()[0]}"
        ) from e


def init_components(init: ModelInit) -> dict[str, Any]:
    """Random-weight components from config dicts; the U-Net is converted to the jointdiff layout."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from jointdiff.jedi.model import convert_unet

    def build(name: str, fn: Any, cfg: dict[str, Any]) -> Any:
        try:
            return fn(**cfg)
        except (TypeError, ValueError) as e:
            raise ValueError(f"model.init.{name}: {str(e).splitlines()[0]}") from e

    tokenizer = build_tokenizer(init.tokenizer)
    text_cfg = {
        "vocab_size": len(tokenizer.get_vocab()),
        "max_position_embeddings": tokenizer.model_max_length,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }  # defaults from the tokenizer; the config may override them
    text_cfg.update(init.text_encoder)
    unet = build("unet", UNet2DConditionModel, init.unet)
    vae = build("vae", AutoencoderKL, init.vae)
    text_encoder = CLIPTextModel(build("text_encoder", CLIPTextConfig, text_cfg))
    scheduler = build("scheduler", DDPMScheduler, init.scheduler)
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise ValueError(
            f"model.init: unet.cross_attention_dim={unet.config.cross_attention_dim} must equal "
            f"text_encoder.hidden_size={text_encoder.config.hidden_size}"
        )
    if unet.config.in_channels != vae.config.latent_channels:
        raise ValueError(
            f"model.init: unet.in_channels={unet.config.in_channels} must equal vae.latent_channels={vae.config.latent_channels}"
        )
    return {
        "unet": convert_unet(unet),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def load_components(model: ModelConfig) -> dict[str, Any]:
    """unet (jointdiff layout), vae, text_encoder, tokenizer, scheduler of the model to train (fp32)."""
    if model.init is not None:
        return init_components(model.init)
    source = model.source
    revision = model.revision or None
    if not Path(source).is_dir() and not is_hub_id(source):
        raise ValueError(f"model.source: no such directory: {source}")
    if Path(source).is_dir() and _is_jointdiff_dir(source):
        from jointdiff.jedi.pipeline import JointDiffusionPipeline

        try:
            pipe = JointDiffusionPipeline.from_pretrained(source, use_safetensors=None if model.allow_pickle else True)
        except (OSError, ValueError) as e:
            raise ValueError(f"model.source: cannot load {source}: {str(e).splitlines()[0]}") from e
        return dict(pipe.components)
    from jointdiff.jedi.convert import convert_pipeline

    pipe = convert_pipeline(source, None, allow_pickle=model.allow_pickle, revision=revision)
    return dict(pipe.components)


def open_data_sources(data: DataConfig) -> list[WeightedSource]:
    """List every configured source (main process, at start); errors name the field."""
    sources = []
    for i, s in enumerate(data.sources):
        try:
            source = open_source(s.format, s.path, s.name)
        except ValueError as e:
            raise ValueError(f"data.sources[{i}].path: {e}") from e
        sources.append(WeightedSource(source, s.weight, s.max_set_size))
    return sources
