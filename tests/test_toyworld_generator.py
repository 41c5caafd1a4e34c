"""Toy world: subjects, renders, masks, edits (determinism, variety, mask exactness)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jointdiff.data.toyworld.edits import apply_condition
from jointdiff.data.toyworld.generator import make_set, render_view, view_rng
from jointdiff.data.toyworld.raster import rgb_to_hsv
from jointdiff.data.toyworld.render import Light, Pose, draw_subject, fit_pose
from jointdiff.data.toyworld.stats import variety_stats
from jointdiff.data.toyworld.subjects import SEED_RANGES, make_subject, split_of, subject_seed

POSE = Pose(yaw=0.3, flip=False, roll=0.05, scale=0.7, cx=0.5, base=0.88)
LIGHT = Light(direction=(0.4, 0.5, 0.77), color=(1.0, 1.0, 1.0), intensity=0.8, ambient=0.4)


def test_same_seed_same_pixels():
    a, b = make_set(7), make_set(7)
    assert a.key == b.key == "toy-train-000000007"
    assert a.subject == b.subject
    assert [v.caption for v in a.views] == [v.caption for v in b.views]
    for va, vb in zip(a.views, b.views, strict=True):
        assert np.array_equal(va.image, vb.image) and np.array_equal(va.mask, vb.mask)
    c = make_set(8)
    assert c.subject != a.subject
    assert not np.array_equal(c.views[0].image, a.views[0].image)


def test_sets_have_2_to_4_views_of_one_subject():
    sizes = {len(make_set(i, resolution=16).views) for i in range(12)}
    assert sizes <= {2, 3, 4} and len(sizes) >= 2
    s = make_set(3, resolution=32, set_size=3)
    assert len(s.views) == 3
    assert all(v.image.shape == (32, 32, 3) and v.image.dtype == np.uint8 for v in s.views)
    assert all(v.mask.shape == (32, 32) and v.mask.dtype == bool for v in s.views)


def test_seed_ranges_are_disjoint_and_checked():
    ranges = sorted(SEED_RANGES.values(), key=lambda r: r.start)
    assert all(r1.stop <= r2.start for r1, r2 in itertools.pairwise(ranges))
    assert subject_seed("eval", 0) == SEED_RANGES["eval"].start
    assert split_of(subject_seed("evaluator", 5)) == "evaluator"
    with pytest.raises(ValueError, match="outside split"):
        subject_seed("train", len(SEED_RANGES["train"]))
    with pytest.raises(ValueError, match="unknown split"):
        subject_seed("test", 0)


def test_variety_over_1000_subjects():
    s = variety_stats("train", 1000, render_resolution=0)
    assert s["distinct_specs"] == 1000  # no two subjects are identical
    assert s["classes"] >= 18 and max(s["class_fractions"].values()) < 0.25
    assert 0.2 <= s["unusual_fraction"] <= 0.45  # the paper's hard case is common
    assert 0.08 <= s["live_fraction"] <= 0.3
    assert len(s["body_colour_fractions"]) >= 10 and max(s["body_colour_fractions"].values()) < 0.3
    assert len(s["body_texture_fractions"]) == 7
    assert s["distinct_coarse_signatures"] >= 650  # (recipe, descriptor, part shapes) alone already differ


def test_pixel_variety_small_sample():
    s = variety_stats("eval", 60, render_resolution=24)["pixels"]
    assert s["near_duplicates_rms_below_0.02"] == 0
    assert 0.05 < s["mask_area"]["mean"] < 0.6 and s["mask_area"]["min"] > 0.01


def test_draw_subject_is_premultiplied_and_mask_is_coverage():
    subject = make_subject(subject_seed("eval", 3))
    rgb, alpha = draw_subject(subject, fit_pose(POSE, subject), LIGHT, 48, 48)
    assert rgb.shape == (48, 48, 3) and alpha.shape == (48, 48)
    assert alpha.min() >= 0 and alpha.max() <= 1 + 1e-6
    assert np.all(rgb <= alpha[..., None] + 1e-5)  # premultiplied: no colour outside the coverage
    assert 0.05 < (alpha > 0.5).mean() < 0.7
    # compositing on black and on white differs exactly where coverage < 1
    on_black, on_white = rgb, rgb + (1 - alpha[..., None])
    assert np.allclose(on_black[alpha > 0.999], on_white[alpha > 0.999], atol=1e-3)
    assert np.allclose(on_white[alpha < 1e-4], 1.0)


def test_masks_follow_geometry_not_background_or_style():
    subject = make_subject(subject_seed("eval", 5))
    pose = fit_pose(POSE, subject)
    studio = render_view(subject, "studio", view_rng(1, 0), 48, pose=pose)
    city = render_view(subject, "city", view_rng(1, 0), 48, pose=pose)
    assert np.array_equal(studio.mask, city.mask)  # same pose, different scene: same mask
    plain = render_view(subject, "snow", view_rng(1, 1), 48, pose=pose)
    sketch = render_view(subject, "snow", view_rng(1, 1), 48, pose=pose, style="sketch")
    assert np.array_equal(plain.mask, sketch.mask)  # the style keeps the geometry
    assert not np.array_equal(plain.image, sketch.image)
    water = render_view(subject, "water", view_rng(1, 2), 48, pose=pose)
    assert np.all(water.mask <= studio.mask) and water.mask.sum() < studio.mask.sum()  # the water hides the base


def test_resolution_changes_detail_not_layout():
    subject = make_subject(subject_seed("eval", 9))
    lo = render_view(subject, "beach", view_rng(2, 0), 32)
    hi = render_view(subject, "beach", view_rng(2, 0), 64)
    down = hi.mask.reshape(32, 2, 32, 2).mean((1, 3)) > 0.5  # (64, 64) -> (32, 32)
    assert (down & lo.mask).sum() / (down | lo.mask).sum() > 0.8
    assert lo.caption == hi.caption


def test_condition_edits():
    subject = make_subject(subject_seed("eval", 2))
    assert apply_condition(subject, "jungle") is subject
    red = apply_condition(subject, "red")
    hues = [rgb_to_hsv(p.color)[0] for p in red.parts if p.role in ("body", "head", "limb")]
    assert all(h < 0.02 or h > 0.98 for h in hues)
    cube = apply_condition(subject, "cube")
    assert all(p.kind == "box" and p.size[0] == p.size[1] for p in cube.parts if p.role in ("body", "head"))
    hat = apply_condition(subject, "red_hat")
    assert len(hat.parts) > len(subject.parts) and hat.parts[: len(subject.parts)] == subject.parts
    assert apply_condition(subject, "shiny").shininess == 1.0
    with pytest.raises(ValueError, match="unknown condition"):
        apply_condition(subject, "moon")


def test_bad_inputs_are_one_line_errors():
    subject = make_subject(0)
    with pytest.raises(ValueError, match="unknown style"):
        render_view(subject, "snow", view_rng(0), 32, style="cubism")
    with pytest.raises(ValueError, match="resolution"):
        render_view(subject, "snow", view_rng(0), 4)
    with pytest.raises(ValueError, match="non-negative"):
        make_subject(-1)
