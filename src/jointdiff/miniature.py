"""The miniature JeDi (issue 7): a Stable-Diffusion-shaped model small enough to train from
scratch on toy-world data and to run on a CPU.

Pieces: a word-level CLIP tokenizer over the toy-world vocabulary (BPE merges that rebuild
each vocabulary word, characters as the fallback), a small ``AutoencoderKL`` trained here on toy
renders (64 px -> 16x16x4 latents), a small CLIP text encoder and a reference-conditioned joint
U-Net with attention only at 8x8 and 4x4. :func:`assemble` writes them as a jointdiff pipeline
directory that ``jointdiff train`` (``model.source``) continues from.
"""

from __future__ import annotations

import json
import math
import os
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

RESOLUTION = 64  # pixels of a toy image
VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 8,  # 64 px -> 16x16x8 (6x fewer numbers); 4 channels washed colours out (docs/miniature.md)
    "block_out_channels": [32, 64, 128],  # two downsamples: 64 px -> 16x16 latents (widths: docs/miniature.md)
    "layers_per_block": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "norm_num_groups": 16,
    "mid_block_add_attention": False,  # fully convolutional: trains on crops, runs on whole images
    "sample_size": RESOLUTION,
}
UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 8,
    "out_channels": 8,
    "block_out_channels": [48, 96, 192],  # 9.3M parameters; sizes measured in docs/miniature.md
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],  # attention at 8x8, 4x4
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": 128,
    "attention_head_dim": [2, 3, 6],  # diffusers reads this as heads per block: 32 channels a head
    "norm_num_groups": 16,
}
TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
}
TOKENS = 24  # text positions: toy captions are at most ~16 words
IDENTIFIERS = ("sks", "zwx", "qlv", "hta", "pxr", "vgm", "tkd", "bnf")  # rare words for DreamBooth's "a sks dog"


