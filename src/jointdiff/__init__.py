"""jointdiff: JeDi joint-image diffusion and DreamBlend personalisation on diffusers.

Names are imported lazily (PEP 562) so that ``jointdiff --help`` does not load torch/diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CoupledAttnProcessor": "attention",
    "PerImageAttnProcessor": "attention",
    "has_joint_attention": "attention",
    "install_joint_attention": "attention",
    "remove_joint_attention": "attention",
    "cfg": "guidance",
    "joint_guidance": "guidance",
    "two_stage_guidance": "guidance",
    "JointLayout": "model",
    "JointUNet": "model",
    "convert_unet": "model",
    "joint_layout": "model",
    "JointDiffusionPipeline": "pipeline",
    "JointDiffusionPipelineOutput": "pipeline",
    "GuidedSetDenoiser": "sampling",
    "SetConditioning": "sampling",
    "replacement_sample": "sampling",
    "mask_channel": "sets",
    "masked_reference": "sets",
    "pack_sets": "sets",
    "random_known": "sets",
    "unpack_sets": "sets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"jointdiff.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'jointdiff' has no attribute {name!r}")
