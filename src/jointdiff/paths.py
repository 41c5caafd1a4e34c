"""Where things are: local paths vs Hugging Face Hub ids (one-line errors before any download), the shipped model."""

from __future__ import annotations

import os
import re
from pathlib import Path

SHIPPED_MODEL = Path(__file__).parent / "weights" / "miniature"  # the packaged miniature JeDi (docs/miniature.md)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(source: str | os.PathLike) -> bool:
    """True when ``source`` is not an existing directory and reads like ``owner/name``."""
    s = os.fspath(source)
    return not os.path.isdir(s) and bool(_HUB_ID.match(s)) and not s.startswith(".")


def shipped_model() -> Path | None:
    """The miniature model shipped inside the package, or None while this install has none."""
    return SHIPPED_MODEL if (SHIPPED_MODEL / "model_index.json").is_file() else None
