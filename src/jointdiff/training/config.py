"""Typed training configuration: a dataclass tree loaded from TOML, YAML or JSON, validated at start.

Every field carries its documentation (``field(metadata={"doc": ...})``); :func:`config_template`
prints them all as a commented TOML file (``jointdiff train --print-config``). Errors name the
field in one line: ``train.max_steps: expected int, got str 'ten'``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jointdiff.data.sources import FORMATS

LR_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


def doc(text: str) -> dict[str, str]:
    """Field metadata holding the field's one-line documentation."""
    return {"doc": text}


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
    format: Literal["paper", "folder", "webdataset", "latents"] = field(
        default="paper", metadata=doc(f"storage format: {', '.join(FORMATS)}")
    )
    weight: float = field(default=1.0, metadata=doc("mixing weight; probabilities are weights / sum (paper: equal)"))
    max_set_size: int | None = field(
        default=None, metadata=doc("cap on images per set from this source; 1 for single-image data (paper: LAION)")
    )
    name: str = field(default="", metadata=doc("name in logs (default: the last path component)"))


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


@dataclass
class SampleConfig:
    """Sample grids written during training (needs JointDiffusionPipeline.__call__)."""

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


@dataclass
class MonitorConfig:
    """Measurements of the EMA model during training, logged beside the loss (logs/metrics.jsonl)."""

    every: int = field(default=0, metadata=doc("measure every this many optimizer steps (0: never)"))
    kind: Literal["toyworld"] = field(
        default="toyworld",
        metadata=doc(
            "'toyworld': reference effect, toy identity with / without the reference and CLIP-T on held-out toy subjects"
        ),
    )
    subjects: int = field(default=4, metadata=doc("held-out subjects measured (4 prompts each)"))
    steps: int = field(default=20, metadata=doc("denoising steps per image"))
    guidance_scale: float = field(default=5.0, metadata=doc("guidance scale (joint guidance, eq. 3)"))


@dataclass
class TrainConfig:
    """The run: length, precision, checkpoints, logs."""

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

    def validate(self, check_paths: bool = True) -> Config:
        """Value checks beyond types; ValueError naming the field. Returns self."""
        _check(self, check_paths)
        return self


