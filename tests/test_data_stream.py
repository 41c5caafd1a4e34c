"""Mixing, set sizes, rank/worker partitions, bad-set accounting and exact resume of the batch stream."""

from __future__ import annotations

import math

import PIL.Image
import pytest
import torch
from torch.utils.data import DataLoader

from jointdiff.data.formats import WebDatasetWriter, write_folder_set
from jointdiff.data.sources import Part, open_source
from jointdiff.data.stream import BatchSpec, SetBatchStream, SetSampler, WeightedSource, skipped_total
from jointdiff.data.synthetic import random_set, write_random_paper_sets


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_random_paper_sets(root / "paper", count=6, n=4, size=4, seed=0)
    for i in range(5):
        write_folder_set(root / "single", random_set(1, 4, seed=100 + i))
    with WebDatasetWriter(root / "wds", sets_per_shard=2) as w:
        for i in range(7):
            w.write(random_set(3, 4, seed=200 + i))
    return root


def sources(data, weights=(1.0, 1.0, 1.0), single_cap=1):
    return [
        WeightedSource(open_source("paper", str(data / "paper")), weights[0]),
        WeightedSource(open_source("folder", str(data / "single")), weights[1], max_set_size=single_cap),
        WeightedSource(open_source("webdataset", str(data / "wds")), weights[2]),
    ]


def test_mixing_weights_hold(data):
    weights = (1.0, 2.0, 5.0)
    sampler = SetSampler(sources(data, weights), BatchSpec(4, 4, (2, 4), "pad"), seed=0, part=Part())
    for _ in range(500):
        sampler.next_batch()
    total = sum(sampler.drawn.values())
    assert total == 2000
    for name, w in zip(("paper", "single", "wds"), weights, strict=True):
        p = w / sum(weights)
        # within 4.5 binomial standard deviations of the target share
        assert abs(sampler.drawn[name] / total - p) < 4.5 * math.sqrt(p * (1 - p) / total), (name, sampler.drawn)


def test_bucket_and_pad_set_sizes(data):
    bucket = SetSampler(sources(data), BatchSpec(3, 4, (2, 4), "bucket"), seed=1, part=Part())
    sizes = set()
    for _ in range(60):
        b = bucket.next_batch()
        n = b["pixel_values"].shape[1]
        sizes.add(n)
        source = b["keys"][0].split("/")[0]
        assert all(k.split("/")[0] == source for k in b["keys"])  # one source per batch
        assert bool(b["slot_mask"].all()) and len(b["captions"]) == 3 and all(len(c) == n for c in b["captions"])
        assert (n == 1) if source == "single" else (2 <= n <= (3 if source == "wds" else 4))
        assert b["pixel_values"].shape == (3, n, 3, 4, 4) and float(b["pixel_values"].abs().max()) <= 1.0
    assert sizes == {1, 2, 3, 4}
    pad = SetSampler(sources(data), BatchSpec(6, 4, (2, 4), "pad"), seed=1, part=Part())
    for _ in range(30):
        b = pad.next_batch()
        real = b["slot_mask"].sum(1)
        assert b["pixel_values"].shape[1] == int(real.max())
        assert bool((b["pixel_values"][~b["slot_mask"]] == 0).all())  # padding is zeros
        for row, (k, caps) in enumerate(zip(b["keys"], b["captions"], strict=True)):
            n = int(real[row])
            assert (n == 1) if k.startswith("single/") else n >= 2
            assert all(caps[:n]) and caps[n:] == [""] * (len(caps) - n)


@pytest.mark.parametrize("folder,parts", [("paper", 2), ("wds", 2), ("wds", 6)])  # 6 parts > 4 shards: samples split
def test_parts_partition_an_epoch(data, folder, parts):
    source = open_source("paper" if folder == "paper" else "webdataset", str(data / folder))
    per_part = []
    for i in range(parts):
        reader = source.reader(seed=3, part=Part(i, parts))
        keys = []
        while True:
            key = reader.next_set().key
            if reader.state_dict()["epoch"] > 0:
                break
            keys.append(key)
        per_part.append(keys)
    everything = [k for keys in per_part for k in keys]
    assert all(per_part) and len(everything) == len(set(everything)) == (6 if folder == "paper" else 7)


