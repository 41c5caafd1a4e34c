"""Evaluation harness (JeDi sec. 4, supp. "Evaluation metric"): feature extractors, metrics,
benchmarks, the DreamBooth protocol, reports and plots.

Interfaces (stable; see docs/evaluation.md):
``features.ImageEncoder`` / ``features.DualEncoder``, ``segmenters.Segmenter``,
``benchmarks.Subject`` / ``benchmarks.Benchmark``, ``protocol.Method``.
Heavy modules (transformers models, matplotlib) are imported lazily by the code that needs them, and these
names on first use (PEP 562), so that the command line reads ``evaluation.options`` without loading torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Benchmark", "DualEncoder", "ImageEncoder", "Method", "Segmenter", "Subject"]


def __getattr__(name: str) -> Any:
    if name in ("Benchmark", "Subject"):
        from jointdiff.evaluation import benchmarks as module
    elif name in ("DualEncoder", "ImageEncoder"):
        from jointdiff.evaluation import features as module
    elif name == "Method":
        from jointdiff.evaluation import protocol as module
    elif name == "Segmenter":
        from jointdiff.evaluation import segmenters as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)
