"""The harness's typed settings: how a method generates (:class:`MethodOptions`) and how the protocol chooses
inputs (:class:`EvalConfig`, JeDi supp. "Evaluation metric"). ``jointdiff evaluate`` builds its options from the
fields and their docs; this module loads no torch, so neither does ``jointdiff --help``."""

from __future__ import annotations

from dataclasses import dataclass, field

from jointdiff.common.config import DTYPES, doc
from jointdiff.jedi.guidance import DEFAULT, Guidance


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
    # The guidance settings under the pipeline's names (jointdiff.jedi.guidance.Guidance, checked there).
    guidance_scale: float = DEFAULT.scale
    image_guidance_scale: float | None = DEFAULT.image_scale
    guidance: str = DEFAULT.strategy
    null_reference: str = DEFAULT.null_reference
    reference_attention: str = DEFAULT.reference_attention
    batch_size: int = field(default=1, metadata=doc("jedi: prompts generated in one batch (sets side by side)"))
    resolution: int | None = field(default=None, metadata=doc("generated image side (default: the model's)"))
    reference_caption: str = field(
        default="a photo of a {}", metadata=doc('caption of each reference, "{}" = class word')
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.guidance_settings()  # one check of the guidance fields

    def guidance_settings(self) -> Guidance:
        """The guidance fields as the one settings type."""
        return Guidance.from_args(self)


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
