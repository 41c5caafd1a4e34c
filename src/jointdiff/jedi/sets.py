"""Image sets: packing ``(B, N, ...) <-> (B*N, ...)`` and the JeDi reference masks (sec. 3.3).

A *set* holds N images of one subject. The U-Net sees sets packed into its batch axis, image
``j`` of set ``b`` at row ``b * N + j``. ``known`` (bool, ``(B, N)``) marks the slots whose
clean image is given as a reference; the paper's mask channel is its complement
(1 = generate, 0 = reference given).
"""

from __future__ import annotations

import torch


def pack_sets(x: torch.Tensor) -> torch.Tensor:
    """``(B, N, *rest) -> (B*N, *rest)``."""
    if x.ndim < 2:
        raise ValueError(f"expected a set-shaped tensor (B, N, ...), got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])  # (B, N, ...) -> (B*N, ...)


def unpack_sets(x: torch.Tensor, set_size: int) -> torch.Tensor:
    """``(B*N, *rest) -> (B, N, *rest)``; raises if ``set_size`` does not divide the batch."""
    if not isinstance(set_size, int) or set_size < 1:
        raise ValueError(f"set_size must be a positive int, got {set_size!r}")
    if x.ndim < 1 or x.shape[0] % set_size != 0:
        raise ValueError(f"set_size={set_size} does not divide the batch of {x.shape[0] if x.ndim else 0} images")
    return x.reshape(x.shape[0] // set_size, set_size, *x.shape[1:])  # (B*N, ...) -> (B, N, ...)


def mask_channel(known: torch.Tensor, height: int, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The mask input channel M of eq. 2: ``(B, N)`` bool -> ``(B, N, 1, H, W)``, 1 where generated."""
    if known.dtype != torch.bool or known.ndim != 2:
        raise ValueError(f"known must be a bool tensor of shape (B, N), got {known.dtype} {tuple(known.shape)}")
    m = (~known).to(dtype)[:, :, None, None, None]  # (B, N) -> (B, N, 1, 1, 1)
    return m.expand(-1, -1, 1, height, width)  # (B, N, 1, 1, 1) -> (B, N, 1, H, W)


def masked_reference(x0: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """The reference channels of eq. 2, ``x0 * (1 - M)``: clean latents where known, else zero."""
    if x0.ndim != 5 or tuple(known.shape) != tuple(x0.shape[:2]):
        raise ValueError(
            f"reference must be (B, N, C, H, W) with known (B, N); got {tuple(x0.shape)} and {tuple(known.shape)}"
        )
    return x0 * known.to(x0.dtype)[:, :, None, None, None]


def random_known(
    batch: int,
    set_size: int,
    p: float = 0.5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Training masks (JeDi sec. 3.3): each slot is a reference with probability ``p``.

    Conditioned on at least one unknown slot per set (every set has an image to generate):
    sets drawn all-known are redrawn, which samples that conditional distribution exactly.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"reference probability must be in [0, 1), got {p}")
    known = torch.rand(batch, set_size, generator=generator, device=device) < p  # (B, N)
    redraw = known.all(dim=1)  # (B,)
    while bool(redraw.any()):
        fresh = torch.rand(batch, set_size, generator=generator, device=device) < p  # (B, N)
        known = torch.where(redraw[:, None], fresh, known)
        redraw = known.all(dim=1)
    return known
