"""jointdiff: JeDi joint-image diffusion and DreamBlend personalisation on diffusers.

The public names below are imported on first use (PEP 562), so that ``jointdiff --help`` loads no
torch or diffusers; the package map is docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_ATTENTION = {
    "CoupledAttnProcessor",
    "PerImageAttnProcessor",
    "has_joint_attention",
    "install_joint_attention",
    "remove_joint_attention",
}
_GUIDANCE = {"cfg", "joint_guidance", "two_stage_guidance"}
_COUPLING = {"Coupling"}
_LAYOUTS = {"InpaintingLayout", "JointLayout", "detect_layout", "joint_layout"}
_MODEL = {"JointUNet", "convert_unet"}
_PIPELINE = {"JointDiffusionPipeline", "JointDiffusionPipelineOutput"}
_SAMPLING = {"GuidedSetDenoiser", "SetConditioning", "replacement_sample"}
_SETS = {"mask_channel", "masked_reference", "pack_sets", "random_known", "unpack_sets"}

__all__ = sorted(_ATTENTION | _COUPLING | _GUIDANCE | _LAYOUTS | _MODEL | _PIPELINE | _SAMPLING | _SETS)


def __getattr__(name: str) -> Any:
    if name in _ATTENTION:
        from jointdiff.jedi import attention as module
    elif name in _COUPLING:
        from jointdiff.jedi import coupling as module
    elif name in _GUIDANCE:
        from jointdiff.jedi import guidance as module
    elif name in _LAYOUTS:
        from jointdiff.jedi import layouts as module
    elif name in _MODEL:
        from jointdiff.jedi import model as module
    elif name in _PIPELINE:
        from jointdiff.jedi import pipeline as module
    elif name in _SAMPLING:
        from jointdiff.jedi import sampling as module
    elif name in _SETS:
        from jointdiff.jedi import sets as module
    else:
        raise AttributeError(f"module 'jointdiff' has no attribute {name!r}")
    return getattr(module, name)
