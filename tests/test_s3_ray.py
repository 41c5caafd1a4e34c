"""S3 pipeline on Ray Data (local Ray, one CPU): same sets as the local mode, resume, placement checks.

Skipped without Ray (``pip install -e '.[s3]'``). The one-pool-per-stage layout starts nine
worker processes (4.5 min measured on two busy shared cores) and runs only with ``JOINTDIFF_S3_SLOW_TESTS=1``.
"""

from __future__ import annotations

import itertools
import os

import pytest

from jointdiff.data.s3.config import config_from_dict
from jointdiff.data.s3.manifest import read_manifest
from jointdiff.data.s3.pipeline_local import run_local
from jointdiff.data.s3.pipeline_ray import check_resources, plan_pools

ray = pytest.importorskip("ray")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with one CPU (the test machine's cores are shared)."""
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def comparable(out) -> list[dict]:
    """Manifest records without the float scores, which may differ in the last digit across processes."""
    recs = list(read_manifest(out / "manifest.jsonl"))
    for r in recs:
        r.pop("clip")
    return recs


def run_both(tiny, tmp_path, ray_settings):
    from jointdiff.data.s3.pipeline_ray import run_ray

    cfg = config_from_dict({**tiny, "ray": ray_settings})
    local = run_local(cfg, tmp_path / "local", progress=False)
    report = run_ray(cfg, tmp_path / "ray", progress=False)
    assert (report.planned, report.written, report.failed) == (4, 4, 0)
    assert report.counts == local.counts and report.totals == local.totals
    assert comparable(tmp_path / "ray") == comparable(tmp_path / "local")  # the same sets, however placed
    return cfg


def test_local_ray_fused_matches_local_mode_and_resumes(tiny, tmp_path, local_ray):
    from jointdiff.data.s3.pipeline_ray import run_ray

    cfg = run_both(tiny, tmp_path, {"fuse": True, "actor_cpus": 0.5, "task_cpus": 0.5})
    tars = sorted((tmp_path / "ray" / "shards").glob("*/*.tar"))
    assert len(tars) == 4 and all(t.read_bytes() for t in tars)
    again = run_ray(cfg, tmp_path / "ray", progress=False)
    assert (again.written, again.skipped) == (0, 4)


def lose_a_worker_in_the_first_stream(monkeypatch, written: int | None) -> list[list[str]]:
    """Patch the Ray pipeline so that its first stream writes ``written`` shards (None: all of them), reports the
    first and then fails as when Ray loses an actor; later streams run normally. Returns the shard ids each stream
    was built with."""
    from jointdiff.data.s3 import pipeline_ray

    real, calls = pipeline_ray.build_dataset, []

    class DiesAfterWriting:
        def __init__(self, ds):
            self.ds = ds

        def iter_rows(self):
            rows = list(itertools.islice(self.ds.iter_rows(), written))  # on disk; only the first is reported
            yield rows[0]
            raise ray.exceptions.ActorDiedError()

    def build(config, shards, out):
        calls.append([s.shard_id for s in shards])
        ds = real(config, shards, out)
        return DiesAfterWriting(ds) if len(calls) == 1 else ds

    monkeypatch.setattr(pipeline_ray, "build_dataset", build)
    return calls


def test_a_lost_worker_reruns_only_the_unwritten_shards(tiny, tmp_path, local_ray, monkeypatch, caplog):
    """The first stream dies after two shards are written and one reported (as when Ray loses an actor): the run
    accounts the second from its counts on disk, reruns the shards not written, and ends with the single-process
    output: planned, written, counts, totals and manifest all equal."""
    calls = lose_a_worker_in_the_first_stream(monkeypatch, written=2)
    with caplog.at_level("WARNING", logger="jointdiff.data.s3.pipeline_ray"):
        run_both(tiny, tmp_path, {"fuse": True, "actor_cpus": 0.5, "task_cpus": 0.5})
    # The rerun holds the shards not on disk: two, or fewer when the dead stream's prefetch wrote more meanwhile
    # (then reported from disk, or as `exists` in the rerun: the counts above are exact either way); none (no
    # rerun) when it wrote them all, as a loaded machine's prefetch does (the next test makes that case certain).
    rerun = calls[1] if len(calls) == 2 else []
    assert len(calls[0]) == 4 and len(calls) == 1 + bool(rerun) and len(rerun) <= 2 and set(rerun) < set(calls[0])
    assert calls[0][0] not in rerun and "a Ray worker was lost (ActorDiedError" in caplog.text
    if rerun:
        assert f"rerunning the {len(rerun)} unwritten shard(s)" in caplog.text
    else:
        assert "after every shard was written" in caplog.text


def test_a_worker_lost_after_every_shard_was_written_reruns_nothing(tiny, tmp_path, local_ray, monkeypatch, caplog):
    """The stream fails after all four shards are on disk and one was reported: the other three are accounted from
    their counts on disk, no empty rerun is started, and the output equals the single-process run's."""
    calls = lose_a_worker_in_the_first_stream(monkeypatch, written=None)
    with caplog.at_level("WARNING", logger="jointdiff.data.s3.pipeline_ray"):
        run_both(tiny, tmp_path, {"fuse": True, "actor_cpus": 0.5, "task_cpus": 0.5})
    assert len(calls) == 1 and len(calls[0]) == 4 and "after every shard was written" in caplog.text


def test_a_failing_step_is_not_retried_and_retries_are_bounded(tiny, tmp_path, monkeypatch):
    """Only a lost worker is retried, at most ``ray.retries`` times; any other error ends the run at once."""
    from jointdiff.data.s3 import pipeline_ray

    calls = []

    class Fails:
        def __init__(self, error):
            self.error = error

        def iter_rows(self):
            raise self.error

    for error, retries, expected in [(ray.exceptions.ActorDiedError(), 2, 3), (RuntimeError("a bug"), 2, 1)]:
        calls.clear()
        monkeypatch.setattr(pipeline_ray, "build_dataset", lambda c, s, o, e=error: calls.append(s) or Fails(e))
        monkeypatch.setattr(ray, "is_initialized", lambda: True)
        monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
        cfg = config_from_dict({**tiny, "ray": {"fuse": True, "actor_cpus": 0.5, "task_cpus": 0.5, "retries": retries}})
        with pytest.raises(type(error)):
            pipeline_ray.run_ray(cfg, tmp_path / f"out-{expected}", progress=False)
        assert len(calls) == expected


def test_lost_worker_tells_a_lost_process_from_a_failed_step():
    from jointdiff.data.s3.pipeline_ray import lost_worker

    assert lost_worker(ray.exceptions.ActorDiedError())
    wrapped = RuntimeError("stream failed")
    wrapped.__cause__ = ray.exceptions.WorkerCrashedError()
    assert lost_worker(wrapped)
    assert lost_worker(RuntimeError("ray.exceptions.ActorDiedError: cancelled before it started running"))
    assert not lost_worker(ValueError("s3: the captioner failed to load"))
    assert not lost_worker(RuntimeError("CUDA out of memory"))


@pytest.mark.skipif(not os.environ.get("JOINTDIFF_S3_SLOW_TESTS"), reason="set JOINTDIFF_S3_SLOW_TESTS=1 (minutes)")
def test_local_ray_one_pool_per_stage(tiny, tmp_path, local_ray):
    run_both(tiny, tmp_path, {"actor_cpus": 0.05, "task_cpus": 0.1})


def test_pools_and_resource_check():
    cfg = config_from_dict({"objects": ["a"], "inpainter": {"num_gpus": 1, "concurrency": 2}})
    assert [len(p) for p in plan_pools(cfg)] == [1] * 10
    check_resources(cfg, cpus=16, gpus=1)
    with pytest.raises(ValueError, match=r"^s3: the Ray actor pools need 10 CPUs but the cluster has 4; "):
        check_resources(cfg, cpus=4, gpus=1)  # 8 pools (inpainter: 2 actors) + 1 task CPU
    with pytest.raises(ValueError, match="asks for 1 GPUs per actor but the cluster has 0"):
        check_resources(cfg, cpus=64, gpus=0)
    fused = config_from_dict({"objects": ["a"], "ray": {"fuse": True}})
    assert [len(p) for p in plan_pools(fused)] == [10]
    check_resources(fused, cpus=2, gpus=0)
