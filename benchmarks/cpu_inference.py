"""CPU inference options for the shipped miniature, measured (issue 31), and how far a call is from the compute floor.

One pipeline call of the demo's shape (``--sets`` sets of one reference and one target, joint guidance, ``--steps``
steps of the chosen sampler) timed in one process, each option against the fp32 baseline:

- ``channels_last``: the U-Net and VAE in channels-last memory format;
- ``bf16``: weights and activations in bfloat16 (this CPU has avx512_bf16), with the mean pixel difference to fp32;
- ``bf16 autocast``: fp32 weights, bf16 autocast on the CPU;
- ``torch.compile``: the U-Net compiled (default mode); its first call (the compile) and its steady calls;
- ``onnxruntime`` (when installed, ``pip install onnx onnxruntime``): the U-Net alone, exported with the
  coupled attention of the call's set size, against the torch U-Net on the same inputs.

The floor: the floating-point operations of the call (``torch.utils.flop_counter``) divided by the rate this CPU
reaches on a large fp32 matmul in the same process; the ratio measured / floor says how much of the time is
compute and how much everything else (Python, small kernels, memory).

    python benchmarks/cpu_inference.py --record benchmarks/cpu_inference.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jointdiff.jedi.onnx import UNetStandIn


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls after ``warmup``, and the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an ``n x n`` fp32 matmul on this CPU (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def call_flops(call: Callable[[], Any]) -> int:
    """Floating-point operations of one call (matmuls and convolutions, as torch's counter counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        call()
    return int(counter.get_total_flops())


class TimedUNet(UNetStandIn):
    """The joint U-Net's call, timed: ``seconds`` accumulates the time spent in it (the rest is the pipeline)."""

    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.unet, self.seconds = unet, 0.0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = self.unet(*args, **kwargs)
        self.seconds += time.perf_counter() - t0
        return out


def pixels(images: list[Any]) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="jointdiff pipeline directory (default: the shipped miniature)")
    p.add_argument("--sets", type=int, default=6, help="sets of one reference and one target per call (the demo's 6)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--scheduler", default=None, help="sampler (default: the model's)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip", nargs="*", default=[], help="options not to measure (e.g. compile onnx)")
    p.add_argument("--record", type=Path, default=None)
    args = p.parse_args(argv)

    from jointdiff.common.paths import shipped_model
    from jointdiff.data.toyworld.subjects import make_subject, subject_seed
    from jointdiff.evaluation.toy.benchmark import PARTS, real_subject
    from jointdiff.jedi.pipeline import JointDiffusionPipeline
    from jointdiff.jedi.schedulers import make_scheduler

    model = args.model or str(shipped_model())
    toy = real_subject(make_subject(subject_seed("eval", PARTS["report"])), images=1, resolution=64)
    prompts = [[f"a {toy.class_word} {where}"] for where in ("in the jungle", "in the snow", "on the beach")]
    sets = (prompts * args.sets)[: args.sets]
    started = datetime.datetime.now(datetime.timezone.utc)

    def load(dtype: torch.dtype = torch.float32) -> Any:
        pipe = JointDiffusionPipeline.from_pretrained(model, torch_dtype=dtype)
        if args.scheduler:
            pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def run(pipe: Any) -> Callable[[], list[Any]]:
        if not isinstance(pipe.joint_unet.unet, TimedUNet):
            pipe.joint_unet.unet = TimedUNet(pipe.joint_unet.unet)
        timer = pipe.joint_unet.unet

        def call() -> list[Any]:
            timer.seconds = 0.0
            unet_seconds.append(0.0)
            out = pipe(
                sets,
                reference_images=[toy.images[0]],
                reference_prompts=[f"a photo of a {toy.class_word}"],
                num_inference_steps=args.steps,
                generator=[torch.Generator().manual_seed(k) for k in range(len(sets))],
            ).images
            unet_seconds[-1] = timer.seconds
            return out

        return call

    rows: list[dict[str, Any]] = []
    unet_seconds: list[float] = []  # per call: the time in the U-Net (the last ``repeats`` are a row's)
    base = load()
    base_s, base_images = timed(run(base), args.repeats)
    ref_px = pixels(base_images)
    base_unet = statistics.median(unet_seconds[-args.repeats :])
    rows.append({"option": "fp32 (baseline)", "s": base_s, "speedup": 1.0, "px_diff": 0.0, "unet_s": base_unet})
    print(json.dumps(rows[-1]), flush=True)

    def add(option: str, seconds: float, images: list[Any] | None, **extra: Any) -> None:
        diff = float(np.abs(pixels(images) - ref_px).mean()) if images is not None else None
        unet = statistics.median(unet_seconds[-args.repeats :])
        rows.append(
            {"option": option, "s": seconds, "speedup": base_s / seconds, "px_diff": diff, "unet_s": unet, **extra}
        )
        print(json.dumps(rows[-1]), flush=True)

    cl = load()
    cl.unet.to(memory_format=torch.channels_last)
    cl.vae.to(memory_format=torch.channels_last)
    add("channels_last", *timed(run(cl), args.repeats))
    del cl
    bf = load(torch.bfloat16)
    add("bf16 weights", *timed(run(bf), args.repeats))
    del bf

    def autocast() -> list[Any]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return run(base)()

    add("bf16 autocast", *timed(autocast, args.repeats))
    if "compile" not in args.skip:
        comp = load()
        comp.unet = torch.compile(comp.unet)
        comp.joint_unet.unet = comp.unet
        first = _seconds(run(comp))
        steady, images = timed(run(comp), args.repeats, warmup=0)
        add("torch.compile (steady calls)", steady, images, compile_s=first - steady)
        del comp

    if "onnx" not in args.skip:
        import tempfile

        from jointdiff.jedi.onnx import available, use_onnx

        if available():
            with tempfile.TemporaryDirectory() as tmp:
                cold = _seconds(run(use_onnx(load(), tmp)))  # exports the call's graphs, opens them, runs
                ort = use_onnx(load(), tmp)  # a later process: the graphs are on disk
                warm = _seconds(run(ort))  # opens them, runs
                steady, images = timed(run(ort), args.repeats, warmup=0)
                add("onnxruntime U-Net (steady calls)", steady, images, export_s=cold - steady, open_s=warm - steady)
                del ort
        else:
            print("onnxruntime not installed: its row is skipped (pip install onnx onnxruntime)")

    flops = call_flops(run(base))
    rate = matmul_rate()
    floor_s = flops / rate
    text = [
        "| option | s per call | speedup vs fp32 | s in the U-Net | U-Net speedup | mean abs pixel diff vs fp32 (0-255) "
        "| note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        note = f"compile: {r['compile_s']:.1f} s on the first call of a process" if "compile_s" in r else ""
        if "export_s" in r:
            note = (
                f"first call: +{r['export_s']:.1f} s to export and open the graphs (once: cached on disk), "
                f"+{r['open_s']:.1f} s to open them in a later process"
            )
        diff = "-" if r["px_diff"] is None else f"{r['px_diff']:.2f}"
        unet = f"{r['unet_s']:.3f} | {base_unet / r['unet_s']:.2f}x"
        text.append(f"| {r['option']} | {r['s']:.3f} | {r['speedup']:.2f}x | {unet} | {diff} | {note} |")
    floor = [
        f"Floor: one call is {flops / 1e9:.2f} GFLOP; a 2048 x 2048 fp32 matmul runs at {rate / 1e9:.1f} GFLOP/s "
        f"here, so the compute floor is {floor_s:.3f} s against {base_s:.3f} s measured: **{base_s / floor_s:.1f}x "
        f"the floor** ({100 * floor_s / base_s:.0f}% of the time is the arithmetic at matmul speed)."
    ]
    print("\n".join([*text, "", *floor]))
    if args.record:
        head = [
            "# CPU inference options (issue 31)",
            "",
            f"One call: {args.sets} sets of 1 reference + 1 target, joint guidance, {args.steps} steps"
            f"{' of ' + args.scheduler if args.scheduler else ''}; model `{model}`; median of {args.repeats}; "
            f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"{started:%Y-%m-%d}.",
            "",
            "    " + " ".join(["python", "benchmarks/cpu_inference.py", *(argv if argv is not None else sys.argv[1:])]),
            "",
        ]
        args.record.write_text("\n".join([*head, *text, "", *floor, ""]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
