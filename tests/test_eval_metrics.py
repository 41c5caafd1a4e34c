"""Metrics on hand-made features (known cosines), the protocol's averaging, masks and cut-outs."""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import pytest
import torch

from jointdiff.evaluation.metrics import (
    clip_t_prompt,
    cosine_matrix,
    diversity,
    image_alignment,
    self_similarity,
    text_alignment,
)
from jointdiff.evaluation.scoring import aggregate
from jointdiff.evaluation.segmenters import check_mask, cutout

S = 0.6  # cos between e0 and (0.6, 0.8)


def test_cosines_of_hand_made_vectors():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # unnormalised on purpose: metrics normalise
    b = torch.tensor([[0.6, 0.8], [3.0, 0.0], [0.0, -1.0]])
    expected = torch.tensor([[0.6, 1.0, 0.0], [0.8, 0.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(cosine_matrix(a, b), expected)
    torch.testing.assert_close(image_alignment(a, b), expected.mean(1))  # CLIP-I / DINO: mean over real images
    torch.testing.assert_close(text_alignment(a, b[:2]), torch.tensor([0.6, 0.0], dtype=torch.float64))


def test_diversity_and_self_similarity():
    e = torch.eye(3)
    assert diversity(e) == pytest.approx(1.0)  # orthogonal: distance 1
    assert diversity(torch.ones(4, 5)) == pytest.approx(0.0)  # identical images: no diversity
    x = torch.tensor([[1.0, 0.0], [S, 0.8], [-1.0, 0.0]])
    pairs = [S, -1.0, -S]  # (0,1), (0,2), (1,2)
    assert self_similarity(x) == pytest.approx(sum(pairs) / 3)
    assert diversity(x) == pytest.approx(1 - sum(pairs) / 3)
    assert math.isnan(diversity(torch.ones(1, 3)))


def test_metric_input_errors():
    with pytest.raises(ValueError, match="feature sizes differ"):
        cosine_matrix(torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="one text per image"):
        text_alignment(torch.ones(2, 3), torch.ones(3, 3))
    with pytest.raises(ValueError, match="at least one real image"):
        image_alignment(torch.ones(2, 3), torch.ones(0, 3))


def test_clip_t_prompt_replaces_identifier_by_class_word():
    assert clip_t_prompt("a sks dog in the jungle", "dog", "sks") == "a dog in the jungle"
    assert clip_t_prompt("sks dog", "dog", "sks") == "dog"
    assert clip_t_prompt("a sksy dog", "dog", "sks") == "a sksy dog"  # whole words only
    assert clip_t_prompt("a dog", "dog") == "a dog"


def test_aggregate_averages_choices_then_prompts_then_subjects():
    # subject A: prompt p has 2 images (two input choices), prompt q 1 image; subject B: one image.
    rows = [
        {"subject": "A", "template": "p", "DINO": 0.2, "path": "x"},
        {"subject": "A", "template": "p", "DINO": 0.4, "path": "x"},
        {"subject": "A", "template": "q", "DINO": 0.9, "path": "x"},
        {"subject": "B", "template": "p", "DINO": 0.5, "path": "x"},
        {"subject": "B", "template": "p", "Diversity": 0.7},  # a group row: no image, only diversity
    ]
    out = aggregate(rows, ["DINO", "Diversity"])
    assert out["subjects"]["A"]["DINO"] == pytest.approx((0.3 + 0.9) / 2)  # cell means, then prompts
    assert out["subjects"]["A"]["images"] == 3 and out["subjects"]["B"]["images"] == 1
    assert out["prompts"]["p"]["DINO"] == pytest.approx((0.3 + 0.5) / 2)  # over subjects
    assert out["overall"]["DINO"] == pytest.approx((0.6 + 0.5) / 2)  # subjects weigh equally
    assert out["overall"]["Diversity"] == pytest.approx(0.7)  # subjects without a value are skipped
    assert out["subjects"]["A"]["Diversity"] is None


def test_cutout_fills_background_and_crops_square_around_subject():
    x = np.zeros((20, 30, 3), dtype=np.uint8) + 255
    x[5:9, 10:16] = (10, 20, 30)
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:9, 10:16] = True
    out = np.asarray(cutout(PIL.Image.fromarray(x), mask, fill=(1, 2, 3)))
    assert out.shape == (6, 6, 3)  # the square of side max(4, 6) centred on the mask
    assert (out[(out != (1, 2, 3)).any(-1)] == (10, 20, 30)).all()  # only subject pixels survive
    assert ((out == (10, 20, 30)).all(-1)).sum() == 4 * 6
    empty = np.asarray(cutout(PIL.Image.fromarray(x), np.zeros((20, 30), bool)))
    assert empty.shape == (20, 30, 3) and (empty == 0).all()
    with pytest.raises(ValueError, match="does not match image size"):
        check_mask(np.zeros((30, 20), bool), PIL.Image.fromarray(x))
    with pytest.raises(ValueError, match="must be bool"):
        check_mask(np.zeros((20, 30), np.uint8), PIL.Image.fromarray(x))
