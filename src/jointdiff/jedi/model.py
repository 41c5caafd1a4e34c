"""The reference-conditioned joint U-Net (JeDi sec. 3.3, supplementary sec. 6).

A text-to-image ``UNet2DConditionModel`` becomes a joint-image inpainting U-Net by two changes:
its input takes ``concat(M, x_t, x0 * (1 - M))`` (mask, noisy latent, masked clean latent),
and its self-attention is coupled across the images of a set (:mod:`jointdiff.jedi.attention`).
:func:`convert_unet` widens ``conv_in`` with zero-initialised weights for the new channels, so
the converted model reproduces the original exactly, and records the layout in the model config
under ``_jointdiff`` (saved and loaded by diffusers' ``save_pretrained`` / ``from_pretrained``).

A stock diffusers inpainting U-Net already takes that condition in its own channel order
(:mod:`jointdiff.jedi.layouts`): :class:`JointUNet` adapts the order at the input and couples its
self-attention the same way, without conversion or training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from jointdiff.jedi.attention import SharedReferences, coupled_blocks, install_joint_attention
from jointdiff.jedi.coupling import PARTS, Coupling, selects
from jointdiff.jedi.layouts import LAYOUT_KEY, JointLayout, detect_layout, joint_layout
from jointdiff.jedi.sets import mask_channel, masked_reference, pack_sets, unpack_sets


def convert_unet(unet: nn.Module) -> nn.Module:
    """Widen ``conv_in`` of a text-to-image U-Net to the JeDi input (supp. sec. 6), in place.

    New input channels (mask, masked reference) get zero weights; the noisy-latent block keeps
    the original weights and bias, so outputs equal the original's at initialisation.
    Returns ``unet`` for chaining.
    """
    config = getattr(unet, "config", None)
    conv = getattr(unet, "conv_in", None)
    if config is None or not isinstance(conv, nn.Conv2d) or "in_channels" not in config:
        raise ValueError(f"expected a diffusers UNet2DConditionModel-like U-Net, got {type(unet).__name__}")
    if joint_layout(unet) is not None:
        raise ValueError("the U-Net is already converted to the jointdiff layout")
    c = int(config["in_channels"])
    if c != int(config.get("out_channels", c)) or conv.in_channels != c:
        raise ValueError(
            f"not a plain text-to-image U-Net: in_channels={c}, out_channels={config.get('out_channels')} "
            "(a stock inpainting U-Net needs no conversion: `jointdiff generate --model` reads it as it is; "
            "other conditioned U-Nets are not supported as a base)"
        )
    layout = JointLayout(latent_channels=c)
    new = nn.Conv2d(
        layout.in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, 1 : 1 + c] = conv.weight  # mask | noisy <- original | reference
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=layout.in_channels, **{LAYOUT_KEY: layout.to_config()})
    return unet


def _flat_timesteps(timestep: torch.Tensor | float | int, b: int, n: int, device: torch.device) -> torch.Tensor:
    """A scalar, ``(B,)`` or ``(B, N)`` timestep -> one per packed image, ``(B*N,)``."""
    t = torch.as_tensor(timestep, device=device)
    if t.ndim == 0:
        return t.expand(b * n)
    if t.ndim == 1 and t.shape[0] == b:
        return t.repeat_interleave(n)  # (B,) -> (B*N,)
    if t.ndim == 2 and tuple(t.shape) == (b, n):
        return t.reshape(b * n)  # (B, N) -> (B*N,)
    raise ValueError(f"timestep must be a scalar, (B,) or (B, N) = ({b}, {n}); got shape {tuple(t.shape)}")


@dataclass
class SetBatch:
    """One batch of B sets of N slots for :meth:`JointUNet.forward_groups` (arguments as in
    :meth:`JointUNet.forward`)."""

    sample: torch.Tensor  # (B, N, C, H, W)
    timestep: torch.Tensor | float | int  # scalar, (B,) or (B, N)
    encoder_hidden_states: torch.Tensor  # (B, N, T, D)
    reference: torch.Tensor | None = None  # (B, N, C, H, W)
    known: torch.Tensor | None = None  # (B, N) bool
    slot_mask: torch.Tensor | None = None  # (B, N) bool
    added_cond_kwargs: dict[str, torch.Tensor] | None = None  # values (B, N, ...)
    sees_references: bool = False  # with forward_groups(references=...): also attend to the references
    empty: torch.Tensor | None = None  # (C, H, W): an unknown slot's masked-image latent (None: the layout's zeros)
    known_pixels: torch.Tensor | None = None  # (B, N, 1, H, W) in [0, 1]: spatial masks, 1 = known (overrides known)


class _Packed(NamedTuple):
    """One group's U-Net input, packed: ``(B*N, 1+2C, H, W)``, ``(B*N,)``, ``(B*N, T, D)``, extras, ``(B*N,)``."""

    x: torch.Tensor
    t: torch.Tensor
    text: torch.Tensor
    added: dict[str, torch.Tensor]
    b: int
    n: int
    known: torch.Tensor  # the reference flag of every image


