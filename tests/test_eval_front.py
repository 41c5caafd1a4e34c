import pytest

from jointdiff.evaluation.front import front_gaps, pareto

# a DreamBooth-like curve in (CLIP-T, DINO): training raises DINO and lowers CLIP-T; (0.5, 0.5) lies behind
CURVE = [(0.8, 0.2), (0.7, 0.4), (0.6, 0.6), (0.5, 0.5), (0.4, 0.7)]


def test_pareto_keeps_the_points_nothing_beats_on_both_axes():
    assert pareto(CURVE) == [(0.4, 0.7), (0.6, 0.6), (0.7, 0.4), (0.8, 0.2)]
    assert pareto([(0.5, 0.5), (0.5, 0.5)]) == [(0.5, 0.5)]


def test_front_gaps_interpolate_the_front_linearly():
    front = pareto(CURVE)
    dd, dc = front_gaps(front, (0.65, 0.6))  # the front at CLIP-T 0.65 is DINO 0.5; at DINO 0.6, CLIP-T 0.6
    assert dd == pytest.approx(0.1) and dc == pytest.approx(0.05)
    dd, dc = front_gaps(front, (0.5, 0.5))  # behind the front: both gaps negative
    assert dd == pytest.approx(-0.15) and dc == pytest.approx(-0.15)
    assert front_gaps(front, (0.6, 0.6)) == (pytest.approx(0.0), pytest.approx(0.0))  # on it


def test_front_gaps_outside_the_range_the_checkpoints_reach():
    front = pareto(CURVE)
    # lower CLIP-T than any checkpoint: the front's DINO there is its highest (0.7)
    dd, dc = front_gaps(front, (0.3, 0.75))
    assert dd == pytest.approx(0.05) and dc is None  # no checkpoint reaches DINO 0.75
    # higher CLIP-T than any checkpoint: no DINO gap; at DINO 0.1 the front reaches CLIP-T 0.8
    dd, dc = front_gaps(front, (0.85, 0.1))
    assert dd is None and dc == pytest.approx(0.05)