def toy_tokenizer(max_length: int = TOKENS) -> Any:
    """A word-level tokenizer over the toy-world vocabulary (CLIP's special tokens, pads with EOS)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from jointdiff.toyworld.captions import vocabulary
    from jointdiff.toyworld.recipes import class_words

    special = ["<|startoftext|>", "<|endoftext|>", "<|unk|>"]
    words = [*special, *vocabulary(class_words()), *string.punctuation, *IDENTIFIERS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|unk|>",
        model_max_length=max_length,
    )


def _render_chunk(args: tuple[int, int, str, int, float]) -> np.ndarray:
    from jointdiff.toyworld.generator import make_set

    start, count, split, resolution, style_p = args
    return np.stack(
        [
            make_set(start + i, split=split, resolution=resolution, set_size=1, style_p=style_p).views[0].image
            for i in range(count)
        ]
    )


def render_images(
    count: int,
    split: str = "evaluator",
    start: int = 0,
    resolution: int = RESOLUTION,
    style_p: float = 0.5,
    workers: int = 1,
) -> np.ndarray:
    """``count`` toy renders (uint8, ``(count, H, W, 3)``), one view per subject of ``split``.

    Subjects ``start .. start + count - 1``; each view is a pure function of its subject seed, so
    the result does not depend on ``workers`` (processes).
    """
    chunk = 500
    jobs = [(start + i, min(chunk, count - i), split, resolution, style_p) for i in range(0, count, chunk)]
    if workers <= 1 or len(jobs) == 1:
        parts = [_render_chunk(j) for j in tqdm(jobs, desc="rendering", leave=False)]
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            parts = list(tqdm(pool.map(_render_chunk, jobs), total=len(jobs), desc="rendering", leave=False))
    return np.concatenate(parts) if parts else np.empty((0, resolution, resolution, 3), np.uint8)


@dataclass
class VaeTraining:
    """Settings of the VAE pre-training (reconstruction + small KL, as SD's autoencoder).

    The network is fully convolutional, so most steps train on random ``crop`` px crops (4x
    cheaper than whole 64 px images on a CPU); the last ``full_res_steps`` train on whole images
    so that the group-norm statistics match how the VAE is used.
    """

    out: str
    steps: int = 4000
    full_res_steps: int = 400
    crop: int = 32
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    kl_weight: float = 1e-6
    images: int = 16000  # training renders (subjects of the "evaluator" seed range)
    heldout: int = 256  # reconstruction check on never-seen subjects ("eval" seed range)
    style_p: float = 0.1  # share of stylised training renders (the joint model trains on plain views)
    seed: int = 0
    checkpoint_every: int = 250
    workers: int = 2  # rendering processes

    def __post_init__(self) -> None:
        if not 0 <= self.full_res_steps <= self.steps:
            raise ValueError(f"full_res_steps must be in [0, steps], got {self.full_res_steps}")
        if not 8 <= self.crop <= RESOLUTION or self.crop % 4:
            raise ValueError(f"crop must be a multiple of 4 in [8, {RESOLUTION}], got {self.crop}")
        for name in ("batch_size", "images", "heldout", "checkpoint_every", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (mean squared error over every pixel of the batch)."""
    mse = ((a - b) ** 2).mean().item() / 4.0
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def _to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def reconstruct(vae: Any, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Decode(encode mode) of images in [-1, 1], clamped to [-1, 1]."""
    out = [
        vae.decode(vae.encode(images[i : i + batch]).latent_dist.mode()).sample for i in range(0, len(images), batch)
    ]
    return torch.cat(out).clamp(-1, 1)


def reconstruction_sheet(originals: torch.Tensor, reconstructions: torch.Tensor, columns: int = 8) -> Any:
    """A PNG-ready sheet: row pairs of originals above their reconstructions (images in [-1, 1])."""
    import PIL.Image

    n, _, h, w = originals.shape
    rows = math.ceil(n / columns)
    sheet = np.full((rows * (2 * h + 4), columns * (w + 2), 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        for k, img in enumerate((originals[i], reconstructions[i])):
            y, x = r * (2 * h + 4) + k * h, c * (w + 2)
            sheet[y : y + h, x : x + w] = ((img.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255)
    return PIL.Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), PIL.Image.Resampling.NEAREST)


def train_vae(cfg: VaeTraining) -> dict[str, float]:
    """Train the miniature ``AutoencoderKL``; resumable (``state.pt``), returns held-out PSNR.

    Writes ``log.jsonl`` (loss and held-out PSNR at every checkpoint, CPU seconds), ``vae/``
    (diffusers layout, ``scaling_factor`` set for unit-variance latents as SD's 0.18215),
    ``reconstructions.png`` and ``vae_report.json``.
    """
    from diffusers import AutoencoderKL

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():  # initialisation from the seed without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        vae = AutoencoderKL(**VAE_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed)
    step, cpu_seconds = 0, 0.0
    state_path = out / "state.pt"
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        g.set_state(state["generator"])
        step, cpu_seconds = state["step"], state.get("cpu_seconds", 0.0)
    cache = out / f"renders-{cfg.images}-style{cfg.style_p}.npy"
    if cache.exists():
        train_images = np.load(cache)
    else:
        train_images = render_images(cfg.images, style_p=cfg.style_p, workers=cfg.workers)
        np.save(cache, train_images)
    data = _to_unit(train_images)  # (N, 3, H, W)
    held = _to_unit(render_images(cfg.heldout, split="eval", style_p=0.0, workers=cfg.workers))
    t0, c0 = time.time(), time.process_time()

    def lr_at(s: int) -> float:  # linear warm-up, then cosine decay to 10%
        warm = min(1.0, (s + 1) / max(cfg.warmup_steps, 1))
        return cfg.learning_rate * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))

    bar = tqdm(total=cfg.steps, initial=step, desc="vae")
    vae.train()
    window: list[float] = []
    while step < cfg.steps:
        x = data[torch.randint(len(data), (cfg.batch_size,), generator=g)]
        flip = torch.rand(cfg.batch_size, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if step < cfg.steps - cfg.full_res_steps and cfg.crop < x.shape[-1]:
            y0, x0 = torch.randint(x.shape[-1] - cfg.crop + 1, (2,), generator=g).tolist()
            x = x[:, :, y0 : y0 + cfg.crop, x0 : x0 + cfg.crop]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean() + cfg.kl_weight * post.kl().mean()
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        window.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            vae.eval()
            held_psnr = psnr(reconstruct(vae, held), held)
            vae.train()
            cpu = cpu_seconds + time.process_time() - c0
            tmp = out / "state.pt.tmp"
            torch.save(
                {
                    "vae": vae.state_dict(),
                    "opt": opt.state_dict(),
                    "generator": g.get_state(),
                    "step": step,
                    "cpu_seconds": cpu,
                },
                tmp,
            )
            os.replace(tmp, state_path)
            record = {
                "step": step,
                "loss": sum(window) / len(window),
                "psnr_db_heldout": round(held_psnr, 2),
                "cpu_seconds": round(cpu),
            }
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            tqdm.write(json.dumps(record))
            window = []
    bar.close()
    vae.eval()
    rec = reconstruct(vae, held)
    with torch.no_grad():
        latents = torch.cat([vae.encode(held[i : i + 64]).latent_dist.mode() for i in range(0, len(held), 64)])
    scaling = 1.0 / latents.flatten().std().item()  # unit-variance latents, as SD's 0.18215
    vae.register_to_config(scaling_factor=round(scaling, 5))
    vae.save_pretrained(out / "vae")
    reconstruction_sheet(held[:16], rec[:16]).save(out / "reconstructions.png")
    state = torch.load(state_path, weights_only=False)
    report = {
        "psnr_db_heldout": round(psnr(rec, held), 2),
        "scaling_factor": round(scaling, 5),
        "steps": step,
        "cpu_seconds": round(state.get("cpu_seconds", 0.0)),
        "seconds_this_run": round(time.time() - t0, 1),
    }
    (out / "vae_report.json").write_text(json.dumps(report, indent=2))
    return report


def assemble(vae_dir: str | Path, out: str | Path, seed: int = 0) -> Path:
    """A from-scratch jointdiff pipeline: trained VAE, random text encoder and converted U-Net."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from jointdiff.model import convert_unet
    from jointdiff.pipeline import JointDiffusionPipeline

    tokenizer = toy_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer.get_vocab()),
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            **TEXT_CONFIG,
        )
    )
    unet = convert_unet(UNet2DConditionModel(**UNET_CONFIG))
    scheduler = DDIMScheduler(  # SD 1.x's schedule; the trainer reads it as DDPM, sampling uses DDIM
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    vae = AutoencoderKL.from_pretrained(vae_dir)
    pipe = JointDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler
    )
    pipe.save_pretrained(str(out))
    return Path(out)


