"""``jointdiff miniature vae|assemble|export|probe``: build the miniature JeDi model from scratch (docs/miniature.md)."""

from __future__ import annotations

import argparse
import json

from jointdiff.miniature.config import VaeTraining


def _cmd_vae(args: argparse.Namespace) -> int:
    from jointdiff.common.config import from_args
    from jointdiff.training.vae import train_vae

    report = train_vae(from_args(VaeTraining, args))
    print(json.dumps(report))
    return 0


def _cmd_assemble(args: argparse.Namespace) -> int:
    from jointdiff.miniature.assemble import assemble

    print(assemble(args.vae, args.out, seed=args.seed))
    return 0


def _cmd_grow(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jointdiff.miniature.assemble import grow_attention

    if not (Path(args.model) / "model_index.json").is_file():
        raise ValueError(f"--model: {args.model} is not a pipeline directory (no model_index.json)")
    print(grow_attention(args.model, args.out))
    return 0


def _cmd_inpainting_base(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jointdiff.miniature.assemble import inpainting_base

    if not (Path(args.model) / "model_index.json").is_file():
        raise ValueError(f"--model: {args.model} is not a pipeline directory (no model_index.json)")
    print(inpainting_base(args.model, args.out, args.seed))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from jointdiff.miniature.assemble import half_precision_copy
    from jointdiff.training.checkpoint import export_checkpoint

    if args.fp16:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            export_checkpoint(args.run, tmp, args.checkpoint)
            half_precision_copy(tmp, args.out)
    else:
        export_checkpoint(args.run, args.out, args.checkpoint)
    print(args.out)
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from jointdiff.evaluation.toy.probe import reference_probe
    from jointdiff.jedi.pipeline import JointDiffusionPipeline

    pipe = JointDiffusionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    print(
        json.dumps(reference_probe(pipe, subjects=args.subjects, steps=args.steps, guidance_scale=args.guidance_scale))
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``jointdiff miniature`` with its steps."""
    p = sub.add_parser("miniature", help="build the miniature JeDi model from scratch (VAE, then components)")
    steps = p.add_subparsers(dest="step", required=True, metavar="STEP")
    v = steps.add_parser("vae", help="train the 64 px -> 16x16x4 AutoencoderKL on toy renders (resumable)")
    v.add_argument("--out", required=True, help="run directory; rerun the same command to resume")
    v.add_argument("--steps", type=int, default=VaeTraining.steps)
    v.add_argument("--full-res-steps", type=int, default=VaeTraining.full_res_steps, help="last steps on whole images")
    v.add_argument("--crop", type=int, default=VaeTraining.crop, help="crop size (px) of the other steps")
    v.add_argument("--batch-size", type=int, default=VaeTraining.batch_size)
    v.add_argument("--learning-rate", type=float, default=VaeTraining.learning_rate)
    v.add_argument("--images", type=int, default=VaeTraining.images, help="training renders (evaluator seed range)")
    v.add_argument("--seed", type=int, default=0)
    v.set_defaults(func=_cmd_vae)
    a = steps.add_parser("assemble", help="trained VAE + random text encoder + converted U-Net -> pipeline dir")
    a.add_argument("--vae", required=True, help="the vae/ directory written by `jointdiff miniature vae`")
    a.add_argument("--out", required=True, help="pipeline directory (model.source of configs/miniature.toml)")
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=_cmd_assemble)
    g = steps.add_parser(
        "grow", help="add coupled attention at the 16x16 latent level to a trained miniature (outputs unchanged)"
    )
    g.add_argument("--model", required=True, help="pipeline directory to grow (e.g. the shipped miniature)")
    g.add_argument("--out", required=True, help="pipeline directory to write (model.source of the next run)")
    g.set_defaults(func=_cmd_grow)

    ib = steps.add_parser(
        "inpainting-base",
        help="a random U-Net in a stock inpainting layout beside a miniature's VAE and text encoder (issue 32)",
    )
    ib.add_argument("--model", required=True, help="pipeline directory whose VAE, text encoder, tokenizer are kept")
    ib.add_argument("--out", required=True, help="pipeline directory to write (model.source of the training)")
    ib.add_argument("--seed", type=int, default=0, help="seed of the U-Net's initial weights")
    ib.set_defaults(func=_cmd_inpainting_base)
    e = steps.add_parser("export", help="a training run's checkpoint (EMA weights) -> pipeline directory")
    e.add_argument("--run", required=True, help="the jointdiff train output_dir")
    e.add_argument("--out", required=True, help="pipeline directory to write")
    e.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the run's latest)")
    e.add_argument("--fp16", action="store_true", help="store the weights in fp16 (the shipped format)")
    e.set_defaults(func=_cmd_export)
    pr = steps.add_parser("probe", help="reference effect and toy identity with / without a reference (JSON)")
    pr.add_argument("--model", required=True, help="pipeline directory")
    pr.add_argument("--subjects", type=int, default=4)
    pr.add_argument("--steps", type=int, default=20)
    pr.add_argument("--guidance-scale", type=float, default=5.0)
    pr.set_defaults(func=_cmd_probe)
