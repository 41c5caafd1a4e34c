"""Two subjects in one image (issue 33): the miniature given references of two held-out subjects, measured per subject.

Cases: each ``--subjects`` held-out subject (``--part``, default the report part) with the next one, A and B; the
20 scene prompts of the DreamBooth list with both class words ("a dog and a teapot on the beach"). Each subject is
scored inside its own region with the part-aware identity against its real views never given as input, its
leakage onto the other measured, CLIP-T against the prompt naming both (``jointdiff.evaluation.toy.pairs``).

Rows, two-subject scenes: real two-subject renders (exact masks; and through the segmenter, the check of the
regions step), the text-only floor (two other subjects of the same classes, exact masks), the model with both
references, with subject A's only, with none. Single-subject rows on the same subjects and scenes (subject A
alone): real renders, the floor, the model with A's reference; they give the single-subject identity that the
two-subject one is compared with (same ruler: a crop of the subject's region). Normalised identity: the floor
row of the same kind is 0, the real row 1 (per case and subject).

    python benchmarks/two_subjects.py --record benchmarks/two_subjects.md            # the shipped miniature
    python benchmarks/two_subjects.py --model DIR --subjects 4 --max-prompts 4       # a quick look

Generated images are kept under ``--work`` (``ROW/CASE/pNN.png``): a rerun generates only what is missing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path
from typing import Any

from jointdiff.jedi.schedulers import SHIPPED_SAMPLER, SHIPPED_STEPS

ROOT = Path(__file__).resolve().parents[1]

# (name, label, kind): kind "two" rows are scored per subject in two-subject scenes, "one" rows on A alone
ROWS = (
    ("real", "Real two-subject renders (exact masks)", "two"),
    ("real_seg", "Real two-subject renders (segmented, assigned)", "two"),
    ("floor", "Text-only floor (other subjects of the classes)", "two"),
    ("both", "Miniature, references of A and B", "two"),
    ("a_only", "Miniature, reference of A only", "two"),
    ("none", "Miniature, no reference", "two"),
    ("real_one", "Real renders of A alone", "one"),
    ("floor_one", "Text-only floor, A alone", "one"),
    ("single", "Miniature, reference of A, A alone", "one"),
)
REFS = {"both": "ab", "a_only": "a", "none": "", "single": "a"}
# with --region-bias: the references of A and B with the region bias (each target column attends to its reference)
REGION_ROW = ("both_regions", "Miniature, references of A and B, region bias {:g}", "two")


def region_folder(args: argparse.Namespace) -> str:
    """The folder of the region row's images under ``--work``, one per gamma (``both_regions-4``)."""
    return f"{REGION_ROW[0]}-{args.region_bias:g}"


def rows_of(args: argparse.Namespace) -> tuple[tuple[str, str, str], ...]:
    """The rows of this run: :data:`ROWS`, and the region-bias row after "both" where ``--region-bias`` is set."""
    if not args.region_bias:
        return ROWS
    name, label, kind = REGION_ROW
    i = [r[0] for r in ROWS].index("both") + 1
    return (*ROWS[:i], (name, label.format(args.region_bias), kind), *ROWS[i:])


def generate(pipe: Any, case: Any, prompts: list[str], refs: str, args: argparse.Namespace, out: Path) -> list[Any]:
    """The model's images of one case (one independent set of the references and one target per prompt), from
    ``out`` where already made; each image's noise depends on (seed, prompt) only."""
    import PIL.Image
    import torch

    from jointdiff.evaluation.protocol import stable_int

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"p{k:02d}.png" for k in range(len(prompts))]
    todo = [k for k, p in enumerate(paths) if not p.exists()]
    subjects = {"a": case.a, "b": case.b}
    images = [subjects[r].images[0].convert("RGB") for r in refs]
    captions = [f"a photo of a {subjects[r].class_word}" for r in refs]
    with_refs = {"reference_images": images, "reference_prompts": captions} if refs else {}
    guidance = {"guidance": "joint", "guidance_scale": args.scale} if refs else {"guidance_scale": args.scale}
    if out.parent.name == region_folder(args):
        guidance["region_bias"] = args.region_bias
    for start in range(0, len(todo), args.batch_size):
        chunk = todo[start : start + args.batch_size]
        result = pipe(
            prompt=[[prompts[k]] for k in chunk],
            **with_refs,
            **guidance,
            num_inference_steps=args.steps,
            generator=[torch.Generator("cpu").manual_seed(stable_int(args.seed, prompts[k])) for k in chunk],
        )
        for k, image in zip(chunk, result.images, strict=True):
            image.save(paths[k])
    return [PIL.Image.open(p).convert("RGB") for p in paths]


