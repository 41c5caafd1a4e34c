"""One process against two on this machine's CPU: training, evaluation and S3 give the same results (issue 29).

No speed-up is expected on two shared cores; the record shows the results are equal, with numbers, and what
each run cost. Every run is a subprocess, timed on the wall and by the CPU time of it and its children:

- **train**: ``jointdiff train`` of the smoke model (configs/smoke.toml's [model.init], 32 px) on 16 random
  sets of 2 images, 8 steps: one process with batches of 4 sets against two (configs/accelerate/cpu.yaml,
  gloo) with 2 each. Equal: the logged loss of every step and the weights of the last checkpoint.
- **evaluate**: ``jointdiff evaluate --method jedi`` of a tiny converted pipeline on a two-subject
  DreamBooth-layout set with tiny random CLIP, DINO and CLIPSeg (24 images): one process against two.
  Equal: every metric of results.json and the generated pixels.
- **s3**: ``jointdiff s3 make`` with the tiny stage models (4 shards): one process without Ray against a Ray
  cluster started with ``ray start`` whose pipeline has two worker processes (actors). Equal: the manifest
  (sets, prompts, boxes, seeds, captions), the CLIP scores, the pixels of every set.

    python benchmarks/multiprocess.py --record benchmarks/multiprocess.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")
SMOKE_INIT = {
    "tokenizer": "'char:32'",
    "unet": "{sample_size = 16, in_channels = 4, out_channels = 4, block_out_channels = [16, 32], layers_per_block = 1, "
    "down_block_types = ['CrossAttnDownBlock2D', 'DownBlock2D'], up_block_types = ['UpBlock2D', 'CrossAttnUpBlock2D'], "
    "cross_attention_dim = 32, attention_head_dim = 8, norm_num_groups = 8}",
    "vae": "{in_channels = 3, out_channels = 3, latent_channels = 4, block_out_channels = [8, 16], layers_per_block = 1, "
    "down_block_types = ['DownEncoderBlock2D', 'DownEncoderBlock2D'], up_block_types = ['UpDecoderBlock2D', 'UpDecoderBlock2D'], "
    "norm_num_groups = 4}",
    "text_encoder": "{hidden_size = 32, intermediate_size = 64, num_hidden_layers = 2, num_attention_heads = 2}",
}


def cli(processes: int, args: list[str]) -> list[str]:
    """The ``jointdiff`` command in one plain process, or in ``processes`` under accelerate launch (cpu.yaml)."""
    if processes == 1:
        return [sys.executable, "-m", "jointdiff.cli", *args]
    from jointdiff.testing.probe import free_port

    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "configs/accelerate/cpu.yaml"),
    ]
    launch += ["--num_processes", str(processes), "--main_process_port", str(free_port())]
    return [*launch, "--num_cpu_threads_per_process", "1", "-m", "jointdiff.cli", *args]


def timed(argv: list[str]) -> dict[str, float]:
    """Run ``argv`` to completion: wall seconds and CPU seconds (user + system, it and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)  # env now: a Ray cluster's token
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}


def train(work: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    from jointdiff.data.synthetic import write_random_paper_sets
    from jointdiff.testing.training import cpu_run_overrides

    write_random_paper_sets(work / "data", count=16, n=2, size=32, seed=0)
    (work / "empty.toml").write_text("# everything comes from --set\n")
    runs: dict[int, dict[str, Any]] = {}
    for processes, batch in ((1, 4), (2, 2)):
        out = work / f"train-{processes}"
        values = {
            "train.max_steps": "8",
            "train.checkpoint_every": "8",
            "train.log_every": "1",
            "data.sources": f"[{{path = {str(work / 'data')!r}}}]",
            "data.resolution": "32",
            "data.batch_size": str(batch),
            "data.set_size": "[2, 2]",
            "optim.learning_rate": "1e-3",
            "optim.warmup_steps": "2",
            **{f"model.init.{k}": v for k, v in SMOKE_INIT.items()},
        }
        args = ["train", "--config", str(work / "empty.toml")]
        for item in cpu_run_overrides(out, values):
            args += ["--set", item]
        runs[processes] = timed(cli(processes, args))
        logged = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
        runs[processes]["losses"] = [m["train/loss"] for m in logged]
        runs[processes]["sets_per_step"] = 4
    a, b = runs[1]["losses"], runs[2]["losses"]
    wa = load_file(str(work / "train-1" / "checkpoints" / "step-00000008" / "model.safetensors"))
    wb = load_file(str(work / "train-2" / "checkpoints" / "step-00000008" / "model.safetensors"))
    return {
        "runs": runs,
        "max_loss_rel_diff": max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True)),
        "max_weight_abs_diff": max(float((wa[k] - wb[k]).abs().max()) for k in wa),
        "max_weight_abs": max(float(wa[k].abs().max()) for k in wa),
    }


