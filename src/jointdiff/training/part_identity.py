"""Training the part-aware toy identity encoder ("toy-parts", issue 26): the toy DINO's network fine-tuned with
hard negatives that keep a subject's colours and change its parts, so a blob in the right colours cannot
earn its score.

1. :func:`build_parts_cache`: per subject of the ``evaluator`` seed range, :data:`VIEWS` plain views
   (identity-keeping conditions, no style) and one render of each impostor of
   :data:`IMPOSTORS` (``data/toyworld/impostors.py``, randomised: hue turned by 0.15-0.85 of the circle;
   50-100% of the parts changed with 30% size jitter; the most different of 8 other subjects of the
   recipe, in its colours).
2. :func:`train_parts`: supervised InfoNCE (SupCon) where two views of a subject are the positives and every
   other image of the batch a negative, among them the subject's own impostors and one image-level impostor
   per subject (its silhouette filled with the mean colour, or a Gaussian blur of 3-6 px); a hinge that
   pulls the cosine between a view and its own impostors below ``impostor_margin``; the foreground
   loss on the attention map as for the toy DINO. Batches are a pure function of ``(seed, step)``; the
   shell checkpoints and resumes exactly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from jointdiff.common.seeding import seeded
from jointdiff.data.toyworld.impostors import PALETTE_CANDIDATES
from jointdiff.evaluation.toy.models import load_model
from jointdiff.training.evaluators import augment, fit_evaluator, save_npz
from jointdiff.training.shell import Task

VIEWS = 3  # plain views of the subject per cache row
IMPOSTORS = ("recoloured", "parts_changed", "palette_matched")  # subject-level hard negatives, one render each


@dataclass(frozen=True)
class PartsTraining:
    """One part-aware identity training run (fine-tuning the toy DINO by default)."""

    kind: str = "parts"
    steps: int = 2000
    subjects_per_step: int = 40  # x (2 views + 3 impostors + 1 image-level impostor) images
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: int = 100
    temperature: float = 0.1
    # InfoNCE only asks an impostor to rank below the positive; the hinge also pulls its cosine to the anchor
    # down to the level of unrelated subjects (the ladder normalises between those levels)
    impostor_margin: float = 0.3  # cosine above which a subject's own impostors are penalised
    impostor_weight: float = 1.0
    mask_weight: float = 0.5  # foreground loss on the attention map (real views)
    blob_p: float = 0.5  # image-level impostor: silhouette with probability blob_p, else a 3-6 px blur
    seed: int = 0
    ckpt_every: int = 250
    val_subjects: int = 200  # the last subjects of the cache, never trained on
    init: str = ""  # weights to start from ("" = the shipped toy DINO, jointdiff/weights/toyworld/identity)


def _subject_rows(args: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Renders of one subject: VIEWS plain views, then one per impostor; ``(V+I, R, R, 3)`` uint8 and masks."""
    from jointdiff.data.toyworld.generator import render_view, sample_condition, view_rng
    from jointdiff.data.toyworld.impostors import (
        palette_matched,
        parts_changed,
        recoloured,
        same_class_subject,
    )
    from jointdiff.data.toyworld.subjects import make_subject

    seed, resolution, candidates = args
    subject = make_subject(seed)
    rng = np.random.default_rng([seed, 2026])
    impostors = [
        recoloured(subject, float(rng.uniform(0.15, 0.85))),
        parts_changed(subject, rng, p=float(rng.uniform(0.5, 1.0)), jitter=0.3),
        palette_matched(subject, same_class_subject(subject, rng, "evaluator", candidates)),
    ]
    images, masks = [], []
    for k, spec in enumerate([subject] * VIEWS + impostors):
        vr = view_rng(seed, 3000 + k)
        view = render_view(spec, sample_condition(vr, subject, keep_identity=True), vr, resolution, descriptor="")
        images.append(view.image)
        masks.append(view.mask)
    return np.stack(images), np.stack(masks)


