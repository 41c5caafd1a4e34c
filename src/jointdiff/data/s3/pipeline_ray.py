"""The S3 pipeline on Ray Data: the same steps as the local pipeline, streamed over a cluster.

One row per shard flows through one Dataset stage per step of supplementary Algorithm 1: model
steps are actor pools (each actor loads its models once; ``num_gpus`` / ``concurrency`` per
stage), CPU steps (grouping, pasting) and the atomic shard write are tasks. Ray Data streams, so
shards are written as they finish and a killed job loses at most the shards in flight. The same
code runs on a laptop (``ray.init()`` starts a local Ray) and on a cluster (``--ray ADDRESS``);
on a cluster ``--out`` must be a filesystem every node sees.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from jointdiff.data.s3.config import S3Config, config_from_dict
from jointdiff.data.s3.pipeline_local import RunReport, build_stage, pending, preflight
from jointdiff.data.s3.store import COUNTS, SHARDS, done_shards, finalize, write_shard
from jointdiff.data.s3.work import STEPS, Step, run_step

_STEPS = {s.name: s for s in STEPS}
log = logging.getLogger(__name__)


def _rows(shards: list[Any]) -> dict[str, np.ndarray]:
    return {"shard": np.array([pickle.dumps(s) for s in shards], dtype=object)}


def _shards(batch: dict[str, np.ndarray]) -> list[Any]:
    return [pickle.loads(b) for b in batch["shard"]]


def _quiet_libraries() -> None:
    """No per-component loading bars or notices from the libraries inside the workers."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for log in (dlog, tlog):
        log.set_verbosity_error()
        log.disable_progress_bar()


class _ModelStep:
    """Ray actor: loads the models of its steps once, then applies the steps to each shard it is given."""

    def __init__(self, steps: list[str], config: dict[str, Any], out: str | None = None) -> None:
        _quiet_libraries()
        self.out = out  # when set (ray.fuse), the actor also writes each finished shard
        self.steps: list[Step] = [_STEPS[n] for n in steps]
        self.config: S3Config = config_from_dict(config)
        names = dict.fromkeys(n for step in self.steps for n in step.stages)  # ordered, unique
        self.stages = {n: build_stage(n, self.config) for n in names}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards = _shards(batch)
        for step in self.steps:
            shards = [run_step(step, s, self.config, self.stages) for s in shards]
        if self.out is not None:
            return _results(shards, self.out, self.config)
        return _rows(shards)


def _cpu_step(batch: dict[str, np.ndarray], steps: list[str], config: dict[str, Any]) -> dict[str, np.ndarray]:
    """Ray task: steps without models (grouping, pasting, a switched-off stage)."""
    cfg = config_from_dict(config)
    shards = _shards(batch)
    for name in steps:
        shards = [run_step(_STEPS[name], s, cfg, {}) for s in shards]
    return _rows(shards)


def _results(shards: list[Any], out: str, config: S3Config) -> dict[str, np.ndarray]:
    """Write each finished shard atomically; its row becomes the result summary."""
    return {"result": np.array([json.dumps(write_shard(out, s, config)) for s in shards], dtype=object)}


def _write(batch: dict[str, np.ndarray], out: str, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """Ray task: the atomic shard write."""
    return _results(_shards(batch), out, config_from_dict(config))


def _disabled(step: Step, config: S3Config) -> bool:
    """A model step whose models are all switched off runs as a CPU task."""
    off = {"stylizer": config.stylizer.probability <= 0, "captioner": not config.captioner.source}
    return all(off.get(name, False) for name in step.stages)


def _resources(steps: list[Step], config: S3Config) -> tuple[float, int]:
    """(GPUs per actor, actors) of a pool running ``steps``: the largest over their models."""
    specs = [getattr(config, n) for step in steps for n in step.stages]
    return max(s.num_gpus for s in specs), max(s.concurrency for s in specs)


def plan_pools(config: S3Config) -> list[list[Step]]:
    """Consecutive steps grouped into Dataset stages: one per model step (or one for all, ``ray.fuse``).

    With ``fuse`` every step and the write run in one actor that holds all models (one worker
    process per GPU: least start-up and memory); otherwise each model step gets its own actor
    pool and each CPU step, and the write, its own task.
    """
    if config.ray.fuse:
        return [list(STEPS)]
    return [[s] for s in STEPS]


def _is_actor_pool(steps: list[Step], config: S3Config) -> bool:
    return any(s.stages and not _disabled(s, config) for s in steps)


def check_resources(config: S3Config, cpus: float, gpus: float) -> None:
    """Fail in one line when the actor pools cannot all be placed (the job would wait forever)."""
    pools = [p for p in plan_pools(config) if _is_actor_pool(p, config)]
    need_cpu = sum(_resources(p, config)[1] * config.ray.actor_cpus for p in pools) + config.ray.task_cpus
    need_gpu = max((_resources(p, config)[0] for p in pools), default=0.0)
    if need_cpu > cpus:
        raise ValueError(
            f"s3: the Ray actor pools need {need_cpu:g} CPUs but the cluster has {cpus:g}; "
            "lower ray.actor_cpus or the stages' concurrency, or set ray.fuse"
        )
    if need_gpu > gpus:
        raise ValueError(f"s3: a stage asks for {need_gpu:g} GPUs per actor but the cluster has {gpus:g}")


def _root_cause(error: BaseException) -> BaseException:
    """The user-facing error inside Ray's wrappers (a model that failed to load in an actor)."""
    seen = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ValueError) and str(e).startswith("s3"):
            return e
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__
    for line in str(error).splitlines():  # Ray may only keep the text of the remote error
        if "ValueError: s3" in line:
            return ValueError(line.split("ValueError: ", 1)[1].strip())
    return error


