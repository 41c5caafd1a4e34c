"""The model behind the web app, without Gradio: JeDi requests (sec. 3.3) and DreamBlend requests.

Each request method checks its inputs, runs the model under a lock and returns an :class:`Outcome`
(gallery items, files, a one-line status); none of them raises, whatever a client sends.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jointdiff.app.files import (
    ResultFolders,
    check_steps_and_seed,
    parse_prompts,
    parse_reference_captions,
    read_references,
    toy_pair_references,
    toy_references,
    write_results,
)
from jointdiff.common.images import save_png
from jointdiff.jedi.coupling import SEVERAL_SUBJECTS_REGION_BIAS
from jointdiff.jedi.guidance import DEFAULT, STRATEGIES

if TYPE_CHECKING:
    from jointdiff.jedi.pipeline import JointDiffusionPipeline

log = logging.getLogger(__name__)

NO_DREAMBLEND = "DreamBlend is not available in this install"


@dataclass
class Outcome:
    """What one request shows: gallery items ``(path, caption)``, files to download and a status line."""

    gallery: list[tuple[str, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    status: str = ""


def _failure(e: Exception) -> Outcome:
    """A visible one-line message: the user's mistake as is, a bug as an internal error (traceback in the log)."""
    if isinstance(e, (ValueError, OSError)):
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return Outcome(status=f"**Error:** {msg}")
    log.exception("request failed")
    return Outcome(status=f"**Internal error:** {type(e).__name__}: {e}")


@dataclass
class FirstContact:
    """The JeDi tab's initial values: references, their caption, the prompts and the status line."""

    references: list[str]
    caption: str
    prompts: str
    status: str


class JeDiService:
    """JeDi generation for the app (sec. 3.3): checks uploads, runs the pipeline, writes the PNGs."""

    def __init__(
        self,
        pipe: JointDiffusionPipeline,
        model_name: str,
        work_dir: str | os.PathLike,
        default_steps: int = 30,
        scope: str = "",
    ) -> None:
        self.pipe = pipe
        self.model_name = model_name
        self.default_steps = default_steps  # the page's initial steps (the shipped miniature: its measured count)
        self.scope = scope  # one line on what the model can and cannot do (the shipped miniature: toy world only)
        self.results = ResultFolders(Path(work_dir) / "jedi")
        self.lock = threading.Lock()  # the queue already serialises model events; this guards other callers

    def check(self, files: Sequence[str] | None) -> Outcome:
        """Preview of the uploaded references, or the reason they cannot be used."""
        try:
            refs = read_references(files)
        except Exception as e:
            return _failure(e)
        if not refs:
            return Outcome(status="")
        sizes = ", ".join(f"{im.width}x{im.height}" for im in refs)
        gallery = [(str(p), Path(p).name) for p in files or []]
        return Outcome(gallery=gallery, status=f"{len(refs)} reference image(s) ready ({sizes} px)")

    def toy(self, index: Any, count: Any) -> tuple[list[str], str, str]:
        """Held-out toy-world renders as references: (paths, reference caption, status); never raises."""
        try:
            size = max(64, self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor)
            paths, caption = toy_references(index, count, size, self.results.new())
        except Exception as e:
            return [], "", _failure(e).status
        return [str(p) for p in paths], caption, f"toy-world subject {int(float(index))}: {caption}"

    def toy_pair(self, index: Any) -> tuple[list[str], str, str, str]:
        """Two held-out toy subjects (``index`` and the next) as references, one caption line each, prompts naming
        both, and a status (issue 33); never raises."""
        try:
            size = max(64, self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor)
            paths, captions, prompts = toy_pair_references(index, size, self.results.new())
        except Exception as e:
            return [], "", "", _failure(e).status
        status = f"two toy-world subjects, {' and '.join(captions)}: one caption line per reference"
        return [str(p) for p in paths], "\n".join(captions), "\n".join(prompts), status

    def first_contact(self) -> FirstContact:
        """What the page opens with, so the first click on Generate personalises: held-out toy subject 0 as the
        reference, its caption, two prompts with it, and a status line that says so. Without the toy world (an
        install without it), empty fields and the default prompts."""
        paths, caption, status = self.toy(0, 1)
        if not paths:
            return FirstContact([], "", "a toy on the beach\na toy in the snow", "")
        prompts = f"{caption} on the beach\n{caption} in the snow"
        return FirstContact(
            paths, caption, prompts, f"{status}, a held-out subject the model never saw: press Generate"
        )

    def generate(
        self,
        files: Sequence[str] | None,
        prompts: str,
        reference_prompt: str | None = None,
        guidance: str = DEFAULT.strategy,
        guidance_scale: float = DEFAULT.scale,
        image_guidance_scale: float | None = None,
        steps: Any = 30,
        seed: Any = 0,
        on_step: Callable[[int, int], None] | None = None,
        one_subject_per_reference: bool = False,
    ) -> Outcome:
        """Generate one image per prompt, all of the references' subject; never raises. With
        ``one_subject_per_reference`` (references of several subjects, issue 33) reference i owns the i-th
        side-by-side column of every image (the region bias :data:`SEVERAL_SUBJECTS_REGION_BIAS`)."""
        import torch

        try:
            refs = read_references(files)
            targets = parse_prompts(prompts)
            captions = parse_reference_captions(reference_prompt, len(refs))  # one for all, or one per reference
            steps, seed = check_steps_and_seed(steps, seed)
            two_scales = guidance in STRATEGIES and STRATEGIES[guidance].two_scales  # eq. 4: text and image scales
            settings = {
                "model": self.model_name,
                "references": [Path(p).name for p in files or []],
                "reference_prompts": captions,
                "steps": steps,
                "guidance": guidance,
                "guidance_scale": float(guidance_scale),
                "image_guidance_scale": float(image_guidance_scale) if two_scales else None,
                "region_bias": SEVERAL_SUBJECTS_REGION_BIAS if one_subject_per_reference else 0.0,
                "scheduler": type(self.pipe.scheduler).__name__,
                "seed": seed,
            }

            def callback(pipe: Any, i: int, t: Any, tensors: Any) -> None:
                if on_step is not None:
                    on_step(i + 1, steps)

            with self.lock:
                images = self.pipe(
                    targets,
                    reference_images=refs or None,
                    reference_prompts=captions or None,
                    num_inference_steps=steps,
                    guidance_scale=float(guidance_scale),
                    image_guidance_scale=settings["image_guidance_scale"],
                    guidance=guidance,
                    region_bias=settings["region_bias"],
                    generator=torch.Generator().manual_seed(seed),
                    callback_on_step_end=callback,
                ).images
            paths, grid, archive = write_results(self.results.new(), refs, targets, images, settings)
        except Exception as e:
            return _failure(e)
        note = "" if refs else " (no references: joint text-to-image)"
        return Outcome(
            gallery=[(str(p), prompt) for p, prompt in zip(paths, targets, strict=True)],
            files=[str(archive), str(grid), *map(str, paths)],
            status=f"{len(images)} image(s), {steps} steps, seed {seed}{note}",
        )


