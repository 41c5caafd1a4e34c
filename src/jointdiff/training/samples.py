"""Sample grids and monitors during training (JeDi sec. 3.3 sampling through :class:`JointDiffusionPipeline`).

Both run on the EMA weights, swapped in for the moment; neither can end a long run (a failure is logged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from jointdiff.training.config import Config

logger = logging.getLogger(__name__)


@contextmanager
def ema_pipeline(accelerator: Any, components: dict[str, Any], model: Any, text_model: Any, ema: Any) -> Iterator[Any]:
    """A :class:`JointDiffusionPipeline` of the model being trained, with the EMA weights swapped in meanwhile."""
    from jointdiff.jedi.pipeline import JointDiffusionPipeline

    modules = {"unet": accelerator.unwrap_model(model).unet, "text_encoder": accelerator.unwrap_model(text_model)}
    if ema is not None:
        ema.store(modules)
        ema.copy_to(modules)
    try:
        pipe = JointDiffusionPipeline(**dict(components, **modules))
        pipe.set_progress_bar_config(disable=True)
        with accelerator.autocast():
            yield pipe
    finally:
        if ema is not None:
            ema.restore(modules)


def _toyworld_monitor(pipe: Any, config: Config) -> dict[str, float]:
    """The reference probe on held-out toy subjects (:mod:`jointdiff.evaluation.toy.probe`)."""
    from jointdiff.evaluation.toy.probe import reference_probe

    m = config.monitor
    return reference_probe(pipe, subjects=m.subjects, steps=m.steps, guidance_scale=m.guidance_scale)


def _toyworld_pairs_monitor(pipe: Any, config: Config) -> dict[str, float]:
    """The reference probe and the two-subject probe (issue 33, :func:`jointdiff.evaluation.toy.pairs.pair_probe`)."""
    from jointdiff.evaluation.toy.pairs import pair_probe

    m = config.monitor
    two = pair_probe(pipe, m.subjects, m.steps, m.guidance_scale, region_bias=m.region_bias)
    return _toyworld_monitor(pipe, config) | two


# monitor.kind -> measurement of a pipeline (lazy imports inside): add a monitor with one line.
MONITORS: dict[str, Callable[[Any, Config], dict[str, float]]] = {
    "toyworld": _toyworld_monitor,
    "toyworld_pairs": _toyworld_pairs_monitor,
}


def run_monitor(
    config: Config, accelerator: Any, components: dict[str, Any], model: Any, text_model: Any, ema: Any
) -> dict[str, float]:
    """The configured monitor's measurements of the EMA model (empty when it fails: a long run goes on)."""
    try:
        with ema_pipeline(accelerator, components, model, text_model, ema) as pipe:
            return MONITORS[config.monitor.kind](pipe, config)
    except Exception as e:  # a failed measurement must not end a long run
        logger.warning("monitor %s failed: %s: %s", config.monitor.kind, type(e).__name__, e)
        return {}


def write_sample_grid(
    config: Config,
    accelerator: Any,
    components: dict[str, Any],
    model: Any,
    text_model: Any,
    ema: Any,
    out: Path,
    step: int,
) -> None:
    """Generate the configured prompts with the EMA weights and write ``samples/step-XXXXXXXX.png`` (main process)."""
    import PIL.Image

    from jointdiff.common.images import captioned_grid

    s = config.sample
    if not s.prompts:
        return
    try:
        with ema_pipeline(accelerator, components, model, text_model, ema) as pipe:
            refs = [PIL.Image.open(p).convert("RGB") for p in s.reference_images]
            generator = torch.Generator(device=accelerator.device).manual_seed(s.seed)
            images = pipe(
                prompt=list(s.prompts),
                reference_images=refs or None,
                reference_prompts=list(s.reference_prompts) or None,
                num_inference_steps=s.num_inference_steps,
                guidance_scale=s.guidance_scale,
                height=config.data.resolution,
                width=config.data.resolution,
                generator=generator,
            ).images
        rows = [[(im, f"reference: {p}") for im, p in zip(refs, s.reference_prompts or [""] * len(refs), strict=False)]]
        rows = [r for r in rows if r] + [[(im, p) for im, p in zip(images, s.prompts, strict=False)]]
        grid = captioned_grid(rows, cell=min(256, max(128, config.data.resolution)))
        (out / "samples").mkdir(parents=True, exist_ok=True)
        grid.save(out / "samples" / f"step-{step:08d}.png")
        for tracker in accelerator.trackers:
            if tracker.name == "tensorboard":
                import numpy as np

                tracker.log_images({"samples": np.asarray(grid)[None]}, step=step, dataformats="NHWC")
    except Exception as e:  # a failed preview must not end a long run
        logger.warning("sample grid at step %d failed: %s: %s", step, type(e).__name__, e)
