"""Several processes of one command: accelerate's process state, with the CPU case made explicit.

``accelerate launch --num_processes N`` (or ``torchrun``) starts N copies of a command; accelerate's
:class:`~accelerate.PartialState` tells each its rank. On a machine without an accelerator, accelerate
forms the process group (gloo) only when asked for the CPU; otherwise every copy runs alone and they
all write the same files. :func:`use_cpu` asks for it whenever a launch of several processes finds no
accelerator, and :func:`process_state` refuses a launch that still ends up as one process per group.
Work that needs no group (DreamBooth runs of different subjects) takes its rank from the launch and
runs :func:`alone`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

# What launchers (torchrun / accelerate launch, MPI) tell a process about the group it belongs to.
LAUNCH_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "PMI_RANK",
    "PMI_SIZE",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MV2_COMM_WORLD_RANK",
    "MV2_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_LOCAL_RANK",
)


def launched_processes() -> int:
    """How many processes the launcher started (``WORLD_SIZE`` of torchrun / accelerate, or MPI's); 1 if none."""
    from accelerate.utils import get_int_from_env

    return get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1)


def has_accelerator() -> bool:
    """Whether torch sees a GPU-like device (CUDA, XPU, MPS, ...)."""
    probe = getattr(torch, "accelerator", None)  # torch >= 2.6
    return bool(probe.is_available()) if probe is not None else torch.cuda.is_available()


def use_cpu(requested: bool = False) -> bool:
    """``requested``, or a launch of several processes on a machine without an accelerator (gloo on the CPU)."""
    return requested or (launched_processes() > 1 and not has_accelerator())


def check_launch(num_processes: int) -> None:
    """A one-line error when the launcher started several processes but accelerate formed no group of them."""
    launched = launched_processes()
    if launched > 1 and num_processes != launched:
        raise ValueError(
            f"launched as {launched} processes but accelerate sees {num_processes}; on a machine without GPUs "
            "launch with `accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N` "
            "(`accelerate launch --cpu` starts several processes only through MPI)"
        )


def process_state(cpu: bool = False) -> Any:
    """accelerate's :class:`~accelerate.PartialState` of this launch (one process when not launched), checked."""
    from accelerate import PartialState

    state = PartialState(cpu=use_cpu(cpu))
    check_launch(state.num_processes)
    return state


def launch_rank() -> tuple[int, int, int]:
    """``(rank, processes, local rank)`` of this process in its launch; ``(0, 1, 0)`` when not launched."""
    from accelerate.utils import get_int_from_env

    rank = get_int_from_env(["RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"], 0)
    local = get_int_from_env(["LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK"], 0)
    return rank, launched_processes(), local


@contextmanager
def alone() -> Iterator[None]:
    """Run the block as a process of its own: the launch's variables are hidden from accelerate meanwhile, so an
    ``Accelerator`` made inside forms no process group (and waits for no other process). Must come before any
    ``PartialState`` of the launch; on a GPU machine, select this process's GPU first (``torch.cuda.set_device``)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        raise RuntimeError("alone(): this process already joined a process group")
    saved = {k: os.environ.pop(k) for k in LAUNCH_VARIABLES if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
