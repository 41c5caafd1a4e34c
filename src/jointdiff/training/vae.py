"""Training the miniature's VAE (reconstruction + small KL, as SD's autoencoder) on the training shell.

Toy renders of the ``evaluator`` seed range, random crops for most steps (the network is fully
convolutional), whole images for the last ``full_res_steps``. A run directory holds the shell's
``checkpoints/`` and ``logs/metrics.jsonl`` (loss and held-out PSNR at every checkpoint, CPU hours), the
render cache, and at the end ``vae/`` (diffusers layout, ``scaling_factor`` set for unit-variance
latents as SD's 0.18215), ``reconstructions.png`` and ``vae_report.json``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from jointdiff.common.seeding import seeded
from jointdiff.miniature.config import RESOLUTION, VAE_CONFIG, VaeTraining
from jointdiff.training.config import TrainConfig
from jointdiff.training.shell import Shell, Task


def _render_chunk(args: tuple[int, int, str, int, float]) -> np.ndarray:
    from jointdiff.data.toyworld.generator import make_set

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
    out = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].to(vae.device)
        out.append(vae.decode(vae.encode(x).latent_dist.mode()).sample.cpu())
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


class VaeTask(Task):
    """Reconstruction (L1 + L2) and a small KL on flipped, cropped toy renders; every draw from one generator."""

    def __init__(self, cfg: VaeTraining, vae: Any, data: torch.Tensor, held: torch.Tensor, device: torch.device):
        self.cfg, self.vae, self.data, self.held, self.device = cfg, vae, data, held, device
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0  # optimizer steps done: the last full_res_steps train on whole images

    def loss(self) -> tuple[torch.Tensor, int]:
        cfg, g = self.cfg, self.generator
        x = self.data[torch.randint(len(self.data), (cfg.batch_size,), generator=g)]
        flip = torch.rand(cfg.batch_size, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.step < cfg.steps - cfg.full_res_steps and cfg.crop < x.shape[-1]:
            y0, x0 = torch.randint(x.shape[-1] - cfg.crop + 1, (2,), generator=g).tolist()
            x = x[:, :, y0 : y0 + cfg.crop, x0 : x0 + cfg.crop]
        x = x.to(self.device)
        post = self.vae.encode(x).latent_dist
        rec = self.vae.decode(post.sample(generator=g)).sample
        return (rec - x).abs().mean() + ((rec - x) ** 2).mean() + cfg.kl_weight * post.kl().mean(), len(x)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def after_step(self, step: int) -> None:
        self.step = step

    def metrics(self, step: int) -> dict[str, float]:
        """Held-out reconstruction PSNR (never-seen subjects), logged at every checkpoint."""
        self.vae.eval()
        value = psnr(reconstruct(self.vae, self.held), self.held)
        self.vae.train()
        return {"psnr_db_heldout": round(value, 2)}


def _warm_cosine(cfg: VaeTraining) -> Any:
    """The LR factor of step s: linear warm-up, then cosine decay to 10% over ``cfg.steps``."""

    def factor(s: int) -> float:
        warm = min(1.0, (s + 1) / max(cfg.warmup_steps, 1))
        return warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))

    return factor


def _resume_state_pt(path: Path, vae: Any, optimizer: Any, lr_scheduler: Any, task: VaeTask) -> tuple[int, float]:
    """Continue a run written before the training shell (one ``state.pt``): weights, optimizer, generator, step."""
    state = torch.load(path, weights_only=False)
    vae.load_state_dict(state["vae"])
    optimizer.load_state_dict(state["opt"])
    task.generator.set_state(state["generator"])
    step = int(state["step"])
    schedule = lr_scheduler.scheduler
    schedule.last_epoch = step
    for group, base, factor in zip(optimizer.param_groups, schedule.base_lrs, schedule.lr_lambdas, strict=True):
        group["lr"] = base * factor(step)
    return step, float(state.get("cpu_seconds", 0.0))


def _renders(cfg: VaeTraining, out: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Training renders (cached in the run directory) and held-out renders, as ``(N, 3, H, W)`` in [-1, 1]."""
    cache = out / f"renders-{cfg.images}-style{cfg.style_p}.npy"
    if cache.exists():
        train_images = np.load(cache)
    else:
        train_images = render_images(cfg.images, style_p=cfg.style_p, workers=cfg.workers)
        np.save(cache, train_images)
    held = render_images(cfg.heldout, split="eval", style_p=0.0, workers=cfg.workers)
    return _to_unit(train_images), _to_unit(held)


def train_vae(cfg: VaeTraining) -> dict[str, float]:
    """Train the miniature ``AutoencoderKL`` (resumable: rerun the same command); returns held-out PSNR."""
    from diffusers import AutoencoderKL

    out = Path(cfg.out)
    run = TrainConfig.plain(out, cfg.steps, cfg.seed, cfg.checkpoint_every)  # held-out PSNR with each log
    shell = Shell(run)
    with seeded(cfg.seed):  # initialisation from the seed without touching the caller's RNG
        vae = AutoencoderKL(**VAE_CONFIG)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warm_cosine(cfg))
    vae, optimizer, lr_scheduler = shell.prepare(vae, optimizer, lr_scheduler)
    out.mkdir(parents=True, exist_ok=True)
    data, held = _renders(cfg, out)
    task = VaeTask(cfg, vae, data, held, shell.device)
    state = shell.restore()
    if state is not None:
        task.generator.set_state(state["generator"])
    elif (out / "state.pt").exists():
        shell.start(*_resume_state_pt(out / "state.pt", vae, optimizer, lr_scheduler, task))
    task.step = shell.step
    t0 = time.time()
    vae.train()
    fit = shell.fit(task, [vae], optimizer, lr_scheduler, desc="vae")
    shell.end()

    vae = shell.accelerator.unwrap_model(vae).eval()
    rec = reconstruct(vae, held)
    with torch.no_grad():
        latents = torch.cat(
            [vae.encode(held[i : i + 64].to(vae.device)).latent_dist.mode() for i in range(0, len(held), 64)]
        )
    scaling = 1.0 / latents.flatten().std().item()  # unit-variance latents, as SD's 0.18215
    vae.register_to_config(scaling_factor=round(scaling, 5))
    vae.save_pretrained(out / "vae")
    reconstruction_sheet(held[:16], rec[:16]).save(out / "reconstructions.png")
    report = {
        "psnr_db_heldout": round(psnr(rec, held), 2),
        "scaling_factor": round(scaling, 5),
        "steps": fit.step,
        "cpu_seconds": round(fit.cpu_seconds),
        "seconds_this_run": round(time.time() - t0, 1),
    }
    (out / "vae_report.json").write_text(json.dumps(report, indent=2))
    return report
