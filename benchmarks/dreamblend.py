"""DreamBlend measured (issue 16): the DreamBooth checkpoint sweep and DreamBlend on held-out subjects.

For each subject (3 input images: the DreamBooth protocol, one random choice per subject), the
first use fine-tunes a DreamBooth run (``jointdiff finetune``'s trainer: LoRA, the default
checkpoint schedule) on the model used without references; then every point is one harness run
(``jointdiff.evaluation.run.evaluate``, resumable from its image and feature caches):

- the DreamBooth curve: every checkpoint (and step 0, the base model) samples the prompts with
  the identifier (DDIM, classifier-free guidance, the same initial noise per prompt for every
  checkpoint);
- DreamBlend at a few settings (``--blends``): the underfit and overfit checkpoints chosen per
  subject automatically (overfit: attention-collapse score; underfit: prompt fidelity with the
  harness's CLIP-T; ``jointdiff blend``'s rules), then cross-attention guidance, from the same
  initial noise as the curve.

Writes a table (DINO, CLIP-T, diversity and the other harness columns per point, the collapse
score per checkpoint, each subject's automatic choice), the identity (PartID) vs CLIP-T plot (DreamBlend
Fig. 6) and a grid of underfit | overfit | DreamBlend images. A ``## Reading`` section written by hand
at the end of an existing record is kept when the record is rewritten (reread it against the new numbers).

    python benchmarks/dreamblend.py --record benchmarks/dreamblend.md \\
        --pair 100 500 --pair-blends cag-10 cag-1 default                       # the shipped miniature, toy world
    python benchmarks/dreamblend.py --model models/sd15 --benchmark dreambooth --data ../shared/dreambooth \\
        --clip-backbone clip --dino-backbone dino --segmenter clipseg --steps 50 --guidance-scale 7.5 \\
        --work runs/dreamblend-sd --record runs/dreamblend-sd/report.md     # a real SD model directory
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from jointdiff.dreamblend.blend import (
    blend_batch,
    checkpoint_collapse_scores,
    checkpoint_prompt_fidelity,
    choose_overfit,
    choose_underfit,
)
from jointdiff.dreamblend.config import BlendConfig
from jointdiff.evaluation.benchmarks import Subject
from jointdiff.evaluation.front import front_gaps, pareto
from jointdiff.evaluation.protocol import EvalConfig, image_path, input_choices, stable_int
from jointdiff.evaluation.registry import BACKBONES, BENCHMARKS, SEGMENTERS, resolve
from jointdiff.evaluation.report import kept_reading
from jointdiff.evaluation.run import evaluate
from jointdiff.evaluation.scoring import Scorer
from jointdiff.jedi.t2i import TextToImage, initial_noise, sample
from jointdiff.training.dreambooth import DreamBoothConfig, finetune, list_checkpoints, load_checkpoint

IDENTITY = "PartID"  # the identity axis of the front, plots and verdicts (issue 26: the part-aware identity)
IDENTIFIER = "sks"
# DreamBlend settings measured by default: name -> BlendConfig overrides (num_inference_steps and
# guidance_scale come from the command line). The CAG step size is swept: on the miniature the
# default 0.1 (pix2pix-zero's, set for SD's latents) moves a sample by under 2 of 255 levels (mean
# absolute difference) from the overfit checkpoint's; 10 by ~11, bringing it ~4 closer to the
# underfit sample; 100 breaks samples (a 2-prompt probe of the first subject, looked at). The
# other variants are taken at 10, where guidance acts.
BLENDS: dict[str, dict[str, Any]] = {
    "cag-10": {"cag_scale": 10.0},  # first: measured first, and the grid's
    "default": {},
    "cag-1": {"cag_scale": 1.0},
    "cag-10-fraction-0.5": {"cag_scale": 10.0, "cag_fraction": 0.5},
    "cag-10-no-collapse-penalty": {"cag_scale": 10.0, "collapse_weight": 0.0},
    "cag-10-inversion": {"cag_scale": 10.0, "reference_maps": "invert"},
}


class Runs:
    """The DreamBooth run of each subject, fine-tuned on first use from its input images."""

    def __init__(self, args: argparse.Namespace, scorer: Scorer, templates: Any) -> None:
        self.args, self.work = args, args.work
        self.scorer, self.templates = scorer, templates  # the harness's scorer; subject -> prompt templates
        self._model: tuple[tuple[str, int], TextToImage] | None = None

    def run(self, subject: Subject, references: list[Any]) -> Path:
        """The subject's run directory; fine-tunes (or resumes) until its last checkpoint exists."""
        a = self.args
        inputs = self.work / "inputs" / subject.name
        inputs.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(references):
            if not (inputs / f"{i}.png").is_file():
                image.convert("RGB").save(inputs / f"{i}.png")
        cfg = DreamBoothConfig(
            base=a.model,
            images=str(inputs),
            class_word=subject.class_word,
            out=str(self.work / "runs" / subject.name),
            identifier=IDENTIFIER,
            steps=a.finetune_steps,
            checkpoints=tuple(a.checkpoints),
            lora_rank=a.lora_rank,
            learning_rate=a.learning_rate,
            num_class_images=a.class_images,
            class_sampling_steps=a.steps,
            seed=a.seed,
        )
        out = Path(cfg.out)
        if not (out / "checkpoints" / f"step-{cfg.steps:06d}").is_dir():
            print(f"== fine-tuning {subject.name} ({cfg.steps} steps)", flush=True)
            finetune(cfg, a.device)
        return out

    def model(self, run: Path, step: int) -> TextToImage:
        """Checkpoint ``step`` of ``run`` (the last one loaded is kept)."""
        key = (str(run), step)
        if self._model is None or self._model[0] != key:
            self._model = (key, load_checkpoint(run, step, self.args.device))
        return self._model[1]

    def choice(self, subject: Subject, run: Path) -> dict[str, Any]:
        """The automatic (underfit, overfit) choice of ``jointdiff blend`` for the subject, with its scores."""
        path = self.work / "choices" / f"{subject.name}.json"
        if path.is_file():
            return json.loads(path.read_text())
        a = self.args
        prompts = [t.format(f"{IDENTIFIER} {subject.class_word}") for t in self.templates(subject)[: a.choice_prompts]]
        collapse = checkpoint_collapse_scores(run, prompts, num_inference_steps=a.steps, seed=a.seed)
        overfit = choose_overfit(collapse)
        clip = self.scorer.clip
        earlier = [s for s in list_checkpoints(run) if s < overfit] or list_checkpoints(run)[:1]
        fidelity = checkpoint_prompt_fidelity(
            run, prompts, clip, earlier, num_inference_steps=a.steps, guidance_scale=a.guidance_scale, seed=a.seed
        )
        choice = {
            "underfit": choose_underfit(fidelity, overfit),
            "overfit": overfit,
            "collapse": collapse,
            "fidelity": fidelity,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(choice, indent=2))
        return json.loads(path.read_text())  # int keys become strings, as when read back later