class BlendService:
    """DreamBlend on fine-tuned run directories given at start-up (never a path typed in the page)."""

    def __init__(self, runs: Sequence[str | os.PathLike], work_dir: str | os.PathLike) -> None:
        self.runs = {str(Path(r)): Path(r) for r in runs}
        self.results = ResultFolders(Path(work_dir) / "dreamblend")
        self.lock = threading.Lock()
        self.blend_from_run: Callable[..., Any] | None = None
        self.unavailable: str | None = None
        try:
            from jointdiff.dreamblend import blend_from_run

            self.blend_from_run = blend_from_run
        except (ImportError, AttributeError) as e:
            self.unavailable = f"{NO_DREAMBLEND} ({type(e).__name__}: {e})."

    def checkpoints(self, run: str | None) -> list[int]:
        """Saved checkpoint steps of a run the server was started with (empty when unknown)."""
        if self.unavailable or run not in self.runs:
            return []
        try:
            from jointdiff.training.dreambooth import list_checkpoints

            return list_checkpoints(self.runs[run])
        except Exception:  # no checkpoints yet, or an older layout: the blend itself reports why
            return []

    def example_prompt(self, run: str | None) -> str:
        """A prompt with the run's identifier and class word ("a photo of sks toy on the beach")."""
        try:
            from jointdiff.training.dreambooth import run_config

            cfg = run_config(self.runs[run])
            return f"a photo of {cfg.identifier} {cfg.class_word} on the beach"
        except Exception:  # unknown run layout: a generic example
            return "a photo of sks toy on the beach"

    def run(
        self,
        run: str | None,
        prompt: str,
        underfit: Any = None,
        overfit: Any = None,
        seed: Any = 0,
        steps: Any = 50,
    ) -> Outcome:
        """The underfit checkpoint's reference and the overfit checkpoint's guided image; never raises."""
        try:
            if self.blend_from_run is None:
                raise ValueError(self.unavailable or NO_DREAMBLEND)
            if run not in self.runs:
                raise ValueError(f"pick one of the run directories the server was started with, got {run!r}")
            if not (prompt or "").strip():
                raise ValueError("type a prompt")
            steps, seed = check_steps_and_seed(steps, seed)
            chosen = {k: _optional_step(k, v) for k, v in (("underfit", underfit), ("overfit", overfit))}
            with self.lock:
                result = self.blend_from_run(
                    self.runs[run], prompt.strip(), **chosen, seed=seed, num_inference_steps=steps
                )
            out = self.results.new()
            settings = {"run": Path(run).name, "steps": steps, "seed": seed}
            settings |= {"underfit": result.underfit_step, "overfit": result.overfit_step}
            items = []
            for name, image, caption in (
                ("reference", result.reference, f"underfit checkpoint, step {result.underfit_step}"),
                ("dreamblend", result.image, f"DreamBlend, overfit step {result.overfit_step}"),
            ):
                path = save_png(image, out / f"{name}.png", {**settings, "image": name}, prompt.strip())
                items.append((str(path), caption))
        except Exception as e:
            return _failure(e)
        return Outcome(gallery=items, files=[p for p, _ in items], status=f"DreamBlend done, seed {seed}")


def _optional_step(name: str, value: Any) -> int | None:
    if value is None or value in ("", "auto"):
        return None
    try:
        step = float(value)
    except (TypeError, ValueError):
        step = -1.0
    if step != int(step) or step < 0:
        raise ValueError(f"{name} step must be a non-negative integer or empty (automatic), got {value}")
    return int(step)
