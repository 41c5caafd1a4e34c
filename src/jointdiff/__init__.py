"""jointdiff: JeDi joint-image diffusion and DreamBlend personalisation on diffusers."""

from jointdiff.attention import (
    CoupledAttnProcessor,
    PerImageAttnProcessor,
    has_joint_attention,
    install_joint_attention,
    remove_joint_attention,
)
from jointdiff.model import JointLayout, JointUNet, convert_unet, joint_layout
from jointdiff.pipeline import JointDiffusionPipeline
from jointdiff.sets import mask_channel, masked_reference, pack_sets, random_known, unpack_sets

__version__ = "0.1.0"

__all__ = [
    "CoupledAttnProcessor",
    "JointDiffusionPipeline",
    "JointLayout",
    "JointUNet",
    "PerImageAttnProcessor",
    "convert_unet",
    "has_joint_attention",
    "install_joint_attention",
    "joint_layout",
    "mask_channel",
    "masked_reference",
    "pack_sets",
    "random_known",
    "remove_joint_attention",
    "unpack_sets",
]