class CheckpointMethod:
    """The subject's DreamBooth checkpoint ``step`` sampling the prompts (a harness method)."""

    identifier = IDENTIFIER

    def __init__(self, runs: Runs, step: int) -> None:
        self.runs, self.step, self.name = runs, step, f"dreambooth-{step}"

    def generate(self, subject: Subject, references: list[Any], prompts: list[str], seed: int) -> list[Any]:
        a = self.runs.args
        model = self.runs.model(self.runs.run(subject, references), self.step)
        latents = initial_noise(model, [stable_int(seed, p) for p in prompts])  # DDIM: init_noise_sigma is 1
        with torch.no_grad():
            out = sample(model, prompts, None, a.steps, a.guidance_scale, latents=latents)
            return model.decode(out)


class BlendMethod:
    """DreamBlend with the subject's automatically chosen checkpoints, or the same ``pair`` of steps
    (underfit, overfit) for every subject (a harness method)."""

    identifier = IDENTIFIER

    def __init__(self, runs: Runs, name: str, cfg: BlendConfig, pair: tuple[int, int] | None = None) -> None:
        self.runs, self.cfg, self.pair, self.name = runs, cfg, pair, f"dreamblend-{name}"

    def generate(self, subject: Subject, references: list[Any], prompts: list[str], seed: int) -> list[Any]:
        run = self.runs.run(subject, references)
        if self.pair is None:
            choice = self.runs.choice(subject, run)
            steps = (choice["underfit"], choice["overfit"])
        else:
            steps = self.pair
        under, over = (load_checkpoint(run, step, self.runs.args.device) for step in steps)
        words = [IDENTIFIER, subject.class_word]
        seeds = [stable_int(seed, p) for p in prompts]  # the curve's initial noise, prompt by prompt
        return blend_batch(under, over, prompts, words, seeds, self.cfg)[0]


