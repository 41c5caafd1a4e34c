"""The ``jointdiff`` command line: thin subcommands over the library, ``main(argv)`` testable.

Each module of this package adds its subcommands with ``register(sub)`` and keeps heavy imports
(torch, diffusers, gradio) inside the handlers, so ``jointdiff --help`` loads none of them. Errors a
user can fix are printed as one line (``jointdiff: error: ...``) with exit status 2; set
``JOINTDIFF_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from jointdiff.cli import (
    cache_latents,
    demo,
    dreamblend,
    evaluate,
    jedi,
    miniature,
    s3,
    selftest,
    serve,
    toyworld,
    train,
)

# The subcommands, in the order of `jointdiff --help`.
COMMANDS = (jedi, selftest, cache_latents, demo, evaluate, train, dreamblend, miniature, serve, s3, toyworld)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per command."""
    parser = argparse.ArgumentParser(prog="jointdiff", description="JeDi and DreamBlend personalised generation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
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
