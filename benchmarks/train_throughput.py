"""Training throughput (images/s) of an SD 1.x-sized joint U-Net with the trainer's defaults (JeDi sec. 4).

Builds SD 1.4-shaped components with random weights through ``[model.init]`` (U-Net 860M
parameters, the SD VAE, a CLIP ViT-L/14-shaped text encoder with the character tokenizer),
writes synthetic photo-like sets of 4 images at 512 px in the paper format, and runs
:func:`jointdiff.training.trainer.train` with the defaults (bf16, batch of 4 sets per device,
EMA on, no gradient checkpointing, 2 loader workers) except ``data.set_size = [4, 4]``.
Images/s counts every image of every set (references included) over the steps after the
warm-up, on all processes.

    python benchmarks/train_throughput.py --steps 30 --warmup 5 --record benchmarks/train_throughput.md
    accelerate launch --multi_gpu --num_processes 8 benchmarks/train_throughput.py --steps 30   # several GPUs

Needs a CUDA GPU for meaningful numbers (``--allow-cpu`` runs a tiny smoke version on CPU).

``--miniature CONFIG`` measures instead the data path of a cached-latent run (issue 14) on the
machine at hand: the trainer on CONFIG's first source (sets of ``--set-size``, everything on:
shard reads, batching, tokenising, EMA, logging) against the bare step of the same model (the
JeDi objective's forward, backward and AdamW on one batch held in memory), in one process:

    python benchmarks/train_throughput.py --miniature configs/miniature.toml --steps 40 --warmup 5 \
        --set-size 3 --record benchmarks/train_throughput_cpu.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from jointdiff.data.formats import ImageSet, write_paper_set
from jointdiff.training.config import load_config
from jointdiff.training.trainer import train

SD14_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SD_VAE = {
    "sample_size": 512,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.18215,
}
CLIP_L_TEXT = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}


def photo_like_set(n: int, size: int, seed: int) -> ImageSet:
    """``n`` smooth gradient images with mild noise (PNG-compress like photos), one caption each."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(n):
        base = np.stack([x, y, 1 - x * y], -1) * rng.uniform(80, 255, 3)  # (S, S, 3)
        images.append(PIL.Image.fromarray((base + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)))
    return ImageSet(images, [f"a photo of subject {seed} number {j}" for j in range(n)], key=f"s{seed:05d}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps in total")
    parser.add_argument("--warmup", type=int, default=5, help="steps excluded from the timing")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--set-size", type=int, default=4)
    parser.add_argument("--sets", type=int, default=32, help="synthetic sets written to disk")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    parser.add_argument("--workdir", default=None, help="data and run directory (default: a temporary one)")
    parser.add_argument("--record", default=None, help="append a result line to this markdown file")
    parser.add_argument("--allow-cpu", action="store_true", help="smoke-run a tiny version without a GPU")
    parser.add_argument("--miniature", default=None, metavar="CONFIG", help="cached-latent data path vs bare step")
    args = parser.parse_args(argv)
    if args.miniature:
        return miniature_data_path(args)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("no CUDA GPU: throughput of an SD-sized model is only meaningful on a GPU (--allow-cpu for a smoke run)")
        return 2

    work = Path(args.workdir or tempfile.mkdtemp(prefix="jointdiff-bench-"))
    unet, vae, text = dict(SD14_UNET), dict(SD_VAE), dict(CLIP_L_TEXT)
    if not torch.cuda.is_available():  # smoke run: same code path, tiny widths
        args.resolution = 64
        unet.update(
            block_out_channels=[32, 32, 64, 64], attention_head_dim=4, norm_num_groups=8, cross_attention_dim=32
        )
        vae.update(block_out_channels=[8, 8, 16, 16], norm_num_groups=4)
        text.update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, projection_dim=32)
    data = work / "data"
    if not data.is_dir():
        for i in range(args.sets):
            write_paper_set(data, f"s{i:05d}", photo_like_set(args.set_size, args.resolution, i))

    def table(d: dict) -> str:
        return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in d.items()) + "}"

    overrides = [
        f"train.output_dir={json.dumps(str(work / 'run'))}",
        "train.resume='never'",
        f"train.max_steps={args.steps}",
        f"train.checkpoint_every={args.steps + 1}",
        "train.tensorboard=false",
        f"data.sources=[{{path = {json.dumps(str(data))}}}]",
        f"data.resolution={args.resolution}",
        f"data.set_size=[{args.set_size}, {args.set_size}]",
        "model.source=''",
        f"model.init.unet={table(unet)}",
        f"model.init.vae={table(vae)}",
        f"model.init.text_encoder={table(text)}",
        "model.init.tokenizer='char:77'",
        *args.set,
    ]
    if not torch.cuda.is_available():
        overrides.append("train.mixed_precision='no'")
    config = load_config(None, overrides)
    if Path(config.train.output_dir).exists():
        import shutil

        shutil.rmtree(config.train.output_dir)

    stamps: list[float] = []

    def on_step(step: int, loss: float) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    result = train(config, on_step=on_step)
    if not result.main_process:
        return 0
    world = int(__import__("os").environ.get("WORLD_SIZE", "1"))
    timed = stamps[args.warmup :]
    per_step = config.data.batch_size * args.set_size * world
    images_per_s = (len(timed) - 1) * per_step / (timed[-1] - timed[0])
    record = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "processes": world,
        "images_per_s": round(images_per_s, 2),
        "steps_per_s": round((len(timed) - 1) / (timed[-1] - timed[0]), 3),
        "images_per_step": per_step,
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if torch.cuda.is_available()
        else None,
        "resolution": args.resolution,
        "mixed_precision": config.train.mixed_precision,
        "torch": torch.__version__,
    }
    _report(record, args.record)
    return 0


