"""The dtype the shipped miniature runs in on the CPU (issue 31).

Measured (``benchmarks/cpu_inference.md``, ``benchmarks/samplers.md``): on a CPU that computes bfloat16 natively
(AVX512-BF16 or AMX, as oneDNN reports), a demo-shaped call runs 1.45x faster in bf16 than in fp32, and the ruler
sees no difference (normalised PartID -0.002, CLIP-T -0.0001 against fp32 at DPM-Solver++ 6 steps, 10 tuning
subjects). Without native support bf16 is emulated and slower, so fp32 stays.
"""

from __future__ import annotations

import torch


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def shipped_cpu_dtype() -> torch.dtype:
    """The shipped miniature's dtype on this CPU: bfloat16 where native (module docstring), else float32."""
    return torch.bfloat16 if native_bf16() else torch.float32
