"""Quality of the toy evaluators on held-out subjects (the ``eval`` seed range), as reported in benchmarks/.

- Identity retrieval among ``n`` subjects (top-1, both directions averaged): on real renders (the
  benchmark's real images: everyday settings, fresh poses and lights; image 1 of each subject must
  find image 0 of the same subject; also averaged over all 20 ordered pairs of the 5 images) and across scenes (two renders in different random scenes of
  the 20 + 3, no style). Also with the harness's foreground cutout, with the dual encoder's image
  tower (the CLIP-I role) and with raw pixels (how hard the task is).
- Zero-shot scene accuracy: every subject rendered in each of the 20 DreamBooth scenes; the
  dual encoder picks the prompt ``template.format(class_word)`` with the highest similarity.
  Also on stylised renders, and over each subject's full 25-prompt list (attributes, outfits).
- Segmenter: mean IoU against the exact masks, plain and stylised renders.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import PIL.Image
import torch

from jointdiff.data.toyworld.captions import SCENE_PROMPTS, TEMPLATES, prompt_conditions
from jointdiff.data.toyworld.generator import View, render_view, sample_style, view_rng
from jointdiff.data.toyworld.scenes import NEUTRAL_SCENES
from jointdiff.data.toyworld.subjects import SubjectSpec, make_subject, subject_seed
from jointdiff.evaluation.toy.evaluators import (
    ToyDualEncoder,
    ToyImageEncoder,
    iou,
    load_toy_dual,
    load_toy_identity,
    load_toy_segmenter,
    retrieval_top1,
)

SCENES = tuple(k for k, _ in SCENE_PROMPTS)


def _pil(views: list[View]) -> list[PIL.Image.Image]:
    return [v.pil() for v in views]


def _cutouts(views: list[View]) -> list[PIL.Image.Image]:
    from jointdiff.evaluation.segmenters import cutout

    return [cutout(v.pil(), v.mask) for v in views]


def _zero_shot(
    dual: ToyDualEncoder, views: list[View], class_words: list[str], conditions: list[tuple[str, ...]]
) -> float:
    """Accuracy of picking each view's condition among ``conditions[i]`` prompts filled with its class word."""
    z = dual.encode_images(_pil(views))
    correct = 0
    for i, v in enumerate(views):
        texts = dual.encode_texts([TEMPLATES[c].format(class_words[i]) for c in conditions[i]])
        correct += int(conditions[i][int((texts @ z[i]).argmax())] == v.condition)
    return correct / max(1, len(views))


def quality_report(
    weights: str | None = None, subjects: int = 100, seed: int = 0, resolution: int = 64, start: int = 0
) -> dict:
    """Identity top-1, scene accuracy and mask IoU of the toy evaluators on ``subjects`` held-out subjects."""
    torch.set_num_threads(1)
    dual, ident, seg = load_toy_dual(weights), load_toy_identity(weights), load_toy_segmenter(weights)
    specs = [make_subject(subject_seed("eval", start + i)) for i in range(subjects)]
    report: dict = {
        "subjects": subjects,
        "seed_range": f"eval split, seeds {specs[0].seed}..{specs[-1].seed}",
        **_identity_retrieval(dual, ident, specs, seed, resolution),
    }
    plain, styled, extra = _scene_renders(specs, seed, resolution)
    per = [s for s in specs for _ in SCENES]
    report["scene_accuracy_20"] = round(_zero_shot(dual, plain, [s.class_word for s in per], [SCENES] * len(plain)), 4)
    report["scene_accuracy_20_stylised"] = round(
        _zero_shot(dual, styled, [s.class_word for s in per], [SCENES] * len(styled)), 4
    )
    own = [v for v, s in zip(plain, per, strict=True) if v.condition in prompt_conditions(s.live)]
    owners = [s for v, s in zip(plain, per, strict=True) if v.condition in prompt_conditions(s.live)]
    extra_owners = [s for s in specs for c in prompt_conditions(s.live) if c not in SCENES]
    views25, owners25 = own + extra, owners + extra_owners
    report["prompt_accuracy_25"] = round(
        _zero_shot(dual, views25, [s.class_word for s in owners25], [prompt_conditions(s.live) for s in owners25]), 4
    )
    # Segmenter IoU against the exact masks.
    for name, views in (("segmenter_iou", plain), ("segmenter_iou_stylised", styled)):
        masks = seg.batch(_pil(views))
        report[name] = round(float(np.mean([iou(m, v.mask) for m, v in zip(masks, views, strict=True)])), 4)
    report["renders"] = {
        "identity_pairs": 2 * subjects,  # real renders and across scenes
        "scene_plain": len(plain),
        "scene_stylised": len(styled),
        "prompt25": len(views25),
    }
    report["weights"] = {"dual": dual.name, "identity": ident.name, "segmenter": seg.name}
    return report


