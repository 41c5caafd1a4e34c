"""The JeDi trainer (sec. 4 implementation details): the JeDi objective and image-set data on the training shell.

:func:`train` builds the model to train (frozen parts in the run's precision, the U-Net with coupled
attention), the weight averages, AdamW and the LR schedule, then runs :class:`JediTask` on
:class:`jointdiff.training.shell.Shell` (mixed precision, gradient accumulation, atomic checkpoints
with exact resume, TensorBoard and JSONL logs, a tqdm bar). Monitors and sample grids run on the EMA
weights; the output directory ends as a :class:`jointdiff.JointDiffusionPipeline` directory.
Several processes: ``accelerate launch --num_processes N -m jointdiff.cli train --config FILE`` (docs/scale.md):
each reads its own parts of the data, and a set's random draws are keyed by the set, so two processes with
batches of b train as one with batches of 2b.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from jointdiff.common.config import torch_dtype
from jointdiff.common.seeding import keyed_generator
from jointdiff.data.stream import WeightedSource, skipped_total
from jointdiff.jedi.encoding import encode_latents, encode_prompts, fully_masked_latent
from jointdiff.jedi.sets import pack_sets, unpack_sets
from jointdiff.training.checkpoint import save_pipeline
from jointdiff.training.components import Batches, check_latent_sources, load_components, open_data_sources
from jointdiff.training.config import Config
from jointdiff.training.objective import JediObjective
from jointdiff.training.samples import run_monitor, write_sample_grid
from jointdiff.training.shell import Shell, Task
from jointdiff.training.toystream import attach_vae

logger = logging.getLogger(__name__)


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


@dataclass
class Model:
    """The model being trained: its components, what trains, and the frozen parts' fp32 originals."""

    components: dict[str, Any]  # unet (jointdiff layout), vae, text_encoder, tokenizer, scheduler
    # What trains, by name, in the order accelerate prepares (and checkpoints) them: "joint_unet" (the JointUNet
    # adapter), then "text_model" and "vae" when they train.
    trainables: dict[str, torch.nn.Module]
    frozen_fp32: dict[str, dict[str, torch.Tensor]]  # originals of frozen parts cast to the run's dtype
    text_encoder: Any = None  # the frozen text encoder, called when the text model does not train

    @property
    def joint(self) -> Any:
        """The JointUNet adapter as trained (prepared by accelerate)."""
        return self.trainables["joint_unet"]

    @property
    def text_model(self) -> Any:
        """The text encoder as called: prepared by accelerate when it trains, else the frozen one."""
        return self.trainables.get("text_model", self.text_encoder)

    def prepared(self, modules: list[torch.nn.Module]) -> None:
        """Take back the trainables as accelerate prepared them (same names, same order)."""
        self.trainables = dict(zip(self.trainables, modules, strict=True))

    def trained(self, accelerator: Any) -> dict[str, torch.nn.Module]:
        """The U-Net and the text encoder as trained (unwrapped from DDP & co.)."""
        return {
            "unet": accelerator.unwrap_model(self.joint).unet,
            "text_encoder": accelerator.unwrap_model(self.text_model),
        }


def _check_placement(config: Config, accelerator: Any) -> None:
    """What a distributed setup cannot do with this config; one-line errors naming the field."""
    if config.model.train_vae and accelerator.num_processes > 1:
        raise ValueError("model.train_vae: supported on a single process only")
    kind = str(accelerator.distributed_type)
    if "FSDP" in kind and (config.ema.enabled or config.sample.every):
        raise ValueError(
            "ema.enabled / sample.every: need unsharded weights; set them off under FSDP (or use DDP, ZeRO-2)"
        )
    if "DEEPSPEED" in kind and config.model.train_text_encoder:
        raise ValueError("model.train_text_encoder: accelerate's DeepSpeed integration trains one model; set it false")


