"""The joint U-Net through ONNX Runtime on the CPU (issue 31; optional: ``pip install onnx onnxruntime``).

Measured on this project's 2-core CPU (``benchmarks/cpu_inference.md``): at the demo's call shapes the shipped
miniature's U-Net runs 1.2x faster under ONNX Runtime than under PyTorch eager, for the same images (mean pixel
difference below 0.001 of 255); below the 1.5x that issue 31 asked of an export path before adopting it, so it is
an option (``--onnx on``), off by default. :func:`use_onnx` swaps the pipeline's U-Net call for an
:class:`OnnxUNet`:

- the coupled attention (sec. 3.2) reshapes by the set sizes, so a graph is exported per call *signature*
  (input shapes and set sizes; a sampling call has one or two) and cached on disk under the weights' digest, so
  later processes load it instead of exporting it again;
- calls it cannot serve exactly (a device other than the CPU, a dtype other than fp32, SDXL's added conditioning,
  a slot mask, isolated references, or training-free coupling options other than JeDi's own, the region bias
  included) run the PyTorch U-Net, unchanged.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jointdiff.jedi.coupling import PARTS

CACHE_ENV = "JOINTDIFF_ONNX_CACHE"  # where exported graphs live (default: ~/.cache/jointdiff/onnx)


def available() -> bool:
    """Whether ONNX Runtime and the ONNX exporter's package are installed (found, not imported: ``onnx`` takes half a
    second to import and is needed only to export a graph)."""
    from importlib.util import find_spec

    return find_spec("onnx") is not None and find_spec("onnxruntime") is not None


def cache_dir() -> Path:
    """The directory of exported graphs: ``$JOINTDIFF_ONNX_CACHE`` or ``~/.cache/jointdiff/onnx``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "jointdiff" / "onnx")


def weights_digest(module: nn.Module) -> str:
    """A digest of a module's parameters and buffers (names, shapes, values): the cache key of its graphs."""
    h = hashlib.sha1()
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class _Call(nn.Module):
    """The U-Net as a function of its three tensors, the set sizes fixed (what gets exported)."""

    def __init__(self, unet: nn.Module, set_size: int | tuple[int, ...]) -> None:
        super().__init__()
        self.unet, self.set_size = unet, set_size

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.unet(
            sample, timestep, encoder_hidden_states=text, cross_attention_kwargs={"set_size": self.set_size}
        ).sample


class UNetStandIn(nn.Module):
    """A module in the pipeline's ``unet`` slot that wraps the joint U-Net ``self.unet``: what the pipeline reads of
    its U-Net besides the call (config, dtype, device, attention processors) comes from the wrapped one."""

    unet: nn.Module

    @property
    def config(self) -> Any:
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def attn_processors(self) -> dict[str, Any]:
        return self.unet.attn_processors


class OnnxUNet(UNetStandIn):
    """A stand-in for the joint U-Net's call that runs exported graphs in ONNX Runtime (module docstring)."""

    def __init__(self, unet: nn.Module, directory: str | os.PathLike | None = None, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        self.unet = unet  # the PyTorch U-Net: its config, the exports and the calls ONNX cannot serve
        self.directory = Path(directory) if directory is not None else cache_dir()
        self.digest = weights_digest(unet)
        self._ort = ort
        self._threads = threads or torch.get_num_threads()
        self.sessions: dict[tuple, Any] = {}
        self.calls = {"onnx": 0, "torch": 0}  # how many calls each path served

    def _servable(self, sample: torch.Tensor, added: Any, kwargs: dict[str, Any]) -> bool:
        coupling = kwargs.get("coupling")
        plain = coupling is None or (not coupling.biases_references and coupling.layers == PARTS)
        extras = any(kwargs.get(k) is not None for k in ("slot_mask", "shared_references"))
        return sample.device.type == "cpu" and sample.dtype == torch.float32 and not added and plain and not extras

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> Any:
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        kwargs = dict(cross_attention_kwargs or {})
        if not self._servable(sample, added_cond_kwargs, kwargs):
            self.calls["torch"] += 1
            return self.unet(
                sample,
                timestep,
                encoder_hidden_states=encoder_hidden_states,
                added_cond_kwargs=added_cond_kwargs,
                cross_attention_kwargs=kwargs,
                return_dict=return_dict,
            )
        set_size = kwargs.get("set_size") or 1
        t = timestep.expand(sample.shape[0]) if timestep.ndim == 0 else timestep
        t = t.to(torch.float32)
        session = self._session(sample, t, encoder_hidden_states, set_size)
        feeds = {"sample": sample.numpy(), "timestep": t.numpy(), "text": encoder_hidden_states.numpy()}
        out = torch.from_numpy(session.run(None, feeds)[0])
        self.calls["onnx"] += 1
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)

    def _session(self, sample: torch.Tensor, t: torch.Tensor, text: torch.Tensor, set_size: Any) -> Any:
        key = (tuple(sample.shape), tuple(text.shape), set_size)
        if key not in self.sessions:
            name = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
            path = self.directory / self.digest / f"{name}.onnx"
            if not path.exists():
                self._export(path, sample, t, text, set_size)
            options = self._ort.SessionOptions()
            options.intra_op_num_threads = self._threads
            options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.sessions[key] = self._ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return self.sessions[key]

    def _export(self, path: Path, sample: torch.Tensor, t: torch.Tensor, text: torch.Tensor, set_size: Any) -> None:
        """Export the U-Net for one signature, written atomically (a half-written file is never loaded)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notes on Python control flow over fixed shapes
            torch.onnx.export(
                _Call(self.unet, set_size),
                (sample, t, text),
                str(tmp),
                dynamo=False,
                opset_version=17,
                input_names=["sample", "timestep", "text"],
                output_names=["eps"],
            )
        tmp.replace(path)


def use_onnx(pipe: Any, directory: str | os.PathLike | None = None) -> Any:
    """Run ``pipe``'s joint U-Net through ONNX Runtime where it serves the call exactly (module docstring);
    returns ``pipe``. A one-line error when ONNX Runtime is not installed."""
    if not available():
        raise ValueError("ONNX Runtime is not installed: pip install onnx onnxruntime (an optional dependency)")
    if not isinstance(pipe.joint_unet.unet, OnnxUNet):
        pipe.joint_unet.unet = OnnxUNet(pipe.unet, directory)
    return pipe


ONNX_MODES = ("on", "off")


def apply_mode(pipe: Any, mode: str = "off") -> bool:
    """``--onnx``: ``on`` runs the U-Net through ONNX Runtime (an error if it is not installed), ``off`` (the default:
    1.2x on the U-Net, below the bar; module docstring) keeps PyTorch. Returns whether ONNX Runtime is in use."""
    if mode not in ONNX_MODES:
        raise ValueError(f"--onnx must be one of {', '.join(ONNX_MODES)}, got {mode!r}")
    if mode == "on":
        use_onnx(pipe)
        return True
    return False
