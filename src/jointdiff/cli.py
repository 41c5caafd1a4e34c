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

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

# Subcommands that live beside the code they drive: each module has `register(sub)`, which adds
# its subparser(s) with `set_defaults(func=...)` and keeps heavy imports inside the handlers.
COMMAND_MODULES: tuple[str, ...] = ()


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


def _cmd_selftest(args: argparse.Namespace) -> int:
    from jointdiff.selftest import run_selftest

    return 0 if run_selftest(seed=args.seed) else 1


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
