"""Guidance for joint-image sampling as pure functions (JeDi eq. 3, supplementary eq. 4).

A *branch* is one conditioning of the U-Net: text on/off x references on/off. Each strategy
names the branches it needs; :func:`combine` mixes their noise predictions.

Scales are named by the condition they amplify, so they keep their meaning across strategies:
``text_scale`` multiplies a difference that adds the text, ``image_scale`` one that adds the
references. With ``text_scale == image_scale`` both two-stage strategies reduce to eq. 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pure functions of tensors: importing this module loads no torch (CLI choices come from here)
    import torch


@dataclass(frozen=True)
class Branch:
    """One conditioning of the U-Net: which of the two conditions are kept."""

    text: bool
    references: bool


NULL = Branch(text=False, references=False)  # eps^0: text and references null
TEXT = Branch(text=True, references=False)
IMAGE = Branch(text=False, references=True)
FULL = Branch(text=True, references=True)

# Strategy -> the branches it evaluates, in batch order.
STRATEGIES: dict[str, tuple[Branch, ...]] = {
    "joint": (NULL, FULL),  # eq. 3
    "text_first": (NULL, IMAGE, FULL),  # eq. 4, eps^1 keeps the references
    "image_first": (NULL, TEXT, FULL),  # eq. 4, eps^1 keeps the text
    "text_only": (IMAGE, FULL),  # classifier-free text guidance, references always on ("w/o IG")
}
ONE_SCALE = ("joint", "text_only")  # strategies with one scale; the two-stage ones (eq. 4) take two

# What the pipeline, `jointdiff generate`, `demo`, `serve` and `evaluate` use unless told otherwise:
# chosen by measurement on the shipped miniature (benchmarks/toyworld.md; docs/evaluation.md, "Guidance
# defaults"). An eq. 4 image scale left unset equals the text scale (then eq. 4 is eq. 3).
DEFAULT_STRATEGY = "joint"
DEFAULT_SCALE = 5.0
DEFAULT_NULL_REFERENCE = "drop"

# How branches without references see the reference slots: "drop" excludes them from coupled attention
# (the targets form a set of their own, truly reference-free); "mask" keeps them as noisy slots with
# mask 1 and zero reference channels (as reference dropout in training).
NULL_REFERENCE_MODES = ("drop", "mask")

# How the reference slots attend: "joint" couples them with the targets (JeDi as trained); "isolated"
# lets references attend among themselves only (targets still attend to references and targets), so a
# reference's features depend on neither the targets nor the branch and are computed once per step.
REFERENCE_ATTENTION_MODES = ("joint", "isolated")


def check_null_reference(mode: str) -> None:
    """Raise a precise error for an unknown null-reference mode."""
    if mode not in NULL_REFERENCE_MODES:
        raise ValueError(f"null_reference must be one of {NULL_REFERENCE_MODES}, got {mode!r}")


def check_reference_attention(mode: str) -> None:
    """Raise a precise error for an unknown reference-attention mode."""
    if mode not in REFERENCE_ATTENTION_MODES:
        raise ValueError(f"reference_attention must be one of {REFERENCE_ATTENTION_MODES}, got {mode!r}")


def cfg(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance, ``uncond + scale * (cond - uncond)`` (Ho & Salimans)."""
    return uncond + scale * (cond - uncond)


def joint_guidance(eps_null: torch.Tensor, eps_full: torch.Tensor, scale: float) -> torch.Tensor:
    """JeDi eq. 3: ``eps^0 + lambda * (eps(x_t, x_hat, M) - eps^0)``."""
    return cfg(eps_null, eps_full, scale)


def two_stage_guidance(
    eps_null: torch.Tensor, eps_partial: torch.Tensor, eps_full: torch.Tensor, scale_1: float, scale_2: float
) -> torch.Tensor:
    """JeDi eq. 4: ``eps^0 + lambda_1 (eps^1 - eps^0) + lambda_2 (eps_full - eps^1)``."""
    return eps_null + scale_1 * (eps_partial - eps_null) + scale_2 * (eps_full - eps_partial)


def check_scales(strategy: str, text_scale: float, image_scale: float) -> None:
    """Raise a precise error for an unknown strategy or a negative scale."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown guidance strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    for name, value in (("guidance scale", text_scale), ("image guidance scale", image_scale)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def branches_for(strategy: str, text_scale: float, image_scale: float) -> tuple[Branch, ...]:
    """The branches a strategy needs; only the full branch when every scale is 1 (no guidance)."""
    check_scales(strategy, text_scale, image_scale)
    scales = (text_scale,) if strategy in ONE_SCALE else (text_scale, image_scale)
    if all(s == 1.0 for s in scales):
        return (FULL,)
    return STRATEGIES[strategy]


def combine(eps: dict[Branch, torch.Tensor], strategy: str, text_scale: float, image_scale: float) -> torch.Tensor:
    """Mix branch predictions by ``strategy`` (JeDi eq. 3 / eq. 4 / text-only CFG)."""
    if set(eps) == {FULL}:
        return eps[FULL]
    if strategy == "joint":
        return joint_guidance(eps[NULL], eps[FULL], text_scale)
    if strategy == "text_first":  # eps^1 = references only: lambda_1 adds references, lambda_2 adds text
        return two_stage_guidance(eps[NULL], eps[IMAGE], eps[FULL], image_scale, text_scale)
    if strategy == "image_first":  # eps^1 = text only: lambda_1 adds text, lambda_2 adds references
        return two_stage_guidance(eps[NULL], eps[TEXT], eps[FULL], text_scale, image_scale)
    if strategy == "text_only":
        return cfg(eps[IMAGE], eps[FULL], text_scale)
    raise ValueError(f"unknown guidance strategy {strategy!r}")
