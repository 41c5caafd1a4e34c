"""Methods the CLI can evaluate: ``jedi`` (a JointDiffusionPipeline) and ``real`` (the real images
themselves, the upper-bound reference row). Factories take ``MethodOptions``."""

from __future__ import annotations

import dataclasses
from typing import Any

import PIL.Image
import torch

from jointdiff.common.config import torch_dtype
from jointdiff.evaluation.benchmarks import Subject
from jointdiff.evaluation.options import MethodOptions
from jointdiff.evaluation.protocol import stable_int
from jointdiff.jedi.guidance import DEFAULT


class JeDiMethod:
    """JeDi (sec. 3.3): each prompt is one target generated jointly with the references (set size refs + 1).

    The target prompt is the template filled with the class word (no identifier: JeDi is finetuning-free);
    every reference is captioned ``options.reference_caption`` with the class word. Each image uses its own
    generator seeded by (seed, prompt), so its noise does not depend on which other prompts share the call;
    ``options.batch_size`` sets run in one batch (a batch changes results by float rounding only).
    """

    identifier = None

    def __init__(self, pipe: Any, options: MethodOptions, name: str = "jedi", use_references: bool = True) -> None:
        self.pipe = pipe
        self.options = options
        self.name = name
        self.use_references = use_references  # False: the same pipeline as a plain text-to-image model

    def generate(
        self, subject: Subject, references: list[PIL.Image.Image], prompts: list[str], seed: int
    ) -> list[PIL.Image.Image]:
        """One image per prompt, each from an independent set of the references and one target."""
        o = self.options
        guidance = o.guidance
        if not self.use_references:  # text-to-image: eq. 3 with no references is classifier-free guidance
            guidance = dataclasses.replace(guidance, strategy=DEFAULT.strategy, image_scale=None)
        refs = [im.convert("RGB") for im in references]
        caption = o.reference_caption.format(subject.class_word)
        with_refs = {"reference_images": refs, "reference_prompts": [caption] * len(refs), **o.coupling.settings()}
        images: list[PIL.Image.Image] = []
        for start in range(0, len(prompts), o.batch_size):  # up to batch_size independent sets per call
            chunk = prompts[start : start + o.batch_size]
            out = self.pipe(
                prompt=[[p] for p in chunk],  # one set (references + one target) per prompt
                **(with_refs if self.use_references else {}),
                num_inference_steps=o.steps,
                **guidance.settings(),
                height=o.resolution,
                width=o.resolution,
                generator=[torch.Generator("cpu").manual_seed(stable_int(seed, p)) for p in chunk],
                output_type="pil",
            )
            images += out.images
        return images


def _jedi_pipeline(options: MethodOptions, method: str) -> Any:
    from jointdiff.jedi.pipeline import JointDiffusionPipeline

    if not options.model:
        raise ValueError(f"--method {method} needs --model DIR (a jointdiff pipeline directory)")
    kwargs = {"torch_dtype": torch_dtype(options.dtype)} if options.dtype else {}
    if options.layout is not None:
        kwargs["layout"] = options.layout
    pipe = JointDiffusionPipeline.from_pretrained(options.model, **kwargs).to(options.device)
    if options.scheduler is not None:
        from jointdiff.jedi.schedulers import make_scheduler

        pipe.scheduler = make_scheduler(options.scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_jedi(options: MethodOptions) -> JeDiMethod:
    """A JointDiffusionPipeline from ``options.model`` (a converted or trained jointdiff directory / Hub id)."""
    return JeDiMethod(_jedi_pipeline(options, "jedi"), options)


def load_jedi_noref(options: MethodOptions) -> JeDiMethod:
    """The same pipeline without references: a plain text-to-image row (classifier-free guidance on
    the text, ``options.guidance.scale``), the inputs ignored."""
    return JeDiMethod(_jedi_pipeline(options, "jedi-noref"), options, name="jedi-noref", use_references=False)


class RealImagesMethod:
    """The "real images" row: for each prompt, a real image of the subject that is not an input
    (cycling through them; the inputs themselves when the subject has no other image), resized so
    its shorter side is ``resolution`` like a generator's output (None keeps the original size)."""

    identifier = None
    name = "real"

    def __init__(self, resolution: int | None = 512) -> None:
        self.resolution = resolution

    def generate(
        self, subject: Subject, references: list[PIL.Image.Image], prompts: list[str], seed: int
    ) -> list[PIL.Image.Image]:
        """``len(prompts)`` real images; ``seed`` is unused."""
        refs = {id(r) for r in references}
        others = [im for im in subject.images if id(im) not in refs] or list(subject.images)
        return [self._resize(others[k % len(others)].convert("RGB")) for k in range(len(prompts))]

    def _resize(self, image: PIL.Image.Image) -> PIL.Image.Image:
        if self.resolution is None or min(image.size) <= self.resolution:
            return image
        scale = self.resolution / min(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        return image.resize(size, PIL.Image.Resampling.BICUBIC)


def load_real(options: MethodOptions) -> RealImagesMethod:
    """The real-images method (needs no model); ``--resolution`` sets the shorter side (default 512)."""
    return RealImagesMethod(options.resolution or 512)