def build_model(config: Config, sources: list[WeightedSource], device: torch.device) -> Model:
    """Components of ``config.model``: trainable parts in fp32 (autocast does the rest), frozen ones in the run's dtype."""
    from jointdiff.jedi.model import JointUNet

    m = config.model
    components = load_components(m)
    unet, vae, text_encoder = components["unet"], components["vae"], components["text_encoder"]
    check_latent_sources(sources, vae, m.train_vae)
    attach_vae(sources, vae, config.data.resolution)  # toyworld sources render and encode with the model's VAE
    factor = 2 ** (len(vae.config.block_out_channels) - 1) * 2 ** (len(unet.config.block_out_channels) - 1)
    if config.data.resolution % factor:
        raise ValueError(
            f"data.resolution: {config.data.resolution} is not a multiple of {factor} (VAE x U-Net downsampling of this model)"
        )
    weight_dtype = torch_dtype("fp32" if config.train.mixed_precision == "no" else config.train.mixed_precision)
    frozen_fp32: dict[str, dict[str, torch.Tensor]] = {}
    for name, module, trainable in (("vae", vae, m.train_vae), ("text_encoder", text_encoder, m.train_text_encoder)):
        module.requires_grad_(trainable)
        if not trainable and weight_dtype != torch.float32:
            frozen_fp32[name] = {k: v.detach().clone() for k, v in module.state_dict().items()}
            module.to(dtype=weight_dtype)
        module.to(device)
    if m.train_vae:
        vae.decoder.requires_grad_(False)
        vae.post_quant_conv.requires_grad_(False)
    if m.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if m.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    joint = JointUNet.with_joint_attention(unet).to(device)
    vae.train(m.train_vae)
    text_encoder.train(m.train_text_encoder)
    joint.train()
    trainables = {"joint_unet": joint, "text_model": text_encoder, "vae": vae}
    trained = {"joint_unet": True, "text_model": m.train_text_encoder, "vae": m.train_vae}
    return Model(components, {k: mod for k, mod in trainables.items() if trained[k]}, frozen_fp32, text_encoder)


def build_averages(config: Config, shell: Shell, components: dict[str, Any]) -> Averages | None:
    """EMA of the U-Net and, when it trains (from scratch with the U-Net), of the text encoder, so the two
    stay matched; registered for checkpoints in that order (``custom_checkpoint_0``, ``_1``)."""
    from diffusers.training_utils import EMAModel

    if not config.ema.enabled:
        return None

    def average(module: torch.nn.Module) -> EMAModel:
        e = EMAModel(
            module.parameters(),
            decay=config.ema.decay,
            use_ema_warmup=config.ema.warmup,
            power=config.ema.power,
            model_cls=type(module),
            model_config=getattr(module, "config", None),
        )
        e.to(shell.device)
        shell.register(e)
        return e

    ema = Averages({"unet": average(components["unet"])})
    if config.model.train_text_encoder:
        ema.averages["text_encoder"] = average(components["text_encoder"])
    return ema


def build_optimizer(config: Config, shell: Shell, trainables: list[torch.nn.Module]) -> tuple[Any, Any]:
    """AdamW over the trainable parameters and the LR schedule (stepped once per process by accelerate)."""
    from diffusers.optimization import get_scheduler

    o, processes = config.optim, shell.accelerator.num_processes
    params = [p for mod in trainables for p in mod.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=o.learning_rate, betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_epsilon, weight_decay=o.weight_decay
    )
    lr_scheduler = get_scheduler(
        o.lr_schedule,
        optimizer,
        num_warmup_steps=o.warmup_steps * processes,
        num_training_steps=config.train.max_steps * processes,
    )
    return optimizer, lr_scheduler


