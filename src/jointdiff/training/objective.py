"""The JeDi training objective (eq. 2) with condition dropout for guidance (sec. 3.3, eq. 3).

``L = E_{x0, eps, t, M} || eps - eps_theta(x_t, x0 * (1 - M), M) ||^2`` over image sets: one
timestep per set, mask bits Bernoulli per image with at least one image to generate, and
(for classifier-free text and image guidance) the prompts and the references of a set
dropped independently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

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


@dataclass
class JediObjective(ObjectiveConfig):
    """JeDi eq. 2: epsilon-MSE on image sets with random references, and independent condition dropout.

    A callable holding its hyper-parameters: the fields of the ``[objective]`` table
    (:class:`jointdiff.training.config.ObjectiveConfig`, checked there).
    """

    def __call__(
        self,
        model: nn.Module,
        noise_scheduler: object,
        latents: torch.Tensor,
        text: torch.Tensor,
        null_text: torch.Tensor,
        slot_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        foreground: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        """Loss of ``model`` (a :class:`jointdiff.jedi.model.JointUNet`) on clean latents ``(B, N, C, H, W)``.

        Args:
            noise_scheduler: a diffusers scheduler with ``add_noise`` (its config gives T and the target).
            text: prompt embeddings ``(B, N, T, D)``.
            null_text: the empty prompt's embedding ``(T, D)`` (or broadcastable to ``text``).
            slot_mask: bool ``(B, N)``, real slots of padded batches (default: all real).
            generator: source of every random draw (on the latents' device).
            foreground: subject coverage ``(B, N, H, W)`` in [0, 1] at latent resolution; with
                ``foreground_weight`` w, each slot's loss is the mean of the squared error weighted
                by ``1 + w * foreground`` (normalised by the weights' sum, so w rescales nothing else).
        """
        b, n = latents.shape[:2]
        device = latents.device
        real = torch.ones(b, n, dtype=torch.bool, device=device) if slot_mask is None else slot_mask.to(device)

        # 1. Conditions: mask bits, then reference and text dropout (independent, per set).
        known = draw_known(real, self.reference_probability, generator)  # (B, N)
        ref_drop = torch.rand(b, generator=generator, device=device) < self.reference_dropout  # (B,)
        known = known & ~ref_drop[:, None]
        text_drop = torch.rand(b, generator=generator, device=device) < self.text_dropout  # (B,)
        text = torch.where(text_drop[:, None, None, None], null_text.to(text.dtype).expand_as(text), text)

        # 2. Forward diffusion at one timestep per set, t ~ U{0, ..., T-1}.
        config = noise_scheduler.config  # type: ignore[attr-defined]
        t = torch.randint(0, config.num_train_timesteps, (b,), generator=generator, device=device)  # (B,)
        noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
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
        pred = model(
            noisy, t, text, reference=latents, known=known, slot_mask=None if slot_mask is None else real
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
