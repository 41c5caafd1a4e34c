"""``jointdiff finetune`` (DreamBooth with scheduled checkpoints) and ``jointdiff blend`` (DreamBlend)."""

from __future__ import annotations

import argparse

from jointdiff.common.config import add_arguments
from jointdiff.dreamblend.config import BlendConfig


def _steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated steps like 5,25,50, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated module names like to_q,to_v, got {text!r}")
    return names


def _cmd_finetune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jointdiff.common.config import from_args
    from jointdiff.training.dreambooth import DreamBoothConfig, finetune

    options = {**vars(args), "prior_preservation": not args.no_prior}
    if args.subjects:  # many subjects: ROOT/<name> each, split over the processes of a launch
        from jointdiff.training.subjects import finetune_subjects, read_subjects

        if args.images or args.class_word:
            raise ValueError("--subjects FILE names each subject's images and class word; drop --images/--class-word")
        subjects = read_subjects(args.subjects)

        def configure(s):  # a subject's config: its images, class word and run directory, the shared options
            values = {**options, "images": s.images, "class_word": s.class_word, "out": str(Path(args.out, s.name))}
            return from_args(DreamBoothConfig, values)

        for run in finetune_subjects(subjects, configure, device=args.device):
            print(f"run written to {run}")
        return 0
    if not (args.images and args.class_word):
        raise ValueError("give --images and --class-word (one subject), or --subjects FILE (many)")
    cfg = from_args(DreamBoothConfig, options)
    run = finetune(cfg, device=args.device)
    print(f"run written to {run}; checkpoints at steps {list(cfg.checkpoints)}")
    return 0


