"""Typed training configuration: :class:`TrainConfig` (the run, what the training shell of every trainer
reads) and the tree of ``jointdiff train``, read by the one config loader (:mod:`jointdiff.common.config`:
TOML, YAML or JSON, ``--set`` overrides), each table checking its own values. Every field carries its documentation; :func:`config_template` prints them all as a commented
TOML file (``jointdiff train --print-config``). Errors name the field in one line:
``train.max_steps: expected int, got str 'ten'``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jointdiff.common.config import doc, load, template
from jointdiff.data.sources import FORMATS

LR_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


@dataclass
class ModelInit:
    """Components built from config dicts, with random weights (training a model from scratch)."""

    unet: dict[str, Any] = field(
        metadata=doc(
            "diffusers UNet2DConditionModel config (plain text-to-image: in_channels = out_channels = latent channels); converted to the jointdiff layout after building"
        )
    )
    vae: dict[str, Any] = field(metadata=doc("diffusers AutoencoderKL config"))
    text_encoder: dict[str, Any] = field(metadata=doc("transformers CLIPTextConfig keyword arguments"))
    tokenizer: str = field(
        default="char:32",
        metadata=doc(
            "directory or Hub id of a CLIPTokenizer, or 'char:N' for the built-in character tokenizer with N positions"
        ),
    )
    scheduler: dict[str, Any] = field(
        default_factory=dict, metadata=doc("diffusers DDPMScheduler config (default: DDPMScheduler defaults)")
    )


@dataclass
class ModelConfig:
    """Where the model comes from and which parts train."""

    source: str = field(
        default="",
        metadata=doc(
            "a jointdiff pipeline directory, or a plain Stable-Diffusion-layout directory / Hub id (converted at start); leave empty with [model.init]"
        ),
    )
    revision: str = field(
        default="", metadata=doc("Hub revision of `source` (branch, tag or commit); empty for the default")
    )
    allow_pickle: bool = field(
        default=False, metadata=doc("also load pickle (.bin) weights of `source`; trusted sources only")
    )
    init: ModelInit | None = field(
        default=None, metadata=doc("build the components from configs instead of loading `source` (from scratch)")
    )
    train_text_encoder: bool = field(default=False, metadata=doc("train the text encoder too (paper: frozen)"))
    train_vae: bool = field(
        default=False, metadata=doc("train the VAE encoder through the latents too (paper: frozen)")
    )
    gradient_checkpointing: bool = field(
        default=False, metadata=doc("recompute activations in the backward pass: less memory, ~30% slower")
    )


@dataclass
class SourceConfig:
    """One data source and its share of the batches."""

    path: str = field(
        metadata=doc(
            "directory of the sets; for webdataset also a glob, a brace pattern or `pipe:COMMAND` (comma-separated)"
        )
    )
    format: Literal["paper", "folder", "webdataset", "latents", "toyworld"] = field(
        default="paper",
        metadata=doc(f"storage format: {', '.join(FORMATS)}; or toyworld (toy subjects rendered in the data path)"),
    )
    weight: float = field(default=1.0, metadata=doc("mixing weight; probabilities are weights / sum (paper: equal)"))
    max_set_size: int | None = field(
        default=None, metadata=doc("cap on images per set from this source; 1 for single-image data (paper: LAION)")
    )
    name: str = field(default="", metadata=doc("name in logs (default: the last path component)"))
    buffer: int = field(
        default=0,
        metadata=doc("toyworld: encoded sets kept for replay (0: every draw a new subject); rebuilt on resume"),
    )
    refresh: float = field(default=0.25, metadata=doc("toyworld: new sets rendered per set drawn from the buffer"))
    two_subjects: bool = field(
        default=False, metadata=doc("toyworld: two-subject sets (views of A alone, B alone, both; issue 33)")
    )

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("path: required")
        if self.format != "toyworld" and (self.buffer != 0 or self.refresh != 0.25 or self.two_subjects):
            raise ValueError(f"buffer, refresh, two_subjects: only for format toyworld, not {self.format}")
        if self.weight < 0:
            raise ValueError(f"weight: must be >= 0, got {self.weight}")
        if self.max_set_size is not None and self.max_set_size < 1:
            raise ValueError("max_set_size: must be >= 1")

    def check_path(self) -> None:
        """The sets exist (a `pipe:`, glob or brace pattern is the user's to check)."""
        if self.format == "toyworld":
            return  # SPLIT:START, checked when the source opens
        if self.path.startswith("pipe:") or "{" in self.path or any(ch in self.path for ch in "*?["):
            return
        for part in self.path.split(","):
            if not Path(part.strip()).exists():
                raise ValueError(f"path: no such file or directory: {part.strip()}")


@dataclass
class DataConfig:
    """Image-set data (JeDi sec. 4) and its batching."""

    sources: list[SourceConfig] = field(
        default_factory=list, metadata=doc("data sources, mixed by weight ([[data.sources]] tables)")
    )
    resolution: int = field(
        default=512, metadata=doc("side of the square training images in pixels (a multiple of the VAE's downsampling)")
    )
    batch_size: int = field(default=4, metadata=doc("sets per device per micro-batch"))
    set_size: list[int] = field(
        default_factory=lambda: [2, 4], metadata=doc("[min, max] images per set, drawn uniformly (paper: [2, 4])")
    )
    batching: Literal["bucket", "pad"] = field(
        default="bucket",
        metadata=doc("'bucket': one set size per batch; 'pad': sizes mixed in a batch, padded, slot mask"),
    )
    num_workers: int = field(
        default=2, metadata=doc("data-loader worker processes per device (0: load in the training process)")
    )
    shuffle: bool = field(default=True, metadata=doc("shuffle sets (and shards) with a seeded order per epoch"))
    short_caption_probability: float = field(
        default=0.0,
        metadata=doc(
            "cached latents with caption variants: probability of an image's short caption (class word only, so the text cannot give the subject's look away)"
        ),
    )

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("sources: at least one source is required ([[data.sources]] with a path)")
        if not (len(self.set_size) == 2 and 1 <= self.set_size[0] <= self.set_size[1]):
            raise ValueError(f"set_size: must be [min, max] with 1 <= min <= max, got {self.set_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.resolution < 8:
            raise ValueError(f"resolution: must be >= 8, got {self.resolution}")
        if self.num_workers < 0:
            raise ValueError("num_workers: must be >= 0")
        if sum(s.weight for s in self.sources) <= 0:
            raise ValueError("sources: the weights must have a positive sum")
        if not 0.0 <= self.short_caption_probability <= 1.0:
            raise ValueError("short_caption_probability: must be in [0, 1]")
        if len({s.format == "latents" for s in self.sources}) != 1:
            raise ValueError("sources: cached-latent sources cannot be mixed with image sources")


@dataclass
class ObjectiveConfig:
    """The JeDi loss (eq. 2) and condition dropout for guidance."""

    reference_probability: float = field(
        default=0.5, metadata=doc("probability that an image of a set is a given reference (mask bit 0); paper: 0.5")
    )
    text_dropout: float = field(
        default=0.1, metadata=doc("probability of replacing a set's prompts by the empty prompt (for text guidance)")
    )
    reference_dropout: float = field(
        default=0.1, metadata=doc("probability of dropping all references of a set (for image guidance, eq. 3)")
    )
    unknown_only: bool = field(
        default=False, metadata=doc("average the loss over generated (unknown) slots only; paper: whole set")
    )
    foreground_weight: float = field(
        default=0.0,
        metadata=doc(
            "per-pixel loss weight 1 + this x subject coverage (cached latents carry the foreground); 0: plain MSE (paper)"
        ),
    )
    snr_gamma: float = field(
        default=0.0, metadata=doc("min-SNR-gamma loss weighting (Hang et al. 2023; 5 is their choice); 0: off (paper)")
    )
    masks: str = field(
        default="images",
        metadata=doc(
            "images: JeDi's mask bit per image of a set (eq. 2); regions: a stock inpainting model's training, random "
            "rectangles per image (or the whole image), for the training-free baseline of issue 32",
            ("images", "regions"),
        ),
    )
    full_mask_probability: float = field(
        default=0.25, metadata=doc("masks = regions: probability that the whole image is masked (SD inpainting: 0.25)")
    )
    region_bias: float = field(
        default=0.0,
        metadata=doc(
            "two-subject sets (issue 33): gamma subtracted from a generated token's attention logits on the reference "
            "tokens of the other subject, by the data's subject labels (sampling's region bias, trained in); 0: off"
        ),
    )

    def __post_init__(self) -> None:
        if self.masks not in ("images", "regions"):
            raise ValueError(f"masks: must be images or regions, got {self.masks!r}")
        if not 0.0 <= self.full_mask_probability <= 1.0:
            raise ValueError(f"full_mask_probability: must be in [0, 1], got {self.full_mask_probability}")
        if not 0.0 <= self.reference_probability < 1.0:
            raise ValueError(f"reference_probability: must be in [0, 1), got {self.reference_probability}")
        for name in ("text_dropout", "reference_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)}")
        for name in ("foreground_weight", "snr_gamma", "region_bias"):
            if getattr(self, name) < 0.0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule."""

    learning_rate: float = field(default=5e-5, metadata=doc("peak learning rate (paper: 5e-5 at batch size 2048)"))
    adam_beta1: float = field(default=0.9, metadata=doc("AdamW beta1"))
    adam_beta2: float = field(default=0.999, metadata=doc("AdamW beta2"))
    adam_epsilon: float = field(default=1e-8, metadata=doc("AdamW epsilon"))
    weight_decay: float = field(default=1e-2, metadata=doc("AdamW decoupled weight decay"))
    max_grad_norm: float = field(default=1.0, metadata=doc("clip the global gradient norm to this (0: no clipping)"))
    lr_schedule: str = field(
        default="constant_with_warmup", metadata=doc(f"diffusers schedule: {', '.join(LR_SCHEDULES)}")
    )
    warmup_steps: int = field(default=500, metadata=doc("linear warmup, in optimizer steps"))

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError("learning_rate: must be > 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule: one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps: must be >= 0")


@dataclass
class EmaConfig:
    """Exponential moving average of the U-Net weights (the saved pipeline uses the EMA weights)."""

    enabled: bool = field(default=True, metadata=doc("keep an EMA of the U-Net weights"))
    decay: float = field(default=0.9999, metadata=doc("maximum EMA decay"))
    warmup: bool = field(
        default=True, metadata=doc("ramp the decay up as 1 - (1 + step)^-power (useful for short runs)")
    )
    power: float = field(
        default=2 / 3, metadata=doc("exponent of the warmup ramp (2/3 for long runs, 3/4 for short ones)")
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ValueError("decay: must be in (0, 1)")


@dataclass
class SampleConfig:
    """Sample grids written during training, with the EMA weights."""

    every: int = field(default=0, metadata=doc("write a grid every this many optimizer steps (0: never)"))
    prompts: list[str] = field(
        default_factory=list, metadata=doc("target prompts, one generated image each (all coupled with the references)")
    )
    reference_images: list[str] = field(
        default_factory=list, metadata=doc("paths of reference images of one subject (empty: text-only samples)")
    )
    reference_prompts: list[str] = field(
        default_factory=list, metadata=doc("captions of the reference images (empty: empty prompts)")
    )
    num_inference_steps: int = field(default=25, metadata=doc("denoising steps per sample"))
    guidance_scale: float = field(default=7.5, metadata=doc("text guidance scale"))
    seed: int = field(default=0, metadata=doc("sampling seed (the same noise at every step, to compare grids)"))

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError("every: must be >= 0")


@dataclass
class MonitorConfig:
    """Measurements of the EMA model during training, logged beside the loss (logs/metrics.jsonl)."""

    every: int = field(default=0, metadata=doc("measure every this many optimizer steps (0: never)"))
    kind: Literal["toyworld", "toyworld_pairs"] = field(
        default="toyworld",
        metadata=doc(
            "'toyworld': reference effect, toy identity with / without the reference and CLIP-T on held-out toy "
            "subjects; 'toyworld_pairs': that and two subjects in one image (per-subject PartID, found, leakage)"
        ),
    )
    subjects: int = field(default=4, metadata=doc("held-out subjects measured (4 prompts each)"))
    steps: int = field(default=20, metadata=doc("denoising steps per image"))
    guidance_scale: float = field(default=5.0, metadata=doc("guidance scale (joint guidance, eq. 3)"))
    region_bias: float = field(
        default=0.0, metadata=doc("toyworld_pairs: the region bias of the two-subject probe's sampling (0: off)")
    )

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError("every: must be >= 0")
        if not self.region_bias >= 0:
            raise ValueError(f"region_bias: must be >= 0, got {self.region_bias}")
        if self.subjects < 1 or self.steps < 1:
            raise ValueError("subjects and steps must be >= 1")


@dataclass
class TrainConfig:
    """The run: length, precision, checkpoints, logs."""

    # The settings of the training shell (training/shell.py) for every trainer; the [train] table here.

    output_dir: str = field(
        metadata=doc("run directory: checkpoints/, logs/, samples/ and, at the end, the pipeline (from_pretrained)")
    )
    max_steps: int = field(default=10_000, metadata=doc("optimizer steps of the whole run (the LR schedule's length)"))
    stop_after: int = field(
        default=0,
        metadata=doc(
            "stop this invocation after this many total steps, with a checkpoint (0: run to max_steps); splits a run into resumable parts"
        ),
    )
    seed: int = field(
        default=0, metadata=doc("seed of the data order, noise, masks and dropout (per rank offset added)")
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = field(
        default="bf16", metadata=doc("accelerate mixed precision; frozen parts are stored in this dtype")
    )
    gradient_accumulation_steps: int = field(default=1, metadata=doc("micro-batches per optimizer step"))
    checkpoint_every: int = field(default=1000, metadata=doc("write a checkpoint every this many optimizer steps"))
    keep_checkpoints: int = field(default=3, metadata=doc("checkpoints kept (oldest deleted first; 0: keep all)"))
    resume: str = field(
        default="latest",
        metadata=doc(
            "'latest': continue from the newest checkpoint in output_dir if any; 'never': refuse to reuse a directory with checkpoints; or a checkpoint path"
        ),
    )
    log_every: int = field(default=10, metadata=doc("log loss, LR and throughput every this many steps"))
    tensorboard: bool = field(
        default=True, metadata=doc("also log to TensorBoard under output_dir/logs (if tensorboard is installed)")
    )
    allow_tf32: bool = field(default=True, metadata=doc("allow TF32 matmuls on Ampere+ GPUs"))

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ValueError("output_dir: required (the run directory)")
        for name, low in (("max_steps", 1), ("stop_after", 0), ("checkpoint_every", 1), ("keep_checkpoints", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"{name}: must be >= {low}, got {getattr(self, name)}")
        for name in ("gradient_accumulation_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")

    @classmethod
    def plain(
        cls, output_dir: str | Path, max_steps: int, seed: int, checkpoint_every: int = 1000, keep: int = 2
    ) -> TrainConfig:
        """The run of a small trainer: fp32, no TensorBoard, a log record (with the task's own checks) at each
        checkpoint, the newest ``keep`` checkpoints kept."""
        return cls(
            output_dir=str(output_dir),
            max_steps=max_steps,
            seed=seed,
            mixed_precision="no",
            checkpoint_every=checkpoint_every,
            keep_checkpoints=keep,
            log_every=checkpoint_every,
            tensorboard=False,
        )

    @property
    def stop_at(self) -> int:
        """The last step of this invocation."""
        return min(self.max_steps, self.stop_after) if self.stop_after else self.max_steps


@dataclass
class Config:
    """A complete training configuration (``jointdiff train --config FILE``)."""

    train: TrainConfig = field(metadata=doc("the run"))
    data: DataConfig = field(metadata=doc("the data"))
    model: ModelConfig = field(default_factory=ModelConfig, metadata=doc("the model"))
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig, metadata=doc("the loss"))
    optim: OptimConfig = field(default_factory=OptimConfig, metadata=doc("the optimizer"))
    ema: EmaConfig = field(default_factory=EmaConfig, metadata=doc("weight averaging"))
    sample: SampleConfig = field(default_factory=SampleConfig, metadata=doc("sample grids"))
    monitor: MonitorConfig = field(default_factory=MonitorConfig, metadata=doc("measurements during training"))

    def __post_init__(self) -> None:
        if bool(self.model.source) == (self.model.init is not None):
            raise ValueError("model.source: give exactly one of model.source and [model.init]")

    def check_paths(self) -> Config:
        """The data and the sample references exist; ValueError naming the field. Returns self."""
        for i, s in enumerate(self.data.sources):
            try:
                s.check_path()
            except ValueError as e:
                raise ValueError(f"data.sources[{i}].{e}") from None
        for i, p in enumerate(self.sample.reference_images):
            if not Path(p).is_file():
                raise ValueError(f"sample.reference_images[{i}]: no such file: {p}")
        return self


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, check_paths: bool = True) -> Config:
    """Read, override (``--set a.b=v``), type-check and validate a config."""
    config = load(Config, path, overrides)
    return config.check_paths() if check_paths else config


def config_template() -> str:
    """Every field with its default and documentation, as a commented TOML file (``--print-config``)."""
    return template(Config, "jointdiff train configuration")
