"""The toy world: a procedural same-subject world (JeDi's S3 data in miniature), a source of image sets.

Subjects (``subjects`` of ``parts``, built by ``recipes``) are composite objects deterministic from an
integer seed; ``generator`` renders them (``render``) into DreamBooth scenes (``scenes``) with prompt
edits (``edits``), stylisation (``style``) and captions (``captions``), each render with its exact
foreground mask; ``writers`` stores sets in the training formats. Its evaluators, benchmark and probe
are toy feature extractors of the evaluation harness (``jointdiff.evaluation.toy``); they train on the
training shell (``jointdiff.training.evaluators``). See docs/toyworld.md.
"""

from __future__ import annotations

from jointdiff.data.toyworld.captions import parse_prompt, prompt_templates
from jointdiff.data.toyworld.generator import ToySet, View, make_set, render_view, view_rng
from jointdiff.data.toyworld.subjects import SEED_RANGES, SubjectSpec, make_subject, subject_seed

__all__ = [
    "SEED_RANGES",
    "SubjectSpec",
    "ToySet",
    "View",
    "make_set",
    "make_subject",
    "parse_prompt",
    "prompt_templates",
    "render_view",
    "subject_seed",
    "view_rng",
]
