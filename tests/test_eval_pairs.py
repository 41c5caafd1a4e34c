"""Scoring two-subject images per subject (issue 33): regions, crops, assignment, leakage and the summary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jointdiff.evaluation.toy.benchmark import ToyWorldBenchmark
from jointdiff.evaluation.toy.pairs import (
    PairScorer,
    components,
    pair_cases,
    pair_prompts,
    regions,
    render_pairs,
    score_regions,
    single_prompts,
    split_columns,
    subject_crop,
    summarise,
)


def _box(mask: np.ndarray, top: int, left: int, h: int, w: int) -> np.ndarray:
    mask[top : top + h, left : left + w] = True
    return mask


def test_components_split_and_regions_on_hand_made_masks():
    m = np.zeros((32, 32), bool)
    _box(m, 4, 2, 10, 6)  # 60 px
    _box(m, 20, 20, 8, 10)  # 80 px
    m[0, 31] = True  # one-pixel noise
    comps = components(m)
    assert [int(c.sum()) for c in comps] == [80, 60, 1]
    assert not (comps[0] & comps[1]).any() and (comps[0] | comps[1] | comps[2]).sum() == m.sum()
    found = regions(m)  # noise below MIN_AREA dropped, the two largest kept
    assert [int(r.sum()) for r in found] == [80, 60]
    touching = np.zeros((32, 32), bool)
    _box(touching, 10, 2, 10, 12)
    _box(touching, 14, 14, 6, 14)  # joined to the first at column 14
    left, right = split_columns(touching)
    assert np.nonzero(left)[1].max() < np.nonzero(right)[1].min()
    assert (left | right).sum() == touching.sum() and len(regions(touching)) == 2
    lopsided = np.zeros((32, 32), bool)
    _box(lopsided, 0, 0, 30, 30)
    lopsided[31, 31] = False
    assert len(regions(lopsided)) == 2  # a square splits evenly: 2-means cuts it in halves
    thin = np.zeros((32, 32), bool)
    _box(thin, 0, 5, 30, 1)
    assert split_columns(thin) is None and len(regions(thin)) == 1  # one column: nothing to split


def test_subject_crop_frames_the_subject_and_paints_over_the_other():
    image = np.full((40, 40, 3), 50, np.uint8)
    own = _box(np.zeros((40, 40), bool), 10, 4, 10, 10)
    other = _box(np.zeros((40, 40), bool), 10, 15, 10, 10)
    image[own] = (255, 0, 0)
    image[other] = (0, 0, 255)
    crop = np.asarray(subject_crop(image, own, other))
    assert crop.shape == (40, 40, 3)
    assert (crop[..., 2] > 200).sum() == 0  # the other subject is gone (painted in the background colour)
    red = (crop[..., 0] > 200) & (crop[..., 1] < 50)
    assert 0.3 < red.mean() < 0.7  # the subject fills the crop, with a margin around it
    kept = np.asarray(subject_crop(image, own, None))
    assert (kept[..., 2] > 200).sum() > 0  # without ``other`` the neighbour stays
    with pytest.raises(ValueError, match="empty region"):
        subject_crop(image, np.zeros((40, 40), bool))


def _crops_from(feats: dict[int, torch.Tensor]):
    """A stand-in encoder: a region's feature is looked up by its pixel count."""

    def encode(pairs):
        return torch.stack([feats[int(own.sum())] for own, _ in pairs])

    return encode


def test_assignment_identity_and_leakage_on_hand_made_features():
    e = torch.eye(3)
    galleries = (e[[0]], e[[1]])  # A's views along axis 0, B's along axis 1
    image = np.zeros((16, 16, 3), np.uint8)
    r1 = _box(np.zeros((16, 16), bool), 0, 0, 2, 2)  # 4 px
    r2 = _box(np.zeros((16, 16), bool), 8, 8, 3, 3)  # 9 px
    feats = {4: torch.tensor([0.2, 0.9, 0.0]), 9: torch.tensor([0.8, 0.1, 0.0])}  # r1 looks like B, r2 like A
    s = score_regions(_crops_from(feats), image, [r1, r2], galleries, assign=True)
    assert s.found == 2 and s.identity == pytest.approx((0.8, 0.9)) and s.leakage == pytest.approx((0.1, 0.2))
    exact = score_regions(_crops_from(feats), image, [r1, r2], galleries, assign=False)  # order given: r1 is A
    assert exact.identity == pytest.approx((0.2, 0.1)) and exact.leakage == pytest.approx((0.9, 0.8))
    one = score_regions(_crops_from(feats), image, [r1], galleries, assign=True)
    assert one.found == 1 and one.identity == (None, pytest.approx(0.9)) and one.leakage == (None, pytest.approx(0.2))
    assert score_regions(_crops_from(feats), image, [], galleries, assign=True).identity == (None, None)
    hidden = score_regions(_crops_from(feats), image, [np.zeros_like(r1), r2], galleries, assign=False)
    assert hidden.found == 1 and hidden.identity == (None, pytest.approx(0.1))  # A out of sight; r2 is B here


