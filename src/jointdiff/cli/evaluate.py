"""``jointdiff evaluate``: the DreamBooth benchmark protocol from the command line (JeDi sec. 4).

Under ``accelerate launch --num_processes N`` generation and scoring are split over the N processes
(:mod:`jointdiff.evaluation.run`); the results are those of one process.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jointdiff.common.config import add_arguments
from jointdiff.evaluation.options import EvalConfig, MethodOptions
from jointdiff.jedi.coupling import Coupling
from jointdiff.jedi.guidance import Guidance


def register(sub: Any) -> None:
    """Add the ``evaluate`` subcommand (heavy imports stay in the handler)."""
    p = sub.add_parser(
        "evaluate",
        help="score a method or a folder of images on a benchmark (CLIP-T, CLIP-I, MCLIP-I, DINO, MDINO)",
        description="Generate (resumable) and score images on a personalisation benchmark; "
        "writes results.json, table.md and dino_vs_clipt.png under --out. See docs/evaluation.md.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--method",
        help="method to run: jedi, jedi-noref (the same model without references), real (the real images; upper bound)",
    )
    what.add_argument("--images", type=Path, help="score images of another system: DIR/<subject>/[in<i>/]<NN>_*.png")
    what.add_argument("--compare", type=Path, nargs="+", help="combine the results.json of these runs into one report")
    p.add_argument("--out", type=Path, help="run directory (default: runs/eval/<method>-<benchmark>-<refs>ref)")
    p.add_argument("--label", help="row label in tables and plots (default: method and input count)")
    p.add_argument("--overwrite", action="store_true", help="reuse --out even if made with other generation settings")
    _protocol_options(p)
    _method_options(p)
    _scoring_options(p)
    p.set_defaults(func=_cmd_evaluate)


def _protocol_options(p: argparse.ArgumentParser) -> None:
    """The benchmark and the protocol (``EvalConfig``): inputs per generation, how they are chosen, the seed."""
    p.add_argument("--benchmark", default="dreambooth", help="benchmark name (default dreambooth)")
    p.add_argument(
        "--data",
        help="benchmark data (DreamBooth: dataset root; default $JOINTDIFF_DREAMBOOTH or ../shared/dreambooth)",
    )
    p.add_argument("--subjects", nargs="+", help="only these subjects (default: all)")
    protocol = ["refs", "inputs", "num_random", "images_per_prompt", "max_prompts", "against", "seed"]
    add_arguments(p, EvalConfig, protocol, flags={"num_random": "--num-inputs"})


def _method_options(p: argparse.ArgumentParser) -> None:
    """How a method generates (``MethodOptions``): the model, steps, the guidance settings, batch and size."""
    add_arguments(p, MethodOptions, ["model", "steps"])
    Guidance.add_arguments(p)  # jedi: the guidance settings
    add_arguments(p, MethodOptions, ["batch_size", "resolution", "reference_caption", "layout", "scheduler"])
    Coupling.add_arguments(p)  # jedi: the training-free options of the coupled attention (issue 32)


def _scoring_options(p: argparse.ArgumentParser) -> None:
    """The scorer's backbones and segmenter, the device and dtype, the report."""
    p.add_argument("--clip-backbone", default="clip", help="text-image backbone (CLIP-T, CLIP-I, MCLIP-I)")
    p.add_argument("--clip-model", help="its Hub id or local directory (default openai/clip-vit-base-patch32)")
    p.add_argument("--dino-backbone", default="dino", help="image backbone (DINO, MDINO, diversity)")
    p.add_argument("--dino-model", help="its Hub id or local directory (default facebook/dino-vits16)")
    p.add_argument(
        "--parts-backbone",
        default="none",
        help="part-aware identity backbone for the PartID column: toy-parts (toy world), none (default)",
    )
    p.add_argument("--parts-model", help="its weights (toy-parts: a file or directory; default: the shipped ones)")
    p.add_argument(
        "--segmenter", default="clipseg", help="foreground masks for MCLIP-I/MDINO: clipseg, semantic, masks, none"
    )
    p.add_argument(
        "--segmenter-model",
        help="its Hub id or directory (clipseg default CIDAS/clipseg-rd64-refined; masks: MASK_DIR)",
    )
    add_arguments(p, MethodOptions, ["device", "dtype"])
    p.add_argument("--no-paper", action="store_true", help="leave the paper's Table 2 rows out of tables and plots")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    with torch.no_grad():  # scoped: the CLI may run inside another program (tests, the app)
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    from jointdiff.common.config import from_args
    from jointdiff.common.processes import process_state
    from jointdiff.evaluation.registry import BACKBONES, BENCHMARKS, METHODS, SEGMENTERS, resolve
    from jointdiff.evaluation.report import load_results, write_report
    from jointdiff.evaluation.run import evaluate
    from jointdiff.evaluation.scoring import Scorer

    processes = process_state(cpu=args.device == "cpu")  # one process unless launched with several
    if args.compare:
        if not processes.is_main_process:
            return 0
        out = args.out or Path("runs/eval/compare")
        paths = write_report([load_results(p) for p in args.compare], out, paper=not args.no_paper)
        print("wrote " + ", ".join(map(str, paths)))
        return 0

    config = from_args(EvalConfig, args)
    benchmark = resolve(BENCHMARKS, args.benchmark, "benchmark")(args.data)
    method = options = None
    if args.method:
        options = MethodOptions.from_args(args)
        method = resolve(METHODS, args.method, "method")(options)
    clip = resolve(BACKBONES, args.clip_backbone, "backbone")(args.clip_model, args.device)
    if not callable(getattr(clip, "encode_texts", None)):
        raise ValueError(f"--clip-backbone {args.clip_backbone!r} has no text encoder (CLIP-T needs a dual encoder)")
    dino = resolve(BACKBONES, args.dino_backbone, "backbone")(args.dino_model, args.device)
    parts = None
    if args.parts_backbone != "none":
        parts = resolve(BACKBONES, args.parts_backbone, "backbone")(args.parts_model, args.device)
    segmenter = None
    if args.segmenter != "none":
        segmenter = resolve(SEGMENTERS, args.segmenter, "segmenter")(args.segmenter_model, args.device)
    out = args.out or Path("runs/eval") / f"{args.method or Path(args.images).name}-{benchmark.name}-{args.refs}ref"
    results = evaluate(
        out,
        benchmark,
        Scorer(clip, dino, segmenter, parts=parts),
        config,
        method=method,
        images_dir=args.images,
        subjects=args.subjects,
        label=args.label,
        method_settings=options.settings() if options is not None else {},
        overwrite=args.overwrite,
        paper=not args.no_paper,
        processes=processes,
    )
    if not processes.is_main_process:
        return 0
    o, g = results["overall"], results["generation"]
    scores = ", ".join(f"{k} {v:.4f}" for k, v in o.items() if v is not None)
    print(
        f"{results['label']}: {results['num_images']} images ({g['generated']} generated, {g['cached']} cached) -> {scores}"
    )
    written = [out / "results.json", out / "table.md", out / "dino_vs_clipt.png"]
    print("wrote " + ", ".join(str(p) for p in written if p.is_file()))
    return 0
