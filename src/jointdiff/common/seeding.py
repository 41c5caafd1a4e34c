"""Seeds for module initialisation, and seeds keyed by what they draw for: randomness flows through explicit
generators everywhere else."""

from __future__ import annotations

import hashlib
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


def stable_seed(*parts: int | str) -> int:
    """A 63-bit seed that is a fixed function of ``parts``: the same in every process, run and machine.

    For draws keyed by what they are about (a set of the data, a step of the run) rather than by the
    order a process meets them in, so one process with a batch of 2b and two processes with b each
    draw the same noise for the same set. BLAKE2b of the parts' ``repr`` (Python's ``hash`` is salted
    per process).
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def keyed_generator(seed: int, *purpose: int | str, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``stable_seed(seed, *purpose)``."""
    return torch.Generator(device=device).manual_seed(stable_seed(seed, *purpose))
