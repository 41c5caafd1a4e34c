"""The steps of supplementary Algorithm 1 over one shard (an object and a block of collage seeds).

A :class:`Shard` carries everything a shard accumulates from step to step; each step is a
function ``(shard, config, stages) -> shard``. The local pipeline calls them in a loop; the Ray
pipeline runs each as a Dataset stage (actor pools for model steps, tasks for CPU steps). Both
run the same functions, so they produce the same sets for the same config.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jointdiff.data.s3.config import S3Config, slug
from jointdiff.data.s3.grouping import affinity, group_instances
from jointdiff.data.s3.stages import (
    Image,
    Instance,
    LLMError,
    cut_instance,
    on_background,
    paste_on_canvas,
    select_boxes,
)


def derive_seed(base: int, object_name: str, collage_seed: int, tag: str, *index: int) -> int:
    """A 31-bit seed for one random choice, from the job seed, object, collage seed, purpose and indices.

    Independent of the order and placement of the work, so every rerun and every worker agrees.
    """
    words = [base, zlib.crc32(object_name.encode()), collage_seed, zlib.crc32(tag.encode()), *index]
    return int(np.random.SeedSequence(words).generate_state(1)[0] >> 1)


@dataclass
class Member:
    """One image of a set: instance ``instance`` of its collage, pasted, inpainted, maybe stylised, captioned."""

    instance: int
    scene_prompt: str = ""
    seed: int = 0  # inpainting / stylisation seed
    canvas: Image | None = None
    mask: Image | None = None
    paste_box: tuple[int, int, int, int] | None = None
    image: Image | None = None
    style: str | None = None  # the InstructPix2Pix instruction, None when not stylised
    caption: str = ""


@dataclass
class DraftSet:
    """A connected component of one collage's instance graph, on its way to becoming an image set."""

    key: str
    collage: int  # index into Shard.collages
    members: list[Member]


@dataclass
class Collage:
    """One collage x_0 = G(t_o + suffix) and what was extracted from it."""

    seed: int
    object_prompt: str = ""
    prompt: str = ""
    image: Image | None = None  # dropped once the instances are cut out
    instances: list[Instance] = field(default_factory=list)
    affinity: np.ndarray | None = None  # (K, K) CLIP affinity of the instances
    alive: bool = True


@dataclass
class Shard:
    """The unit of work and of resume: one object, a block of collage seeds, the sets they yield."""

    shard_id: str
    object_name: str
    seeds: list[int]
    collages: list[Collage] = field(default_factory=list)
    sets: list[DraftSet] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    error: str | None = None  # first failure; a failed shard is not written and is retried by a rerun


