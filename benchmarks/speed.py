"""What personalisation costs over plain generation: U-Net time per sampling step (issue 17).

For K target images, plain classifier-free text-to-image runs the text-to-image U-Net on a batch
of 2K images (null and prompt branch). JeDi (sec. 3.3) runs the joint U-Net on sets of n
references + K targets, once per guidance branch (eq. 3 joint: 2 branches; eq. 4 text first /
image first: 3), all branches batched by :class:`jointdiff.jedi.sampling.GuidedSetDenoiser`.
This script times one denoiser call (one sampling step) of each, side by side in one process
on the same weights, and records the ratios. Two backbones:

- ``miniature``: the shipped miniature's U-Net (random weights of its config when none ships) at
  64 px (16x16 latents);
- ``sd15``: a U-Net of the Stable Diffusion 1.5 configuration, random weights, 512 px (64x64
  latents), one step per repeat.

Rows "isolated references" time the option of issue 17 item 3: references attend among themselves
only, so they are computed once per step for every branch (n + branches x K slots).

Rows also time the previous ``drop`` implementation (reference-free branches on the whole set,
the reference slots masked out of coupling) against the current one (those branches on the K
target slots only); both give the same targets (tests/test_sampling.py).

Peak memory is the most memory the call held above what was held before it: on CUDA from the
allocator, on CPU the peak resident set sampled every 2 ms by a thread (glibc is told to
return big blocks to the system at once, so each row starts from the same base).

    python benchmarks/speed.py --backbone miniature --repeats 20 --record benchmarks/speed.md
    python benchmarks/speed.py --backbone sd15 --references 1 --repeats 1 --warmup 0 --record benchmarks/speed.md
    python benchmarks/speed.py --memory --record benchmarks/speed.md    # issue 17 item 4 (SD 1.5, 512 px)
    python benchmarks/speed.py --profile --repeats 5 --record benchmarks/speed.md   # a whole pipeline call
    python benchmarks/speed.py --cli --repeats 3 --record benchmarks/speed.md   # jointdiff generate / demo

Runs unchanged on CUDA (``--device cuda --dtype float16``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from jointdiff.jedi.guidance import STRATEGIES as GUIDANCE_STRATEGIES
from jointdiff.jedi.guidance import Guidance
from jointdiff.jedi.model import JointUNet, convert_unet
from jointdiff.jedi.sampling import GuidedSetDenoiser, SetConditioning

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import SD14_UNET as SD15_UNET  # SD 1.4 and 1.5 share the U-Net config

TEXT_TOKENS = {"sd15": 77, "miniature": 24}  # CLIP's 77 positions; the miniature's tokenizer length
STRATEGIES = ("joint", "text_first", "image_first")
SCALES = (5.0, 2.0)  # text and image guidance scales (any value > 1 runs every branch)


# --------------------------------------------------------------------------- measuring


class PeakMemory:
    """Peak memory held during a ``with`` block above what was held at its start, in bytes."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base, self._top, self._stop = _rss(), 0, threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._top = max(self._top, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._top, _rss()) - self.base


def _rss() -> int:
    """Resident set of this process in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def return_big_blocks_at_once() -> None:
    """glibc: serve blocks >= 1 MiB by mmap and give them back on free (fixed threshold), so that the
    resident set after a call is what it was before it and :class:`PeakMemory` sees each call alone."""
    with contextlib.suppress(OSError):  # not glibc: rows may then start from a higher base
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def time_call(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> tuple[float, int]:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup``, and the peak memory they held."""
    times = []
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        with PeakMemory(device) as mem:
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
    return statistics.median(times), mem.peak


# --------------------------------------------------------------------------- models


def backbone(name: str, model: str | None, device: torch.device, dtype: torch.dtype) -> UNet2DConditionModel:
    """The text-to-image U-Net of ``name``: the shipped or given miniature, or SD 1.5's shape (random)."""
    if name == "sd15":
        torch.manual_seed(0)
        return UNet2DConditionModel(**SD15_UNET).to(device, dtype).eval()
    from jointdiff.common.paths import shipped_model
    from jointdiff.miniature.config import UNET_CONFIG

    path = model or shipped_model()
    if path is not None:  # a jointdiff pipeline: its joint U-Net minus the JeDi input channels
        unet = UNet2DConditionModel.from_pretrained(str(path), subfolder="unet")
        config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
        config["in_channels"] = config["out_channels"]
        plain = UNet2DConditionModel(**config)
        state = unet.state_dict()
        state["conv_in.weight"] = state["conv_in.weight"][:, 1 : 1 + config["out_channels"]]  # the noisy block
        plain.load_state_dict(state)
        return plain.to(device, dtype).eval()
    torch.manual_seed(0)
    return UNet2DConditionModel(**UNET_CONFIG).to(device, dtype).eval()


