"""Short CPU training runs for tests and benchmarks, as ``--set`` overrides of ``jointdiff train``."""

from __future__ import annotations

from pathlib import Path

# What every short CPU run sets: full precision, no TensorBoard, data read in the training process.
CPU_RUN = {"train.mixed_precision": "'no'", "train.tensorboard": "false", "data.num_workers": "0"}


def cpu_run_overrides(out: str | Path, values: dict[str, str], **extra: str) -> list[str]:
    """``KEY=VALUE`` overrides (TOML values) of a short CPU run writing to ``out``: :data:`CPU_RUN`, then the caller's
    ``values``, then ``extra`` (keys with dots, passed as ``**{"train.max_steps": "4"}``); later ones win."""
    merged = {"train.output_dir": repr(str(out)), **CPU_RUN, **values, **extra}
    return [f"{k}={v}" for k, v in merged.items()]
