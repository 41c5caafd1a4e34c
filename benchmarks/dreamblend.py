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
from jointdiff.evaluation.options import EvalConfig, MethodOptions
from jointdiff.evaluation.protocol import image_path, input_choices, stable_int
from jointdiff.evaluation.registry import BACKBONES, BENCHMARKS, METHODS, SEGMENTERS, resolve
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


RECIPE = ("prior_preservation", "prior_weight", "lora_targets", "train_text_encoder", "text_encoder_lr")
RECIPE += ("train_identifier", "identifier_lr")  # DreamBoothConfig fields set by the recipe options below


def recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The DreamBooth recipe fields given on the command line (:data:`RECIPE`)."""
    return {name: getattr(args, name) for name in RECIPE}


def recipe_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe fields that differ from DreamBoothConfig's defaults: part of every cache key, so the caches
    of a run with the default recipe stay valid."""
    defaults = {f.name: f.default for f in dataclasses.fields(DreamBoothConfig)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in recipe(args).items() if v != defaults[k]}


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
            class_data_dir=str(a.class_data_dir / f"{subject.class_word}-seed{a.seed}") if a.class_data_dir else "",
            **recipe(a),
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


def regime(curve: list[dict], references: dict[str, dict]) -> list[str]:
    """Whether the fine-tune reaches DreamBlend's regime (issue 28): identity against the inputs at the last
    checkpoint against the real renders', and the CLIP-T drop from the best earlier checkpoint to the last."""
    last = curve[-1]
    best = max(curve[:-1], key=lambda r: r["overall"]["CLIP-T"])
    drop = 1 - last["overall"]["CLIP-T"] / best["overall"]["CLIP-T"]
    vs_inputs = last["protocols"]["inputs"][IDENTITY]
    real = references["real"]["protocols"]["inputs"][IDENTITY]
    return [
        "## The regime",
        "",
        f"- Step {last['step']}: {IDENTITY} against the inputs {vs_inputs:.4f}, real renders' {real:.4f} "
        f"({vs_inputs / real:.2f}x).",
        f"- CLIP-T falls {100 * drop:.1f}% from step {best['step']} (the best before the last, "
        f"{best['overall']['CLIP-T']:.4f}) to step {last['step']} ({last['overall']['CLIP-T']:.4f}); the issue asks "
        f"for at least 10%: {'yes' if drop >= 0.10 else 'no'}.",
        "",
    ]


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


