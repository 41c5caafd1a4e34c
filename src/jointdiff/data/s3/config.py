"""Typed configuration of the S3 data pipeline (JeDi sec. 3.1, supplementary Algorithm 1).

A config file is JSON, TOML or YAML, read by the one config loader (:mod:`jointdiff.common.config`):
every key maps onto a dataclass field below, unknown keys and wrong types are one-line errors, and
each table checks its own values. Model stages name a Hugging Face Hub id or a local directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jointdiff.common import config as loader

DTYPES = ("auto", *loader.DTYPES)
FORMATS = ("paper", "webdataset")
LLM_BACKENDS = ("template", "openai", "transformers")
RUNTIME_KEYS = {"num_gpus", "concurrency", "device", "dtype", "objects", "objects_file", "ray"}
"""Keys that do not change what a shard contains: a rerun may change them (objects added, GPUs added)."""

DEFAULT_STYLES = (
    "make it a watercolor painting",
    "make it an oil painting",
    "make it a pencil sketch",
    "make it a pixel art image",
    "make it look like a vintage photograph",
    "make it a cartoon illustration",
)


@dataclass
class ModelStage:
    """A stage backed by one model: where to load it and how Ray places it."""

    source: str = ""  # Hub id or local directory
    revision: str | None = None  # Hub revision (branch, tag or commit)
    num_gpus: float = 0.0  # GPUs per Ray actor of this stage (1 on a GPU cluster, 0 on a laptop)
    concurrency: int = 1  # Ray actors in this stage's pool

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.num_gpus < 0:
            raise ValueError("concurrency >= 1 and num_gpus >= 0")


@dataclass
class DiffusionStage(ModelStage):
    """A stage that samples square images with a diffusion model."""

    size: int = 512  # side of the images in pixels
    steps: int = 30
    guidance_scale: float = 7.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size < 8:
            raise ValueError("size: image sizes must be >= 8 pixels")


@dataclass
class TextToImageConfig(DiffusionStage):
    """Collage generator G (SDXL in the paper); the prompt gets ``suffix`` appended (sec. 3.1)."""

    source: str = "stabilityai/stable-diffusion-xl-base-1.0"
    suffix: str = "photos of the same"
    size: int = 1024


@dataclass
class DetectorConfig(ModelStage):
    """Open-vocabulary detector (GroundingDINO [19] in the paper) prompted with the object name."""

    source: str = "IDEA-Research/grounding-dino-base"
    box_threshold: float = 0.35
    text_threshold: float = 0.25
    nms_iou: float = 0.5  # boxes overlapping more than this are one instance
    min_box_fraction: float = 0.01  # smaller boxes (area / image area) are noise
    max_box_fraction: float = 0.8  # larger boxes span the whole collage, not one photo of it
    max_instances: int = 8  # highest-scoring boxes kept per collage


@dataclass
class SegmenterConfig(ModelStage):
    """Box-prompted segmentation (SAM [15] in the paper) giving each instance its foreground mask."""

    source: str = "facebook/sam-vit-base"
    min_mask_fraction: float = 0.05  # masks covering less of their box are failed segmentations


@dataclass
class ClipConfig(ModelStage):
    """CLIP image model for the instance affinity matrix (Algorithm 1, lines 13-15)."""

    source: str = "openai/clip-vit-large-patch14"
    threshold: float = 0.95  # edge where affinity > threshold (Algorithm 1, line 14)


@dataclass
class InpainterConfig(DiffusionStage):
    """Text-guided background inpainting G_I (an SD inpainting model; Algorithm 1, line 21); ``size`` is the
    side of the square canvas, the set's image size."""

    source: str = "stable-diffusion-v1-5/stable-diffusion-inpainting"
    object_scale: tuple[float, float] = (0.3, 0.6)  # longer side of the pasted instance / canvas side

    def __post_init__(self) -> None:
        super().__post_init__()
        lo, hi = self.object_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError("object_scale: must be (lo, hi) with 0 < lo <= hi <= 1")


@dataclass
class StylizerConfig(ModelStage):
    """InstructPix2Pix restyling of each image with probability ``probability`` (sec. 3.1)."""

    source: str = "timbrooks/instruct-pix2pix"
    probability: float = 0.5  # 0 disables the stage (its model is then never loaded)
    styles: tuple[str, ...] = DEFAULT_STYLES
    steps: int = 20
    guidance_scale: float = 7.5
    image_guidance_scale: float = 1.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability: must be in [0, 1]")
        if not self.styles:
            raise ValueError("styles: must not be empty")


@dataclass
class CaptionerConfig(ModelStage):
    """Captioner (BLIP-2 in the supplementary); empty ``source`` keeps the scene prompts as captions."""

    source: str = "Salesforce/blip2-opt-2.7b"
    max_new_tokens: int = 30


