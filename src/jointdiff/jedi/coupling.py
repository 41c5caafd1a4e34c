"""Training-free options of the coupled self-attention (JeDi sec. 3.2): how strongly, where and when a set is
coupled. One settings type, :class:`Coupling`, for the pipeline, ``jointdiff generate`` and the sampler.

The training-free personalisation methods built on extended self-attention (diptych prompting;
ConsiStory, StoryDiffusion) tune what JeDi's training fixes. Each option applies to a stock inpainting
model used without training and to the trained JeDi model alike; every default leaves JeDi's coupled
attention exactly as it is, except that a stock inpainting model couples the first half of the steps
(:data:`STOCK_INPAINTING_COUPLING`, measured in ``benchmarks/training_free.md``):

- ``reference_bias`` (beta): the logit of every reference key gets ``+ beta`` for the queries of target
  images, ``a_ij = softmax_j(q_i . k_j / sqrt(d) + beta [i in a target, j in a reference])``; equivalently
  the targets' unnormalised attention weights on reference tokens are multiplied by ``exp(beta)``.
  Reference queries are unchanged. ``0``: JeDi's coupled attention; ``-inf``: the targets ignore the
  references (coupled only with each other).
- ``layers``: the U-Net blocks whose self-attention is coupled, by name: ``down``, ``mid``, ``up`` (every
  block of that part) or one block, ``down.1``, ``up.2`` (``down_blocks.1``, ...: one resolution). The
  self-attention of the other blocks attends per image, as in a set of one.
- ``steps``: the fraction f of the sampling steps that couple, from the first: ``ceil(f S)`` of S steps;
  the later steps attend per image.
- ``region_bias`` (gamma >= 0; issue 33, references of several subjects): with n >= 2 references in a set, reference
  i (in slot order) owns the i-th of n side-by-side columns of every target, and a target query in a column gets
  ``- gamma`` on the logits of the keys of every *other* reference, so each region copies its own subject;
  ``inf`` masks them out. With one reference, or ``0``, nothing changes.

Pure Python (no torch), so the command line reads its options without loading the model.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, replace
from typing import Any

PARTS = ("down", "mid", "up")  # every self-attention of an SD U-Net lives in one of these
_SELECTOR = re.compile(r"^(?:mid|(?:down|up)(?:\.\d+)?)$")
_BLOCK = re.compile(r"^(down|up)_blocks\.(\d+)\.|^(mid)_block\.")


def block_id(processor_name: str) -> str:
    """The block of an attention processor: ``down_blocks.1.attentions.0...attn1.processor`` -> ``down.1``,
    ``mid_block...`` -> ``mid``; a processor outside those blocks -> its top-level module name."""
    m = _BLOCK.match(processor_name)
    if m is None:
        return processor_name.split(".", 1)[0]
    return m.group(3) or f"{m.group(1)}.{m.group(2)}"


def selects(selector: str, block: str) -> bool:
    """True when ``selector`` (``up`` or ``up.2``) names ``block`` (``up.2``) or the part it belongs to."""
    return block == selector or block.startswith(selector + ".")


@dataclass(frozen=True)
class Coupling:
    """Training-free coupling options (see the module docstring for the equations); the defaults are JeDi's
    coupled attention, unchanged (a stock inpainting model's defaults: :func:`default_for`)."""

    reference_bias: float = 0.0  # beta added to the target queries' logits on reference keys; -inf: ignore them
    layers: tuple[str, ...] = PARTS  # blocks whose attn1 couples: down | mid | up | down.<i> | up.<i>
    steps: float = 1.0  # fraction of the sampling steps, from the first, that couple
    region_bias: float = 0.0  # gamma subtracted from a target column's logits on the other references' keys

    def __post_init__(self) -> None:
        if not isinstance(self.reference_bias, (int, float)) or math.isnan(self.reference_bias):
            raise ValueError(f"reference bias must be a number, got {self.reference_bias!r}")
        if self.reference_bias == math.inf:
            raise ValueError("reference bias must be finite or -inf (+inf would leave the targets only the references)")
        if not isinstance(self.layers, tuple) or not all(isinstance(s, str) for s in self.layers):
            raise ValueError(f"coupled layers must be a tuple of block names, got {self.layers!r}")
        bad = [s for s in self.layers if not _SELECTOR.match(s)]
        if bad:
            raise ValueError(f"unknown coupled layer {bad[0]!r}; name down, mid, up or one block like down.1, up.2")
        if not isinstance(self.steps, (int, float)) or not 0.0 <= self.steps <= 1.0:
            raise ValueError(f"coupled steps must be a fraction in [0, 1], got {self.steps!r}")
        if not isinstance(self.region_bias, (int, float)) or not self.region_bias >= 0:
            raise ValueError(f"region bias must be >= 0 (inf: mask the other references), got {self.region_bias!r}")

    @property
    def biases_references(self) -> bool:
        """Whether the target queries' logits on reference keys change (a reference or a region bias)."""
        return self.reference_bias != 0 or self.region_bias != 0

    def couples(self, block: str) -> bool:
        """Whether the self-attention of ``block`` (:func:`block_id`) is coupled."""
        return any(selects(s, block) for s in self.layers)

    def coupled_steps(self, num_steps: int) -> int:
        """How many of ``num_steps`` sampling steps, from the first, couple: ``ceil(f S)`` (f S rounded to
        9 decimals first, so 0.3 x 10 is 3)."""
        return math.ceil(round(self.steps * num_steps, 9))

    def uncoupled(self) -> Coupling:
        """The same options with no coupled block: every image attends per image (the steps after the fraction)."""
        return replace(self, layers=())

    def settings(self) -> dict[str, Any]:
        """The options under the pipeline's argument names, as saved with each generated PNG."""
        return {
            "reference_bias": self.reference_bias,
            "coupled_layers": list(self.layers),
            "coupled_steps": self.steps,
            "region_bias": self.region_bias,
        }

    @classmethod
    def of(cls, **kwargs: Any) -> Coupling:
        """From the pipeline's argument names (:meth:`settings`' keys); None leaves a field at its default.
        ``coupled_layers`` may be a list or a comma-separated string."""
        names = {"coupled_layers": "layers", "coupled_steps": "steps"}
        fields = {names.get(k, k): v for k, v in kwargs.items() if v is not None}
        layers = fields.get("layers")
        if isinstance(layers, str):
            fields["layers"] = tuple(s.strip() for s in layers.split(","))
        elif isinstance(layers, list):
            fields["layers"] = tuple(layers)
        return cls(**fields)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, by_layout: bool = False) -> None:
        """``--reference-bias``, ``--coupled-layers``, ``--coupled-steps`` with this type's defaults; ``by_layout``:
        ``--coupled-steps`` defaults to None, the loaded model's own default (:func:`default_for`)."""
        d = Coupling()
        parser.add_argument(
            "--reference-bias",
            type=float,
            default=d.reference_bias,
            help="beta added to the targets' attention logits on reference tokens (0: JeDi; write =-inf to ignore them)",
        )
        parser.add_argument(
            "--coupled-layers",
            default=",".join(d.layers),
            help="comma-separated U-Net blocks whose self-attention couples: down, mid, up or down.1, up.2, ...",
        )
        steps_help = "fraction of the steps, from the first, that couple"
        if by_layout:
            steps_help += (
                f" (default: 1 for a JeDi model, {STOCK_INPAINTING_COUPLING.steps:g} for a stock inpainting model)"
            )
        parser.add_argument("--coupled-steps", type=float, default=None if by_layout else d.steps, help=steps_help)
        parser.add_argument(
            "--region-bias",
            type=float,
            default=d.region_bias,
            help="several references: reference i owns the i-th side-by-side column of each target; gamma subtracted "
            "there from the other references' logits (0: off; inf: masked)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace | Any) -> Coupling:
        """The options given by :meth:`add_arguments`' flags (checked here: one-line errors)."""
        return cls.of(
            reference_bias=args.reference_bias,
            coupled_layers=args.coupled_layers,
            coupled_steps=args.coupled_steps,
            region_bias=getattr(args, "region_bias", None),
        )


# References of several subjects (issue 33): the region bias of `jointdiff demo --two-subjects` and of the web page's
# "Two toy subjects"; chosen on 8 tuning pairs (benchmarks/two_subjects_regions.md: 2, 4, 8 and inf within 0.01 of
# each other in per-subject identity; 8 and inf the lowest leakage; the smaller taken).
SEVERAL_SUBJECTS_REGION_BIAS = 8.0
DEFAULT_COUPLING = Coupling()  # JeDi's coupled attention: every block, every step, no reference bias
# A stock inpainting model used without training couples in the first half of the steps only: chosen on the toy
# world's 16 tuning subjects by the rule of benchmarks/training_free.md (the highest part-aware identity among the
# settings that keep CLIP-T >= 0.95x the model without references; JeDi's coupling in every step keeps 0.86x).
STOCK_INPAINTING_COUPLING = Coupling(steps=0.5)


def default_for(layout_kind: str) -> Coupling:
    """The default options of a model of this input layout (``jedi`` or ``inpainting``, :mod:`jointdiff.jedi.layouts`):
    JeDi's coupled attention for a JeDi model, :data:`STOCK_INPAINTING_COUPLING` for a stock inpainting model."""
    return STOCK_INPAINTING_COUPLING if layout_kind == "inpainting" else DEFAULT_COUPLING
