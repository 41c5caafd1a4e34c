"""Image-set data (JeDi sec. 3.1, supplementary sec. 6): on-disk formats, readers, mixing, batches, cached
latents, and the two generators of sets, ``toyworld`` (procedural) and ``s3`` (the S3 pipeline).

The names below are imported on first use (PEP 562), so that the generators and the formats load no
torch until the streaming code is used.
"""

from __future__ import annotations

from typing import Any

_FORMATS = {
    "SPLIT",
    "BadSetError",
    "ImageSet",
    "WebDatasetWriter",
    "read_folder_set",
    "read_paper_set",
    "write_folder_set",
    "write_paper_set",
}
_SOURCES = {"Part", "open_source"}
_STREAM = {"BatchSpec", "SetBatchStream", "SetSampler", "WeightedSource"}

__all__ = sorted(_FORMATS | _SOURCES | _STREAM)


def __getattr__(name: str) -> Any:
    if name in _FORMATS:
        from jointdiff.data import formats as module
    elif name in _SOURCES:
        from jointdiff.data import sources as module
    elif name in _STREAM:
        from jointdiff.data import stream as module
    else:
        raise AttributeError(f"module 'jointdiff.data' has no attribute {name!r}")
    return getattr(module, name)