class JediTask(Task):
    """JeDi eq. 2 on this rank's micro-batches: encode text and images, draw masks, noise and dropout, the loss.

    Every draw of a set (its VAE posterior sample, mask bits, dropout, timestep, noise) comes from a generator
    keyed by the seed the data gives the set, so it does not depend on the process or the batch it lands in.
    """

    def __init__(self, config: Config, shell: Shell, model: Model, ema: Averages | None, batches: Batches) -> None:
        from diffusers import DDPMScheduler

        self.config, self.shell, self.model, self.ema = config, shell, model, ema
        self.batches = batches
        self.device = shell.device
        self.noise_scheduler = DDPMScheduler.from_config(model.components["scheduler"].config)
        self.objective = JediObjective(**asdict(config.objective))
        self.null_text = None  # the empty prompt's embedding, once, while the text encoder is frozen
        if not config.model.train_text_encoder:
            with torch.no_grad():
                self.null_text = self.encode_text([[""]])[0, 0]  # (T, D)
        self.sampled_note = False
        layout = shell.accelerator.unwrap_model(model.joint).layout  # model.joint may be wrapped (DDP)
        self.empty = self.empty_latent() if layout.needs_empty else None

    def empty_latent(self) -> torch.Tensor:
        """What a stock inpainting U-Net reads where the image is masked: the VAE latent of a fully masked (mid-grey)
        image at the training resolution, ``(C, h, w)``, as the pipeline feeds it at sampling."""
        side = self.config.data.resolution
        return fully_masked_latent(self.model.components["vae"], side, side, self.device, torch.float32)

    def encode_text(self, captions: list[list[str]]) -> torch.Tensor:
        """Per-image prompt embeddings ``(B, N, T, D)``."""
        tokenizer = self.model.components["tokenizer"]
        flat = [c for row in captions for c in row]
        text = encode_prompts(tokenizer, self.model.text_model, flat, self.device)  # (B*N, T, D)
        return unpack_sets(text, len(captions[0]))  # (B*N, T, D) -> (B, N, T, D)

    def generators(self, seeds: torch.Tensor, purpose: str) -> list[torch.Generator]:
        """One generator per set of a batch, keyed by the set's seed and what it draws for."""
        return [keyed_generator(s, purpose, device=self.device) for s in seeds.tolist()]

    def encode_images(self, pixels: torch.Tensor, real: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, N, C, h, w)`` of images ``(B, N, 3, H, W)``, sampled from the VAE posterior with each set's
        standard-normal draw from its own generator (zero in padded slots)."""
        vae = self.model.components["vae"]
        b, n, _, h, w = pixels.shape
        down = 2 ** (len(vae.config.block_out_channels) - 1)
        eps = torch.zeros(b, n, vae.config.latent_channels, h // down, w // down, device=self.device)
        for i, g in enumerate(self.generators(seeds, "posterior")):
            k = int(real[i].sum())
            eps[i, real[i]] = torch.randn((k, *eps.shape[2:]), generator=g, device=self.device)  # (k, C, h, w)
        with torch.set_grad_enabled(self.config.model.train_vae):
            z = encode_latents(vae, pack_sets(pixels.to(self.device)), dtype=torch.float32, noise=pack_sets(eps))
        return unpack_sets(z, n)  # (B*N, C, h, w) -> (B, N, C, h, w)

    def loss(self) -> tuple[torch.Tensor, int]:
        batch = self.batches.next()
        slot_mask = batch["slot_mask"].to(self.device)
        seeds = batch["seeds"]
        # Cached latents need no image decode and no VAE forward.
        if "latents" in batch:
            latents = batch["latents"].to(self.device)
        else:
            latents = self.encode_images(batch["pixel_values"], slot_mask, seeds)
        text = self.encode_text(batch["captions"])
        null = self.null_text if self.null_text is not None else self.encode_text([[""]])[0, 0]
        res = self.objective(
            self.model.joint,
            self.noise_scheduler,
            latents,
            text.float(),
            null.float(),
            slot_mask=None if bool(slot_mask.all()) else slot_mask,
            generator=self.generators(seeds, "objective"),
            foreground=batch["foreground"].to(self.device) if "foreground" in batch else None,
            empty=self.empty,
            regions=batch["regions"].to(self.device) if "regions" in batch else None,
        )
        return res.loss, int(slot_mask.sum())

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.batches.state()}

    def after_step(self, step: int) -> None:
        if self.ema is not None:
            self.ema.step(self.model.trained(self.shell.accelerator))

    def metrics(self, step: int) -> dict[str, float]:
        return {f"data/skipped/{key}": float(count) for key, count in skipped_total(self.batches.roles).items()}

    def after_checkpoint(self, step: int) -> None:
        """Monitor and sample grid of the EMA weights, when due (main process)."""
        c, shell = self.config, self.shell
        if not shell.main:
            return
        parts = (shell.accelerator, self.model.components, self.model.joint, self.model.text_model, self.ema)
        if c.monitor.every and step % c.monitor.every == 0:
            measured = run_monitor(c, *parts)
            record = {"step": step, "cpu_hours": round(shell.cpu_seconds() / 3600, 4), **measured}
            shell.write_log("monitor.jsonl", record)
            shell.accelerator.log({f"monitor/{k}": v for k, v in measured.items()}, step=step)
            tqdm.write(f"monitor {json.dumps(record)}")
        if c.sample.every and step % c.sample.every == 0:
            write_sample_grid(c, *parts, shell.out, step)


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


def _flat_hparams(tree: dict[str, Any], prefix: str = "", depth: int = 2) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` for ``depth`` levels; deeper and non-scalar values as strings (TensorBoard hparams)."""
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and depth > 1:
            flat.update(_flat_hparams(v, f"{prefix}{k}.", depth - 1))
        else:
            flat[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return flat


def save_final_pipeline(shell: Shell, model: Model, ema: Averages | None) -> None:
    """The pipeline with the EMA weights and the frozen parts in their original precision, into the run directory."""
    acc = shell.accelerator
    acc.wait_for_everyone()
    if not shell.main:
        return
    trained = model.trained(acc)
    if ema is not None:
        ema.copy_to(trained)
    final = dict(model.components, **trained)
    for name, sd in model.frozen_fp32.items():
        final[name].to(dtype=torch.float32).load_state_dict(sd)
    save_pipeline(final, shell.out)
    tqdm.write(f"saved pipeline to {shell.out} (JointDiffusionPipeline.from_pretrained)")


def train(config: Config, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train (or resume training) the joint-image model described by ``config``; see docs/training.md."""
    from accelerate.utils import set_seed

    t = config.train

    # 1. The shell (accelerator, the checkpoint to resume from), the data sources, the seeds.
    shell = Shell(t)
    _check_placement(config, shell.accelerator)
    sources = open_data_sources(config.data)  # listed before the (slow) model load: an empty source fails now
    set_seed(t.seed)
    if t.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True

    # 2. The model, its weight averages, AdamW and the LR schedule, prepared by accelerate.
    model = build_model(config, sources, shell.device)
    ema = build_averages(config, shell, model.components)
    optimizer, lr_scheduler = build_optimizer(config, shell, list(model.trainables.values()))
    *prepared, optimizer, lr_scheduler = shell.prepare(*model.trainables.values(), optimizer, lr_scheduler)
    model.prepared(prepared)

    # 3. Resume: accelerate's state (weights, optimizer, LR, EMA, RNGs), then ours (the data position).
    acc = shell.accelerator
    state = shell.restore()
    if state is not None:
        _warn_config_changes(config, shell.out)
    elif shell.main:
        (shell.out / "train_config.json").write_text(json.dumps(asdict(config), indent=2))
    shell.init_trackers(_flat_hparams(asdict(config)))

    # 4. This rank's part of every source, mixed by weight; the loop.
    batches = Batches(config, sources, acc.process_index, acc.num_processes, state["data"] if state else None)
    task = JediTask(config, shell, model, ema, batches)
    fit = shell.fit(
        task,
        list(model.trainables.values()),
        optimizer,
        lr_scheduler,
        config.optim.max_grad_norm,
        desc="train",
        on_step=on_step,
    )

    # 5. Results; at the end of the run, the pipeline.
    result = TrainResult(shell.out, fit.step, False, fit.losses, fit.images_per_second, main_process=shell.main)
    result.skipped = dict(skipped_total(batches.roles))
    if fit.step >= t.max_steps:
        save_final_pipeline(shell, model, ema)
        result.finished = True
    elif shell.main:
        tqdm.write(
            f"stopped at step {fit.step} of {t.max_steps} (train.stop_after); run the same command again to resume"
        )
    shell.end()
    return result
