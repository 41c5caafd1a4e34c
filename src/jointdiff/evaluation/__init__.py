"""Evaluation harness (JeDi sec. 4, supp. "Evaluation metric"): feature extractors, metrics,
benchmarks, the DreamBooth protocol, reports and plots.

Interfaces (stable; see docs/evaluation.md):
``features.ImageEncoder`` / ``features.DualEncoder``, ``segmenters.Segmenter``,
``benchmarks.Subject`` / ``benchmarks.Benchmark``, ``protocol.Method``.
Heavy modules (transformers models, matplotlib) are imported lazily by the code that needs them.
"""

from __future__ import annotations

from jointdiff.evaluation.benchmarks import Benchmark, Subject
from jointdiff.evaluation.features import DualEncoder, ImageEncoder
from jointdiff.evaluation.protocol import Method
from jointdiff.evaluation.segmenters import Segmenter

__all__ = ["Benchmark", "DualEncoder", "ImageEncoder", "Method", "Segmenter", "Subject"]