def joint_of(plain: UNet2DConditionModel) -> JointUNet:
    """JeDi's joint U-Net made from a copy of ``plain`` (same weights; wider ``conv_in``, coupled attention)."""
    return JointUNet.with_joint_attention(convert_unet(copy.deepcopy(plain))).eval()


def set_processor(unet: torch.nn.Module, proc: Any) -> None:
    """Put ``proc`` as the per-image processor of every attention (inside the coupled wrappers if any)."""
    from jointdiff.jedi.attention import CoupledAttnProcessor, PerImageAttnProcessor

    procs = {}
    for name, p in unet.attn_processors.items():
        if isinstance(p, (CoupledAttnProcessor, PerImageAttnProcessor)):
            p = copy.copy(p)
            p.inner = proc
        else:
            p = proc
        procs[name] = p
    unet.set_attn_processor(procs)


# --------------------------------------------------------------------------- rows


class Inputs:
    """Random inputs of one step for B=1 set of ``n`` references and ``k`` targets."""

    def __init__(self, plain: UNet2DConditionModel, tokens: int, n: int, k: int, device, dtype) -> None:
        g = torch.Generator().manual_seed(n * 10 + k)
        c, s, d = plain.config.out_channels, plain.config.sample_size, plain.config.cross_attention_dim

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=g).to(device, dtype)

        self.n, self.k = n, k
        self.x = randn(1, n + k, c, s, s)
        self.t = torch.tensor(500, device=device)
        self.cond = SetConditioning(
            text=randn(1, n + k, tokens, d), null_text=randn(1, n + k, tokens, d), references=randn(1, n, c, s, s)
        )
        self.plain_x = randn(2 * k, c, s, s)
        self.plain_text = randn(2 * k, tokens, d)


def plain_cfg(plain: UNet2DConditionModel, inp: Inputs) -> Callable[[], torch.Tensor]:
    """Classifier-free text-to-image of K images: one U-Net call on the 2K null and prompt images."""
    return lambda: plain(inp.plain_x, inp.t, encoder_hidden_states=inp.plain_text).sample


def guidance(strategy: str, reference_attention: str = "joint") -> Guidance:
    """The settings of a timed strategy: :data:`SCALES` (the text scale alone for one-scale strategies)."""
    image = SCALES[1] if GUIDANCE_STRATEGIES[strategy].two_scales else None
    return Guidance(strategy, SCALES[0], image, reference_attention=reference_attention)


def jedi(
    joint: JointUNet, inp: Inputs, strategy: str, reference_attention: str = "joint"
) -> Callable[[], torch.Tensor]:
    """One guided JeDi step (the pipeline's denoiser, ``drop`` null references) for the set of ``inp``."""
    d = GuidedSetDenoiser(joint, inp.cond, guidance(strategy, reference_attention))
    return lambda: d(inp.x, inp.t)


def jedi_whole_set_drop(joint: JointUNet, inp: Inputs, strategy: str) -> Callable[[], torch.Tensor]:
    """The previous ``drop`` implementation: every branch on all n + K slots in one batch, the
    reference slots of reference-free branches masked out of coupling (``slot_mask``)."""
    g = guidance(strategy)
    brs = g.branches()
    n, big_n = inp.n, inp.n + inp.k
    is_ref = torch.arange(big_n, device=inp.x.device) < n
    text = torch.cat([inp.cond.text if br.text else inp.cond.null_text for br in brs])
    known = torch.stack([is_ref if br.references else torch.zeros_like(is_ref) for br in brs])
    slots = torch.stack([torch.ones_like(is_ref) if br.references else ~is_ref for br in brs])
    pad = torch.zeros_like(inp.x[:, n:])
    reference = torch.cat([inp.cond.references, pad], dim=1).repeat(len(brs), 1, 1, 1, 1)

    def step() -> torch.Tensor:
        eps = joint(inp.x.repeat(len(brs), 1, 1, 1, 1), inp.t, text, reference=reference, known=known, slot_mask=slots)
        return g.combine(dict(zip(brs, eps.chunk(len(brs)), strict=True)))

    return step


