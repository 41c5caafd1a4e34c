"""Throughput of the CPU-only stages of the S3 pipeline, per set (JeDi sec. 3.1, Algorithm 1).

Runs the real step functions of :mod:`jointdiff.data.s3.work` and the real shard writer on synthetic
inputs at the paper's sizes (512-px canvases, 6 instances per collage, 768-d CLIP features);
the model stages are replaced by stubs and not timed. Measures: template prompts (object +
scene), grouping (affinity, threshold, components), pasting on canvases, and the atomic shard
write (paper PNG + WebDataset tar + manifest).

    python benchmarks/s3_cpu_stages.py --collages 64 --size 512 [--formats webdataset]

Wall time and process CPU time are both reported: on a shared machine the CPU column is the
one to compare (wall time includes waiting for other processes and for fsync).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections import defaultdict

import numpy as np
import PIL.Image

from jointdiff.data.s3.config import config_from_dict
from jointdiff.data.s3.llm import TemplatePromptWriter
from jointdiff.data.s3.stages import Instance
from jointdiff.data.s3.store import prepare_out, write_shard
from jointdiff.data.s3.work import (
    Collage,
    Shard,
    step_canvases,
    step_captions,
    step_embeddings,
    step_groups,
    step_object_prompts,
    step_scene_prompts,
)


def photo_like(size: int, rng: np.random.Generator) -> PIL.Image.Image:
    """A smooth colour gradient with mild noise: compresses like a photo, unlike pure noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([x, y, 1 - x * y], -1) * rng.uniform(80, 255, 3)  # (S, S, 3)
    noisy = base + rng.normal(0, 6, base.shape)
    return PIL.Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def instance(side: int, rng: np.random.Generator) -> Instance:
    """An RGBA cut-out with an elliptical mask."""
    im = photo_like(side, rng).convert("RGBA")
    y, x = np.mgrid[0:side, 0:side] / side - 0.5
    im.putalpha(PIL.Image.fromarray(((x**2 + y**2 < 0.2) * 255).astype(np.uint8)))
    return Instance(image=im, box=(0, 0, side, side), score=0.9)


class FakeClip:
    """Features of K instances forming two subjects (near-identical rows within a subject)."""

    def __init__(self, rng: np.random.Generator, dim: int = 768) -> None:
        self.rng, self.dim = rng, dim

    def __call__(self, images):
        k = len(images)
        subjects = self.rng.normal(size=(2, self.dim))
        f = subjects[np.arange(k) % 2] + 0.01 * self.rng.normal(size=(k, self.dim))  # (K, D)
        return f / np.linalg.norm(f, axis=1, keepdims=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--collages", type=int, default=64, help="collages (one per shard, as on a cluster)")
    p.add_argument("--instances", type=int, default=6, help="instances per collage")
    p.add_argument("--size", type=int, default=512, help="canvas side (the set's image size)")
    p.add_argument("--crop", type=int, default=300, help="side of each instance cut-out")
    p.add_argument("--formats", nargs="+", default=["paper", "webdataset"], help="output formats to write")
    args = p.parse_args()

    rng = np.random.default_rng(0)
    cfg = config_from_dict(
        {
            "objects": ["teddy bear"],
            "captioner": {"source": ""},
            "inpainter": {"size": args.size},
            "formats": args.formats,
        }
    )
    stages = {"llm": TemplatePromptWriter(), "clip": FakeClip(rng), "captioner": None}
    seconds: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)

    def timed(name, fn, *a):
        t, c = time.perf_counter(), time.process_time()
        result = fn(*a)
        seconds[name] += time.perf_counter() - t
        cpu[name] += time.process_time() - c
        return result

    sets = images = 0
    with tempfile.TemporaryDirectory() as out:
        prepare_out(out, cfg)
        for i in range(args.collages):
            shard = Shard(f"teddy-bear-{i:05d}", "teddy bear", [i], [Collage(i)])
            shard = timed("object prompt (template)", step_object_prompts, shard, cfg, stages)
            shard.collages[0].instances = [instance(args.crop, rng) for _ in range(args.instances)]
            shard = step_embeddings(shard, cfg, stages)  # fake features; affinity matrix timed below
            shard = timed("grouping (A > 0.95, components)", step_groups, shard, cfg, stages)
            shard = timed("scene prompts (template)", step_scene_prompts, shard, cfg, stages)
            shard = timed("paste on canvas", step_canvases, shard, cfg, stages)
            for s in shard.sets:  # stand-in for the inpainter's output (not timed)
                for m in s.members:
                    m.image = photo_like(args.size, rng)
            shard = step_captions(shard, cfg, stages)
            result = timed(f"write shard ({' + '.join(args.formats)} + manifest)", write_shard, out, shard, cfg)
            sets += result["sets"]
            images += result["images"]
    total, total_cpu = sum(seconds.values()), sum(cpu.values())
    print(f"{args.collages} collages x {args.instances} instances -> {sets} sets, {images} images of {args.size} px")
    print(
        f"python {platform.python_version()}, {platform.machine()}, numpy {np.__version__}, Pillow {PIL.__version__}\n"
    )
    print("| stage | wall ms per set | CPU ms per set |")
    print("| --- | ---: | ---: |")
    for name, sec in seconds.items():
        print(f"| {name} | {1000 * sec / sets:.2f} | {1000 * cpu[name] / sets:.2f} |")
    print(f"| **all CPU stages** | **{1000 * total / sets:.2f}** | **{1000 * total_cpu / sets:.2f}** |")
    print(f"\n{sets / total_cpu:.2f} sets/s per core (CPU time); {sets / total:.2f} sets/s wall on this machine")


if __name__ == "__main__":
    main()