def build_dataset(config: S3Config, shards: list[Any], out: str | Path) -> Any:
    """The Ray Dataset of the whole pipeline over ``shards``; lazy until iterated."""
    import ray.data

    cfg = config.to_dict()
    out = str(Path(out).resolve())
    ds = ray.data.from_items([{"shard": pickle.dumps(s)} for s in shards], override_num_blocks=len(shards))
    for steps in plan_pools(config):
        names = [step.name for step in steps]
        rows = {"batch_size": 1, "batch_format": "numpy"}
        if _is_actor_pool(steps, config):
            gpus, actors = _resources(steps, config)
            ctor = {"steps": names, "config": cfg, "out": out if config.ray.fuse else None}
            ds = ds.map_batches(
                _ModelStep,
                fn_constructor_kwargs=ctor,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_gpus=gpus,
                num_cpus=config.ray.actor_cpus,
                **rows,
            )
        else:
            ds = ds.map_batches(
                _cpu_step, fn_kwargs={"steps": names, "config": cfg}, num_cpus=config.ray.task_cpus, **rows
            )
    if config.ray.fuse:
        return ds
    return ds.map_batches(
        _write, fn_kwargs={"out": out, "config": cfg}, batch_size=1, batch_format="numpy", num_cpus=config.ray.task_cpus
    )


def run_ray(
    config: S3Config,
    out: str | Path,
    address: str | None = None,
    progress: bool = True,
    init_kwargs: dict[str, Any] | None = None,
) -> RunReport:
    """Make the dataset with Ray Data (local Ray when ``address`` is None and Ray is not running).

    A lost worker (a killed process, a lost node, an actor Ray cancelled) fails the stream; the run then goes on
    over the shards not yet written, up to ``config.ray.retries`` times. That is safe because a shard is written
    atomically and once (:func:`~jointdiff.data.s3.store.write_shard`) and its content depends on its seeds only;
    shards written but not yet reported when the stream failed are accounted from their counts on disk.
    """
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ValueError("s3: the Ray pipeline needs Ray: pip install 'jointdiff[s3]'") from e
    from tqdm.auto import tqdm

    report = RunReport()
    preflight(config)
    todo = pending(config, out, report)
    if todo:
        if not ray.is_initialized():
            ray.init(address=address, **(init_kwargs or {}))
        res = ray.cluster_resources()
        check_resources(config, res.get("CPU", 0.0), res.get("GPU", 0.0))
        ray.data.DataContext.get_current().enable_progress_bars = False  # one bar over shards instead
        reported: set[str] = set()
        with tqdm(total=len(todo), desc="s3 shards (ray)", unit="shard", disable=not progress) as bar:
            for attempt in range(config.ray.retries + 1):
                try:
                    for row in build_dataset(config, todo, out).iter_rows():
                        result = json.loads(row["result"])
                        if attempt and result["status"] == "exists":  # a lost attempt's task finished it late
                            result = _written(out, result["shard"])
                        report.add(result)
                        reported.add(result["shard"])
                        bar.update(1)
                    break
                except Exception as e:
                    cause = _root_cause(e)
                    if cause is not e:
                        raise cause from None
                    if not lost_worker(e) or attempt == config.ray.retries:
                        raise
                    todo = _after_lost_worker(out, todo, report, reported, bar)
                    if not todo:  # the lost stream's prefetch wrote every shard before it failed
                        log.warning("s3: a Ray worker was lost (%s) after every shard was written", _first_line(e))
                        break
                    log.warning(
                        "s3: a Ray worker was lost (%s); rerunning the %d unwritten shard(s)", _first_line(e), len(todo)
                    )
    report.totals = finalize(out)
    return report


_LOST = ("ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError")


def lost_worker(error: BaseException) -> bool:
    """True when ``error`` (or an error it wraps) says a Ray worker, actor, node or object was lost, not that a step
    failed: a rerun over the unwritten shards can succeed. Ray Data sometimes keeps only the remote error's text."""
    import ray.exceptions

    kinds = tuple(getattr(ray.exceptions, name) for name in _LOST)
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, kinds):
            return True
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__
    return any(name in str(error) for name in _LOST)


def _after_lost_worker(out: str | Path, todo: list[Any], report: RunReport, reported: set[str], bar: Any) -> list[Any]:
    """The shards of ``todo`` still to write; those written before the failure but not reported are added to
    ``report`` (and the bar) from their counts on disk."""
    done = done_shards(out)
    for shard in todo:
        if shard.shard_id in done and shard.shard_id not in reported:
            report.add(_written(out, shard.shard_id))
            reported.add(shard.shard_id)
            bar.update(1)
    return [s for s in todo if s.shard_id not in done]


def _written(out: str | Path, shard_id: str) -> dict[str, Any]:
    """The result of a shard this run wrote whose row was lost with a worker: its counts as written on disk."""
    counts = json.loads((Path(out) / SHARDS / shard_id / COUNTS).read_text())
    return {"shard": shard_id, "status": "written", "counts": counts}


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]
