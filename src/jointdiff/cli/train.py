"""``jointdiff train``: train or resume a joint-image model from a TOML/YAML config (docs/training.md)."""

from __future__ import annotations

import argparse


def _cmd_train(args: argparse.Namespace) -> int:
    from jointdiff.training.config import config_template, load_config

    if args.print_config:
        print(config_template())
        return 0
    if not args.config:
        raise ValueError("--config FILE is required (see `jointdiff train --print-config`)")
    config = load_config(args.config, args.set)
    if args.check:
        from jointdiff.training.components import open_data_sources

        for i, (s, ws) in enumerate(zip(config.data.sources, open_data_sources(config.data), strict=True)):
            unit = "shards" if s.format == "webdataset" else "sets"
            print(f"data.sources[{i}] {ws.source.name}: {len(ws.source)} {unit} ({s.format}, weight {s.weight})")
        print(f"config OK: {args.config}")
        return 0

    from jointdiff.training.trainer import train

    result = train(config)
    if not result.main_process:
        return 0
    status = "finished" if result.finished else "stopped"
    speed = f", {result.images_per_second:.1f} images/s" if result.images_per_second else ""
    skipped = sum(result.skipped.values())
    print(f"{status} at step {result.step} -> {result.output_dir}{speed}; skipped sets: {skipped}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = sub.add_parser("train", help="train a joint-image model (JeDi eq. 2) on image-set data; resumes automatically")
    p.add_argument("--config", help="TOML, YAML or JSON config file (every field: --print-config)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.max_steps=100 (repeatable; VALUE is a TOML value)",
    )
    p.add_argument("--check", action="store_true", help="validate the config and list the data sources, then exit")
    p.add_argument("--print-config", action="store_true", help="print every config field with its default and doc")
    p.set_defaults(func=_cmd_train)
