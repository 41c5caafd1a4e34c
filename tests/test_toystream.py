"""The toyworld source (issue 27): rendered and encoded in the data path, the same sets as the latent cache,
a replay buffer that is a pure function of the reader's two counters, exact resume, trained on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jointdiff.common.tiny import save_tiny_base
from jointdiff.data.sources import Part
from jointdiff.data.toyworld.generator import set_key
from jointdiff.testing.training import cpu_run_overrides
from jointdiff.training.config import SourceConfig, load_config
from jointdiff.training.latent_cache import (
    CacheJob,
    encode_records,
    load_vae,
    toy_pair_records,
    toy_records,
    toy_set_records,
)
from jointdiff.training.toystream import ToyWorldSource, attach_vae, parse_spec
from jointdiff.training.trainer import train


@pytest.fixture(scope="module")
def base(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("toystream")
    save_tiny_base(root / "base")
    return root, load_vae(str(root / "base"))


def _source(vae, buffer: int, refresh: float = 0.5, views: int = 2) -> ToyWorldSource:
    source = ToyWorldSource("train:500", views=views, buffer=buffer, refresh=refresh)
    assert attach_vae([source], vae, 16) == 1
    return source


def _index(key: str) -> int:
    return int(key.rsplit("-", 1)[1])


def test_streamed_sets_are_the_cached_sets(base):
    _, vae = base
    reader = _source(vae, buffer=0).reader(seed=0, part=Part())
    got = [reader.next_set() for _ in range(3)]
    assert [s.key for s in got] == [set_key("train", i) for i in (500, 501, 502)]
    job = CacheJob(out="unused", model="unused", sets=3, start=500, set_size=2, resolution=16, sets_per_shard=3)
    cached = encode_records(vae, toy_records(job, 0))
    for a, b in zip(got, cached, strict=True):
        assert a.key == b.key and a.captions == b.captions
        assert torch.equal(a.latents, b.latents) and torch.equal(a.foreground, b.foreground)


def test_buffer_serves_recent_subjects_and_refreshes_at_the_rate(base):
    _, vae = base
    reader = _source(vae, buffer=8, refresh=0.5).reader(seed=3, part=Part())
    seen = []
    for _ in range(65):
        s = reader.next_set()
        made = reader.made
        seen.append(_index(s.key))
        assert made - 8 <= _index(s.key) - 500 < made  # drawn from the last `buffer` sets made
    assert reader.made == 8 + 32  # 0.5 new sets a draw after the first fill, in chunks of 8: 64 draws, 32 new
    assert len(set(seen)) > 20  # the draws spread over the buffer as it turns over


def test_parts_render_disjoint_subjects(base):
    _, vae = base
    source = _source(vae, buffer=0)
    ra, rb = source.reader(0, Part(0, 2)), source.reader(0, Part(1, 2))
    a = {_index(ra.next_set().key) for _ in range(4)}
    b = {_index(rb.next_set().key) for _ in range(4)}
    assert a == {500, 502, 504, 506} and b == {501, 503, 505, 507}


def test_reader_resumes_exactly_from_its_counters(base):
    _, vae = base
    source = _source(vae, buffer=6, refresh=0.75)
    whole = source.reader(seed=1, part=Part())
    keys = [whole.next_set().key for _ in range(40)]
    first = source.reader(seed=1, part=Part())
    head = [first.next_set().key for _ in range(23)]
    state = first.state_dict()
    assert set(state) == {"made", "drawn"} and all(isinstance(v, int) for v in state.values())
    again = source.reader(seed=1, part=Part())
    again.load_state_dict(state)  # a fresh machine: the buffer is rebuilt from the counters
    tail = [again.next_set() for _ in range(17)]
    assert head + [s.key for s in tail] == keys
    fresh = encode_records(vae, toy_set_records([_index(tail[-1].key)], "train", 16, 2))[0]
    assert torch.equal(tail[-1].latents, fresh.latents)


def test_two_subject_sets_stream_views_of_a_of_b_and_of_both(base):
    """Issue 33: a two_subjects source serves the pair sets of make_pair_set, encoded as the cache would; the
    foreground is both subjects' pixels; short captions keep both class words."""
    from jointdiff.data.toyworld.pairs import make_pair_set

    _, vae = base
    source = ToyWorldSource("train:700", views=4, two_subjects=True)
    attach_vae([source], vae, 16)
    reader = source.reader(seed=0, part=Part())
    got = [reader.next_set() for _ in range(2)]
    expected = encode_records(vae, toy_pair_records([700, 701], "train", 16, 4))
    for g, e, i in zip(got, expected, (700, 701), strict=True):
        assert g.key == e.key == f"toypair-train-{i:09d}" and g.captions == e.captions
        assert torch.equal(g.latents, e.latents) and torch.equal(g.foreground, e.foreground)
        pair = make_pair_set(i, "train", 16, set_size=4)
        a, b = (s.class_word for s in pair.subjects)
        both = g.captions[2]
        assert all(a in c and b in c for c in both)  # the full and the short caption of a view of both
        assert g.foreground.shape[0] == 4 and (g.foreground.flatten(1).sum(1) > 0).all()
        assert torch.equal(g.regions, e.regions) and g.regions.shape == (4, *g.latents.shape[2:])
        assert (g.regions[0] == 0).all() and (g.regions[1] == 1).all()  # views of A alone, of B alone
        both = g.regions[2].long()
        assert set(both.unique().tolist()) == {0, 1}  # a view of both: each subject's pixels (and half)
    with pytest.raises(ValueError, match="at least 2 views"):
        ToyWorldSource("train:0", views=1, two_subjects=True)
    with pytest.raises(ValueError, match="only for format toyworld"):
        SourceConfig(path="/x", format="latents", two_subjects=True)