def _identity_retrieval(
    dual: ToyDualEncoder, ident: ToyImageEncoder, specs: list[SubjectSpec], seed: int, resolution: int
) -> dict[str, Any]:
    """Identity top-1 among the subjects on real renders and across scenes (plain, masked, the dual encoder's
    image tower, raw pixels) and the identity cosine of the same subject against different ones."""
    subjects = len(specs)
    # Real renders: the benchmark's real images (everyday settings), views 0 and 1 of each subject.
    n_real = 5  # as ToyWorldBenchmark: studio, table, room, studio, table
    real_all = [
        [
            render_view(s, NEUTRAL_SCENES[k % len(NEUTRAL_SCENES)], view_rng(s.seed, 70000 + k), resolution)
            for k in range(n_real)
        ]
        for s in specs
    ]
    real = [r[:2] for r in real_all]
    # Across scenes: two renders in different random settings among the 20 scenes and 3 everyday ones.
    settings = SCENES + NEUTRAL_SCENES
    cross = []
    for s in specs:
        a, b = np.random.default_rng([s.seed, seed, 1]).choice(len(settings), 2, replace=False)
        cross.append(
            [render_view(s, settings[c], view_rng(s.seed, 20000 + k, seed), resolution) for k, c in enumerate((a, b))]
        )

    def top1(pairs: list[list[View]], encode) -> float:
        qa, qb = encode([p[0] for p in pairs]), encode([p[1] for p in pairs])
        return round((retrieval_top1(qb, qa) + retrieval_top1(qa, qb)) / 2, 4)

    def all_pairs(views: list[list[View]], encode) -> float:
        """Mean top-1 over every ordered pair (query image i, gallery image j) of each subject's images."""
        z = [encode([v[k] for v in views]) for k in range(len(views[0]))]
        return round(
            float(np.mean([retrieval_top1(z[i], z[j]) for i, j in itertools.permutations(range(len(z)), 2)])), 4
        )

    def pixels(views: list[View]) -> torch.Tensor:
        x = torch.tensor(np.stack([v.image[::2, ::2] for v in views]), dtype=torch.float32).flatten(1)
        return torch.nn.functional.normalize(x - x.mean(1, keepdim=True), dim=1)

    def ident_plain(views: list[View]) -> torch.Tensor:
        return ident.encode_images(_pil(views))

    za, zb = ident_plain([p[0] for p in real]), ident_plain([p[1] for p in real])
    same = float((za * zb).sum(1).mean())
    diff = float(((zb @ za.T).sum() - (za * zb).sum()) / (subjects * (subjects - 1)))
    return {
        "identity_top1_real_renders": top1(real, ident_plain),
        "identity_top1_real_renders_all_pairs": all_pairs(real_all, ident_plain),
        "identity_top1_across_scenes": top1(cross, ident_plain),
        "identity_top1_across_scenes_masked": top1(cross, lambda v: ident.encode_images(_cutouts(v))),
        "identity_cos_same_vs_different_real": [round(same, 4), round(diff, 4)],
        "dual_image_top1_real_renders": top1(real, lambda v: dual.encode_images(_pil(v))),
        "dual_image_top1_across_scenes": top1(cross, lambda v: dual.encode_images(_pil(v))),
        "pixel_baseline_top1_real_renders": top1(real, pixels),
        "pixel_baseline_top1_across_scenes": top1(cross, pixels),
    }


def _scene_renders(specs: list[SubjectSpec], seed: int, resolution: int) -> tuple[list[View], list[View], list[View]]:
    """Each subject in the 20 scenes, plain and stylised, and in its other prompt conditions (attributes, outfits)."""
    plain, styled, extra = [], [], []
    for s in specs:
        for k, c in enumerate(SCENES):
            plain.append(render_view(s, c, view_rng(s.seed, 30000 + k, seed), resolution))
            rng = view_rng(s.seed, 40000 + k, seed)
            styled.append(render_view(s, c, rng, resolution, style=sample_style(rng, 1.0)))
        for k, c in enumerate(prompt_conditions(s.live)):
            if c not in SCENES:
                extra.append(render_view(s, c, view_rng(s.seed, 50000 + k, seed), resolution))
    return plain, styled, extra