def subject_mean(result: dict, metric: str, subjects: list[str]) -> float | None:
    """The mean over ``subjects`` of a per-subject column of a harness result (None where a subject has
    none: Diversity with one image per prompt)."""
    values = [result["subjects"][s][metric] for s in subjects]
    return None if None in values else sum(values) / len(values)


def verdicts(curve: list[dict], blends: dict[str, dict], choices: dict[str, dict]) -> list[str]:
    """Each DreamBlend setting against the DreamBooth front (overall identity, CLIP-T) and its diversity
    against the overfit checkpoints' (each subject's own, averaged over subjects): the must-show claim. Also
    in how many subjects it lies beyond that subject's own checkpoint front (50 images a subject: noisier)."""
    by_step = {r["step"]: r for r in curve}
    names = list(choices)

    def picked_diversity(role: str) -> float | None:  # each subject's own underfit / overfit checkpoint
        values = [by_step[c[role]]["subjects"][n]["Diversity"] for n, c in choices.items()]
        return None if None in values else sum(values) / len(values)

    over_div, under_div = picked_diversity("overfit"), picked_diversity("underfit")
    fmt = lambda v: "-" if v is None else f"{v:+.4f}"  # noqa: E731
    num = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731

    def beyond(point: dict, subject: str | None = None) -> tuple[float | None, float | None, bool]:
        """Gaps to the checkpoints' front, overall or on one subject's own curve; whether either is positive."""

        def at(r: dict) -> tuple[float, float]:
            m = r["overall"] if subject is None else r["subjects"][subject]
            return m["CLIP-T"], m[IDENTITY]

        dd, dc = front_gaps(pareto([at(r) for r in curve]), at(point))
        return dd, dc, (dd is not None and dd > 0) or (dc is not None and dc > 0)

    lines = [
        f"| DreamBlend | {IDENTITY} - front at equal CLIP-T | CLIP-T - front at equal {IDENTITY} | beyond the front | "
        "subjects beyond their own front | diversity (subject mean) | >= overfit's |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for name, r in blends.items():
        dd, dc, ahead = beyond(r)
        own = sum(beyond(r, n)[2] for n in names)
        div = subject_mean(r, "Diversity", names)
        lines.append(
            f"| {name} | {fmt(dd)} | {fmt(dc)} | {'yes' if ahead else 'no'} | {own} of {len(names)} | {num(div)} | "
            f"{'-' if div is None or over_div is None else 'yes' if div >= over_div else 'no'} |"
        )
    front = pareto([(r["overall"]["CLIP-T"], r["overall"][IDENTITY]) for r in curve])
    front_steps = [r["step"] for r in curve if (r["overall"]["CLIP-T"], r["overall"][IDENTITY]) in front]
    lines += [
        "",
        f"The front: checkpoints {', '.join(map(str, front_steps))} (the others lie behind it). Diversity of "
        f"each subject's overfit checkpoint, averaged: {num(over_div)}; of its underfit one: {num(under_div)}.",
    ]
    return lines


def finetune_cost(runs_dir: Path, names: list[str]) -> str:
    """CPU time of the subjects' fine-tunes, from their trainers' metrics (class images not included)."""
    hours = []
    for name in names:
        lines = (runs_dir / name / "state" / "logs" / "metrics.jsonl").read_text().splitlines()
        hours.append(json.loads(lines[-1])["train/cpu_hours"])
    return (
        f"Fine-tuning cost: {60 * sum(hours) / len(hours):.1f} CPU-minutes a subject on average "
        f"(min {60 * min(hours):.1f}, max {60 * max(hours):.1f}), the trainer's own count; the class "
        "images (sampled 8 at a time) come on top."
    )


def plot_subjects(curve: list[dict], blends: dict[str, dict], choices: dict[str, dict], path: Path) -> None:
    """One panel per subject: its DreamBooth curve, the automatic underfit / overfit picks, DreamBlend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(choices)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.9 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        pts = {r["step"]: (r["subjects"][name]["CLIP-T"], r["subjects"][name][IDENTITY]) for r in curve}
        ax.plot(*zip(*pts.values(), strict=True), marker="o", ms=3, color="tab:blue")
        for step, (x, y) in pts.items():
            ax.annotate(str(step), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6)
        c = choices[name]
        ax.scatter(*pts[c["underfit"]], s=90, facecolors="none", edgecolors="tab:green", label="underfit pick")
        ax.scatter(*pts[c["overfit"]], s=90, facecolors="none", edgecolors="tab:red", label="overfit pick")
        for i, (setting, r) in enumerate(blends.items()):
            x, y = r["subjects"][name]["CLIP-T"], r["subjects"][name][IDENTITY]
            ax.scatter(x, y, marker="*", s=60, color=f"C{i + 1}", label=f"DreamBlend {setting}")
        ax.set_title(name.split("-")[0], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=5)
    fig.supxlabel("CLIP-T")
    fig.supylabel(IDENTITY)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(curve: list[dict], blends: dict[str, dict], path: Path) -> None:
    """Identity (PartID) vs CLIP-T: the DreamBooth checkpoints as a curve, DreamBlend settings as points (DreamBlend Fig. 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 4.8))
    xs = [r["overall"]["CLIP-T"] for r in curve]
    ys = [r["overall"][IDENTITY] for r in curve]
    ax.plot(xs, ys, marker="o", color="tab:blue", label="DreamBooth checkpoints")
    for r, x, y in zip(curve, xs, ys, strict=True):
        ax.annotate(str(r["step"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for i, (name, r) in enumerate(blends.items()):
        x, y = r["overall"]["CLIP-T"], r["overall"][IDENTITY]
        ax.scatter([x], [y], marker="*", s=140, color=f"C{i + 1}", label=f"DreamBlend {name}")
    ax.set_xlabel("CLIP-T")
    ax.set_ylabel(IDENTITY)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the points crowd
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(curve: list[dict], blends: dict[str, dict], collapse: dict[int, float]) -> str:
    """Markdown: one row per point with the harness's columns and the mean collapse score per checkpoint."""
    cols = ("PartID", "DINO", "CLIP-T", "Diversity", "CLIP-I", "MDINO", "MCLIP-I")
    lines = ["| point | " + " | ".join(cols) + " | collapse score | s/image |", "|---|" + "---:|" * (len(cols) + 2)]
    rows = [(f"DreamBooth step {r['step']}", r, collapse.get(r["step"])) for r in curve]
    rows += [(f"DreamBlend {name}", r, None) for name, r in blends.items()]
    for label, r, c in rows:
        o, secs = r["overall"], r["generation"].get("seconds_per_image")
        cells = ["-" if o.get(m) is None else f"{o[m]:.4f}" for m in cols]
        cells += ["-" if c is None else f"{c:.3f}", "-" if secs is None else f"{secs:.2f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def grid(
    args: argparse.Namespace, subjects: list[Subject], config: EvalConfig, runs: Runs, blends: list[str], path: Path
) -> None:
    """Rows of underfit | overfit | each DreamBlend setting with the automatic picks, then (with ``--pair``)
    the pair's two checkpoints | each setting with the pair, for a few subjects and prompts spread evenly
    over the prompt list (the backgrounds come first, the property changes last). A JPEG (quality 90):
    these are samples to look at, a PNG of them weighs several MB."""
    import PIL.Image

    from jointdiff.common.images import save_grid

    count = min(args.grid_prompts, args.max_prompts)
    picks = sorted({round(i * (args.max_prompts - 1) / max(1, count - 1)) for i in range(count)})
    suffix = f"-steps-{args.pair[0]}-{args.pair[1]}" if args.pair else None
    paired = [name for name in blends if suffix and name.endswith(suffix)]
    rows = []
    for subject in subjects[: args.grid_subjects]:
        choice = runs.choice(subject, runs.work / "runs" / subject.name)
        (ch,) = input_choices(len(subject.images), subject.name, config)
        templates = runs.templates(subject)
        points = [
            (f"underfit (step {choice['underfit']})", f"dreambooth-{choice['underfit']}"),
            (f"overfit (step {choice['overfit']})", f"dreambooth-{choice['overfit']}"),
            *((f"DreamBlend {name}", f"dreamblend-{name}") for name in blends if name not in paired),
        ]
        if paired:
            points += [(f"step {step} (pair)", f"dreambooth-{step}") for step in args.pair]
            points += [(f"DreamBlend {name}", f"dreamblend-{name}") for name in paired]
        for k in picks:
            prompt = templates[k].format(f"{IDENTIFIER} {subject.class_word}")
            cells = []
            for i, (caption, point) in enumerate(points):
                image = PIL.Image.open(image_path(args.work / point / "images", subject.name, ch, k, 0)).convert("RGB")
                cells.append((image, f"{prompt}: {caption}" if i == 0 else caption))
            rows.append(cells)
    save_grid(rows, path, quality=90)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="base model directory (default: the shipped miniature)")
    p.add_argument("--benchmark", default="toyworld", choices=sorted(BENCHMARKS))
    p.add_argument("--data", default=None, help="benchmark data (toyworld: key=value pairs; dreambooth: the folder)")
    p.add_argument("--subjects", type=int, default=8, help="the benchmark's first N subjects")
    p.add_argument("--max-prompts", type=int, default=25, help="the first N prompts of each subject (25: all)")
    p.add_argument("--images-per-prompt", type=int, default=2, help=">= 2 gives the diversity column")
    p.add_argument("--steps", type=int, default=25, help="sampling steps (DDIM) of every point")
    p.add_argument("--guidance-scale", type=float, default=5.0)
    p.add_argument("--finetune-steps", type=int, default=DreamBoothConfig.steps)
    p.add_argument("--checkpoints", type=int, nargs="+", default=list(DreamBoothConfig.checkpoints))
    p.add_argument("--lora-rank", type=int, default=DreamBoothConfig.lora_rank)
    p.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="of the fine-tune (default: the miniature's; 0: the trainer's default, 1e-4 for LoRA)",
    )
    p.add_argument("--class-images", type=int, default=DreamBoothConfig.num_class_images)
    p.add_argument(
        "--pair",
        type=int,
        nargs=2,
        metavar=("UNDERFIT", "OVERFIT"),
        help="also DreamBlend with these two checkpoints for every subject (at the --pair-blends settings)",
    )
    p.add_argument(
        "--pair-blends",
        nargs="+",
        choices=list(BLENDS),
        default=None,
        help="the DreamBlend settings measured with --pair (default: the first of --blends)",
    )
    p.add_argument("--choice-prompts", type=int, default=3, help="prompts behind each subject's automatic choice")
    p.add_argument("--blends", nargs="+", default=list(BLENDS), choices=list(BLENDS), help="DreamBlend settings")
    p.add_argument("--clip-backbone", default="toy-clip")
    p.add_argument("--clip-model", default=None)
    p.add_argument("--dino-backbone", default="toy-dino")
    p.add_argument("--dino-model", default=None)
    p.add_argument("--parts-backbone", default="toy-parts", help="PartID backbone (the identity axis)")
    p.add_argument("--segmenter", default="toy")
    p.add_argument("--segmenter-model", default=None)
    p.add_argument("--grid-subjects", type=int, default=3)
    p.add_argument("--grid-prompts", type=int, default=3, help="spread evenly over the prompts")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("runs/dreamblend-bench"))
    p.add_argument("--record", type=Path, default=None, help="the markdown report (PNGs beside it)")
    args = p.parse_args(argv)
    if args.model is None:
        from jointdiff.common.paths import shipped_model

        if shipped_model() is None:
            p.error("no shipped miniature in this install: pass --model DIR")
        args.model = str(shipped_model())
    args.blends = {name: BLENDS[name] for name in args.blends}
    if min(args.subjects, args.max_prompts, args.images_per_prompt, args.steps) < 1:
        p.error("--subjects, --max-prompts, --images-per-prompt and --steps must be >= 1")
    if args.pair and not (args.pair[0] < args.pair[1] and set(args.pair) <= {0, *args.checkpoints}):
        p.error(f"--pair: an earlier and a later checkpoint of {[0, *args.checkpoints]}, got {args.pair}")
    if args.pair_blends and not args.pair:
        p.error("--pair-blends needs --pair UNDERFIT OVERFIT")

    benchmark = resolve(BENCHMARKS, args.benchmark, "benchmark")(args.data)
    subjects = benchmark.subjects()[: args.subjects]
    clip = resolve(BACKBONES, args.clip_backbone, "backbone")(args.clip_model, args.device)
    dino = resolve(BACKBONES, args.dino_backbone, "backbone")(args.dino_model, args.device)
    segmenter = None
    if args.segmenter != "none":
        segmenter = resolve(SEGMENTERS, args.segmenter, "segmenter")(args.segmenter_model, args.device)
    parts = resolve(BACKBONES, args.parts_backbone, "backbone")(None, args.device)
    scorer = Scorer(clip, dino, segmenter, parts=parts)
    config = EvalConfig(
        refs=3, inputs="random", images_per_prompt=args.images_per_prompt, max_prompts=args.max_prompts, seed=args.seed
    )
    runs = Runs(args, scorer, benchmark.prompt_templates)
    names = [s.name for s in subjects]
    common = {"paper": False, "report": False, "subjects": names}
    settings = {"steps": args.steps, "guidance_scale": args.guidance_scale, "finetune_steps": args.finetune_steps}
    settings |= {"lora_rank": args.lora_rank, "learning_rate": args.learning_rate}  # a cache is one fine-tune's

    curve = []
    for step in [0, *args.checkpoints]:
        method = CheckpointMethod(runs, step)
        r = evaluate(args.work / method.name, benchmark, scorer, config, method, method_settings=settings, **common)
        curve.append(r | {"step": step})
        print(
            f"DreamBooth step {step}: PartID {r['overall']['PartID']:.4f} DINO {r['overall']['DINO']:.4f} "
            f"CLIP-T {r['overall']['CLIP-T']:.4f}",
            flush=True,
        )
    blends = {}
    points = [(name, overrides, None) for name, overrides in args.blends.items()]
    if args.pair:  # the pair of checkpoints given, at each of its settings
        under, over = args.pair
        for name in args.pair_blends or list(args.blends)[:1]:
            points.append((f"{name}-steps-{under}-{over}", BLENDS[name], (under, over)))
    for name, overrides, pair in points:
        cfg = BlendConfig(num_inference_steps=args.steps, guidance_scale=args.guidance_scale, **overrides)
        method = BlendMethod(runs, name, cfg, pair)
        blend_settings = settings | dataclasses.asdict(cfg) | ({"pair": list(pair)} if pair else {})
        r = evaluate(
            args.work / method.name, benchmark, scorer, config, method, method_settings=blend_settings, **common
        )
        blends[name] = r
        o = r["overall"]
        print(f"DreamBlend {name}: PartID {o['PartID']:.4f} DINO {o['DINO']:.4f} CLIP-T {o['CLIP-T']:.4f}", flush=True)

    choices = {s.name: runs.choice(s, runs.work / "runs" / s.name) for s in subjects}
    collapse = {
        step: sum(c["collapse"][str(step)] for c in choices.values()) / len(choices) for step in args.checkpoints
    }
    out = args.record or args.work / "dreamblend.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_path, grid_path = out.with_name(out.stem + "_dino_vs_clipt.png"), out.with_name(out.stem + "_grid.jpg")
    subjects_path = out.with_name(out.stem + "_subjects.png")
    plot(curve, blends, plot_path)
    plot_subjects(curve, blends, choices, subjects_path)
    grid(args, subjects, config, runs, list(blends), grid_path)
    picks = "\n".join(
        f"| {name} | {c['underfit']} | {c['overfit']} | "
        + ", ".join(f"{s}: {v:.3f}" for s, v in c["collapse"].items())
        + " |"
        for name, c in choices.items()
    )
    text = [
        "# DreamBlend measured (issue 16)",
        "",
        f"Date {datetime.date.today()}; CPU {platform.machine()}, {torch.get_num_threads()} threads; torch {torch.__version__}.",
        f"Command: `python {' '.join(sys.argv)}`",
        f"Model `{args.model}` without references; benchmark {benchmark.name}, {len(subjects)} subjects x "
        f"{args.max_prompts} prompts x {args.images_per_prompt} images, 3 inputs per subject (one random choice, "
        f"seed {args.seed}); {args.steps} DDIM steps, guidance {args.guidance_scale:g}; DreamBooth LoRA rank "
        f"{args.lora_rank}, learning rate {args.learning_rate or 'the default'}, {args.finetune_steps} steps, "
        f"{args.class_images} class images.",
        "",
        table(curve, blends, collapse),
        finetune_cost(args.work / "runs", names),
        "",
        "## DreamBlend against the DreamBooth front",
        "",
        *verdicts(curve, blends, choices),
        "",
        "## Automatic choice per subject",
        "",
        "| subject | underfit | overfit | collapse score per checkpoint |",
        "|---|---:|---:|---|",
        picks,
        "",
        f"![PartID vs CLIP-T]({plot_path.name})",
        "",
        f"![each subject's curve and picks]({subjects_path.name})",
        "",
        f"![underfit | overfit | DreamBlend]({grid_path.name})",
        "",
        *kept_reading(out),
    ]
    out.write_text("\n".join(text).rstrip("\n") + "\n")
    print(f"wrote {out}, {plot_path}, {grid_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
