"""Two-subject scenes and pair sets of the toy world (issue 33)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from jointdiff.data.toyworld.captions import parse_prompt
from jointdiff.data.toyworld.generator import make_set
from jointdiff.data.toyworld.pairs import (
    PAIR_CONDITIONS,
    make_pair_set,
    pair_caption,
    partner_index,
    render_pair_view,
    sample_pair_poses,
    split_phrase,
    view_plan,
    view_regions,
)
from jointdiff.data.toyworld.render import draw_subject, sample_light
from jointdiff.data.toyworld.subjects import SEED_RANGES, make_subject, subject_seed


def test_one_subject_renders_are_unchanged():
    """The compositing shared with two-subject scenes left every single-subject pixel, mask and caption as before
    (digest taken before the change)."""
    h = hashlib.sha256()
    for i in range(12):
        for v in make_set(i, "train", 48, style_p=0.5).views:
            h.update(v.image.tobytes())
            h.update(v.mask.tobytes())
            h.update(v.caption.encode())
    assert h.hexdigest() == "150ae7044aecfd52d8a57056f773fc0c60c198188c755fabc5fa82789a881ff6"


def test_pair_sets_are_pure_functions_of_their_index():
    a, b = make_pair_set(3, "train", 32), make_pair_set(3, "train", 32)
    assert a.shows == b.shows and a.key == b.key
    for u, v in zip(a.views, b.views, strict=True):
        assert np.array_equal(u.image, v.image) and np.array_equal(u.mask, v.mask) and u.caption == v.caption
    assert not np.array_equal(a.views[-1].image, make_pair_set(4, "train", 32).views[-1].image)


def test_pair_views_hold_both_subjects_apart_with_exact_masks():
    """Each subject's mask is its own silhouette at the drawn pose (a neutral setting, nothing in front): the two
    are disjoint, both visible, on opposite sides of the image."""
    a, b = make_subject(subject_seed("train", 10)), make_subject(subject_seed("train", 11))
    apart = 0
    for k in range(20):
        rng = np.random.default_rng([7, k])
        view = render_pair_view((a, b), "studio", rng, 48)
        again = np.random.default_rng([7, k])
        pa, pb = sample_pair_poses(again, a, b, 48, 48)
        light = sample_light(again)
        alpha_a = draw_subject(a, pa, light, 48, 48)[1] > 0.5
        alpha_b = draw_subject(b, pb, light, 48, 48)[1] > 0.5
        assert view.masks.shape == (2, 48, 48) and view.masks.dtype == bool
        assert not (view.masks[0] & view.masks[1]).any()
        assert view.masks[0].any() and view.masks[1].any()
        if not (alpha_a & alpha_b).any():  # apart: nothing hides either subject
            apart += 1
            assert np.array_equal(view.masks[0], alpha_a) and np.array_equal(view.masks[1], alpha_b)
        cols = [np.nonzero(m)[1].mean() for m in view.masks]
        assert (cols[0] < 24) != (cols[1] < 24)  # one left of the centre, the other right
    assert apart >= 18


def test_view_regions_label_each_subject_and_split_the_background_by_halves():
    """Training's region labels (issue 33): a one-subject view is that subject's everywhere; a view of both keeps
    each exact mask and gives the background of each half to the subject on that side."""
    s = make_pair_set(3, "train", 32, set_size=4)
    regions = s.regions()
    assert regions.shape == (4, 32, 32) and regions.dtype == np.int8 and s.shows == ["a", "b", "ab", "ab"]
    assert (regions[0] == 0).all() and (regions[1] == 1).all()
    for view, labels in zip(s.views[2:], regions[2:], strict=True):
        assert (labels[view.masks[0]] == 0).all() and (labels[view.masks[1]] == 1).all()
        left = int(np.nonzero(view.masks[1])[1].mean() < np.nonzero(view.masks[0])[1].mean())  # subject on the left
        background = ~view.mask
        assert (labels[:, :16][background[:, :16]] == left).all()
        assert (labels[:, 16:][background[:, 16:]] == 1 - left).all()
    with pytest.raises(ValueError, match="shows 'a', 'b' or 'ab'"):
        view_regions(s.views[0], "ab")


def test_pair_captions_name_both_subjects_and_parse():
    text = pair_caption("beach", ("dog", "teapot"), ("brown", "orange striped"))
    assert text == "a brown dog and an orange striped teapot on the beach"
    parsed = parse_prompt(text)
    assert parsed.condition == "beach" and split_phrase(parsed.phrase) == ["brown dog", "orange striped teapot"]
    assert pair_caption("studio", ("cat", "vase"), style="sketch") == "a pencil sketch of a cat and a vase"
    s = make_pair_set(5, "train", 32, set_size=4)
    a, b = s.subjects
    for view, shows in zip(s.views, s.shows, strict=True):
        named = {w for w in (a.class_word, b.class_word) if w in view.caption}
        assert named == ({a.class_word, b.class_word} if shows == "ab" else {(a if shows == "a" else b).class_word})


def test_view_plan_and_partners():
    rng = np.random.default_rng(0)
    assert view_plan(4, rng) == ["a", "b", "ab", "ab"] and view_plan(3, rng) == ["a", "b", "ab"]
    assert view_plan(2, rng)[1] == "ab" and view_plan(2, rng)[0] in ("a", "b")
    n = len(SEED_RANGES["eval"])
    for i in range(50):
        j = partner_index(i, "eval")
        assert j != i and 0 <= j < n
    counts = [sum(s == "ab" for s in make_pair_set(i, "train", 16).shows) for i in range(12)]
    assert min(counts) >= 1 and max(counts) <= 2


def test_bad_inputs_are_one_line_errors():
    a, b = make_subject(1), make_subject(2)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="not a scene or neutral setting"):
        render_pair_view((a, b), "red_hat", rng)
    with pytest.raises(ValueError, match="unknown style"):
        render_pair_view((a, b), "beach", rng, style="cubist")
    with pytest.raises(ValueError, match="2 to 16 views"):
        make_pair_set(0, "train", 16, set_size=1)
    assert "red_hat" not in PAIR_CONDITIONS and "studio" in PAIR_CONDITIONS
