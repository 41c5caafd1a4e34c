"""Where things are: local paths vs Hugging Face Hub ids (one-line errors before any download), the
weights shipped inside the package, the device a command runs on by default."""

from __future__ import annotations

import os
import re
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"  # package data (pyproject: tool.setuptools.package-data)
SHIPPED_MODEL = WEIGHTS / "miniature"  # the packaged miniature JeDi (docs/miniature.md)
TOY_EVALUATORS = WEIGHTS / "toyworld"  # the toy CLIP, DINO and segmenter (evaluation/toy)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(source: str | os.PathLike) -> bool:
    """True when ``source`` is not an existing directory and reads like ``owner/name``."""
    s = os.fspath(source)
    return not os.path.isdir(s) and bool(_HUB_ID.match(s)) and not s.startswith(".")


def shipped_model() -> Path | None:
    """The miniature model shipped inside the package, or None while this install has none."""
    return SHIPPED_MODEL if (SHIPPED_MODEL / "model_index.json").is_file() else None


def default_device() -> str:
    """``cuda`` when a GPU is available, else ``cpu`` (torch is imported only when this is called)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# What the shipped miniature can and cannot do, in one line (the demo's printout and the web page say it).
MINIATURE_SCOPE = (
    "The shipped miniature knows only the toy world (procedural 64 px objects, trained on two CPU cores): it shows "
    "how JeDi personalises, not photo quality; a real JeDi model runs with --model DIR."
)
