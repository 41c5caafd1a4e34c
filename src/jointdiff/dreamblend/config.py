"""The settings of a DreamBlend generation (read by ``jointdiff blend`` and the web app without loading torch)."""

from __future__ import annotations

from dataclasses import dataclass

REFERENCE_MAPS = ("record", "invert")  # where the reference maps come from: the underfit run, or DDIM inversion


@dataclass
class BlendConfig:
    """Settings of one DreamBlend generation."""

    num_inference_steps: int = 50
    guidance_scale: float = 7.5  # classifier-free guidance of both passes
    cag_scale: float = 0.1  # step size of the gradient step on the latent
    cag_fraction: float = 0.8  # guide the first 80% of the steps (layout forms early)
    collapse_weight: float = 1.0  # weight of the anti-collapse penalty
    layers: list[str] | None = None  # attn2 module name prefixes to guide; None = all
    reference_maps: str = "record"  # or "invert": DDIM-invert the reference image

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
