"""jointdiff: JeDi joint-image diffusion and DreamBlend personalisation on diffusers."""

from jointdiff.attention import (
    CoupledAttnProcessor,
    PerImageAttnProcessor,
    has_joint_attention,
    install_joint_attention,
    remove_joint_attention,
)
from jointdiff.guidance import cfg, joint_guidance, two_stage_guidance
from jointdiff.model import JointLayout, JointUNet, convert_unet, joint_layout
from jointdiff.pipeline import JointDiffusionPipeline, JointDiffusionPipelineOutput
from jointdiff.sampling import GuidedSetDenoiser, SetConditioning, replacement_sample
from jointdiff.sets import mask_channel, masked_reference, pack_sets, random_known, unpack_sets

__version__ = "0.1.0"

__all__ = [
    "CoupledAttnProcessor",
    "GuidedSetDenoiser",
    "JointDiffusionPipeline",
    "JointDiffusionPipelineOutput",
    "JointLayout",
    "JointUNet",
    "PerImageAttnProcessor",
    "SetConditioning",
    "cfg",
    "convert_unet",
    "has_joint_attention",
    "install_joint_attention",
    "joint_guidance",
    "joint_layout",
    "mask_channel",
    "masked_reference",
    "pack_sets",
    "random_known",
    "remove_joint_attention",
    "replacement_sample",
    "two_stage_guidance",
    "unpack_sets",
]
