"""``jointdiff convert`` and ``jointdiff generate``: the JeDi model from a text-to-image model, and personalised
generation from reference images (sec. 3.3)."""

from __future__ import annotations

import argparse

from jointdiff.common.config import DTYPES
from jointdiff.jedi.guidance import Guidance
from jointdiff.jedi.schedulers import SCHEDULERS


def _cmd_convert(args: argparse.Namespace) -> int:
    from jointdiff.common.config import torch_dtype
    from jointdiff.jedi.convert import convert_pipeline

    pipe = convert_pipeline(
        args.base,
        args.out,
        allow_pickle=args.allow_pickle,
        overwrite=args.overwrite,
        torch_dtype=torch_dtype(args.dtype),
        revision=args.revision,
    )
    layout = pipe.joint_unet.layout
    print(
        f"converted {args.base} -> {args.out} (U-Net input: {layout.in_channels} channels = {' | '.join(layout.channels)})"
    )
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from jointdiff.common.images import load_image, save_grid, save_png, slug
    from jointdiff.common.paths import default_device, shipped_model
    from jointdiff.jedi.pipeline import JointDiffusionPipeline
    from jointdiff.jedi.schedulers import make_scheduler

    # Fail on bad input before loading the model.
    if args.steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {args.steps}")
    if args.num_sets < 1:
        raise ValueError(f"--num-sets must be >= 1, got {args.num_sets}")
    guidance = Guidance.from_args(args)  # checked here, before the model loads
    refs = [load_image(p) for p in args.ref]
    if args.ref_prompt and len(args.ref_prompt) not in (1, len(args.ref)):
        raise ValueError(
            f"got {len(args.ref_prompt)} --ref-prompt for {len(args.ref)} --ref images (give 1 or one each)"
        )
    model = args.model or shipped_model()
    if model is None:
        raise ValueError("no model given and this install ships none yet; pass --model DIR (a jointdiff model)")
    pipe = JointDiffusionPipeline.from_pretrained(str(model), use_safetensors=not args.allow_pickle)
    if args.scheduler:
        pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
    pipe.to(args.device or default_device())
    settings = {
        "model": str(model),
        "references": [str(p) for p in args.ref],
        "reference_prompts": args.ref_prompt,
        "steps": args.steps,
        **guidance.settings(),
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
        **guidance.settings(),
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
            print(
                save_png(
                    image, out / f"{s:02d}-{j:02d}-{slug(prompt)}.png", {**settings, "set": s, "target": j}, prompt
                )
            )
            row.append((image, prompt))
        rows.append(row)
    print(save_grid(rows, out / "grid.png"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``convert`` and ``generate``."""
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
    Guidance.add_arguments(p)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None, help="swap the model's scheduler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-sets", type=int, default=1, help="independent sets (images per prompt)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--device", default=None, help="where the model runs (default: cuda if available, else cpu)")
    p.add_argument("--allow-pickle", action="store_true", help="also load pickle weights; trusted sources only")
    p.set_defaults(func=_cmd_generate)
