"""S3 pipeline end to end on tiny random models (CPU, local mode): output, resume, kill, bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jointdiff.data.formats import decode_paper_set, iter_tar_samples, read_paper_set
from jointdiff.data.s3.config import config_from_dict
from jointdiff.data.s3.grouping import adjacency, connected_components
from jointdiff.data.s3.manifest import read_manifest
from jointdiff.data.s3.pipeline_local import build_stage, build_stages, run_local
from jointdiff.testing.s3 import FakeChatServer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tiny) -> dict:
    """The tiny stage models, loaded once through the real adapters."""
    return build_stages(config_from_dict(tiny))


@pytest.fixture(scope="module")
def reference(tiny, models, tmp_path_factory):
    """One complete local run: (config dict, output dir, report)."""
    out = tmp_path_factory.mktemp("s3-ref")
    report = run_local(config_from_dict(tiny), out, stages=models, progress=False)
    return tiny, out, report


def records(out: Path) -> list[dict]:
    return list(read_manifest(out / "manifest.jsonl"))


def test_end_to_end_sets_are_readable_and_match_the_manifest(reference):
    cfg, out, report = reference
    assert (report.planned, report.written, report.failed) == (4, 4, 0)
    recs = records(out)
    assert recs and len({r["key"] for r in recs}) == len(recs)
    for r in recs:
        shard = out / "shards" / r["shard"]
        s = read_paper_set(shard / "paper" / f"{r['key']}.png")
        assert 2 <= len(s) <= 4 and len(s) == len(r["images"])
        assert s.resolution == cfg["inpainter"]["size"]
        assert s.captions == [im["caption"] for im in r["images"]]
        assert r["collage_prompt"].endswith(", photos of the same") and r["object"] in r["images"][0]["scene_prompt"]
        # a set is a connected component of the thresholded CLIP graph of its instances
        a = np.array(r["clip"]["affinity"])
        assert len(connected_components(adjacency(a, cfg["clip"]["threshold"] + 1e-5))) == 1
        assert r["models"]["inpainter"] == cfg["inpainter"]["source"] and r["models"]["llm"] == "template"
    # the WebDataset shard of each shard directory holds the same sets, byte for byte
    for shard in sorted({r["shard"] for r in recs}):
        (tar,) = (out / "shards" / shard).glob("*.tar")
        for key, sample in iter_tar_samples(tar):
            assert sample["png"] == (out / "shards" / shard / "paper" / f"{key}.png").read_bytes()
            assert len(decode_paper_set(sample["png"], sample["txt"], key=key)) >= 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sets"] == len(recs) and summary["images"] == sum(len(r["images"]) for r in recs)
    assert summary["images_stylised"] == sum(im["style"] is not None for r in recs for im in r["images"])
    assert not list((out / "shards").glob(".tmp-*"))


def test_rerun_skips_finished_shards(reference, tmp_path):
    cfg, out, _ = reference
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    report = run_local(config_from_dict(cfg), copy, progress=False)
    assert (report.written, report.skipped) == (0, 4)
    assert (copy / "manifest.jsonl").read_bytes() == (out / "manifest.jsonl").read_bytes()
    changed = config_from_dict({**cfg, "clip": {**cfg["clip"], "threshold": 0.6}})
    with pytest.raises(ValueError, match="made with another config"):
        run_local(changed, copy, progress=False)


def test_killed_run_resumes_to_the_same_shards_without_duplicates(reference, models, tmp_path):
    cfg, ref_out, _ = reference
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    # another process runs the job and is SIGKILLed as soon as its first shard is written
    code = "import sys; from jointdiff.data.s3.config import load_config; from jointdiff.data.s3.pipeline_local import run_local; "
    code += "run_local(load_config(sys.argv[1]), sys.argv[2], progress=False)"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "c.json"), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    shards = out / "shards"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if shards.is_dir() and any(not p.name.startswith(".") for p in shards.iterdir()):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = {p.name for p in shards.iterdir() if not p.name.startswith(".")}
    assert 1 <= len(done_at_kill) < 4, "the kill should land mid-way"
    (shards / ".tmp-teddy-bear-00001-x").mkdir(exist_ok=True)  # a shard in flight when killed
    report = run_local(config_from_dict(cfg), out, stages=models, progress=False)
    assert report.skipped == len(done_at_kill) and report.written == 4 - len(done_at_kill)
    assert report.stale_removed >= 1 and not list(shards.glob(".tmp-*"))
    assert sorted(p.name for p in shards.iterdir()) == sorted(p.name for p in (ref_out / "shards").iterdir())
    got, want = records(out), records(ref_out)
    assert len({r["key"] for r in got}) == len(got)  # no duplicates
    strip = ("collage_prompt", "object_prompt", "key", "shard")
    assert [{k: r[k] for k in strip} for r in got] == [{k: r[k] for k in strip} for r in want]
    assert [[im["scene_prompt"] for im in r["images"]] for r in got] == [
        [im["scene_prompt"] for im in r["images"]] for r in want
    ]


class NoInstancesFor:
    """A detector that finds nothing in the collages of one object (and delegates otherwise)."""

    def __init__(self, inner, label: str) -> None:
        self.inner, self.label = inner, label

    def __call__(self, image, label):
        if label == self.label:
            return np.zeros((0, 4)), np.zeros(0)
        return self.inner(image, label)


def test_bad_inputs_are_skipped_counted_and_the_run_goes_on(tiny, models, tmp_path):
    server = FakeChatServer(slow_word="backpack in a specific scene", delay=0.6)
    try:
        llm = {"backend": "openai", "source": "tiny-chat", "url": server.url, "timeout_s": 0.1, "retries": 1}
        cfg = config_from_dict(
            {
                **tiny,
                "objects": ["teddy bear", "red backpack", "mug"],
                "collages_per_object": 1,
                "llm": {**llm, "backoff_s": 0.0},
                "stylizer": {"probability": 0.0},
                "captioner": {"source": ""},
            }
        )
        detector = NoInstancesFor(models["detector"], "teddy bear")
        stages = {**models, "detector": detector, "llm": build_stage("llm", cfg), "stylizer": None, "captioner": None}
        report = run_local(cfg, tmp_path / "out", stages=stages, progress=False)
    finally:
        server.close()
    c = report.counts
    assert (report.planned, report.written, report.failed) == (3, 3, 0)
    assert c["collages_without_instances"] == 1  # the teddy-bear collage: skipped and counted
    backpack = [json.loads(p.read_text()) for p in (tmp_path / "out" / "shards").glob("red-backpack-*/counts.json")]
    n = sum(b["instances"] - b.get("instances_ungrouped", 0) for b in backpack)
    assert n > 0 and c["llm_failures"] == c["images_skipped_llm"] == n  # every backpack scene prompt timed out
    slow = [r for r in server.requests if "backpack in a specific scene" in r["body"]["messages"][0]["content"]]
    assert len(slow) == 2 * n  # each tried twice (retries=1)
    assert c["sets_dropped_llm"] >= 1 and all(b["sets"] == 0 for b in backpack)
    recs = records(tmp_path / "out")
    assert recs and {r["object"] for r in recs} == {"mug"}  # the run went on and wrote the good sets
    assert recs[0]["models"]["llm"] == "openai:tiny-chat" and recs[0]["object_prompt"].startswith("A tiny-chat answer")
    text = "\n".join(report.lines())
    assert "collages_without_instances=1" in text and f"llm_failures={n}" in text
    assert all(im["caption"] == im["scene_prompt"] for r in recs for im in r["images"])  # no captioner: prompts


def test_a_stage_model_that_fails_to_load_is_one_line_naming_it(tiny, tmp_path):
    (tmp_path / "broken").mkdir()
    for source, reason in (
        (tmp_path / "missing" / "dir", "not a directory and not a Hub id"),
        (tmp_path / "broken", ""),
    ):
        cfg = config_from_dict({**tiny, "inpainter": {**tiny["inpainter"], "source": str(source)}})
        with pytest.raises(ValueError, match=f"^s3: could not load the inpainter model '{source}': {reason}") as e:
            run_local(cfg, tmp_path / "out", progress=False)
        assert "\n" not in str(e.value)
        assert not any((tmp_path / "out").glob("shards/*"))  # nothing written


def test_cli_errors_are_one_line(tiny, tmp_path, capsys):
    from jointdiff.cli import main

    (tmp_path / "empty.json").write_text(json.dumps({**tiny, "objects": []}))
    assert main(["s3", "make", "--config", str(tmp_path / "empty.json"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "jointdiff: error: s3: the object list is empty ('objects' holds no names)"
    bad = {**tiny, "segmenter": {"source": str(tmp_path / "nope" / "sam")}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["s3", "make", "--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "could not load the segmenter model" in err
