"""The toy Frechet distance (issue 27): torchmetrics' FID on toy-CLIP pool features, checked against the
closed form on the same features, zero for a set against itself, and larger for blurred renders."""

from __future__ import annotations

import PIL.ImageFilter
import pytest
import torch

from jointdiff.data.toyworld.generator import make_set
from jointdiff.evaluation.toy.evaluators import to_tensor
from jointdiff.evaluation.toy.frechet import frechet_distance, toy_features


@pytest.fixture(scope="module")
def renders(one_thread):
    a = [v.pil() for i in range(24) for v in make_set(i, "eval", 64, set_size=2, style_p=0.0, keep_identity=True).views]
    b = [
        v.pil()
        for i in range(24)
        for v in make_set(i, "eval", 64, set_size=4, style_p=0.0, keep_identity=True).views[2:]
    ]
    return a, b


def _closed_form(x: torch.Tensor, y: torch.Tensor) -> float:
    """||mu_x - mu_y||^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2)), unbiased covariances (Heusel et al. 2017)."""
    mx, my = x.mean(0), y.mean(0)
    sx, sy = torch.cov(x.T), torch.cov(y.T)
    root = torch.linalg.eigvals(sx @ sy).sqrt().real.sum()
    return float((mx - my).square().sum() + sx.trace() + sy.trace() - 2 * root)


def test_matches_the_closed_form_on_the_same_features(renders):
    a, b = renders
    features = toy_features()
    fx, fy = features(to_tensor(a, 64)), features(to_tensor(b, 64))
    assert fx.shape == (48, features.num_features) and fx.dtype == torch.float64
    assert frechet_distance(a, b, features) == pytest.approx(_closed_form(fx, fy), rel=1e-3, abs=1e-3)


def test_zero_against_itself_and_larger_when_blurred(renders):
    a, b = renders
    features = toy_features()
    assert frechet_distance(a, a, features) == pytest.approx(0.0, abs=1e-3)
    sharp = frechet_distance(a, b, features)
    blurred = frechet_distance(a, [im.filter(PIL.ImageFilter.GaussianBlur(2)) for im in b], features)
    assert blurred > sharp + 1.0
    with pytest.raises(ValueError, match="at least 2 images"):
        frechet_distance(a[:1], b, features)
