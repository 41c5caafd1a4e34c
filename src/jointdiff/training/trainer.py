"""The JeDi trainer on accelerate (sec. 4 implementation details): one documented loop, :func:`train`.

Mixed precision, gradient accumulation and checkpointing, EMA, LR warmup and schedule, atomic
checkpoints with exact resume (model, optimizer, LR scheduler, EMA, RNGs, data position),
TensorBoard and JSONL logs, a tqdm bar, sample grids; the output directory ends as a
:class:`jointdiff.JointDiffusionPipeline` directory. Multi-GPU: ``accelerate launch -m
jointdiff.cli train --config FILE`` (each rank reads its own shards of the data).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from jointdiff.data.stream import BatchSpec, SetBatchStream, WeightedSource, skipped_total
from jointdiff.sets import pack_sets, unpack_sets
from jointdiff.training.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint, save_pipeline
from jointdiff.training.components import load_components, open_data_sources
from jointdiff.training.config import Config
from jointdiff.training.objective import JediObjective
from jointdiff.training.samples import has_sampling, run_monitor, write_sample_grid

logger = logging.getLogger(__name__)

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class TrainResult:
    """What a call of :func:`train` did (this process's view)."""

    output_dir: Path
    step: int  # optimizer steps done in total (including earlier, resumed parts)
    finished: bool  # reached train.max_steps; the pipeline is saved in output_dir
    losses: list[float] = field(default_factory=list)  # loss per optimizer step of this call
    images_per_second: float | None = None  # all processes, after the first step of this call
    skipped: dict[str, int] = field(default_factory=dict)  # bad sets skipped, "source/bad" -> count
    main_process: bool = True  # False on the other ranks of a multi-process run


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def _resume_from(config: Config, out: Path) -> Path | None:
    """The checkpoint to resume from, per ``train.resume``."""
    mode = config.train.resume
    if mode == "latest":
        return latest_checkpoint(out)
    if mode == "never":
        if latest_checkpoint(out) is not None:
            raise ValueError(f"train.resume: 'never' but {out} already holds checkpoints (use another output_dir)")
        return None
    if not Path(mode).is_dir():
        raise ValueError(f"train.resume: no such checkpoint directory: {mode}")
    return Path(mode)


def _warn_config_changes(config: Config, out: Path) -> None:
    """On resume, name the fields that differ from the saved config (exactness needs the same data/model/optim)."""
    saved = out / "train_config.json"
    if not saved.is_file():
        return
    old, new = json.loads(saved.read_text()), json.loads(json.dumps(asdict(config)))
    volatile = {"max_steps", "stop_after", "resume", "log_every", "tensorboard"}
    changed = [
        f"{section}.{k}"
        for section in new
        for k in set(old.get(section, {})) | set(new[section])
        if k not in volatile and old.get(section, {}).get(k) != new[section].get(k)
    ]
    if changed:
        logger.warning(
            "resuming with a changed config (%s): the run is no longer exactly reproducible", ", ".join(changed)
        )


class _Batches:
    """Micro-batches of this rank with the data position of every loader worker, for checkpoints."""

    def __init__(self, config: Config, sources: list[WeightedSource], rank: int, world: int, state: dict | None):
        d = config.data
        spec = BatchSpec(
            d.batch_size, d.resolution, (d.set_size[0], d.set_size[1]), d.batching, d.short_caption_probability
        )
        stream = SetBatchStream(sources, spec, config.train.seed, rank, world, d.shuffle, resume=state)
        # Own generator: creating the iterator must not draw from the global RNG restored by resume.
        loader = torch.utils.data.DataLoader(
            stream,
            batch_size=None,
            num_workers=d.num_workers,
            generator=torch.Generator().manual_seed(config.train.seed),
            pin_memory=torch.cuda.is_available(),
        )
        self.workers = max(d.num_workers, 1)
        self.consumed = int(state["consumed"]) if state else 0
        self.roles: dict[int, Any] = dict(state["roles"]) if state else {}
        self._it = iter(loader)

    def next(self) -> dict[str, Any]:
        batch = next(self._it)
        self.consumed += 1
        tag = batch.pop("data_state")
        self.roles[int(tag["role"])] = tag["state"]
        return batch

    def state(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "num_workers": self.workers, "roles": self.roles}


class Averages:
    """Exponential moving averages of the trained modules, by name (``unet``, ``text_encoder``)."""

    def __init__(self, averages: dict[str, Any]) -> None:
        self.averages = averages  # name -> diffusers EMAModel

    def step(self, modules: dict[str, torch.nn.Module]) -> None:
        for name, e in self.averages.items():
            e.step(modules[name].parameters())

    def store(self, modules: dict[str, torch.nn.Module]) -> None:
        for name, e in self.averages.items():
            e.store(modules[name].parameters())

    def copy_to(self, modules: dict[str, torch.nn.Module]) -> None:
        for name, e in self.averages.items():
            e.copy_to(modules[name].parameters())

    def restore(self, modules: dict[str, torch.nn.Module]) -> None:
        for name, e in self.averages.items():
            e.restore(modules[name].parameters())


def _trained_modules(accelerator: Any, model: Any, text_model: Any) -> dict[str, torch.nn.Module]:
    """The U-Net and the text encoder as trained (unwrapped from DDP & co.)."""
    return {"unet": accelerator.unwrap_model(model).unet, "text_encoder": accelerator.unwrap_model(text_model)}


def check_latent_sources(sources: list[WeightedSource], vae: Any, train_vae: bool) -> None:
    """Cached latents must come from this model's VAE (same weights, scaling and shift); ValueError if not."""
    from jointdiff.data.latents import vae_fingerprint
    from jointdiff.data.sources import LatentSource

    cached = [(i, ws.source) for i, ws in enumerate(sources) if isinstance(ws.source, LatentSource)]
    if not cached:
        return
    if train_vae:
        raise ValueError("model.train_vae: cannot train the VAE on cached latents")
    mine = vae_fingerprint(vae)
    for i, source in cached:
        for manifest in source.manifests():
            if manifest.get("vae_fingerprint") != mine:
                raise ValueError(
                    f"data.sources[{i}]: latents encoded by VAE {manifest.get('vae_fingerprint')}, "
                    f"the model's VAE is {mine}; re-encode with `jointdiff cache-latents --model` this model"
                )
            for key in ("scaling_factor", "shift_factor"):
                if float(manifest.get(key) or 0.0) != float(getattr(vae.config, key, None) or 0.0):
                    raise ValueError(f"data.sources[{i}]: cache {key} {manifest.get(key)} != the VAE's")


def train(config: Config, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train (or resume training) the joint-image model described by ``config``; see docs/training.md."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from jointdiff.model import JointUNet

    t, m = config.train, config.model
    out = Path(t.output_dir)

    # 1. Accelerator, seeds, the checkpoint to resume from.
    log_with = ["tensorboard"] if t.tensorboard and _has_tensorboard() else None
    accelerator = Accelerator(
        mixed_precision=t.mixed_precision,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    main = accelerator.is_main_process
    if t.tensorboard and log_with is None and main:
        logger.warning(
            "tensorboard is not installed (pip install 'jointdiff[train]'): logging to logs/metrics.jsonl only"
        )
    if m.train_vae and accelerator.num_processes > 1:
        raise ValueError("model.train_vae: supported on a single process only")
    kind = str(accelerator.distributed_type)
    if "FSDP" in kind and (config.ema.enabled or config.sample.every):
        raise ValueError(
            "ema.enabled / sample.every: need unsharded weights; set them off under FSDP (or use DDP, ZeRO-2)"
        )
    if "DEEPSPEED" in kind and m.train_text_encoder:
        raise ValueError("model.train_text_encoder: accelerate's DeepSpeed integration trains one model; set it false")
    resume = _resume_from(config, out)
    sources = open_data_sources(config.data)  # listed before the (slow) model load: an empty source fails now
    set_seed(t.seed)
    if t.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True

    # 2. Components: trainable U-Net in fp32 (autocast does the rest), frozen parts in the run's dtype.
    components = load_components(m)
    unet, vae, text_encoder = components["unet"], components["vae"], components["text_encoder"]
    check_latent_sources(sources, vae, m.train_vae)
    tokenizer = components["tokenizer"]
    factor = 2 ** (len(vae.config.block_out_channels) - 1) * 2 ** (len(unet.config.block_out_channels) - 1)
    if config.data.resolution % factor:
        raise ValueError(
            f"data.resolution: {config.data.resolution} is not a multiple of {factor} (VAE x U-Net downsampling of this model)"
        )
    weight_dtype = DTYPES[t.mixed_precision]
    frozen_fp32: dict[str, dict[str, torch.Tensor]] = {}  # originals of cast frozen parts, saved at the end
    for name, module, trainable in (("vae", vae, m.train_vae), ("text_encoder", text_encoder, m.train_text_encoder)):
        module.requires_grad_(trainable)
        if not trainable and weight_dtype != torch.float32:
            frozen_fp32[name] = {k: v.detach().clone() for k, v in module.state_dict().items()}
            module.to(dtype=weight_dtype)
        module.to(accelerator.device)
    if m.train_vae:
        vae.decoder.requires_grad_(False)
        vae.post_quant_conv.requires_grad_(False)
    if m.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if m.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    joint = JointUNet(unet).to(accelerator.device)
    vae.train(m.train_vae)
    text_encoder.train(m.train_text_encoder)
    joint.train()

    # 3. EMA, optimizer, LR schedule (stepped once per process by accelerate, hence the factor).
    ema = None
    if config.ema.enabled:

        def average(module: torch.nn.Module) -> EMAModel:
            e = EMAModel(
                module.parameters(),
                decay=config.ema.decay,
                use_ema_warmup=config.ema.warmup,
                power=config.ema.power,
                model_cls=type(module),
                model_config=getattr(module, "config", None),
            )
            e.to(accelerator.device)
            accelerator.register_for_checkpointing(e)
            return e

        ema = Averages({"unet": average(unet)})
        if m.train_text_encoder:  # trained from scratch with the U-Net: averaged alike, so the two stay matched
            ema.averages["text_encoder"] = average(text_encoder)
    trainables = [joint] + [mod for mod, on in ((text_encoder, m.train_text_encoder), (vae, m.train_vae)) if on]
    params = [p for mod in trainables for p in mod.parameters() if p.requires_grad]
    o = config.optim
    optimizer = torch.optim.AdamW(
        params, lr=o.learning_rate, betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_epsilon, weight_decay=o.weight_decay
    )
    lr_scheduler = get_scheduler(
        o.lr_schedule,
        optimizer,
        num_warmup_steps=o.warmup_steps * accelerator.num_processes,
        num_training_steps=t.max_steps * accelerator.num_processes,
    )
    prepared = accelerator.prepare(*trainables, optimizer, lr_scheduler)
    trainables, optimizer, lr_scheduler = list(prepared[: len(trainables)]), prepared[-2], prepared[-1]
    model = trainables[0]
    text_model = trainables[1] if m.train_text_encoder else text_encoder
    noise_scheduler = DDPMScheduler.from_config(components["scheduler"].config)
    objective = JediObjective(**asdict(config.objective))

    # 4. Resume: accelerate state (weights, optimizer, LR, EMA, RNGs), then ours (step, data, generator).
    generator = torch.Generator(device=accelerator.device).manual_seed(t.seed * 1_000_003 + accelerator.process_index)
    step, data_state, cpu_before = 0, None, 0.0
    if resume is not None:
        accelerator.load_state(str(resume))
        state = load_trainer_state(resume, accelerator.process_index)
        step, data_state = int(state["step"]), state["data"]
        cpu_before = float(state.get("cpu_seconds", 0.0))  # CPU time of the earlier parts of the run
        generator.set_state(state["generator"])
        _warn_config_changes(config, out)
        if main:
            tqdm.write(f"resumed from {resume} at step {step}")
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(asdict(config), indent=2))
    if log_with:
        accelerator.init_trackers("jointdiff", config=_flat_hparams(asdict(config)))

    # 5. Data: this rank's parts of every source, mixed by weight.
    batches = _Batches(config, sources, accelerator.process_index, accelerator.num_processes, data_state)

    def encode_text(captions: list[list[str]]) -> torch.Tensor:
        """Per-image prompt embeddings ``(B, N, T, D)``."""
        n = len(captions[0])
        ids = tokenizer(
            [c for row in captions for c in row],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(accelerator.device)
        return unpack_sets(text_model(ids)[0], n)  # (B*N, T, D) -> (B, N, T, D)

    def encode_images(pixels: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, N, C, h, w)`` of images ``(B, N, 3, H, W)`` (sampled from the VAE posterior)."""
        n = pixels.shape[1]
        with torch.set_grad_enabled(m.train_vae):
            dist = vae.encode(pack_sets(pixels.to(accelerator.device, vae.dtype))).latent_dist  # (B*N, 3, H, W)
            z = dist.sample(generator=generator)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return unpack_sets((z.float() - shift) * vae.config.scaling_factor, n)  # (B*N, C, h, w) -> (B, N, C, h, w)

    null_text = None
    if not m.train_text_encoder:
        with torch.no_grad():
            null_text = encode_text([[""]])[0, 0]  # (T, D)

    # 6. The loop: G micro-batches per optimizer step; checkpoint, log, sample at step boundaries.
    stop_at = min(t.max_steps, t.stop_after) if t.stop_after else t.max_steps
    result = TrainResult(out, step, finished=False, main_process=main)
    bar = tqdm(total=t.max_steps, initial=step, desc="train", disable=not main, dynamic_ncols=True)
    window: list[float] = []
    images, t0 = 0, None
    sampled_note = False

    cpu0 = time.process_time()

    def cpu_seconds() -> float:
        """CPU seconds of this process (all its threads) over every part of the run."""
        return cpu_before + time.process_time() - cpu0

    def checkpoint() -> None:
        trainer_state = {
            "step": step,
            "data": batches.state(),
            "generator": generator.get_state(),
            "cpu_seconds": cpu_seconds(),
        }
        path = save_checkpoint(accelerator, out, step, trainer_state, keep=t.keep_checkpoints)
        if main:
            tqdm.write(f"checkpoint {path}")

    while step < stop_at:
        step_loss = 0.0
        for _ in range(t.gradient_accumulation_steps):
            batch = batches.next()
            slot_mask = batch["slot_mask"].to(accelerator.device)
            with accelerator.accumulate(*trainables):
                if "latents" in batch:  # cached latents: no image decode, no VAE forward
                    latents = batch["latents"].to(accelerator.device)
                else:
                    latents = encode_images(batch["pixel_values"])
                text = encode_text(batch["captions"])
                null = null_text if null_text is not None else encode_text([[""]])[0, 0]
                res = objective(
                    model,
                    noise_scheduler,
                    latents,
                    text.float(),
                    null.float(),
                    slot_mask=None if bool(slot_mask.all()) else slot_mask,
                    generator=generator,
                    foreground=batch["foreground"].to(accelerator.device) if "foreground" in batch else None,
                )
                accelerator.backward(res.loss)
                if accelerator.sync_gradients and o.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, o.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += float(res.loss.detach()) / t.gradient_accumulation_steps
            if t0 is not None:
                images += int(slot_mask.sum())
        if not accelerator.sync_gradients:
            raise RuntimeError("gradient accumulation out of step with the optimizer")
        step += 1
        if ema is not None:
            ema.step(_trained_modules(accelerator, model, text_model))
        if t0 is None:
            t0 = time.perf_counter()  # throughput excludes the first step (allocation, warm-up)
        result.losses.append(step_loss)
        window.append(step_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")

        if step % t.log_every == 0 or step == stop_at:
            _log(accelerator, out, step, window, lr_scheduler.get_last_lr()[0], images, t0, batches, cpu_seconds())
            window = []
        if step % t.checkpoint_every == 0 or step == stop_at:
            checkpoint()
        if config.monitor.every and step % config.monitor.every == 0 and main:
            measured = run_monitor(config, accelerator, components, model, text_model, ema)
            record = {"step": step, "cpu_hours": round(cpu_seconds() / 3600, 4), **measured}
            (out / "logs").mkdir(parents=True, exist_ok=True)
            with open(out / "logs" / "monitor.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            accelerator.log({f"monitor/{k}": v for k, v in measured.items()}, step=step)
            tqdm.write(f"monitor {json.dumps(record)}")
        if config.sample.every and step % config.sample.every == 0 and main:
            if has_sampling():
                write_sample_grid(config, accelerator, components, model, text_model, ema, out, step)
            elif not sampled_note:
                tqdm.write("sample grids skipped: JointDiffusionPipeline has no __call__ in this version")
                sampled_note = True
        if on_step is not None:
            on_step(step, step_loss)
    bar.close()

    # 7. Results; at the end of the run, the pipeline (EMA weights, frozen parts in their original precision).
    elapsed = time.perf_counter() - t0 if t0 is not None else 0.0
    if elapsed > 0 and images:
        total = accelerator.reduce(torch.tensor(float(images), device=accelerator.device), "sum")
        result.images_per_second = float(total) / elapsed
    result.step, result.skipped = step, dict(skipped_total(batches.roles))
    if step >= t.max_steps:
        accelerator.wait_for_everyone()
        if main:
            unet_out = accelerator.unwrap_model(model).unet
            if ema is not None:
                ema.copy_to(_trained_modules(accelerator, model, text_model))
            final = dict(components, unet=unet_out, text_encoder=accelerator.unwrap_model(text_model))
            for name, sd in frozen_fp32.items():
                final[name].to(dtype=torch.float32).load_state_dict(sd)
            save_pipeline(final, out)
            tqdm.write(f"saved pipeline to {out} (JointDiffusionPipeline.from_pretrained)")
        result.finished = True
    elif main:
        tqdm.write(f"stopped at step {step} of {t.max_steps} (train.stop_after); run the same command again to resume")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def _flat_hparams(tree: dict[str, Any], prefix: str = "", depth: int = 2) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` for ``depth`` levels; deeper and non-scalar values as strings (TensorBoard hparams)."""
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and depth > 1:
            flat.update(_flat_hparams(v, f"{prefix}{k}.", depth - 1))
        else:
            flat[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return flat


def _log(
    accelerator: Any,
    out: Path,
    step: int,
    window: list[float],
    lr: float,
    images: int,
    t0: float | None,
    batches: _Batches,
    cpu_seconds: float,
) -> None:
    """Mean loss over the window (all processes), LR, throughput, CPU hours and skipped-set counts."""
    loss = accelerator.reduce(torch.tensor(sum(window) / max(len(window), 1), device=accelerator.device), "mean")
    metrics: dict[str, float] = {"train/loss": float(loss), "train/lr": lr, "train/cpu_hours": cpu_seconds / 3600}
    if t0 is not None and images:
        metrics["train/images_per_s_per_device"] = images / max(time.perf_counter() - t0, 1e-9)
    for key, count in skipped_total(batches.roles).items():
        metrics[f"data/skipped/{key}"] = float(count)
    accelerator.log(metrics, step=step)
    if accelerator.is_main_process:
        (out / "logs").mkdir(parents=True, exist_ok=True)
        with open(out / "logs" / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