# ----------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _parse(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (recursively for dataclasses and lists)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse(inner[0], value, where)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: expected one of {', '.join(repr(a) for a in args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return [_parse(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a table (dict), got {type(value).__name__} {value!r}")
        return dict(value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp)
    if ok is None:
        raise TypeError(f"{where}: unsupported annotation {tp}")
    if not ok:
        raise ValueError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return float(value) if tp is float else value


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a dict; unknown keys, missing fields and wrong types raise ValueError."""
    label = where or "config"
    if not isinstance(data, dict):
        raise ValueError(f"{label}: expected a table (dict), got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(fields)})"
            raise ValueError(f"{where + '.' if where else ''}{key}: unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _parse(hints[name], data[name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{path}: required field missing")
    return cls(**kwargs)


def _parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=VALUE`` -> (["a", "b"], value); VALUE is a TOML value, or else a plain string."""
    if "=" not in item:
        raise ValueError(f"--set {item}: expected KEY=VALUE (e.g. train.max_steps=100)")
    key, raw = item.split("=", 1)
    try:
        value = _toml().loads(f"v = {raw}")["v"]
    except Exception:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a raw config dict (before validation, so typos are still caught)."""
    for item in overrides:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item}: '{k}' is not a table")
        node[keys[-1]] = value
    return data


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli

    return tomli


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw dict of a .toml, .yaml/.yml or .json config file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = _toml().loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as e:
                raise ValueError(f"{path}: YAML configs need pyyaml (pip install pyyaml), or use TOML") from e
            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"{path}: unknown config format '{suffix}' (use .toml, .yaml or .json)")
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: cannot parse: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a table")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, check_paths: bool = True) -> Config:
    """Read, override (``--set a.b=v``), type-check and validate a config."""
    data = read_config_file(path) if path is not None else {}
    return from_dict(Config, apply_overrides(data, overrides or [])).validate(check_paths)


def _check(c: Config, check_paths: bool) -> None:
    def need(ok: bool, where: str, msg: str) -> None:
        if not ok:
            raise ValueError(f"{where}: {msg}")

    t, d, o, m = c.train, c.data, c.objective, c.model
    need(bool(t.output_dir), "train.output_dir", "required (the run directory)")
    need(t.max_steps >= 1, "train.max_steps", f"must be >= 1, got {t.max_steps}")
    need(t.stop_after >= 0, "train.stop_after", f"must be >= 0, got {t.stop_after}")
    need(t.gradient_accumulation_steps >= 1, "train.gradient_accumulation_steps", "must be >= 1")
    need(t.checkpoint_every >= 1, "train.checkpoint_every", f"must be >= 1, got {t.checkpoint_every}")
    need(t.keep_checkpoints >= 0, "train.keep_checkpoints", "must be >= 0")
    need(t.log_every >= 1, "train.log_every", "must be >= 1")
    need(bool(d.sources), "data.sources", "at least one source is required ([[data.sources]] with a path)")
    need(
        len(d.set_size) == 2 and 1 <= d.set_size[0] <= d.set_size[1],
        "data.set_size",
        f"must be [min, max] with 1 <= min <= max, got {d.set_size}",
    )
    need(d.batch_size >= 1, "data.batch_size", f"must be >= 1, got {d.batch_size}")
    need(d.resolution >= 8, "data.resolution", f"must be >= 8, got {d.resolution}")
    need(d.num_workers >= 0, "data.num_workers", "must be >= 0")
    need(sum(s.weight for s in d.sources) > 0, "data.sources", "the weights must have a positive sum")
    for i, s in enumerate(d.sources):
        where = f"data.sources[{i}]"
        need(s.weight >= 0, f"{where}.weight", f"must be >= 0, got {s.weight}")
        need(s.max_set_size is None or s.max_set_size >= 1, f"{where}.max_set_size", "must be >= 1")
        need(bool(s.path), f"{where}.path", "required")
        if (
            check_paths
            and not s.path.startswith("pipe:")
            and "{" not in s.path
            and not any(ch in s.path for ch in "*?[")
        ):
            for p in s.path.split(","):
                need(Path(p.strip()).exists(), f"{where}.path", f"no such file or directory: {p.strip()}")
    need(0.0 <= o.reference_probability < 1.0, "objective.reference_probability", "must be in [0, 1)")
    need(0.0 <= o.text_dropout <= 1.0, "objective.text_dropout", "must be in [0, 1]")
    need(0.0 <= o.reference_dropout <= 1.0, "objective.reference_dropout", "must be in [0, 1]")
    need(o.foreground_weight >= 0.0, "objective.foreground_weight", "must be >= 0")
    need(o.snr_gamma >= 0.0, "objective.snr_gamma", "must be >= 0")
    need(0.0 <= d.short_caption_probability <= 1.0, "data.short_caption_probability", "must be in [0, 1]")
    formats = {s.format == "latents" for s in d.sources}
    need(len(formats) == 1, "data.sources", "cached-latent sources cannot be mixed with image sources")
    need(bool(m.source) != (m.init is not None), "model.source", "give exactly one of model.source and [model.init]")
    need(c.optim.learning_rate > 0, "optim.learning_rate", "must be > 0")
    need(
        c.optim.lr_schedule in LR_SCHEDULES,
        "optim.lr_schedule",
        f"one of {', '.join(LR_SCHEDULES)}, got {c.optim.lr_schedule!r}",
    )
    need(c.optim.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
    need(0.0 < c.ema.decay < 1.0, "ema.decay", "must be in (0, 1)")
    need(c.sample.every >= 0, "sample.every", "must be >= 0")
    need(c.monitor.every >= 0, "monitor.every", "must be >= 0")
    need(c.monitor.subjects >= 1 and c.monitor.steps >= 1, "monitor", "subjects and steps must be >= 1")
    if check_paths:
        for i, p in enumerate(c.sample.reference_images):
            need(Path(p).is_file(), f"sample.reference_images[{i}]", f"no such file: {p}")


# ----------------------------------------------------------------------------- documentation


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def config_template() -> str:
    """Every field with its default and documentation, as a commented TOML file."""
    lines = ["# jointdiff train configuration: every field, its default and what it does.", ""]

    def table(cls: type, name: str) -> None:
        lines.append(f"[{name}]  # {(cls.__doc__ or '').strip()}")
        nested = []
        for f in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[f.name]
            union = typing.get_origin(hint) in (typing.Union, types.UnionType)
            sub = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)] if union else []
            if dataclasses.is_dataclass(hint) or sub:
                nested.append((sub[0] if sub else hint, f"{name}.{f.name}"))
                continue
            if f.name == "sources":
                continue
            if f.default is not dataclasses.MISSING:
                value = f.default
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                value = "REQUIRED"
            prefix = "# " if value is None or value == "REQUIRED" or (isinstance(value, dict) and not value) else ""
            shown = "REQUIRED" if value == "REQUIRED" else ("(unset)" if value is None else _toml_value(value))
            lines.append(f"{prefix}{f.name} = {shown}  # {f.metadata['doc']}")
        lines.append("")
        if cls is DataConfig:
            lines.append(
                "[[data.sources]]  # " + (SourceConfig.__doc__ or "").strip().rstrip(".") + "; one table per source"
            )
            for f in dataclasses.fields(SourceConfig):
                value = "REQUIRED" if f.default is dataclasses.MISSING else f.default
                shown = "(unset)" if value is None else (value if value == "REQUIRED" else _toml_value(value))
                lines.append(
                    f"{'# ' if value in (None, 'REQUIRED', '') else ''}{f.name} = {shown}  # {f.metadata['doc']}"
                )
            lines.append("")
        for sub_cls, sub_name in nested:
            table(sub_cls, sub_name)

    for f in dataclasses.fields(Config):
        table(typing.get_type_hints(Config)[f.name], f.name)
    return "\n".join(lines)