def _cmd_blend(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from jointdiff.common.config import from_args
    from jointdiff.common.images import load_image, save_grid, save_png
    from jointdiff.dreamblend.blend import blend_from_run

    cfg = from_args(BlendConfig, args)
    reference = load_image(args.reference_image) if args.reference_image else None
    from jointdiff.training.dreambooth import list_checkpoints

    list_checkpoints(args.run)  # a bad run directory is reported before any scorer loads
    clip = None
    if args.underfit is None:  # chosen by prompt fidelity: the harness's CLIP-T scorer
        from jointdiff.evaluation.registry import BACKBONES, resolve

        clip = resolve(BACKBONES, args.clip_backbone, "backbone")(args.clip_model, "cpu")
        if not callable(getattr(clip, "encode_texts", None)):
            raise ValueError(
                f"--clip-backbone {args.clip_backbone!r} has no text encoder (CLIP-T needs a dual encoder)"
            )
    result = blend_from_run(
        args.run,
        args.prompt,
        underfit=args.underfit,
        overfit=args.overfit,
        seed=args.seed,
        cfg=cfg,
        reference_image=reference,
        clip=clip,
        underfit_margin=args.underfit_margin,
    )
    for line in result.why:
        print(line)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        **dataclasses.asdict(cfg),
        "prompt": args.prompt,
        "seed": args.seed,
        "run": str(args.run),
        "underfit": result.underfit_step,
        "overfit": result.overfit_step,
    }
    save_png(result.image, out / "blend.png", settings)
    result.reference.save(out / "reference.png")
    row = [
        (result.reference, f"underfit step {result.underfit_step}"),
        (result.image, f"blend, overfit step {result.overfit_step}"),
    ]
    save_grid([row], out / "grid.png")
    print(f"underfit step {result.underfit_step}, overfit step {result.overfit_step}: {out / 'blend.png'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``finetune`` and ``blend`` subcommands."""
    _register_finetune(sub)
    _register_blend(sub)


def _register_finetune(sub: argparse._SubParsersAction) -> None:
    """``jointdiff finetune``: the fields of ``DreamBoothConfig`` (left at None: the config's defaults)."""
    p = sub.add_parser("finetune", help="DreamBooth fine-tuning with checkpoints on a schedule (for DreamBlend)")
    p.add_argument("--base", required=True, help="SD-layout or jointdiff model directory (or Hub id)")
    p.add_argument("--images", help="folder with the subject's images")
    p.add_argument("--class-word", dest="class_word", help="class of the subject, e.g. dog, toy")
    p.add_argument(
        "--subjects",
        metavar="FILE",
        help="many subjects, one a line: NAME | CLASS WORD | IMAGES; runs in OUT/NAME, split over the processes "
        "of accelerate launch (one subject per process at a time)",
    )
    p.add_argument("--out", required=True, help="run directory (with --subjects: the root of the runs)")
    p.add_argument("--identifier", default=None, help="rare token for the subject (default sks)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 1000)")
    p.add_argument("--checkpoints", type=_steps, default=None, help="steps to save (default 5,25,50,100,250,500,1000)")
    p.add_argument("--lora-rank", dest="lora_rank", type=int, default=None, help="LoRA rank; 0 = full fine-tuning")
    p.add_argument("--lr", dest="learning_rate", type=float, default=None, help="default 1e-4 (LoRA) / 5e-6 (full)")
    p.add_argument(
        "--lora-targets",
        dest="lora_targets",
        type=_names,
        default=None,
        help="U-Net modules LoRA adapts (default to_q,to_k,to_v,to_out.0)",
    )
    p.add_argument(
        "--train-text-encoder",
        dest="train_text_encoder",
        action="store_true",
        default=None,
        help="train the text encoder too (LoRA on its attention when --lora-rank > 0)",
    )
    p.add_argument("--text-encoder-lr", dest="text_encoder_lr", type=float, default=None, help="default: --lr")
    p.add_argument(
        "--train-identifier",
        dest="train_identifier",
        action="store_true",
        default=None,
        help="learn the identifier token's embedding with the U-Net (textual inversion)",
    )
    p.add_argument("--identifier-lr", dest="identifier_lr", type=float, default=None, help="default 5e-3")
    p.add_argument("--prior-weight", dest="prior_weight", type=float, default=None, help="default 1.0")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    p.add_argument("--no-prior", action="store_true", help="disable prior preservation")
    p.add_argument("--num-class-images", dest="num_class_images", type=int, default=None, help="default 100")
    p.add_argument("--class-sampling-steps", dest="class_sampling_steps", type=int, default=None, help="default 50")
    p.add_argument(
        "--class-data-dir",
        dest="class_data_dir",
        default=None,
        help="cache of the class images, shared between runs of one base model and class (default: <out>/class_images)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--allow-pickle", dest="allow_pickle", action="store_true")
    p.set_defaults(func=_cmd_finetune)


def _register_blend(sub: argparse._SubParsersAction) -> None:
    """``jointdiff blend``: a run, a prompt, the checkpoints (or how to choose them) and ``BlendConfig``."""
    p = sub.add_parser("blend", help="DreamBlend: underfit layout + overfit subject via cross-attention guidance")
    p.add_argument("--run", required=True, help="run directory written by `jointdiff finetune`")
    p.add_argument("--prompt", required=True, help='e.g. "a photo of sks dog on the beach"')
    p.add_argument(
        "--underfit",
        type=int,
        default=None,
        help="underfit checkpoint step (default: the latest before the overfit one whose CLIP-T is near the best)",
    )
    p.add_argument(
        "--underfit-margin",
        type=float,
        default=0.05,
        help="relative CLIP-T drop allowed when choosing the underfit step (default 0.05)",
    )
    p.add_argument(
        "--clip-backbone",
        default="clip",
        help="CLIP-T scorer for the underfit choice: clip (SD runs) or toy-clip (the miniature)",
    )
    p.add_argument("--clip-model", default=None, help="its Hub id or local directory (default: the backbone's)")
    p.add_argument(
        "--overfit", type=int, default=None, help="overfit checkpoint step (default: latest before collapse)"
    )
    p.add_argument("--out", default="blend_out", help="output directory")
    p.add_argument("--seed", type=int, default=0)
    blend_settings = ["num_inference_steps", "guidance_scale", "cag_scale", "cag_fraction", "collapse_weight"]
    add_arguments(p, BlendConfig, [*blend_settings, "reference_maps"], flags={"num_inference_steps": "--steps"})
    p.add_argument("--reference-image", default=None, help="with --reference-maps invert: image to invert")
    p.set_defaults(func=_cmd_blend)
