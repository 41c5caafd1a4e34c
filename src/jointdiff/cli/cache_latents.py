"""``jointdiff cache-latents``: encode image sets once with a VAE into latent shards (docs/training.md)."""

from __future__ import annotations

import argparse
import json


def _cmd_cache(args: argparse.Namespace) -> int:
    from jointdiff.common.config import from_args
    from jointdiff.training.latent_cache import CacheJob, cache_latents

    job = from_args(CacheJob, {**vars(args), "keep_identity": not args.all_views})
    print(json.dumps(cache_latents(job)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``jointdiff cache-latents``."""
    p = sub.add_parser(
        "cache-latents",
        help="encode image sets once with the model's VAE into latent shards (train with format = 'latents')",
    )
    p.add_argument("--model", required=True, help="pipeline directory (its vae/) or an AutoencoderKL directory")
    p.add_argument("--out", required=True, help="cache directory; rerun the same command to resume or extend")
    p.add_argument(
        "--source",
        default="toyworld",
        help="'toyworld' (render sets with masks and short captions) or FORMAT:PATH of stored sets "
        "(paper:DIR, folder:DIR, webdataset:SHARDS)",
    )
    p.add_argument("--sets", type=int, default=1000, help="toyworld: sets to render (a larger value extends the cache)")
    p.add_argument("--start", type=int, default=0, help="toyworld: first set index of the split")
    p.add_argument("--split", default="train", help="toyworld: subject seed range (train, evaluator, eval)")
    p.add_argument("--set-size", type=int, default=0, help="toyworld: images per set (0: 2-4 at random, the paper's)")
    p.add_argument(
        "--all-views", action="store_true", help="toyworld: also recoloured / cube views and styles (default: not)"
    )
    p.add_argument("--resolution", type=int, default=64, help="image side in pixels before encoding")
    p.add_argument("--sets-per-shard", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2, help="encoding processes (one thread each)")
    p.set_defaults(func=_cmd_cache)
