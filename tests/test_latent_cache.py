"""Cached latents: encoded once, equal to the VAE's own encoding, read back exactly, trained on with exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from jointdiff.common.tiny import save_tiny_base
from jointdiff.data.latents import LatentSet, read_latent_shard, vae_fingerprint, write_latent_shard
from jointdiff.data.sources import Part, open_source
from jointdiff.data.stream import BatchSpec, SetSampler, WeightedSource
from jointdiff.testing.training import cpu_run_overrides
from jointdiff.training.config import load_config
from jointdiff.training.latent_cache import CacheJob, cache_latents, load_vae
from jointdiff.training.trainer import train


@pytest.fixture(scope="module")
def cache(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("latents")
    save_tiny_base(root / "base")
    job = CacheJob(
        out=str(root / "cache"), model=str(root / "base"), sets=5, resolution=16, sets_per_shard=2, workers=1
    )
    report = cache_latents(job, progress=False)
    return root, job, report


def test_cache_holds_the_vae_encoding_masks_and_short_captions(cache):
    from jointdiff.data.toyworld.generator import make_set

    root, job, report = cache
    assert report["shards"] == 3 and report["images_now"] > 0
    source = open_source("latents", job.out)
    assert len(source) == 3
    sets, error = read_latent_shard(source.shards[0])
    assert error is None and [k for k, _ in sets] == ["toy-train-000000000", "toy-train-000000001"]
    vae = load_vae(str(root / "base"))
    toy = make_set(0, "train", 16, style_p=0.0, keep_identity=True)
    pixels = torch.from_numpy(np.stack([v.image for v in toy.views])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        expected = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
    got = sets[0][1]
    assert torch.allclose(got.latents, expected, atol=2e-3 * expected.abs().max().item())  # fp16 storage
    coverage = torch.from_numpy(np.stack([v.mask for v in toy.views]).astype(np.float32))
    pooled = torch.nn.functional.avg_pool2d(coverage[:, None], 2)[:, 0]
    assert torch.allclose(got.foreground, pooled, atol=1 / 255)
    for view, variants in zip(toy.views, got.captions, strict=True):
        assert variants[0] == view.caption
        short = variants[-1]  # the class word without the descriptor (the same caption when it had none)
        assert toy.subject.class_word in short and set(short.split()) <= set(view.caption.split()) | {"a", "an"}
    manifest = json.loads((root / "cache" / "latents.json").read_text())
    assert manifest["vae_fingerprint"] == vae_fingerprint(vae)


def test_cache_resumes_and_does_not_depend_on_workers(cache, tmp_path):
    root, job, _ = cache
    again = cache_latents(job, progress=False)
    assert again["written_now"] == 0  # every shard was there
    two = CacheJob(**{**job.__dict__, "out": str(tmp_path / "two"), "workers": 2})
    cache_latents(two, progress=False)
    for name in ("latents-000000.safetensors", "latents-000002.safetensors"):
        a, _ = read_latent_shard(str(root / "cache" / name))
        b, _ = read_latent_shard(str(tmp_path / "two" / name))
        assert [k for k, _ in a] == [k for k, _ in b]
        assert all(torch.equal(x.latents, y.latents) for (_, x), (_, y) in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="other parameters"):
        cache_latents(CacheJob(**{**job.__dict__, "resolution": 32}), progress=False)


def test_shard_round_trip_and_damaged_shard(tmp_path):
    sets = [
        LatentSet(torch.randn(2, 4, 3, 3), [["a b", "b"], ["c"]], "s0", torch.rand(2, 3, 3)),
        LatentSet(torch.randn(1, 4, 3, 3), [["d"]], "s1"),
    ]
    write_latent_shard(tmp_path / "x.safetensors", sets)
    back, error = read_latent_shard(str(tmp_path / "x.safetensors"))
    assert error is None and [k for k, _ in back] == ["s0", "s1"]
    assert torch.allclose(back[0][1].latents, sets[0].latents, atol=2e-3)
    assert torch.allclose(back[0][1].foreground, sets[0].foreground, atol=1 / 255)
    assert torch.equal(back[1][1].foreground, torch.ones(1, 3, 3))  # unknown foreground = everywhere
    assert back[0][1].captions == [["a b", "b"], ["c"]]
    (tmp_path / "y.safetensors").write_bytes((tmp_path / "x.safetensors").read_bytes()[:100])
    back, error = read_latent_shard(str(tmp_path / "y.safetensors"))
    assert back == [] and error is not None and "unreadable" in str(error)


def test_sampler_batches_latents_and_short_captions(tmp_path):
    sets = [LatentSet(torch.full((3, 4, 2, 2), float(i)), [[f"long {i}", f"short {i}"]] * 3, f"s{i}") for i in range(4)]
    write_latent_shard(tmp_path / "a.safetensors", sets)
    source = WeightedSource(open_source("latents", str(tmp_path)))

    def batch(p: float) -> dict:
        spec = BatchSpec(batch_size=4, resolution=8, set_size=(2, 3), batching="pad", short_caption_probability=p)
        return SetSampler([source], spec, seed=0, part=Part()).next_batch()

    b = batch(0.0)
    assert b["latents"].shape[0] == 4 and b["latents"].shape[2:] == (4, 2, 2) and "pixel_values" not in b
    for row in range(4):
        n = int(b["slot_mask"][row].sum())
        value = b["latents"][row, 0, 0, 0, 0].item()  # every image of set i is filled with i
        assert (b["latents"][row, :n] == value).all() and (b["latents"][row, n:] == 0).all()
        assert all(c == f"long {int(value)}" for c in b["captions"][row][:n])
    assert all(c.startswith("short") for row in batch(1.0)["captions"] for c in row if c)


def _overrides(root, cache_dir, out, **extra):
    base = {
        "train.log_every": "2",
        "train.checkpoint_every": "2",
        "data.resolution": "16",
        "data.batch_size": "2",
        "data.set_size": "[1, 3]",
        "data.batching": "'pad'",
        "data.short_caption_probability": "0.7",
        "data.sources": f"[{{path = {str(cache_dir)!r}, format = 'latents'}}]",
        "model.source": repr(str(root / "base")),
        "model.train_text_encoder": "true",
        "objective.foreground_weight": "4.0",
        "objective.snr_gamma": "5.0",
        "objective.unknown_only": "true",
        "optim.learning_rate": "1e-3",
        "optim.warmup_steps": "1",
        "ema.decay": "0.9",
    }
    return cpu_run_overrides(out, base, **extra)


def test_training_on_cached_latents_resumes_exactly(cache, tmp_path):
    root, job, _ = cache
    full = train(load_config(None, _overrides(root, job.out, tmp_path / "a", **{"train.max_steps": "4"})))
    part = train(
        load_config(
            None, _overrides(root, job.out, tmp_path / "b", **{"train.max_steps": "4", "train.stop_after": "2"})
        )
    )
    rest = train(load_config(None, _overrides(root, job.out, tmp_path / "b", **{"train.max_steps": "4"})))
    assert full.finished and not part.finished and rest.finished
    assert all(np.isfinite(full.losses))
    assert part.losses + rest.losses == pytest.approx(full.losses, rel=1e-5)
    # The last checkpoint exported holds what the finished run saved: EMA U-Net and EMA text encoder.
    from safetensors.torch import load_file

    from jointdiff.training.checkpoint import export_checkpoint

    exported = export_checkpoint(tmp_path / "a", tmp_path / "export")
    for part_name in ("unet", "text_encoder"):
        (file,) = (tmp_path / "a" / part_name).glob("*.safetensors")
        final, again = load_file(file), load_file(exported / part_name / file.name)
        assert final.keys() == again.keys() and all(torch.equal(final[k], again[k]) for k in final)
    base = load_file(next((root / "base" / "text_encoder").glob("*.safetensors")))
    assert any(not torch.equal(base[k], again[k]) for k in base if k in again)  # the text encoder did train


def test_training_refuses_latents_of_another_vae(cache, tmp_path):
    root, job, _ = cache
    save_tiny_base(tmp_path / "other", seed=1)
    cfg = load_config(
        None, _overrides(root, job.out, tmp_path / "run", **{"model.source": repr(str(tmp_path / "other"))})
    )
    with pytest.raises(ValueError, match="encoded by VAE"):
        train(cfg)


def test_monitor_records_reference_effect_and_identity(cache, tmp_path):
    root, job, _ = cache
    overrides = {"train.max_steps": "2", "monitor.every": "2", "monitor.subjects": "1", "monitor.steps": "2"}
    train(load_config(None, _overrides(root, job.out, tmp_path / "m", **overrides)))
    (record,) = [json.loads(line) for line in (tmp_path / "m" / "logs" / "monitor.jsonl").read_text().splitlines()]
    assert record["step"] == 2 and record["cpu_hours"] > 0
    assert record["reference_effect"] > 0  # a random model's outputs still move with the reference
    assert record["identity_real"] > record["identity_floor"]
    span = record["identity_real"] - record["identity_floor"]
    expected = (record["identity_ref"] - record["identity_floor"]) / span
    assert record["normalised_ref"] == pytest.approx(expected, abs=2e-3)  # rounded to 4 digits
