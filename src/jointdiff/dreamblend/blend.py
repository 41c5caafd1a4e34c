"""DreamBlend (Ram et al.): an underfit DreamBooth checkpoint lays out the image, an overfit one
paints the subject, tied by cross-attention guidance (CAG).

Our reading (the paper's method text is not available offline; see NOTES.md): pass 1 samples
the prompt with the underfit checkpoint and records its cross-attention maps at every step
(or obtains them by DDIM inversion of a given reference image); pass 2 samples the same prompt
from the same initial noise with the overfit checkpoint and, before each guided step, takes a
gradient step on the latent that pulls its maps toward the reference maps
(:func:`jointdiff.dreamblend.crossattn.alignment_loss`). Against attention collapse the maps are compared as
per-token spatial distributions (insensitive to how much mass a collapsed model gives the subject
tokens) and a penalty pushes the other tokens' maps away from the subject's
(:func:`jointdiff.dreamblend.crossattn.collapse_penalty`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image
import torch

from jointdiff.dreamblend.config import BlendConfig
from jointdiff.dreamblend.crossattn import (
    AttentionStore,
    alignment_loss,
    collapse_penalty,
    collapse_score,
    install_recorders,
)
from jointdiff.jedi.t2i import TextToImage, ddim_scheduler, initial_noise, sample
from jointdiff.training.dreambooth import list_checkpoints, load_checkpoint, run_config


@dataclass
class BlendResult:
    """The blended image, the underfit reference, and what produced them."""

    image: PIL.Image.Image
    reference: PIL.Image.Image
    underfit_step: int
    overfit_step: int
    losses: list[float] = field(default_factory=list)  # CAG loss per guided step
    why: list[str] = field(default_factory=list)  # how each automatically chosen step was chosen


def record_maps(
    model: TextToImage,
    prompts: list[str],
    latents: torch.Tensor,
    cfg: BlendConfig,
    guidance_scale: float | None = None,
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Sample ``prompts`` (one image each) from ``latents`` ``(B, C, h, w)``; returns the final
    latents and, per step, each recorded layer's conditional maps ``(B, L, T)``."""
    store = AttentionStore()
    install_recorders(model.unet, store, cfg.layers)
    maps: list[dict[str, torch.Tensor]] = []

    def step_end(_: TextToImage, i: int, t: torch.Tensor, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keep the maps of the step's U-Net call and record the next one's."""
        maps.append({k: v.chunk(2)[1] for k, v in store.stop().items()})  # cond half of the CFG batch
        store.start()
        return tensors

    scale = cfg.guidance_scale if guidance_scale is None else guidance_scale
    store.start()
    out = sample(
        model,
        prompts,
        latents=latents,
        num_inference_steps=cfg.num_inference_steps,
        guidance_scale=scale,
        callback_on_step_end=step_end,
    )
    store.stop()  # no U-Net call after the last step
    return out, maps


def guided_sample(
    model: TextToImage,
    prompts: list[str],
    latents: torch.Tensor,
    reference: list[dict[str, torch.Tensor]],
    cfg: BlendConfig,
    subject_words: list[str],
) -> tuple[torch.Tensor, list[list[float]]]:
    """Sample ``prompts`` from ``latents`` ``(B, C, h, w)`` with cross-attention guidance toward the
    ``reference`` maps (per step, ``(B, L, T)`` per layer); returns the latents and, per prompt, the
    CAG loss of every guided step.

    The images of the batch never interact in the U-Net, so the gradient of the summed loss with
    respect to one image's latent is that image's own gradient: a batch guides each image as if it
    were sampled alone (tested)."""
    store = AttentionStore()
    install_recorders(model.unet, store, cfg.layers)
    tokens = [model.prompt_tokens(p) for p in prompts]
    subjects = [model.token_indices(p, subject_words) for p in prompts]
    others = [[i for i in tok if i not in subj] for tok, subj in zip(tokens, subjects, strict=True)]
    with torch.no_grad():
        text = model.encode_text(prompts)
    guided = round(cfg.cag_fraction * cfg.num_inference_steps)
    losses: list[list[float]] = [[] for _ in prompts]

    def guide(i: int, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The latent of step ``i`` after its CAG gradient step (before the step's guided prediction)."""
        if i >= guided or cfg.cag_scale == 0:
            return x
        x = x.detach().requires_grad_(True)
        store.start(keep_graph=True)
        with torch.enable_grad():
            model.eps(x, t, text.to(x.dtype))  # DDIM: the model input is the latent itself
            maps = store.stop()
            total = x.new_zeros(())
            for b in range(len(prompts)):
                mine = {k: v[b : b + 1] for k, v in maps.items()}
                loss = alignment_loss(mine, {k: v[b : b + 1] for k, v in reference[i].items()}, tokens[b])
                if cfg.collapse_weight and subjects[b] and others[b]:
                    loss = loss + cfg.collapse_weight * collapse_penalty(mine, subjects[b], others[b])
                losses[b].append(float(loss.detach()))
                total = total + loss
            (grad,) = torch.autograd.grad(total, x)
        return (x - cfg.cag_scale * grad).detach()

    scheduler = ddim_scheduler(model, cfg.num_inference_steps)
    timesteps = scheduler.timesteps

    def step_end(_: TextToImage, i: int, t: torch.Tensor, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """After step ``i``, the gradient step of step ``i + 1`` (none after the last step)."""
        return {"latents": guide(i + 1, timesteps[i + 1], tensors["latents"])} if i + 1 < len(timesteps) else {}

    out = sample(
        model,
        prompts,
        latents=guide(0, timesteps[0], latents),  # the first step's gradient step: callbacks run after a step
        num_inference_steps=cfg.num_inference_steps,
        guidance_scale=cfg.guidance_scale,
        scheduler=scheduler,
        callback_on_step_end=step_end,
    )
    return out, losses


@torch.no_grad()
def ddim_invert(
    model: TextToImage, images: list[PIL.Image.Image], prompts: list[str], num_inference_steps: int
) -> torch.Tensor:
    """x_T of each image by DDIM inversion with its prompt (no guidance), ``(B, C, h, w)``."""
    from diffusers import DDIMInverseScheduler

    inv = DDIMInverseScheduler.from_config(model.scheduler.config)
    inv.set_timesteps(num_inference_steps, device=model.unet.device)
    x = model.encode_images(images)
    text = model.encode_text(prompts)
    for t in inv.timesteps:
        x = inv.step(model.eps(x, t, text.to(x.dtype)), t, x).prev_sample
    return x


def blend_batch(
    underfit: TextToImage,
    overfit: TextToImage,
    prompts: list[str],
    subject_words: list[str],
    seeds: list[int],
    cfg: BlendConfig | None = None,
    reference_images: list[PIL.Image.Image] | None = None,
) -> tuple[list[PIL.Image.Image], list[PIL.Image.Image], list[list[float]]]:
    """DreamBlend for several prompts in one batch: (blended images, underfit reference images, CAG
    losses per prompt). Image ``b`` starts from the noise of ``seeds[b]`` and equals
    :func:`blend` of its prompt alone up to float rounding (with ``invert``: given the same
    reference images, since an 8-bit rounding difference in one would be inverted too)."""
    cfg = cfg or BlendConfig()
    if len(seeds) != len(prompts) or (reference_images is not None and len(reference_images) != len(prompts)):
        raise ValueError("blend_batch: one seed (and reference image, if given) per prompt")
    x_t = initial_noise(underfit, seeds)
    if cfg.reference_maps == "invert":
        if reference_images is None:
            with torch.no_grad():  # the underfit checkpoint's own sample from the same noise
                reference_images = underfit.decode(
                    sample(underfit, prompts, None, cfg.num_inference_steps, cfg.guidance_scale, latents=x_t)
                )
        x_t = ddim_invert(underfit, reference_images, prompts, cfg.num_inference_steps)
        _, maps = record_maps(underfit, prompts, x_t, cfg, guidance_scale=1.0)  # reconstruction pass
        refs = list(reference_images)
    else:
        ref_latents, maps = record_maps(underfit, prompts, x_t, cfg)
        refs = underfit.decode(ref_latents)
    out, losses = guided_sample(overfit, prompts, x_t, maps, cfg, subject_words)
    return overfit.decode(out), refs, losses


def blend(
    underfit: TextToImage,
    overfit: TextToImage,
    prompt: str,
    subject_words: list[str],
    seed: int = 0,
    cfg: BlendConfig | None = None,
    reference_image: PIL.Image.Image | None = None,
) -> tuple[PIL.Image.Image, PIL.Image.Image, list[float]]:
    """DreamBlend for one prompt: (blended image, underfit reference image, CAG losses)."""
    refs = None if reference_image is None else [reference_image]
    images, references, losses = blend_batch(underfit, overfit, [prompt], subject_words, [seed], cfg, refs)
    return images[0], references[0], losses[0]


def checkpoint_collapse_scores(
    run: str | Path, prompts: list[str], steps: list[int] | None = None, num_inference_steps: int = 10, seed: int = 0
) -> dict[int, float]:
    """Attention-collapse score of each checkpoint, averaged over ``prompts`` (higher = collapsed)."""
    cfg = run_config(run)
    scores: dict[int, float] = {}
    for step in steps or list_checkpoints(run):
        model = load_checkpoint(run, step)
        values = []
        for j, prompt in enumerate(prompts):
            x = initial_noise(model, [seed + j])
            _, maps = record_maps(model, [prompt], x, BlendConfig(num_inference_steps=num_inference_steps))
            subject = model.token_indices(prompt, [cfg.identifier, cfg.class_word])
            others = [i for i in model.prompt_tokens(prompt) if i not in subject]
            values.append(collapse_score(maps[len(maps) // 2], subject, others))
        scores[step] = sum(values) / len(values)
    return scores


def choose_overfit(scores: dict[int, float], margin: float = 0.2) -> int:
    """The latest checkpoint whose collapse score stays within ``margin`` of the earliest one's."""
    steps = sorted(scores)
    ok = [s for s in steps if scores[s] <= scores[steps[0]] + margin]
    return ok[-1]


def checkpoint_prompt_fidelity(
    run: str | Path,
    prompts: list[str],
    clip: Any,
    steps: list[int] | None = None,
    images_per_prompt: int = 2,
    num_inference_steps: int = 25,
    guidance_scale: float = 7.5,
    seed: int = 0,
) -> dict[int, float]:
    """CLIP-T of each checkpoint (the harness's text alignment, identifier removed from the prompt),
    averaged over ``prompts`` x ``images_per_prompt`` samples with the same seeds for every checkpoint.

    ``clip`` is any dual encoder of the harness (``encode_images``, ``encode_texts``): CLIP for an
    SD run, the toy CLIP for the miniature.
    """
    from jointdiff.evaluation.metrics import clip_t_prompt, text_alignment

    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be >= 1, got {images_per_prompt}")
    cfg = run_config(run)
    texts = [clip_t_prompt(p, cfg.class_word, cfg.identifier) for p in prompts for _ in range(images_per_prompt)]
    text_feats = clip.encode_texts(texts)  # (P*I, d)
    scores: dict[int, float] = {}
    for step in steps or list_checkpoints(run):
        model = load_checkpoint(run, step)
        images = []
        for j, prompt in enumerate(prompts):
            g = torch.Generator().manual_seed(seed + j)
            latents = sample(
                model,
                [prompt] * images_per_prompt,
                g,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
            )
            images += model.decode(latents)
        scores[step] = float(text_alignment(clip.encode_images(images), text_feats).mean())
    return scores


def choose_underfit(scores: dict[int, float], before: int, margin: float = 0.05) -> int:
    """The latest checkpoint before ``before`` (the overfit step) whose CLIP-T is within ``margin``
    (relative) of the best CLIP-T among those checkpoints: as much subject as the prompt allows.
    The earliest checkpoint when none is earlier than ``before``."""
    steps = sorted(s for s in scores if s < before) or sorted(scores)[:1]
    best = max(scores[s] for s in steps)
    ok = [s for s in steps if scores[s] >= best - margin * abs(best)]
    return ok[-1]


def blend_from_run(
    run_dir: str | Path,
    prompt: str,
    *,
    underfit: int | None = None,
    overfit: int | None = None,
    seed: int = 0,
    num_inference_steps: int | None = None,
    cfg: BlendConfig | None = None,
    reference_image: PIL.Image.Image | None = None,
    clip: Any = None,
    collapse_margin: float = 0.2,
    underfit_margin: float = 0.05,
) -> BlendResult:
    """DreamBlend on a ``jointdiff finetune`` run; missing steps are chosen automatically: the
    overfit one as the latest before attention collapse (:func:`choose_overfit`), the underfit one
    by prompt fidelity with the dual encoder ``clip`` (:func:`choose_underfit`; without ``clip``,
    the earliest checkpoint). The sampling steps are ``num_inference_steps`` or ``cfg``'s (default 50),
    not two different numbers."""
    steps = list_checkpoints(run_dir)
    for name, s in (("underfit", underfit), ("overfit", overfit)):
        if s is not None and s not in steps:
            raise ValueError(f"no {name} checkpoint at step {s}; saved: {steps}")
    if cfg is None:
        cfg = BlendConfig() if num_inference_steps is None else BlendConfig(num_inference_steps=num_inference_steps)
    elif num_inference_steps not in (None, cfg.num_inference_steps):
        raise ValueError(
            f"num_inference_steps={num_inference_steps} but cfg.num_inference_steps={cfg.num_inference_steps}: give one"
        )
    why = []
    if overfit is None:
        collapse = checkpoint_collapse_scores(run_dir, [prompt])
        overfit = choose_overfit(collapse, collapse_margin)
        table = ", ".join(f"{s}: {v:.3f}" for s, v in sorted(collapse.items()))
        why.append(
            f"overfit step {overfit}: the latest whose attention-collapse score is within {collapse_margin} "
            f"of the earliest checkpoint's (scores {table})"
        )
    if underfit is None and clip is not None:
        fidelity = checkpoint_prompt_fidelity(
            run_dir, [prompt], clip, [s for s in steps if s < overfit] or steps[:1], seed=seed
        )
        underfit = choose_underfit(fidelity, overfit, underfit_margin)
        table = ", ".join(f"{s}: {v:.3f}" for s, v in sorted(fidelity.items()))
        why.append(
            f"underfit step {underfit}: the latest before step {overfit} whose CLIP-T is within "
            f"{underfit_margin:.0%} of the best (CLIP-T {table})"
        )
    elif underfit is None:
        underfit = steps[0]
        why.append(f"underfit step {underfit}: the earliest checkpoint (no CLIP-T scorer given)")
    if underfit > overfit:
        raise ValueError(f"the underfit step ({underfit}) must not be later than the overfit step ({overfit})")
    rc = run_config(run_dir)
    image, ref, losses = blend(
        load_checkpoint(run_dir, underfit),
        load_checkpoint(run_dir, overfit),
        prompt,
        [rc.identifier, rc.class_word],
        seed=seed,
        cfg=cfg,
        reference_image=reference_image,
    )
    return BlendResult(image=image, reference=ref, underfit_step=underfit, overfit_step=overfit, losses=losses, why=why)
