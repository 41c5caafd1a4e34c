"""Coupled self-attention (JeDi, sec. 3.2 and Fig. 6) as diffusers attention processors.

The U-Net is touched only through ``set_attn_processor``: every self-attention module
(``attn1``) gets a :class:`CoupledAttnProcessor`, which reshapes the tokens of the N images of a
set into one sequence, runs an ordinary per-image processor on it and reshapes back; every
cross-attention module (``attn2``) gets a :class:`PerImageAttnProcessor`, which only accepts the
set arguments and runs its inner processor unchanged, so each image keeps its own prompt.

The set size and an optional slot mask travel with each forward call through the U-Net's
``cross_attention_kwargs`` (``{"set_size": N, "slot_mask": mask}``), never through global state; so do
the training-free options (``coupling``, :class:`jointdiff.jedi.coupling.Coupling`: a bias on the
reference keys, the coupled blocks) with the reference flag of every image (``reference_slots``) and, for the
region bias with known layouts (training on two-subject sets, issue 33), each image's subject labels
(``regions``, :func:`label_bias`).
``set_size`` may also give the size of every set of the batch (a tuple): sets of different sizes
then share one U-Net call (convolutions batched over all images; attention per run of equal sizes).

With ``shared_references`` (:class:`SharedReferences`) the batch begins with reference sets that
attend only among themselves; the target sets after them attend to their set's references and to
each other. A reference's features then depend on neither the targets nor the guidance branch, so
they are computed once per step for all branches ("isolated references", an option of sampling).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from jointdiff.jedi.coupling import PARTS, Coupling, block_id

SET_KWARGS = ("set_size", "slot_mask", "shared_references", "coupling", "reference_slots", "regions")


@dataclass(frozen=True)
class SharedReferences:
    """Reference sets at the head of a packed batch, attended to by later target sets.

    The first ``sets * size`` images of the batch are ``sets`` reference sets of ``size`` slots;
    they attend among themselves only (per set). ``set_size`` then describes the sets that follow,
    in batch order; the j-th of them, where ``sees[j]``, also attends to reference set
    ``j % sets`` (its queries see the reference tokens and its own set's tokens, as in the coupled
    attention of the whole set), and is an ordinary set where not. Groups of target sets therefore
    come in blocks of ``sets`` sets, in the reference sets' order.
    """

    sets: int
    size: int
    sees: tuple[bool, ...]

    def __post_init__(self) -> None:
        if self.sets < 1 or self.size < 1:
            raise ValueError(f"shared references need >= 1 set of >= 1 slot, got {self.sets} x {self.size}")


def _runs(sizes: tuple[int, ...]) -> list[tuple[int, int]]:
    """Consecutive sets of equal size: ``(4, 4, 3) -> [(4, 2), (3, 1)]`` as (set size, number of sets)."""
    return [(size, len(list(group))) for size, group in itertools.groupby(sizes)]


def _check_set_sizes(batch: int, sizes: tuple[int, ...], slot_mask: torch.Tensor | None) -> None:
    """Validate per-set sizes (a tuple ``set_size``) against a packed batch of ``batch`` images."""
    if not sizes or not all(isinstance(s, int) and s >= 1 for s in sizes):
        raise ValueError(f"set_size as a tuple must hold positive ints, got {sizes!r}")
    if sum(sizes) != batch:
        raise ValueError(f"set sizes {sizes} add up to {sum(sizes)}, not the batch of {batch} images")
    if slot_mask is not None:
        raise ValueError("slot_mask needs one set size for the batch, not per-set sizes")


def _check_set_args(batch: int, set_size: int | None, slot_mask: torch.Tensor | None) -> int:
    """Validate the per-call set arguments against a packed batch of ``batch`` images."""
    if set_size is None:
        set_size = 1 if slot_mask is None else slot_mask.shape[-1]
    if not isinstance(set_size, int) or set_size < 1:
        raise ValueError(f"set_size must be a positive int, got {set_size!r}")
    if batch % set_size != 0:
        raise ValueError(f"set_size={set_size} does not divide the batch of {batch} images")
    if slot_mask is not None:
        expected = (batch // set_size, set_size)
        if slot_mask.dtype != torch.bool or tuple(slot_mask.shape) != expected:
            raise ValueError(
                f"slot_mask must be a bool tensor of shape (num_sets, set_size) = {expected}, "
                f"got {slot_mask.dtype} {tuple(slot_mask.shape)}"
            )
    return set_size


class CoupledAttnProcessor:
    """Coupled self-attention (JeDi sec. 3.2, Fig. 6): all tokens of a set attend to each other.

    ``(B*N, L, C) -> (B, N*L, C)``, the wrapped per-image processor, then back. With
    ``slot_mask`` (bool, ``(B, N)``, True = slot takes part) the included slots of a set attend
    jointly among themselves only, and every excluded slot attends to itself alone, exactly as
    an uncoupled image. That is what guidance branches without references and padded sets of
    different sizes need.

    The training-free options (``coupling``): where ``coupling.couples(block)`` is false every image
    attends per image; a ``coupling.reference_bias`` beta != 0 adds beta to the target queries' logits
    on the keys of the images flagged in ``reference_slots`` (bool, ``(B*N,)``). A ``coupling.region_bias``
    gamma applies by :func:`region_bias` (reference i owns the i-th column of every target) or, with
    ``regions`` (long, ``(B*N, H, W)`` at latent resolution, a subject label per pixel, -1 none), by
    :func:`label_bias` on those labels.
    """

    def __init__(self, inner: Any | None = None, block: str | None = None) -> None:
        self.inner = inner if inner is not None else AttnProcessor2_0()
        self.block = block  # the U-Net block (coupling.block_id), for layer selection

    def _couples(self, coupling: Coupling | None) -> bool:
        """Whether this processor couples under ``coupling`` (None: JeDi's default, every block)."""
        if coupling is None:
            return True
        if self.block is None and coupling.layers not in ((), PARTS):
            raise ValueError(
                "a CoupledAttnProcessor without its block name cannot select layers (install_joint_attention)"
            )
        return coupling.couples(self.block) if self.block is not None else bool(coupling.layers)

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        set_size: int | tuple[int, ...] | None = None,
        slot_mask: torch.Tensor | None = None,
        shared_references: SharedReferences | None = None,
        coupling: Coupling | None = None,
        reference_slots: torch.Tensor | None = None,
        regions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise ValueError("CoupledAttnProcessor is for self-attention (attn1) only")
        if hidden_states.ndim != 3:
            raise ValueError(f"coupled attention expects (B*N, L, C) tokens, got {tuple(hidden_states.shape)}")
        bn, length, channels = hidden_states.shape
        if reference_slots is not None and (reference_slots.dtype != torch.bool or reference_slots.shape != (bn,)):
            raise ValueError(
                f"reference_slots must be a bool tensor of shape ({bn},), got {tuple(reference_slots.shape)}"
            )
        if not self._couples(coupling):  # a block left uncoupled: every image on its own
            return self.inner(attn, hidden_states, attention_mask=attention_mask, temb=temb)
        flags = reference_slots if coupling is not None and coupling.biases_references else None
        regions = _used_regions(regions, coupling, bn)
        if shared_references is not None:
            if attention_mask is not None or slot_mask is not None:
                raise ValueError("shared references take no attention_mask or slot_mask")
            if regions is not None:
                raise ValueError("region labels need joint reference attention, not isolated references")
            return self._with_shared_references(attn, hidden_states, temb, set_size, shared_references, coupling, flags)
        if isinstance(set_size, tuple):  # sets of several sizes: each run of equal sizes on its own
            _check_set_sizes(bn, set_size, slot_mask)
            runs = _runs(set_size)
            if len(runs) > 1:
                if attention_mask is not None:
                    raise ValueError("a token attention_mask is not supported with per-set sizes")
                lengths = [size * count for size, count in runs]
                parts = zip(
                    hidden_states.split(lengths), _split(flags, lengths), _split(regions, lengths), runs, strict=True
                )
                return torch.cat(
                    [
                        self(attn, x, temb=temb, set_size=s, coupling=coupling, reference_slots=f, regions=r)
                        for x, f, r, (s, _) in parts
                    ]
                )
            set_size = runs[0][0]
        n = _check_set_args(bn, set_size, slot_mask)
        if n == 1:
            return self.inner(attn, hidden_states, attention_mask=attention_mask, temb=temb)
        if attention_mask is not None:
            raise ValueError("a token attention_mask is not supported with set_size > 1; use slot_mask")

        b = bn // n
        joint = hidden_states.reshape(b, n * length, channels)  # (B*N, L, C) -> (B, N*L, C)
        refs = flags.reshape(b, n) if flags is not None else None  # (B*N,) -> (B, N)
        labels = None if regions is None else pool_labels(regions.to(joint.device), length).reshape(b, n, length)
        if slot_mask is None or bool(slot_mask.all()):
            out = self._attend(attn, joint, None, refs, coupling, temb, labels)
            return out.reshape(bn, length, channels)  # (B, N*L, C) -> (B*N, L, C)

        # Included slots attend to included slots only: an additive key mask over N*L tokens.
        # Sets with no included slot get an all-open mask (no NaN); their rows are replaced below.
        keys = slot_mask | ~slot_mask.any(dim=1, keepdim=True)  # (B, N)
        bias = torch.zeros(b, n, dtype=hidden_states.dtype, device=hidden_states.device)
        bias = bias.masked_fill(~keys.to(bias.device), torch.finfo(hidden_states.dtype).min)
        bias = bias.repeat_interleave(length, dim=1).unsqueeze(1)  # (B, N) -> (B, 1, N*L)
        out = self._attend(attn, joint, bias, refs, coupling, temb, labels)
        out = out.reshape(bn, length, channels)  # (B, N*L, C) -> (B*N, L, C)

        # Excluded slots: ordinary per-image self-attention.
        excluded = (~slot_mask).reshape(bn).nonzero().squeeze(1).to(hidden_states.device)  # (E,)
        single = self.inner(attn, hidden_states.index_select(0, excluded), temb=temb)  # (E, L, C)
        return out.index_copy(0, excluded, single.to(out.dtype))

    def _attend(
        self,
        attn: Attention,
        joint: torch.Tensor,
        key_bias: torch.Tensor | None,
        refs: torch.Tensor | None,
        coupling: Coupling | None,
        temb: torch.Tensor | None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention over the tokens of each set, ``joint`` ``(B, N*L, C)``, with an additive key bias shared
        by every query (``(B, 1, N*L)``, the slot mask) and, with ``refs`` (``(B, N)`` bool), the reference
        bias beta on the target queries' logits of reference keys and the region bias gamma (by the set's
        token ``labels`` ``(B, N, L)`` where given, else by columns). Sets are queried in groups of equal
        reference slots: reference queries plainly, target queries with the biases, over the same keys."""
        if refs is None or coupling is None:
            return self.inner(attn, joint, attention_mask=key_bias, temb=temb)
        b, nl, _ = joint.shape
        n = refs.shape[1]
        length = nl // n
        key_refs = refs.repeat_interleave(length, dim=1).unsqueeze(1)  # (B, N) -> (B, 1, N*L)
        base = key_bias if key_bias is not None else torch.zeros(b, 1, nl, dtype=joint.dtype, device=joint.device)
        shifted = base + torch.where(key_refs, coupling.reference_bias, 0.0).to(base.dtype)  # (B, 1, N*L)
        out = torch.empty_like(joint).unflatten(1, (n, length))  # (B, N*L, C) -> (B, N, L, C)
        for pattern in torch.unique(refs, dim=0):  # the sets with these reference slots, queried together
            sets = (refs == pattern).all(dim=1).nonzero().squeeze(1)  # (S,)
            keys = joint.index_select(0, sets)  # (S, N*L, C)
            for slots, bias in ((pattern, key_bias), (~pattern, shifted)):  # reference queries, target queries
                if not bool(slots.any()):
                    continue
                which = slots.nonzero().squeeze(1)  # (R,)
                queries = keys.unflatten(1, (n, length))[:, which].flatten(1, 2)  # (S, N, L, C) -> (S, R*L, C)
                mask = bias.index_select(0, sets) if bias is not None else None  # (S, 1, N*L)
                if bias is shifted and labels is not None and bool(pattern.any()):  # region bias by the sets' labels
                    lab = labels.index_select(0, sets)  # (S, N, L)
                    on_refs = pattern.repeat_interleave(length)  # (N*L,) keys of reference slots
                    region = label_bias(lab[:, which].flatten(1), lab.flatten(1), on_refs, coupling.region_bias)
                    mask = mask + region.to(mask.dtype)  # (S, 1, N*L) + (S, R*L, N*L)
                elif bias is shifted and coupling.region_bias != 0 and int(pattern.sum()) > 1:
                    region = region_bias(pattern, length, coupling.region_bias, joint.dtype, joint.device)  # (L, N*L)
                    mask = mask + region.repeat(len(which), 1)  # (S, 1, N*L) + (R*L, N*L) -> (S, R*L, N*L)
                o = self.inner(attn, queries, encoder_hidden_states=keys, attention_mask=mask, temb=temb)
                out[sets[:, None], which[None, :]] = o.unflatten(1, (len(which), length)).to(out.dtype)  # (S, R, L, C)
        return out.flatten(1, 2)  # (B, N, L, C) -> (B, N*L, C)

    def _with_shared_references(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        temb: torch.Tensor | None,
        set_size: int | tuple[int, ...] | None,
        refs: SharedReferences,
        coupling: Coupling | None,
        flags: torch.Tensor | None,
    ) -> torch.Tensor:
        """Reference sets among themselves; each later set's queries over its references' and its own tokens."""
        _, length, channels = hidden_states.shape
        head = refs.sets * refs.size
        ref_tokens, rest = hidden_states[:head], hidden_states[head:]
        if isinstance(set_size, int):
            if set_size < 1 or rest.shape[0] % set_size:
                raise ValueError(f"set_size={set_size} does not divide the {rest.shape[0]} images after the references")
            set_size = (set_size,) * (rest.shape[0] // set_size)
        if not isinstance(set_size, tuple) or len(set_size) != len(refs.sees):
            raise ValueError(
                f"shared references: {len(refs.sees)} flags for the sets after them, set sizes {set_size!r}"
            )
        _check_set_sizes(rest.shape[0], set_size, None)
        flags = flags[head:] if flags is not None else None  # the images after the references
        outs = [self(attn, ref_tokens, temb=temb, set_size=refs.size)]  # (sets*n, L, C): references alone
        context = ref_tokens.reshape(refs.sets, refs.size * length, channels)  # (sets, n*L, C)
        start = offset = 0  # the run's first set (after the references) and its first image
        for (size, sees), run in itertools.groupby(zip(set_size, refs.sees, strict=True)):
            count = len(list(run))
            x = rest[offset : offset + size * count]  # (count*size, L, C)
            if not sees:
                f = flags[offset : offset + size * count] if flags is not None else None
                outs.append(self(attn, x, temb=temb, set_size=size, coupling=coupling, reference_slots=f))
            else:
                own = x.reshape(count, size * length, channels)  # (count, K*L, C)
                which = torch.arange(start, start + count, device=x.device) % refs.sets
                keys = torch.cat([context.index_select(0, which), own], dim=1)  # (count, (n+K)*L, C)
                mask = None  # the reference bias on the references' keys (these queries are all targets)
                if coupling is not None and coupling.region_bias != 0 and refs.size > 1:
                    raise ValueError("the region bias needs joint reference attention, not isolated references")
                if coupling is not None and coupling.reference_bias != 0:
                    on_refs = torch.arange(keys.shape[1], device=x.device) < refs.size * length  # ((n+K)*L,)
                    mask = torch.where(on_refs, coupling.reference_bias, 0.0).to(x.dtype).expand(count, 1, -1)
                out = self.inner(attn, own, encoder_hidden_states=keys, attention_mask=mask, temb=temb)
                outs.append(out.reshape(count * size, length, channels))
            start, offset = start + count, offset + size * count
        return torch.cat(outs)


class PerImageAttnProcessor:
    """Cross-attention stays per image (JeDi Fig. 6): runs ``inner`` and ignores the set arguments."""

    def __init__(self, inner: Any | None = None) -> None:
        self.inner = inner if inner is not None else AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        set_size: int | tuple[int, ...] | None = None,
        slot_mask: torch.Tensor | None = None,
        shared_references: SharedReferences | None = None,
        coupling: Coupling | None = None,
        reference_slots: torch.Tensor | None = None,
        regions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.inner(
            attn,
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            temb=temb,
        )


def region_bias(
    references: torch.Tensor, length: int, gamma: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The region bias of :class:`jointdiff.jedi.coupling.Coupling` for one target image's queries, ``(L, N*L)``.

    ``references`` (``(N,)`` bool) flags the set's reference slots; with n of them, reference i (slot order) owns
    the i-th of n equal columns of the target's ``sqrt(L) x sqrt(L)`` token grid, and a query there gets
    ``-gamma`` on every key of the other references (``-inf`` for ``gamma = inf``), 0 elsewhere."""
    side = math.isqrt(length)
    if side * side != length:
        raise ValueError(f"the region bias needs square token grids (square images), got {length} tokens")
    references = references.to(device)
    slots = references.nonzero().squeeze(1)  # (n,) the reference slots in order
    rank = torch.full(references.shape, -1, device=device)
    rank[slots] = torch.arange(len(slots), device=device)  # (N,) reference i at its slot, -1 on targets
    owner = torch.arange(length, device=device) % side * len(slots) // side  # (L,) the column's reference
    keys = rank.repeat_interleave(length)  # (N*L,) every key's reference (its subject), -1 on targets
    return label_bias(owner[None], keys[None], references.repeat_interleave(length), gamma)[0].to(dtype)


def label_bias(queries: torch.Tensor, keys: torch.Tensor, on_refs: torch.Tensor, gamma: float) -> torch.Tensor:
    """The region bias by subject labels (issue 33), ``(S, Q, K)`` float32: ``-gamma`` where a query and a key both
    carry a label (>= 0), the labels differ and the key lies on a reference slot; 0 elsewhere.

    ``queries`` ``(S, Q)`` and ``keys`` ``(S, K)`` are the token labels (long, -1: no subject) of S sets; ``on_refs``
    (bool, ``(K,)`` or ``(S, K)``) flags the keys of reference slots. A target token of subject A thereby ignores
    (gamma = inf) or down-weights the reference tokens of any other subject; unlabelled tokens are free."""
    other = (queries[:, :, None] >= 0) & (keys[:, None, :] >= 0) & (queries[:, :, None] != keys[:, None, :])
    other = other & on_refs.reshape(-1, 1, keys.shape[1])  # (S, Q, K)
    return torch.where(other, -gamma, 0.0)


def pool_labels(regions: torch.Tensor, length: int) -> torch.Tensor:
    """Label maps ``(M, H, W)`` (long, -1: none) at the token grid of ``length`` tokens, ``(M, length)``: each token
    takes the label of most of its pixels (ties: the smaller label)."""
    m, h, w = regions.shape
    side = math.isqrt(length)
    if side * side != length or h != w or h % side:
        raise ValueError(f"region labels of {h}x{w} pixels do not pool to {length} tokens (square grids)")
    if regions.numel() and int(regions.min()) < -1:
        raise ValueError(f"region labels are subjects (>= 0) or -1 (none), got {int(regions.min())}")
    k = h // side
    if k == 1:
        return regions.reshape(m, length).long()
    votes = torch.nn.functional.one_hot(regions.long() + 1, int(regions.max()) + 2)  # (M, H, W, K+1); -1 -> class 0
    votes = torch.nn.functional.avg_pool2d(votes.permute(0, 3, 1, 2).float(), k)  # (M, K+1, side, side)
    return (votes.argmax(1) - 1).reshape(m, length)


def _used_regions(regions: torch.Tensor | None, coupling: Coupling | None, images: int) -> torch.Tensor | None:
    """The label maps where the region bias uses them (None otherwise), one per image of the batch (one-line error)."""
    if regions is None or coupling is None or coupling.region_bias == 0:
        return None
    if regions.shape[0] != images:
        raise ValueError(f"regions must give {images} label maps (one per image), got {tuple(regions.shape)}")
    return regions


def _split(flags: torch.Tensor | None, lengths: list[int]) -> list[torch.Tensor | None]:
    """``flags`` split like the batch (None stays None for every part)."""
    return list(flags.split(lengths)) if flags is not None else [None] * len(lengths)


def _role(name: str) -> str | None:
    """'attn1' / 'attn2' for the processors of transformer blocks, else None."""
    module = name.rsplit(".", 2)[-2] if name.endswith(".processor") else ""
    return module if module in ("attn1", "attn2") else None


def install_joint_attention(unet: torch.nn.Module) -> None:
    """Couple every ``attn1`` of ``unet`` across the images of a set (JeDi sec. 3.2); idempotent.

    The processors already on the modules become the inner per-image processors, so an
    optimised processor installed before (fused, xformers, ...) keeps working. Each coupled processor
    knows its block (:func:`jointdiff.jedi.coupling.block_id`) for the training-free layer selection.
    """
    procs = dict(unet.attn_processors)
    modules = dict(unet.named_modules())
    found = False
    for name, proc in procs.items():
        role = _role(name)
        if role == "attn1":
            module = modules[name.removesuffix(".processor")]
            if getattr(module, "group_norm", None) is not None or getattr(module, "spatial_norm", None) is not None:
                raise ValueError(f"{name}: self-attention with group/spatial norm cannot be coupled per token")
            inner = proc.inner if isinstance(proc, CoupledAttnProcessor) else proc
            procs[name] = CoupledAttnProcessor(inner, block=block_id(name))
            found = True
        elif role == "attn2" and not isinstance(proc, PerImageAttnProcessor):
            procs[name] = PerImageAttnProcessor(proc)
    if not found:
        raise ValueError("the U-Net has no transformer self-attention (attn1) modules to couple")
    unet.set_attn_processor(procs)


def remove_joint_attention(unet: torch.nn.Module) -> None:
    """Undo :func:`install_joint_attention`: restore the inner per-image processors."""
    procs = {
        name: proc.inner if isinstance(proc, (CoupledAttnProcessor, PerImageAttnProcessor)) else proc
        for name, proc in unet.attn_processors.items()
    }
    unet.set_attn_processor(procs)


def coupled_blocks(unet: torch.nn.Module) -> tuple[str, ...]:
    """The blocks (:func:`jointdiff.jedi.coupling.block_id`) whose self-attention carries a coupled processor."""
    procs = unet.attn_processors.values()
    return tuple(sorted({p.block for p in procs if isinstance(p, CoupledAttnProcessor) and p.block is not None}))


def has_joint_attention(unet: torch.nn.Module) -> bool:
    """True when every ``attn1`` of ``unet`` carries a :class:`CoupledAttnProcessor`."""
    roles = [(_role(n), p) for n, p in unet.attn_processors.items()]
    attn1 = [p for role, p in roles if role == "attn1"]
    return bool(attn1) and all(isinstance(p, CoupledAttnProcessor) for p in attn1)
