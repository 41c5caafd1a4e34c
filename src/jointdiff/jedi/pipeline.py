"""``JointDiffusionPipeline``: JeDi personalised generation as a diffusers pipeline (sec. 3.3).

Components are those of Stable Diffusion 1.x/2.x (vae, text_encoder, tokenizer, unet,
scheduler); the U-Net carries the JeDi input layout, or is a stock inpainting U-Net used without
training (``layout``, :mod:`jointdiff.jedi.layouts`), and gets coupled self-attention when the
pipeline is built. Weights load from safetensors only unless ``use_safetensors`` is None (safetensors
where present, else pickled) or False.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from jointdiff.common.paths import is_hub_id
from jointdiff.jedi.attention import has_joint_attention
from jointdiff.jedi.coupling import DEFAULT_COUPLING, Coupling, default_for
from jointdiff.jedi.encoding import SDParts, fully_masked_latent
from jointdiff.jedi.guidance import DEFAULT, DEFAULT_NAMES, Guidance
from jointdiff.jedi.layouts import detect_layout
from jointdiff.jedi.loading import JOINT_PIPELINE, load_base_components, read_json
from jointdiff.jedi.model import JointUNet
from jointdiff.jedi.sampling import GuidedSetDenoiser, SetConditioning, StepCallback, replacement_sample


@dataclass
class JointDiffusionPipelineOutput(BaseOutput):
    """Generated targets, ``num_images_per_prompt`` sets of K images, set-major order."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