def evaluate(work: Path) -> dict[str, Any]:
    from jointdiff.common.tiny import save_tiny_base
    from jointdiff.jedi.convert import convert_pipeline
    from jointdiff.testing.evaluation import save_tiny_clip, save_tiny_clipseg, save_tiny_vit, write_fake_dreambooth

    data = write_fake_dreambooth(work / "dreambooth")
    clip, dino, seg = save_tiny_clip(work / "clip"), save_tiny_vit(work / "dino"), save_tiny_clipseg(work / "seg")
    save_tiny_base(work / "base")
    convert_pipeline(str(work / "base"), work / "jedi")
    runs: dict[int, dict[str, Any]] = {}
    results = {}
    for processes in (1, 2):
        out = work / f"eval-{processes}"
        args = ["evaluate", "--method", "jedi", "--model", str(work / "jedi"), "--steps", "4", "--max-prompts", "2"]
        args += ["--images-per-prompt", "2", "--out", str(out), "--data", str(data), "--clip-model", str(clip)]
        args += ["--dino-model", str(dino), "--segmenter", "clipseg", "--segmenter-model", str(seg), "--no-paper"]
        runs[processes] = timed(cli(processes, args))
        results[processes] = json.loads((out / "results.json").read_text())
        runs[processes]["images"] = results[processes]["num_images"]
        runs[processes]["overall"] = {k: v for k, v in results[processes]["overall"].items() if v is not None}
    one, two = runs[1]["overall"], runs[2]["overall"]
    images = sorted(p.relative_to(work / "eval-1") for p in (work / "eval-1" / "images").rglob("*.png"))
    same = sum(np.array_equal(_pixels(work / "eval-1" / p), _pixels(work / "eval-2" / p)) for p in images)
    return {
        "runs": runs,
        "max_metric_abs_diff": max(abs(one[k] - two[k]) for k in one),
        "images_identical": f"{same}/{len(images)}",
        "subjects_equal": results[1]["subjects"] == results[2]["subjects"],
    }


def s3(work: Path) -> dict[str, Any]:
    import psutil

    from jointdiff.data.s3.manifest import read_manifest
    from jointdiff.testing.s3 import ensure_tiny_models, ray_cluster

    tiny = ensure_tiny_models(work / "s3-tiny")
    config = {**tiny, "text_to_image": {**tiny["text_to_image"], "concurrency": 2}}  # two actors on Ray
    (work / "s3.json").write_text(json.dumps(config))
    runs: dict[str, dict[str, Any]] = {}
    runs["1 process (no Ray)"] = timed(
        cli(1, ["s3", "make", "--config", str(work / "s3.json"), "--out", str(work / "s3-1"), "--no-progress"])
    )
    with ray_cluster(cpus=4) as cluster:
        cluster_cpu0 = _tree_cpu(psutil, cluster.head_pid)
        args = ["s3", "make", "--config", str(work / "s3.json"), "--out", str(work / "s3-2"), "--no-progress"]
        run = timed(cli(1, [*args, "--ray", cluster.address]))
        run["cpu_s"] = round(run["cpu_s"] + _tree_cpu(psutil, cluster.head_pid) - cluster_cpu0, 1)
        runs["Ray, 2 worker processes"] = run
    a = list(read_manifest(work / "s3-1" / "manifest.jsonl"))
    b = list(read_manifest(work / "s3-2" / "manifest.jsonl"))
    clip_diff = max(abs(x["clip"][k] - y["clip"][k]) for x, y in zip(a, b, strict=True) for k in ("min", "mean"))
    strip = (
        [{k: v for k, v in r.items() if k != "clip"} for r in a],
        [{k: v for k, v in r.items() if k != "clip"} for r in b],
    )
    pngs = sorted(p.relative_to(work / "s3-1") for p in (work / "s3-1" / "shards").glob("*/paper/*.png"))
    same = sum(np.array_equal(_pixels(work / "s3-1" / p), _pixels(work / "s3-2" / p)) for p in pngs)
    for name, run in runs.items():
        run["sets"] = len(a if name.startswith("1") else b)
    return {
        "runs": runs,
        "manifests_equal_but_clip": strip[0] == strip[1],
        "max_clip_abs_diff": clip_diff,
        "sets_identical_pixels": f"{same}/{len(pngs)}",
    }