class JointUNet(nn.Module):
    """eps_theta(x_t, x_hat, M) of JeDi eq. 2 on image sets: a thin adapter over a converted U-Net or a stock
    inpainting U-Net (``layout``: ``auto``, ``jedi`` or ``inpainting``, :func:`jointdiff.jedi.layouts.detect_layout`).

    Takes set-shaped tensors ``(B, N, ...)``; the set size is their second axis. Builds the
    input channels in the U-Net's order, packs the sets into the U-Net batch and passes ``set_size`` /
    ``slot_mask`` to the coupled attention processors (sec. 3.2). Constructing it changes nothing in the U-Net:
    :meth:`install_attention` installs the processors, :meth:`with_joint_attention` does both.
    """

    def __init__(self, unet: nn.Module, layout: str = "auto") -> None:
        super().__init__()
        config = getattr(unet, "config", None)
        if config is None:
            raise ValueError(f"expected a diffusers UNet2DConditionModel, got {type(unet).__name__}")
        self.layout = detect_layout(config, layout, source="the U-Net")
        self.unet = unet

    @property
    def blocks(self) -> tuple[str, ...]:
        """The blocks with coupled self-attention (none before :meth:`install_attention`), for the layer selection."""
        return coupled_blocks(self.unet)

    def check_coupling(self, coupling: Coupling) -> None:
        """Every coupled layer named must match a block with self-attention of this U-Net (one-line error); the
        default, every part, names no block in particular (a U-Net without mid-block attention is fine)."""
        if coupling.layers == PARTS:
            return
        for selector in coupling.layers:
            if not any(selects(selector, block) for block in self.blocks):
                raise ValueError(
                    f"coupled layer {selector!r} matches no self-attention of this U-Net "
                    f"(its blocks with self-attention: {', '.join(self.blocks)})"
                )

    def install_attention(self) -> JointUNet:
        """Install the joint attention processors in the U-Net (sec. 3.2: ``attn1`` coupled across each set,
        ``attn2`` per image); returns self."""
        install_joint_attention(self.unet)
        return self

    @classmethod
    def with_joint_attention(cls, unet: nn.Module, layout: str = "auto") -> JointUNet:
        """The adapter over a converted or stock inpainting ``unet`` with coupled self-attention installed: what
        sampling and training use."""
        return cls(unet, layout).install_attention()

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        reference: torch.Tensor | None = None,
        known: torch.Tensor | None = None,
        slot_mask: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        empty: torch.Tensor | None = None,
        known_pixels: torch.Tensor | None = None,
        coupling: Coupling | None = None,
        regions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict noise for every image of every set.

        Args:
            sample: noisy latents x_t, ``(B, N, C, H, W)``.
            timestep: scalar, ``(B,)`` or ``(B, N)``.
            encoder_hidden_states: text embeddings per image, ``(B, N, T, D)``.
            reference: clean latents x0, ``(B, N, C, H, W)``; read only where ``known``.
            known: bool ``(B, N)``, True where the reference is given (mask bit 0).
            slot_mask: bool ``(B, N)``, slots taking part in coupled attention (default all).
            added_cond_kwargs: extra U-Net conditioning (SDXL), each value set-shaped ``(B, N, ...)``.
            cross_attention_kwargs: passed through to the attention processors.
            empty: an unknown slot's masked-image latent, ``(C, H, W)``: required by a stock inpainting
                U-Net (the latent of a fully masked image); None for a JeDi U-Net (zeros).
            known_pixels: spatial masks at latent resolution, ``(B, N, 1, H, W)`` in [0, 1], 1 where the reference
                is known: the mask channel is ``1 - known_pixels`` and the masked-image channels blend the
                reference with the unknown value (zero or ``empty``) by it, as a stock inpainting model is trained
                (random regions); ``known`` then only flags reference slots for the coupling options.
            coupling: the coupled attention's options (:class:`jointdiff.jedi.coupling.Coupling`; None: JeDi's).
            regions: each pixel's subject at latent resolution, ``(B, N, H, W)`` long (-1: none): the region bias of
                ``coupling`` by these labels (:func:`jointdiff.jedi.attention.label_bias`) instead of by columns;
                training on two-subject sets (issue 33).

        Returns:
            Predicted noise, ``(B, N, C, H, W)``.
        """
        kwargs = dict(cross_attention_kwargs or {})
        if regions is not None:
            if regions.ndim != 4 or tuple(regions.shape) != (*sample.shape[:2], *sample.shape[3:]):
                raise ValueError(
                    f"regions must be (B, N, H, W) = {(*sample.shape[:2], *sample.shape[3:])}, got {tuple(regions.shape)}"
                )
            kwargs["regions"] = pack_sets(regions)  # (B, N, H, W) -> (B*N, H, W)
        return self.forward_groups(
            [
                SetBatch(
                    sample,
                    timestep,
                    encoder_hidden_states,
                    reference,
                    known,
                    slot_mask,
                    added_cond_kwargs,
                    empty=empty,
                    known_pixels=known_pixels,
                )
            ],
            kwargs,
            coupling=coupling,
        )[0]

    def forward_groups(
        self,
        groups: list[SetBatch],
        cross_attention_kwargs: dict[str, Any] | None = None,
        references: SetBatch | None = None,
        coupling: Coupling | None = None,
    ) -> list[torch.Tensor]:
        """:meth:`forward` for several batches of sets, of different set sizes, in one U-Net call.

        The images of all groups are packed into one U-Net batch (convolutions and cross-attention
        run once over all of them); coupled self-attention runs per run of sets of equal size, so
        each set still attends only to itself. Returns each group's noise, ``(B_g, N_g, C, H, W)``.
        A ``slot_mask`` is allowed only with a single group.

        ``references`` (B sets of n reference slots, isolated references): computed once, first in
        the batch, attending only among themselves; every group with ``sees_references`` (blocks of
        B sets, e.g. one block per guidance branch) attends to them as well, the b-th set of a block
        to reference set b. Their noise is returned first.

        ``coupling``: the training-free options of the coupled attention (:class:`jointdiff.jedi.coupling.Coupling`;
        None: JeDi's coupling); the reference bias applies to the slots marked ``known``.
        """
        if not groups:
            raise ValueError("forward_groups needs at least one group of sets")
        if (len(groups) > 1 or references is not None) and any(g.slot_mask is not None for g in groups):
            raise ValueError("slot_mask is supported with one group only")
        packed = [self._pack(g) for g in groups]
        sizes = tuple(p.n for p in packed for _ in range(p.b))  # the size of every set, in batch order
        kwargs = dict(cross_attention_kwargs or {})
        kwargs.update(set_size=sizes if len(groups) > 1 else sizes[0], slot_mask=groups[0].slot_mask)
        if references is not None:
            head = self._pack(references)
            for g, p in zip(groups, packed, strict=True):
                if g.sees_references and p.b % head.b:
                    raise ValueError(f"a group of {p.b} sets cannot see {head.b} reference sets (blocks of {head.b})")
            sees = tuple(g.sees_references for g, p in zip(groups, packed, strict=True) for _ in range(p.b))
            kwargs.update(set_size=sizes, shared_references=SharedReferences(head.b, head.n, sees))
            packed = [head, *packed]
        elif any(g.sees_references for g in groups):
            raise ValueError("a group sees references but no references were given")
        if any(set(p.added) != set(packed[0].added) for p in packed):
            raise ValueError("every group must carry the same added_cond_kwargs")
        if coupling is not None:
            self.check_coupling(coupling)
            kwargs.update(coupling=coupling, reference_slots=torch.cat([p.known for p in packed]))  # (images,)
        eps = self.unet(
            torch.cat([p.x for p in packed]),  # every group's (B_g*N_g, 1+2C, H, W)
            torch.cat([p.t for p in packed]),
            encoder_hidden_states=torch.cat([p.text for p in packed]),
            added_cond_kwargs={k: torch.cat([p.added[k] for p in packed]) for k in packed[0].added} or None,
            cross_attention_kwargs=kwargs,
        ).sample
        chunks = eps.split([p.b * p.n for p in packed])
        return [unpack_sets(e, p.n) for e, p in zip(chunks, packed, strict=True)]  # (B_g, N_g, C, H, W) each

    def _pack(self, g: SetBatch) -> _Packed:
        """Validate one group and build its packed U-Net input."""
        sample, encoder_hidden_states, reference, known = g.sample, g.encoder_hidden_states, g.reference, g.known
        if sample.ndim != 5 or sample.shape[2] != self.layout.latent_channels:
            raise ValueError(f"sample must be (B, N, {self.layout.latent_channels}, H, W), got {tuple(sample.shape)}")
        b, n, _, h, w = sample.shape
        if encoder_hidden_states.ndim != 4 or tuple(encoder_hidden_states.shape[:2]) != (b, n):
            raise ValueError(
                f"encoder_hidden_states must be (B, N, T, D) with (B, N) = ({b}, {n}), "
                f"got {tuple(encoder_hidden_states.shape)}"
            )
        if known is None:
            if reference is not None:
                raise ValueError("reference given without `known`: say which slots are references")
            known = torch.zeros(b, n, dtype=torch.bool, device=sample.device)
        elif known.dtype != torch.bool or tuple(known.shape) != (b, n):
            raise ValueError(f"known must be a bool tensor of shape ({b}, {n}), got {known.dtype} {tuple(known.shape)}")
        if reference is None:
            if bool(known.any()):
                raise ValueError("known marks reference slots but no reference latents were given")
            reference = torch.zeros_like(sample)
        elif tuple(reference.shape) != tuple(sample.shape):
            raise ValueError(
                f"reference must have the sample's shape {tuple(sample.shape)}, got {tuple(reference.shape)}"
            )

        known = known.to(sample.device)
        masked = self._masked(reference.to(sample.dtype), known, g.empty)  # (B, N, C, H, W)
        mask = mask_channel(known, h, w, sample.dtype)  # (B, N, 1, H, W), 1 = to paint
        if g.known_pixels is not None:  # spatial masks: the unknown value (zero or empty) blended in by pixel
            if tuple(g.known_pixels.shape) != (b, n, 1, h, w):
                raise ValueError(f"known_pixels must be ({b}, {n}, 1, {h}, {w}), got {tuple(g.known_pixels.shape)}")
            keep = g.known_pixels.to(sample)
            unknown = self._masked(reference.to(sample.dtype), torch.zeros_like(known), g.empty)
            masked, mask = reference.to(sample.dtype) * keep + unknown * (1 - keep), 1 - keep
        blocks = {"mask": mask, "noisy": sample, "reference": masked}
        blocks["masked_image"] = masked  # the stock inpainting name of the same block
        x = torch.cat([blocks[name] for name in self.layout.channels], dim=2)  # (B, N, 1 + 2C, H, W), the U-Net's order
        return _Packed(
            x=pack_sets(x),  # (B, N, 1+2C, H, W) -> (B*N, 1+2C, H, W)
            t=_flat_timesteps(g.timestep, b, n, sample.device),
            text=pack_sets(encoder_hidden_states),  # (B, N, T, D) -> (B*N, T, D)
            added={k: pack_sets(v) for k, v in (g.added_cond_kwargs or {}).items()},
            b=b,
            n=n,
            known=known.reshape(b * n),  # (B, N) -> (B*N,)
        )

    def _masked(self, reference: torch.Tensor, known: torch.Tensor, empty: torch.Tensor | None) -> torch.Tensor:
        """The masked-image channels ``(B, N, C, H, W)``: the clean latent where known; elsewhere zero (JeDi's
        ``x0 (1 - M)``) or ``empty``, the latent of a fully masked image that a stock inpainting U-Net expects."""
        if empty is None:
            if self.layout.needs_empty:
                raise ValueError(
                    "a stock inpainting U-Net needs `empty`, the latent of a fully masked image "
                    "(JointDiffusionPipeline.empty_latent)"
                )
            return masked_reference(reference, known)
        if tuple(empty.shape) != tuple(reference.shape[2:]):
            raise ValueError(
                f"empty must be one latent of shape {tuple(reference.shape[2:])}, got {tuple(empty.shape)}"
            )
        return torch.where(known[:, :, None, None, None], reference, empty.to(reference))
