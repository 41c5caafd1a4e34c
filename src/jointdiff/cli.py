"""The ``jointdiff`` command line: thin subcommands over the library, ``main(argv)`` testable.

Errors a user can fix are printed as one line (``jointdiff: error: ...``) with exit status 2;
set ``JOINTDIFF_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import PIL.Image

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

# Subcommands that live beside the code they drive: each module has `register(sub)`, which adds
# its subparser(s) with `set_defaults(func=...)` and keeps heavy imports inside the handlers.
COMMAND_MODULES: tuple[str, ...] = (
    "jointdiff.data.cli",
    "jointdiff.demo",
    "jointdiff.evaluation.cli",
    "jointdiff.training.cli",
    "jointdiff.dreamblend_cli",
    "jointdiff.miniature_cli",
    "jointdiff.app",
    "jointdiff.s3.cli",
    "jointdiff.toyworld.cli",
)


def _cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from jointdiff.convert import convert_pipeline

    dtype = getattr(torch, DTYPES[args.dtype]) if args.dtype else None
    pipe = convert_pipeline(
        args.base,
        args.out,
        allow_pickle=args.allow_pickle,
        overwrite=args.overwrite,
        torch_dtype=dtype,
        revision=args.revision,
    )
    layout = pipe.joint_unet.layout
    print(
        f"converted {args.base} -> {args.out} (U-Net input: {layout.in_channels} channels = {' | '.join(layout.channels)})"
    )
    return 0


SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpmpp": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "pndm": "PNDMScheduler",
}


def load_image(path: str) -> PIL.Image.Image:
    """An RGB image from disk, or a one-line error naming the file."""
    import PIL.Image
    import PIL.ImageOps

    try:
        with PIL.Image.open(path) as im:
            im.load()
            return PIL.ImageOps.exif_transpose(im).convert("RGB")  # camera photos: honour EXIF rotation
    except FileNotFoundError:
        raise ValueError(f"reference image not found: {path}") from None
    except Exception as e:  # not an image, truncated, decompression bomb, ...
        raise ValueError(f"cannot read reference image {path}: {type(e).__name__}: {e}") from None


def _slug(text: str, n: int = 40) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower())[:n].strip("_") or "image"


def _cmd_generate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import diffusers
    import torch
    from PIL.PngImagePlugin import PngInfo

    from jointdiff.grid import captioned_grid
    from jointdiff.guidance import check_scales
    from jointdiff.pipeline import JointDiffusionPipeline

    # Fail on bad input before loading the model.
    if args.steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {args.steps}")
    if args.num_sets < 1:
        raise ValueError(f"--num-sets must be >= 1, got {args.num_sets}")
    check_scales(args.guidance, args.guidance_scale, args.image_guidance_scale or 0.0)
    refs = [load_image(p) for p in args.ref]
    if args.ref_prompt and len(args.ref_prompt) not in (1, len(args.ref)):
        raise ValueError(
            f"got {len(args.ref_prompt)} --ref-prompt for {len(args.ref)} --ref images (give 1 or one each)"
        )
    from jointdiff.paths import shipped_model

    model = args.model or shipped_model()
    if model is None:
        raise ValueError("no model given and this install ships none yet; pass --model DIR (a jointdiff model)")
    pipe = JointDiffusionPipeline.from_pretrained(str(model), use_safetensors=not args.allow_pickle)
    if args.scheduler:
        pipe.scheduler = getattr(diffusers, SCHEDULERS[args.scheduler]).from_config(pipe.scheduler.config)
    pipe.to(args.device)
    settings = {
        "model": str(model),
        "references": [str(p) for p in args.ref],
        "reference_prompts": args.ref_prompt,
        "steps": args.steps,
        "guidance": args.guidance,
        "guidance_scale": args.guidance_scale,
        "image_guidance_scale": args.image_guidance_scale,
        "null_reference": args.null_reference,
        "negative_prompt": args.negative_prompt,
        "scheduler": type(pipe.scheduler).__name__,
        "seed": args.seed,
        "size": [args.height, args.width],
    }
    images = pipe(
        args.prompt,
        reference_images=refs or None,
        reference_prompts=args.ref_prompt or None,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        image_guidance_scale=args.image_guidance_scale,
        guidance=args.guidance,
        null_reference=args.null_reference,
        negative_prompt=args.negative_prompt,
        height=args.height,
        width=args.width,
        num_images_per_prompt=args.num_sets,
        generator=torch.Generator().manual_seed(args.seed),
    ).images
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    k = len(args.prompt)
    rows = []
    for s in range(args.num_sets):
        row = [(im, f"reference {i + 1}") for i, im in enumerate(refs)]
        for j, prompt in enumerate(args.prompt):
            image = images[s * k + j]
            info = PngInfo()
            info.add_text("prompt", prompt)
            info.add_text("jointdiff", json.dumps({**settings, "prompt": prompt, "set": s, "target": j}))
            path = out / f"{s:02d}-{j:02d}-{_slug(prompt)}.png"
            image.save(path, pnginfo=info)
            print(path)
            row.append((image, prompt))
        rows.append(row)
    captioned_grid(rows, cell=max(128, images[0].width)).save(out / "grid.png")
    print(out / "grid.png")
    return 0


def _cmd_selftest(args: argparse.Namespace) -> int:
    from jointdiff.selftest import run_selftest

    return 0 if run_selftest(seed=args.seed) else 1


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per command."""
    parser = argparse.ArgumentParser(prog="jointdiff", description="JeDi and DreamBlend personalised generation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("convert", help="convert a diffusers SD-layout text-to-image model to a joint-image model")
    p.add_argument("--base", required=True, help="directory or Hugging Face Hub id of the base pipeline")
    p.add_argument("--out", required=True, help="output directory for the converted pipeline")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="cast weights on load (default: as stored)")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    p.add_argument("--allow-pickle", action="store_true", help="also load pickle (.bin) weights; trusted sources only")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("generate", help="personalised generation from reference images (JeDi)")
    p.add_argument("--model", default=None, help="jointdiff model directory or Hub id (default: the shipped miniature)")
    p.add_argument("--ref", action="append", default=[], metavar="IMG", help="reference image; repeat for several")
    p.add_argument("--ref-prompt", action="append", default=[], metavar="TEXT", help="caption of the references")
    p.add_argument("--prompt", action="append", required=True, metavar="TEXT", help="one per target; repeat")
    p.add_argument("--out", required=True, help="output directory for PNGs and grid.png")
    p.add_argument("--steps", type=int, default=50, help="denoising steps")
    p.add_argument("--guidance", choices=["joint", "text_first", "image_first", "text_only"], default="joint")
    p.add_argument("--guidance-scale", type=float, default=7.5, help="eq. 3 lambda; text scale of eq. 4")
    p.add_argument("--image-guidance-scale", type=float, default=None, help="reference scale of eq. 4")
    p.add_argument("--null-reference", choices=["drop", "mask"], default="drop", help="reference-free branch feed")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None, help="swap the model's scheduler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-sets", type=int, default=1, help="independent sets (images per prompt)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--allow-pickle", action="store_true", help="also load pickle weights; trusted sources only")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("selftest", help="check the install: convert a tiny random model, verify parity and coupling")
    p.add_argument("--seed", type=int, default=0, help="seed of the tiny random model")
    p.set_defaults(func=_cmd_selftest)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _quiet_libraries() -> None:
    """Keep library chatter (per-component loading bars, backend notices) out of CLI output."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from diffusers.utils import logging as dlog
    from huggingface_hub.utils import logging as hlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    hlog.set_verbosity_error()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; user errors become one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    func: Callable[[argparse.Namespace], int] = args.func
    if os.environ.get("JOINTDIFF_DEBUG"):
        return func(args)
    try:
        return func(args)
    except KeyboardInterrupt:
        print("jointdiff: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"jointdiff: error: {msg}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not a user error: still one line, with a pointer to the traceback
        print(
            f"jointdiff: internal error: {type(e).__name__}: {e} (set JOINTDIFF_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
