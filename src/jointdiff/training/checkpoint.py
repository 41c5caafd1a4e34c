"""Atomic training checkpoints: ``output_dir/checkpoints/step-XXXXXXXX`` appears only once complete.

A checkpoint holds accelerate's state (models, optimizer, LR scheduler, EMA, RNGs, grad scaler)
plus one ``trainer_state_{rank}.pt`` per process (step, data positions, the objective's
generator). It is written into a hidden temporary directory by every process and renamed
into place by the main process once all have finished, so a crash never leaves a partial
checkpoint that resume would pick up.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

CHECKPOINTS = "checkpoints"
PIPELINE_ENTRIES = ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "model_index.json")
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives."""
    return Path(output_dir, CHECKPOINTS, f"step-{step:08d}")


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as ``(step, path)``, oldest first (temporary directories are ignored)."""
    root = Path(output_dir, CHECKPOINTS)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def save_checkpoint(
    accelerator: Any, output_dir: str | Path, step: int, trainer_state: dict[str, Any], keep: int = 0
) -> Path:
    """Write the checkpoint of ``step`` atomically (all processes call this); prune to the newest ``keep``."""
    final = checkpoint_path(output_dir, step)
    tmp = final.parent / f".tmp-{final.name}"
    if accelerator.is_main_process:
        final.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a crash during an earlier save
    accelerator.wait_for_everyone()
    if not final.exists():
        accelerator.save_state(str(tmp))
        torch.save(trainer_state, tmp / f"trainer_state_{accelerator.process_index}.pt")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            os.replace(tmp, final)
    if accelerator.is_main_process and keep > 0:
        for _, old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_trainer_state(path: str | Path, process_index: int) -> dict[str, Any]:
    """This process's trainer state of a checkpoint; ValueError if the world size changed."""
    file = Path(path, f"trainer_state_{process_index}.pt")
    if not file.is_file():
        raise ValueError(f"{path}: no trainer state for process {process_index} (was it written by fewer processes?)")
    return torch.load(file, map_location="cpu", weights_only=True)


def save_pipeline(components: dict[str, Any], out: Path) -> None:
    """Write the pipeline into ``out`` via a temporary directory; ``model_index.json`` is moved last."""
    from jointdiff.pipeline import JointDiffusionPipeline

    tmp = out / ".tmp-pipeline"
    shutil.rmtree(tmp, ignore_errors=True)
    JointDiffusionPipeline(**components).save_pretrained(str(tmp), safe_serialization=True)
    for name in PIPELINE_ENTRIES:
        src, dst = tmp / name, out / name
        if not src.exists():
            continue
        if dst.is_dir():
            shutil.rmtree(dst)
        os.replace(src, dst)
    shutil.rmtree(tmp, ignore_errors=True)
