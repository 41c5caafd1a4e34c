"""The model card's subject grid (issue 14): held-out toy subjects, each reference beside 5 new scenes.

Subjects come from the ``report`` part of the toy world's ``eval`` split (never seen in training,
never used to choose anything); each row is the subject's first render (the one reference) then
five scenes of the DreamBooth prompt list (the demo's first five), each its own set of the
reference and one target, joint guidance (eq. 3). Per row the identity of the five outputs (PartID
and toy DINO, cosine to 5 real views that were never the reference) is printed and written beside
the grid.

    python benchmarks/miniature_subjects.py --out src/jointdiff/weights/miniature/subjects-grid.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from jointdiff.common.images import captioned_grid
from jointdiff.common.paths import shipped_model
from jointdiff.data.toyworld.captions import prompt_templates
from jointdiff.data.toyworld.subjects import make_subject, subject_seed
from jointdiff.evaluation.demo import DEMO_SCENES, DEMO_STEPS
from jointdiff.evaluation.toy.benchmark import PARTS, real_subject
from jointdiff.evaluation.toy.probe import identity_measures, identity_per_image
from jointdiff.jedi.guidance import DEFAULT
from jointdiff.jedi.pipeline import JointDiffusionPipeline


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="jointdiff pipeline directory (default: the shipped miniature)")
    p.add_argument("--out", type=Path, required=True, help="the grid PNG (a JSON of the scores is written beside it)")
    p.add_argument("--subjects", type=int, default=8)
    p.add_argument("--start", type=int, default=0, help="first subject index within the part")
    p.add_argument("--part", default="report", choices=list(PARTS), help="which part of the eval split")
    p.add_argument("--scenes", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model = args.model or shipped_model()
    if model is None:
        p.error("no shipped miniature in this install: pass --model DIR")
    if not 1 <= args.scenes <= len(DEMO_SCENES) or args.subjects < 1:
        p.error(f"--subjects must be >= 1 and --scenes in 1..{len(DEMO_SCENES)}")
    pipe = JointDiffusionPipeline.from_pretrained(str(model))
    pipe.set_progress_bar_config(disable=True)
    measures = identity_measures()
    rows, scores = [], {}
    first = PARTS[args.part] + args.start
    for i in range(first, first + args.subjects):
        toy = real_subject(make_subject(subject_seed("eval", i)), images=1, resolution=64, gallery=5)
        templates = prompt_templates(toy.live)
        prompts = [templates[k].format(toy.class_word) for k in DEMO_SCENES[: args.scenes]]
        made = pipe(
            [[prompt] for prompt in prompts],  # one set (reference + one target) per scene
            reference_images=[toy.images[0]],
            reference_prompts=[f"a photo of a {toy.class_word}"],
            num_inference_steps=DEMO_STEPS,
            guidance_scale=DEFAULT.scale,
            generator=[torch.Generator().manual_seed(args.seed * 1000 + k) for k in range(len(prompts))],
        ).images
        ident = {m: sum(identity_per_image(enc, made, toy.gallery)) / len(made) for m, enc in measures.items()}
        scores[f"eval-{i}"] = {"class": toy.class_word} | {m: round(v, 4) for m, v in ident.items()}
        print(
            f"eval subject {i} ({toy.class_word}): PartID {ident['parts']:.3f}, toy DINO {ident['identity']:.3f}",
            flush=True,
        )
        rows.append([(toy.images[0], f"eval {i}: reference"), *zip(made, prompts, strict=True)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    captioned_grid(rows, cell=112).save(args.out)
    args.out.with_suffix(".json").write_text(
        json.dumps({"model": args.model or "the shipped miniature", "subjects": scores}, indent=2) + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
