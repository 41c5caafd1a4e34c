"""The one training shell on accelerate: setup, the optimizer step, checkpoints with exact resume, logs, progress.

Every trainer of the project is its loss and its data on this shell:

| trainer | module | loss | data |
| --- | --- | --- | --- |
| JeDi | :mod:`jointdiff.training.trainer` | eq. 2 | image sets or cached latents |
| DreamBooth | :mod:`jointdiff.training.dreambooth` | epsilon MSE + prior preservation | subject and class images |
| miniature VAE | :mod:`jointdiff.training.vae` | L1 + L2 + KL | toy renders, crops |
| toy evaluators | :mod:`jointdiff.training.evaluators` | InfoNCE, BCE + Dice | the evaluator cache |

A trainer makes a :class:`Shell` from its run settings (:class:`jointdiff.training.config.TrainConfig`),
builds its models, optimizer and LR schedule, hands them to :meth:`Shell.prepare`, restores its own
state from :meth:`Shell.restore` and calls :meth:`Shell.fit` with a :class:`Task`. The shell owns the
run directory: ``checkpoints/step-XXXXXXXX/`` (:mod:`jointdiff.training.checkpoint`: atomic,
accelerate's state plus ``trainer_state_{rank}.pt`` with the step, the CPU seconds of every part of
the run and the task's own state), ``logs/metrics.jsonl`` (and TensorBoard) and the progress bar.

In several processes (``accelerate launch --num_processes N``, docs/scale.md) every process runs the loop
on its own micro-batches and accelerate averages the gradients; the main process alone writes the logs,
the progress bar and the model files of a checkpoint (each process adds its own RNG and trainer state).
A run resumes only with the number of processes that wrote its checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from jointdiff.common.processes import check_launch, use_cpu
from jointdiff.training.checkpoint import checkpoint_processes, latest_checkpoint, load_trainer_state, save_checkpoint
from jointdiff.training.config import TrainConfig

logger = logging.getLogger(__name__)


class Task:
    """A trainer's part of the loop: the loss of one micro-batch, and what exact resume needs of its data.

    A trainer subclasses it and defines :meth:`loss`; the other methods are hooks with nothing to do by default.
    """

    def loss(self) -> tuple[torch.Tensor, int]:
        """Draw the next micro-batch; its loss (scalar, with graph) and the number of images in it."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs beyond accelerate's state (data positions, generators); saved with each checkpoint."""
        return {}

    def after_step(self, step: int) -> None:
        """Right after optimizer step ``step`` (weight averages, artefacts due at this step)."""

    def metrics(self, step: int) -> dict[str, float]:
        """Extra values for the log record of ``step`` (held-out checks, data counters)."""
        return {}

    def after_checkpoint(self, step: int) -> None:
        """After the logs and checkpoint of ``step`` (monitors, sample grids)."""


