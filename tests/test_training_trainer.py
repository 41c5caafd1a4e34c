"""The trainer on tiny models and data: it learns, resumes exactly after a kill, saves a loadable pipeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from jointdiff.cli import main
from jointdiff.common.tiny import save_tiny_base
from jointdiff.data.formats import WebDatasetWriter
from jointdiff.data.synthetic import random_set, write_random_paper_sets
from jointdiff.jedi.pipeline import JointDiffusionPipeline
from jointdiff.testing.training import cpu_run_overrides
from jointdiff.training.checkpoint import list_checkpoints
from jointdiff.training.config import load_config
from jointdiff.training.trainer import train


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    save_tiny_base(root / "base")
    write_random_paper_sets(root / "data", count=4, n=3, size=8, seed=0)
    (root / "data" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "data" / "corrupt.txt").write_text("a<|split|>b")
    return root


def overrides(assets, out, **extra):
    base = {
        "train.log_every": "5",
        "data.resolution": "8",
        "data.batch_size": "2",
        "data.set_size": "[2, 3]",
        "data.sources": f"[{{path = {str(assets / 'data')!r}}}]",
        "model.source": repr(str(assets / "base")),
        "optim.learning_rate": "3e-3",
        "optim.warmup_steps": "2",
        "ema.decay": "0.9",
    }
    return cpu_run_overrides(out, base, **extra)


def test_overfits_skips_bad_files_and_saves_pipeline(assets, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    config = load_config(None, overrides(assets, out, **{"train.max_steps": "50", "train.checkpoint_every": "25"}))
    result = train(config)
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert result.finished and result.step == 50 and len(result.losses) == 50
    assert last < 0.8 * first, (first, last)  # measured: 0.97 -> 0.63
    assert result.skipped["data/bad"] > 0  # the corrupt set is seen every epoch and skipped each time
    logged = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == list(range(5, 51, 5)) and logged[-1]["data/skipped/data/bad"] > 0
    assert [s for s, _ in list_checkpoints(out)] == [25, 50]
    pipe = JointDiffusionPipeline.from_pretrained(str(out))
    vae_base = load_file(str(assets / "base" / "vae" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(pipe.vae.state_dict()[k], v) for k, v in vae_base.items())  # frozen VAE unchanged
    ema_unet = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    raw = load_file(str(out / "checkpoints" / "step-00000050" / "model.safetensors"))
    key = "conv_in.weight"
    assert not torch.equal(ema_unet[key], raw["unet." + key])  # the pipeline holds the EMA weights
    assert float(ema_unet[key][:, [0, 5, 6, 7, 8]].abs().sum()) > 0  # mask/reference channels were learned


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from jointdiff.training.config import load_config
    from jointdiff.training.trainer import train

    def on_step(step, loss):
        if step == 4:  # one step past the checkpoint at 3: that work is lost, as in a crash
            os.killpg(0, signal.SIGKILL)  # the trainer and its data-loader workers, like a lost node

    train(load_config(None, sys.argv[1:]), on_step=on_step)
    """
)


