"""Diffusers adapters: collage generator, background inpainter, InstructPix2Pix stylizer (JeDi sec. 3.1).

Each loads a diffusers pipeline from a Hub id or a local directory (``AutoPipelineFor*`` picks
SD 1.x/2.x or SDXL from the model index) and implements one interface of :mod:`jointdiff.data.s3.stages`.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from jointdiff.common.config import torch_dtype
from jointdiff.common.paths import is_hub_id
from jointdiff.data.s3.config import InpainterConfig, ModelStage, StylizerConfig, TextToImageConfig
from jointdiff.data.s3.stages import Image


def load_error(stage: str, source: str, error: BaseException) -> ValueError:
    """One-line error naming the stage and model that failed to load."""
    msg = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ValueError(f"s3: could not load the {stage} model '{source}': {msg}")


def check_source(stage: str, source: str) -> None:
    """Fail early, before any download or GPU work, when a source is neither a directory nor a Hub id."""
    if not source:
        raise ValueError(f"s3 config: {stage}.source is empty")
    if not os.path.isdir(source) and not is_hub_id(source):
        raise ValueError(f"s3: could not load the {stage} model '{source}': not a directory and not a Hub id")


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> cuda when available, else cpu (a Ray GPU actor sees only its own GPU)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto`` -> fp16 on cuda, fp32 elsewhere."""
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return torch_dtype(dtype)


def _dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``dtype=`` on diffusers versions that renamed ``torch_dtype`` (they warn on the old name)."""
    from diffusers.utils import deprecation_utils

    renamed = hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE")
    return {"dtype": dtype} if renamed else {"torch_dtype": dtype}


def load_pipeline(stage: str, cls: Any, spec: ModelStage, device: str, dtype: torch.dtype) -> Any:
    """``cls.from_pretrained(spec.source)`` on ``device``; any failure is a one-line ValueError naming the stage."""
    check_source(stage, spec.source)
    try:
        pipe = cls.from_pretrained(spec.source, revision=spec.revision, **_dtype_kwarg(dtype))
    except Exception as e:
        raise load_error(stage, spec.source, e) from e
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _generators(seeds: list[int], device: str) -> list[torch.Generator]:
    gen_device = "cpu" if not device.startswith("cuda") else device
    return [torch.Generator(gen_device).manual_seed(int(s)) for s in seeds]


class DiffusersTextToImage:
    """Collage generator x_0 <- G(t_o + ", photos of the same") (Algorithm 1, line 11)."""

    def __init__(self, spec: TextToImageConfig, device: str, dtype: torch.dtype) -> None:
        from diffusers import AutoPipelineForText2Image

        self.spec = spec
        self.device = device
        self.pipe = load_pipeline("text_to_image", AutoPipelineForText2Image, spec, device, dtype)

    def __call__(self, prompts: list[str], seeds: list[int]) -> list[Image]:
        """One collage per prompt; each image from its own seeded generator."""
        s = self.spec
        out = self.pipe(
            prompt=prompts,
            height=s.size,
            width=s.size,
            num_inference_steps=s.steps,
            guidance_scale=s.guidance_scale,
            generator=_generators(seeds, self.device),
        )
        return list(out.images)


class DiffusersInpainter:
    """Background inpainting x <- G_I(x, t_s) around the pasted instance (Algorithm 1, line 21)."""

    def __init__(self, spec: InpainterConfig, device: str, dtype: torch.dtype) -> None:
        from diffusers import AutoPipelineForInpainting

        self.spec = spec
        self.device = device
        self.pipe = load_pipeline("inpainter", AutoPipelineForInpainting, spec, device, dtype)

    def __call__(self, images: list[Image], masks: list[Image], prompts: list[str], seeds: list[int]) -> list[Image]:
        """Repaint the white mask area of each canvas with its prompt."""
        s = self.spec
        out = self.pipe(
            prompt=prompts,
            image=images,
            mask_image=masks,
            height=s.size,
            width=s.size,
            strength=1.0,  # the background is blank: generate it from pure noise
            num_inference_steps=s.steps,
            guidance_scale=s.guidance_scale,
            generator=_generators(seeds, self.device),
        )
        return [im.convert("RGB").resize((s.size, s.size)) for im in out.images]


class DiffusersStylizer:
    """InstructPix2Pix restyling by instruction (sec. 3.1, [4])."""

    def __init__(self, spec: StylizerConfig, device: str, dtype: torch.dtype) -> None:
        from diffusers import StableDiffusionInstructPix2PixPipeline

        self.spec = spec
        self.device = device
        self.pipe = load_pipeline("stylizer", StableDiffusionInstructPix2PixPipeline, spec, device, dtype)

    def __call__(self, images: list[Image], instructions: list[str], seeds: list[int]) -> list[Image]:
        """Edit each image by its instruction; output keeps the input size."""
        s = self.spec
        out = self.pipe(
            prompt=instructions,
            image=images,
            num_inference_steps=s.steps,
            guidance_scale=s.guidance_scale,
            image_guidance_scale=s.image_guidance_scale,
            generator=_generators(seeds, self.device),
        )
        return [o.convert("RGB").resize(i.size) for o, i in zip(out.images, images, strict=True)]
