"""``jointdiff miniature vae|assemble``: build the miniature JeDi model from scratch (see docs/miniature.md)."""

from __future__ import annotations

import argparse
import json


def _cmd_vae(args: argparse.Namespace) -> int:
    from jointdiff.miniature import VaeTraining, train_vae

    report = train_vae(
        VaeTraining(out=args.out, steps=args.steps, batch_size=args.batch_size, images=args.images, seed=args.seed)
    )
    print(json.dumps(report))
    return 0


def _cmd_assemble(args: argparse.Namespace) -> int:
    from jointdiff.miniature import assemble

    print(assemble(args.vae, args.out, seed=args.seed))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``jointdiff miniature`` with its two steps."""
    p = sub.add_parser("miniature", help="build the miniature JeDi model from scratch (VAE, then components)")
    steps = p.add_subparsers(dest="step", required=True, metavar="STEP")
    v = steps.add_parser("vae", help="train the 64 px -> 16x16x4 AutoencoderKL on toy renders (resumable)")
    v.add_argument("--out", required=True, help="run directory; rerun the same command to resume")
    v.add_argument("--steps", type=int, default=3000)
    v.add_argument("--batch-size", type=int, default=32)
    v.add_argument("--images", type=int, default=4000, help="training renders (evaluator seed range)")
    v.add_argument("--seed", type=int, default=0)
    v.set_defaults(func=_cmd_vae)
    a = steps.add_parser("assemble", help="trained VAE + random text encoder + converted U-Net -> pipeline dir")
    a.add_argument("--vae", required=True, help="the vae/ directory written by `jointdiff miniature vae`")
    a.add_argument("--out", required=True, help="pipeline directory (model.source of configs/miniature.toml)")
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=_cmd_assemble)
