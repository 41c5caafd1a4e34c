"""S3 grouping (Algorithm 1, lines 13-15) and the pure image helpers, on hand-made inputs."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

from jointdiff.data.s3.grouping import adjacency, affinity, connected_components, group_instances, split_component
from jointdiff.data.s3.stages import cut_instance, paste_on_canvas, select_boxes


def sym(k: int, edges: dict[tuple[int, int], float], off: float = 0.1) -> np.ndarray:
    """A symmetric affinity matrix with ones on the diagonal and the given pair values."""
    a = np.full((k, k), off)
    np.fill_diagonal(a, 1.0)
    for (i, j), v in edges.items():
        a[i, j] = a[j, i] = v
    return a


def test_threshold_is_strict_and_diagonal_ignored():
    a = sym(3, {(0, 1): 0.95, (1, 2): 0.9501})
    m = adjacency(a, 0.95)
    assert m.tolist() == [[False, False, False], [False, False, True], [False, True, False]]  # A_ij > 0.95, not >=


def test_components_are_transitive():
    # 0-1 and 1-2 are edges, 0-2 is not: one component {0, 1, 2} (a chain), plus {3, 4} and {5}
    a = sym(6, {(0, 1): 0.97, (1, 2): 0.96, (0, 2): 0.5, (3, 4): 0.99})
    assert connected_components(adjacency(a)) == [[0, 1, 2], [3, 4], [5]]


def test_asymmetric_affinity_needs_both_directions():
    a = sym(2, {})
    a[0, 1] = 0.99  # only one direction above the threshold
    assert connected_components(adjacency(a)) == [[0], [1]]


def test_group_sizes_min_and_max():
    a = sym(8, {(i, j): 0.99 for i in range(6) for j in range(i + 1, 6)})  # a 6-clique, then 6 and 7 alone
    sets, dropped = group_instances(a, threshold=0.95, min_size=2, max_size=4)
    assert sets == [[0, 1, 2], [3, 4, 5]]  # 6 split evenly into 3 + 3, not 4 + 2
    assert dropped == 2  # the two singletons
    assert split_component(list(range(5)), 4) == [[0, 1], [2, 3, 4]]
    assert split_component(list(range(4)), 4) == [[0, 1, 2, 3]]


def test_affinity_is_cosine_of_features():
    f = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    a = affinity(f)
    np.testing.assert_allclose(np.diag(a), 1.0)
    assert a[0, 1] == pytest.approx(1.0) and a[0, 2] == pytest.approx(0.0)
    assert a[0, 3] == pytest.approx(np.sqrt(0.5))
    assert group_instances(a, 0.95)[0] == [[0, 1]]


def test_select_boxes_area_nms_and_cap():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 100, 100], [50, 50, 51, 51]], float)
    scores = np.array([0.5, 0.9, 0.8, 0.99, 0.7])
    # box 3 covers the whole image (too large), box 4 is 1 px (too small), box 0 duplicates box 1
    assert select_boxes(boxes, scores, (100, 100), nms_iou=0.5, min_fraction=0.001, max_fraction=0.8) == [1, 2]
    assert select_boxes(boxes, scores, (100, 100), min_fraction=0.001, max_boxes=1) == [1]


def test_cut_and_paste_keep_the_object_and_mask_the_background():
    image = PIL.Image.new("RGB", (40, 30), (0, 0, 255))
    mask = np.zeros((30, 40), bool)
    mask[5:15, 10:30] = True  # a 20 x 10 object
    inst = cut_instance(image, np.array([10, 5, 30, 15]), mask, 0.8)
    assert inst.image.size == (20, 10) and inst.box == (10, 5, 30, 15)
    assert np.asarray(inst.image.getchannel("A")).min() == 255
    canvas, inpaint_mask, (x0, y0, x1, y1) = paste_on_canvas(inst.image, 64, np.random.default_rng(3), (0.5, 0.5))
    assert (x1 - x0, y1 - y0) == (32, 16)  # longer side = 0.5 * 64, aspect kept
    assert x0 >= 0 and y0 >= 0 and x1 <= 64 and y1 <= 64
    m, c = np.asarray(inpaint_mask), np.asarray(canvas)
    assert (m[y0:y1, x0:x1] == 0).all() and (m == 0).sum() == 32 * 16  # keep exactly the object
    assert (c[y0:y1, x0:x1] == [0, 0, 255]).all() and (c[m == 255] == 255).all()
    again = paste_on_canvas(inst.image, 64, np.random.default_rng(3), (0.5, 0.5))
    assert again[2] == (x0, y0, x1, y1)  # the location is a function of the seed
