"""The reference probe: how much the reference pathway of a JeDi model does, on held-out toy subjects (issue 14).

Each prompt is generated twice from the same initial noise: with one real image of the subject as the
reference (a set of one reference and one target, joint guidance eq. 3) and without it. Toy identity
(the harness's DINO role) and toy CLIP-T measure both, beside the real-render and text-only rows of the
same subjects and prompts. ``jointdiff demo`` shows it on one subject; the training monitor
(``monitor.kind = "toyworld"``) and ``jointdiff miniature probe`` report it on a few.
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
    c, side = pipe.joint_unet.layout.latent_channels, pipe.unet.config.sample_size
    common = {"num_inference_steps": steps, "guidance_scale": guidance_scale, "output_type": "pil"}
    with_ref: list[PIL.Image.Image] = []
    without: list[PIL.Image.Image] = []
    for k, prompt in enumerate(prompts):
        noise = torch.randn((1, 1, c, side, side), generator=torch.Generator().manual_seed(seed * 1000 + k))
        with_ref += pipe(
            [prompt],
            reference_images=[reference],
            reference_prompts=[f"a photo of a {class_word}"],
            latents=noise,
            generator=torch.Generator().manual_seed(seed),
            **common,
        ).images
        without += pipe([prompt], latents=noise, generator=torch.Generator().manual_seed(seed), **common).images
    return with_ref, without


def identity_per_image(identity: Any, generated: list[Any], real: list[Any]) -> list[float]:
    """Per generated image: mean cosine of its toy-identity feature with every real image (JeDi's DINO)."""
    return (identity.encode_images(generated) @ identity.encode_images(real).T).mean(dim=1).tolist()


def clip_t(dual: Any, images: list[Any], prompts: list[str]) -> float:
    """Toy CLIP-T: mean cosine of each image with its prompt."""
    return float((dual.encode_images(images) * dual.encode_texts(prompts)).sum(1).mean())


@dataclass(frozen=True)
class ProbeBank:
    """The fixed part of :func:`reference_probe`: subjects, prompts, their real and text-only floors."""

    subjects: list[Any]
    prompts: list[list[str]]
    real: float  # toy identity of fresh renders of the subject under each prompt (upper bound)
    floor: float  # ... of another subject of the class under each prompt (a perfect text-only model)
    identity: Any  # the toy DINO
    dual: Any  # the toy CLIP


@functools.cache
def probe_bank(subjects: int, start: int) -> ProbeBank:
    """Subjects ``start ..`` of the toy benchmark with :data:`PROBE_PROMPTS`, evaluators and floors (built once)."""
    from jointdiff.evaluation.toy.benchmark import ToyRealMethod, ToyTextOnlyMethod, ToyWorldBenchmark
    from jointdiff.evaluation.toy.evaluators import load_toy_dual, load_toy_identity

    bench = ToyWorldBenchmark(subjects=subjects, images=3, start=start)
    subs = bench.subjects()
    prompts = [[bench.prompt_templates(s)[k].format(s.class_word) for k in PROBE_PROMPTS] for s in subs]
    identity, dual = load_toy_identity(), load_toy_dual()
    rows = {}
    for name, method in (("real", ToyRealMethod()), ("floor", ToyTextOnlyMethod())):
        scores = [
            identity_per_image(identity, method.generate(s, s.images[:1], p, 0), s.images)
            for s, p in zip(subs, prompts, strict=True)
        ]
        rows[name] = float(np.mean(scores))
    return ProbeBank(subs, prompts, rows["real"], rows["floor"], identity, dual)


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
      subject's real images, and ``normalised_ref`` / ``normalised_noref``:
      (identity - floor) / (real - floor) with the real-render and text-only rows of the same
      subjects and prompts (the issue's normalised identity, on a few subjects);
    - ``clip_t_ref`` / ``clip_t_noref``: toy CLIP-T of the outputs with their prompts.
    """
    bank = probe_bank(subjects, start)
    with_ref, without, texts, id_ref, id_noref = [], [], [], [], []
    for s, prompts in zip(bank.subjects, bank.prompts, strict=True):
        a, b = generate_pairs(pipe, prompts, s.images[0], s.class_word, steps, guidance_scale, seed)
        id_ref += identity_per_image(bank.identity, a, s.images)
        id_noref += identity_per_image(bank.identity, b, s.images)
        with_ref, without, texts = with_ref + a, without + b, texts + prompts
    effect = np.mean(
        [
            np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean() / 255
            for a, b in zip(with_ref, without, strict=True)
        ]
    )
    span = max(bank.real - bank.floor, 1e-6)
    ref, noref = float(np.mean(id_ref)), float(np.mean(id_noref))
    return {
        "reference_effect": round(float(effect), 4),
        "identity_ref": round(ref, 4),
        "identity_noref": round(noref, 4),
        "normalised_ref": round((ref - bank.floor) / span, 4),
        "normalised_noref": round((noref - bank.floor) / span, 4),
        "clip_t_ref": round(clip_t(bank.dual, with_ref, texts), 4),
        "clip_t_noref": round(clip_t(bank.dual, without, texts), 4),
        "identity_real": round(bank.real, 4),
        "identity_floor": round(bank.floor, 4),
    }
