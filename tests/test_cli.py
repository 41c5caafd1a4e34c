import json

import numpy as np
import pytest
import torch
from conftest import randn, text
from diffusers import DiffusionPipeline

from jointdiff.cli import main
from jointdiff.common.tiny import save_tiny_base, save_tiny_inpainting
from jointdiff.jedi.layouts import joint_layout
from jointdiff.jedi.model import JointUNet, convert_unet
from jointdiff.jedi.pipeline import JointDiffusionPipeline


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("base")
    save_tiny_base(path, seed=0)
    return path


def _one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("jointdiff: error: ")
    for needle in needles:
        assert needle in err, err
    return err


def test_convert_round_trips_and_reproduces_the_base(base_dir, tmp_path, capsys):
    out = tmp_path / "joint"
    assert main(["convert", "--base", str(base_dir), "--out", str(out)]) == 0
    assert "9 channels" in capsys.readouterr().out
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "JointDiffusionPipeline"
    assert not list(out.rglob("*.bin")) and list(out.rglob("*.safetensors"))

    pipe = JointDiffusionPipeline.from_pretrained(out)
    assert joint_layout(pipe.unet).in_channels == 9
    # Same outputs as converting the base in memory, and as the base U-Net itself (no references).
    original = DiffusionPipeline.from_pretrained(base_dir).unet
    x, emb, known = randn(1, 3, 4, 8, 8), text(1, 3), torch.tensor([[True, False, False]])
    with torch.no_grad():
        expected = original(x[:, 0], 30, emb[:, 0]).sample
        in_memory = JointUNet.with_joint_attention(convert_unet(original))
        assert torch.equal(pipe.joint_unet(x, 30, emb, x, known), in_memory(x, 30, emb, x, known))
        single = pipe.joint_unet(x[:, :1], 30, emb[:, :1])[:, 0]
    assert torch.allclose(single, expected, atol=1e-5)

    # Converting the converted model again is refused.
    rc = main(["convert", "--base", str(out), "--out", str(tmp_path / "again")])
    _one_line_error(capsys, rc, "already")


def test_convert_rejects_missing_paths_and_non_models(tmp_path, capsys):
    rc = main(["convert", "--base", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    _one_line_error(capsys, rc, "no such directory")
    rc = main(["convert", "--base", str(tmp_path), "--out", str(tmp_path / "o")])
    _one_line_error(capsys, rc, "model_index.json not found")
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "Thing", "vae": ["diffusers", "AutoencoderKL"]})
    )
    rc = main(["convert", "--base", str(tmp_path), "--out", str(tmp_path / "o")])
    _one_line_error(capsys, rc, "not a Stable-Diffusion-layout model", "unet")