def speed_rows(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> list[dict[str, Any]]:
    """Time plain CFG and JeDi for every (n, K, strategy) on one backbone; ratios to plain CFG of K."""
    plain = backbone(args.backbone, args.model, device, dtype)
    joint = joint_of(plain)
    tokens = TEXT_TOKENS[args.backbone]
    rows, base = [], {}

    def run(label: str, n: int, k: int, slots: int, fn: Callable[[], Any]) -> None:
        sec, peak = time_call(fn, device, args.repeats, args.warmup)
        ratio = sec / base[k] if k in base else 1.0
        rows.append(
            {
                "row": label,
                "n": n,
                "K": k,
                "unet_slots": slots,
                "ms": sec * 1e3,
                "ratio": ratio,
                "peak_mib": peak / 2**20,
            }
        )
        print(
            f"{label:<44} n={n} K={k} slots={slots:>3} {sec * 1e3:10.1f} ms  x{ratio:.2f}  peak {peak / 2**20:8.1f} MiB",
            flush=True,
        )

    with torch.no_grad():  # one untimed call first: one-time costs (kernel selection) stay out of every row
        fn = plain_cfg(plain, Inputs(plain, tokens, 0, 1, device, dtype))
        fn()
    for k in args.targets:
        inp = Inputs(plain, tokens, 0, k, device, dtype)
        run("plain CFG", 0, k, 2 * k, plain_cfg(plain, inp))
        base[k] = rows[-1]["ms"] / 1e3
        for n in args.references:
            inp = Inputs(plain, tokens, n, k, device, dtype)
            for strategy in args.strategies:
                brs = guidance(strategy).branches()
                with_refs = sum(br.references for br in brs)
                run(
                    f"JeDi {strategy}",
                    n,
                    k,
                    with_refs * (n + k) + (len(brs) - with_refs) * k,
                    jedi(joint, inp, strategy),
                )
                if args.isolated:  # the references once for every branch, attending among themselves
                    run(
                        f"JeDi {strategy}, isolated references",
                        n,
                        k,
                        n + len(brs) * k,
                        jedi(joint, inp, strategy, "isolated"),
                    )
                if args.before:
                    run(
                        f"JeDi {strategy}, previous drop (whole set)",
                        n,
                        k,
                        len(brs) * (n + k),
                        jedi_whole_set_drop(joint, inp, strategy),
                    )
    return rows


# --------------------------------------------------------------------------- profile (item 2)


def profile_rows(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> list[dict[str, Any]]:
    """Where one whole pipeline call goes (the miniature, 1 reference + 4 targets, joint guidance):
    wall time of the U-Net, the VAE encoder and decoder and the text encoder (forward hooks), the
    rest (scheduler, replacement noise, guidance arithmetic, pre- and post-processing) by difference."""
    import PIL.Image

    from jointdiff.common.paths import shipped_model
    from jointdiff.jedi.pipeline import JointDiffusionPipeline

    path = args.model or shipped_model()
    if path is None:
        raise SystemExit("--profile needs a trained pipeline: --model DIR (no miniature ships in this install)")
    pipe = JointDiffusionPipeline.from_pretrained(str(path), torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    spent: dict[str, float] = dict.fromkeys(("U-Net", "VAE encoder", "VAE decoder", "text encoder"), 0.0)
    calls: dict[str, int] = dict.fromkeys(spent, 0)
    started: dict[str, float] = {}

    def hook(name: str, module: torch.nn.Module) -> None:
        def pre(*_: Any) -> None:
            started[name] = time.perf_counter()

        def post(*_: Any) -> None:
            spent[name] += time.perf_counter() - started[name]
            calls[name] += 1

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    for name, module in zip(spent, (pipe.unet, pipe.vae.encoder, pipe.vae.decoder, pipe.text_encoder), strict=True):
        hook(name, module)
    reference = PIL.Image.new("RGB", (64, 64), (200, 120, 40))
    prompts = [f"a toy in scene {i}" for i in range(4)]

    def call() -> None:
        pipe(prompts, reference_images=[reference], num_inference_steps=25, guidance_scale=5.0, output_type="np")

    call()  # warm-up
    spent.update(dict.fromkeys(spent, 0.0))
    calls.update(dict.fromkeys(calls, 0))
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        call()
    total = (time.perf_counter() - t0) / args.repeats
    rows = [
        {"part": name, "calls": calls[name] // args.repeats, "ms": spent[name] / args.repeats * 1e3} for name in spent
    ]
    rows.append({"part": "everything else", "calls": None, "ms": total * 1e3 - sum(r["ms"] for r in rows)})
    rows.append({"part": "whole call (25 steps, 1 ref + 4 targets)", "calls": 1, "ms": total * 1e3})
    for r in rows:
        r["share"] = r["ms"] / (total * 1e3)
    return rows


def cli_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """What a user waits for (issue 31): ``jointdiff generate`` (the CLI's defaults: for the shipped miniature
    DPM-Solver++ in 6 steps; one reference, K targets) and ``jointdiff demo``, each a fresh process timed from
    start to exit (``--repeats`` times, the median), with ``--onnx off`` (the default) and ``on``; the import
    floor (fresh processes that only import); and the web app's first click on a warm server (the page's first
    contact: held-out toy subject 0, two prompts, its default steps). The reference is held-out toy subject 0."""
    import tempfile

    from jointdiff.data.toyworld.captions import prompt_templates
    from jointdiff.data.toyworld.subjects import make_subject, subject_seed
    from jointdiff.evaluation.toy.benchmark import real_subject

    toy = real_subject(make_subject(subject_seed("eval", 0)), images=1, resolution=64)
    model = [] if args.model is None else ["--model", args.model]
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}

    def wall(cmd: list[str]) -> float:
        walls = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                raise SystemExit(f"{' '.join(cmd[:4])} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
            walls.append(time.perf_counter() - t0)
        return statistics.median(walls)

    for label, code in (
        ("import torch", "import torch"),
        ("import torch, torch._dynamo (diffusers and transformers import it)", "import torch._dynamo"),
        ("import the pipeline (torch, diffusers, transformers, peft)", "import jointdiff.jedi.pipeline"),
    ):
        w = wall([sys.executable, "-c", f"{code}; import os; os._exit(0)"])  # ends as the one-shot commands do
        rows.append({"command": f"floor: {label}", "images": 0, "wall_s": w, "s_per_image": None})
        print(json.dumps(rows[-1]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "reference.png"
        toy.images[0].save(ref)
        env["JOINTDIFF_ONNX_CACHE"] = f"{tmp}/onnx"
        commands = []
        for k in args.targets:
            scenes = [t.format(toy.class_word) for t in prompt_templates(toy.live)[:k]]
            prompts = [a for scene in scenes for a in ("--prompt", scene)]
            gen = ["generate", *model, *prompts, "--out", f"{tmp}/out", "--ref", str(ref)]
            commands.append((f"generate, 1 reference, {k} target(s)", k, gen))
        commands.append(
            ("demo (12 images: 6 with the reference, 6 without)", 12, ["demo", *model, "--out", f"{tmp}/d"])
        )
        for label, images, cmd in commands:
            for onnx in ("off", "on"):
                w = wall([sys.executable, "-m", "jointdiff", *cmd, "--onnx", onnx])
                row = {"command": f"{label}, --onnx {onnx}", "images": images, "wall_s": w, "s_per_image": w / images}
                print(json.dumps(row), flush=True)
                rows.append(row)
        rows.append(first_click(args, Path(tmp)))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def first_click(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The web app's first Generate on a warm server: the page's first contact (held-out toy subject 0 as the
    reference, two prompts, the default steps), timed in the service as the click runs it (the median of
    ``--repeats`` clicks after the first, and the first)."""
    from jointdiff.app.page import load_services
    from jointdiff.common.paths import shipped_model

    model = args.model or str(shipped_model())
    jedi, _ = load_services(model, "cpu", [], tmp / "serve", shipped=args.model is None)
    first = jedi.first_contact()

    def click() -> float:
        t0 = time.perf_counter()
        out = jedi.generate(first.references, first.prompts, first.caption, steps=jedi.default_steps, seed=0)
        if not out.gallery:
            raise SystemExit(f"the first click failed: {out.status}")
        return time.perf_counter() - t0

    cold = click()
    warm = statistics.median(click() for _ in range(args.repeats))
    return {
        "command": f"web app, first click on a warm server (2 images; the very first {cold:.2f} s)",
        "images": 2,
        "wall_s": warm,
        "s_per_image": warm / 2,
    }


# --------------------------------------------------------------------------- memory (item 4)


def memory_one(n: int, processor: str, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """One U-Net forward of one set of ``n`` references + 1 target at 512 px (SD 1.5 shape), the full
    branch; returns the peak memory above the loaded model and the seconds."""
    plain = backbone("sd15", None, device, dtype)
    joint = joint_of(plain)
    del plain
    set_processor(joint.unet, AttnProcessor() if processor == "plain" else AttnProcessor2_0())
    inp = Inputs(joint.unet, TEXT_TOKENS["sd15"], n, 1, device, dtype)
    known = torch.arange(n + 1, device=device) < n
    reference = torch.cat([inp.cond.references, torch.zeros_like(inp.x[:, n:])], dim=1)
    t0 = time.perf_counter()
    with torch.no_grad(), PeakMemory(device) as mem:
        joint(inp.x, inp.t, inp.cond.text, reference=reference, known=known[None])
    model_bytes = sum(p.numel() * p.element_size() for p in joint.parameters())
    return {
        "n": n,
        "processor": processor,
        "peak_mib": mem.peak / 2**20,
        "model_mib": model_bytes / 2**20,
        "seconds": time.perf_counter() - t0,
    }


def memory_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each (processor, n) in a fresh process, memory capped at ``--limit-gib`` of address space:
    a row either reports its peak or that it did not fit."""
    rows = []
    for processor, ns in (("plain", args.plain_n), ("sdpa", args.sdpa_n)):
        for n in ns:
            cmd = [
                sys.executable,
                __file__,
                "--memory-one",
                str(n),
                processor,
                "--device",
                args.device,
                "--dtype",
                args.dtype,
            ]
            if args.limit_gib:
                cmd += ["--limit-gib", str(args.limit_gib)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            else:
                tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
                row = {"n": n, "processor": processor, "peak_mib": None, "fits": False, "error": tail[0][:160]}
            row.setdefault("fits", True)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- report


def environment(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Device, date and versions for the record."""
    import diffusers

    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{cpu_name()}, {torch.get_num_threads()} threads"
    return {
        "date": datetime.date.today().isoformat(),
        "device": name,
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "command": " ".join(["python", *sys.argv]),
    }


def cpu_name() -> str:
    """The CPU model (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def markdown(title: str, env: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """A markdown section: the environment line and one table row per measurement."""
    cols = list(rows[0])
    lines = [f"## {title}", "", "; ".join(f"{k}: `{v}`" if k == "command" else f"{k}: {v}" for k, v in env.items()), ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n\n"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backbone", choices=("miniature", "sd15"), default="miniature")
    p.add_argument("--model", default=None, help="miniature: a jointdiff pipeline directory (default: the shipped one)")
    p.add_argument("--references", type=int, nargs="+", default=[1, 3], help="n values")
    p.add_argument("--targets", type=int, nargs="+", default=[1, 4], help="K values")
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before each row")
    p.add_argument("--no-before", dest="before", action="store_false", help="skip the previous-drop rows")
    p.add_argument("--no-isolated", dest="isolated", action="store_false", help="skip the isolated-reference rows")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--memory", action="store_true", help="item 4: memory against n at 512 px, plain vs SDPA processor")
    p.add_argument("--profile", action="store_true", help="item 2: where a whole miniature pipeline call goes")
    p.add_argument("--cli", action="store_true", help="wall time of jointdiff generate / demo, fresh processes")
    p.add_argument("--plain-n", type=int, nargs="*", default=[1, 2, 3, 4, 5])
    p.add_argument("--sdpa-n", type=int, nargs="*", default=[1, 3, 7, 15])
    p.add_argument("--limit-gib", type=float, default=24.0, help="memory rows: address-space cap of each process")
    p.add_argument("--memory-one", nargs=2, metavar=("N", "PROCESSOR"), help=argparse.SUPPRESS)
    p.add_argument("--record", default=None, help="append the markdown table to this file")
    args = p.parse_args(argv)
    if any(v < 1 for v in args.targets) or any(v < 0 for v in args.references) or args.repeats < 1 or args.warmup < 0:
        p.error("K and --repeats must be >= 1, n and --warmup >= 0")
    torch.set_num_threads(args.threads)
    return_big_blocks_at_once()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    if args.memory_one:
        if args.limit_gib:
            import resource

            cap = int(args.limit_gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        print(json.dumps(memory_one(int(args.memory_one[0]), args.memory_one[1], device, dtype)))
        return 0
    env = environment(device, dtype)
    if args.memory:
        title = f"Memory of one 512 px step against the number of references (SD 1.5 shape, cap {args.limit_gib} GiB)"
        rows = memory_rows(args)
    elif args.cli:
        title = "What a user waits for: whole commands, fresh processes (the shipped miniature, 64 px)"
        rows = cli_rows(args)
    elif args.profile:
        title = "Where a whole pipeline call goes: the miniature, 64 px"
        rows = profile_rows(args, device, dtype)
    else:
        title = f"U-Net time per sampling step: {args.backbone}"
        rows = speed_rows(args, device, dtype)
    text = markdown(title, env, rows)
    print(text)
    if args.record:
        with Path(args.record).open("a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
