"""``jointdiff serve``: the web app (:mod:`jointdiff.app`) on this machine."""

from __future__ import annotations

import argparse


def _cmd_serve(args: argparse.Namespace) -> int:
    import atexit
    import importlib.util
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from jointdiff.app.page import build_app, launch, load_services
    from jointdiff.common.paths import default_device, shipped_model

    model = args.model or shipped_model()
    if model is None:
        raise ValueError("no model given and this install ships none yet; pass --model DIR (a jointdiff model)")
    for run in args.run:
        if not Path(run).is_dir():
            raise ValueError(f"no such run directory: {run}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from an offline machine
    if importlib.util.find_spec("gradio") is None:
        raise ValueError("the web app needs gradio: pip install 'jointdiff[app]'")
    work_dir = tempfile.mkdtemp(prefix="jointdiff-serve-")
    atexit.register(shutil.rmtree, work_dir, ignore_errors=True)
    jedi, blend = load_services(model, args.device or default_device(), args.run, work_dir, shipped=args.model is None)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"jointdiff: serving on {args.host}: anyone who can reach port {args.port} can run the model")
    launch(build_app(jedi, blend), args.host, args.port, block=True)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``jointdiff serve``."""
    p = sub.add_parser("serve", help="web app (Gradio) for JeDi generation and DreamBlend")
    p.add_argument("--model", default=None, help="jointdiff model directory (default: the shipped miniature model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on (default: 7860)")
    p.add_argument("--run", action="append", default=[], metavar="DIR", help="fine-tuned run for DreamBlend; repeat")
    p.add_argument("--device", default=None, help="where the model runs (default: cuda if available, else cpu)")
    p.set_defaults(func=_cmd_serve)
