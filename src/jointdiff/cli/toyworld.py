"""``jointdiff toyworld ...``: make data sets, look at subjects, variety statistics, train and check the evaluators."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EVALUATOR_KINDS = ("identity", "dual", "segmenter", "parts")  # parts: the identity encoder with hard negatives
# per evaluator: steps, images per step, views per subject (identity)
DEFAULTS = {
    "identity": {"steps": 4000, "batch": 126, "views": 3},
    "dual": {"steps": 3000, "batch": 128},
    "segmenter": {"steps": 1500, "batch": 48},
}


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _cmd_make(args: argparse.Namespace) -> int:
    from jointdiff.data.toyworld.writers import write_sets

    report = write_sets(
        args.out,
        count=args.sets,
        split=args.split,
        start=args.start,
        fmt=args.format,
        resolution=args.resolution,
        set_size=args.set_size,
        style_p=args.style_p,
        workers=args.workers,
        sets_per_shard=args.sets_per_shard,
        masks_dir=args.masks,
    )
    print(json.dumps(report))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from jointdiff.data.toyworld.writers import contact_sheet

    contact_sheet(args.out, split=args.split, start=args.start, subjects=args.subjects, resolution=args.resolution)
    print(args.out)
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from jointdiff.data.toyworld.stats import variety_stats

    stats = variety_stats(split=args.split, count=args.subjects, render_resolution=args.render)
    print(json.dumps(stats, indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from jointdiff.evaluation.toy.evaluators import weights_path
    from jointdiff.training.evaluators import EvaluatorTraining, build_cache, train

    torch.set_num_threads(1)
    kinds = [k.strip() for k in args.which.split(",")]
    for k in kinds:
        if k not in EVALUATOR_KINDS:
            raise ValueError(f"unknown evaluator {k!r}; choose from: {', '.join(EVALUATOR_KINDS)}")
    run = Path(args.run_dir)
    overrides = {n: v for n, v in {"steps": args.steps, "lr": args.lr}.items() if v}
    for k in kinds:
        out = Path(args.out) / f"{k}.safetensors"
        if k == "parts":  # the toy DINO of --init (or of --out) fine-tuned with hard negatives
            from jointdiff.training.part_identity import PartsTraining, build_parts_cache, train_parts

            torch.set_num_threads(args.threads)
            cache = build_parts_cache(
                run / f"parts-cache-{args.subjects}-{args.resolution}px.npz",
                args.subjects,
                args.resolution,
                args.workers,
            )
            init = str(weights_path(args.init or args.out, args.init_kind))
            hinge = {
                k: v
                for k, v in (("impostor_weight", args.impostor_weight), ("impostor_margin", args.impostor_margin))
                if v is not None
            }
            cfg = PartsTraining(seed=args.seed, init=init, **overrides, **hinge)
            out = train_parts(cache, run, cfg, out=out)
        else:
            cache = build_cache(
                run / f"cache-{args.subjects}x6-{args.resolution}px.npz", args.subjects, args.resolution, args.workers
            )
            init = {"init": str(weights_path(args.init, k))} if args.init else {}
            cfg = EvaluatorTraining(kind=k, seed=args.seed, **{**DEFAULTS[k], **overrides, **init})
            out = train(cache, run, cfg, out=out)
        print(f"{k}: {out}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from jointdiff.evaluation.toy.quality import quality_report

    report = quality_report(args.weights, subjects=args.subjects, seed=args.seed, start=args.start)
    print(json.dumps(report, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``jointdiff toyworld`` and its subcommands."""
    top = sub.add_parser("toyworld", help="the procedural toy world: data sets, subjects, toy evaluators")
    tw = top.add_subparsers(dest="toyworld_command", required=True, metavar="SUBCOMMAND")

    p = tw.add_parser("make", help="write N same-subject image sets (JeDi training format)")
    p.add_argument("--sets", type=_positive, required=True, help="number of sets")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--format",
        choices=["paper", "webdataset"],
        default="paper",
        help="paper: {key}.png + {key}.txt; webdataset: tar shards",
    )
    p.add_argument(
        "--split", choices=["train", "evaluator", "eval"], default="train", help="subject seed range (docs/toyworld.md)"
    )
    p.add_argument("--start", type=int, default=0, help="first set index within the split")
    p.add_argument("--resolution", type=int, default=64, help="image side in pixels")
    p.add_argument("--set-size", type=int, default=None, help="images per set (default: 2-4 at random, as the paper)")
    p.add_argument("--style-p", type=float, default=0.5, help="probability of stylising an image (paper: 0.5)")
    p.add_argument("--workers", type=_positive, default=2, help="rendering processes")
    p.add_argument("--sets-per-shard", type=_positive, default=1000, help="webdataset: sets per tar shard")
    p.add_argument("--masks", default=None, metavar="DIR", help="also write stacked foreground masks to DIR/{key}.png")
    p.set_defaults(func=_cmd_make)

    p = tw.add_parser("show", help="a contact sheet: subjects x conditions")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--split", choices=["train", "evaluator", "eval"], default="eval")
    p.add_argument("--start", type=int, default=0, help="first subject index")
    p.add_argument("--subjects", type=_positive, default=8)
    p.add_argument("--resolution", type=int, default=64)
    p.set_defaults(func=_cmd_show)

    p = tw.add_parser("stats", help="variety statistics over N subjects")
    p.add_argument("--subjects", type=_positive, default=1000)
    p.add_argument("--split", choices=["train", "evaluator", "eval"], default="train")
    p.add_argument(
        "--render", type=int, default=32, help="also render each subject at this size for pixel statistics (0: off)"
    )
    p.set_defaults(func=_cmd_stats)

    p = tw.add_parser(
        "train-evaluators", help="train the toy dual encoder, identity encoder and segmenter (CPU, resumable)"
    )
    p.add_argument(
        "--which", default=",".join(EVALUATOR_KINDS), help="comma-separated subset of: " + ", ".join(EVALUATOR_KINDS)
    )
    p.add_argument(
        "--run-dir", default="runs/toyworld-evaluators", help="cache, checkpoints and logs (rerun to resume)"
    )
    p.add_argument("--out", default="src/jointdiff/weights/toyworld", help="where the fp16 safetensors go")
    p.add_argument(
        "--subjects", type=_positive, default=6000, help="training subjects (x 6 views) from the evaluator seed range"
    )
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--steps", type=int, default=None, help="override the per-evaluator step counts")
    p.add_argument("--lr", type=float, default=None, help="override the peak learning rate (default 2e-3)")
    p.add_argument("--init", default=None, metavar="DIR", help="start from these weights (a fine-tuning phase)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=_positive, default=2, help="processes rendering the cache")
    p.add_argument("--threads", type=_positive, default=2, help="torch threads of the parts training (others: 1)")
    p.add_argument("--init-kind", default="identity", help="parts: which weights of --init to start from")
    p.add_argument(
        "--palette-candidates",
        type=_positive,
        default=8,
        help="parts: the palette impostor is the most different of this many other subjects of the recipe",
    )
    p.add_argument("--impostor-weight", type=float, help="parts: weight of the impostor hinge (default 1)")
    p.add_argument("--impostor-margin", type=float, help="parts: cosine above which impostors are penalised (0.3)")
    p.set_defaults(func=_cmd_train)

    p = tw.add_parser("check-evaluators", help="measure the toy evaluators on held-out subjects")
    p.add_argument("--weights", default=None, help="directory of the evaluator weights (default: the shipped ones)")
    p.add_argument("--subjects", type=_positive, default=100, help="held-out subjects from the eval seed range")
    p.add_argument("--start", type=int, default=0, help="first subject index in the eval range")
    p.add_argument("--seed", type=int, default=0, help="seed of the renders")
    p.set_defaults(func=_cmd_check)
