"""Issue 26's ruler: impostors (subject- and image-level), the ladder's normalisation and verdict, the
part-aware encoder's training pieces (blur parity, deterministic batches, the loss's hard negatives)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jointdiff.data.toyworld.impostors import (
    KEEP_ROLES,
    blurred,
    palette_matched,
    parts_changed,
    recoloured,
    same_class_subject,
    silhouette,
)
from jointdiff.data.toyworld.parts import Part
from jointdiff.data.toyworld.raster import blur, rgb_to_hsv
from jointdiff.data.toyworld.subjects import make_subject, subject_seed, with_parts
from jointdiff.evaluation.toy.ladder import FLOOR, REAL, RUNGS, score_rungs, verdict


@pytest.fixture(scope="module")
def subject():
    return make_subject(subject_seed("eval", 3))


def _hue(c):
    return rgb_to_hsv(c)[0]


def test_recoloured_turns_every_hue_and_keeps_the_parts(subject):
    turned = recoloured(subject, 0.5)
    assert len(turned.parts) == len(subject.parts)
    for a, b in zip(subject.parts, turned.parts, strict=True):
        assert (a.kind, a.texture, a.center, a.size, a.role) == (b.kind, b.texture, b.center, b.size, b.role)
        if a.role in KEEP_ROLES:
            assert a == b
            continue
        h, s, v = rgb_to_hsv(a.color)
        if s >= 0.18:  # a coloured part: hue + 180 degrees, saturation and value kept
            assert abs((_hue(b.color) - h) % 1.0 - 0.5) < 1e-3
            assert rgb_to_hsv(b.color)[1:] == pytest.approx((s, v), abs=1e-3)
        else:  # a neutral part takes a colour
            assert rgb_to_hsv(b.color)[1] == pytest.approx(0.6, abs=1e-3)


def test_recoloured_by_hand():
    red = Part("ellipse", (0, 0.5, 0), (0.3, 0.3), (0.8, 0.1, 0.1))
    white = Part("box", (0, 0.9, 0), (0.1, 0.1), (0.95, 0.95, 0.95), role="head")
    eye = Part("ellipse", (0, 0.9, 0.1), (0.02, 0.02), (0.05, 0.05, 0.05), role="eye")
    s = with_parts(make_subject(1), [red, white, eye])
    out = recoloured(s, 0.5)
    assert out.parts[0].color == pytest.approx((0.1, 0.8, 0.8), abs=1e-6)  # red -> cyan, same s and v
    assert _hue(out.parts[1].color) == pytest.approx(0.5, abs=1e-3)  # white takes the turned body hue
    assert out.parts[2] == eye


def test_parts_changed_keeps_the_palette_and_changes_every_part(subject):
    rng = np.random.default_rng(0)
    changed = parts_changed(subject, rng)
    for a, b in zip(subject.parts, changed.parts, strict=True):
        assert (a.color, a.color2, a.center, a.size, a.role) == (b.color, b.color2, b.center, b.size, b.role)
        if a.role not in KEEP_ROLES:
            assert a.kind != b.kind and a.texture != b.texture
    again = parts_changed(subject, np.random.default_rng(0))
    assert again == changed  # a pure function of the subject and the generator


def test_palette_matched_paints_the_other_subject_by_role(subject):
    other = same_class_subject(subject, np.random.default_rng(1))
    assert other.class_word == subject.class_word and other.seed != subject.seed
    painted = palette_matched(subject, other)
    by_role = {}
    for p in subject.parts:
        by_role.setdefault(p.role, []).append(p.color)
    seen = {}
    for a, b in zip(other.parts, painted.parts, strict=True):
        assert (a.kind, a.texture, a.center, a.size) == (b.kind, b.texture, b.center, b.size)
        if a.role in KEEP_ROLES:
            continue
        options = by_role.get(a.role, [subject.parts[0].color])
        k = seen.get(a.role, 0)
        seen[a.role] = k + 1
        assert b.color == options[k % len(options)]


def test_silhouette_and_blur_by_hand():
    image = np.zeros((8, 8, 3), np.uint8)
    image[2:4, 2:4] = [[[10, 20, 30], [30, 40, 50]], [[10, 20, 30], [30, 40, 50]]]
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    out = silhouette(image, mask)
    assert (out[mask] == [20, 30, 40]).all() and (out[~mask] == 0).all()
    flat = np.full((8, 8, 3), 77, np.uint8)
    assert (blurred(flat, 2.0) == flat).all()  # a blur keeps a constant image
    spot = np.zeros((9, 9, 3), np.uint8)
    spot[4, 4] = 255
    b = blurred(spot, 1.0)
    assert b[4, 4, 0] < 255 and b[4, 5, 0] == b[5, 4, 0] == b[4, 3, 0] > 0  # spread, symmetric


def test_gaussian_blur_of_the_training_equals_the_renderers():
    from jointdiff.training.part_identity import gaussian_blur

    rng = np.random.default_rng(0)
    img = rng.random((16, 16, 3)).astype(np.float32)
    for sigma in (1.0, 3.5):
        ours = gaussian_blur(torch.from_numpy(img).permute(2, 0, 1)[None], sigma)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(ours, blur(img, sigma), atol=1e-5)


def test_scores_normalise_between_the_floor_and_real_views_and_the_verdict_reads_them():
    """A hand-made measure whose features are given per image: the ladder's raw scores are cosine means,
    its normalisation maps the floor rung to 0 and the real rung to 1, and the verdict applies issue 26's bars."""
    import PIL.Image

    from jointdiff.evaluation.toy.ladder import SubjectRungs

    def img(v: int) -> PIL.Image.Image:
        return PIL.Image.new("RGB", (4, 4), (v, 0, 0))

    # feature of an image: a unit vector at angle v degrees in the plane
    def measure(images, masks):
        a = torch.tensor([np.deg2rad(im.getpixel((0, 0))[0]) for im in images], dtype=torch.float64)
        return torch.stack([a.cos(), a.sin()], 1)

    names = [r[0] for r in RUNGS]
    angles = dict.fromkeys(names, 90)  # every impostor orthogonal to the gallery
    angles[REAL], angles[FLOOR], angles[RUNGS[6][0]] = 0, 90, 30
    subjects = []
    for s in range(2):
        rungs = {n: [(img(angles[n]), None)] * 2 for n in names}
        subjects.append(SubjectRungs(make_subject(s), rungs, [(img(0), None)] * 3))
    scores = score_rungs(subjects, {"toy": (measure, False)})["toy"]
    assert scores["raw"][REAL] == pytest.approx(1.0) and scores["raw"][FLOOR] == pytest.approx(0.0, abs=1e-12)
    assert scores["normalised"][RUNGS[6][0]] == pytest.approx(np.cos(np.deg2rad(30)))
    checks = verdict(scores)
    assert all(v for k, v in checks.items() if "top-1" not in k)
    assert not checks["retrieval top-1 >= 0.9"]  # two subjects with the same gallery: retrieval is a coin toss
    angles[RUNGS[4][0]] = 60  # a palette-matched impostor at cos 60 = 0.5 normalised breaks the bar
    subjects[0].rungs[RUNGS[4][0]] = [(img(60), None)] * 2
    subjects[1].rungs[RUNGS[4][0]] = [(img(60), None)] * 2
    assert not verdict(score_rungs(subjects, {"toy": (measure, False)})["toy"])[f"{RUNGS[4][0]} <= 0.3"]