def test_convert_refuses_a_non_empty_output(base_dir, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    rc = main(["convert", "--base", str(base_dir), "--out", str(tmp_path)])
    _one_line_error(capsys, rc, "--overwrite")
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_pickle_weights_need_an_explicit_flag(tmp_path, capsys):
    base = tmp_path / "pickled"
    save_tiny_base(base, safe_serialization=False)
    assert not list((base / "unet").glob("*.safetensors"))  # transformers 5 always writes safetensors
    rc = main(["convert", "--base", str(base), "--out", str(tmp_path / "o1")])
    _one_line_error(capsys, rc, "--allow-pickle")
    assert main(["convert", "--base", str(base), "--out", str(tmp_path / "o2"), "--allow-pickle"]) == 0
    assert list((tmp_path / "o2").rglob("*.safetensors"))


def test_hub_id_without_network_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no retries against a closed network
    rc = main(["convert", "--base", "nobody-xyz/not-a-model", "--out", str(tmp_path / "o")])
    _one_line_error(capsys, rc, "Hugging Face Hub")


def test_selftest_passes(capsys):
    assert main(["selftest"]) == 0
    assert capsys.readouterr().out.count("[ok]") == 2


@pytest.fixture(scope="module")
def joint_dir(base_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("joint") / "model"
    assert main(["convert", "--base", str(base_dir), "--out", str(out)]) == 0
    return out


def test_generate_writes_images_with_settings_and_a_grid(joint_dir, tmp_path, capsys):
    from PIL import Image

    ref = tmp_path / "ref.png"
    Image.new("RGB", (24, 20), (200, 30, 30)).save(ref)
    args = ["generate", "--model", str(joint_dir), "--ref", str(ref), "--prompt", "a toy on the beach"]
    args += ["--prompt", "a toy in the snow", "--out", str(tmp_path / "out"), "--steps", "2", "--seed", "7"]
    assert main(args) == 0
    pngs = sorted((tmp_path / "out").glob("00-*.png"))
    assert len(pngs) == 2
    with Image.open(pngs[1]) as im:
        settings = json.loads(im.text["jointdiff"])
        assert im.size == (16, 16)
    assert settings["prompt"] == "a toy in the snow" and settings["seed"] == 7 and settings["steps"] == 2
    assert settings["references"] == [str(ref)]
    with Image.open(tmp_path / "out" / "grid.png") as grid:
        assert grid.width > 3 * 128  # reference + two targets
    # Same seed, same pixels.
    assert main([*args[:-6], "--out", str(tmp_path / "again"), "--steps", "2", "--seed", "7"]) == 0
    first = np.asarray(Image.open(pngs[0]))
    assert (first == np.asarray(Image.open(sorted((tmp_path / "again").glob("00-*.png"))[0]))).all()


def test_generate_two_subjects_each_reference_with_its_own_caption(joint_dir, tmp_path):
    """Issue 33: `--ref A --ref-prompt "a dog" --ref B --ref-prompt "a teapot"`: each caption goes with its reference
    (recorded in order; swapping the captions between the references changes the images)."""
    from PIL import Image

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(a)
    Image.new("RGB", (16, 16), (30, 30, 200)).save(b)

    def run(out: str, captions: tuple[str, str]) -> tuple[np.ndarray, dict]:
        args = ["generate", "--model", str(joint_dir), "--ref", str(a), "--ref-prompt", captions[0], "--ref", str(b)]
        args += ["--ref-prompt", captions[1], "--prompt", "a dog and a teapot on the beach", "--steps", "2"]
        assert main([*args, "--out", str(tmp_path / out), "--seed", "3"]) == 0
        with Image.open(next((tmp_path / out).glob("00-*.png"))) as im:
            return np.asarray(im.convert("RGB")), json.loads(im.text["jointdiff"])

    image, settings = run("ab", ("a dog", "a teapot"))
    assert settings["references"] == [str(a), str(b)] and settings["reference_prompts"] == ["a dog", "a teapot"]
    assert np.array_equal(image, run("ab-again", ("a dog", "a teapot"))[0])
    assert not np.array_equal(image, run("swapped", ("a teapot", "a dog"))[0])


def test_evaluate_swaps_the_sampler_and_records_it(joint_dir):
    """``--scheduler`` (issue 31's sampler curve): the harness's pipeline samples with it; run.json records it only
    when set, so runs made before the option compare as before."""
    from jointdiff.evaluation.methods import load_jedi
    from jointdiff.evaluation.options import MethodOptions

    method = load_jedi(MethodOptions(model=str(joint_dir), scheduler="unipc"))
    assert type(method.pipe.scheduler).__name__ == "UniPCMultistepScheduler"
    assert type(load_jedi(MethodOptions(model=str(joint_dir))).pipe.scheduler).__name__ == "DDIMScheduler"
    assert MethodOptions(scheduler="dpmpp").settings()["scheduler"] == "dpmpp"
    assert "scheduler" not in MethodOptions().settings()
    with pytest.raises(ValueError, match="scheduler must be one of"):
        MethodOptions(scheduler="heun")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--steps", "0"], "--steps must be a positive integer"),
        (["--guidance-scale", "-2"], "guidance scale must be >= 0"),
        (["--ref", "BAD"], "cannot read reference image"),
        (["--ref", "MISSING"], "reference image not found"),
        (["--ref", "GOOD", "--ref-prompt", "a", "--ref-prompt", "b"], "2 --ref-prompt for 1 --ref"),
    ],
)
def test_generate_rejects_bad_input_in_one_line(joint_dir, tmp_path, capsys, extra, needle):
    from PIL import Image

    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
    names = {"BAD": "bad.png", "MISSING": "missing.png", "GOOD": "good.png"}
    extra = [str(tmp_path / names[a]) if a in names else a for a in extra]
    rc = main(["generate", "--model", str(joint_dir), "--prompt", "x", "--out", str(tmp_path / "o"), *extra])
    _one_line_error(capsys, rc, needle)


