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


def checkpoint_processes(path: str | Path) -> int:
    """How many processes wrote a checkpoint (one ``trainer_state_{rank}.pt`` each)."""
    return len(list(Path(path).glob("trainer_state_*.pt")))


def load_trainer_state(path: str | Path, process_index: int) -> dict[str, Any]:
    """This process's trainer state of a checkpoint; ValueError if the world size changed."""
    file = Path(path, f"trainer_state_{process_index}.pt")
    if not file.is_file():
        raise ValueError(f"{path}: no trainer state for process {process_index} (was it written by fewer processes?)")
    return torch.load(file, map_location="cpu", weights_only=True)


def save_pipeline(components: dict[str, Any], out: Path) -> None:
    """Write the pipeline into ``out`` via a temporary directory; ``model_index.json`` is moved last."""
    from jointdiff.jedi.pipeline import JointDiffusionPipeline

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


def export_checkpoint(output_dir: str | Path, out: str | Path, checkpoint: str | Path | None = None) -> Path:
    """Write the pipeline of a run's checkpoint (EMA weights where the run keeps them) to ``out``.

    What the end of a run saves, for any checkpoint of a run that has not finished (a model
    that is trained for as long as there is time, and shipped from its latest checkpoint).
    """
    import json

    from safetensors.torch import load_file

    from jointdiff.common.config import from_dict
    from jointdiff.training.components import load_components
    from jointdiff.training.config import Config

    output_dir = Path(output_dir)
    path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(output_dir)
    if path is None or not (path / "model.safetensors").is_file():
        raise ValueError(f"{checkpoint or output_dir}: no checkpoint to export")
    saved = output_dir / "train_config.json"
    if not saved.is_file():
        raise ValueError(f"{output_dir}: no train_config.json (not a jointdiff train run)")
    config: Config = from_dict(Config, json.loads(saved.read_text()))
    components = load_components(config.model)
    unet, text_encoder = components["unet"], components["text_encoder"]
    weights = load_file(path / "model.safetensors")  # the JointUNet adapter: "unet." + U-Net names
    unet.load_state_dict({k.removeprefix("unet."): v for k, v in weights.items()})
    trained = [unet]
    if config.model.train_text_encoder:
        text_encoder.load_state_dict(load_file(path / "model_1.safetensors"))
        trained.append(text_encoder)
    if config.ema.enabled:  # accelerate's custom checkpoints, in registration order: unet, then text encoder
        for i, module in enumerate(trained):
            shadow = torch.load(path / f"custom_checkpoint_{i}.pkl", map_location="cpu", weights_only=False)
            params = list(module.parameters())
            if len(shadow["shadow_params"]) != len(params):
                raise ValueError(f"{path}: EMA state {i} does not match the model")
            with torch.no_grad():
                for p, s in zip(params, shadow["shadow_params"], strict=True):
                    p.copy_(s)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_pipeline(components, out)
    return out