def test_parts_batches_are_a_function_of_seed_and_step_and_the_loss_sees_the_impostors(tmp_path):
    from jointdiff.evaluation.toy.models import EvaluatorConfig, build_model
    from jointdiff.training.part_identity import PartsCache, PartsTraining, build_parts_cache, parts_loss

    cache = PartsCache(build_parts_cache(tmp_path / "c.npz", 6, resolution=32, workers=1), val_subjects=1)
    assert cache.images.shape == (6, 6, 3, 32, 32) and cache.masks[:, :3].any()
    torch.manual_seed(0)
    net = build_model(EvaluatorConfig(kind="identity", resolution=32, widths=(8, 16), pool="attention"))
    cfg = PartsTraining(subjects_per_step=4)
    with torch.no_grad():
        a, b = parts_loss(net, cache, cfg, 3), parts_loss(net, cache, cfg, 3)
        assert float(a) == pytest.approx(float(b))  # same (seed, step): same batch and augmentation
        assert float(parts_loss(net, cache, cfg, 4)) != pytest.approx(float(a))

    # the impostors are negatives: with a measure that sees mean colours (a stand-in network), impostors made
    # identical to the subject's views raise the loss
    class MeanColour(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image = self

        def features(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
            return torch.nn.functional.normalize(x.mean((2, 3)) - 0.45, dim=-1), None

    twin = PartsCache.__new__(PartsCache)
    twin.images, twin.masks, twin.n_train = cache.images.clone(), cache.masks, cache.n_train
    twin.images[:, 3:] = twin.images[:, :3]
    with torch.no_grad():
        assert float(parts_loss(MeanColour(), twin, cfg, 3)) > float(parts_loss(MeanColour(), cache, cfg, 3))


def test_part_difference_by_hand_and_the_palette_rungs_other_subject(subject):
    from jointdiff.data.toyworld.impostors import part_difference

    body = Part("ellipse", (0, 0.5, 0), (0.3, 0.3), (0.8, 0.1, 0.1), texture="stripes")
    head = Part("box", (0, 0.9, 0), (0.1, 0.1), (0.9, 0.9, 0.9), role="head")
    eye = Part("ellipse", (0, 0.9, 0.1), (0.02, 0.02), (0.05, 0.05, 0.05), role="eye")
    a = with_parts(make_subject(1), [body, head, eye])
    assert part_difference(a, a) == 0.0
    b = with_parts(a, [body, head.__class__(**{**head.__dict__, "kind": "ellipse"})])  # the eye does not count
    assert part_difference(a, b) == pytest.approx(1 - 1 / 3)  # shared: the body; union: body, two heads
    assert part_difference(a, with_parts(a, [eye])) == 1.0
    rng = np.random.default_rng(0)
    picked = same_class_subject(subject, np.random.default_rng(0), candidates=4)
    drawn = [same_class_subject(subject, rng) for _ in range(4)]  # the same 4 draws, one at a time
    assert picked == max(drawn, key=lambda o: part_difference(subject, o)) and picked.recipe == subject.recipe
