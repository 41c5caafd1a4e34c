"""DreamBlend (Ram et al.): an underfit DreamBooth checkpoint lays out the image, an overfit one paints
the subject, tied by cross-attention guidance.

``crossattn`` records and compares cross-attention maps, ``blend`` samples with guidance across the
checkpoints of a ``jointdiff finetune`` run (:mod:`jointdiff.training.dreambooth`), ``config`` holds
its settings. ``from jointdiff.dreamblend import blend_from_run`` is the entry point the web app uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jointdiff.dreamblend.blend import blend_from_run

__all__ = ["blend_from_run"]


def __getattr__(name: str) -> Any:
    """``blend_from_run`` on first use (PEP 562): ``dreamblend.config`` stays light for the command line."""
    if name == "blend_from_run":
        from jointdiff.dreamblend.blend import blend_from_run

        return blend_from_run
    raise AttributeError(f"module 'jointdiff.dreamblend' has no attribute {name!r}")