def half_precision_copy(src: str | Path, dst: str | Path) -> None:
    """Rewrite every safetensors file of a pipeline directory in fp16 (the shipped format)."""
    src, dst = Path(src), Path(dst)
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.suffix == ".safetensors":
            target.parent.mkdir(parents=True, exist_ok=True)
            tensors = load_file(path)
            save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


PROBE_PROMPTS = (0, 2, 6, 9)  # jungle, beach, city, purple rug in a forest (indices into a subject's 25 prompts)


@dataclass
class _ProbeBank:
    """The fixed part of :func:`reference_probe`: subjects, prompts, their real and text-only floors."""

    subjects: list[Any]
    prompts: list[list[str]]
    real: float  # toy identity of fresh renders of the subject under each prompt (upper bound)
    floor: float  # ... of another subject of the class under each prompt (a perfect text-only model)
    identity: Any
    dual: Any


_PROBE_BANKS: dict[tuple[int, int], _ProbeBank] = {}


def _identity_score(identity: Any, generated: list[Any], subjects: list[Any], per_subject: int) -> list[float]:
    """Per image: mean cosine of its toy-identity feature with every real image of its subject (JeDi's DINO)."""
    feats = identity.encode_images(generated)  # (S * per_subject, d)
    scores = []
    for i, s in enumerate(subjects):
        real = identity.encode_images(s.images)  # (R, d)
        scores += (feats[i * per_subject : (i + 1) * per_subject] @ real.T).mean(dim=1).tolist()
    return scores


