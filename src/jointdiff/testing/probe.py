"""The ``jointdiff`` command with a recorder, for tests that run it in several processes.

``python -m jointdiff.testing.probe --record DIR [--kill-at-step K] -- COMMAND ARGS... [--then COMMAND ARGS...]``
runs ``jointdiff COMMAND ARGS...`` (under ``accelerate launch`` as one process of several; each command after
``--then`` next, in the same processes: one launch's start-up for several checks) and appends to
``DIR/rank<R>.jsonl`` what this process did:

- ``{"write": PATH}`` for every file it wrote through ``torch.save``, safetensors' ``save_file``,
  ``PIL.Image.Image.save``, ``Path.write_text``, ``os.replace`` (the target) and the training shell's
  ``write_log``: which process writes which file;
- ``{"batch": K, "keys": [...], "seeds": [...]}`` for every micro-batch the trainer drew: the data each
  process trained on.

``--kill-at-step K`` SIGKILLs this process at the end of optimizer step K on rank 0 (a lost node; the
launcher then ends the others). The patches are installed before accelerate and the libraries are
imported, so the names they import (``from safetensors.torch import save_file``) are the recorded ones.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import sys
from collections.abc import Callable
from typing import Any


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


class Recorder:
    """Appends JSON lines to ``DIR/rank<R>.jsonl`` (opened per record: a killed process loses nothing)."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"rank{_rank()}.jsonl")

    def __call__(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _spy(owner: Any, name: str, path_of: Callable[..., Any], record: Recorder) -> None:
    """Wrap ``owner.name`` so each call first records ``{"write": path_of(*args, **kwargs)}``."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        target = path_of(*args, **kwargs)
        if isinstance(target, (str, os.PathLike)):
            record({"write": os.path.abspath(os.fspath(target))})
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def install(record: Recorder, kill_at_step: int = 0) -> None:
    """Record file writes and drawn batches; SIGKILL rank 0 after optimizer step ``kill_at_step`` (0: never)."""
    import PIL.Image
    import safetensors.torch
    import torch

    _spy(torch, "save", lambda obj, f, *a, **k: f, record)
    _spy(safetensors.torch, "save_file", lambda tensors, filename, *a, **k: filename, record)
    _spy(PIL.Image.Image, "save", lambda self, fp, *a, **k: fp, record)
    _spy(pathlib.Path, "write_text", lambda self, *a, **k: self, record)
    _spy(os, "replace", lambda src, dst, *a, **k: dst, record)

    from jointdiff.training import components, shell

    _spy(shell.Shell, "write_log", lambda self, name, rec: self.out / "logs" / name, record)
    next_batch = components.Batches.next

    def recorded_next(self: Any) -> dict[str, Any]:
        batch = next_batch(self)
        record({"batch": self.consumed, "keys": list(batch["keys"]), "seeds": batch["seeds"].tolist()})
        return batch

    components.Batches.next = recorded_next  # type: ignore[method-assign]
    if kill_at_step and _rank() == 0:
        from jointdiff.training.trainer import JediTask

        after_checkpoint = JediTask.after_checkpoint

        def killing(self: Any, step: int) -> None:
            after_checkpoint(self, step)
            if step == kill_at_step:  # one step past a checkpoint: that step's work is lost, as in a crash
                os.kill(os.getpid(), signal.SIGKILL)

        JediTask.after_checkpoint = killing  # type: ignore[method-assign]


def free_port() -> int:
    """A TCP port free on this machine now (for the process group's rendezvous)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(
    command: list[str], record: str | os.PathLike[str], processes: int = 2, kill_at_step: int = 0, timeout: float = 300
) -> Any:
    """Run ``jointdiff COMMAND`` (commands joined by ``--then``) in ``processes`` CPU processes under
    ``accelerate launch`` with the recorder.

    The rendezvous is on 127.0.0.1 at a free port (tests running at once do not meet on accelerate's default
    29500). Returns the ``subprocess.CompletedProcess``.
    """
    import subprocess

    src = str(pathlib.Path(__file__).resolve().parents[2])  # this checkout's package, in the children too
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no"]
    argv += ["--dynamo_backend", "no", "--num_cpu_threads_per_process", "1"]
    if processes > 1:
        argv += ["--multi_gpu", "--num_processes", str(processes), "--main_process_ip", "127.0.0.1"]
        argv += ["--main_process_port", str(free_port())]
    else:
        argv += ["--num_processes", "1"]
    argv += ["-m", "jointdiff.testing.probe", "--record", str(record), "--kill-at-step", str(kill_at_step), "--"]
    return subprocess.run(
        argv + command, capture_output=True, text=True, timeout=timeout, env=env, start_new_session=True
    )


def read_records(record: str | os.PathLike[str]) -> dict[int, list[dict[str, Any]]]:
    """The records of every rank: rank -> its records in order."""
    out: dict[int, list[dict[str, Any]]] = {}
    for path in sorted(pathlib.Path(record).glob("rank*.jsonl")):
        out[int(path.stem[4:])] = [json.loads(line) for line in path.read_text().splitlines()]
    return out


def main(argv: list[str] | None = None) -> int:
    """Install the recorder, then run the ``jointdiff`` command given after ``--``."""
    parser = argparse.ArgumentParser(prog="python -m jointdiff.testing.probe")
    parser.add_argument("--record", required=True, help="directory of the rank<R>.jsonl records")
    parser.add_argument("--kill-at-step", type=int, default=0, help="SIGKILL rank 0 after this optimizer step")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the jointdiff command and its arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    record = Recorder(args.record)
    install(record, args.kill_at_step)
    from jointdiff.cli import main as jointdiff

    commands: list[list[str]] = [[]]
    for token in command:
        if token == "--then":
            commands.append([])
        else:
            commands[-1].append(token)
    for cmd in commands:
        record({"command": cmd[0]})
        status = jointdiff(cmd)
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
