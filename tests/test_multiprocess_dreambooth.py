"""DreamBooth over many subjects in two CPU processes under `accelerate launch`: one subject per process at a
time, each run directory written by one process, each run the one a single process makes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from safetensors.torch import load_file

from jointdiff.cli import main
from jointdiff.testing.probe import launch, read_records
from jointdiff.training.subjects import my_subjects, read_subjects

pytestmark = [pytest.mark.multiprocess, pytest.mark.usefixtures("one_thread")]

SUBJECTS = ("cube", "ball", "cone")  # three subjects over two processes: 0 takes cube and cone, 1 takes ball


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from jointdiff.common.tiny import save_tiny_base

    root = tmp_path_factory.mktemp("mp-dreambooth")
    save_tiny_base(root / "base")
    for k, name in enumerate(SUBJECTS):
        (root / "images" / name).mkdir(parents=True)
        for i in range(2):
            pixels = np.random.default_rng(10 * k + i).integers(0, 256, (20, 20, 3), dtype=np.uint8)
            PIL.Image.fromarray(pixels).save(root / "images" / name / f"{i}.png")
    lines = ["# name | class word | images (relative to this file)"]
    lines += [f"{name} | toy | images/{name}" for name in SUBJECTS]
    (root / "subjects.txt").write_text("\n".join(lines) + "\n")
    return root


def options(root: Path) -> list[str]:
    shared = ["--base", str(root / "base"), "--steps", "3", "--checkpoints", "1,3", "--num-class-images", "2"]
    return [*shared, "--class-sampling-steps", "2", "--class-data-dir", str(root / "class-images")]


def test_many_subjects_split_over_processes_one_writer_per_run(assets):
    root = assets
    argv = ["finetune", "--subjects", str(root / "subjects.txt"), "--out", str(root / "runs"), *options(root)]
    proc = launch(argv, root / "record", processes=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_records(root / "record")
    runs = (root / "runs").resolve()
    owner: dict[str, set[int]] = {}
    for rank, recs in records.items():
        for x in recs:
            if "write" in x and Path(x["write"]).is_relative_to(runs):
                owner.setdefault(os.path.relpath(x["write"], runs).split("/")[0], set()).add(rank)
    assert owner == {"cube": {0}, "ball": {1}, "cone": {0}}  # every run directory written by one process
    for name in SUBJECTS:
        assert sorted(p.name for p in (runs / name / "checkpoints").iterdir()) == ["step-000001", "step-000003"]
    class_images = sorted((root / "class-images").iterdir())
    assert [p.name for p in class_images] == ["00000.png", "00001.png"]  # shared, written at once, whole

    # The run of one subject in one process (this one) is the run the launch made for it.
    one = root / "one-ball"
    assert (
        main(
            [
                "finetune",
                "--images",
                str(root / "images" / "ball"),
                "--class-word",
                "toy",
                "--out",
                str(one),
                *options(root),
            ]
        )
        == 0
    )
    for step in ("step-000001", "step-000003"):
        a = load_file(str(one / "checkpoints" / step / "lora.safetensors"))
        b = load_file(str(runs / "ball" / "checkpoints" / step / "lora.safetensors"))
        assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), step


def test_subject_lists_and_launches_are_checked_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "dup.txt").write_text("a | toy | x\nb | toy | y\na | dog | z\n")
    with pytest.raises(ValueError, match=r"dup.txt:3: subject 'a' also on line 1: their runs would share ROOT/a"):
        read_subjects(tmp_path / "dup.txt")
    (tmp_path / "bad.txt").write_text("../up | toy | x\n")
    with pytest.raises(ValueError, match="must be a plain directory name"):
        read_subjects(tmp_path / "bad.txt")
    (tmp_path / "short.txt").write_text("a | toy\n")
    with pytest.raises(ValueError, match=r"short.txt:1: expected NAME \| CLASS WORD \| IMAGES"):
        read_subjects(tmp_path / "short.txt")
    specs = [f"s{i} | toy | x" for i in range(5)]
    (tmp_path / "five.txt").write_text("\n".join(specs))
    five = read_subjects(tmp_path / "five.txt")
    shares = [[s.name for s in my_subjects(five, r, 2)] for r in (0, 1)]
    assert shares == [["s0", "s2", "s4"], ["s1", "s3"]]  # every subject once
    assert five[0].images == str(tmp_path / "x")  # relative to the file

    monkeypatch.setenv("WORLD_SIZE", "2")  # one subject under a launch of two: refused before any work
    rc = main(["finetune", "--base", "b", "--images", "x", "--class-word", "toy", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "give --subjects FILE" in err