def build_parts_cache(
    path: str | Path, subjects: int, resolution: int = 64, workers: int = 2, candidates: int = PALETTE_CANDIDATES
) -> Path:
    """Render ``subjects`` evaluator-range subjects (views and impostors) into ``path`` (.npz); reused when it exists.
    ``candidates``: the palette impostor is the most different of that many other subjects of the recipe."""
    from jointdiff.data.toyworld.subjects import SEED_RANGES

    path = Path(path)
    if path.exists():
        return path
    start = SEED_RANGES["evaluator"].start
    jobs = [(start + i, resolution, candidates) for i in range(subjects)]
    ctx = get_context("fork") if hasattr(os, "fork") else get_context()
    with ctx.Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        rows = list(tqdm(pool.imap(_subject_rows, jobs, chunksize=16), total=subjects, desc="rendering parts data"))
    return save_npz(
        path,
        images=np.stack([r[0] for r in rows]),  # (S, V+I, R, R, 3) uint8
        masks=np.packbits(np.stack([r[1] for r in rows]), axis=-1),  # (S, V+I, R, R/8)
        seeds=np.array([j[0] for j in jobs], dtype=np.int64),
    )


class PartsCache:
    """The rendered views and impostors in memory, split into training and held-out subjects."""

    def __init__(self, path: str | Path, val_subjects: int) -> None:
        d = np.load(path)
        self.images = torch.from_numpy(d["images"]).permute(0, 1, 4, 2, 3)  # (S, K, R, R, 3) -> (S, K, 3, R, R)
        self.masks = torch.from_numpy(np.unpackbits(d["masks"], axis=-1).astype(bool))  # (S, K, R, R)
        n = self.images.shape[0]
        if val_subjects >= n:
            raise ValueError(f"val_subjects ({val_subjects}) must be smaller than the cache's {n} subjects")
        self.n_train = n - val_subjects


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(B, 3, H, W)`` images blurred by a Gaussian of ``sigma`` pixels (separable, edges replicated)."""
    r = max(1, int(np.ceil(2.5 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)  # (C, 1, 1, 2r+1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k, groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.transpose(2, 3), groups=x.shape[1])


def blob_impostors(x: torch.Tensor, masks: torch.Tensor, g: torch.Generator, blob_p: float) -> torch.Tensor:
    """Image-level impostors of ``(B, 3, R, R)`` views: the mask filled with its mean colour (probability
    ``blob_p``) or a Gaussian blur of 3-6 px."""
    out = x.clone()
    for i in range(x.shape[0]):
        if float(torch.rand(1, generator=g)) < blob_p and masks[i].any():
            mean = x[i][:, masks[i]].mean(1)  # (3,)
            out[i] = torch.where(masks[i], mean[:, None, None], x[i])
        else:
            out[i] = gaussian_blur(x[i : i + 1], 3.0 + 3.0 * float(torch.rand(1, generator=g)))[0]
    return out


def parts_loss(model: torch.nn.Module, cache: PartsCache, cfg: PartsTraining, step: int) -> torch.Tensor:
    """SupCon over a batch of ``subjects_per_step`` subjects: 2 views each are anchors and positives of each
    other; impostors (3 subject-level + 1 image-level per subject) are negatives only."""
    rng = np.random.default_rng([cfg.seed, step])
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    p = cfg.subjects_per_step
    subjects = rng.choice(cache.n_train, p, replace=False)
    views = np.array([rng.choice(VIEWS, 3, replace=False) for _ in subjects])  # 2 anchors + 1 for the blob
    s = torch.from_numpy(subjects)
    real = torch.cat([cache.images[s, views[:, 0]], cache.images[s, views[:, 1]]]).float() / 255  # (2P, 3, R, R)
    real_m = torch.cat([cache.masks[s, views[:, 0]], cache.masks[s, views[:, 1]]])
    imp = cache.images[s, VIEWS:].flatten(0, 1).float() / 255  # (P * I, 3, R, R)
    blob = blob_impostors(cache.images[s, views[:, 2]].float() / 255, cache.masks[s, views[:, 2]], g, cfg.blob_p)
    x_real, m = augment(real, g, real_m, bg_p=0.2)  # the toy DINO's augmentation, foreground cutouts included
    x_neg, _ = augment(torch.cat([imp, blob]), g)
    x = torch.cat([x_real, x_neg])
    z, attn = model.image.features(x)
    n_anchor = 2 * p
    labels = torch.arange(p).repeat(2)  # anchors: subject index
    logits = (z[:n_anchor] @ z.T) / cfg.temperature  # (2P, all)
    logits[:, :n_anchor] = logits[:, :n_anchor].masked_fill(torch.eye(n_anchor, dtype=torch.bool), -1e9)
    target = torch.zeros_like(logits)
    target[:, :n_anchor] = (labels[:, None] == labels[None, :]).float()
    target[:, :n_anchor].fill_diagonal_(0.0)
    loss = -(target * logits.log_softmax(1)).sum(1).mean()
    if cfg.impostor_weight > 0:  # each anchor against its own subject's impostors
        n_imp = len(IMPOSTORS)
        own = torch.cat(
            [2 * p + labels[:, None] * n_imp + torch.arange(n_imp), (2 * p + n_imp * p + labels)[:, None]], 1
        )  # (2P, I + 1) indices of the subject-level impostors, then the image-level one
        cos = (z[:n_anchor, None, :] * z[own]).sum(-1)  # (2P, I + 1)
        loss = loss + cfg.impostor_weight * (cos - cfg.impostor_margin).clamp_min(0).mean()
    if attn is not None and cfg.mask_weight > 0:
        fg = F.adaptive_avg_pool2d(m[:, None].float(), attn.shape[-2:])[:, 0]  # (2P, R, R) -> (2P, h, w) coverage
        loss = loss + cfg.mask_weight * F.binary_cross_entropy_with_logits(attn[:n_anchor], fg)
    return loss


@torch.no_grad()
def validate_parts(model: torch.nn.Module, cache: PartsCache) -> dict[str, float]:
    """On the held-out subjects: top-1 retrieval (view 1 finds view 0) and, per impostor, the fraction of
    subjects whose other view is closer to view 0 than the impostor is (1 = every impostor ranked below)."""
    model.eval()
    try:
        s = torch.arange(cache.n_train, cache.images.shape[0])
        z = [model(cache.images[s, k].float() / 255) for k in range(cache.images.shape[1])]  # K x (S, D)
        out = {"top1": float(((z[1] @ z[0].T).argmax(1) == torch.arange(len(s))).float().mean())}
        same = (z[0] * z[1]).sum(1)
        for i, name in enumerate(IMPOSTORS):
            out[f"below_{name}"] = float((same > (z[0] * z[VIEWS + i]).sum(1)).float().mean())
        return out
    finally:
        model.train()


class PartsTask(Task):
    """The part-aware loss on the training shell; a held-out check per log."""

    def __init__(self, cfg: PartsTraining, model: torch.nn.Module, cache: PartsCache) -> None:
        self.cfg, self.model, self.cache, self.step = cfg, model, cache, 0

    def loss(self) -> tuple[torch.Tensor, int]:
        n = self.cfg.subjects_per_step * (2 + len(IMPOSTORS) + 1)
        return parts_loss(self.model, self.cache, self.cfg, self.step), n

    def state_dict(self) -> dict[str, str]:
        from dataclasses import asdict

        return {"config": json.dumps(asdict(self.cfg))}  # a resumed run must be the same run

    def after_step(self, step: int) -> None:
        self.step = step

    def metrics(self, step: int) -> dict[str, float]:
        return validate_parts(self.model, self.cache)


def train_parts(cache_path: str | Path, run_dir: str | Path, cfg: PartsTraining, out: str | Path | None) -> Path | None:
    """Train (or resume) the part-aware identity encoder in ``run_dir/parts``; fp16 safetensors to ``out``."""
    from jointdiff.evaluation.toy.evaluators import weights_path

    cache = PartsCache(cache_path, cfg.val_subjects)
    with seeded(cfg.seed):
        model = load_model(cfg.init or weights_path(None, "identity")).train().requires_grad_(True)
    return fit_evaluator(run_dir, cfg, model, [], PartsTask(cfg, model, cache), out)
