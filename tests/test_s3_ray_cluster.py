"""S3 on a Ray cluster of this machine started with `ray start`, two actor processes: the shards of the single-process
mode; and a worker killed in the middle of a shard is
restarted and its task retried, with no shard written twice. On Ray 2.60 a run on such a cluster sometimes loses an
actor even without a kill (ActorDiedError "cancelled before it started running"); ``run_ray`` reruns the shards
left unwritten (``ray.retries``), which these tests exercise.

Skipped without Ray. Each actor loads every tiny stage model (``ray.fuse``); the stylizer and the captioner are
off to keep that short, and the kill costs one more actor start.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter

import numpy as np
import PIL.Image
import pytest

from jointdiff.data.s3.config import config_from_dict
from jointdiff.data.s3.manifest import read_manifest
from jointdiff.data.s3.pipeline_local import run_local

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.multiprocess, pytest.mark.usefixtures("one_thread")]


def records(out) -> list[dict]:
    """Manifest records without the float CLIP scores (they may differ in the last digit across processes)."""
    recs = list(read_manifest(out / "manifest.jsonl"))
    for r in recs:
        r.pop("clip")
    return recs


def test_two_workers_write_the_single_process_shards(tiny, tmp_path):
    two_workers_against_one_process(tiny, tmp_path, kill=False)


def test_two_workers_write_the_single_process_shards_and_a_killed_worker_is_retried(tiny, tmp_path):
    two_workers_against_one_process(tiny, tmp_path, kill=True)


def two_workers_against_one_process(tiny, tmp_path, kill: bool) -> None:
    """S3 on a two-worker Ray cluster against the single-process mode; ``kill``: SIGKILL one worker mid-shard."""
    from jointdiff.testing.s3 import busy_actor_processes, ray_cluster, run_ray_in_a_fresh_process

    if ray.is_initialized():
        ray.shutdown()
    settings = {
        **tiny,
        "stylizer": {**tiny["stylizer"], "probability": 0.0},
        "captioner": {**tiny["captioner"], "source": ""},
        "text_to_image": {**tiny["text_to_image"], "concurrency": 2},  # two actors: two worker processes
        "ray": {"fuse": True, "actor_cpus": 0.5, "task_cpus": 0.5},
    }
    cfg = config_from_dict(settings)
    local = run_local(cfg, tmp_path / "local", progress=False)
    assert (local.planned, local.written) == (4, 4)

    killed: list[int] = []
    with ray_cluster(cpus=4) as cluster:
        assert ray.cluster_resources()["CPU"] == 4
        done = threading.Event()

        def kill_one_busy_worker():
            while kill and not done.is_set() and not killed:
                busy = busy_actor_processes(cluster.head_pid)
                if busy:
                    os.kill(busy[0], signal.SIGKILL)  # a lost worker, in the middle of a shard
                    killed.append(busy[0])
                time.sleep(0.05)

        watcher = threading.Thread(target=kill_one_busy_worker, daemon=True)
        watcher.start()
        try:
            # a fresh driver: this test process may have run Ray Data on a local Ray before (tests/test_s3_ray.py)
            report = run_ray_in_a_fresh_process(settings, tmp_path / "ray-out", cluster.address)
        finally:
            done.set()
            watcher.join(timeout=10)
    assert len(killed) == int(kill)  # with kill: a worker died with a task in flight
    assert (report.planned, report.written, report.failed) == (4, 4, 0)  # its task was retried
    out = tmp_path / "ray-out"
    shards = sorted(p.name for p in (out / "shards").iterdir() if not p.name.startswith("."))
    assert shards == sorted(p.name for p in (tmp_path / "local" / "shards").iterdir() if not p.name.startswith("."))
    recs = records(out)
    assert recs == records(tmp_path / "local")  # the single-process mode's sets, in the same order
    assert not [k for k, n in Counter(r["key"] for r in recs).items() if n > 1]  # no set twice
    assert json.loads((out / "summary.json").read_text()) == json.loads(
        (tmp_path / "local" / "summary.json").read_text()
    )
    for png in sorted((tmp_path / "local" / "shards").glob("*/paper/*.png")):
        twin = out / png.relative_to(tmp_path / "local")
        with PIL.Image.open(png) as a, PIL.Image.open(twin) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b)), png.name
