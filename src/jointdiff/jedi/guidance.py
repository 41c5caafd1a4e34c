"""Guidance for joint-image sampling as pure functions (JeDi eq. 3, supplementary eq. 4).

A *branch* is one conditioning of the U-Net: text on/off x references on/off. Each strategy
(:data:`STRATEGIES`, one table) names the branches it needs and mixes their noise predictions;
:class:`Guidance` is the one settings type every entry point uses (defaults, checks, CLI options).

Scales are named by the condition they amplify, so they keep their meaning across strategies:
``text_scale`` multiplies a difference that adds the text, ``image_scale`` one that adds the
references. With ``text_scale == image_scale`` both two-stage strategies reduce to eq. 3.

Two options act on any strategy's result, both off by default (issue 27, the image-quality levers that
the ecosystem documents for strong guidance): *guidance rescale* (Lin et al. 2024, "Common Diffusion Noise
Schedules and Sample Steps Are Flawed", sec. 3.4, eq. 15-16; diffusers' ``guidance_rescale``) pulls each
guided target's standard deviation back towards the fully conditioned prediction's, and a *guidance
interval* (Kynkaanniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample and
Distribution Quality in Diffusion Models"; diffusers' guiders' ``start`` / ``stop``) guides only a range of
the denoising steps and takes the fully conditioned prediction alone (one branch, cheaper) elsewhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

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

# How branches without references see the reference slots: "drop" excludes them from coupled attention
# (the targets form a set of their own, truly reference-free); "mask" keeps them as noisy slots with
# mask 1 and zero reference channels (as reference dropout in training).
NULL_REFERENCE_MODES = ("drop", "mask")

# How the reference slots attend: "joint" couples them with the targets (JeDi as trained); "isolated"
# lets references attend among themselves only (targets still attend to references and targets), so a
# reference's features depend on neither the targets nor the branch and are computed once per step.
REFERENCE_ATTENTION_MODES = ("joint", "isolated")


def rescale_guidance(guided: torch.Tensor, full: torch.Tensor, phi: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2024, sec. 3.4, eq. 15-16) per image of ``(B, N, C, h, w)`` predictions:
    ``phi * guided * std(full) / std(guided) + (1 - phi) * guided``, the standard deviations over each image's
    ``(C, h, w)``; diffusers' ``rescale_noise_cfg`` on the images flattened into its batch."""
    from diffusers.guiders.guider_utils import rescale_noise_cfg

    return rescale_noise_cfg(guided.flatten(0, 1), full.flatten(0, 1), phi).unflatten(0, guided.shape[:2])


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


Mix = Callable[["dict[Branch, torch.Tensor]", float, float], "torch.Tensor"]  # (eps, text scale, image scale)


@dataclass(frozen=True)
class Strategy:
    """One guidance strategy: the branches it evaluates (in batch order), whether it takes the image
    scale (eq. 4) besides the text scale, and how it mixes the branch predictions."""

    name: str
    branches: tuple[Branch, ...]
    two_scales: bool
    mix: Mix
    label: str  # what the web page and the help call it


# Every strategy, in one table: adding one is one entry here (docs/architecture.md).
STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("joint", (NULL, FULL), False, lambda e, ts, _: joint_guidance(e[NULL], e[FULL], ts), "joint (eq. 3)"),
        # eq. 4, eps^1 keeps the references: lambda_1 (image scale) adds them, lambda_2 (text scale) the text
        Strategy(
            "text_first",
            (NULL, IMAGE, FULL),
            True,
            lambda e, ts, im: two_stage_guidance(e[NULL], e[IMAGE], e[FULL], im, ts),
            "text first (eq. 4)",
        ),
        # eq. 4, eps^1 keeps the text: lambda_1 (text scale) adds it, lambda_2 (image scale) the references
        Strategy(
            "image_first",
            (NULL, TEXT, FULL),
            True,
            lambda e, ts, im: two_stage_guidance(e[NULL], e[TEXT], e[FULL], ts, im),
            "image first (eq. 4)",
        ),
        # classifier-free text guidance with the references in both branches (Table 4's "w/o IG")
        Strategy(
            "text_only",
            (IMAGE, FULL),
            False,
            lambda e, ts, _: cfg(e[IMAGE], e[FULL], ts),
            "text only (no image guidance)",
        ),
    )
}