def test_bad_specs_and_options_are_refused():
    with pytest.raises(ValueError, match="SPLIT:START"):
        parse_spec("train")
    with pytest.raises(ValueError, match="SPLIT:START"):
        ToyWorldSource("tran:5")
    with pytest.raises(ValueError, match="the train range has"):
        ToyWorldSource("train:900000000")
    with pytest.raises(ValueError, match="refresh"):
        ToyWorldSource("train:0", refresh=0.0)
    with pytest.raises(ValueError, match="no VAE attached"):
        ToyWorldSource("train:0").reader(0, Part())
    with pytest.raises(ValueError, match="only for format toyworld"):
        SourceConfig(path="/x", format="latents", buffer=4)


def _overrides(root, out, **extra):
    base = {
        "train.log_every": "2",
        "train.checkpoint_every": "2",
        "data.resolution": "16",
        "data.batch_size": "2",
        "data.set_size": "[1, 2]",
        "data.sources": (
            "[{path = 'train:0', format = 'toyworld', buffer = 4, refresh = 0.5, max_set_size = 2},"
            " {path = 'train:900', format = 'toyworld', max_set_size = 1, weight = 0.5}]"
        ),
        "model.source": repr(str(root / "base")),
        "objective.foreground_weight": "4.0",
        "optim.learning_rate": "1e-3",
        "optim.warmup_steps": "1",
    }
    return cpu_run_overrides(out, base, **extra)


def test_training_on_the_stream_resumes_exactly(base, tmp_path):
    root, _ = base
    full = train(load_config(None, _overrides(root, tmp_path / "a", **{"train.max_steps": "4"})))
    part = train(
        load_config(None, _overrides(root, tmp_path / "b", **{"train.max_steps": "4", "train.stop_after": "2"}))
    )
    rest = train(load_config(None, _overrides(root, tmp_path / "b", **{"train.max_steps": "4"})))
    assert full.finished and not part.finished and rest.finished
    assert np.isfinite(full.losses).all()
    assert part.losses + rest.losses == pytest.approx(full.losses, rel=1e-5)


def test_training_on_two_subject_sets(base, tmp_path):
    """Issue 33: a run mixing two-subject sets in trains (finite losses) and resumes exactly like any toyworld run."""
    root, _ = base
    sources = (
        "[{path = 'train:0', format = 'toyworld', max_set_size = 2},"
        " {path = 'train:40', format = 'toyworld', two_subjects = true, max_set_size = 3}]"
    )
    extra = {"train.max_steps": "3", "data.sources": sources, "data.set_size": "[2, 3]"}
    full = train(load_config(None, _overrides(root, tmp_path / "a", **extra)))
    part = train(load_config(None, _overrides(root, tmp_path / "b", **extra, **{"train.stop_after": "1"})))
    rest = train(load_config(None, _overrides(root, tmp_path / "b", **extra)))
    assert full.finished and not part.finished and rest.finished
    assert np.isfinite(full.losses).all() and list(part.losses) + list(rest.losses) == list(full.losses)
    # the region bias trained in (labels from the pair sets): the same draws, other losses where pair sets carry
    # references; it resumes exactly as well
    bias = {**extra, "objective.region_bias": "8"}
    biased = train(load_config(None, _overrides(root, tmp_path / "c", **bias)))
    part = train(load_config(None, _overrides(root, tmp_path / "d", **bias, **{"train.stop_after": "1"})))
    rest = train(load_config(None, _overrides(root, tmp_path / "d", **bias)))
    assert list(part.losses) + list(rest.losses) == list(biased.losses)
    assert list(biased.losses) != list(full.losses)
