"""``jointdiff demo``: the shipped miniature JeDi personalises a never-seen toy subject (or your images) offline.

Wiring only: the demo (generation, scores, the grid) is :mod:`jointdiff.evaluation.demo`.
"""

from __future__ import annotations

import argparse

from jointdiff.cli.jedi import add_onnx_argument


def _cmd_demo(args: argparse.Namespace) -> int:
    from jointdiff.common.images import load_image
    from jointdiff.evaluation.demo import closing_lines, format_scores, run_demo

    if args.two_subjects:
        return _two_subjects(args)
    if args.region_bias is not None:
        raise ValueError("--region-bias is for --two-subjects (references of two subjects)")
    refs = [load_image(p) for p in args.ref]
    result = run_demo(
        args.out,
        model=args.model,
        references=refs or None,
        subject=args.subject,
        prompts=args.prompt or None,
        class_word=args.class_word,
        seed=args.seed,
        onnx=args.onnx,
    )
    print(format_scores(result))
    print(f"{result.grid}  ({result.seconds:.1f} s)")
    print("\n".join(closing_lines(shipped=args.model is None)))
    return 0


def _two_subjects(args: argparse.Namespace) -> int:
    from jointdiff.evaluation.demo import closing_lines, format_pair_scores, run_two_subject_demo
    from jointdiff.jedi.coupling import Coupling

    if args.ref or args.prompt or args.class_word != "toy":
        raise ValueError(
            "--two-subjects runs on two held-out toy subjects (--subject and the next); for your own images: "
            'jointdiff generate --ref A.png --ref-prompt "a dog" --ref B.png --ref-prompt "a teapot" --prompt '
            '"a dog and a teapot on the beach"'
        )
    regions = {} if args.region_bias is None else {"region_bias": Coupling(region_bias=args.region_bias).region_bias}
    result = run_two_subject_demo(
        args.out, model=args.model, subject=args.subject, seed=args.seed, onnx=args.onnx, **regions
    )
    print(format_pair_scores(result))
    print(f"{result.grid}  ({result.seconds:.1f} s)")
    print("\n".join(closing_lines(shipped=args.model is None, two_subjects=True)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``jointdiff demo``."""
    p = sub.add_parser("demo", help="the shipped miniature JeDi on a never-seen toy subject (or your images), offline")
    p.add_argument("--ref", action="append", default=[], metavar="IMG", help="your reference image (default: a toy)")
    p.add_argument(
        "--subject", type=int, default=0, help="held-out toy subject (index in the report part of the eval split)"
    )
    p.add_argument(
        "--prompt", action="append", default=[], metavar="TEXT", help="target prompt; repeat (default: 6 scenes)"
    )
    p.add_argument("--class-word", default="toy", help="class word of your --ref images in the default prompts")
    p.add_argument("--out", default="demo-out", help="output directory (grid.png and the images)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="jointdiff model directory (default: the shipped miniature)")
    add_onnx_argument(p)
    p.add_argument(
        "--two-subjects",
        action="store_true",
        help="two held-out toy subjects in one image (--subject and the next), one reference each",
    )
    p.add_argument(
        "--region-bias",
        type=float,
        default=None,
        help="--two-subjects: the region bias (A's reference owns the left column, B's the right; 0: off; "
        "default: the measured one)",
    )
    p.set_defaults(func=_cmd_demo)
