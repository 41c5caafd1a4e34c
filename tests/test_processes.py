"""Several processes of one command: the launch check and the keyed seeds that make draws independent of them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jointdiff.common.processes import check_launch, launched_processes, use_cpu
from jointdiff.common.seeding import keyed_generator, stable_seed


def test_a_launch_accelerate_did_not_group_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched_processes() == 2
    check_launch(2)
    with pytest.raises(ValueError) as e:
        check_launch(1)  # e.g. torchrun on a CPU machine without accelerate's CPU flag: two lone processes
    assert "launched as 2 processes but accelerate sees 1" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.delenv("WORLD_SIZE")
    assert launched_processes() == 1 and not use_cpu() and use_cpu(True)
    check_launch(1)


def test_stable_seeds_are_the_same_in_every_process():
    here = stable_seed(0, "set", 0, 1, 5)
    assert here == 5170466398989736527  # pinned: a changed hash would change the draws of runs being resumed
    code = "from jointdiff.common.seeding import stable_seed; print(stable_seed(0, 'set', 0, 1, 5))"
    there = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONHASHSEED="123"),
    )
    assert int(there.stdout) == here and 0 <= here < 2**63  # not Python's salted hash
    assert stable_seed(0, "set", 0, 1, 5) != stable_seed(0, "set", 0, 1, 6)
    a, b = keyed_generator(here, "noise"), keyed_generator(here, "noise")
    assert a.initial_seed() == b.initial_seed() != keyed_generator(here, "mask").initial_seed()
