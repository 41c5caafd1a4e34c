"""Input layouts of a reference-conditioned U-Net: which channel blocks it takes, in which order.

Two layouts carry JeDi's condition (sec. 3.3, supplementary sec. 6: a mask and the masked clean image
beside the noisy latent):

- ``jedi``: a U-Net converted by :func:`jointdiff.jedi.model.convert_unet`, ``concat(M, x_t, x0 (1 - M))``,
  the layout recorded in its config under ``_jointdiff``; an unknown slot's reference channels are zero.
- ``inpainting``: a stock diffusers inpainting U-Net (``StableDiffusionInpaintPipeline``, 9 channels for
  SD 1.x/2.x), ``concat(x_t, M, z_masked)``, used as it is, without conversion. Its mask has the same
  convention as JeDi's (1 = to be painted), but an unknown slot's masked-image channels hold the VAE
  latent of a fully masked image (a mid-grey image, ``image * (mask < 0.5)`` in pixels), not zeros:
  the pipeline supplies that latent (``empty``).

The layout is read from the U-Net config (:func:`detect_layout`), so a model is recognised before its
weights load. This module imports no torch: the command line reads :data:`LAYOUTS` for its choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

LAYOUT_KEY = "_jointdiff"  # the jointdiff layout recorded in a converted U-Net's config
CHANNELS = ("mask", "noisy", "reference")
INPAINTING_CHANNELS = ("noisy", "mask", "masked_image")
LAYOUTS = ("auto", "jedi", "inpainting")  # auto: the recorded layout, else a stock inpainting U-Net


@dataclass(frozen=True)
class JointLayout:
    """Input layout of a converted U-Net: channel blocks in order, and the latent width."""

    kind: ClassVar[str] = "jedi"
    needs_empty: ClassVar[bool] = False  # an unknown slot's reference channels are zero (x0 (1 - M))

    latent_channels: int  # channels of one latent (4 for SD 1.x/2.x); noisy and reference blocks each
    channels: tuple[str, ...] = CHANNELS  # mask (1 channel) | noisy latent | masked clean latent
    version: int = 1  # bumped if the layout ever changes

    @property
    def in_channels(self) -> int:
        """Channels of the U-Net input: 1 (mask) + 2 * latent channels."""
        return 1 + 2 * self.latent_channels

    def to_config(self) -> dict[str, Any]:
        """JSON-able form stored in the U-Net config."""
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_config(cls, d: dict[str, Any]) -> JointLayout:
        """Inverse of :meth:`to_config`, with a precise error for unknown layouts."""
        layout = cls(
            latent_channels=int(d["latent_channels"]), channels=tuple(d["channels"]), version=int(d["version"])
        )
        if layout.channels != CHANNELS or layout.version != 1:
            raise ValueError(f"unsupported jointdiff layout {d}; this version reads {CHANNELS} version 1")
        return layout


@dataclass(frozen=True)
class InpaintingLayout:
    """A stock diffusers inpainting U-Net: ``concat(x_t, M, z_masked)``, as ``StableDiffusionInpaintPipeline``
    feeds it; unknown slots need the latent of a fully masked image (``empty``)."""

    kind: ClassVar[str] = "inpainting"
    needs_empty: ClassVar[bool] = True

    latent_channels: int
    channels: tuple[str, ...] = INPAINTING_CHANNELS

    @property
    def in_channels(self) -> int:
        """Channels of the U-Net input: latent + 1 (mask) + latent."""
        return 1 + 2 * self.latent_channels


Layout = JointLayout | InpaintingLayout


def joint_layout(unet: Any) -> JointLayout | None:
    """The recorded layout of a converted U-Net, or None for a plain one."""
    config = getattr(unet, "config", None)
    d = config.get(LAYOUT_KEY) if config is not None else None
    return JointLayout.from_config(d) if d else None


def detect_layout(config: Mapping[str, Any], layout: str = "auto", source: str = "the model") -> Layout:
    """The input layout of a U-Net from its config; ``layout`` forces one (a one-line error where it cannot be).

    ``auto``: the recorded jointdiff layout, else a U-Net with ``in_channels = 2 * out_channels + 1`` is a stock
    inpainting U-Net. ``jedi``: also reads such an unrecorded U-Net in JeDi's channel order (a JeDi model whose
    config lost the record). ``inpainting``: refuses a recorded jointdiff U-Net.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if "in_channels" not in config:
        raise ValueError(f"{source}: the U-Net config has no in_channels (not a diffusers UNet2DConditionModel?)")
    recorded = config.get(LAYOUT_KEY)
    if recorded:
        if layout == "inpainting":
            raise ValueError(
                f"{source}: the U-Net is a jointdiff model (its config records the jointdiff layout), "
                "not a stock inpainting model; use --layout auto or jedi"
            )
        return JointLayout.from_config(recorded)
    c_in = int(config["in_channels"])
    c = int(config.get("out_channels") or c_in)
    if c_in != 2 * c + 1:
        raise ValueError(
            f"{source}: the U-Net is not reference-conditioned: neither a jointdiff model nor a stock inpainting "
            f"model (in_channels={c_in}, out_channels={c}; an inpainting U-Net takes {2 * c + 1} = noisy {c} + "
            f"mask 1 + masked image {c}); convert a text-to-image model with `jointdiff convert`"
        )
    return JointLayout(latent_channels=c) if layout == "jedi" else InpaintingLayout(latent_channels=c)
