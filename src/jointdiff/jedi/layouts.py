"""Input layouts of a reference-conditioned U-Net: which channel blocks it takes, in which order.

``jedi``: a U-Net converted by :func:`jointdiff.jedi.model.convert_unet` takes ``concat(M, x_t, x0 (1 - M))``
(JeDi sec. 3.3, supplementary sec. 6), the layout recorded in its config under ``_jointdiff``. This module
imports no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

LAYOUT_KEY = "_jointdiff"  # the jointdiff layout recorded in a converted U-Net's config
CHANNELS = ("mask", "noisy", "reference")


@dataclass(frozen=True)
class JointLayout:
    """Input layout of a converted U-Net: channel blocks in order, and the latent width."""

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


def joint_layout(unet: Any) -> JointLayout | None:
    """The recorded layout of a converted U-Net, or None for a plain one."""
    config = getattr(unet, "config", None)
    d = config.get(LAYOUT_KEY) if config is not None else None
    return JointLayout.from_config(d) if d else None