def plan_shards(config: S3Config) -> list[Shard]:
    """All shards of the job, sharded by object and seed block, in a fixed order."""
    n, per = config.collages_per_object, config.collages_per_shard
    shards = []
    for name in config.object_names():
        for block in range(-(-n // per)):
            seeds = list(range(block * per, min(n, (block + 1) * per)))
            shards.append(Shard(f"{slug(name)}-{block:05d}", name, seeds, [Collage(s) for s in seeds]))
    return shards


def _alive(shard: Shard) -> list[Collage]:
    return [c for c in shard.collages if c.alive]


def _seed(config: S3Config, shard: Shard, collage: Collage, tag: str, *index: int) -> int:
    return derive_seed(config.seed, shard.object_name, collage.seed, tag, *index)


def step_object_prompts(shard: Shard, config: S3Config, stages: dict[str, Any]) -> Shard:
    """t_o <- GPT(l, object), and the collage prompt t_o + suffix (Algorithm 1, line 10; sec. 3.1)."""
    writer = stages["llm"]
    for c in _alive(shard):
        try:
            c.object_prompt = writer.object_prompt(shard.object_name, _seed(config, shard, c, "object"))
        except LLMError:
            c.alive = False
            shard.counts["llm_failures"] += 1
            shard.counts["collages_skipped_llm"] += 1
            continue
        c.prompt = f"{c.object_prompt.rstrip(' .,')}, {config.text_to_image.suffix}"
    return shard


def step_collages(shard: Shard, config: S3Config, stages: dict[str, Any]) -> Shard:
    """x_0 <- G(t_o): one collage per seed, batched (Algorithm 1, line 11)."""
    todo = _alive(shard)
    if todo:
        images = stages["text_to_image"]([c.prompt for c in todo], [_seed(config, shard, c, "collage") for c in todo])
        for c, im in zip(todo, images, strict=True):
            c.image = im.convert("RGB")
    shard.counts["collages"] += len(todo)
    return shard


def step_instances(shard: Shard, config: S3Config, stages: dict[str, Any]) -> Shard:
    """{x_1..x_K} <- S(x_0): detect the object, segment each box, cut out (Algorithm 1, line 12)."""
    det, seg = config.detector, config.segmenter
    for c in _alive(shard):
        assert c.image is not None
        boxes, scores = stages["detector"](c.image, shard.object_name)
        keep = select_boxes(
            boxes, scores, c.image.size, det.nms_iou, det.min_box_fraction, det.max_box_fraction, det.max_instances
        )
        masks = stages["segmenter"](c.image, boxes[keep]) if keep else np.zeros((0, *c.image.size[::-1]), bool)
        for i, m in zip(keep, masks, strict=True):
            x0, y0, x1, y1 = (max(int(v), 0) for v in np.round(boxes[i]))
            region = m[y0:y1, x0:x1]  # the mask inside its box
            if region.size and region.mean() >= seg.min_mask_fraction:
                c.instances.append(cut_instance(c.image, boxes[i], m, float(scores[i])))
            else:
                shard.counts["instances_bad_mask"] += 1
        c.image = None  # the cut-outs are all later steps need
        shard.counts["instances"] += len(c.instances)
        if not c.instances:
            c.alive = False
            shard.counts["collages_without_instances"] += 1
    return shard


def step_embeddings(shard: Shard, config: S3Config, stages: dict[str, Any]) -> Shard:
    """A_ij <- CLIP(x_i, x_j) over each collage's instances, one batched call (Algorithm 1, line 13)."""
    todo = _alive(shard)
    crops = [on_background(i.image) for c in todo for i in c.instances]
    if crops:
        feats = stages["clip"](crops)  # (sum K, D)
        start = 0
        for c in todo:
            k = len(c.instances)
            c.affinity = affinity(feats[start : start + k])  # (K, D) -> (K, K)
            start += k
    return shard


def step_groups(shard: Shard, config: S3Config, stages: dict[str, Any]) -> Shard:
    """M_ij = A_ij > 0.95, connected components -> draft sets (Algorithm 1, lines 14-15)."""
    for ci, c in enumerate(shard.collages):
        if not c.alive:
            continue
        groups, dropped = group_instances(c.affinity, config.clip.threshold, config.min_set_size, config.max_set_size)
        shard.counts["instances_ungrouped"] += dropped
        if not groups:
            shard.counts["collages_without_sets"] += 1
        for g, members in enumerate(groups):
            key = f"{slug(shard.object_name)}-{c.seed:06d}-{g}"
            shard.sets.append(DraftSet(key, ci, [Member(i) for i in members]))
    return shard


def _prune(shard: Shard, config: S3Config, reason: str) -> None:
    """Drop sets that fell below the minimum size (a member was skipped)."""
    kept = [s for s in shard.sets if len(s.members) >= config.min_set_size]
    shard.counts[reason] += len(shard.sets) - len(kept)
    shard.sets = kept


def step_scene_prompts(shard: Shard, config: S3Config, stages: dict[str, Any]) -> Shard:
    """t_s <- GPT(l, scene), one per image of each set (Algorithm 1, line 19)."""
    writer = stages["llm"]
    for s in shard.sets:
        c = shard.collages[s.collage]
        kept = []
        for m in s.members:
            try:
                m.scene_prompt = writer.scene_prompt(shard.object_name, _seed(config, shard, c, "scene", m.instance))
            except LLMError:
                shard.counts["llm_failures"] += 1
                shard.counts["images_skipped_llm"] += 1
                continue
            kept.append(m)
        s.members = kept
    _prune(shard, config, "sets_dropped_llm")
    return shard


def step_canvases(shard: Shard, config: S3Config, stages: dict[str, Any]) -> Shard:
    """Paste each instance at a random location of an empty canvas (Algorithm 1, line 20)."""
    spec = config.inpainter
    for s in shard.sets:
        c = shard.collages[s.collage]
        for m in s.members:
            rng = np.random.default_rng(_seed(config, shard, c, "paste", m.instance))
            m.canvas, m.mask, m.paste_box = paste_on_canvas(
                c.instances[m.instance].image, spec.size, rng, spec.object_scale
            )
            m.seed = _seed(config, shard, c, "inpaint", m.instance)
    return shard


def _members(shard: Shard) -> list[Member]:
    return [m for s in shard.sets for m in s.members]


def step_inpaint(shard: Shard, config: S3Config, stages: dict[str, Any]) -> Shard:
    """x <- G_I(x, t_s): inpaint every canvas's background, one batched call (Algorithm 1, line 21)."""
    members = _members(shard)
    if members:
        images = stages["inpainter"](
            [m.canvas for m in members],
            [m.mask for m in members],
            [m.scene_prompt for m in members],
            [m.seed for m in members],
        )
        for m, im in zip(members, images, strict=True):
            m.image, m.canvas, m.mask = im.convert("RGB"), None, None
    shard.counts["images_inpainted"] += len(members)
    return shard


def step_stylise(shard: Shard, config: S3Config, stages: dict[str, Any]) -> Shard:
    """With probability p each image is restyled by a random style instruction (InstructPix2Pix, sec. 3.1)."""
    spec = config.stylizer
    if spec.probability <= 0:
        return shard
    chosen = []
    for s in shard.sets:
        c = shard.collages[s.collage]
        for m in s.members:
            rng = np.random.default_rng(_seed(config, shard, c, "style", m.instance))
            if rng.random() < spec.probability:
                m.style = str(spec.styles[int(rng.integers(len(spec.styles)))])
                chosen.append(m)
    if chosen:
        images = stages["stylizer"]([m.image for m in chosen], [m.style for m in chosen], [m.seed for m in chosen])
        for m, im in zip(chosen, images, strict=True):
            m.image = im.convert("RGB")
    shard.counts["images_stylised"] += len(chosen)
    return shard


def step_captions(shard: Shard, config: S3Config, stages: dict[str, Any]) -> Shard:
    """Caption every image (BLIP-2 in the supplementary); an empty caption falls back to the scene prompt."""
    members = _members(shard)
    captioner = stages.get("captioner")
    captions = captioner([m.image for m in members]) if captioner is not None and members else []
    for i, m in enumerate(members):
        caption = captions[i].strip() if captions else ""
        if captioner is not None and not caption:
            shard.counts["captions_empty"] += 1
        m.caption = caption or m.scene_prompt
    return shard


@dataclass(frozen=True)
class Step:
    """One stage of the pipeline: the models it needs (none: a CPU task) and its function."""

    name: str
    stages: tuple[str, ...]
    fn: Callable[[Shard, S3Config, dict[str, Any]], Shard]


STEPS: tuple[Step, ...] = (
    Step("object_prompts", ("llm",), step_object_prompts),
    Step("collages", ("text_to_image",), step_collages),
    Step("instances", ("detector", "segmenter"), step_instances),
    Step("embeddings", ("clip",), step_embeddings),
    Step("groups", (), step_groups),
    Step("scene_prompts", ("llm",), step_scene_prompts),
    Step("canvases", (), step_canvases),
    Step("inpaint", ("inpainter",), step_inpaint),
    Step("stylise", ("stylizer",), step_stylise),
    Step("captions", ("captioner",), step_captions),
)


def run_step(step: Step, shard: Shard, config: S3Config, stages: dict[str, Any]) -> Shard:
    """Apply one step; an unexpected error marks the shard failed (not written, retried on rerun)."""
    if shard.error is not None:
        return shard
    try:
        return step.fn(shard, config, stages)
    except Exception as e:
        shard.error = f"{step.name}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        return shard
