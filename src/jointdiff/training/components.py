"""What a run trains on: the model (a jointdiff pipeline, a base converted at start, or one built from configs),
the data sources and this rank's micro-batches.

``model.source`` is a jointdiff directory (loaded), or a plain Stable-Diffusion-layout
directory / Hub id (converted by :func:`jointdiff.jedi.convert.convert_pipeline`); ``[model.init]``
builds random components from config dicts (a miniature trained from scratch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from jointdiff.common.paths import is_hub_id
from jointdiff.data.sources import Source, open_source
from jointdiff.data.stream import BatchSpec, SetBatchStream, WeightedSource
from jointdiff.jedi.encoding import latent_factors
from jointdiff.training.config import Config, DataConfig, ModelConfig, ModelInit
from jointdiff.training.toystream import ToyWorldSource


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
            if s.format == "toyworld":
                views = s.max_set_size or 4
                source: Source = ToyWorldSource(s.path, s.name, views, s.buffer, s.refresh, s.two_subjects)
            else:
                source = open_source(s.format, s.path, s.name)
        except ValueError as e:
            raise ValueError(f"data.sources[{i}].path: {e}") from e
        sources.append(WeightedSource(source, s.weight, s.max_set_size))
    return sources


def check_latent_sources(sources: list[WeightedSource], vae: Any, train_vae: bool) -> None:
    """Cached latents must come from this model's VAE (same weights, scaling and shift); ValueError if not."""
    from jointdiff.data.latents import vae_fingerprint
    from jointdiff.data.sources import LatentSource

    if any(isinstance(ws.source, ToyWorldSource) for ws in sources) and train_vae:
        raise ValueError("model.train_vae: toyworld sources encode with the frozen VAE; use stored images")
    cached = [(i, ws.source) for i, ws in enumerate(sources) if isinstance(ws.source, LatentSource)]
    if not cached:
        return
    if train_vae:
        raise ValueError("model.train_vae: cannot train the VAE on cached latents")
    mine = vae_fingerprint(vae)
    for i, source in cached:
        for manifest in source.manifests():
            if manifest.get("vae_fingerprint") != mine:
                raise ValueError(
                    f"data.sources[{i}]: latents encoded by VAE {manifest.get('vae_fingerprint')}, "
                    f"the model's VAE is {mine}; re-encode with `jointdiff cache-latents --model` this model"
                )
            for key, value in zip(("scaling_factor", "shift_factor"), latent_factors(vae), strict=True):
                if float(manifest.get(key) or 0.0) != value:
                    raise ValueError(f"data.sources[{i}]: cache {key} {manifest.get(key)} != the VAE's")


class Batches:
    """Micro-batches of this rank with the data position of every loader worker, for checkpoints."""

    def __init__(self, config: Config, sources: list[WeightedSource], rank: int, world: int, state: dict | None):
        d = config.data
        if state is not None and int(state["num_workers"]) != max(d.num_workers, 1):
            raise ValueError(
                f"data.num_workers: the checkpoint was written with {state['num_workers']} loader workers per process "
                f"and the config has {d.num_workers}; exact resume needs the same (set data.num_workers back)"
            )
        spec = BatchSpec(
            d.batch_size, d.resolution, (d.set_size[0], d.set_size[1]), d.batching, d.short_caption_probability
        )
        stream = SetBatchStream(sources, spec, config.train.seed, rank, world, d.shuffle, resume=state)
        # Own generator: creating the iterator must not draw from the global RNG restored by resume.
        loader = torch.utils.data.DataLoader(
            stream,
            batch_size=None,
            num_workers=d.num_workers,
            generator=torch.Generator().manual_seed(config.train.seed),
            pin_memory=torch.cuda.is_available(),
        )
        self.workers = max(d.num_workers, 1)
        self.consumed = int(state["consumed"]) if state else 0
        self.roles: dict[int, Any] = dict(state["roles"]) if state else {}
        self._it = iter(loader)

    def next(self) -> dict[str, Any]:
        batch = next(self._it)
        self.consumed += 1
        tag = batch.pop("data_state")
        self.roles[int(tag["role"])] = tag["state"]
        return batch

    def state(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "num_workers": self.workers, "roles": self.roles}
