"""DreamBooth over many subjects: one run per subject, the subjects split over the processes of a launch.

``jointdiff finetune --subjects FILE --out ROOT`` reads one subject a line, ``NAME | CLASS WORD | IMAGES``,
and trains each into ``ROOT/NAME`` (:func:`jointdiff.training.dreambooth.finetune`, every other option
shared). Under ``accelerate launch --num_processes N`` (or N SLURM tasks) process r of N takes subjects
r, r + N, ... and trains them alone: the runs share nothing, so no process group forms and a process
waits for no other. Names are checked up front: two subjects never share a run directory.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jointdiff.common.processes import alone, launch_rank

if TYPE_CHECKING:
    from jointdiff.training.dreambooth import DreamBoothConfig

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SubjectSpec:
    """One subject to fine-tune on: its run directory's name, class word and image folder."""

    name: str
    class_word: str
    images: str


def read_subjects(path: str | Path) -> list[SubjectSpec]:
    """The subjects of a file, one a line ``NAME | CLASS WORD | IMAGES`` (``#`` comments and blank lines skipped;
    a relative IMAGES folder is relative to the file); a one-line error for a malformed line, a name that is not a plain directory name, or a repeated name."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--subjects: no such file: {path}")
    subjects: list[SubjectSpec] = []
    lines: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"{path}:{number}: expected NAME | CLASS WORD | IMAGES, got {line!r}")
        name, class_word, images = parts
        if not _NAME.match(name):
            raise ValueError(
                f"{path}:{number}: subject name {name!r} must be a plain directory name (letters, digits, _.-)"
            )
        if name in lines:
            raise ValueError(
                f"{path}:{number}: subject {name!r} also on line {lines[name]}: their runs would share ROOT/{name}"
            )
        lines[name] = number
        subjects.append(SubjectSpec(name, class_word, str(path.parent / images)))  # relative to the file
    if not subjects:
        raise ValueError(f"{path}: no subjects (one a line: NAME | CLASS WORD | IMAGES)")
    return subjects


def my_subjects(subjects: list[SubjectSpec], rank: int, processes: int) -> list[SubjectSpec]:
    """Process ``rank``'s share: subjects ``rank, rank + processes, ...`` (every subject in exactly one process)."""
    return subjects[rank::processes]


def finetune_subjects(
    subjects: list[SubjectSpec], configure: Callable[[SubjectSpec], DreamBoothConfig], device: str = "cpu"
) -> list[Path]:
    """Fine-tune this process's subjects one after another; their run directories.

    ``configure`` makes a subject's config (its ``out`` under the root); every subject's is made and checked
    first, in every process, so a bad option fails before any training. A finished run does no more steps.
    """
    import torch

    from jointdiff.training.dreambooth import finetune

    configs = {s.name: configure(s) for s in subjects}
    rank, processes, local = launch_rank()
    if torch.device(device).type == "cuda" and torch.device(device).index is None and processes > 1:
        torch.cuda.set_device(local)  # one GPU per process of the launch
    runs = []
    with alone():
        for s in my_subjects(subjects, rank, processes):
            runs.append(finetune(configs[s.name], device=device))
    return runs
