"""The JeDi training objective (eq. 2) with condition dropout for guidance (sec. 3.3, eq. 3).

``L = E_{x0, eps, t, M} || eps - eps_theta(x_t, x0 * (1 - M), M) ||^2`` over image sets: one
timestep per set, mask bits Bernoulli per image with at least one image to generate, and
(for classifier-free text and image guidance) the prompts and the references of a set
dropped independently. The draws come from one generator for the batch, or from one generator
per set (the trainer's: a set's draws then depend on the set alone, not on the batch or the
process it lands in).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from jointdiff.jedi.coupling import Coupling
from jointdiff.jedi.sets import pack_sets, random_known, unpack_sets
from jointdiff.training.config import ObjectiveConfig


@dataclass
class ObjectiveOutput:
    """The loss and the draws behind it (for logging and tests)."""

    loss: torch.Tensor  # scalar
    known: torch.Tensor  # (B, N) bool: reference slots (mask bit 0) after reference dropout
    timesteps: torch.Tensor  # (B,) long: one timestep per set
    text_dropped: torch.Tensor  # (B,) bool
    reference_dropped: torch.Tensor  # (B,) bool
    weights: torch.Tensor  # (B, N) float: slots averaged into the loss


def draw_known(slot_mask: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask bits of eq. 2 for sets of different real sizes: Bernoulli(p) per real slot, >= 1 unknown per set.

    Sets with the same number of real slots are drawn together by :func:`random_known`;
    padded slots (``slot_mask`` False) are never known.
    """
    b, n = slot_mask.shape
    known = torch.zeros(b, n, dtype=torch.bool, device=slot_mask.device)
    sizes = slot_mask.sum(dim=1)  # (B,)
    for k in sorted(set(sizes.tolist())):
        if k == 0:
            raise ValueError("a set has no real slots (slot_mask row all False)")
        rows = (sizes == k).nonzero(as_tuple=True)[0]  # (m,)
        drawn = random_known(len(rows), k, p, generator=generator, device=slot_mask.device)  # (m, k)
        sub = known[rows]  # (m, N)
        sub[slot_mask[rows]] = drawn.reshape(-1)  # row-major: row r's k real slots get drawn[r]
        known[rows] = sub
    return known


def draw_regions(
    count: int, height: int, width: int, p_full: float, generator: torch.Generator | None = None, device: Any = None
) -> torch.Tensor:
    """Inpainting masks as a stock inpainting model is trained with (SD inpainting: synthetic masks, the whole image in
    a quarter of the cases): ``(count, 1, H, W)``, 1 = to paint. Each mask is the whole image with probability
    ``p_full``, else the union of one or two axis-aligned rectangles whose sides are 1/4 to 3/4 of the image's."""
    masks = torch.zeros(count, 1, height, width, device=device)
    for i in range(count):
        if torch.rand(1, generator=generator, device=device).item() < p_full:
            masks[i] = 1.0
            continue
        for _ in range(int(torch.randint(1, 3, (1,), generator=generator, device=device))):
            u = torch.rand(4, generator=generator, device=device).tolist()
            bh, bw = round(height * (0.25 + 0.5 * u[0])), round(width * (0.25 + 0.5 * u[1]))
            top, left = int(u[2] * (height - bh + 1)), int(u[3] * (width - bw + 1))
            masks[i, 0, top : top + bh, left : left + bw] = 1.0
    return masks


@dataclass
class Draws:
    """The random draws of one loss evaluation."""

    known: torch.Tensor  # (B, N) bool: mask bits before reference dropout
    reference_dropped: torch.Tensor  # (B,) bool
    text_dropped: torch.Tensor  # (B,) bool
    timesteps: torch.Tensor  # (B,) long
    noise: torch.Tensor  # like the latents (zero in padded slots when drawn per set)
    regions: torch.Tensor | None = None  # (B, N, 1, H, W), 1 = to paint: masks = regions only