@dataclass
class LLMConfig(ModelStage):
    """Object- and scene-centric prompt writer GPT(l, object|scene) (Algorithm 1, lines 10 and 19)."""

    backend: str = "template"  # template (offline) | openai (any compatible HTTP endpoint) | transformers
    source: str = ""  # model name for openai, Hub id / directory for transformers
    url: str = "http://localhost:8000/v1"  # base URL of the OpenAI-compatible endpoint
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the key (may be unset for local servers)
    timeout_s: float = 30.0
    retries: int = 2  # extra attempts after a timeout or connection error; then the item is skipped
    backoff_s: float = 1.0  # wait before retry k is backoff_s * 2**k
    temperature: float = 1.0
    max_new_tokens: int = 60
    object_instruction: str = (
        "Describe one specific {object} for an image generator in a single short sentence: "
        "its colour, material, shape and details. Answer with the sentence only."
    )
    scene_instruction: str = (
        "Describe a photo of a {object} in a specific scene or place in a single short sentence. "
        "Answer with the sentence only."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backend not in LLM_BACKENDS:
            raise ValueError(f"backend: must be one of {LLM_BACKENDS}")
        if self.retries < 0 or self.timeout_s <= 0:
            raise ValueError("retries must be >= 0 and timeout_s > 0")


@dataclass
class RaySettings:
    """Placement of the Ray Data pipeline (``--ray``); each model stage adds its own num_gpus and concurrency."""

    actor_cpus: float = 1.0  # CPUs reserved per model actor (on a small laptop: 0.25)
    task_cpus: float = 1.0  # CPUs per CPU-stage task (grouping, pasting, writing)
    fuse: bool = False  # one actor pool holding every model (a single-GPU box); False: one pool per stage
    retries: int = 3  # reruns over the shards left unwritten when a Ray worker or actor is lost (0: fail at once)

    def __post_init__(self) -> None:
        if self.actor_cpus < 0 or self.task_cpus <= 0:
            raise ValueError("actor_cpus >= 0 and task_cpus > 0")
        if self.retries < 0:
            raise ValueError("retries >= 0")


@dataclass
class S3Config:
    """The whole job: objects, seeds and sharding, one section per stage, output formats."""

    objects: list[str] = field(default_factory=list)  # object names L (Algorithm 1, line 1)
    objects_file: str | None = None  # or one name per line ('#' starts a comment); relative to the config file
    collages_per_object: int = 4  # collage seeds 0..n-1 per object
    collages_per_shard: int = 4  # a shard = one object and a block of this many seeds; the unit of resume
    seed: int = 0  # base seed mixed into every random choice
    min_set_size: int = 2  # smaller components are dropped (the paper's sets hold 2-4 images)
    max_set_size: int = 4  # larger components are cut into sets of at most this size
    formats: tuple[str, ...] = FORMATS
    device: str = "auto"  # auto: cuda when available, else cpu
    dtype: str = "auto"  # auto: fp16 on cuda, fp32 on cpu
    llm: LLMConfig = field(default_factory=LLMConfig)
    text_to_image: TextToImageConfig = field(default_factory=TextToImageConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    inpainter: InpainterConfig = field(default_factory=InpainterConfig)
    stylizer: StylizerConfig = field(default_factory=StylizerConfig)
    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)
    ray: RaySettings = field(default_factory=RaySettings)
    base_dir: str = "."  # directory relative paths are resolved against (the config file's)

    def __post_init__(self) -> None:
        if self.collages_per_object < 1 or self.collages_per_shard < 1:
            raise ValueError("collages_per_object and collages_per_shard must be >= 1")
        if self.max_set_size < 2:
            raise ValueError("max_set_size: must be >= 2")
        if not 1 <= self.min_set_size <= self.max_set_size:
            raise ValueError("min_set_size: must be in 1..max_set_size")
        if not self.formats or not set(self.formats) <= set(FORMATS):
            raise ValueError(f"formats: must be a subset of {FORMATS}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: must be one of {DTYPES}")

    def object_names(self) -> list[str]:
        """The object list L: ``objects`` plus the lines of ``objects_file``; ValueError if empty or duplicated."""
        names = [n.strip() for n in self.objects if n.strip()]
        if self.objects_file:
            path = Path(self.base_dir) / self.objects_file
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise ValueError(f"s3: cannot read objects_file {path}: {e.strerror or e}") from e
            names += [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]
        if not names:
            where = f"'objects' and objects_file {self.objects_file}" if self.objects_file else "'objects'"
            raise ValueError(f"s3: the object list is empty ({where} holds no names)")
        slugs: dict[str, str] = {}
        for n in names:
            s = slug(n)
            if not s:
                raise ValueError(f"s3: object name {n!r} has no letters or digits")
            if s in slugs:
                raise ValueError(f"s3: objects {slugs[s]!r} and {n!r} are the same name ('{s}'); list each once")
            slugs[s] = n
        return names

    def resolve(self, source: str) -> str:
        """A model source: relative local paths resolve against ``base_dir``; Hub ids stay as they are."""
        if not source or os.path.isabs(source):
            return source
        local = Path(self.base_dir) / source
        return str(local) if local.exists() or source.startswith(".") else source

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (round-trips through :func:`config_from_dict`)."""
        return dataclasses.asdict(self)

    def content_hash(self) -> str:
        """Hash of everything that decides what a shard contains (not placement, not the object list)."""
        d = self.to_dict()
        d.pop("base_dir")
        for key in RUNTIME_KEYS:
            d.pop(key, None)
        for section in d.values():
            if isinstance(section, dict):
                for key in RUNTIME_KEYS:
                    section.pop(key, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def slug(name: str) -> str:
    """Key-safe form of an object name: lower-case letters, digits and '-'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def config_from_dict(data: dict[str, Any], base_dir: str | Path = ".") -> S3Config:
    """A validated :class:`S3Config` from a plain mapping; relative paths resolve against ``base_dir``."""
    return loader.from_dict(S3Config, {"base_dir": str(base_dir), **data})


def load_config(path: str | Path) -> S3Config:
    """Read a JSON, TOML or YAML config file (relative paths in it resolve against its directory)."""
    return config_from_dict(loader.read_config_file(path), base_dir=Path(path).resolve().parent)
