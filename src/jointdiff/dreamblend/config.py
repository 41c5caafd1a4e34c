"""The settings of a DreamBlend generation (read by ``jointdiff blend`` and the web app without loading torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jointdiff.common.config import doc

REFERENCE_MAPS = ("record", "invert")  # where the reference maps come from: the underfit run, or DDIM inversion


@dataclass
class BlendConfig:
    """Settings of one DreamBlend generation; ``jointdiff blend`` takes its options from the fields' docs."""

    num_inference_steps: int = field(default=50, metadata=doc("DDIM steps of both passes"))
    guidance_scale: float = field(default=7.5, metadata=doc("classifier-free guidance of both passes"))
    cag_scale: float = field(default=0.1, metadata=doc("step size of the attention-guidance gradient step"))
    cag_fraction: float = field(
        default=0.8, metadata=doc("fraction of steps guided (from the start: the layout forms early)")
    )
    collapse_weight: float = field(default=1.0, metadata=doc("weight of the anti-collapse penalty"))
    layers: list[str] | None = field(default=None, metadata=doc("attn2 module name prefixes to guide; None = all"))
    reference_maps: str = field(
        default="record",
        metadata=doc("record the underfit pass's maps, or invert: DDIM-invert the reference image", REFERENCE_MAPS),
    )

    def __post_init__(self) -> None:
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps: must be >= 1, got {self.num_inference_steps}")
        for name in ("cag_scale", "guidance_scale", "collapse_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.cag_fraction <= 1:
            raise ValueError(f"cag_fraction: must be in [0, 1], got {self.cag_fraction}")
        if self.reference_maps not in REFERENCE_MAPS:
            raise ValueError(f"reference_maps: must be one of {REFERENCE_MAPS}, got {self.reference_maps!r}")