def _tree_cpu(psutil: Any, pid: int) -> float:
    """CPU seconds of process ``pid`` and its live descendants (a Ray cluster's workers)."""
    total = 0.0
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def _pixels(path: Path) -> np.ndarray:
    with PIL.Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def device() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{model}, {os.cpu_count()} cores ({platform.machine()}), load average {os.getloadavg()[0]:.1f} at start"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", type=Path, help="write the record (markdown) here")
    parser.add_argument("--only", nargs="+", choices=["train", "evaluate", "s3"], default=["train", "evaluate", "s3"])
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args()
    import accelerate
    import torch

    header = {
        "date": datetime.date.today().isoformat(),
        "device": device(),
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
        "command": "python benchmarks/multiprocess.py " + " ".join(sys.argv[1:]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        found = {}
        for name, fn in (("train", train), ("evaluate", evaluate), ("s3", s3)):
            if name in args.only:
                (work / name).mkdir(exist_ok=True)
                found[name] = fn(work / name)
                print(name, json.dumps(found[name]), flush=True)
    if args.record:
        try:
            import ray

            header["ray"] = ray.__version__
        except ImportError:
            pass
        args.record.write_text(merge(args.record, render(header, found)))
        print(f"wrote {args.record}")
    return 0


def merge(record: Path, block: str) -> str:
    """The record with its measured block replaced by ``block``; the hand-written text around it is kept."""
    if not record.is_file():
        return block
    text = record.read_text()
    start, end = text.find(MEASURED), text.find(MEASURED_END)
    if start < 0 or end < 0:
        return block
    return text[:start] + block.rstrip("\n") + text[end + len(MEASURED_END) :]


MEASURED, MEASURED_END = "<!-- measured: written by benchmarks/multiprocess.py -->", "<!-- measured: end -->"


def render(header: dict[str, Any], found: dict[str, Any]) -> str:
    """The measured numbers as markdown (the reading is written by hand below them)."""
    lines = [MEASURED, ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    for name, res in found.items():
        lines += ["", f"### {name}", "", "| run | wall s | CPU s | result |", "| --- | ---: | ---: | --- |"]
        for run, r in res["runs"].items():
            label = f"{run} process{'es' if str(run) == '2' else ''}" if isinstance(run, int) else run
            rest = {k: v for k, v in r.items() if k not in ("wall_s", "cpu_s")}
            if "losses" in rest:
                rest = {
                    "final loss": round(rest["losses"][-1], 6),
                    "sets per step (all processes)": rest["sets_per_step"],
                }
            if "overall" in rest:
                rest = {"images": rest["images"], **{k: round(v, 4) for k, v in rest["overall"].items()}}
            lines.append(f"| {label} | {r['wall_s']} | {r['cpu_s']} | {json.dumps(rest)} |")
        lines += ["", "Equal: " + ", ".join(f"{k} = {v}" for k, v in res.items() if k != "runs")]
    lines += ["", MEASURED_END, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