def _dtype_argument() -> str:
    """The name this diffusers gives the dtype of ``from_pretrained``: ``dtype`` since it deprecated ``torch_dtype``."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"


DTYPE_ARGUMENT = _dtype_argument()


def _as_list(x: Any) -> list[Any]:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]


class JointDiffusionPipeline(DiffusionPipeline, SDParts):
    """JeDi (sec. 3.3): personalised text-to-image generation by joint-image inpainting, with a JeDi model or
    a stock inpainting model (``layout``: ``auto`` detects it from the U-Net config; ``jedi``; ``inpainting``)."""

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents", "set_latents", "reference_noise"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        layout: str = "auto",
    ) -> None:
        super().__init__()
        # detects or checks the layout, installs coupled attention
        self.joint_unet = JointUNet.with_joint_attention(unet, layout)
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.register_to_config(layout=self.joint_unet.layout.kind)  # saved: a forced layout reloads as forced
        self.init_image_processing()  # vae_scale_factor, image_processor (jedi.encoding.SDParts)

    def enable_attention_slicing(self, slice_size: str | int | None = "auto") -> None:
        """Refused: diffusers' sliced processors would replace the coupled self-attention (sec. 3.2), and the
        images would no longer see each other. Memory: fewer targets per set, or ``num_images_per_prompt=1``."""
        raise ValueError(
            "attention slicing would replace JeDi's coupled self-attention with per-image attention; not supported"
        )

    def disable_attention_slicing(self) -> None:
        """Nothing to undo: attention slicing is never on (:meth:`enable_attention_slicing`)."""

    def enable_xformers_memory_efficient_attention(self, attention_op: Callable | None = None) -> None:
        """Refused, as attention slicing: xformers' processors would replace the coupled self-attention (the coupled
        processor already uses PyTorch's scaled-dot-product attention, memory-efficient where the device has it)."""
        raise ValueError("xformers attention would replace JeDi's coupled self-attention; not supported")

    @property
    def num_timesteps(self) -> int:
        """Denoising steps of the last call (diffusers' pipelines expose it to callbacks)."""
        return self._num_timesteps

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, layout: str | None = None, **kwargs: Any
    ) -> JointDiffusionPipeline:
        """A jointdiff model (diffusers' loader) or a stock SD-layout inpainting model (its five components, no
        safety checker), told apart by the U-Net config before any weights load; safetensors only unless
        ``use_safetensors`` is None or False. ``layout`` forces the input layout (default: the saved one, else
        ``auto``)."""
        source = os.fspath(pretrained_model_name_or_path)
        given = kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None)  # either name, as diffusers takes both
        dtype = given[0] if given[0] is not None else given[1]
        if dtype is not None:
            kwargs[DTYPE_ARGUMENT] = dtype
        if not os.path.isdir(source) and not is_hub_id(source):
            raise ValueError(f"no such model directory: {source}")
        revision = kwargs.get("revision")
        index = read_json(source, "model_index.json", revision)
        unet_config = read_json(source, "unet/config.json", revision)
        if index.get("_class_name") == JOINT_PIPELINE:
            detect_layout(unet_config, layout or index.get("layout", "auto"), source)  # fails before the weights load
            safetensors_only = kwargs.setdefault("use_safetensors", True) is True
            if layout is not None:
                kwargs["layout"] = layout
            try:
                return super().from_pretrained(source, **kwargs)
            except OSError as e:  # diffusers' "no file named ...safetensors": say how to opt in to pickled weights
                if safetensors_only and ".safetensors" in str(e):
                    raise ValueError(
                        f"{source}: no safetensors weights (this loader reads safetensors only, since pickled weights "
                        "can run code); pass use_safetensors=None to also load .bin weights you trust"
                    ) from None
                raise
        found = detect_layout(unet_config, layout or "auto", source)  # a plain text-to-image model fails here
        unknown = set(kwargs) - {"use_safetensors", DTYPE_ARGUMENT, "revision", "variant"}
        if unknown:
            raise ValueError(f"{source}: {', '.join(sorted(unknown))} not supported when loading a stock model")
        components = load_base_components(
            source,
            allow_pickle=kwargs.get("use_safetensors", True) is not True,
            torch_dtype=kwargs.get(DTYPE_ARGUMENT),
            revision=revision,
            variant=kwargs.get("variant"),
        )
        return cls(**components, layout=found.kind)

    def encode_references(
        self, images: list[PIL.Image.Image], height: int, width: int, device: torch.device
    ) -> torch.Tensor:
        """Clean reference latents ``(n, C, h, w)``: centre-crop to the output aspect, resize, VAE mean."""
        return self.encode_pixels(images, height, width, device)

    def _extra_step_kwargs(self, generator: torch.Generator | None, eta: float) -> dict[str, Any]:
        params = set(inspect.signature(self.scheduler.step).parameters)
        kwargs: dict[str, Any] = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    def check_inputs(
        self,
        prompt: Any,
        reference_images: Any,
        reference_prompts: Any,
        num_inference_steps: Any,
        num_images_per_prompt: int,
        height: int,
        width: int,
        generator: Any,
        output_type: str,
        callback_on_step_end_tensor_inputs: list[str],
    ) -> tuple[list[list[str]], list[PIL.Image.Image], list[str]]:
        """Every input check of a call, before any work: (the sets' prompts, the references, one caption
        per reference). A list of prompts is one coupled set; a list of B such lists is B sets."""
        prompts = _as_list(prompt)
        per_set = bool(prompts) and all(isinstance(p, (list, tuple)) for p in prompts)  # B lists of K prompts
        sets = [list(p) for p in prompts] if per_set else [prompts]
        refs = _as_list(reference_images)
        ref_prompts = _as_list(reference_prompts) or [""]
        k, n = len(sets[0]), len(refs)
        if k == 0 or not all(isinstance(p, str) for ps in sets for p in ps):
            raise ValueError(
                "prompt must be a string, a non-empty list of strings (one per target image) or a list of such lists"
            )
        if any(len(ps) != k for ps in sets):
            raise ValueError(f"every set needs the same number of prompts, got {[len(ps) for ps in sets]}")
        if per_set and num_images_per_prompt != 1:
            raise ValueError("num_images_per_prompt must be 1 with one prompt list per set")
        if not all(isinstance(im, PIL.Image.Image) for im in refs):
            raise ValueError("reference_images must be PIL images")
        if len(ref_prompts) == 1:
            ref_prompts = ref_prompts * n
        if len(ref_prompts) != n:
            raise ValueError(f"got {len(_as_list(reference_prompts))} reference prompts for {n} reference images")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps}")
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be pil, np, pt or latent, got {output_type!r}")
        b = num_images_per_prompt * len(sets)
        if isinstance(generator, list):
            if len(generator) != b or not all(isinstance(g, torch.Generator) for g in generator):
                raise ValueError(
                    f"generator must be a torch.Generator or a list of {b} (one per set); a list of prompts is one "
                    "coupled set: for independent sets pass a list of prompt lists, one generator each"
                )
        elif generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError("generator must be a torch.Generator")
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"height and width must be divisible by {self.vae_scale_factor}, got {height}x{width}")
        if not has_joint_attention(self.unet):
            raise ValueError(
                "the U-Net's coupled self-attention was replaced (set_attn_processor or attention slicing); build "
                "the pipeline again from its components to restore it"
            )
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs: {sorted(unknown)} not in {self._callback_tensor_inputs}"
            )
        return sets, refs, ref_prompts

    def encode_prompt(
        self,
        sets: list[list[str]],
        reference_prompts: list[str],
        negative_prompt: str | None,
        num_images_per_prompt: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-slot text embeddings of the B sets (references' captions first, then the targets' prompts),
        ``(B, N, T, D)``, and the null text of each slot, ``(B, N, T, D)`` ("" for references, the negative
        prompt for targets)."""
        n, k = len(reference_prompts), len(sets[0])
        text = self.encode_text([p for ps in sets for p in reference_prompts + ps], device)  # (S*N, T, D)
        text = text.unflatten(0, (len(sets), n + k)).repeat_interleave(num_images_per_prompt, 0)  # (B, N, T, D)
        null = self.encode_text([""] * n + [negative_prompt or ""] * k, device)  # (N, T, D)
        return text, null.expand(text.shape[0], -1, -1, -1)

    def check_coupling(
        self,
        reference_bias: float,
        coupled_layers: tuple[str, ...] | list[str] | str | None,
        coupled_steps: float | None,
        region_bias: float = 0.0,
    ) -> Coupling:
        """The training-free options of the coupled attention, checked (:class:`jointdiff.jedi.coupling.Coupling`)
        and matched against this U-Net's blocks; the denoiser couples in the early steps only where
        ``coupled_steps < 1``. ``coupled_steps`` None: this layout's default (:func:`jointdiff.jedi.coupling.default_for`)."""
        if coupled_steps is None:
            coupled_steps = default_for(self.joint_unet.layout.kind).steps
        coupling = Coupling.of(
            reference_bias=reference_bias,
            coupled_layers=coupled_layers,
            coupled_steps=coupled_steps,
            region_bias=region_bias,
        )
        self.joint_unet.check_coupling(coupling)
        return coupling

    @staticmethod
    def check_regions(coupling: Coupling, guidance: Guidance, height: int, width: int) -> None:
        """The region bias (issue 33) splits square token grids into columns, among references in the coupled
        attention: square images and joint reference attention."""
        if coupling.region_bias != 0 and height != width:
            raise ValueError(f"the region bias needs square images, got {height}x{width}")
        if coupling.region_bias != 0 and guidance.isolates_references:
            raise ValueError("the region bias needs joint reference attention, not isolated references")

    def empty_latent(self, height: int, width: int, device: torch.device) -> torch.Tensor | None:
        """What an unknown slot's masked-image channels hold, ``(C, h, w)``: for a stock inpainting U-Net the latent
        of a fully masked image (:func:`jointdiff.jedi.encoding.fully_masked_latent`); None for a JeDi U-Net
        (zeros, ``x0 (1 - M)``)."""
        if not self.joint_unet.layout.needs_empty:
            return None
        return fully_masked_latent(self.vae, height, width, device).to(self.unet.dtype)

    def prepare_references(
        self, images: list[PIL.Image.Image], batch: int, height: int, width: int, device: torch.device
    ) -> torch.Tensor:
        """Clean reference latents of each of ``batch`` sets, ``(B, n, C, h, w)`` (``n`` may be 0)."""
        if images:
            latents = self.encode_references(images, height, width, device)  # (n, C, h, w)
        else:
            c = self.joint_unet.layout.latent_channels
            h, w = height // self.vae_scale_factor, width // self.vae_scale_factor
            latents = torch.zeros(0, c, h, w, device=device, dtype=self.unet.dtype)
        return latents.expand(batch, -1, -1, -1, -1)

    def prepare_latents(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | list[torch.Generator] | None,
        device: torch.device,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Initial target latents ``(B, K, C, h, w)`` scaled by the scheduler's ``init_noise_sigma``: drawn
        from ``generator`` (one per set when a list: each set's noise then depends on its own generator)
        or the given ``latents``."""
        if latents is None:
            if isinstance(generator, list):  # each set from its own generator
                latents = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
            else:
                flat = (shape[0] * shape[1], *shape[2:])
                latents = randn_tensor(flat, generator=generator, device=device, dtype=self.unet.dtype)
            latents = latents.reshape(shape)  # (B*K, ...) -> (B, K, ...)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape} (sets, K targets, C, h, w), got {tuple(latents.shape)}")
        return latents.to(device, self.unet.dtype) * self.scheduler.init_noise_sigma

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | list[list[str]],
        reference_images: PIL.Image.Image | list[PIL.Image.Image] | None = None,
        reference_prompts: str | list[str] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = DEFAULT.scale,
        image_guidance_scale: float | None = DEFAULT.image_scale,
        guidance: str = DEFAULT.strategy,
        null_reference: str = DEFAULT.null_reference,
        reference_attention: str = DEFAULT.reference_attention,
        guidance_rescale: float = DEFAULT.rescale,
        guidance_start: float = DEFAULT.start,
        guidance_stop: float = DEFAULT.stop,
        reference_bias: float = DEFAULT_COUPLING.reference_bias,
        coupled_layers: tuple[str, ...] | list[str] | str | None = None,
        coupled_steps: float | None = None,
        region_bias: float = DEFAULT_COUPLING.region_bias,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict[str, torch.Tensor] | None] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> JointDiffusionPipelineOutput | tuple:
        """Generate K = ``len(prompt)`` coupled images of the references' subject (JeDi sec. 3.3).

        Args:
            prompt: one prompt per target image; all targets of a set share one subject. A list of
                B lists of K prompts generates B independent sets in one batch (same references).
            reference_images: the n given images of the subject (none: joint text-to-image).
            reference_prompts: captions of the references (one, or one per reference; default "").
            num_inference_steps: denoising steps of the scheduler.
            guidance_scale, image_guidance_scale, guidance, null_reference, reference_attention: the
                guidance settings, :class:`jointdiff.jedi.guidance.Guidance` (checked there): lambda of
                eq. 3 (the text scale of eq. 4), the reference scale of eq. 4, the strategy, the reference
                slots of reference-free branches, how the references attend.
            guidance_rescale, guidance_start, guidance_stop: guidance rescale's phi (Lin et al. 2024, eq. 16; as
                diffusers' ``guidance_rescale``) and the fractions of the steps that are guided (as diffusers'
                guiders' ``start`` / ``stop``; the other steps take the fully conditioned prediction alone). Off by
                default.
            reference_bias, coupled_layers, coupled_steps: the training-free options of the coupled attention,
                :class:`jointdiff.jedi.coupling.Coupling` (checked there): beta added to the targets' logits on
                reference keys, the coupled U-Net blocks (default: every block), the early fraction of the steps
                that couple (default: every step for a JeDi model, the first half for a stock inpainting model,
                chosen on the toy world's tuning subjects, ``benchmarks/training_free.md``). The other defaults are
                JeDi's coupled attention.
            region_bias: references of several subjects (issue 33): reference i owns the i-th of n side-by-side
                columns of every target, whose queries get ``-region_bias`` on the other references' keys (``inf``:
                masked; 0, the default: off). Square images, joint reference attention.
            negative_prompt: the null text of the targets (default "").
            height, width: output size in pixels (default: the U-Net's sample size).
            num_images_per_prompt: independent sets generated in one batch (per-set prompt lists: 1).
            eta: DDIM eta.
            generator: a ``torch.Generator`` for reproducible results, or one per set (a list): each
                set's noise then depends on its own generator only, as if generated alone.
            latents: initial target latents ``(num_images_per_prompt, K, C, h, w)``.
            output_type: ``pil``, ``np``, ``pt`` or ``latent``.
            callback_on_step_end: diffusers' contract: ``f(pipe, i, t, tensors) -> dict`` after each step,
                ``tensors`` holding ``callback_on_step_end_tensor_inputs`` (default ``["latents"]``: the
                targets ``(B, K, C, h, w)``; also ``set_latents``, the set the U-Net saw, and
                ``reference_noise``); a ``latents`` entry of the returned dict replaces the targets.

        Returns:
            :class:`JointDiffusionPipelineOutput` with ``num_images_per_prompt * K`` images.
        """
        # 0. Default height and width: the U-Net's sample size
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor

        # 1. Check inputs: every erroneous one raises here, before any work
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        sets, refs, ref_prompts = self.check_inputs(
            prompt,
            reference_images,
            reference_prompts,
            num_inference_steps,
            num_images_per_prompt,
            height,
            width,
            generator,
            output_type,
            tensor_inputs,
        )
        arguments = locals()  # the guidance settings are this call's arguments of the same names (DEFAULT_NAMES)
        settings = Guidance.of(**{name: arguments[name] for name in DEFAULT_NAMES})
        coupling = self.check_coupling(reference_bias, coupled_layers, coupled_steps, region_bias)
        self.check_regions(coupling, settings, height, width)

        # 2. Define call parameters: B sets of n references and K targets
        device, b, k = self._execution_device, num_images_per_prompt * len(sets), len(sets[0])

        # 3. Encode input prompt: per slot, the references' captions then the targets' prompts; the null text
        text, null = self.encode_prompt(sets, ref_prompts, negative_prompt, num_images_per_prompt, device)

        # 4. Encode the references: the clean latents the replacement trick keeps known
        references = self.prepare_references(refs, b, height, width, device)  # (B, n, C, h, w)

        # 5. Prepare timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)

        # 6. Prepare the targets' initial latents
        latents = self.prepare_latents((b, k, *references.shape[2:]), generator, device, latents)  # (B, K, C, h, w)

        # 7. Denoising loop: the replacement trick (sec. 3.3), every guidance branch in one U-Net batch (eq. 3/4)
        cond = SetConditioning(text, null, references, empty=self.empty_latent(height, width, device))
        denoise = GuidedSetDenoiser(self.joint_unet, cond, settings, coupling, self.scheduler.timesteps)
        callback = self._step_end(callback_on_step_end, tensor_inputs)
        latents = self.denoising_loop(denoise, latents, references, generator, eta, num_inference_steps, callback)

        # 8. Decode the targets
        latents = latents.flatten(0, 1)  # (B, K, C, h, w) -> (B*K, C, h, w)
        images = latents if output_type == "latent" else self.decode_to_images(latents, output_type)
        self.maybe_free_model_hooks()
        return JointDiffusionPipelineOutput(images=images) if return_dict else (images,)

    def _step_end(
        self, callback_on_step_end: Callable[..., Any] | None, tensor_inputs: list[str]
    ) -> StepCallback | None:
        """diffusers' ``callback_on_step_end(pipe, i, t, tensors)`` as the loop's callback, given the tensors named."""
        if callback_on_step_end is None:
            return None

        def callback(i: int, t: torch.Tensor, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
            return callback_on_step_end(self, i, t, {name: tensors[name] for name in tensor_inputs})

        return callback

    def denoising_loop(
        self,
        denoise: GuidedSetDenoiser,
        latents: torch.Tensor,
        references: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None,
        eta: float,
        num_inference_steps: int,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """The replacement trick (sec. 3.3) over the scheduler's timesteps: targets ``(B, K, C, h, w)`` beside the
        references ``(B, n, C, h, w)``, re-noised each step; returns the final targets."""
        k, self._num_timesteps = latents.shape[1], len(self.scheduler.timesteps)
        # The scheduler draws per image (B*K): each image from its set's generator.
        per_image = [g for g in generator for _ in range(k)] if isinstance(generator, list) else generator
        with self.progress_bar(total=num_inference_steps) as bar:
            return replacement_sample(
                denoise,
                self.scheduler,
                self.scheduler.timesteps,
                latents,
                references,
                generator=generator,
                extra_step_kwargs=self._extra_step_kwargs(per_image, eta),
                callback=callback,
                progress=lambda steps: _counted(steps, bar),
            )


def _counted(steps: list[torch.Tensor], bar: Any) -> Iterator[torch.Tensor]:
    """The timesteps, ticking the progress bar after each."""
    for s in steps:
        yield s
        bar.update()