def _probe_bank(subjects: int, start: int) -> _ProbeBank:
    from jointdiff.toyworld.benchmark import ToyRealMethod, ToyTextOnlyMethod, ToyWorldBenchmark
    from jointdiff.toyworld.evaluators import load_toy_dual, load_toy_identity

    key = (subjects, start)
    if key not in _PROBE_BANKS:
        bench = ToyWorldBenchmark(subjects=subjects, images=3, start=start)
        subs = bench.subjects()
        prompts = [[bench.prompt_templates(s)[k].format(s.class_word) for k in PROBE_PROMPTS] for s in subs]
        identity, dual = load_toy_identity(), load_toy_dual()
        rows = {}
        for name, method in (("real", ToyRealMethod()), ("floor", ToyTextOnlyMethod())):
            images = [im for s, p in zip(subs, prompts, strict=True) for im in method.generate(s, s.images[:1], p, 0)]
            rows[name] = float(np.mean(_identity_score(identity, images, subs, len(PROBE_PROMPTS))))
        _PROBE_BANKS[key] = _ProbeBank(subs, prompts, rows["real"], rows["floor"], identity, dual)
    return _PROBE_BANKS[key]


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
    bank = _probe_bank(subjects, start)
    c = pipe.joint_unet.layout.latent_channels
    side = pipe.unet.config.sample_size
    with_ref, without, texts = [], [], []
    for s, prompts in zip(bank.subjects, bank.prompts, strict=True):
        for k, prompt in enumerate(prompts):
            noise = torch.randn((1, 1, c, side, side), generator=torch.Generator().manual_seed(seed * 1000 + k))
            common = {"num_inference_steps": steps, "guidance_scale": guidance_scale, "output_type": "pil"}
            with_ref += pipe(
                [prompt],
                reference_images=s.images[:1],
                reference_prompts=[f"a photo of a {s.class_word}"],
                latents=noise,
                generator=torch.Generator().manual_seed(seed),
                **common,
            ).images
            without += pipe([prompt], latents=noise, generator=torch.Generator().manual_seed(seed), **common).images
            texts.append(prompt)
    per = len(PROBE_PROMPTS)
    id_ref = float(np.mean(_identity_score(bank.identity, with_ref, bank.subjects, per)))
    id_noref = float(np.mean(_identity_score(bank.identity, without, bank.subjects, per)))
    effect = float(
        np.mean(
            [
                np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean() / 255
                for a, b in zip(with_ref, without, strict=True)
            ]
        )
    )
    text_feats = bank.dual.encode_texts(texts)
    span = max(bank.real - bank.floor, 1e-6)
    return {
        "reference_effect": round(effect, 4),
        "identity_ref": round(id_ref, 4),
        "identity_noref": round(id_noref, 4),
        "normalised_ref": round((id_ref - bank.floor) / span, 4),
        "normalised_noref": round((id_noref - bank.floor) / span, 4),
        "clip_t_ref": round(float((bank.dual.encode_images(with_ref) * text_feats).sum(1).mean()), 4),
        "clip_t_noref": round(float((bank.dual.encode_images(without) * text_feats).sum(1).mean()), 4),
        "identity_real": round(bank.real, 4),
        "identity_floor": round(bank.floor, 4),
    }