def test_summary_normalises_per_case_and_counts_missing_subjects_at_the_floor():
    def row(a, b, found=2):
        return {"id_a": a, "id_b": b, "leak_a": 0.0, "leak_b": 0.1, "found": found, "clip_t": 0.5}

    rows = {
        "real": {"c1": [row(0.8, 0.6)], "c2": [row(0.9, 0.9)]},
        "floor": {"c1": [row(0.2, 0.2)], "c2": [row(0.1, 0.1)]},
        "model": {"c1": [row(0.5, None, 1), row(0.5, 0.4)], "c2": [row(0.5, 0.5)]},
    }
    s = summarise(rows, real="real", floor="floor")
    # c1: A (0.5 - 0.2) / 0.6 = 0.5; B: missing counts 0.2 -> mean (0.2, 0.4) = 0.3 -> 0.25; c2: 0.5 and 0.5
    assert s["model"]["PartID (norm)"] == pytest.approx((0.5 + 0.25 + 0.5 + 0.5) / 4)
    assert s["real"]["PartID (norm)"] == pytest.approx(1.0) and s["floor"]["PartID (norm)"] == pytest.approx(0.0)
    assert s["model"]["found"] == pytest.approx((0.75 + 1.0) / 2)
    assert s["model"]["leakage"] == pytest.approx(0.05) and s["model"]["CLIP-T"] == pytest.approx(0.5)


def test_real_renders_score_above_the_floor_with_the_shipped_evaluators():
    """The ruler on two-subject scenes: each real subject's crop matches its own views far better than the floor's
    subjects do, leaks little onto the other, and the segmented path finds both subjects (2 cases x 3 scenes)."""
    from jointdiff.evaluation.toy.evaluators import load_toy_dual, load_toy_parts, load_toy_segmenter

    subjects = ToyWorldBenchmark(subjects=3, part="tuning").subjects()
    scorer = PairScorer(load_toy_parts(), load_toy_segmenter(), load_toy_dual())
    cases = pair_cases(subjects)[:2]
    assert len(pair_cases(subjects)) == 3 and pair_cases(subjects[:2])[0].b is subjects[1]
    own, floor, leak, found = [], [], [], []
    for case in cases:
        templates = ["a {} on the beach", "a {} in the snow", "a {} on top of a wooden floor"]
        prompts = pair_prompts(case, templates)
        assert all(case.a.class_word in p and case.b.class_word in p for p in prompts)
        assert single_prompts(case, templates)[0] == f"a {case.a.class_word} on the beach".replace("a a", "an a")
        real = render_pairs(case, templates, 64)
        rows = scorer.score_two(case, [v.pil() for v in real], prompts, [v.masks for v in real])
        fl = render_pairs(case, templates, 64, floor=True)
        floor_rows = scorer.score_two(case, [v.pil() for v in fl], prompts, [v.masks for v in fl])
        seg = scorer.score_two(case, [v.pil() for v in real], prompts)
        own += [r[k] for r in rows for k in ("id_a", "id_b")]
        floor += [r[k] for r in floor_rows for k in ("id_a", "id_b")]
        leak += [r[k] for r in rows for k in ("leak_a", "leak_b")]
        found += [r["found"] for r in seg]
    assert np.mean(own) > np.mean(floor) + 0.4
    assert np.mean(leak) < np.mean(floor) + 0.1
    assert np.mean(found) >= 1.8


def test_pair_probe_measures_the_shipped_miniature_on_tuning_pairs():
    """The ``toyworld_pairs`` monitor's probe: keys, ranges, and determinism (2 tuning subjects: one pair, 2 steps)."""
    from jointdiff.common.paths import shipped_model
    from jointdiff.evaluation.toy.pairs import pair_probe
    from jointdiff.jedi.pipeline import JointDiffusionPipeline

    if shipped_model() is None:
        pytest.skip("no shipped miniature in this install")
    pipe = JointDiffusionPipeline.from_pretrained(str(shipped_model()))
    pipe.set_progress_bar_config(disable=True)
    out = pair_probe(pipe, subjects=2, steps=2)
    assert set(out) == {"pairs_normalised", "pairs_identity", "pairs_found", "pairs_leakage"}
    assert 0.0 <= out["pairs_found"] <= 1.0 and -1.0 <= out["pairs_identity"] <= 1.0
    assert pair_probe(pipe, subjects=2, steps=2) == out
