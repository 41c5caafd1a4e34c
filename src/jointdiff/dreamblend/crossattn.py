"""Cross-attention maps: recording them, comparing them, and scoring attention collapse.

Used by DreamBlend (cross-attention guidance across checkpoints). A :class:`CrossAttnRecorder`
replaces the processor of chosen ``attn2`` modules; it computes the same attention as
diffusers' ``AttnProcessor`` while handing the head-averaged probabilities ``(B, L, T)`` (image
tokens x text tokens) to an :class:`AttentionStore`, with or without the autograd graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.models.attention_processor import Attention

from jointdiff.jedi.attention import PerImageAttnProcessor


@dataclass
class AttentionStore:
    """Per-layer cross-attention probabilities of the last forward pass while ``active``."""

    active: bool = False
    keep_graph: bool = False  # True while computing a guidance gradient
    maps: dict[str, torch.Tensor] = field(default_factory=dict)

    def start(self, keep_graph: bool = False) -> None:
        self.active, self.keep_graph, self.maps = True, keep_graph, {}

    def stop(self) -> dict[str, torch.Tensor]:
        self.active = False
        maps, self.maps = self.maps, {}
        return maps


class CrossAttnRecorder:
    """``AttnProcessor`` math for ``attn2`` that also stores head-averaged probabilities."""

    def __init__(self, store: AttentionStore, name: str) -> None:
        self.store, self.name = store, name

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        set_size: int | tuple[int, ...] | None = None,
        slot_mask: torch.Tensor | None = None,
        shared_references: object | None = None,
    ) -> torch.Tensor:
        b, length, _ = hidden_states.shape
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attn.norm_cross and encoder_hidden_states is not None:
            context = attn.norm_encoder_hidden_states(context)
        mask = attn.prepare_attention_mask(attention_mask, context.shape[1], b)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B*h, L, d)
        key = attn.head_to_batch_dim(attn.to_k(context))  # (B*h, T, d)
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, mask)  # (B*h, L, T)
        if self.store.active:
            mean = probs.reshape(b, attn.heads, length, -1).mean(dim=1)  # (B*h, L, T) -> (B, L, T)
            self.store.maps[self.name] = mean if self.store.keep_graph else mean.detach()
        out = attn.batch_to_head_dim(torch.bmm(probs, value))  # (B*h, L, d) -> (B, L, h*d)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def install_recorders(unet: torch.nn.Module, store: AttentionStore, layers: list[str] | None = None) -> list[str]:
    """Put recorders on the ``attn2`` modules named in ``layers`` (default: all); returns their names."""
    procs = dict(unet.attn_processors)
    names = [n for n in procs if n.endswith("attn2.processor")]
    chosen = names if layers is None else [n for n in names if any(n.startswith(p) for p in layers)]
    if not chosen:
        raise ValueError(f"no cross-attention layers match {layers}; available: {', '.join(names)}")
    for name in chosen:
        rec = CrossAttnRecorder(store, name.removesuffix(".processor"))
        procs[name] = PerImageAttnProcessor(rec) if isinstance(procs[name], PerImageAttnProcessor) else rec
    unet.set_attn_processor(procs)
    return [n.removesuffix(".processor") for n in chosen]


def spatial_distributions(maps: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """``(B, L, T)`` probabilities -> ``(B, len(tokens), L)``: each token's map normalised to sum 1."""
    sel = maps[:, :, tokens].transpose(1, 2)  # (B, L, k) -> (B, k, L)
    return sel / sel.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def alignment_loss(
    maps: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], tokens: list[int]
) -> torch.Tensor:
    """Cross-attention guidance loss: sum over layers of the mean squared difference of the
    per-token spatial distributions (scaled by the number of pixels, so a layer counts alike at
    every resolution)."""
    total = torch.zeros((), device=next(iter(maps.values())).device)
    for name, ref in reference.items():
        a, r = spatial_distributions(maps[name], tokens), spatial_distributions(ref.to(maps[name]), tokens)
        total = total + ((a - r) ** 2).sum(dim=-1).mean() * a.shape[-1]
    return total


def collapse_penalty(maps: dict[str, torch.Tensor], subject: list[int], others: list[int]) -> torch.Tensor:
    """Mean cosine similarity of the other tokens' maps to the subject tokens' map (high = collapse)."""
    total = torch.zeros((), device=next(iter(maps.values())).device)
    for m in maps.values():
        subj = m[:, :, subject].sum(dim=-1, keepdim=True)  # (B, L, 1)
        total = total + torch.nn.functional.cosine_similarity(m[:, :, others], subj, dim=1).mean()
    return total / max(1, len(maps))


def collapse_score(
    maps: dict[str, torch.Tensor], subject: list[int], others: list[int], quantile: float = 0.8
) -> float:
    """Attention-collapse score in [0, 1]: the share of the other tokens' attention mass that falls
    in the subject region (pixels above the ``quantile`` of the subject tokens' map), averaged over
    layers. A model whose every token looks at the subject scores near 1; about ``1 - quantile``
    is what a token that ignores the subject scores."""
    scores = []
    for m in maps.values():
        subj = m[:, :, subject].sum(dim=-1)  # (B, L)
        region = subj >= torch.quantile(subj.float(), quantile, dim=-1, keepdim=True).to(subj)  # (B, L)
        other = m[:, :, others]  # (B, L, k)
        share = (other * region[:, :, None]).sum(dim=1) / other.sum(dim=1).clamp_min(1e-12)  # (B, k)
        scores.append(share.mean())
    return float(torch.stack(scores).mean())


def token_map(steps: list[dict[str, torch.Tensor]], tokens: list[int], size: int) -> torch.Tensor:
    """Where ``tokens`` look: the attention mass of those text tokens per image position, ``(B, size, size)``,
    averaged over denoising steps and layers (each layer's square map resized bilinearly to ``size``), each
    image's map divided by its maximum (DreamBlend Fig. 2: the subject token's maps of two checkpoints)."""
    total: torch.Tensor | None = None
    count = 0
    for maps in steps:
        for m in maps.values():
            b, length, _ = m.shape
            side = round(length**0.5)
            if side * side != length:
                raise ValueError(f"token_map: a layer's {length} positions are not a square map")
            grid = m[:, :, tokens].sum(dim=-1).reshape(b, 1, side, side).float()
            grid = torch.nn.functional.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
            total = grid[:, 0] if total is None else total + grid[:, 0]
            count += 1
    if total is None:
        raise ValueError("token_map: no maps recorded")
    mean = total / count
    return mean / mean.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
