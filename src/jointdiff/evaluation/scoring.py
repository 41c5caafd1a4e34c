"""Scoring generated images against a subject's real images and prompts (JeDi sec. 4), and the
averaging of the protocol: per (subject, prompt) over input choices and samples, per subject over
prompts, overall over subjects."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from jointdiff.evaluation.benchmarks import Benchmark, Subject
from jointdiff.evaluation.cache import FeatureCache, image_key
from jointdiff.evaluation.features import DualEncoder, ImageEncoder
from jointdiff.evaluation.metrics import diversity, image_alignment, self_similarity, text_alignment
from jointdiff.evaluation.protocol import Sample
from jointdiff.evaluation.segmenters import Segmenter, cutout, for_subject

# feature kind -> the metric it gives against real images ("parts": the part-aware identity, where a backbone is set)
IMAGE_METRICS = {"clip": "CLIP-I", "mclip": "MCLIP-I", "dino": "DINO", "mdino": "MDINO", "parts": "PartID"}
# Which real images each generated image is scored against (its identity metrics):
PROTOCOLS = {
    "unseen": "real views not given to the method (the default)",
    "all": "all real images, the inputs included (the JeDi paper's protocol)",
    "inputs": "the input images only",
}


def gallery_indices(n_images: int, n_gallery: int, choice: tuple[int, ...] | None, against: str) -> list[int]:
    """Indices into ``subject.images + subject.gallery`` that a generated image made from the inputs ``choice``
    is scored against: ``unseen`` = every real view but the inputs (the benchmark's held-out gallery included);
    ``all`` = ``subject.images`` (JeDi's protocol: the inputs are among them); ``inputs`` = the inputs."""
    if against not in PROTOCOLS:
        raise ValueError(f"unknown scoring protocol {against!r}; choose one of: {', '.join(PROTOCOLS)}")
    if against == "all":
        return list(range(n_images))
    if choice is None:
        if against == "unseen" and n_gallery:  # inputs unknown: only the views no method was ever given
            return list(range(n_images, n_images + n_gallery))
        raise ValueError(
            f"scoring against {against!r} needs the input choice of every image (in<i> folders); "
            "--against all scores against every real image (the paper's protocol)"
        )
    if against == "inputs":
        return list(choice)
    out = [i for i in range(n_images) if i not in choice] + list(range(n_images, n_images + n_gallery))
    if not out:
        raise ValueError(f"no real view is left to score against: all {n_images} were inputs and there is no gallery")
    return out


def _name(obj: object) -> str:
    return str(getattr(obj, "name", type(obj).__name__))


@dataclass
class Scorer:
    """The frozen backbones and segmenter that turn images into features."""

    clip: DualEncoder  # CLIP-T, CLIP-I, MCLIP-I
    dino: ImageEncoder  # DINO, MDINO, diversity
    segmenter: Segmenter | None = None  # None: masked metrics only where the benchmark gives masks
    fill: tuple[int, int, int] = (0, 0, 0)  # background colour of foreground-masked images
    parts: ImageEncoder | None = None  # the part-aware identity (PartID); None: no PartID column

    def identity(self) -> dict[str, str]:
        """What the cached features depend on."""
        seg = _name(self.segmenter) if self.segmenter is not None else "none"
        out = {"clip": _name(self.clip), "dino": _name(self.dino), "segmenter": seg, "fill": str(self.fill)}
        return out | ({"parts": _name(self.parts)} if self.parts is not None else {})

    def features(
        self,
        images: Sequence[PIL.Image.Image],
        cache: FeatureCache,
        subject: Subject,
        masks: Sequence[np.ndarray] | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """{"clip", "dino", "mclip", "mdino", "parts"} -> (n, d) features, computing only what the cache lacks;
        masked kinds are None when neither ``masks`` nor a segmenter is available, "parts" when no part-aware
        encoder is set."""
        segment = for_subject(self.segmenter, subject) if self.segmenter is not None else None
        keys = [image_key(im) for im in images]
        masked = masks is not None or segment is not None
        if masks is not None:  # explicit masks: the masked features also depend on the mask
            mkeys = [
                k + "+" + hashlib.sha1(np.asarray(m).tobytes()).hexdigest() for k, m in zip(keys, masks, strict=True)
            ]
        else:
            mkeys = keys
        plain = {"clip": self.clip, "dino": self.dino} | ({"parts": self.parts} if self.parts is not None else {})
        todo = [i for i, k in enumerate(keys) if any(cache.get(f"{k}/{kind}") is None for kind in plain)]
        if masked:
            todo = sorted(set(todo) | {i for i, k in enumerate(mkeys) if cache.get(f"{k}/mclip") is None})
        if todo:
            rgb = [images[i].convert("RGB") for i in todo]
            for kind, enc in plain.items():
                for i, f in zip(todo, enc.encode_images(rgb), strict=True):
                    cache.put(f"{keys[i]}/{kind}", f)
            if masked:
                cut = []
                for i, im in zip(todo, rgb, strict=True):
                    mask = masks[i] if masks is not None else segment(im)  # type: ignore[misc]
                    cut.append(cutout(im, mask, self.fill))
                for kind, enc in (("mclip", self.clip), ("mdino", self.dino)):
                    for i, f in zip(todo, enc.encode_images(cut), strict=True):
                        cache.put(f"{mkeys[i]}/{kind}", f)
        out: dict[str, torch.Tensor | None] = {}
        for kind in IMAGE_METRICS:
            ks = mkeys if kind.startswith("m") else keys
            present = (masked or kind[0] != "m") and (kind != "parts" or self.parts is not None)
            out[kind] = torch.stack([cache.get(f"{k}/{kind}") for k in ks]) if present else None
        return out


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


def aggregate(rows: Sequence[dict], metrics: Sequence[str]) -> dict:
    """The protocol's averaging: mean per (subject, prompt) over input choices and samples, then per
    subject over its prompts, per prompt over subjects, and overall over subjects."""
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        cells[(r["subject"], r["template"])].append(r)
    cell_mean = {key: {m: _mean(r.get(m) for r in rs) for m in metrics} for key, rs in cells.items()}
    subjects = sorted({s for s, _ in cells}, key=[r["subject"] for r in rows].index)
    templates = sorted({t for _, t in cells}, key=[r["template"] for r in rows].index)
    per_subject = {
        s: {m: _mean(v[m] for (s2, _), v in cell_mean.items() if s2 == s) for m in metrics}
        | {"images": sum(1 for (s2, _), rs in cells.items() if s2 == s for r in rs if r.get("path"))}
        for s in subjects
    }
    per_prompt = {
        t: {m: _mean(v[m] for (_, t2), v in cell_mean.items() if t2 == t) for m in metrics}
        | {"images": sum(1 for (_, t2), rs in cells.items() if t2 == t for r in rs if r.get("path"))}
        for t in templates
    }
    overall = {m: _mean(per_subject[s][m] for s in subjects) for m in metrics}
    return {"overall": overall, "subjects": per_subject, "prompts": per_prompt}


def score_samples(
    samples: Sequence[Sample],
    benchmark: Benchmark,
    subjects: Sequence[Subject],
    scorer: Scorer,
    feature_dir: Path,
    against: str = "unseen",
    processes: Any = None,
) -> tuple[list[dict], dict[str, float | None]]:
    """Per-image scores (rows with CLIP-T, CLIP-I, MCLIP-I, DINO, MDINO, PartID, and Diversity per group) and the
    "real images" reference row (mean similarity over distinct pairs of real images, averaged over subjects).
    ``against`` names the real images each generated image is compared with (:data:`PROTOCOLS`,
    :func:`gallery_indices`). With ``processes`` (accelerate's ``PartialState`` of several) the subjects are split
    between them (each subject's features, and its cache file, stay in one process) and every process returns
    all rows, in subject order: what one process returns."""
    if processes is None or processes.num_processes == 1:
        rows, real_rows = score_subjects(samples, benchmark, subjects, scorer, feature_dir, against)
    else:
        from accelerate.utils import gather_object

        with processes.split_between_processes(list(subjects)) as mine:
            part = score_subjects(samples, benchmark, mine, scorer, feature_dir, against, progress=False)
        parts = gather_object([part])  # in rank order: the subjects' order
        rows = [r for p in parts for r in p[0]]
        real_rows = [r for p in parts for r in p[1]]
    real_summary = aggregate(real_rows, list(IMAGE_METRICS.values()))["overall"] if real_rows else {}
    return rows, real_summary


def score_subjects(
    samples: Sequence[Sample],
    benchmark: Benchmark,
    subjects: Sequence[Subject],
    scorer: Scorer,
    feature_dir: Path,
    against: str = "unseen",
    progress: bool = True,
) -> tuple[list[dict], list[dict]]:
    """The per-image rows of ``subjects`` (those ``samples`` have) and one real-images row per subject."""
    rows: list[dict] = []
    real_rows: list[dict] = []
    by_subject: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_subject[s.subject].append(s)
    chosen = [s for s in subjects if s.name in by_subject]
    for subject in tqdm(chosen, desc="score", unit="subject", leave=False, disable=not progress):
        cache = FeatureCache(feature_dir, subject.name, scorer.identity())
        n_images, n_gallery = len(subject.images), len(subject.gallery)
        real_masks = (subject.masks + subject.gallery_masks) if subject.masks is not None else None
        real = scorer.features(subject.images + subject.gallery, cache, subject, masks=real_masks)
        todo = by_subject[subject.name]
        opened = [PIL.Image.open(s.path) for s in todo]  # decoded only where features are missing
        gen = scorer.features(opened, cache, subject)
        for im in opened:
            im.close()
        cache.save()
        templates = benchmark.prompt_templates(subject)
        text = scorer.clip.encode_texts([t.format(subject.class_word) for t in templates])  # (P, d)
        clip_t = text_alignment(gen["clip"], text[[s.prompt_index for s in todo]])  # type: ignore[arg-type]
        scores = {"CLIP-T": clip_t.tolist()}
        for kind, metric in IMAGE_METRICS.items():
            g, r = gen[kind], real[kind]
            if g is None or r is None:
                scores[metric] = [None] * len(todo)
            else:
                against_of = [gallery_indices(n_images, n_gallery, s.choice, against) for s in todo]
                scores[metric] = [float(image_alignment(g[i : i + 1], r[idx])) for i, idx in enumerate(against_of)]
        for i, s in enumerate(todo):
            rows.append(
                {
                    "subject": s.subject,
                    "template": s.template,
                    "prompt_index": s.prompt_index,
                    "choice": s.choice,
                    "sample": s.sample,
                    "path": str(s.path),
                }
                | {m: v[i] for m, v in scores.items()}
            )
        groups: dict[tuple, list[int]] = defaultdict(list)  # diversity: images of one prompt and input choice
        for i, s in enumerate(todo):
            groups[(s.template, s.choice)].append(i)
        for (template, _), idx in groups.items():
            if len(idx) >= 2:
                rows.append({"subject": subject.name, "template": template, "Diversity": diversity(gen["dino"][idx])})  # type: ignore[index]
        real_rows.append(
            {"subject": subject.name, "template": ""}
            | {m: (self_similarity(real[k]) if real[k] is not None else None) for k, m in IMAGE_METRICS.items()}
        )
    return rows, real_rows
