"""Replacement-trick sampling of image sets (JeDi sec. 3.3) over any diffusers scheduler.

A set holds ``n`` reference slots followed by ``K`` target slots. At every step the reference
slots are replaced by the forward diffusion of the clean references to the current noise level
(``scheduler.add_noise``, fresh noise each step as in SDE inpainting / RePaint), the guided noise
prediction is computed for the whole coupled set, and only the target slots take the scheduler's
backward update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from jointdiff.jedi.coupling import Coupling
from jointdiff.jedi.guidance import DEFAULT, Branch, Guidance
from jointdiff.jedi.model import JointUNet, SetBatch


@dataclass
class SetConditioning:
    """Conditioning of B sets of ``n`` references + ``K`` targets for the guided denoiser.

    Attributes:
        text: per-slot text embeddings with the prompts/captions, ``(B, N, T, D)``.
        null_text: per-slot embeddings of the null (negative) prompt, ``(B, N, T, D)``.
        references: clean reference latents, ``(B, n, C, h, w)`` (``n`` may be 0).
        empty: what an unknown slot's masked-image channels hold, ``(C, h, w)``: the latent of a fully
            masked image for a stock inpainting U-Net; None for a JeDi U-Net (zeros).
    """

    text: torch.Tensor
    null_text: torch.Tensor
    references: torch.Tensor
    empty: torch.Tensor | None = None


class GuidedSetDenoiser:
    """eps for the targets of B sets: all guidance branches batched into one U-Net call (eq. 3/4).

    ``guidance.null_reference`` chooses how branches without references see the reference slots:
    ``"drop"`` leaves them out (the targets form a set of their own, truly reference-free: those
    branches compute the K target slots only, as sets of size K in the same U-Net call as the
    branches with references, see :meth:`JointUNet.forward_groups`), ``"mask"`` keeps them as
    noisy slots with mask 1 and zero reference channels.

    With ``guidance.isolates_references``, reference slots attend only among themselves and take their
    own captions in every branch (they are the image condition), so they are computed once per step
    for all branches with references, which compute only their K target slots.

    ``coupling`` (:class:`jointdiff.jedi.coupling.Coupling`, None: JeDi's) holds the training-free options; with
    ``coupling.steps < 1`` the steps with ``t`` below the last coupled one of ``timesteps`` attend per image.
    With a guidance interval (``guidance.limited``) the steps of ``timesteps`` outside it take the fully conditioned
    prediction alone, one branch (:meth:`Guidance.unguided`).
    """

    def __init__(
        self,
        model: JointUNet,
        cond: SetConditioning,
        guidance: Guidance = DEFAULT,
        coupling: Coupling | None = None,
        timesteps: Iterable[torch.Tensor] | None = None,
    ) -> None:
        self.model, self.cond, self.guidance, self.coupling = model, cond, guidance, coupling
        self.last_coupled: float | None = None  # the smallest timestep that couples (None: every one)
        if coupling is not None and coupling.steps < 1:
            if timesteps is None:
                raise ValueError("coupling in the early steps only needs the sampler's timesteps")
            steps = [float(t) for t in timesteps]
            m = coupling.coupled_steps(len(steps))
            self.last_coupled = steps[m - 1] if m else math.inf  # timesteps decrease: t >= it couples
        self.plain: GuidedSetDenoiser | None = None  # the denoiser of the steps outside the guidance interval
        self.guided_t: set[float] = set()
        if guidance.limited:
            if timesteps is None:
                raise ValueError("a guidance interval needs the sampler's timesteps")
            steps = [float(t) for t in timesteps]
            self.guided_t = {t for t, on in zip(steps, guidance.guided_steps(len(steps)), strict=True) if on}
            self.plain = GuidedSetDenoiser(model, cond, guidance.unguided(), coupling, steps)
        self.branches = guidance.branches()
        b, n = cond.references.shape[:2]
        big_n = cond.text.shape[1]
        device = cond.text.device
        self.n = n
        # Three kinds of branch: on the whole set (n + K slots); reference-free on the K targets ("drop");
        # with isolated references, on the K targets beside the shared references.
        dropped = n > 0 and guidance.drops_references
        isolated = n > 0 and guidance.isolates_references
        self.seeing = [br for br in self.branches if br.references and isolated]
        self.targets_only = [br for br in self.branches if not br.references and dropped]
        self.whole = [br for br in self.branches if br not in self.seeing and br not in self.targets_only]
        # Per-branch conditioning, stacked on the batch axis: (nb*B, N, ...).
        known_refs = torch.arange(big_n, device=device) < n  # (N,) True on reference slots
        if self.whole:
            self.text = torch.cat([self._text(br) for br in self.whole])
            self.known = torch.cat(
                [
                    known_refs.expand(b, big_n) if br.references else torch.zeros_like(known_refs).expand(b, big_n)
                    for br in self.whole
                ]
            )  # (nb*B, N)
            pad = torch.zeros(b, big_n - n, *cond.references.shape[2:], dtype=cond.references.dtype, device=device)
            self.reference = torch.cat([cond.references, pad], dim=1).repeat(len(self.whole), 1, 1, 1, 1)
        if self.targets_only:  # (nt*B, K, ...): the target slots' prompts
            self.target_text = torch.cat([self._text(br)[:, n:] for br in self.targets_only])
        if self.seeing:  # (ns*B, K, ...) targets; the references once, (B, n, ...), with their own captions
            self.seeing_text = torch.cat([self._text(br)[:, n:] for br in self.seeing])
            self.ref_known = torch.ones(b, n, dtype=torch.bool, device=device)

    def _text(self, branch: Branch) -> torch.Tensor:
        """Per-slot text of a branch, ``(B, N, T, D)``: the prompts, or the null text without text."""
        return self.cond.text if branch.text else self.cond.null_text

    def coupling_at(self, t: torch.Tensor | float) -> Coupling | None:
        """The coupling options in effect at timestep ``t``: uncoupled after the early fraction of the steps."""
        if self.coupling is None or self.last_coupled is None or float(t) >= self.last_coupled:
            return self.coupling
        return self.coupling.uncoupled()

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Guided eps for the sets ``x`` (model input, ``(B, N, C, h, w)``).

        Reference slots hold a value the replacement trick discards (with ``drop``, reference-free
        branches contribute zeros there: those slots are not in their sets).
        """
        if self.plain is not None and float(t) not in self.guided_t:
            return self.plain(x, t)
        n, empty = self.n, self.cond.empty
        groups, branches = [], []
        if self.whole:  # (nb*B, N, ...): every branch that sees the whole set
            reference = self.reference.to(x.dtype)
            groups.append(
                SetBatch(x.repeat(len(self.whole), 1, 1, 1, 1), t, self.text, reference, self.known, empty=empty)
            )
            branches.append(self.whole)
        if self.targets_only:  # (nt*B, K, ...): reference-free branches, the targets as a set of their own
            targets = x[:, n:].repeat(len(self.targets_only), 1, 1, 1, 1)
            groups.append(SetBatch(targets, t, self.target_text, empty=empty))  # nothing known
            branches.append(self.targets_only)
        references = None
        if self.seeing:  # (ns*B, K, ...) targets attending to the shared references
            targets = x[:, n:].repeat(len(self.seeing), 1, 1, 1, 1)
            groups.append(SetBatch(targets, t, self.seeing_text, sees_references=True, empty=empty))
            branches.append(self.seeing)
            refs = self.cond.references.to(x.dtype)
            references = SetBatch(x[:, :n], t, self.cond.text[:, :n], refs, self.ref_known, empty=empty)
        coupling = self.coupling_at(t)
        outs = self.model.forward_groups(groups, references=references, coupling=coupling)  # one U-Net call
        ref_eps = outs.pop(0) if references is not None else torch.zeros_like(x[:, :n])  # (B, n, ...)
        parts: dict[Branch, torch.Tensor] = {}
        for eps, brs in zip(outs, branches, strict=True):
            if brs is not self.whole:  # (nb*B, K, ...) -> (nb*B, N, ...); zeros: not in reference-free sets
                head = ref_eps if brs is self.seeing else torch.zeros_like(ref_eps)
                eps = torch.cat([head.repeat(len(brs), 1, 1, 1, 1), eps], dim=1)
            parts.update(zip(brs, eps.chunk(len(brs)), strict=True))
        return self.guidance.combine(parts)


StepCallback = Callable[[int, torch.Tensor, dict[str, torch.Tensor]], "dict[str, torch.Tensor] | None"]


def replacement_sample(
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler: Any,
    timesteps: Iterable[torch.Tensor],
    latents: torch.Tensor,
    references: torch.Tensor,
    generator: torch.Generator | None = None,
    extra_step_kwargs: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> torch.Tensor:
    """The replacement-trick loop (JeDi sec. 3.3) for B sets of n references and K targets.

    Args:
        denoise: ``(x_in (B, N, C, h, w), t) -> eps (B, N, C, h, w)``, guidance included.
        scheduler: any diffusers scheduler with ``set_timesteps`` already called.
        timesteps: the scheduler's timesteps.
        latents: initial target latents, ``(B, K, C, h, w)``, already scaled by ``init_noise_sigma``.
        references: clean reference latents, ``(B, n, C, h, w)``; ``n`` may be 0.
        generator: randomness for the references' forward diffusion (and stochastic schedulers).
        extra_step_kwargs: passed to ``scheduler.step`` (e.g. ``eta``, ``generator``).
        callback: ``callback(i, t, {"latents", "set_latents", "reference_noise"})`` after each step (diffusers'
            ``callback_on_step_end`` contract): the targets after the step, the set the model saw (the references
            replaced) and the references' noise; a ``latents`` entry of the dict it returns replaces the targets.
        progress: wraps the timestep iterable (e.g. a progress bar).

    Returns:
        Final target latents, ``(B, K, C, h, w)``.
    """
    b, k = latents.shape[:2]
    n = references.shape[1]
    if references.shape[0] != b or references.shape[2:] != latents.shape[2:]:
        raise ValueError(f"references {tuple(references.shape)} do not match latents {tuple(latents.shape)}")
    steps = list(timesteps)
    for i, t in enumerate(progress(steps) if progress else steps):
        if n:
            noise = randn_tensor(
                references.shape, generator=generator, device=references.device, dtype=references.dtype
            )
            known = scheduler.add_noise(references.flatten(0, 1), noise.flatten(0, 1), t.reshape(1))
            known = known.unflatten(0, (b, n))  # (B*n, ...) -> (B, n, ...): q(x_t | x_0) at this step
        else:
            noise = known = references
        x = torch.cat([known.to(latents.dtype), latents], dim=1)  # (B, n + K, C, h, w)
        x_in = scheduler.scale_model_input(x.flatten(0, 1), t).unflatten(0, (b, n + k))
        eps = denoise(x_in, t)[:, n:]  # keep the targets' prediction only
        out = scheduler.step(
            eps.flatten(0, 1), t, latents.flatten(0, 1), **(extra_step_kwargs or {}), return_dict=False
        )
        latents = out[0].unflatten(0, (b, k))  # (B*K, ...) -> (B, K, ...)
        if callback is not None:
            returned = callback(i, t, {"latents": latents, "set_latents": x, "reference_noise": noise})
            latents = (returned or {}).get("latents", latents)
    return latents
