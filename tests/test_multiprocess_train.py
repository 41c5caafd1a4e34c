"""`jointdiff train` in two CPU processes (gloo) under `accelerate launch`: the same training as one process with
twice the batch, the data split over ranks, the main process the only writer, exact resume after a kill.

Two processes with batches of b see, at every step, the sets one process with batches of 2b sees (one indexed
source, loading in the training process), and every draw of a set is keyed by the set, so the two runs differ
only by floating-point summation order (see the tolerance below).
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from jointdiff.cli import main
from jointdiff.common.tiny import save_tiny_base
from jointdiff.data.synthetic import write_random_paper_sets
from jointdiff.testing.probe import launch, read_records
from jointdiff.training.checkpoint import list_checkpoints
from jointdiff.training.config import load_config
from jointdiff.training.trainer import train

pytestmark = [pytest.mark.multiprocess, pytest.mark.usefixtures("one_thread")]

SETS, STEPS, PER_PROCESS = 16, 6, 2  # an epoch is 16 / (2 processes x 2 sets) = 4 steps
# Weights of the two runs after 6 steps: measured max |difference| 1.3e-7 (one float32 ulp at the weights' scale:
# the gradient is a mean over 4 sets in one process, the all-reduced mean of two means over 2 sets in two).
# 1e-5 leaves two orders of magnitude for other machines and still sits far below what a wrong reduction does:
# one step moves weights by up to lr = 3e-3, and a lost rank's gradient or a sum instead of a mean changes that.
WEIGHT_TOLERANCE = 1e-5
LOSS_RTOL = 1e-5  # the logged loss (mean over all processes): measured relative difference <= 1.2e-7


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp-train")
    save_tiny_base(root / "base")
    write_random_paper_sets(root / "data", count=SETS, n=2, size=8, seed=0)  # sets of exactly 2 images
    (root / "empty.toml").write_text("# everything comes from --set\n")
    return root


def settings(assets, out, batch_size=PER_PROCESS, **extra) -> dict[str, str]:
    base = {
        "train.output_dir": repr(str(out)),
        "train.mixed_precision": "'no'",
        "train.tensorboard": "false",
        "train.log_every": "1",
        "train.max_steps": str(STEPS),
        "train.checkpoint_every": "3",
        "data.resolution": "8",
        "data.batch_size": str(batch_size),
        "data.set_size": "[2, 2]",
        "data.num_workers": "0",
        "data.sources": f"[{{path = {str(assets / 'data')!r}}}]",
        "model.source": repr(str(assets / "base")),
        "optim.learning_rate": "3e-3",
        "optim.warmup_steps": "2",
        "ema.decay": "0.9",
        "objective.text_dropout": "0.3",
        "objective.reference_dropout": "0.3",
        "sample.every": str(STEPS),
        "sample.prompts": "['a subject']",
        "sample.num_inference_steps": "1",
        "monitor.every": str(STEPS),
        "monitor.subjects": "1",
        "monitor.steps": "1",
    }
    return base | extra


def cli(assets, values: dict[str, str]) -> list[str]:
    argv = ["train", "--config", str(assets / "empty.toml")]
    for k, v in values.items():
        argv += ["--set", f"{k}={v}"]
    return argv


def run_two(assets, out, record, kill_at_step=0):
    proc = launch(cli(assets, settings(assets, out)), record, processes=2, kill_at_step=kill_at_step)
    return proc


@pytest.fixture(scope="module")
def two(assets, tmp_path_factory):
    """The uninterrupted run in two processes: its directory and what each process recorded."""
    root = tmp_path_factory.mktemp("two")
    proc = run_two(assets, root / "run", root / "record")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run", read_records(root / "record")


def weights(run, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step-{step:08d}" / "model.safetensors"))


def logged(run, name="metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run / "logs" / name).read_text().splitlines()]


def test_two_processes_train_as_one_with_twice_the_batch(assets, two, tmp_path):
    run2, records = two
    run1 = tmp_path / "one"
    drawn: list[tuple[int, list[str], list[int]]] = []
    from jointdiff.training import components

    original = components.Batches.next

    def recorded(self):
        batch = original(self)
        drawn.append((self.consumed, list(batch["keys"]), batch["seeds"].tolist()))
        return batch

    components.Batches.next = recorded
    try:
        values = settings(assets, run1, batch_size=2 * PER_PROCESS, **{"sample.every": "0", "monitor.every": "0"})
        result = train(load_config(None, [f"{k}={v}" for k, v in values.items()]))
    finally:
        components.Batches.next = original
    assert result.finished and result.step == STEPS

    # The same sets at every step, each with the same seed (so the same noise, masks, dropout, timestep).
    for step, keys, seeds in drawn:
        in_two = sorted(
            (k, s)
            for r in records.values()
            for x in r
            if x.get("batch") == step
            for k, s in zip(x["keys"], x["seeds"], strict=True)
        )
        assert sorted(zip(keys, seeds, strict=True)) == in_two, step

    # The same losses (logged: the mean over processes) and the same weights, to float32 rounding.
    loss1, loss2 = [m["train/loss"] for m in logged(run1)], [m["train/loss"] for m in logged(run2)]
    assert len(loss1) == len(loss2) == STEPS
    assert loss1 == pytest.approx(loss2, rel=LOSS_RTOL)
    base = load_file(str(assets / "base" / "unet" / "diffusion_pytorch_model.safetensors"))
    for step in (3, STEPS):
        a, b = weights(run1, step), weights(run2, step)
        assert a.keys() == b.keys()
        worst = max(float((a[k] - b[k]).abs().max()) for k in a)
        assert worst < WEIGHT_TOLERANCE, (step, worst)
    same = [k for k in a if k.removeprefix("unet.") in base and base[k.removeprefix("unet.")].shape == a[k].shape]
    moved = max(float((a[k] - base[k.removeprefix("unet.")]).abs().max()) for k in same)
    assert moved > 100 * WEIGHT_TOLERANCE  # training moved the weights far beyond the tolerance
    ema1 = load_file(str(run1 / "unet" / "diffusion_pytorch_model.safetensors"))
    ema2 = load_file(str(run2 / "unet" / "diffusion_pytorch_model.safetensors"))
    assert max(float((ema1[k] - ema2[k]).abs().max()) for k in ema1) < WEIGHT_TOLERANCE  # the saved EMA pipeline


def test_data_split_over_ranks_nothing_twice_nothing_skipped_per_epoch(two):
    _run, records = two
    assert sorted(records) == [0, 1]
    per_step = {r: {x["batch"]: x["keys"] for x in recs if "batch" in x} for r, recs in records.items()}
    assert all(sorted(steps) == list(range(1, STEPS + 1)) for steps in per_step.values())
    epoch = SETS // (2 * PER_PROCESS)
    for steps in (range(1, epoch + 1), range(epoch + 1, STEPS + 1)):  # epoch 0 whole, then part of epoch 1
        seen = [k for r in per_step.values() for s in steps for k in r[s]]
        assert len(seen) == len(set(seen)) == len(steps) * 2 * PER_PROCESS  # nothing twice
        ranks = [{k for s in steps for k in r[s]} for r in per_step.values()]
        assert not ranks[0] & ranks[1]  # the ranks read disjoint parts
    first = {k for r in per_step.values() for s in range(1, epoch + 1) for k in r[s]}
    assert first == {f"data/set{i:06d}" for i in range(SETS)}  # nothing skipped in the epoch


def test_main_process_alone_writes_checkpoints_logs_samples_and_monitor(two):
    run, records = two
    run = run.resolve()
    written = {r: [os.path.relpath(x["write"], run) for x in recs if "write" in x] for r, recs in records.items()}
    # Rank 1 writes only its own part of each checkpoint: its RNG state and its data position.
    own = {
        f"checkpoints/.tmp-step-{s:08d}/{f}_1.{e}"
        for s in (3, STEPS)
        for f, e in (("random_states", "pkl"), ("trainer_state", "pt"))
    }
    assert sorted(written[1]) == sorted(own)
    main_files = set(written[0])
    for step in (3, STEPS):
        tmp = f"checkpoints/.tmp-step-{step:08d}"
        assert {f"{tmp}/model.safetensors", f"{tmp}/optimizer.bin", f"{tmp}/custom_checkpoint_0.pkl"} <= main_files
        assert written[0].count(f"checkpoints/step-{step:08d}") == 1  # the atomic rename, once
    assert written[0].count(f"samples/step-{STEPS:08d}.png") == 1
    assert written[0].count("logs/monitor.jsonl") == 1 and written[0].count("train_config.json") == 1
    assert written[0].count("logs/metrics.jsonl") == STEPS
    assert [m["step"] for m in logged(run)] == list(range(1, STEPS + 1))  # one record per step, not one per process
    assert [m["step"] for m in logged(run, "monitor.jsonl")] == [STEPS]
    assert [s for s, _ in list_checkpoints(run)] == [3, STEPS]
    files = sorted(p.name for p in (run / "checkpoints" / f"step-{STEPS:08d}").iterdir())
    assert files == sorted(
        ["model.safetensors", "optimizer.bin", "scheduler.bin", "custom_checkpoint_0.pkl"]
        + [f"{f}_{r}.{e}" for r in (0, 1) for f, e in (("random_states", "pkl"), ("trainer_state", "pt"))]
    )


def test_kill_and_resume_in_two_processes_is_bitwise_and_one_process_is_refused(assets, two, tmp_path, capsys):
    straight, _records = two
    killed = tmp_path / "killed"
    proc = run_two(assets, killed, tmp_path / "record-killed", kill_at_step=4)  # rank 0 dies one step past step 3
    assert proc.returncode != 0
    assert [s for s, _ in list_checkpoints(killed)] == [3] and not (killed / "model_index.json").exists()

    # Resuming in one process is refused in one line that says what to do.
    assert main(cli(assets, settings(assets, killed))) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "was written by 2 processes and this run has 1" in err
    assert "accelerate launch --num_processes 2" in err
    assert [s for s, _ in list_checkpoints(killed)] == [3]  # nothing written by the refused attempt

    proc = run_two(assets, killed, tmp_path / "record-resumed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout + proc.stderr
    step = f"checkpoints/step-{STEPS:08d}"
    for name in (f"{step}/model.safetensors", "unet/diffusion_pytorch_model.safetensors"):
        a, b = load_file(str(killed / name)), load_file(str(straight / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    for name in ("optimizer.bin", "custom_checkpoint_0.pkl"):  # Adam moments, the EMA
        a = torch.load(killed / step / name, weights_only=False)
        b = torch.load(straight / step / name, weights_only=False)
        assert _equal(a, b), name
    assert [m["train/loss"] for m in logged(killed)][-2:] == [m["train/loss"] for m in logged(straight)][-2:]


def _equal(a, b) -> bool:
    """Nested dicts / lists of tensors and plain values, bitwise."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (
            isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b
