"""The harness's typed settings: how a method generates (:class:`MethodOptions`) and how the protocol chooses
inputs (:class:`EvalConfig`, JeDi supp. "Evaluation metric"). ``jointdiff evaluate`` builds its options from the
fields and their docs; this module loads no torch, so neither does ``jointdiff --help``."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from jointdiff.common.config import DTYPES, doc
from jointdiff.common.config import from_args as config_from_args
from jointdiff.jedi.coupling import DEFAULT_COUPLING, Coupling
from jointdiff.jedi.guidance import DEFAULT, DEFAULT_NAMES, Guidance
from jointdiff.jedi.layouts import LAYOUTS
from jointdiff.jedi.schedulers import SCHEDULERS

# run.json records the generation settings flat, the guidance under the pipeline's argument names in this order
# (as when they were five fields of MethodOptions): a cached run compares, and is written, as before.
RUN_GUIDANCE_KEYS = ("guidance_scale", "image_guidance_scale", "guidance", "null_reference", "reference_attention")
# The guidance keys beyond RUN_GUIDANCE_KEYS (issue 27) are recorded only where they differ from these values, which
# every run made before the keys existed had (off): such a run compares as before, whatever the defaults become.
GUIDANCE_OFF = {"guidance_rescale": 0.0, "guidance_start": 0.0, "guidance_stop": 1.0}
COUPLING_NAMES = ("reference_bias", "coupled_layers", "coupled_steps", "region_bias")  # Coupling.add_arguments' dests


@dataclass(frozen=True)
class MethodOptions:
    """What the CLI knows about a method; each method factory reads the fields it needs. ``jointdiff evaluate``
    takes its options from the fields' docs, and the guidance settings' from :class:`Guidance`."""

    model: str | None = field(default=None, metadata=doc("jedi: jointdiff pipeline directory or Hub id"))
    device: str = field(default="cpu", metadata=doc("torch device for generation and scoring"))
    dtype: str | None = field(
        default=None, metadata=doc("generation weights dtype (default: as stored)", tuple(DTYPES))
    )
    steps: int = field(default=50, metadata=doc("denoising steps"))
    guidance: Guidance = DEFAULT  # eq. 3 / eq. 4: the one guidance settings type (it checks itself)
    batch_size: int = field(default=1, metadata=doc("jedi: prompts generated in one batch (sets side by side)"))
    resolution: int | None = field(default=None, metadata=doc("generated image side (default: the model's)"))
    reference_caption: str = field(
        default="a photo of a {}", metadata=doc('caption of each reference, "{}" = class word')
    )
    layout: str | None = field(
        default=None,
        metadata=doc("jedi: the U-Net's input layout (default: the saved one, else auto; issue 32)", LAYOUTS),
    )
    coupling: Coupling = DEFAULT_COUPLING  # the training-free options of the coupled attention (it checks itself)
    scheduler: str | None = field(
        default=None, metadata=doc("jedi: the sampler (default: the model's own scheduler)", tuple(SCHEDULERS))
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not isinstance(self.guidance, Guidance):
            raise ValueError(f"guidance must be a Guidance, got {type(self.guidance).__name__}")
        if not isinstance(self.coupling, Coupling):
            raise ValueError(f"coupling must be a Coupling, got {type(self.coupling).__name__}")
        if self.layout not in (None, *LAYOUTS):
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.scheduler not in (None, *SCHEDULERS):
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MethodOptions:
        """From ``jointdiff evaluate``'s options: the fields given (the defaults for the rest), the guidance and the
        coupling options (their defaults where the parser has none)."""
        values = {k: v for k, v in vars(args).items() if k not in (*DEFAULT_NAMES, *COUPLING_NAMES)}
        coupling = Coupling.from_args(args) if hasattr(args, "reference_bias") else DEFAULT_COUPLING
        return dataclasses.replace(config_from_args(cls, values), guidance=Guidance.from_args(args), coupling=coupling)

    def settings(self) -> dict[str, Any]:
        """The generation settings a run records and compares (run.json): flat, the guidance under the pipeline's
        argument names; the device is not one (it does not change images). The layout, the scheduler and the coupling
        options, guidance rescale and the guidance interval appear only where they differ from the defaults, so a run
        made before they existed compares as before."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "guidance":
                guidance = self.guidance.settings()
                out |= {k: guidance[k] for k in RUN_GUIDANCE_KEYS}
                out |= {k: v for k, v in guidance.items() if k not in RUN_GUIDANCE_KEYS and v != GUIDANCE_OFF[k]}
            elif f.name == "coupling":
                if self.coupling != DEFAULT_COUPLING:
                    coupling = self.coupling.settings()  # the region bias (issue 33) only where set, as runs before it
                    out |= {k: v for k, v in coupling.items() if k != "region_bias" or v != 0}
            elif f.name in ("layout", "scheduler"):
                if getattr(self, f.name) is not None:
                    out[f.name] = getattr(self, f.name)
            elif f.name != "device":
                out[f.name] = getattr(self, f.name)
        return out


@dataclass(frozen=True)
class EvalConfig:
    """How inputs are chosen and images generated (JeDi supp. "Evaluation metric"); ``jointdiff evaluate`` takes
    its options from the fields' docs."""

    refs: int = field(
        default=1, metadata=doc("input images per generation (1 finetuning-free, 3 finetuning comparison)")
    )
    inputs: str | None = field(
        default=None,
        metadata=doc("all choices of inputs or random ones (default: all if --refs 1)", ("all", "random")),
    )  # None: "all" if refs == 1 else "random"
    num_random: int = field(default=1, metadata=doc("random input choices per subject with --inputs random"))
    images_per_prompt: int = field(
        default=1, metadata=doc("samples per prompt and input choice (>= 2: diversity)")
    )  # per (prompt, input choice)
    max_prompts: int | None = field(
        default=None, metadata=doc("only the first N prompts of each subject (quick runs)")
    )  # None = all
    seed: int = field(default=0, metadata=doc("base seed of input choices and generation"))
    against: str = field(
        default="unseen",
        metadata=doc(
            "real images the identity metrics compare with: unseen = every real view that was not an input "
            "(default); all = all of them, the inputs included (the JeDi paper's protocol); inputs = the inputs only",
            ("unseen", "all", "inputs"),
        ),
    )

    def __post_init__(self) -> None:
        if self.refs < 1:
            raise ValueError(f"refs must be >= 1, got {self.refs}")
        if self.inputs not in (None, "all", "random"):
            raise ValueError(f"inputs must be 'all' or 'random', got {self.inputs!r}")
        if self.num_random < 1 or self.images_per_prompt < 1:
            raise ValueError("num_random and images_per_prompt must be >= 1")
        if self.max_prompts is not None and self.max_prompts < 1:
            raise ValueError(f"max_prompts must be >= 1, got {self.max_prompts}")
        if self.against not in ("unseen", "all", "inputs"):
            raise ValueError(f"against must be 'unseen', 'all' or 'inputs', got {self.against!r}")

    @property
    def input_mode(self) -> str:
        return self.inputs or ("all" if self.refs == 1 else "random")
