"""What ``jointdiff evaluate`` can name: benchmarks, methods, backbones and segmenters (name -> factory).

Each factory imports its heavy dependencies (transformers models, a pipeline) only when it is called;
importing this module loads the harness and the toy world, nothing more. Add an entry with one line
(docs/architecture.md says how to write the factory).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jointdiff.evaluation.benchmarks import load_dreambooth
from jointdiff.evaluation.features import load_clip, load_dino
from jointdiff.evaluation.methods import load_jedi, load_jedi_noref, load_real
from jointdiff.evaluation.segmenters import load_clipseg, load_mask_files, load_semantic
from jointdiff.evaluation.toy.benchmark import load_toy_real, load_toy_text_only, load_toyworld
from jointdiff.evaluation.toy.evaluators import load_toy_dual, load_toy_identity, load_toy_parts, load_toy_segmenter

# name -> factory(data: str | None) -> Benchmark
BENCHMARKS: Mapping[str, Callable[..., Any]] = {"dreambooth": load_dreambooth, "toyworld": load_toyworld}

# name -> factory(options: MethodOptions) -> Method
METHODS: Mapping[str, Callable[..., Any]] = {
    "jedi": load_jedi,
    "jedi-noref": load_jedi_noref,
    "real": load_real,
    "toy-real": load_toy_real,
    "toy-text-only": load_toy_text_only,
}

# name -> factory(source: str | None, device: str) -> ImageEncoder (CLIP-T needs a DualEncoder)
BACKBONES: Mapping[str, Callable[..., Any]] = {
    "clip": load_clip,
    "dino": load_dino,
    "toy-clip": load_toy_dual,
    "toy-dino": load_toy_identity,
    "toy-parts": load_toy_parts,
}

# name -> factory(source: str | None, device: str) -> Segmenter
SEGMENTERS: Mapping[str, Callable[..., Any]] = {
    "clipseg": load_clipseg,
    "semantic": load_semantic,
    "masks": load_mask_files,
    "toy": load_toy_segmenter,
}


def resolve(table: Mapping[str, Callable[..., Any]], name: str, kind: str) -> Callable[..., Any]:
    """The factory named ``name``; ValueError lists the choices."""
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(table))}")
    return table[name]
