"""Conversion of a diffusers text-to-image model into a jointdiff model (JeDi sec. 3.3).

Reads a Stable-Diffusion-layout pipeline (``model_index.json`` with unet, vae, text_encoder,
tokenizer, scheduler) from a local directory or a Hub id (:mod:`jointdiff.jedi.loading`), widens the
U-Net input (:func:`jointdiff.jedi.model.convert_unet`) and saves a :class:`JointDiffusionPipeline`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from jointdiff.jedi.loading import load_base_components
from jointdiff.jedi.model import convert_unet
from jointdiff.jedi.pipeline import JointDiffusionPipeline


def convert_pipeline(
    base: str,
    out: str | os.PathLike | None = None,
    *,
    allow_pickle: bool = False,
    overwrite: bool = False,
    torch_dtype: torch.dtype | None = None,
    revision: str | None = None,
) -> JointDiffusionPipeline:
    """Convert ``base`` into a :class:`JointDiffusionPipeline`; save it to ``out`` if given."""
    if out is not None:
        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
            raise ValueError(f"output {out} exists and is not an empty directory (pass --overwrite)")
    components = load_base_components(base, allow_pickle=allow_pickle, torch_dtype=torch_dtype, revision=revision)
    components["unet"] = convert_unet(components["unet"])
    pipe = JointDiffusionPipeline(**components)
    if out is not None:
        pipe.save_pretrained(str(out), safe_serialization=True)
    return pipe