@dataclass(frozen=True)
class Guidance:
    """How a JeDi sample is guided (sec. 3.3, eq. 3 and supplementary eq. 4): the one settings type of the
    pipeline, ``jointdiff generate`` / ``evaluate`` / ``demo``, the web app and the evaluation harness.
    The defaults were chosen by measurement on the shipped miniature (benchmarks/toyworld.md;
    docs/evaluation.md, "Guidance defaults"); the values are checked once, here."""

    strategy: str = "joint"  # joint (eq. 3) | text_first / image_first (eq. 4) | text_only
    scale: float = 5.0  # lambda of eq. 3; the text scale of eq. 4 and of text-only guidance
    image_scale: float | None = None  # the reference scale of eq. 4 (None: the text scale, then eq. 4 is eq. 3)
    null_reference: str = "drop"  # reference slots in reference-free branches: drop | mask
    reference_attention: str = "joint"  # joint (as trained) | isolated (references attend among themselves)
    rescale: float = 0.0  # phi of Lin et al. eq. 16 (diffusers' guidance_rescale): 0 off, 1 the full rescale
    start: float = 0.0  # guide the steps i with int(start * n) <= i < int(stop * n) of n (diffusers' guiders)
    stop: float = 1.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown guidance strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        for name, value in (("guidance scale", self.scale), ("image guidance scale", self.image_scale)):
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.image_scale is not None and self.image_scale != self.scale and not STRATEGIES[self.strategy].two_scales:
            raise ValueError(
                f"{self.strategy} guidance has one scale; the image guidance scale is for text_first/image_first"
            )
        if self.null_reference not in NULL_REFERENCE_MODES:
            raise ValueError(f"null_reference must be one of {NULL_REFERENCE_MODES}, got {self.null_reference!r}")
        if self.reference_attention not in REFERENCE_ATTENTION_MODES:
            raise ValueError(
                f"reference_attention must be one of {REFERENCE_ATTENTION_MODES}, got {self.reference_attention!r}"
            )
        if not 0.0 <= self.rescale <= 1.0:
            raise ValueError(f"guidance rescale must be in [0, 1], got {self.rescale}")
        if not 0.0 <= self.start < self.stop <= 1.0:
            raise ValueError(
                f"the guidance interval needs 0 <= start < stop <= 1 (fractions of the steps), got {self.start}, {self.stop}"
            )

    @property
    def image(self) -> float:
        """The image (reference) scale in effect."""
        return self.scale if self.image_scale is None else self.image_scale

    @property
    def drops_references(self) -> bool:
        """Reference-free branches leave the reference slots out of their sets (``null_reference="drop"``)."""
        return self.null_reference == "drop"

    @property
    def isolates_references(self) -> bool:
        """References attend among themselves only (``reference_attention="isolated"``)."""
        return self.reference_attention == "isolated"

    @property
    def limited(self) -> bool:
        """Guidance covers only part of the denoising steps (``start > 0`` or ``stop < 1``)."""
        return self.start > 0.0 or self.stop < 1.0

    def guided_steps(self, steps: int) -> list[bool]:
        """Per denoising step of ``steps``, whether it is guided: ``int(start * n) <= i < int(stop * n)``, the rule
        of diffusers' guiders, so ``start = 0.2, stop = 0.8`` of 25 steps guides steps 5 to 19."""
        lo, hi = int(self.start * steps), int(self.stop * steps)
        return [lo <= i < hi for i in range(steps)]

    def unguided(self) -> Guidance:
        """These settings on the steps outside the interval: the fully conditioned prediction alone (scale 1)."""
        return replace(self, scale=1.0, image_scale=None, rescale=0.0, start=0.0, stop=1.0)

    def branches(self) -> tuple[Branch, ...]:
        """The branches to evaluate; only the full branch when every scale in use is 1 (no guidance)."""
        strategy = STRATEGIES[self.strategy]
        scales = (self.scale, self.image) if strategy.two_scales else (self.scale,)
        return (FULL,) if all(s == 1.0 for s in scales) else strategy.branches

    def combine(self, eps: dict[Branch, torch.Tensor]) -> torch.Tensor:
        """The guided prediction from the branch predictions (eq. 3 / eq. 4 / text-only CFG)."""
        if set(eps) == {FULL}:
            return eps[FULL]
        guided = STRATEGIES[self.strategy].mix(eps, self.scale, self.image)
        return guided if self.rescale == 0.0 else rescale_guidance(guided, eps[FULL], self.rescale)

    def settings(self) -> dict[str, Any]:
        """The settings as saved with each generated PNG (the pipeline's argument names)."""
        return {
            "guidance": self.strategy,
            "guidance_scale": self.scale,
            "image_guidance_scale": self.image_scale,
            "null_reference": self.null_reference,
            "reference_attention": self.reference_attention,
            "guidance_rescale": self.rescale,
            "guidance_start": self.start,
            "guidance_stop": self.stop,
        }

    @classmethod
    def of(cls, **kwargs: Any) -> Guidance:
        """From the pipeline's argument names (:meth:`settings`' keys); None leaves a field at its default."""
        names = {
            "guidance": "strategy",
            "guidance_scale": "scale",
            "image_guidance_scale": "image_scale",
            "guidance_rescale": "rescale",
            "guidance_start": "start",
            "guidance_stop": "stop",
        }
        fields = {names.get(k, k): v for k, v in kwargs.items() if v is not None}
        return cls(**fields)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """The CLI options of the settings (``--guidance``, ``--guidance-scale``, ``--image-guidance-scale``,
        ``--null-reference``, ``--reference-attention``), with the defaults and choices of this type."""
        d = Guidance()
        parser.add_argument("--guidance", choices=list(STRATEGIES), default=d.strategy, help="guidance strategy")
        parser.add_argument(
            "--guidance-scale", type=float, default=d.scale, help="eq. 3 lambda; the text scale of eq. 4"
        )
        parser.add_argument(
            "--image-guidance-scale",
            type=float,
            default=None,
            help="the reference scale of eq. 4 (text_first/image_first; default: the text scale)",
        )
        parser.add_argument(
            "--null-reference",
            choices=list(NULL_REFERENCE_MODES),
            default=d.null_reference,
            help="reference-free branches: drop the reference slots or keep them masked",
        )
        parser.add_argument(
            "--reference-attention",
            choices=list(REFERENCE_ATTENTION_MODES),
            default=d.reference_attention,
            help="isolated: references attend among themselves only, computed once per step",
        )
        for flag, default, text in (  # the image-quality options (issue 27), one float each
            ("rescale", d.rescale, "phi of guidance rescale (Lin et al. 2024, diffusers' guidance_rescale): 0 off"),
            ("start", d.start, "guide from this fraction of the steps on (earlier: the full prediction alone)"),
            ("stop", d.stop, "guide up to this fraction of the steps (later: the full prediction alone)"),
        ):
            parser.add_argument(f"--guidance-{flag}", type=float, default=default, help=text)

    @classmethod
    def from_args(cls, args: argparse.Namespace | Any) -> Guidance:
        """The settings given by :meth:`add_arguments`' options, or held by any object under the pipeline's
        argument names (``guidance``, ``guidance_scale``, ...)."""
        return cls.of(**{name: getattr(args, name) for name in DEFAULT_NAMES})


DEFAULT = Guidance()
DEFAULT_NAMES = tuple(DEFAULT.settings())  # the pipeline's argument names of the settings
