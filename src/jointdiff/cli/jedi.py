"""``jointdiff convert`` and ``jointdiff generate``: the JeDi model from a text-to-image model, and personalised
generation from reference images (sec. 3.3), with a JeDi model or, without training, a stock inpainting model
(``--layout``, recognised from the U-Net config; the training-free options ``--reference-bias``,
``--coupled-layers``, ``--coupled-steps``).

``generate --prompt-sets FILE`` makes one set per line of FILE (its targets separated by ``|``) into
``OUT/<line>/``, line i with seed ``--seed + i``; under ``accelerate launch --num_processes N`` the lines are
split over the N processes (accelerate's ``split_between_processes``) and the files are those of one process.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jointdiff.common.config import DTYPES
from jointdiff.jedi.coupling import Coupling, default_for
from jointdiff.jedi.guidance import Guidance
from jointdiff.jedi.layouts import LAYOUTS
from jointdiff.jedi.schedulers import DEFAULT_STEPS, SCHEDULERS, SHIPPED_SAMPLER, SHIPPED_STEPS


def add_onnx_argument(parser: argparse.ArgumentParser) -> None:
    """``--onnx`` of the commands that sample (``generate``, ``demo``); :func:`jointdiff.jedi.onnx.apply_mode` reads it."""
    parser.add_argument(
        "--onnx",
        choices=["on", "off"],
        default="off",
        help="run the U-Net through ONNX Runtime (optional extra 'onnx'; 1.2x on this project's CPU, "
        "benchmarks/cpu_inference.md; graphs cached on disk)",
    )


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


def prompt_sets(args: argparse.Namespace) -> list[list[str]]:
    """The sets to make: the ``--prompt`` targets, or one set a line of ``--prompt-sets`` (targets split on ``|``;
    blank lines and ``#`` comments skipped)."""
    if bool(args.prompt) == bool(args.prompt_sets):
        raise ValueError("give --prompt (the targets of one set) or --prompt-sets FILE (one set a line), not both")
    if args.prompt:
        return [args.prompt]
    path = Path(args.prompt_sets)
    if not path.is_file():
        raise ValueError(f"--prompt-sets: no such file: {path}")
    lines = [line.strip() for line in path.read_text().splitlines()]
    sets = [[p.strip() for p in line.split("|") if p.strip()] for line in lines if line and not line.startswith("#")]
    if not sets or not all(sets):
        raise ValueError(f"--prompt-sets {path}: needs one set a line, its target prompts separated by |")
    return sets


def _cmd_generate(args: argparse.Namespace) -> int:
    from jointdiff.common.images import load_image
    from jointdiff.common.paths import default_device, shipped_model
    from jointdiff.common.processes import process_state
    from jointdiff.jedi.cpu import shipped_cpu_dtype
    from jointdiff.jedi.onnx import apply_mode
    from jointdiff.jedi.pipeline import JointDiffusionPipeline
    from jointdiff.jedi.schedulers import make_scheduler

    # Fail on bad input before loading the model.
    sets = prompt_sets(args)
    shipped = args.model is None  # the shipped miniature: its measured sampler and steps unless given
    if args.steps is None:
        args.steps = SHIPPED_STEPS if shipped else DEFAULT_STEPS
    if args.scheduler is None and shipped:
        args.scheduler = SHIPPED_SAMPLER
    if args.steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {args.steps}")
    if args.num_sets < 1:
        raise ValueError(f"--num-sets must be >= 1, got {args.num_sets}")
    guidance = Guidance.from_args(args)  # checked here, before the model loads
    coupling = Coupling.from_args(args)
    refs = [load_image(p) for p in args.ref]
    if args.ref_prompt and len(args.ref_prompt) not in (1, len(args.ref)):
        raise ValueError(
            f"got {len(args.ref_prompt)} --ref-prompt for {len(args.ref)} --ref images (give 1 or one each)"
        )
    model = args.model or shipped_model()
    if model is None:
        raise ValueError("no model given and this install ships none yet; pass --model DIR (a jointdiff model)")
    device = args.device or default_device()
    processes = process_state(cpu=str(device) == "cpu")  # one process unless launched with several
    # the shipped miniature in its measured CPU dtype (jedi/cpu.py); ONNX Runtime serves fp32 only
    dtype = {"torch_dtype": shipped_cpu_dtype()} if shipped and str(device) == "cpu" and args.onnx == "off" else {}
    pipe = JointDiffusionPipeline.from_pretrained(
        str(model), layout=args.layout, use_safetensors=not args.allow_pickle, **dtype
    )
    if args.scheduler:
        pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
    pipe.to(device)
    onnx = apply_mode(pipe, args.onnx)  # the U-Net through ONNX Runtime, when asked (issue 31)
    if args.coupled_steps is None:  # the model's own default: a stock inpainting model couples the early steps
        args.coupled_steps = default_for(pipe.joint_unet.layout.kind).steps
        coupling = Coupling.from_args(args)
    settings = {
        "model": str(model),
        "layout": pipe.joint_unet.layout.kind,
        "references": [str(p) for p in args.ref],
        "reference_prompts": args.ref_prompt,
        "steps": args.steps,
        **guidance.settings(),
        **coupling.settings(),
        "negative_prompt": args.negative_prompt,
        "scheduler": type(pipe.scheduler).__name__,
        "onnx": onnx,
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "seed": args.seed,
        "size": [args.height, args.width],
    }
    out = Path(args.out)
    jobs = [(args.seed + i, s, out if args.prompt else out / f"{i:04d}") for i, s in enumerate(sets)]
    with processes.split_between_processes(jobs) as mine:
        for seed, prompts, folder in mine:
            _generate_set(pipe, args, refs, prompts, seed, folder, {**settings, "seed": seed})
    processes.wait_for_everyone()
    return 0


def _generate_set(
    pipe: Any, args: argparse.Namespace, refs: list[Any], prompts: list[str], seed: int, out: Path, settings: dict
) -> None:
    """One call of the pipeline: ``--num-sets`` sets of the references and ``prompts``; PNGs and ``grid.png`` in ``out``."""
    import torch

    from jointdiff.common.images import save_grid, save_png, slug

    images = pipe(
        prompts,
        reference_images=refs or None,
        reference_prompts=args.ref_prompt or None,
        num_inference_steps=args.steps,
        **Guidance.from_args(args).settings(),
        **Coupling.from_args(args).settings(),
        negative_prompt=args.negative_prompt,
        height=args.height,
        width=args.width,
        num_images_per_prompt=args.num_sets,
        generator=torch.Generator().manual_seed(seed),
    ).images
    out.mkdir(parents=True, exist_ok=True)
    k = len(prompts)
    rows = []
    for s in range(args.num_sets):
        row = [(im, f"reference {i + 1}") for i, im in enumerate(refs)]
        for j, prompt in enumerate(prompts):
            image = images[s * k + j]
            print(
                save_png(
                    image, out / f"{s:02d}-{j:02d}-{slug(prompt)}.png", {**settings, "set": s, "target": j}, prompt
                )
            )
            row.append((image, prompt))
        rows.append(row)
    print(save_grid(rows, out / "grid.png"))


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
    p.add_argument(
        "--model",
        default=None,
        help="jointdiff model, or a stock diffusers inpainting model used without training: directory or Hub id "
        "(default: the shipped miniature)",
    )
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=None,
        help="the U-Net's input layout (default: the saved one, else auto: a jointdiff model, or a 9-channel "
        "stock inpainting U-Net); jedi reads an unrecorded 9-channel U-Net in JeDi's channel order",
    )
    p.add_argument("--ref", action="append", default=[], metavar="IMG", help="reference image; repeat for several")
    p.add_argument(
        "--ref-prompt",
        action="append",
        default=[],
        metavar="TEXT",
        help="caption of the references: one for all, or one per --ref in order (two subjects: --ref dog.png "
        '--ref-prompt "a dog" --ref pot.png --ref-prompt "a teapot")',
    )
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT", help="one per target; repeat")
    p.add_argument(
        "--prompt-sets",
        metavar="FILE",
        help="many sets: one a line, its targets separated by |; line i -> OUT/<i>/ with seed --seed + i "
        "(split over processes under accelerate launch)",
    )
    p.add_argument("--out", required=True, help="output directory for PNGs and grid.png")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"denoising steps (default: {DEFAULT_STEPS}; the shipped miniature: {SHIPPED_STEPS} with "
        f"--scheduler {SHIPPED_SAMPLER}, benchmarks/samplers.md)",
    )
    Guidance.add_arguments(p)
    Coupling.add_arguments(p, by_layout=True)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None, help="swap the model's scheduler")
    add_onnx_argument(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the set (of line i: seed + i)")
    p.add_argument("--num-sets", type=int, default=1, help="independent sets (images per prompt)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--device", default=None, help="where the model runs (default: cuda if available, else cpu)")
    p.add_argument("--allow-pickle", action="store_true", help="also load pickle weights; trusted sources only")
    p.set_defaults(func=_cmd_generate)