@dataclass
class Fit:
    """What one :meth:`Shell.fit` did (this process's view)."""

    step: int  # optimizer steps done in total (including earlier, resumed parts)
    losses: list[float] = field(default_factory=list)  # loss per optimizer step of this call
    images_per_second: float | None = None  # all processes, after the first step of this call
    cpu_seconds: float = 0.0  # CPU time of this process over every part of the run


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class Shell:
    """Accelerator, resume point, the optimizer-step loop, checkpoints, logs and the progress bar of one run."""

    def __init__(self, run: TrainConfig, cpu: bool = False) -> None:
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        self.run, self.out = run, Path(run.output_dir)
        log_with = ["tensorboard"] if run.tensorboard and _has_tensorboard() else None
        self.accelerator = Accelerator(
            mixed_precision=run.mixed_precision,
            gradient_accumulation_steps=run.gradient_accumulation_steps,
            log_with=log_with,
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "logs")),
            cpu=use_cpu(cpu),  # several processes on a machine without GPUs: gloo on the CPU
        )
        check_launch(self.accelerator.num_processes)
        self.trackers = bool(log_with)
        self.main = self.accelerator.is_main_process
        if run.tensorboard and log_with is None and self.main:
            logger.warning(
                "tensorboard is not installed (pip install 'jointdiff[train]'): logging to logs/metrics.jsonl only"
            )
        self.resume_from = self._resume_from()
        self.step, self.cpu_before, self._cpu0 = 0, 0.0, time.process_time()

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def cpu_seconds(self) -> float:
        """CPU seconds of this process (all its threads) over every part of the run."""
        return self.cpu_before + time.process_time() - self._cpu0

    def _resume_from(self) -> Path | None:
        """The checkpoint to resume from, per ``run.resume``."""
        mode = self.run.resume
        if mode == "latest":
            return latest_checkpoint(self.out)
        if mode == "never":
            if latest_checkpoint(self.out) is not None:
                raise ValueError(
                    f"train.resume: 'never' but {self.out} already holds checkpoints (use another output_dir)"
                )
            return None
        if not Path(mode).is_dir():
            raise ValueError(f"train.resume: no such checkpoint directory: {mode}")
        return Path(mode)

    def prepare(self, *objects: Any) -> tuple[Any, ...]:
        """accelerate's ``prepare`` (device placement, DDP, mixed precision): models, then optimizer and LR schedule."""
        return tuple(self.accelerator.prepare(*objects)) if len(objects) > 1 else (self.accelerator.prepare(*objects),)

    def register(self, obj: Any) -> None:
        """Save and restore ``obj`` (``state_dict`` / ``load_state_dict``) with every checkpoint, in call order."""
        self.accelerator.register_for_checkpointing(obj)

    def restore(self) -> dict[str, Any] | None:
        """Load the checkpoint to resume from: accelerate's state (models, optimizer, LR, registered objects,
        RNGs), then this process's trainer state, which is returned (None on a fresh run)."""
        if self.resume_from is None:
            if self.main:
                self.out.mkdir(parents=True, exist_ok=True)
            return None
        saved, now = checkpoint_processes(self.resume_from), self.accelerator.num_processes
        if saved != now:
            raise ValueError(
                f"{self.resume_from} was written by {saved} process{'es' if saved > 1 else ''} and this run has {now}: "
                f"resume it with {saved} (accelerate launch --num_processes {saved}), as exact resume needs the same "
                "number, or start a new output_dir from its weights (jointdiff miniature export --run RUN --out DIR)"
            )
        self.accelerator.load_state(str(self.resume_from))
        state = load_trainer_state(self.resume_from, self.accelerator.process_index)
        self.step = int(state["step"])
        self.cpu_before = float(state.get("cpu_seconds", 0.0))  # CPU time of the earlier parts of the run
        if self.main:
            tqdm.write(f"resumed from {self.resume_from} at step {self.step}")
        return state

    def start(self, step: int, cpu_seconds: float = 0.0) -> None:
        """Continue at ``step`` from a state restored another way (an older run directory's own format)."""
        self.step, self.cpu_before = step, cpu_seconds

    def init_trackers(self, hparams: dict[str, Any]) -> None:
        """Start TensorBoard with the run's hyper-parameters (when it is on)."""
        if self.trackers:
            self.accelerator.init_trackers("jointdiff", config=hparams)

    def fit(
        self,
        task: Task,
        models: list[torch.nn.Module],
        optimizer: Any,
        lr_scheduler: Any = None,
        max_grad_norm: float = 0.0,
        checkpoint_steps: Collection[int] = (),
        desc: str = "train",
        on_step: Callable[[int, float], None] | None = None,
    ) -> Fit:
        """Optimizer steps until ``run.stop_at``: G micro-batches each (``task.loss``), clipping, the step, then
        weight averages (``task.after_step``), logs every ``log_every`` steps, a checkpoint every
        ``checkpoint_every`` steps (or at ``checkpoint_steps`` when given) and at the last step, and
        ``task.after_checkpoint``."""
        run, acc = self.run, self.accelerator
        params = [p for group in optimizer.param_groups for p in group["params"]]
        step, stop_at = self.step, run.stop_at
        fit = Fit(step)
        bar = tqdm(total=run.max_steps, initial=step, desc=desc, disable=not self.main, dynamic_ncols=True)
        window: list[float] = []
        images, t0, self._cpu0 = 0, None, time.process_time()
        while step < stop_at:
            step_loss = 0.0
            for _ in range(run.gradient_accumulation_steps):
                with acc.accumulate(*models):
                    loss, n = task.loss()
                    acc.backward(loss)
                    if acc.sync_gradients and max_grad_norm > 0:
                        acc.clip_grad_norm_(params, max_grad_norm)
                    optimizer.step()
                    if lr_scheduler is not None:
                        lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                step_loss += float(loss.detach()) / run.gradient_accumulation_steps
                if t0 is not None:
                    images += n
            if not acc.sync_gradients:
                raise RuntimeError("gradient accumulation out of step with the optimizer")
            step += 1
            task.after_step(step)
            if t0 is None:
                t0 = time.perf_counter()  # throughput excludes the first step (allocation, warm-up)
            fit.losses.append(step_loss)
            window.append(step_loss)
            lr = optimizer.param_groups[0]["lr"]
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
            if step % run.log_every == 0 or step == stop_at:
                self._log(step, window, lr, images, t0, task.metrics(step))
                window = []
            due = step in checkpoint_steps if checkpoint_steps else step % run.checkpoint_every == 0
            if due or step == stop_at:
                state = {"step": step, **task.state_dict(), "cpu_seconds": self.cpu_seconds()}
                path = save_checkpoint(acc, self.out, step, state, keep=run.keep_checkpoints)
                if self.main:
                    tqdm.write(f"checkpoint {path}")
            task.after_checkpoint(step)
            if on_step is not None:
                on_step(step, step_loss)
        bar.close()
        elapsed = time.perf_counter() - t0 if t0 is not None else 0.0
        if elapsed > 0 and images:
            total = acc.reduce(torch.tensor(float(images), device=acc.device), "sum")
            fit.images_per_second = float(total) / elapsed
        self.step = fit.step = step
        fit.cpu_seconds = self.cpu_seconds()
        return fit

    def _log(
        self,
        step: int,
        window: list[float],
        lr: float,
        images: int,
        t0: float | None,
        extra: dict[str, float],
    ) -> None:
        """Mean loss over the window (all processes), LR, throughput, CPU hours and the task's values."""
        acc = self.accelerator
        loss = acc.reduce(torch.tensor(sum(window) / max(len(window), 1), device=acc.device), "mean")
        hours = self.cpu_seconds() / 3600
        metrics: dict[str, float] = {"train/loss": float(loss), "train/lr": lr, "train/cpu_hours": hours}
        if t0 is not None and images:
            metrics["train/images_per_s_per_device"] = images / max(time.perf_counter() - t0, 1e-9)
        metrics.update(extra)
        acc.log(metrics, step=step)
        if self.main:
            self.write_log("metrics.jsonl", {"step": step, **metrics})

    def write_log(self, name: str, record: dict[str, Any]) -> None:
        """Append ``record`` as one JSON line to ``logs/<name>`` (main process)."""
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        with open(self.out / "logs" / name, "a") as f:
            f.write(json.dumps(record) + "\n")

    def end(self) -> None:
        """Wait for every process and close the trackers."""
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
