"""Toy evaluators: shipped weights (fp16, self-describing), harness interfaces, a held-out sanity check, benchmark."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors import safe_open

from jointdiff.data.toyworld.captions import SCENE_PROMPTS
from jointdiff.data.toyworld.generator import render_view, view_rng
from jointdiff.data.toyworld.subjects import make_subject, subject_seed
from jointdiff.evaluation.features import DualEncoder, ImageEncoder
from jointdiff.evaluation.options import MethodOptions
from jointdiff.evaluation.registry import BACKBONES, BENCHMARKS, METHODS, SEGMENTERS, resolve
from jointdiff.evaluation.toy.evaluators import (
    WEIGHTS_DIR,
    iou,
    load_toy_dual,
    load_toy_identity,
    load_toy_segmenter,
    retrieval_top1,
)
from jointdiff.evaluation.toy.models import EvaluatorConfig, build_model, load_model, save_model

KINDS = ("dual", "identity", "segmenter", "parts")
ARCHITECTURE = {"parts": "identity"}  # the part-aware identity is the identity network with other weights


@pytest.fixture(scope="module")
def evaluators():
    torch.set_num_threads(1)
    return load_toy_dual(), load_toy_identity(), load_toy_segmenter()


@pytest.fixture(scope="module")
def held_out():
    """8 held-out subjects x 4 scenes (64 px), never seen in training (eval seed range)."""
    scenes = ("jungle", "snow", "city", "water")
    specs = [make_subject(subject_seed("eval", 500 + i)) for i in range(8)]
    return specs, [[render_view(s, c, view_rng(s.seed, 99, k), 64) for k, c in enumerate(scenes)] for s in specs]


def test_shipped_weights_are_small_fp16_and_self_describing():
    for kind in KINDS:
        path = WEIGHTS_DIR / f"{kind}.safetensors"
        assert path.stat().st_size < 5_000_000
        with safe_open(str(path), framework="pt") as f:
            cfg = EvaluatorConfig.from_json(f.metadata()["config"])
            dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118
        assert cfg.kind == ARCHITECTURE.get(kind, kind) and torch.float16 in dtypes and torch.float32 not in dtypes
    card = (WEIGHTS_DIR / "MODEL_CARD.md").read_text()
    assert "jointdiff toyworld train-evaluators" in card


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = EvaluatorConfig(
        kind="dual", widths=(8, 16), embed_dim=16, text_width=16, text_heads=2, text_layers=1, vocab=("a", "toy")
    )
    net = build_model(cfg).eval()
    back = load_model(save_model(net, tmp_path / "d.safetensors"))
    assert back.cfg == cfg
    x = torch.rand(2, 3, 64, 64)
    ids = net.tokenize(["a toy", "a sks toy"])
    assert ids.tolist() == [[2, 3, 0], [2, 1, 3]]  # 0 pad, 1 unknown word
    with torch.no_grad():
        assert torch.allclose(net.image(x), back.image(x), atol=2e-2)
        assert torch.allclose(net.text(ids), back.text(ids), atol=2e-2)
    with pytest.raises(OSError, match="no evaluator weights"):
        load_model(tmp_path / "missing.safetensors")


def test_harness_interfaces(evaluators, held_out):
    dual, ident, seg = evaluators
    assert isinstance(dual, DualEncoder) and isinstance(ident, ImageEncoder)
    images = [v.pil() for v in held_out[1][0]] + [PIL.Image.new("RGB", (48, 32), (9, 9, 9))]  # any size
    for z in (
        dual.encode_images(images),
        ident.encode_images(images),
        dual.encode_texts(["a toy in the snow", "a sks dog"]),
    ):
        assert torch.allclose(z.norm(dim=1), torch.ones(len(z)), atol=1e-4)
    assert dual.encode_images([]).shape == (0, 128)
    mask = seg(PIL.Image.new("RGB", (40, 30)))
    assert mask.shape == (30, 40) and mask.dtype == bool
    assert dual.name.startswith("toy-dual:") and ident.name != dual.name


def test_shipped_evaluators_on_held_out_subjects(evaluators, held_out):
    dual, ident, seg = evaluators
    specs, views = held_out
    a = ident.encode_images([v[0].pil() for v in views])
    b = ident.encode_images([v[2].pil() for v in views])
    assert retrieval_top1(b, a) >= 0.75
    assert (a * b).sum(1).mean() > (b @ a.T).mean() + 0.2  # same subject much closer than others
    flat = [v for row in views for v in row]
    z = dual.encode_images([v.pil() for v in flat])
    correct = 0
    for i, v in enumerate(flat):
        texts = dual.encode_texts([t.format(specs[i // 4].class_word) for _, t in SCENE_PROMPTS])
        correct += SCENE_PROMPTS[int((texts @ z[i]).argmax())][0] == v.condition
    assert correct / len(flat) >= 0.75
    assert np.mean([iou(m, v.mask) for m, v in zip(seg.batch([v.pil() for v in flat]), flat, strict=True)]) >= 0.7


def test_toyworld_benchmark_and_methods(evaluators):
    bench = resolve(BENCHMARKS, "toyworld", "benchmark")("subjects=3,images=2,resolution=32,live_fraction=0.34")
    subjects = bench.subjects()
    assert len(subjects) == 3 and sum(s.live for s in subjects) == 1
    s = subjects[0]
    assert len(s.images) == len(s.masks) == 2 and s.images[0].size == (32, 32) and s.masks[0].any()
    templates = bench.prompt_templates(s)
    assert len(templates) == 25
    prompts = [t.format(s.class_word) for t in templates[:3]]
    real = resolve(METHODS, "toy-real", "method")(MethodOptions())
    floor = resolve(METHODS, "toy-text-only", "method")(MethodOptions())
    out = real.generate(s, s.images[:1], prompts, seed=0)
    assert len(out) == 3 and out[0].size == (32, 32)
    assert np.array_equal(np.asarray(out[1]), np.asarray(real.generate(s, s.images[:1], prompts[1:2], seed=0)[0]))
    _, ident, _ = evaluators
    refs = ident.encode_images(s.images)
    sim_real = (ident.encode_images(out) @ refs.T).mean()
    sim_floor = (ident.encode_images(floor.generate(s, s.images[:1], prompts, seed=0)) @ refs.T).mean()
    assert sim_real > sim_floor  # the same subject beats another subject of its class
    for table, name in (
        (BACKBONES, "toy-clip"),
        (BACKBONES, "toy-dino"),
        (BACKBONES, "toy-parts"),
        (SEGMENTERS, "toy"),
    ):
        assert resolve(table, name, "plugin")(None, "cpu") is not None
    with pytest.raises(ValueError, match="bad toyworld --data"):
        resolve(BENCHMARKS, "toyworld", "benchmark")("subject=3")


def test_toyworld_parts_and_the_held_out_gallery():
    """Tuning and report subjects are disjoint ranges of the eval split (report: the default); each subject has
    a gallery of everyday renders that are never among its input images."""
    load = resolve(BENCHMARKS, "toyworld", "benchmark")
    report, tuning = load("subjects=2,resolution=32"), load("subjects=2,resolution=32,part=tuning")
    seeds = {p: {s.meta["seed"] for s in b.subjects()} for p, b in (("report", report), ("tuning", tuning))}
    assert min(seeds["report"]) >= subject_seed("eval", 10_000) and max(seeds["tuning"]) < subject_seed("eval", 10_000)
    s = report.subjects()[0]
    assert len(s.gallery) == len(s.gallery_masks) == 5 and len(s.images) == 5
    pixels = [np.asarray(im).tobytes() for im in s.images]
    assert all(np.asarray(g).tobytes() not in pixels for g in s.gallery)  # fresh poses and lights
    assert all(m.any() for m in s.gallery_masks)
    assert len(load("subjects=1,gallery=0,resolution=32").subjects()[0].gallery) == 0
    with pytest.raises(ValueError, match="unknown toyworld part"):
        load("part=everything")
    with pytest.raises(ValueError, match="takes a number"):
        load("subjects=many")
