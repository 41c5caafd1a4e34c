"""Telling local paths from Hugging Face Hub ids, for one-line errors before any download."""

from __future__ import annotations

import os
import re

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(source: str | os.PathLike) -> bool:
    """True when ``source`` is not an existing directory and reads like ``owner/name``."""
    s = os.fspath(source)
    return not os.path.isdir(s) and bool(_HUB_ID.match(s)) and not s.startswith(".")
