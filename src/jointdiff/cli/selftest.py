"""``jointdiff selftest``: a one-minute check of an install on a tiny random model.

Until the shipped miniature model exists this is what ``make demo`` runs: it converts a tiny
SD-layout model and measures the two properties everything else builds on (sec. 3.2-3.3):
the converted U-Net reproduces the original, and coupled attention links the images of a set.
"""

from __future__ import annotations

import argparse


def run_selftest(seed: int = 0) -> bool:
    """Convert a tiny random model through the CLI path and print measured checks; True if all pass."""
    import copy
    import tempfile

    import torch

    from jointdiff.common.tiny import TEXT_DIM, save_tiny_base
    from jointdiff.jedi.attention import remove_joint_attention
    from jointdiff.jedi.convert import convert_pipeline
    from jointdiff.jedi.pipeline import JointDiffusionPipeline

    with tempfile.TemporaryDirectory() as tmp:
        base = save_tiny_base(f"{tmp}/base", seed=seed)
        convert_pipeline(f"{tmp}/base", f"{tmp}/joint")
        pipe = JointDiffusionPipeline.from_pretrained(f"{tmp}/joint")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 4, 8, 8, generator=g)  # 2 sets of 3 latents
    text = torch.randn(2, 3, 5, TEXT_DIM, generator=g)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        joint = pipe.joint_unet
        ref = base["unet"](x.flatten(0, 1), t.repeat_interleave(3), text.flatten(0, 1)).sample.unflatten(0, (2, 3))
        uncoupled = copy.deepcopy(joint.unet)
        remove_joint_attention(uncoupled)
        parity = (
            (
                uncoupled(
                    torch.cat([torch.ones_like(x[:, :, :1]), x, 0 * x], 2).flatten(0, 1),
                    t.repeat_interleave(3),
                    text.flatten(0, 1),
                ).sample.unflatten(0, (2, 3))
                - ref
            )
            .abs()
            .max()
            .item()
        )
        out = joint(x, t, text)
        x2 = x.clone()
        x2[:, 2] = torch.randn(2, 4, 8, 8, generator=g)
        coupled = (joint(x2, t, text)[:, 0] - out[:, 0]).abs().max().item()
    checks = [
        ("converted U-Net (coupling off) == original U-Net, max |diff|", parity, parity < 1e-5),
        ("changing image 3 of a set changes image 1's output, max |diff|", coupled, coupled > 1e-6),
    ]
    for name, value, ok in checks:
        print(f"[{'ok' if ok else 'FAIL'}] {name}: {value:.3g}")
    return all(ok for *_, ok in checks)


def _cmd_selftest(args: argparse.Namespace) -> int:
    return 0 if run_selftest(seed=args.seed) else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``selftest``."""
    p = sub.add_parser("selftest", help="check the install: convert a tiny random model, verify parity and coupling")
    p.add_argument("--seed", type=int, default=0, help="seed of the tiny random model")
    p.set_defaults(func=_cmd_selftest)