def test_kill_and_resume_matches_uninterrupted_run(assets, tmp_path):
    torch.set_num_threads(1)
    extra = {
        "train.max_steps": "6",
        "train.checkpoint_every": "3",
        "data.num_workers": "2",  # worker rotation: 3 batches consumed at the checkpoint
        "data.batching": "'pad'",
        "objective.text_dropout": "0.3",
        "objective.reference_dropout": "0.3",
    }
    killed = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, *overrides(assets, killed, **extra)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        start_new_session=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [s for s, _ in list_checkpoints(killed)] == [3] and not (killed / "model_index.json").exists()
    resumed = train(load_config(None, overrides(assets, killed, **extra)))
    assert resumed.finished and len(resumed.losses) == 3  # steps 4, 5, 6 redone from the checkpoint

    straight = tmp_path / "straight"
    argv = ["train", "--config", str(write_empty(tmp_path))]
    for item in overrides(assets, straight, **extra):
        argv += ["--set", item]
    assert main(argv) == 0  # the same run, uninterrupted, through the CLI
    for name in ("unet/diffusion_pytorch_model.safetensors", "checkpoints/step-00000006/model.safetensors"):
        a, b = load_file(str(killed / name)), load_file(str(straight / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    opt_a = torch.load(killed / "checkpoints/step-00000006/optimizer.bin", weights_only=True)
    opt_b = torch.load(straight / "checkpoints/step-00000006/optimizer.bin", weights_only=True)
    assert all(
        torch.equal(x["exp_avg"], y["exp_avg"])
        for x, y in zip(opt_a["state"].values(), opt_b["state"].values(), strict=True)
    )


def write_empty(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("# everything comes from --set\n")
    return path


def test_from_scratch_webdataset_pad_accumulation_and_samples(assets, tmp_path):
    torch.set_num_threads(1)
    shards = tmp_path / "shards"
    with WebDatasetWriter(shards, sets_per_shard=2) as w:
        for i in range(5):
            w.write(random_set(1 + i % 3, 8, seed=i))
    init = {
        "unet": "{sample_size = 4, in_channels = 4, out_channels = 4, block_out_channels = [8, 16], layers_per_block = 1, "
        "down_block_types = ['CrossAttnDownBlock2D', 'DownBlock2D'], up_block_types = ['UpBlock2D', 'CrossAttnUpBlock2D'], "
        "cross_attention_dim = 16, attention_head_dim = 4, norm_num_groups = 4}",
        "vae": "{in_channels = 3, out_channels = 3, latent_channels = 4, block_out_channels = [8, 16], layers_per_block = 1, "
        "down_block_types = ['DownEncoderBlock2D', 'DownEncoderBlock2D'], up_block_types = ['UpDecoderBlock2D', 'UpDecoderBlock2D'], "
        "norm_num_groups = 4}",
        "text_encoder": "{hidden_size = 16, intermediate_size = 32, num_hidden_layers = 1, num_attention_heads = 2}",
        "tokenizer": "'char:16'",
    }
    out = tmp_path / "scratch"
    extra = {
        "model.source": "''",
        "data.sources": f"[{{path = {str(shards)!r}, format = 'webdataset'}}]",
        "data.batching": "'pad'",
        "train.max_steps": "2",
        "train.checkpoint_every": "2",
        "train.gradient_accumulation_steps": "2",
        "model.gradient_checkpointing": "true",
        "model.train_text_encoder": "true",
        "sample.every": "2",
        "sample.prompts": "['a subject 1 view 0', 'a subject 1 view 1']",
        "sample.num_inference_steps": "2",
        **{f"model.init.{k}": v for k, v in init.items()},
    }
    result = train(load_config(None, overrides(assets, out, **extra)))
    assert result.finished and len(result.losses) == 2
    pipe = JointDiffusionPipeline.from_pretrained(str(out))
    assert pipe.unet.config.in_channels == 9 and pipe.tokenizer.model_max_length == 16
    assert (out / "samples" / "step-00000002.png").is_file()


def test_a_stock_inpainting_model_trains_on_single_images_with_regions(assets, tmp_path):
    """Issue 32's toy baseline on the training shell: a stock-layout U-Net (miniature inpainting-base) trains on single
    images with random regions and the empty latent; it learns (the loss falls) and saves as a stock inpainting
    pipeline."""
    from jointdiff.jedi.convert import convert_pipeline
    from jointdiff.jedi.layouts import InpaintingLayout
    from jointdiff.miniature.assemble import inpainting_base

    torch.set_num_threads(1)
    convert_pipeline(str(assets / "base"), tmp_path / "jedi")
    inpainting_base(tmp_path / "jedi", tmp_path / "ip-base", seed=0)
    out = tmp_path / "run"
    extra = {
        "model.source": repr(str(tmp_path / "ip-base")),
        "data.set_size": "[1, 1]",
        "objective.masks": "'regions'",
        "train.max_steps": "40",
        "train.checkpoint_every": "40",
    }
    result = train(load_config(None, overrides(assets, out, **extra)))
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert result.finished and last < 0.9 * first, (first, last)
    pipe = JointDiffusionPipeline.from_pretrained(str(out))
    assert pipe.joint_unet.layout == InpaintingLayout(4)
