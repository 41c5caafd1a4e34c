"""Test scaffolding: what only the tests use. Production code never imports this package
(tests/test_architecture.py fails if it does).

- here: :func:`save_tiny_run`, a real DreamBooth run of the tiny model;
- ``evaluation``: tiny random evaluation backbones, hand-made encoders, a fake DreamBooth dataset;
- ``s3``: the tiny S3 stage models built once per test session, a tiny causal LM, a fake chat server.

The tiny Stable-Diffusion components themselves are production code (``jointdiff selftest`` builds
them): :mod:`jointdiff.common.tiny`.
"""

from __future__ import annotations

from pathlib import Path


def save_tiny_run(root: str | Path, seed: int = 0) -> Path:
    """A real DreamBooth run of the tiny model under ``root``: 6 steps, checkpoints at steps 2 and 6."""
    import numpy as np
    from PIL import Image

    from jointdiff.common.tiny import save_tiny_base
    from jointdiff.training.dreambooth import DreamBoothConfig, finetune

    root = Path(root)
    save_tiny_base(root / "base", seed=seed)
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        pixels = np.random.default_rng(seed * 10 + i).integers(0, 256, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "imgs" / f"{i}.png")
    cfg = DreamBoothConfig(
        base=str(root / "base"),
        images=str(root / "imgs"),
        class_word="toy",
        out=str(root / "run"),
        steps=6,
        checkpoints=(2, 6),
        num_class_images=2,
        class_sampling_steps=2,
    )
    finetune(cfg)
    return root / "run"
