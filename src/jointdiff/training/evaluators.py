"""Training the toy evaluators on CPU, in resumable runs (the toy stand-ins for CLIP, DINO and the segmenter;
their networks are :mod:`jointdiff.evaluation.toy.models`).

1. ``build_cache``: render views of subjects from the ``evaluator`` seed range (4 plain views and
   2 stylised ones per subject) with masks, conditions and styles, into one ``.npz``.
2. ``train``: :class:`EvaluatorTask` on the training shell: deterministic batches (a pure function of
   ``(seed, step)``), AdamW with warm-up and cosine decay, checkpoints every ``ckpt_every`` steps
   (resume by running again) with a held-out check logged beside the loss, and fp16 safetensors
   export at the end.

Losses: identity = supervised InfoNCE over subjects (two views per subject, SimCLR/SupCon);
dual = symmetric CLIP InfoNCE where identical captions count as positives; segmenter = BCE + Dice.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from jointdiff.common.seeding import seeded
from jointdiff.data.toyworld.captions import STYLES, TEMPLATES, caption, sample_descriptor, vocabulary
from jointdiff.data.toyworld.parts import COLOR_WORDS, TEXTURE_WORDS
from jointdiff.evaluation.toy.models import EvaluatorConfig, build_model, load_model, n_params, save_model
from jointdiff.training.config import TrainConfig
from jointdiff.training.shell import Shell, Task

CONDITIONS = tuple(TEMPLATES)  # index <-> condition key in caches
STYLE_KEYS = tuple(STYLES)
IDENTITY_EXCLUDED = ("red", "purple", "cube")  # edits that change the subject's identity
PLAIN_VIEWS, STYLED_VIEWS = 4, 2
# CPU-sized architectures: (widths, strides, pooling)
ARCH = {
    "dual": {"widths": (32, 48, 96, 192)},
    "identity": {"widths": (32, 64, 128, 128), "strides": (2, 2, 2, 1), "pool": "attention"},  # 8x8 attention map
    "segmenter": {"widths": (16, 32, 64, 128)},
}


@dataclass(frozen=True)
class EvaluatorTraining:
    """One evaluator training run."""

    kind: str  # "dual" | "identity" | "segmenter"
    steps: int = 3000
    batch: int = 128  # images per step (identity: batch // 2 subjects x 2 views)
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 150
    temperature: float = 0.1  # identity InfoNCE temperature
    views: int = 2  # identity: views per subject in a batch (SupCon positives)
    mask_weight: float = 0.5  # identity: weight of the auxiliary foreground loss on the attention map
    aux_weight: float = 0.5  # identity: weight of auxiliary class / colour / texture heads (dense early signal)
    seed: int = 0
    ckpt_every: int = 250
    val_subjects: int = 200  # the last subjects of the cache, never trained on
    init: str = ""  # weights file to start from (fine-tuning phase); "" = random initialisation


def _subject_views(args: tuple[int, int]) -> dict:
    from jointdiff.data.toyworld.generator import render_view, sample_condition, sample_style, view_rng
    from jointdiff.data.toyworld.subjects import make_subject

    seed, resolution = args
    subject = make_subject(seed)
    out = {
        "images": [],
        "masks": [],
        "cond": [],
        "style": [],
        "class_word": subject.class_word,
        "descriptor": subject.descriptor,
    }
    for k in range(PLAIN_VIEWS + STYLED_VIEWS):
        rng = view_rng(seed, 1000 + k)
        condition = sample_condition(rng, subject)
        style = sample_style(rng, 1.0) if k >= PLAIN_VIEWS else None
        v = render_view(subject, condition, rng, resolution, style=style, descriptor="")
        out["images"].append(v.image)
        out["masks"].append(v.mask)
        out["cond"].append(CONDITIONS.index(condition))
        out["style"].append(-1 if style is None else STYLE_KEYS.index(style))
    return out


def build_cache(
    path: str | Path, subjects: int, resolution: int = 64, workers: int = 2, first_seed: int | None = None
) -> Path:
    """Render ``subjects`` evaluator-range subjects x 6 views into ``path`` (.npz); reused when it exists."""
    from jointdiff.data.toyworld.subjects import SEED_RANGES

    path = Path(path)
    if path.exists():
        return path
    start = SEED_RANGES["evaluator"].start if first_seed is None else first_seed
    jobs = [(start + i, resolution) for i in range(subjects)]
    ctx = get_context("fork") if hasattr(os, "fork") else get_context()
    with ctx.Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        results = list(
            tqdm(pool.imap(_subject_views, jobs, chunksize=16), total=subjects, desc="rendering evaluator data")
        )
    v = PLAIN_VIEWS + STYLED_VIEWS
    return save_npz(
        path,
        images=np.stack([im for r in results for im in r["images"]]),  # (S*V, R, R, 3) uint8
        masks=np.packbits(np.stack([m for r in results for m in r["masks"]]), axis=-1),  # (S*V, R, R/8)
        subject=np.repeat(np.arange(subjects, dtype=np.int32), v),
        cond=np.array([c for r in results for c in r["cond"]], dtype=np.int16),
        style=np.array([s for r in results for s in r["style"]], dtype=np.int8),
        class_word=np.array([r["class_word"] for r in results]),
        descriptor=np.array([r["descriptor"] for r in results]),
        seeds=np.array([j[0] for j in jobs], dtype=np.int64),
    )


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    """Write ``arrays`` to ``path`` (.npz) atomically: a temporary file, then a rename (a killed run leaves none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.rename(path)
    return path


class Cache:
    """An evaluator-training cache in memory, split into training and held-out subjects."""

    def __init__(self, path: str | Path, val_subjects: int) -> None:
        d = np.load(path)
        self.images = torch.from_numpy(d["images"]).permute(0, 3, 1, 2)  # (N, R, R, 3) -> (N, 3, R, R) uint8
        self.masks = torch.from_numpy(np.unpackbits(d["masks"], axis=-1).astype(bool))  # (N, R, R)
        self.subject, self.cond, self.style = d["subject"], d["cond"].astype(np.int64), d["style"].astype(np.int64)
        self.class_word, self.descriptor = d["class_word"], d["descriptor"]
        n_subj = len(self.class_word)
        if val_subjects >= n_subj:
            raise ValueError(f"val_subjects ({val_subjects}) must be smaller than the cache's {n_subj} subjects")
        self.n_train = n_subj - val_subjects
        train = self.subject < self.n_train
        self.train_idx, self.val_idx = np.flatnonzero(train), np.flatnonzero(~train)
        ok = (self.style < 0) & ~np.isin(self.cond, [CONDITIONS.index(c) for c in IDENTITY_EXCLUDED])
        self.identity_views = [np.flatnonzero(ok & (self.subject == s)) for s in range(n_subj)]
        classes, tex = sorted({str(c) for c in self.class_word}), ["", *TEXTURE_WORDS.values()]
        words = [str(d).split() for d in self.descriptor]
        self.labels = {  # per subject: what the auxiliary identity heads predict
            "class": np.array([classes.index(str(c)) for c in self.class_word]),
            "colour": np.array([COLOR_WORDS.index(w[0]) for w in words]),
            "texture": np.array([tex.index(w[1] if len(w) > 1 else "") for w in words]),
        }
        counts = np.array([len(v) for v in self.identity_views[: self.n_train]])
        self.identity_train = {
            k: np.flatnonzero(counts >= k) for k in range(1, PLAIN_VIEWS + 1)
        }  # subjects with >= k views

    def caption_of(self, i: int, rng: np.random.Generator) -> str:
        """A training caption of view ``i`` with a freshly sampled descriptor."""
        s = self.subject[i]
        style = None if self.style[i] < 0 else STYLE_KEYS[self.style[i]]
        return caption(
            CONDITIONS[self.cond[i]], str(self.class_word[s]), sample_descriptor(rng, str(self.descriptor[s])), style
        )


def cutout_tensor(x: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The masked-metric input of the harness (``evaluation.segmenters.cutout``) for one ``(3, R, R)`` image:
    background set to ``fill``, cropped to the smallest square around the mask, resized back to ``R``."""
    r = x.shape[-1]
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(ys) == 0:
        return torch.full_like(x, fill), mask
    x = torch.where(mask, x, torch.full_like(x, fill))
    top, bottom, left, right = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    side = min(max(bottom - top, right - left), r)
    top = min(max((top + bottom) // 2 - side // 2, 0), r - side)
    left = min(max((left + right) // 2 - side // 2, 0), r - side)
    crop = x[:, top : top + side, left : left + side][None]  # (1, 3, side, side)
    m = mask[top : top + side, left : left + side][None, None].float()
    x = F.interpolate(crop, size=r, mode="bilinear", antialias=side > r)[0]
    return x, F.interpolate(m, size=r, mode="bilinear")[0, 0] > 0.5


def augment(
    x: torch.Tensor, g: torch.Generator, masks: torch.Tensor | None = None, bg_p: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """With probability ``bg_p`` the harness's foreground cutout; then crop-zoom and shift, brightness/contrast,
    low-resolution blur (a small generator's output) and noise."""
    b = x.shape[0]
    r = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    if bg_p > 0 and masks is not None:
        x, masks = x.clone(), masks.clone()
        for i in torch.nonzero(r(b) < bg_p).flatten().tolist():
            fill = 0.0 if r(1).item() < 0.6 else float(torch.randint(1, 3, (1,), generator=g)) / 2
            x[i], masks[i] = cutout_tensor(x[i], masks[i], fill)
    scale = 0.8 + 0.2 * r(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = (r(b, 2) - 0.5) * 2 * (1 - scale[:, None])
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if masks is not None:
        masks = F.grid_sample(masks[:, None].float(), grid, mode="bilinear", align_corners=False)[:, 0] > 0.5
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * (0.85 + 0.3 * r(b, 1, 1, 1)) + mean * (0.85 + 0.3 * r(b, 1, 1, 1))
    low = r(b) < 0.3
    if low.any():
        s = x.shape[-1]
        x[low] = F.interpolate(
            F.interpolate(x[low], size=s // 2, mode="bilinear", antialias=True), size=s, mode="bilinear"
        )
    x = x + (r(b, 1, 1, 1) < 0.3) * 0.03 * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1), masks


def _float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0


def info_nce(a: torch.Tensor, b: torch.Tensor, positives: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Cross-entropy of ``scale * a @ b.T`` against the row-normalised positive mask (multi-positive InfoNCE)."""
    logits = scale * a @ b.T  # (n, m)
    target = positives.float() / positives.float().sum(1, keepdim=True)
    return -(target * logits.log_softmax(1)).sum(1).mean()


def aux_heads(cache: Cache, dim: int) -> torch.nn.ModuleDict:
    """Linear heads on the identity embedding predicting the subject's class, body colour and texture word."""
    return torch.nn.ModuleDict({k: torch.nn.Linear(dim, int(v.max()) + 1) for k, v in cache.labels.items()})


def _step_loss(
    kind: str,
    model: torch.nn.Module,
    cache: Cache,
    cfg: EvaluatorTraining,
    step: int,
    aux: torch.nn.ModuleDict | None = None,
) -> torch.Tensor:
    rng = np.random.default_rng([cfg.seed, step])
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    if kind == "identity":
        eligible = cache.identity_train[cfg.views]
        subjects = rng.choice(eligible, cfg.batch // cfg.views, replace=False)
        views = np.array([rng.choice(cache.identity_views[s], cfg.views, replace=False) for s in subjects])  # (P, V)
        idx = torch.from_numpy(views.T.reshape(-1))  # (V, P) -> (V*P,): view k of every subject, then view k+1
        x, m = augment(_float(cache.images[idx]), g, cache.masks[idx], bg_p=0.2)
        z, attn = model.image.features(x)
        labels = torch.arange(len(subjects)).repeat(cfg.views)
        pos = labels[:, None] == labels[None, :]
        pos.fill_diagonal_(False)
        logits = (z @ z.T / cfg.temperature).masked_fill(torch.eye(len(labels), dtype=torch.bool), -1e9)
        target = pos.float() / pos.float().sum(1, keepdim=True)
        loss = -(target * logits.log_softmax(1)).sum(1).mean()
        if attn is not None and cfg.mask_weight > 0:
            fg = F.adaptive_avg_pool2d(m[:, None].float(), attn.shape[-2:])[:, 0]  # (B, R, R) -> (B, h, w) coverage
            loss = loss + cfg.mask_weight * F.binary_cross_entropy_with_logits(attn, fg)
        if aux is not None:
            subj = cache.subject[idx.numpy()]
            ce = [F.cross_entropy(head(8 * z), torch.from_numpy(cache.labels[k][subj])) for k, head in aux.items()]
            loss = loss + cfg.aux_weight * sum(ce) / len(ce)
        return loss
    idx = torch.from_numpy(rng.choice(cache.train_idx, cfg.batch, replace=False))
    if kind == "dual":
        x, _ = augment(_float(cache.images[idx]), g, cache.masks[idx], bg_p=0.1)
        texts = [cache.caption_of(int(i), rng) for i in idx]
        ids = model.tokenize(texts)
        zi, zt = model.image(x), model.text(ids)
        same = torch.tensor([[a == b for b in texts] for a in texts])
        scale = model.logit_scale.exp().clamp(max=100)
        return (info_nce(zi, zt, same, scale) + info_nce(zt, zi, same, scale)) / 2
    if kind == "segmenter":
        x, m = augment(_float(cache.images[idx]), g, cache.masks[idx])
        logits = model(x)
        target = m.float()
        p = logits.sigmoid()
        dice = 1 - (2 * (p * target).sum((1, 2)) + 1) / (p.sum((1, 2)) + target.sum((1, 2)) + 1)
        return F.binary_cross_entropy_with_logits(logits, target) + dice.mean()
    raise ValueError(f"unknown evaluator kind {kind!r}")


@torch.no_grad()
def validate(kind: str, model: torch.nn.Module, cache: Cache) -> dict[str, float]:
    """Held-out check on the cache's validation subjects (identity top-1, scene accuracy, mask IoU)."""
    from jointdiff.data.toyworld.captions import SCENE_PROMPTS

    model.eval()
    try:
        subj = np.arange(cache.n_train, len(cache.class_word))
        if kind == "identity":
            views = [cache.identity_views[s] for s in subj if len(cache.identity_views[s]) >= 2]
            a = model(_float(cache.images[[v[0] for v in views]]))
            b = model(_float(cache.images[[v[1] for v in views]]))
            return {"top1": float(((b @ a.T).argmax(1) == torch.arange(len(views))).float().mean())}
        idx = cache.val_idx
        if kind == "dual":
            sel = idx[
                (cache.style[idx] < 0) & np.isin(cache.cond[idx], [CONDITIONS.index(k) for k, _ in SCENE_PROMPTS])
            ]
            zi = model.image(_float(cache.images[sel]))
            texts: dict[str, torch.Tensor] = {}
            correct = 0
            for j, i in enumerate(sel):
                cw = str(cache.class_word[cache.subject[i]])
                if cw not in texts:
                    texts[cw] = model.text(model.tokenize([t.format(cw) for _, t in SCENE_PROMPTS]))
                correct += int(SCENE_PROMPTS[int((texts[cw] @ zi[j]).argmax())][0] == CONDITIONS[cache.cond[i]])
            return {"scene_acc": correct / max(1, len(sel))}
        pred = model(_float(cache.images[idx])) > 0
        m = cache.masks[idx]
        iou = (pred & m).sum((1, 2)).float() / (pred | m).sum((1, 2)).clamp_min(1).float()
        return {"iou": float(iou.mean())}
    finally:
        model.train()


class EvaluatorTask(Task):
    """One evaluator's loss on batches that are a pure function of ``(seed, step)``; a held-out check per log."""

    def __init__(self, cfg: EvaluatorTraining, model: torch.nn.Module, cache: Cache, aux: Any, step: int) -> None:
        self.cfg, self.model, self.cache, self.aux, self.step = cfg, model, cache, aux, step

    def loss(self) -> tuple[torch.Tensor, int]:
        return _step_loss(self.cfg.kind, self.model, self.cache, self.cfg, self.step, self.aux), self.cfg.batch

    def state_dict(self) -> dict[str, Any]:
        return {"config": json.dumps(asdict(self.cfg))}  # a resumed run must be the same run

    def after_step(self, step: int) -> None:
        self.step = step

    def metrics(self, step: int) -> dict[str, float]:
        return validate(self.cfg.kind, self.model, self.cache)


def train(
    cache_path: str | Path,
    run_dir: str | Path,
    cfg: EvaluatorTraining,
    out: str | Path | None = None,
    arch: EvaluatorConfig | None = None,
) -> Path | None:
    """Train (or resume) one evaluator in ``run_dir/<kind>``; exports fp16 safetensors to ``out`` at the last step."""
    torch.set_num_threads(1)
    cache = Cache(cache_path, cfg.val_subjects)
    if arch is None:
        classes = sorted({str(c) for c in cache.class_word})
        from jointdiff.data.toyworld.recipes import class_words

        all_classes = sorted(set(class_words()) | set(classes))
        arch = EvaluatorConfig(
            kind=cfg.kind, **ARCH[cfg.kind], vocab=tuple(vocabulary(all_classes)) if cfg.kind == "dual" else ()
        )
    with seeded(cfg.seed):  # the network's initial weights, then the auxiliary heads'
        model = build_model(arch)
        if cfg.init:
            start = load_model(cfg.init)
            if start.cfg != arch:
                raise ValueError(f"--init {cfg.init} has another architecture than this {cfg.kind} run")
            model.load_state_dict(start.state_dict())
        aux = aux_heads(cache, arch.embed_dim) if cfg.kind == "identity" and cfg.aux_weight > 0 else None
    task = EvaluatorTask(cfg, model, cache, aux, 0)
    return fit_evaluator(run_dir, cfg, model, [aux] if aux is not None else [], task, out)


def fit_evaluator(
    run_dir: str | Path,
    cfg: Any,
    model: torch.nn.Module,
    extra: list[torch.nn.Module],
    task: Any,
    out: str | Path | None,
) -> Path | None:
    """The loop every toy evaluator shares: AdamW with linear warm-up then cosine decay on the training shell
    in ``run_dir/<cfg.kind>`` (resumed exactly when checkpoints exist; a run of another config is refused),
    then fp16 safetensors export to ``out`` with the training config, CPU seconds and steps in the metadata.
    ``cfg`` has ``kind, steps, seed, ckpt_every, lr, weight_decay, warmup``; ``task`` has a ``step`` field."""
    run = TrainConfig.plain(Path(run_dir) / cfg.kind, cfg.steps, cfg.seed, cfg.ckpt_every)  # a check per log
    shell = Shell(run, cpu=True)  # CPU-sized networks
    modules = [model, *extra]
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
    )
    *modules, opt, sched = shell.prepare(*modules, opt, sched)
    state = shell.restore()
    if state is not None and state["config"] != json.dumps(asdict(cfg)):
        raise ValueError(f"{shell.out} was written by another config; remove it or use another --run-dir")
    task.step = shell.step
    model.train()
    desc = f"training {cfg.kind} ({n_params(model) / 1e6:.2f} M params)"
    fit = shell.fit(task, modules, opt, sched, desc=desc)
    shell.end()
    if out is None:
        return None
    return save_model(
        model.eval(),
        out,
        extra={
            "train_config": json.dumps(asdict(cfg)),
            "cpu_seconds": f"{fit.cpu_seconds:.0f}",
            "steps": str(fit.step),
        },
    )
