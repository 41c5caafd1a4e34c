"""``jointdiff s3 ...``: make the S3 same-subject dataset (JeDi sec. 3.1, supplementary Algorithm 1).

``jointdiff s3 make --config FILE --out DIR [--ray [ADDRESS]]`` and ``jointdiff s3 tiny --out DIR``
(tiny random stage models and a config that uses them, to try the pipeline offline).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LOCAL_RAY = "local"


def _cmd_make(args: argparse.Namespace) -> int:
    from jointdiff.data.s3.config import load_config

    config = load_config(args.config)
    if args.ray is None:
        from jointdiff.data.s3.pipeline_local import run_local

        report = run_local(config, args.out, progress=not args.no_progress)
    else:
        from jointdiff.data.s3.pipeline_ray import run_ray

        address = None if args.ray == LOCAL_RAY else args.ray
        init = {"num_cpus": args.num_cpus} if args.num_cpus and address is None else {}
        report = run_ray(config, args.out, address=address, progress=not args.no_progress, init_kwargs=init)
    for line in report.lines():
        print(line)
    return 1 if report.failed else 0


def _cmd_tiny(args: argparse.Namespace) -> int:
    from jointdiff.data.s3.tiny import save_tiny_models

    out = Path(args.out)
    config = save_tiny_models(out / "models")
    path = out / "config.json"
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    print(f"wrote tiny random stage models under {out / 'models'} and {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``s3 make`` and ``s3 tiny`` to the ``jointdiff`` command line."""
    p = sub.add_parser("s3", help="make the S3 synthetic same-subject dataset (JeDi sec. 3.1)")
    s3 = p.add_subparsers(dest="s3_command", required=True, metavar="S3_COMMAND")

    m = s3.add_parser("make", help="run the pipeline; a rerun resumes, skipping finished shards")
    m.add_argument("--config", required=True, help="JSON or TOML config (see docs/s3.md)")
    m.add_argument("--out", required=True, help="output directory (shards, manifest.jsonl, summary.json)")
    m.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL_RAY,
        default=None,
        metavar="ADDRESS",
        help="run on Ray Data: no value starts a local Ray, 'auto' or ray://host:10001 joins a cluster",
    )
    m.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray started by --ray (default: all)")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.set_defaults(func=_cmd_make)

    t = s3.add_parser("tiny", help="write tiny random stage models and a config using them (offline trial)")
    t.add_argument("--out", required=True, help="directory for models/ and config.json")
    t.set_defaults(func=_cmd_tiny)