def finetune_cost(runs_dir: Path, names: list[str]) -> tuple[float, str]:
    """CPU time of the subjects' fine-tunes, from their trainers' metrics (class images not included), and
    the disk their checkpoints take: (mean CPU-minutes, a sentence)."""
    hours, disk = [], []
    for name in names:
        lines = (runs_dir / name / "state" / "logs" / "metrics.jsonl").read_text().splitlines()
        hours.append(json.loads(lines[-1])["train/cpu_hours"])
        disk.append(sum(f.stat().st_size for f in (runs_dir / name / "checkpoints").rglob("*") if f.is_file()))
    mean = 60 * sum(hours) / len(hours)
    return mean, (
        f"Fine-tuning cost: {mean:.1f} CPU-minutes a subject on average "
        f"(min {60 * min(hours):.1f}, max {60 * max(hours):.1f}), the trainer's own count; the class "
        f"images (sampled 8 at a time) come on top. Checkpoints on disk: {sum(disk) / len(disk) / 2**20:.1f} MiB "
        "a subject (every scheduled step)."
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


def normalised(r: dict, references: dict[str, dict], protocol: str = "unseen") -> float | None:
    """PartID of result ``r`` on the scale text-only floor = 0, real renders = 1 (both under ``protocol``);
    None without a floor row (a real benchmark)."""
    if "floor" not in references:
        return None

    def get(x: dict) -> float:
        return x["overall"][IDENTITY] if protocol == "unseen" else x["protocols"][protocol][IDENTITY]

    real, floor = get(references["real"]), get(references["floor"])
    return (get(r) - floor) / (real - floor)


def table(rows: list[tuple[str, dict, float | None]], references: dict[str, dict]) -> str:
    """Markdown: one row per (label, harness result, collapse score): PartID against unseen views, normalised,
    and against the inputs (raw and normalised: how near a point comes to reproducing its inputs), then the
    harness's other columns, the collapse score and seconds per image."""
    cols = ("DINO", "CLIP-T", "Diversity", "CLIP-I", "MDINO", "MCLIP-I")
    head = f"| point | {IDENTITY} | norm. | {IDENTITY} vs inputs | norm. vs inputs | " + " | ".join(cols)
    lines = [head + " | collapse score | s/image |", "|---|" + "---:|" * (len(cols) + 6)]
    num = lambda v, f=".4f": "-" if v is None else format(v, f)  # noqa: E731
    for label, r, c in rows:
        o, secs = r["overall"], r["generation"].get("seconds_per_image")
        inputs = r.get("protocols", {}).get("inputs", {}).get(IDENTITY)
        cells = [num(o.get(IDENTITY)), num(normalised(r, references), ".3f"), num(inputs)]
        cells.append(num(normalised(r, references, "inputs") if inputs is not None else None, ".3f"))
        cells += [num(o.get(m)) for m in cols]
        cells += [num(c, ".3f"), num(secs, ".2f")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def reference_rows(
    args: argparse.Namespace, benchmark: Any, scorer: Scorer, config: EvalConfig, common: dict
) -> dict[str, dict]:
    """The scale of every identity column, on the same subjects, prompts and input choices: real renders
    (``real``; the real images that are not inputs on a real benchmark) and, in the toy world, the
    text-only floor (``floor``: another subject of the class drawn perfectly)."""
    methods = {"real": "toy-real", "floor": "toy-text-only"} if args.benchmark == "toyworld" else {"real": "real"}
    rows = {}
    for key, name in methods.items():
        method = resolve(METHODS, name, "method")(MethodOptions(device=args.device))
        rows[key] = evaluate(args.work / f"reference-{key}", benchmark, scorer, config, method, **common)
    return rows


def jedi_rows(args: argparse.Namespace, benchmark: Any, scorer: Scorer, config: EvalConfig, common: dict) -> dict:
    """JeDi on the same subjects and prompts (Table 2's finetuning-free rows): 1 reference (one random
    choice per subject) and the DreamBooth rows' 3 inputs (the same choice), the method's defaults
    (joint guidance) at ``--steps``."""
    options = MethodOptions(model=args.jedi_model or args.model, device=args.device, steps=args.steps)
    method = resolve(METHODS, "jedi", "method")(options)
    rows = {}
    for refs in (1, 3):
        cfg = dataclasses.replace(config, refs=refs, inputs="random")
        rows[refs] = evaluate(args.work / f"jedi-{refs}ref", benchmark, scorer, cfg, method, **common)
    return rows


def table2(
    curve: list[dict], blend: tuple[str, dict] | None, jedi: dict, references: dict[str, dict], cost: float
) -> list[str]:
    """The toy Table 2 (JeDi paper): fine-tuning (DreamBooth at its best checkpoint by the paper's protocol,
    DINO against all real images; DreamBlend) beside JeDi without fine-tuning, with the cost per subject."""
    best = max(curve[1:], key=lambda r: r["protocols"]["all"]["DINO"])
    cols = ("CLIP-T", "DINO", IDENTITY, "Diversity")
    lines = [
        "| method | " + " | ".join(cols) + f" | norm. {IDENTITY} | DINO (paper's protocol) | fine-tuning per subject |",
        "|---|" + "---:|" * (len(cols) + 3),
    ]
    minutes = f"{cost:.1f} CPU-min"
    rows = [(f"DreamBooth, step {best['step']} (best DINO, paper's protocol)", best, minutes)]
    if blend is not None:
        rows.append((f"DreamBlend {blend[0]} (automatic checkpoints)", blend[1], minutes))
    rows += [(f"JeDi, {k} reference{'s' if k > 1 else ''}", r, "none") for k, r in jedi.items()]
    rows += [("Real renders", references["real"], "-")]
    if "floor" in references:
        rows += [("Text-only floor", references["floor"], "-")]
    num = lambda v, f=".4f": "-" if v is None else format(v, f)  # noqa: E731
    for label, r, c in rows:
        o = r["overall"]
        cells = [num(o.get(m)) for m in cols]
        cells += [num(normalised(r, references), ".3f"), num(r["protocols"].get("all", {}).get("DINO")), c]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def grid(
    args: argparse.Namespace, subjects: list[Subject], config: EvalConfig, runs: Runs, blends: list[str], path: Path
) -> None:
    """Rows of the subject's input images | DreamBooth at ``--grid-steps`` | the first DreamBlend setting
    with the automatic checkpoints (and the first with ``--pair``), for a few subjects and prompts spread
    evenly over the prompt list (the backgrounds come first, the property changes last). A JPEG (quality
    90): these are samples to look at, a PNG of them weighs several MB."""
    import PIL.Image

    from jointdiff.common.images import save_grid

    count = min(args.grid_prompts, args.max_prompts)
    picks = sorted({round(i * (args.max_prompts - 1) / max(1, count - 1)) for i in range(count)})
    suffix = f"-steps-{args.pair[0]}-{args.pair[1]}" if args.pair else None
    shown = [name for name in blends if not (suffix and name.endswith(suffix))][:1]
    shown += [name for name in blends if suffix and name.endswith(suffix)][:1]
    steps = [s for s in args.grid_steps if s in {0, *args.checkpoints}]
    rows = []
    for subject in subjects[: args.grid_subjects]:
        (ch,) = input_choices(len(subject.images), subject.name, config)
        inputs = [subject.images[i].convert("RGB") for i in ch]
        templates = runs.templates(subject)
        points = [(f"DreamBooth step {step}", f"dreambooth-{step}") for step in steps]
        points += [(f"DreamBlend {name}", f"dreamblend-{name}") for name in shown]
        for k in picks:
            prompt = templates[k].format(f"{IDENTIFIER} {subject.class_word}")
            cells = [
                (image, f"{prompt}: input {i + 1}" if i == 0 else f"input {i + 1}") for i, image in enumerate(inputs)
            ]
            for caption, point in points:
                image = PIL.Image.open(image_path(args.work / point / "images", subject.name, ch, k, 0)).convert("RGB")
                cells.append((image, caption))
            rows.append(cells)
    save_grid(rows, path, quality=90)


def attention_figure(args: argparse.Namespace, subjects: list[Subject], runs: Runs, path: Path) -> None:
    """DreamBlend Fig. 2 on the miniature: for a few subjects and one prompt, the sample of an early and a
    late checkpoint and where the identifier, the class word and the rest of the prompt attend (cross-attention
    averaged over steps and layers, :func:`token_map`), from the same initial noise."""
    from matplotlib import colormaps

    from jointdiff.common.images import save_grid
    from jointdiff.dreamblend.blend import record_maps
    from jointdiff.dreamblend.crossattn import token_map

    def heat(m: torch.Tensor) -> Any:
        import PIL.Image

        rgb = (colormaps["magma"](m.numpy())[..., :3] * 255).astype("uint8")
        return PIL.Image.fromarray(rgb)

    cfg = BlendConfig(num_inference_steps=args.steps, guidance_scale=args.guidance_scale)
    rows = []
    for subject in subjects[: args.grid_subjects]:
        prompt = runs.templates(subject)[0].format(f"{IDENTIFIER} {subject.class_word}")
        run = runs.work / "runs" / subject.name
        for step in args.attention_steps:
            model = runs.model(run, step)
            ident = model.token_indices(prompt, [IDENTIFIER])
            word = model.token_indices(prompt, [subject.class_word])
            rest = [i for i in model.prompt_tokens(prompt) if i not in ident + word]
            with torch.no_grad():
                latents, maps = record_maps(model, [prompt], initial_noise(model, [stable_int(args.seed, prompt)]), cfg)
                image = model.decode(latents)[0]
            size = image.width
            rows.append(
                [
                    (image, f"{prompt}: step {step}"),
                    (heat(token_map(maps, ident, size)[0]), f'"{IDENTIFIER}"'),
                    (heat(token_map(maps, word, size)[0]), f'"{subject.class_word}"'),
                    (heat(token_map(maps, rest, size)[0]), "the rest of the prompt"),
                ]
            )
    save_grid(rows, path)


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
        "--class-data-dir", type=Path, default=None, help="class images shared between runs (one folder per model)"
    )
    p.add_argument("--no-prior", dest="prior_preservation", action="store_false", help="no prior preservation")
    p.add_argument("--prior-weight", type=float, default=DreamBoothConfig.prior_weight)
    p.add_argument("--lora-targets", nargs="+", default=list(DreamBoothConfig.lora_targets), help="U-Net modules")
    p.add_argument("--train-text-encoder", action="store_true", help="fine-tune the text encoder too")
    p.add_argument("--text-encoder-lr", type=float, default=DreamBoothConfig.text_encoder_lr, help="0: the U-Net's")
    p.add_argument(
        "--train-identifier", action="store_true", help="learn the identifier's embedding (textual inversion)"
    )
    p.add_argument("--identifier-lr", type=float, default=DreamBoothConfig.identifier_lr)
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
    p.add_argument(
        "--blends", nargs="*", default=list(BLENDS), choices=list(BLENDS), help="DreamBlend settings (none: the curve)"
    )
    p.add_argument("--clip-backbone", default="toy-clip")
    p.add_argument("--clip-model", default=None)
    p.add_argument("--dino-backbone", default="toy-dino")
    p.add_argument("--dino-model", default=None)
    p.add_argument("--parts-backbone", default="toy-parts", help="PartID backbone (the identity axis)")
    p.add_argument("--segmenter", default="toy")
    p.add_argument("--segmenter-model", default=None)
    p.add_argument("--grid-subjects", type=int, default=3)
    p.add_argument("--grid-prompts", type=int, default=3, help="spread evenly over the prompts")
    p.add_argument("--grid-steps", type=int, nargs="+", default=[5, 250, 1000], help="checkpoints in the grid")
    p.add_argument(
        "--attention-steps",
        type=int,
        nargs=2,
        default=None,
        help="early and late checkpoint of the maps figure (default: the first and the last)",
    )
    p.add_argument("--jedi-model", default=None, help="JeDi of the Table 2 rows (default: --model)")
    p.add_argument("--no-table2", action="store_true", help="skip the Table 2 rows (JeDi 1 and 3 references)")
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
    args.lora_targets = tuple(args.lora_targets)
    if min(args.subjects, args.max_prompts, args.images_per_prompt, args.steps) < 1:
        p.error("--subjects, --max-prompts, --images-per-prompt and --steps must be >= 1")
    if args.pair and not (args.pair[0] < args.pair[1] and set(args.pair) <= {0, *args.checkpoints}):
        p.error(f"--pair: an earlier and a later checkpoint of {[0, *args.checkpoints]}, got {args.pair}")
    if args.pair_blends and not args.pair:
        p.error("--pair-blends needs --pair UNDERFIT OVERFIT")
    args.attention_steps = args.attention_steps or [args.checkpoints[0], args.checkpoints[-1]]
    if not set(args.attention_steps) <= {0, *args.checkpoints}:
        p.error(f"--attention-steps: two of the checkpoints {[0, *args.checkpoints]}, got {args.attention_steps}")

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
    settings |= recipe_changes(args)

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

    references = reference_rows(args, benchmark, scorer, config, common)
    jedi = {} if args.no_table2 else jedi_rows(args, benchmark, scorer, config, common)
    choices = {s.name: runs.choice(s, runs.work / "runs" / s.name) for s in subjects}
    collapse = {
        step: sum(c["collapse"][str(step)] for c in choices.values()) / len(choices) for step in args.checkpoints
    }
    out = args.record or args.work / "dreamblend.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_path, grid_path = out.with_name(out.stem + "_dino_vs_clipt.png"), out.with_name(out.stem + "_grid.jpg")
    subjects_path = out.with_name(out.stem + "_subjects.png")
    maps_path = out.with_name(out.stem + "_attention.png")
    plot(curve, blends, plot_path)
    plot_subjects(curve, blends, choices, subjects_path)
    grid(args, subjects, config, runs, list(blends), grid_path)
    attention_figure(args, subjects, runs, maps_path)
    picks = "\n".join(
        f"| {name} | {c['underfit']} | {c['overfit']} | "
        + ", ".join(f"{s}: {v:.3f}" for s, v in c["collapse"].items())
        + " |"
        for name, c in choices.items()
    )
    rows = [(f"DreamBooth step {r['step']}", r, collapse.get(r["step"])) for r in curve]
    rows += [(f"DreamBlend {name}", r, None) for name, r in blends.items()]
    rows += [("Real renders" if args.benchmark == "toyworld" else "Real images", references["real"], None)]
    rows += [("Text-only floor", references["floor"], None)] if "floor" in references else []
    cost, cost_line = finetune_cost(args.work / "runs", names)
    recipe_text = ", ".join(f"{k} {v}" for k, v in recipe_changes(args).items()) or "the default recipe"
    text = [
        "# DreamBlend measured (issues 16, 28)",
        "",
        f"Date {datetime.date.today()}; CPU {platform.machine()}, {torch.get_num_threads()} threads; torch {torch.__version__}.",
        f"Command: `python {' '.join(sys.argv)}`",
        f"Model `{args.model}` without references; benchmark {benchmark.name} ({args.data or 'its default subjects'}), "
        f"{len(subjects)} subjects x {args.max_prompts} prompts x {args.images_per_prompt} images, 3 inputs per "
        f"subject (one random choice, seed {args.seed}); {args.steps} DDIM steps, guidance {args.guidance_scale:g}; "
        f"DreamBooth {'LoRA rank ' + str(args.lora_rank) if args.lora_rank else 'full fine-tuning'}, learning rate "
        f"{args.learning_rate or 'the default'}, {args.finetune_steps} steps, {args.class_images} class images; "
        f"{recipe_text}.",
        "",
        f"{IDENTITY} against views never given to the method (protocol `unseen`) and against the 3 inputs (`inputs`: "
        "how near a point comes to reproducing them); norm.: the text-only floor = 0, real renders = 1 under the "
        "same protocol.",
        "",
        table(rows, references),
        cost_line,
        "",
        *regime(curve, references),
    ]
    if blends:
        text += ["## DreamBlend against the DreamBooth front", "", *verdicts(curve, blends, choices), ""]
    if jedi:
        first = next(iter(blends.items()), None)
        text += ["## Toy Table 2: fine-tuning beside JeDi", "", *table2(curve, first, jedi, references, cost), ""]
    text += [
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
        f"![inputs | checkpoints | DreamBlend]({grid_path.name})",
        "",
        f"![cross-attention of an early and a late checkpoint]({maps_path.name})",
        "",
        *kept_reading(out),
    ]
    out.write_text("\n".join(text).rstrip("\n") + "\n")
    print(f"wrote {out}, {plot_path}, {grid_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
