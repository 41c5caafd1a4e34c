"""Schedulers by short name: the replacement-trick loop (:mod:`jointdiff.jedi.sampling`) runs over any of them.

``SCHEDULERS`` maps a name to a callable that builds the scheduler from a scheduler config (diffusers is
imported only then, so the command line reads these names without loading torch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def _diffusers(class_name: str) -> Callable[[Mapping[str, Any]], Any]:
    def build(config: Mapping[str, Any]) -> Any:
        import diffusers

        return getattr(diffusers, class_name).from_config(config)

    build.__doc__ = f"diffusers.{class_name} from a scheduler config."
    return build


SCHEDULERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "ddim": _diffusers("DDIMScheduler"),
    "dpmpp": _diffusers("DPMSolverMultistepScheduler"),
    "euler": _diffusers("EulerDiscreteScheduler"),
    "euler_a": _diffusers("EulerAncestralDiscreteScheduler"),
    "pndm": _diffusers("PNDMScheduler"),
    "unipc": _diffusers("UniPCMultistepScheduler"),
}


# The shipped miniature's sampling: the fewest steps within the noise of 25 DDIM steps, measured by the ruler on the
# tuning subjects (benchmarks/samplers.md). Other models keep their own scheduler.
SHIPPED_SAMPLER, SHIPPED_STEPS = "dpmpp", 6
DEFAULT_STEPS = 50  # any other model


def make_scheduler(name: str, config: Mapping[str, Any]) -> Any:
    """The scheduler called ``name``, with the schedule of ``config`` (e.g. a model's own scheduler config)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name](config)