def score_all(args: argparse.Namespace, cases: list[Any], templates: list[str]) -> tuple[dict, dict]:
    """Every row's score rows per case, and the generated images kept for the grid."""
    from tqdm.auto import tqdm

    from jointdiff.evaluation.toy.evaluators import load_toy_dual, load_toy_parts, load_toy_segmenter
    from jointdiff.evaluation.toy.pairs import PairScorer, pair_prompts, render_pairs, render_singles, single_prompts
    from jointdiff.jedi.pipeline import JointDiffusionPipeline
    from jointdiff.jedi.schedulers import make_scheduler

    scorer = PairScorer(load_toy_parts(), load_toy_segmenter(), load_toy_dual())
    pipe = JointDiffusionPipeline.from_pretrained(args.model)
    pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    refs_of = REFS | ({REGION_ROW[0]: "ab"} if args.region_bias else {})

    def folder(name: str) -> str:  # the region row's images live in a folder of their gamma
        return region_folder(args) if name == REGION_ROW[0] else name

    rows: dict[str, dict[str, list[dict]]] = {name: {} for name, _, _ in rows_of(args)}
    shown: dict[str, dict[str, list[Any]]] = {name: {} for name, _, _ in rows_of(args)}
    for case in tqdm(cases, desc="cases", unit="case"):
        two, one = pair_prompts(case, templates), single_prompts(case, templates)
        real = render_pairs(case, templates, args.resolution)
        floor = render_pairs(case, templates, args.resolution, floor=True)
        real_one = render_singles(case, templates, args.resolution)
        floor_one = render_singles(case, templates, args.resolution, floor=True)
        made = {
            name: generate(
                pipe, case, one if name == "single" else two, refs, args, args.work / folder(name) / case.name
            )
            for name, refs in refs_of.items()
        }
        rows["real"][case.name] = scorer.score_two(case, [v.pil() for v in real], two, [v.masks for v in real])
        rows["real_seg"][case.name] = scorer.score_two(case, [v.pil() for v in real], two)
        rows["floor"][case.name] = scorer.score_two(case, [v.pil() for v in floor], two, [v.masks for v in floor])
        for name in [n for n in ("both", REGION_ROW[0], "a_only", "none") if n in made]:
            rows[name][case.name] = scorer.score_two(case, made[name], two)
        rows["real_one"][case.name] = scorer.score_one(
            case, [v.pil() for v in real_one], one, [v.mask for v in real_one]
        )
        rows["floor_one"][case.name] = scorer.score_one(
            case, [v.pil() for v in floor_one], one, [v.mask for v in floor_one]
        )
        rows["single"][case.name] = scorer.score_one(case, made["single"], one)
        shown["real"][case.name] = [v.pil() for v in real]
        for name, images in made.items():
            shown[name][case.name] = images
    return rows, shown


def fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(summary: dict[str, dict], kind: str, rows: tuple[tuple[str, str, str], ...] = ROWS) -> str:
    """The markdown table of the rows of one kind."""
    cols = ["PartID A", "PartID B", "PartID (norm)", "found", "leakage", "CLIP-T"] if kind == "two" else None
    cols = cols or ["PartID A", "PartID (norm)", "found", "CLIP-T"]
    lines = ["| Row | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, label, k in rows:
        if k == kind:
            lines.append(f"| {label} | " + " | ".join(fmt(summary[name].get(c)) for c in cols) + " |")
    return "\n".join(lines)


def grid(cases: list[Any], shown: dict, templates: list[str], path: Path, count: int) -> None:
    """Reference A | reference B | the real scene | the model with both references (three scenes; with the region
    bias, three more) | A's only | none."""
    from jointdiff.common.images import save_grid
    from jointdiff.evaluation.toy.pairs import pair_prompts

    rows = []
    for i, case in enumerate(cases[:count]):
        prompts = pair_prompts(case, templates)
        ks = [(i * 3 + j) % len(templates) for j in range(3)]
        row = [(case.a.images[0], f"reference A ({case.a.class_word})")]
        row.append((case.b.images[0], f"reference B ({case.b.class_word})"))
        row.append((shown["real"][case.name][ks[0]], f"real render: {prompts[ks[0]]}"))
        row += [(shown["both"][case.name][k], f"A + B refs: {prompts[k]}") for k in ks]
        if REGION_ROW[0] in shown:
            row += [(shown[REGION_ROW[0]][case.name][k], f"A + B refs, regions: {prompts[k]}") for k in ks]
        row.append((shown["a_only"][case.name][ks[0]], "A's ref only"))
        row.append((shown["none"][case.name][ks[0]], "no reference"))
        rows.append([(im.convert("RGB").resize((128, 128), 0), cap) for im, cap in row])
    save_grid(rows, path)


def claims(summary: dict[str, dict]) -> list[str]:
    """The issue's measurable claims, each with its numbers (for the region-bias row too, where there is one)."""
    out = []
    for name, how in (("both", "with both references"), (REGION_ROW[0], "with both references and the region bias")):
        if name not in summary:
            continue
        both, single = summary[name]["PartID (norm)"], summary["single"]["PartID (norm)"]
        if both is not None and single:
            ratio = both / single
            verdict = "holds" if ratio >= 0.7 else "does not hold"
            out.append(
                f"- Per-subject identity in two-subject scenes at least 0.7x the single-subject identity, {how}: "
                f"**{verdict}** (normalised PartID {both:.3f} vs {single:.3f} with one, ratio {ratio:.2f})."
            )
        leak, real_leak = summary[name].get("leakage"), summary["real"].get("leakage")
        if leak is not None and real_leak is not None:
            out.append(
                f"- Leakage (a subject's region against the other subject's real views), {how}: {leak:.3f}; "
                f"{real_leak:.3f} in real renders, {fmt(summary['floor'].get('leakage'))} at the floor."
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "src/jointdiff/weights/miniature"), help="jointdiff pipeline dir")
    p.add_argument("--work", type=Path, default=Path("runs/two-subjects"), help="generated images live here")
    p.add_argument("--subjects", type=int, default=8, help="held-out subjects; each is A once and B once")
    p.add_argument("--part", default="report", choices=["tuning", "report"])
    p.add_argument("--max-prompts", type=int, default=None, help="only the first N scene prompts (quick looks)")
    p.add_argument("--steps", type=int, default=SHIPPED_STEPS, help="sampling steps (default: the miniature's)")
    p.add_argument("--scheduler", default=SHIPPED_SAMPLER, help="sampler (default: the miniature's, samplers.md)")
    p.add_argument("--scale", type=float, default=5.0, help="eq. 3 lambda (joint guidance); text-only for no refs")
    p.add_argument("--batch-size", type=int, default=20, help="prompts generated side by side")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid-cases", type=int, default=6)
    p.add_argument(
        "--region-bias",
        type=float,
        default=0.0,
        help="also the row with both references and this region bias (each target column attends to its reference)",
    )
    p.add_argument("--record", type=Path, default=None, help="write the markdown record here (grid beside it)")
    args = p.parse_args(argv)
    if args.subjects < 2 or args.steps < 1 or args.batch_size < 1 or (args.max_prompts or 1) < 1:
        p.error("--subjects >= 2, --steps, --batch-size and --max-prompts >= 1")
    if args.region_bias < 0:
        p.error("--region-bias must be >= 0")
    if not Path(args.model).is_dir():
        p.error(f"--model: no such directory: {args.model}")

    from jointdiff.evaluation.toy.benchmark import load_toyworld
    from jointdiff.evaluation.toy.pairs import TEMPLATES, pair_cases, summarise

    subjects = load_toyworld(f"subjects={args.subjects},part={args.part}").subjects()
    cases = pair_cases(subjects)
    templates = list(TEMPLATES[: args.max_prompts] if args.max_prompts else TEMPLATES)
    started = datetime.datetime.now(datetime.timezone.utc)
    rows, shown = score_all(args, cases, templates)
    spec = rows_of(args)
    two = summarise({n: rows[n] for n, _, k in spec if k == "two"}, real="real", floor="floor")
    one = summarise({n: rows[n] for n, _, k in spec if k == "one"}, real="real_one", floor="floor_one", slots=("a",))
    summary = two | one
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "summary.json").write_text(json.dumps(summary, indent=2))
    text = [table(two, "two", spec), "", table(one, "one", spec), "", *claims(summary)]
    print("\n".join(text))
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        grid_path = args.record.with_name(args.record.stem + "_grid.png")
        grid(cases, shown, templates, grid_path, args.grid_cases)
        head = [
            "# Two subjects in one image (issue 33)",
            "",
            f"Model `{args.model}`; {len(cases)} cases of the {args.part} subjects, {len(templates)} scene prompts, "
            f"{args.steps} steps of {args.scheduler}, joint guidance lambda = {args.scale}, seed {args.seed}; "
            f"{platform.processor() or platform.machine()}, {started:%Y-%m-%d}.",
            "",
            "    " + " ".join(["python", "benchmarks/two_subjects.py", *(argv if argv is not None else sys.argv[1:])]),
            "",
        ]
        from jointdiff.evaluation.report import kept_reading

        reading = kept_reading(args.record)  # the hand-written reading survives a rewrite of the measured part
        body = [*head, *text, "", f"![grid]({grid_path.name})", ""]
        args.record.write_text("\n".join(body + ([*reading, ""] if reading else [])))
        print(f"wrote {args.record}, {grid_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
