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


FAST_EXIT = ("demo", "generate")  # one-shot commands whose process ends by os._exit (see run)


def run() -> None:
    """The ``jointdiff`` command: :func:`main`, then the process exits. After a one-shot command (:data:`FAST_EXIT`,
    one process) it ends with ``os._exit`` once the exit handlers have run and the streams are flushed: tearing
    down an interpreter that imported torch, diffusers and transformers takes ~0.7 s of a 6 s demo on 2 cores
    (issue 31), and every file these commands write is closed by then."""
    argv = sys.argv[1:]
    code = main(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in FAST_EXIT and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        import atexit
        import logging

        atexit._run_exitfuncs()  # what a normal exit runs first (progress bars, loggers)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


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