@dataclass
class JediObjective(ObjectiveConfig):
    """JeDi eq. 2: epsilon-MSE on image sets with random references, and independent condition dropout.

    A callable holding its hyper-parameters: the fields of the ``[objective]`` table
    (:class:`jointdiff.training.config.ObjectiveConfig`, checked there).
    """

    def draw(
        self, real: torch.Tensor, latents: torch.Tensor, steps: int, generator: torch.Generator | None = None
    ) -> Draws:
        """The batch's draws from one generator: mask bits, reference and text dropout, timesteps, noise."""
        b, device = real.shape[0], latents.device
        known = draw_known(real, self.reference_probability, generator)  # (B, N)
        ref_drop = torch.rand(b, generator=generator, device=device) < self.reference_dropout  # (B,)
        text_drop = torch.rand(b, generator=generator, device=device) < self.text_dropout  # (B,)
        t = torch.randint(0, steps, (b,), generator=generator, device=device)  # (B,)
        noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
        regions = None
        if self.masks == "regions":  # drawn last: the draws above are those of masks = images
            b, n, _, h, w = latents.shape
            regions = draw_regions(b * n, h, w, self.full_mask_probability, generator, device).unflatten(0, (b, n))
        return Draws(known, ref_drop, text_drop, t, noise, regions)

    def draw_per_set(
        self, real: torch.Tensor, latents: torch.Tensor, steps: int, generators: Sequence[torch.Generator]
    ) -> Draws:
        """The same draws with set ``i``'s from ``generators[i]`` over its real slots only, so they do not depend
        on the other sets of the batch (nor on its padding)."""
        b, device = real.shape[0], latents.device
        if len(generators) != b:
            raise ValueError(f"{len(generators)} generators for {b} sets")
        known = torch.zeros_like(real)
        noise = torch.zeros_like(latents)
        ref_drop = torch.zeros(b, dtype=torch.bool, device=device)
        text_drop = torch.zeros(b, dtype=torch.bool, device=device)
        t = torch.zeros(b, dtype=torch.long, device=device)
        h, w = latents.shape[3:]
        regions = torch.ones(b, latents.shape[1], 1, h, w, device=device) if self.masks == "regions" else None
        for i, g in enumerate(generators):
            k = int(real[i].sum())
            if k == 0:
                raise ValueError("a set has no real slots (slot_mask row all False)")
            known[i, real[i]] = random_known(1, k, self.reference_probability, generator=g, device=device)[0]
            ref_drop[i] = torch.rand(1, generator=g, device=device)[0] < self.reference_dropout
            text_drop[i] = torch.rand(1, generator=g, device=device)[0] < self.text_dropout
            t[i] = torch.randint(0, steps, (1,), generator=g, device=device)[0]
            shape = (k, *latents.shape[2:])  # (k, C, H, W): the real slots of set i
            noise[i, real[i]] = torch.randn(shape, generator=g, device=device, dtype=latents.dtype)
            if regions is not None:  # drawn last: the draws above are those of masks = images
                regions[i, real[i]] = draw_regions(k, h, w, self.full_mask_probability, g, device)
        return Draws(known, ref_drop, text_drop, t, noise, regions)

    def __call__(
        self,
        model: nn.Module,
        noise_scheduler: object,
        latents: torch.Tensor,
        text: torch.Tensor,
        null_text: torch.Tensor,
        slot_mask: torch.Tensor | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        foreground: torch.Tensor | None = None,
        empty: torch.Tensor | None = None,
        regions: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        """Loss of ``model`` (a :class:`jointdiff.jedi.model.JointUNet`) on clean latents ``(B, N, C, H, W)``.

        Args:
            noise_scheduler: a diffusers scheduler with ``add_noise`` (its config gives T and the target).
            text: prompt embeddings ``(B, N, T, D)``.
            null_text: the empty prompt's embedding ``(T, D)`` (or broadcastable to ``text``).
            slot_mask: bool ``(B, N)``, real slots of padded batches (default: all real).
            generator: source of every random draw (on the latents' device): one for the batch, or a sequence
                with one per set (:meth:`draw_per_set`).
            foreground: subject coverage ``(B, N, H, W)`` in [0, 1] at latent resolution; with
                ``foreground_weight`` w, each slot's loss is the mean of the squared error weighted
                by ``1 + w * foreground`` (normalised by the weights' sum, so w rescales nothing else).
            empty: the latent of a fully masked image ``(C, H, W)``, for a stock inpainting U-Net's unknown pixels.
            regions: each pixel's subject ``(B, N, H, W)`` long (-1: none) at latent resolution; with ``region_bias``
                gamma > 0 the coupled attention's region bias by these labels (issue 33): a generated token of one
                subject gets ``-gamma`` on the reference tokens of the other (:func:`jointdiff.jedi.attention.label_bias`).

        With ``masks = "regions"`` (a stock inpainting model's training, issue 32) no slot is a whole reference:
        each image is inpainted within its random region (:func:`draw_regions`; the whole image where the set's
        references are dropped) and every slot counts in the loss.
        """
        b, n = latents.shape[:2]
        device = latents.device
        real = torch.ones(b, n, dtype=torch.bool, device=device) if slot_mask is None else slot_mask.to(device)

        # 1. Draws: mask bits, reference and text dropout (independent, per set), t ~ U{0, ..., T-1}, noise.
        config = noise_scheduler.config  # type: ignore[attr-defined]
        if generator is None or isinstance(generator, torch.Generator):
            d = self.draw(real, latents, config.num_train_timesteps, generator)
        else:
            d = self.draw_per_set(real, latents, config.num_train_timesteps, generator)
        ref_drop, text_drop, t, noise = d.reference_dropped, d.text_dropped, d.timesteps, d.noise

        # 2. Conditions: references dropped, prompts dropped; forward diffusion at one timestep per set.
        known = d.known & ~ref_drop[:, None]
        known_pixels = None
        if d.regions is not None:
            known = torch.zeros_like(known)
            known_pixels = torch.where(ref_drop[:, None, None, None, None], 0.0, 1.0 - d.regions)  # (B, N, 1, H, W)
        text = torch.where(text_drop[:, None, None, None], null_text.to(text.dtype).expand_as(text), text)
        t_flat = t.repeat_interleave(n)  # (B,) -> (B*N,)
        noisy = noise_scheduler.add_noise(pack_sets(latents), pack_sets(noise), t_flat)  # type: ignore[attr-defined]
        noisy = unpack_sets(noisy, n)  # (B*N, C, H, W) -> (B, N, C, H, W)

        # 3. Target of the scheduler's parameterisation (SD 1.x: epsilon; SD 2.x-v: velocity).
        kind = config.get("prediction_type", "epsilon")
        if kind == "epsilon":
            target = noise
        elif kind == "v_prediction":
            target = unpack_sets(noise_scheduler.get_velocity(pack_sets(latents), pack_sets(noise), t_flat), n)  # type: ignore[attr-defined]
        else:
            raise ValueError(f"scheduler prediction_type '{kind}' is not supported (epsilon or v_prediction)")

        # 4. eps_theta(x_t, x0 * (1 - M), M) and the MSE averaged over the chosen slots.
        extra = {k: v for k, v in {"empty": empty, "known_pixels": known_pixels}.items() if v is not None}
        if regions is not None and self.region_bias > 0:
            extra.update(coupling=Coupling(region_bias=self.region_bias), regions=regions)
        pred = model(
            noisy, t, text, reference=latents, known=known, slot_mask=None if slot_mask is None else real, **extra
        )  # (B, N, C, H, W)
        err = (pred.float() - target.float()).pow(2).mean(dim=2)  # (B, N, H, W)
        if foreground is not None and self.foreground_weight > 0:
            pixel_w = 1.0 + self.foreground_weight * foreground.to(err)  # (B, N, H, W)
            per_slot = (err * pixel_w).sum(dim=(2, 3)) / pixel_w.sum(dim=(2, 3))  # (B, N)
        else:
            per_slot = err.mean(dim=(2, 3))  # (B, N)
        if self.snr_gamma > 0:
            from diffusers.training_utils import compute_snr

            snr = compute_snr(noise_scheduler, t).float()  # (B,)
            clipped = snr.clamp(max=self.snr_gamma)
            set_w = clipped / snr if kind == "epsilon" else clipped / (snr + 1)  # min-SNR-gamma, eq. 10 of Hang et al.
            per_slot = per_slot * set_w[:, None]
        weights = (real & ~known) if self.unknown_only else real
        weights = weights.to(per_slot.dtype)
        loss = (per_slot * weights).sum() / weights.sum().clamp_min(1.0)
        return ObjectiveOutput(loss, known, t, text_drop, ref_drop, weights)