def test_bad_sets_skipped_and_counted(tmp_path):
    write_random_paper_sets(tmp_path, count=3, n=2, size=4, seed=0)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "broken.txt").write_text("a<|split|>b")
    PIL.Image.new("RGB", (4, 6)).save(tmp_path / "odd.png")
    (tmp_path / "odd.txt").write_text("a")
    PIL.Image.new("RGB", (4, 8)).save(tmp_path / "mismatch.png")
    (tmp_path / "mismatch.txt").write_text("one caption for two images")
    source = WeightedSource(open_source("paper", str(tmp_path), name="mixed"))
    sampler = SetSampler([source], BatchSpec(3, 4, (2, 2)), seed=0, part=Part())
    keys = [k for _ in range(4) for k in sampler.next_batch()["keys"]]  # 12 sets = 4 epochs of 3 good ones
    assert sorted(set(keys)) == ["mixed/set000000", "mixed/set000001", "mixed/set000002"]
    assert sampler.skipped == {"mixed/bad": 12}  # 3 bad files x 4 epochs, none trained on
    assert skipped_total({0: sampler.state_dict()}) == {"mixed/bad": 12}


def test_stream_resumes_exactly_with_workers(data):
    spec = BatchSpec(2, 4, (2, 4), "pad")
    srcs = sources(data, (1.0, 1.0, 2.0))
    loader = DataLoader(SetBatchStream(srcs, spec, seed=5), batch_size=None, num_workers=2)
    it = iter(loader)
    first = [next(it) for _ in range(8)]
    del it
    consumed = 5  # checkpoint after 5 batches: roles 0 and 1 have states, the next batch comes from role 1
    roles = {}
    for b in first[:consumed]:
        roles[b["data_state"]["role"]] = b["data_state"]["state"]
    resume = {"consumed": consumed, "num_workers": 2, "roles": roles}
    again = DataLoader(SetBatchStream(srcs, spec, seed=5, resume=resume), batch_size=None, num_workers=2)
    it = iter(again)
    rest = [next(it) for _ in range(3)]
    del it
    for a, b in zip(first[consumed:], rest, strict=True):
        assert a["keys"] == b["keys"]
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["slot_mask"], b["slot_mask"])
    with pytest.raises(ValueError, match=r"same data\.num_workers"):
        next(iter(SetBatchStream(srcs, spec, seed=5, resume=resume)))


@pytest.mark.parametrize("batching", ["bucket", "pad"])
def test_two_ranks_draw_what_one_rank_draws_with_twice_the_batch(data, batching):
    """Per step, ranks 0 and 1 of two with batches of 2 hold the sets one rank holds with batches of 4: the same
    sets, the same subsets of their images and the same per-set seeds (one indexed source, no loader workers)."""
    srcs = [WeightedSource(open_source("paper", str(data / "paper")))]

    def steps(batch_size, rank, world, count=5):
        it = iter(SetBatchStream(srcs, BatchSpec(batch_size, 4, (2, 4), batching), seed=3, rank=rank, world_size=world))
        return [next(it) for _ in range(count)]

    def sets(batch):
        real = batch["slot_mask"]
        return [
            (k, s, batch["pixel_values"][i][real[i]].numpy().tobytes())
            for i, (k, s) in enumerate(zip(batch["keys"], batch["seeds"].tolist(), strict=True))
        ]

    one = steps(4, 0, 1)
    two = list(zip(steps(2, 0, 2), steps(2, 1, 2), strict=True))
    for a, (b0, b1) in zip(one, two, strict=True):
        assert sorted(sets(a)) == sorted(sets(b0) + sets(b1))
    assert len({k for a in one[:3] for k in a["keys"]}) == 6  # 12 draws over 2 epochs of 6 sets: each set twice
    seeds = [s for a in one for s in a["seeds"].tolist()]
    assert len(set(seeds)) == len(seeds)  # a set gets a new seed in each epoch
