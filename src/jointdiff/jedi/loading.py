"""Reading a diffusers Stable-Diffusion-layout model (``model_index.json`` with unet, vae, text_encoder,
tokenizer, scheduler) from a local directory or a Hub id, with precise one-line errors and safetensors
weights only unless pickle is allowed. ``jointdiff convert`` converts such a model; the pipeline loads a
stock inpainting model this way, its five components only (no safety checker).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import ModelMixin, SchedulerMixin, UNet2DConditionModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from jointdiff.common.paths import is_hub_id
from jointdiff.jedi.layouts import LAYOUT_KEY

JOINT_PIPELINE = "JointDiffusionPipeline"  # the class name a saved jointdiff model's model_index.json records
# Component name -> base class its loaded object must have.
REQUIRED = {
    "unet": ModelMixin,
    "vae": ModelMixin,
    "text_encoder": PreTrainedModel,
    "tokenizer": PreTrainedTokenizerBase,
    "scheduler": SchedulerMixin,
}
SAFETENSORS_HINT = "pass --allow-pickle (use_safetensors=False) to load pickle weights, only from a source you trust"


def read_json(base: str, filename: str, revision: str | None) -> dict[str, Any]:
    """A JSON file of a local directory or a Hub repository, with one-line errors."""
    if os.path.isdir(base):
        path = Path(base, filename)
        if not path.is_file():
            raise ValueError(f"{base} is not a diffusers model directory: {filename} not found")
    elif is_hub_id(base):
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(base, filename, revision=revision))
        except Exception as e:  # offline, unknown repo, missing file: one line for the user
            raise ValueError(
                f"cannot fetch {filename} of '{base}' from the Hugging Face Hub (offline, or no such repository?): {type(e).__name__}"
            ) from e
    else:
        raise ValueError(f"no such directory: {base}")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable JSON ({e})") from e


def check_base(base: str, revision: str | None = None) -> dict[str, Any]:
    """Validate that ``base`` is a plain SD-layout model (text-to-image, or a stock inpainting model), not a
    jointdiff model; return its model_index."""
    index = read_json(base, "model_index.json", revision)
    if index.get("_class_name") == JOINT_PIPELINE:
        raise ValueError(f"{base} is already a jointdiff model (its U-Net is already converted)")
    missing = [name for name in REQUIRED if not index.get(name) or index[name][0] is None]
    if missing:
        raise ValueError(f"{base} is not a Stable-Diffusion-layout model: model_index.json lacks {', '.join(missing)}")
    if "text_encoder_2" in index:
        raise ValueError(f"{base}: SDXL-layout pipelines (two text encoders) are not supported yet")
    if tuple(index["unet"]) != ("diffusers", UNet2DConditionModel.__name__):
        raise ValueError(f"{base}: the unet is {index['unet'][1]}, expected a diffusers UNet2DConditionModel")
    if read_json(base, "unet/config.json", revision).get(LAYOUT_KEY):
        raise ValueError(f"{base}: the U-Net is already converted to the jointdiff layout")
    return index


def _component_class(library: str, class_name: str, name: str) -> type:
    """The class a model_index entry names, from diffusers or transformers only."""
    if library not in ("diffusers", "transformers"):
        raise ValueError(f"component {name} comes from '{library}'; only diffusers and transformers are loaded")
    cls = getattr(importlib.import_module(library), class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, REQUIRED[name]):
        raise ValueError(f"component {name}: {library}.{class_name} is not a {REQUIRED[name].__name__}")
    return cls


def load_base_components(
    base: str,
    *,
    allow_pickle: bool = False,
    torch_dtype: torch.dtype | None = None,
    revision: str | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    """Load the five SD components of ``base`` (directory or Hub id); safetensors only by default; ``variant``
    (e.g. ``fp16``) picks the weight files of that variant."""
    index = check_base(base, revision)
    components: dict[str, Any] = {}
    for name in REQUIRED:
        library, class_name = index[name]
        cls = _component_class(library, class_name, name)
        kwargs: dict[str, Any] = {"subfolder": name, "revision": revision}
        if issubclass(cls, (ModelMixin, PreTrainedModel)):
            if not allow_pickle and os.path.isdir(base) and not any(Path(base, name).glob("*.safetensors")):
                raise ValueError(f"{base}/{name}: no safetensors weights; {SAFETENSORS_HINT}")
            kwargs["use_safetensors"] = None if allow_pickle else True
            if torch_dtype is not None:
                kwargs["torch_dtype"] = torch_dtype
            if variant is not None:
                kwargs["variant"] = variant
        try:
            components[name] = cls.from_pretrained(base, **kwargs)
        except (OSError, ValueError) as e:
            if not allow_pickle and "safetensors" in str(e).lower():
                raise ValueError(f"{base}/{name}: no safetensors weights; {SAFETENSORS_HINT}") from e
            raise ValueError(f"{base}/{name}: cannot load {class_name}: {str(e).splitlines()[0]}") from e
    return components