def test_generate_refuses_a_model_that_is_not_reference_conditioned(base_dir, tmp_path, capsys):
    rc = main(["generate", "--model", str(base_dir), "--prompt", "x", "--out", str(tmp_path / "o")])
    _one_line_error(capsys, rc, "not reference-conditioned")


@pytest.fixture(scope="module")
def inpainting_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("inpainting")
    save_tiny_inpainting(path, seed=0)
    return path


def test_generate_reads_a_stock_inpainting_model_with_the_training_free_options(inpainting_dir, tmp_path):
    from PIL import Image

    ref = tmp_path / "ref.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(ref)
    args = ["generate", "--model", str(inpainting_dir), "--ref", str(ref), "--prompt", "a toy", "--steps", "2"]
    args += ["--reference-bias", "1.5", "--coupled-layers", "down,up.1", "--coupled-steps", "0.5"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    with Image.open(sorted((tmp_path / "out").glob("00-*.png"))[0]) as im:
        settings = json.loads(im.text["jointdiff"])
        assert im.size == (16, 16)
    assert settings["layout"] == "inpainting" and settings["reference_bias"] == 1.5
    assert settings["coupled_layers"] == ["down", "up.1"] and settings["coupled_steps"] == 0.5


@pytest.mark.parametrize(("model", "steps"), [("inpainting_dir", 0.5), ("joint_dir", 1.0)])
def test_generate_couples_as_the_model_layout_says_by_default(request, tmp_path, model, steps):
    """Without --coupled-steps: a stock inpainting model couples the first half of the steps, a JeDi model every
    step (recorded in the PNG's settings)."""
    from PIL import Image

    ref = tmp_path / "ref.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(ref)
    args = ["generate", "--model", str(request.getfixturevalue(model)), "--ref", str(ref), "--prompt", "a toy"]
    assert main([*args, "--steps", "2", "--out", str(tmp_path / "out")]) == 0
    with Image.open(sorted((tmp_path / "out").glob("00-*.png"))[0]) as im:
        assert json.loads(im.text["jointdiff"])["coupled_steps"] == steps


@pytest.mark.parametrize(
    ("model", "extra", "needle"),
    [
        ("joint_dir", ["--layout", "inpainting"], "not a stock inpainting model"),
        ("base_dir", ["--layout", "inpainting"], "not reference-conditioned"),
        ("inpainting_dir", ["--coupled-layers", "side"], "unknown coupled layer 'side'"),
        ("inpainting_dir", ["--coupled-layers", "down.7"], "'down.7' matches no self-attention"),
        ("inpainting_dir", ["--coupled-steps", "2"], "fraction in [0, 1]"),
        ("inpainting_dir", ["--reference-bias=inf"], "finite or -inf"),
    ],
)
def test_generate_layout_and_coupling_errors_are_one_line(request, tmp_path, capsys, model, extra, needle):
    path = request.getfixturevalue(model)
    rc = main(["generate", "--model", str(path), "--prompt", "x", "--out", str(tmp_path / "o"), *extra])
    _one_line_error(capsys, rc, needle)


def test_the_parser_loads_no_torch():
    """``jointdiff --help`` builds every command's options (from the typed configs too) without torch."""
    import subprocess
    import sys

    code = (
        "import sys; from jointdiff.cli import build_parser; build_parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers', 'transformers', 'gradio'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("command", "config", "options"),
    [
        ("blend", "BlendConfig", {"--steps": "num_inference_steps", "--cag-fraction": "cag_fraction"}),
        ("evaluate", "EvalConfig", {"--num-inputs": "num_random", "--against": "against", "--max-prompts": None}),
        ("evaluate", "MethodOptions", {"--steps": "steps", "--dtype": "dtype", "--reference-caption": None}),
        ("evaluate", "MethodOptions", {"--scheduler": None}),
    ],
)
def test_options_come_from_the_typed_configs(command, config, options):
    """A config's options carry its fields' defaults, choices and docs; left out, they build the default config."""
    import argparse
    import dataclasses

    from jointdiff.cli import build_parser
    from jointdiff.common.config import from_args
    from jointdiff.dreamblend.config import BlendConfig
    from jointdiff.evaluation.options import EvalConfig, MethodOptions

    cls = {"BlendConfig": BlendConfig, "EvalConfig": EvalConfig, "MethodOptions": MethodOptions}[config]
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    actions = {flag: a for a in sub._actions for flag in a.option_strings}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for flag, name in options.items():
        name = name or flag[2:].replace("-", "_")
        a, f = actions[flag], fields[name]
        assert (a.dest, a.default, a.help) == (name, f.default, f.metadata["doc"])
        assert a.choices == (list(f.metadata["choices"]) if "choices" in f.metadata else None)
    required = {"blend": ["--run", "r", "--prompt", "p"], "evaluate": ["--method", "jedi"]}[command]
    read = cls.from_args if cls is MethodOptions else lambda args: from_args(cls, args)
    assert read(sub.parse_args(required)) == cls()


def test_generate_with_the_shipped_miniature_samples_as_measured(tmp_path, monkeypatch):
    """Without --model the shipped miniature runs its measured sampler and steps (benchmarks/samplers.md); any
    other model keeps its own scheduler and 50 steps."""
    from PIL import Image

    from jointdiff.common.paths import shipped_model
    from jointdiff.jedi.schedulers import SHIPPED_STEPS

    if shipped_model() is None:
        pytest.skip("no shipped miniature in this install")
    monkeypatch.setenv("JOINTDIFF_ONNX_CACHE", str(tmp_path / "onnx"))
    ref = tmp_path / "ref.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(ref)
    assert main(["generate", "--ref", str(ref), "--prompt", "a toy on the beach", "--out", str(tmp_path / "o")]) == 0
    with Image.open(next((tmp_path / "o").glob("00-*.png"))) as im:
        settings = json.loads(im.text["jointdiff"])
    assert settings["steps"] == SHIPPED_STEPS and settings["scheduler"] == "DPMSolverMultistepScheduler"
    from jointdiff.jedi.cpu import native_bf16

    assert settings["dtype"] == ("bfloat16" if native_bf16() else "float32")  # jointdiff/jedi/cpu.py


def test_the_command_exits_fast_after_one_shot_commands_with_everything_written(joint_dir, tmp_path):
    """`python -m jointdiff generate` ends by os._exit (issue 31: interpreter teardown is ~0.7 s): its PNGs and grid
    are complete, its output flushed, its exit status kept (0; 2 for a user error)."""
    import subprocess
    import sys

    from PIL import Image

    ref = tmp_path / "ref.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(ref)
    cmd = [sys.executable, "-m", "jointdiff", "generate", "--model", str(joint_dir), "--ref", str(ref)]
    done = subprocess.run(
        [*cmd, "--prompt", "a toy", "--steps", "2", "--out", str(tmp_path / "o")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for png in [*(tmp_path / "o").glob("00-*.png"), tmp_path / "o" / "grid.png"]:
        with Image.open(png) as im:
            im.load()  # the whole file is there
    bad = subprocess.run([*cmd, "--prompt", "a toy", "--steps", "0", "--out", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "jointdiff: error: --steps must be a positive integer, got 0"
