"""Seeds for module initialisation: randomness flows through explicit generators everywhere else."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int, devices: Sequence[int] = ()) -> Iterator[None]:
    """Run the block on torch's global generators seeded with ``seed``, then restore them.

    For what draws from the global generators and takes no ``generator`` argument: the weight
    initialisation of ``nn.Module`` constructors, ``transformers``' ``generate``. The caller's random
    state is untouched (``torch.random.fork_rng``); ``devices`` are the CUDA devices forked too.
    """
    with torch.random.fork_rng(devices=list(devices)):
        torch.manual_seed(seed)
        yield
