"""The reference probe: how much the reference pathway of a JeDi model does, on held-out toy subjects (issue 14).

Each prompt is generated twice from the same initial noise: with one real image of the subject as the
reference (a set of one reference and one target, joint guidance eq. 3) and without it. Toy identity
(the harness's DINO role), the part-aware identity PartID (issue 26) and toy CLIP-T measure both,
beside the real-render and text-only rows of the same subjects and prompts. Identity is scored against
the subject's held-out gallery: real views that were never the reference (protocol ``unseen``).
``jointdiff demo`` shows it on one subject; the training monitor (``monitor.kind = "toyworld"``) and
``jointdiff miniature probe`` report it on a few subjects of the ``tuning`` part.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch

PROBE_PROMPTS = (0, 2, 6, 9)  # jungle, beach, city, purple rug in a forest (indices into a subject's 25 prompts)


def generate_pairs(
    pipe: Any,
    prompts: list[str],
    reference: PIL.Image.Image,
    class_word: str,
    steps: int,
    guidance_scale: float,
    seed: int = 0,
) -> tuple[list[PIL.Image.Image], list[PIL.Image.Image]]:
    """Every prompt with ``reference`` (captioned "a photo of a <class word>") and without it, from the same
    initial noise (prompt ``k``: seed ``seed * 1000 + k``) and the same sampler seed."""
    return with_and_without(pipe, prompts, [reference], [f"a photo of a {class_word}"], steps, guidance_scale, seed)


def with_and_without(
    pipe: Any,
    prompts: list[str],
    references: list[PIL.Image.Image],
    captions: list[str],
    steps: int,
    guidance_scale: float,
    seed: int = 0,
    reference_options: dict[str, Any] | None = None,
) -> tuple[list[PIL.Image.Image], list[PIL.Image.Image]]:
    """Every prompt with the ``references`` (one caption each: several subjects, issue 33) and without them, from
    the same initial noise (prompt ``k``: seed ``seed * 1000 + k``) and the same sampler seed. Each prompt is its
    own set; the sets of a call run side by side in one batch, each with its own generator, so an image is the one
    a call of its set alone makes (up to float rounding). ``reference_options``: further pipeline arguments of the
    call with the references (the region bias of several subjects)."""
    c, side = pipe.joint_unet.layout.latent_channels, pipe.unet.config.sample_size
    common = {"num_inference_steps": steps, "guidance_scale": guidance_scale, "output_type": "pil"}
    noise = torch.stack(
        [
            torch.randn((1, c, side, side), generator=torch.Generator().manual_seed(seed * 1000 + k))
            for k in range(len(prompts))
        ]
    )  # (B sets, 1 target, C, h, w)
    sets = [[p] for p in prompts]

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(seed) for _ in prompts]

    with_ref = pipe(
        sets,
        reference_images=list(references),
        reference_prompts=list(captions),
        latents=noise,
        generator=generators(),
        **common,
        **(reference_options or {}),
    ).images
    without = pipe(sets, latents=noise, generator=generators(), **common).images
    return with_ref, without


def identity_per_image(identity: Any, generated: list[Any], real: list[Any]) -> list[float]:
    """Per generated image: mean cosine of its identity feature with every real image (JeDi's DINO); pass
    real views that were not the reference (the subject's gallery)."""
    return (identity.encode_images(generated) @ identity.encode_images(real).T).mean(dim=1).tolist()


def identity_measures() -> dict[str, Any]:
    """The identity measures the probe and the demo report: the toy DINO and the part-aware PartID."""
    from jointdiff.evaluation.toy.evaluators import load_toy_identity, load_toy_parts

    return {"identity": load_toy_identity(), "parts": load_toy_parts()}


def clip_t(dual: Any, images: list[Any], prompts: list[str]) -> float:
    """Toy CLIP-T: mean cosine of each image with its prompt."""
    return float((dual.encode_images(images) * dual.encode_texts(prompts)).sum(1).mean())


@dataclass(frozen=True)
class ProbeBank:
    """The fixed part of :func:`reference_probe`: subjects, prompts, their real and text-only floors."""

    subjects: list[Any]
    prompts: list[list[str]]
    real: dict[str, float]  # per measure: fresh renders of the subject under each prompt (upper bound)
    floor: dict[str, float]  # ... another subject of the class under each prompt (a perfect text-only model)
    measures: dict[str, Any]  # "identity" (toy DINO), "parts" (PartID)
    dual: Any  # the toy CLIP


def reference_rows(
    subject: Any, prompts: list[str], measures: dict[str, Any], seed: int = 0, dual: Any = None
) -> dict[str, dict]:
    """Per measure, the mean identity of the toy benchmark's "real" (fresh renders of the subject) and "floor"
    (another subject of the class) rows for ``prompts``, against the subject's gallery; their toy CLIP-T
    (``clip_t``) too when ``dual`` is given."""
    from jointdiff.evaluation.toy.benchmark import ToyRealMethod, ToyTextOnlyMethod

    out: dict[str, dict] = {"real": {}, "floor": {}}
    for row, method in (("real", ToyRealMethod()), ("floor", ToyTextOnlyMethod())):
        images = method.generate(subject, subject.images[:1], prompts, seed)
        for name, enc in measures.items():
            out[row][name] = float(np.mean(identity_per_image(enc, images, subject.gallery)))
        if dual is not None:
            out[row]["clip_t"] = clip_t(dual, images, prompts)
    return out


@functools.cache
def probe_bank(subjects: int, start: int) -> ProbeBank:
    """Subjects ``start ..`` of the toy benchmark's tuning part with :data:`PROBE_PROMPTS`, evaluators and floors
    (built once)."""
    from jointdiff.evaluation.toy.benchmark import ToyWorldBenchmark
    from jointdiff.evaluation.toy.evaluators import load_toy_dual

    bench = ToyWorldBenchmark(subjects=subjects, images=3, start=start, part="tuning")
    subs = bench.subjects()
    prompts = [[bench.prompt_templates(s)[k].format(s.class_word) for k in PROBE_PROMPTS] for s in subs]
    measures = identity_measures()
    rows = [reference_rows(s, p, measures) for s, p in zip(subs, prompts, strict=True)]
    real = {m: float(np.mean([r["real"][m] for r in rows])) for m in measures}
    floor = {m: float(np.mean([r["floor"][m] for r in rows])) for m in measures}
    return ProbeBank(subs, prompts, real, floor, measures, load_toy_dual())


@torch.no_grad()
def reference_probe(
    pipe: Any,
    subjects: int = 4,
    steps: int = 20,
    guidance_scale: float = 5.0,
    seed: int = 0,
    start: int = 0,
) -> dict[str, float]:
    """How much the reference pathway does, on fixed held-out toy subjects (issue 14, item 7).

    For each of the first ``subjects`` benchmark subjects and the :data:`PROBE_PROMPTS`, one image
    with its first real image as the reference (JeDi, joint guidance eq. 3) and one without
    (text-only classifier-free guidance), from the same initial noise. Returns:

    - ``reference_effect``: mean |with - without| of the output pixels in [0, 1];
    - ``identity_ref`` / ``identity_noref``: toy identity (the harness's DINO) against the
      subject's gallery (real views that were never the reference), and ``normalised_ref`` /
      ``normalised_noref``: (identity - floor) / (real - floor) with the real-render and text-only
      rows of the same subjects and prompts (``identity_real``, ``identity_floor``);
    - ``parts_ref``, ``parts_noref``, ``parts_normalised_ref``, ... : the same with the part-aware
      identity PartID (issue 26);
    - ``clip_t_ref`` / ``clip_t_noref``: toy CLIP-T of the outputs with their prompts.
    """
    bank = probe_bank(subjects, start)
    with_ref, without, texts = [], [], []
    scores: dict[str, dict[str, list[float]]] = {m: {"ref": [], "noref": []} for m in bank.measures}
    for s, prompts in zip(bank.subjects, bank.prompts, strict=True):
        a, b = generate_pairs(pipe, prompts, s.images[0], s.class_word, steps, guidance_scale, seed)
        for m, enc in bank.measures.items():
            scores[m]["ref"] += identity_per_image(enc, a, s.gallery)
            scores[m]["noref"] += identity_per_image(enc, b, s.gallery)
        with_ref, without, texts = with_ref + a, without + b, texts + prompts
    effect = np.mean(
        [
            np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean() / 255
            for a, b in zip(with_ref, without, strict=True)
        ]
    )
    out = {"reference_effect": round(float(effect), 4)}
    for m in bank.measures:
        prefix = "" if m == "identity" else f"{m}_"  # the toy DINO keeps the keys of earlier records
        lo, hi = bank.floor[m], bank.real[m]
        ref, noref = float(np.mean(scores[m]["ref"])), float(np.mean(scores[m]["noref"]))
        out |= {
            f"{m}_ref": round(ref, 4),
            f"{m}_noref": round(noref, 4),
            f"{prefix}normalised_ref": round(normalised(ref, lo, hi), 4),
            f"{prefix}normalised_noref": round(normalised(noref, lo, hi), 4),
            f"{m}_real": round(hi, 4),
            f"{m}_floor": round(lo, 4),
        }
    out["clip_t_ref"] = round(clip_t(bank.dual, with_ref, texts), 4)
    out["clip_t_noref"] = round(clip_t(bank.dual, without, texts), 4)
    return out


def normalised(value: float, floor: float, real: float) -> float:
    """Identity rescaled so the text-only floor is 0 and the real renders are 1."""
    return (value - floor) / max(real - floor, 1e-6)