def _report(record: dict, path: str | None) -> None:
    """Print a result with the command that made it; append it to ``path`` as a markdown list item."""
    record["command"] = " ".join(shlex.quote(a) for a in [sys.executable.rsplit("/", 1)[-1], *sys.argv])
    print(json.dumps(record, indent=2))
    if path:
        with open(path, "a") as f:
            f.write(f"- {json.dumps(record)}\n")


def miniature_data_path(args: argparse.Namespace) -> int:
    """Images/s of ``train()`` on cached latents against the bare step of the same model (see the docstring)."""
    from diffusers import DDPMScheduler

    from jointdiff.data.sources import Part
    from jointdiff.jedi.model import JointUNet
    from jointdiff.training.components import load_components, open_data_sources
    from jointdiff.training.objective import JediObjective

    work = Path(args.workdir or tempfile.mkdtemp(prefix="jointdiff-bench-"))
    n = args.set_size
    base = load_config(args.miniature)
    source = base.data.sources[0]
    overrides = [
        f"train.output_dir={json.dumps(str(work / 'run'))}",
        "train.resume='never'",
        f"train.max_steps={args.steps}",
        f"train.checkpoint_every={args.steps + 1}",
        f"train.log_every={args.steps + 1}",
        "monitor.every=0",
        "sample.every=0",
        f"data.set_size=[{n}, {n}]",
        f"data.sources=[{{path = {json.dumps(source.path)}, format = 'latents'}}]",
        *args.set,
    ]
    config = load_config(args.miniature, overrides)
    if Path(config.train.output_dir).exists():
        import shutil

        shutil.rmtree(config.train.output_dir)
    b = config.data.batch_size

    # 1. Bare: one batch in memory, the objective's forward + backward + AdamW, nothing else.
    components = load_components(config.model)
    tok, text_encoder = components["tokenizer"], components["text_encoder"]
    joint = JointUNet.with_joint_attention(components["unet"]).train()
    params = list(joint.parameters()) + (list(text_encoder.parameters()) if config.model.train_text_encoder else [])
    opt = torch.optim.AdamW(params, lr=config.optim.learning_rate)
    objective = JediObjective(**vars(config.objective))
    sched = DDPMScheduler.from_config(components["scheduler"].config)
    reader = open_data_sources(config.data)[0].source.reader(0, Part())
    sets = [reader.next_set() for _ in range(b)]
    latents = torch.stack([s.latents[:n] for s in sets])  # (B, n, C, h, w)
    fg = torch.stack([s.foreground[:n] for s in sets])
    ids = tok(
        [c[0] for s in sets for c in s.captions[:n]],
        padding="max_length",
        max_length=tok.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    null_ids = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    g = torch.Generator().manual_seed(0)
    bare: list[float] = []
    for _ in range(args.steps):
        text = text_encoder(ids)[0]
        text = text.reshape(b, n, *text.shape[1:])  # (B*n, T, D) -> (B, n, T, D)
        null = text_encoder(null_ids)[0][0]
        res = objective(joint, sched, latents, text, null, generator=g, foreground=fg)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        opt.step()
        bare.append(time.perf_counter())
    del joint, opt, components

    # 2. The trainer on the cache, everything on.
    stamps: list[float] = []
    train(config, on_step=lambda step, loss: stamps.append(time.perf_counter()))

    def rate(t: list[float]) -> float:
        timed = t[args.warmup :]
        return (len(timed) - 1) * b * n / (timed[-1] - timed[0])

    record = {
        "date": datetime.date.today().isoformat(),
        "device": f"CPU, {torch.get_num_threads()} threads ({platform.processor() or platform.machine()})",
        "bare_images_per_s": round(rate(bare), 1),
        "trainer_images_per_s": round(rate(stamps), 1),
        "ratio": round(rate(stamps) / rate(bare), 3),
        "images_per_step": b * n,
        "torch": torch.__version__,
    }
    _report(record, args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
