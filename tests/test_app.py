"""The web app's logic without a browser: upload checks, JeDi requests, DreamBlend wiring, the CLI."""

import io
import itertools
import json
import os
import struct
import sys
import threading
import time
import types
import zipfile
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from jointdiff.app import files as app_io
from jointdiff.app import page as app
from jointdiff.app.files import MAX_SIDE, check_steps_and_seed, parse_prompts, read_reference
from jointdiff.app.services import NO_DREAMBLEND, BlendService, JeDiService
from jointdiff.cli import main
from jointdiff.common.tiny import save_tiny_base
from jointdiff.jedi.convert import convert_pipeline
from jointdiff.jedi.coupling import SEVERAL_SUBJECTS_REGION_BIAS
from jointdiff.jedi.pipeline import JointDiffusionPipeline
from jointdiff.testing import save_tiny_run


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming ``width x height`` RGB pixels, and no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def png_bytes(width: int = 32, height: int = 24, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread is several times faster


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("app-model")
    save_tiny_base(root / "base", seed=0)
    convert_pipeline(root / "base", root / "model")
    p = JointDiffusionPipeline.from_pretrained(root / "model")
    p.set_progress_bar_config(disable=True)
    return p


# -- upload checks ---------------------------------------------------------------------------------


def test_read_reference_round_trips_pixels_and_converts_to_rgb(tmp_path):
    data = png_bytes(32, 24, seed=1)
    im = read_reference(write(tmp_path / "ok.png", data))
    assert im.mode == "RGB" and im.size == (32, 24)
    assert np.array_equal(np.asarray(im), np.asarray(PIL.Image.open(io.BytesIO(data))))
    PIL.Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(tmp_path / "alpha.png")
    assert read_reference(tmp_path / "alpha.png").getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"hello, not an image", "notes.png is not an image"),
        (b"", "notes.png is not an image"),
        (png_header(20000, 20000), "image dimensions too large"),  # PIL's bomb check, before any decode
        (png_header(MAX_SIDE + 1, 16), f"{MAX_SIDE + 1}x16 px; the limit is {MAX_SIDE} px"),
        (png_header(64, 64), "cannot read reference image notes.png: OSError"),  # header, no pixels
        (png_bytes(64, 64)[:300], "cannot read reference image notes.png: OSError"),  # truncated
    ],
    ids=["text", "empty", "20000x20000-header", "too-wide-header", "header-only", "truncated"],
)
def test_read_reference_rejects_malformed_uploads_with_one_line(tmp_path, data, needle):
    path = write(tmp_path / "notes.png", data)
    with pytest.raises(ValueError) as e:
        read_reference(path)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg
    assert str(tmp_path) not in msg  # the user sees the file name, not the server's path


def test_read_reference_rejects_formats_outside_the_allow_list_and_oversized_files(tmp_path):
    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "x.tiff")
    with pytest.raises(ValueError, match=r"x.tiff is not an image \(accepted: PNG, JPEG"):
        read_reference(tmp_path / "x.tiff")
    big = tmp_path / "big.png"
    with open(big, "wb") as f:  # sparse: size checked before reading
        f.truncate((app_io.MAX_UPLOAD_MB + 1) * 2**20)
    with pytest.raises(ValueError, match=f"the limit is {app_io.MAX_UPLOAD_MB} MB"):
        read_reference(big)
    with pytest.raises(ValueError, match="missing on the server"):
        read_reference(tmp_path / "gone.png")


def test_prompts_steps_and_seed_are_checked():
    assert parse_prompts(" a toy \n\n  a toy in the snow\n") == ["a toy", "a toy in the snow"]
    for bad, needle in (("", "at least one"), ("\n".join("p" * 9), "at most 8")):
        with pytest.raises(ValueError, match=needle):
            parse_prompts(bad)
    assert check_steps_and_seed(3.0, 7) == (3, 7)
    for steps, seed in ((0, 0), (2.5, 0), (app_io.MAX_STEPS + 1, 0), (3, -1), (3, 1.5), ("x", 0), (3, None)):
        with pytest.raises(ValueError):
            check_steps_and_seed(steps, seed)


def test_result_folders_keep_the_newest(tmp_path, monkeypatch):
    monkeypatch.setattr(app_io, "KEEP_RESULTS", 3)
    folders = app_io.ResultFolders(tmp_path)
    made = [folders.new() for _ in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in made[-3:]]


# -- JeDi requests ---------------------------------------------------------------------------------


def test_generate_matches_the_pipeline_and_writes_settings(pipe, tmp_path):
    ref = write(tmp_path / "toy.png", png_bytes(40, 30, seed=2))
    service = JeDiService(pipe, "tiny", tmp_path / "work")
    seen = []
    out = service.generate(
        [ref],
        "a toy\na toy in the snow",
        "a toy",
        "text_first",
        5.0,
        3.0,
        3,
        11,
        on_step=lambda i, n: seen.append((i, n)),
    )
    assert out.status.startswith("2 image(s), 3 steps, seed 11"), out.status
    assert seen == [(1, 3), (2, 3), (3, 3)]  # the progress bar sees every step
    expected = pipe(
        ["a toy", "a toy in the snow"],
        reference_images=[PIL.Image.open(ref).convert("RGB")],
        reference_prompts="a toy",
        num_inference_steps=3,
        guidance_scale=5.0,
        image_guidance_scale=3.0,
        guidance="text_first",
        generator=torch.Generator().manual_seed(11),
    ).images
    assert [caption for _, caption in out.gallery] == ["a toy", "a toy in the snow"]
    for (path, prompt), want in zip(out.gallery, expected, strict=True):
        with PIL.Image.open(path) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(want))
            settings = json.loads(im.text["jointdiff"])
            assert im.text["prompt"] == prompt
        assert settings["prompt"] == prompt and settings["seed"] == 11 and settings["steps"] == 3
        assert settings["guidance"] == "text_first" and settings["image_guidance_scale"] == 3.0
        assert settings["references"] == ["toy.png"]
    archive, grid = out.files[:2]
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        assert names == {"00-a_toy.png", "01-a_toy_in_the_snow.png", "grid.png", "settings.json"}
        assert json.loads(z.read("settings.json"))["prompts"] == ["a toy", "a toy in the snow"]
    assert PIL.Image.open(grid).width > 2 * 128  # reference | two outputs
    again = service.generate([ref], "a toy\na toy in the snow", "a toy", "text_first", 5.0, 3.0, 3, 11)
    assert _read(again.gallery[0][0]) == _read(out.gallery[0][0])  # deterministic


def test_generate_reports_bad_requests_and_bugs_without_raising(pipe, tmp_path):
    service = JeDiService(pipe, "tiny", tmp_path / "work")
    ok = write(tmp_path / "ok.png", png_bytes())
    bad = write(tmp_path / "bad.png", b"\x89PNG garbage")
    for files, prompts, steps, needle in (
        ([bad], "a toy", 2, "bad.png is not an image"),
        ([ok] * 5, "a toy", 2, "at most 4"),
        ([ok], "", 2, "at least one prompt"),
        ([ok], "a toy", 0, "steps must be"),
    ):
        out = service.generate(files, prompts, steps=steps)
        assert out.status.startswith("**Error:**") and needle in out.status, out.status
        assert out.gallery == [] and out.files == []
    assert "guidance" in service.generate([ok], "a toy", guidance="nope", steps=1).status  # the pipeline's check

    class Broken:
        scheduler = pipe.scheduler

        def __call__(self, *a, **k):
            raise RuntimeError("boom")

    out = JeDiService(Broken(), "broken", tmp_path / "w2").generate([ok], "a toy", steps=1)
    assert out.status == "**Internal error:** RuntimeError: boom"
    assert service.check([ok]).status == "1 reference image(s) ready (32x24 px)"
    assert service.check([bad]).gallery == [] and "Error" in service.check([bad]).status


def test_toy_subject_renders_held_out_references_deterministically(pipe, tmp_path):
    pytest.importorskip("jointdiff.data.toyworld.generator", reason="the toy world is not in this install")
    service = JeDiService(pipe, "tiny", tmp_path / "work")
    paths, caption, status = service.toy(7, 3)
    again, _, _ = service.toy(7, 3)
    assert len(paths) == 3 and caption.split()[0] in ("a", "an") and status.endswith(caption)
    refs = app_io.read_references(paths)  # they pass the upload checks
    assert [im.size for im in refs] == [(64, 64)] * 3
    assert [_read(p) for p in paths] == [_read(p) for p in again]
    assert not np.array_equal(np.asarray(refs[0]), np.asarray(refs[1]))  # different views of one subject
    for index, count, needle in ((-1, 1, "toy subject must be"), (0, 5, "toy views must be"), ("x", 1, "toy subject")):
        paths, caption, status = service.toy(index, count)
        assert paths == [] and status.startswith("**Error:**") and needle in status


def test_two_toy_subjects_each_with_its_caption_line(pipe, tmp_path):
    """Issue 33: "Two toy subjects" loads subject i and i + 1, one caption line each and prompts naming both; the
    captions reach the pipeline one per reference (the same images as the pipeline given them as a list)."""
    pytest.importorskip("jointdiff.data.toyworld.pairs", reason="the toy world is not in this install")
    service = JeDiService(pipe, "tiny", tmp_path / "work")
    paths, captions, prompts, status = service.toy_pair(3)
    lines = captions.splitlines()
    assert len(paths) == 2 and len(lines) == 2 and lines[0] == service.toy(3, 1)[1] and lines[1] == service.toy(4, 1)[1]
    words = [line.split()[-1] for line in lines]
    assert all(words[0] in p and words[1] in p and " and " in p for p in prompts.splitlines())
    assert "one caption line per reference" in status
    out = service.generate(paths, prompts.splitlines()[0], captions, steps=2, seed=5)
    expected = pipe(
        [prompts.splitlines()[0]],
        reference_images=[PIL.Image.open(p).convert("RGB") for p in paths],
        reference_prompts=lines,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(5),
    ).images[0]
    assert np.array_equal(np.asarray(PIL.Image.open(out.gallery[0][0]).convert("RGB")), np.asarray(expected))
    with PIL.Image.open(out.gallery[0][0]) as im:
        assert json.loads(im.text["jointdiff"])["reference_prompts"] == lines
    bound = service.generate(paths, prompts.splitlines()[0], captions, steps=2, seed=5, one_subject_per_reference=True)
    expected = pipe(
        [prompts.splitlines()[0]],
        reference_images=[PIL.Image.open(p).convert("RGB") for p in paths],
        reference_prompts=lines,
        num_inference_steps=2,
        region_bias=SEVERAL_SUBJECTS_REGION_BIAS,
        generator=torch.Generator().manual_seed(5),
    ).images[0]
    assert np.array_equal(np.asarray(PIL.Image.open(bound.gallery[0][0]).convert("RGB")), np.asarray(expected))
    with PIL.Image.open(bound.gallery[0][0]) as im:
        assert json.loads(im.text["jointdiff"])["region_bias"] == SEVERAL_SUBJECTS_REGION_BIAS
    bad = service.generate(paths, "a toy", "a\nb\nc", steps=1)
    assert bad.status.startswith("**Error:**") and "3 reference captions for 2 reference image(s)" in bad.status
    assert service.toy_pair(-2)[3].startswith("**Error:**")


def test_the_page_opens_with_a_held_out_toy_subject_ready(pipe, tmp_path):
    """First contact (issue 31): toy subject 0 as the reference, its caption, two prompts naming it; the page's
    fields hold them, so the first click on Generate personalises."""
    pytest.importorskip("jointdiff.data.toyworld.generator", reason="the toy world is not in this install")
    service = JeDiService(pipe, "tiny", tmp_path / "work")
    first = service.first_contact()
    assert len(first.references) == 1 and first.caption.split()[0] in ("a", "an")
    assert first.prompts == f"{first.caption} on the beach\n{first.caption} in the snow"
    assert first.status.startswith("toy-world subject 0:") and first.status.endswith("press Generate")
    assert app_io.read_references(first.references)[0].size == (64, 64)
    out = service.generate(first.references, first.prompts, first.caption, steps=2, seed=0)
    assert out.status.startswith("2 image(s)") and len(out.gallery) == 2


def test_serving_the_shipped_miniature_samples_as_measured(tmp_path, monkeypatch):
    """Issue 31: the page of the shipped miniature starts at its measured steps with its measured sampler; any other
    model at 30 steps with its own scheduler."""
    gr = pytest.importorskip("gradio", reason="gradio not installed (pip install 'jointdiff[app]')")

    from jointdiff.common.paths import shipped_model
    from jointdiff.jedi.schedulers import SHIPPED_STEPS

    if shipped_model() is None:
        pytest.skip("no shipped miniature in this install")
    monkeypatch.setenv("JOINTDIFF_ONNX_CACHE", str(tmp_path / "onnx"))
    jedi, blend = app.load_services(str(shipped_model()), "cpu", [], tmp_path / "work", shipped=True)
    assert type(jedi.pipe.scheduler).__name__ == "DPMSolverMultistepScheduler" and jedi.default_steps == SHIPPED_STEPS
    page = _build(jedi, blend)
    steps = next(b for b in page.blocks.values() if isinstance(b, gr.Slider) and b.elem_id == "steps")
    assert steps.value == SHIPPED_STEPS
    assert "knows only the toy world" in _markdowns(page)  # the page says in one line what the miniature can do
    other, _ = app.load_services(str(shipped_model()), "cpu", [], tmp_path / "w2")
    assert type(other.pipe.scheduler).__name__ == "DDIMScheduler" and other.default_steps == 30
    assert "toy world" not in _markdowns(_build(other, blend))


# -- DreamBlend ------------------------------------------------------------------------------------


def _build(jedi, blend):
    pytest.importorskip("gradio", reason="gradio not installed (pip install 'jointdiff[app]')")
    return app.build_app(jedi, blend)


def _markdowns(demo) -> str:
    import gradio as gr

    return "\n".join(str(b.value) for b in demo.blocks.values() if isinstance(b, gr.Markdown))


def test_dreamblend_tab_says_when_dreamblend_is_not_installed(pipe, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "jointdiff.dreamblend", None)  # import raises ImportError
    blend = BlendService([tmp_path], tmp_path / "work")
    assert blend.unavailable.startswith(NO_DREAMBLEND)
    out = blend.run(str(tmp_path), "a sks toy")
    assert out.status.startswith(f"**Error:** {NO_DREAMBLEND}") and out.gallery == []
    assert NO_DREAMBLEND in _markdowns(_build(JeDiService(pipe, "tiny", tmp_path), blend))


def test_dreamblend_tab_passes_the_request_to_blend_from_run(pipe, tmp_path, monkeypatch):
    calls = []

    def blend_from_run(run_dir, prompt, *, underfit=None, overfit=None, seed=0, num_inference_steps=50):
        calls.append((run_dir, prompt, underfit, overfit, seed, num_inference_steps))
        im = PIL.Image.new("RGB", (16, 16), (seed % 256, 0, 0))
        return types.SimpleNamespace(image=im, reference=im.copy(), underfit_step=5, overfit_step=overfit or 100)

    monkeypatch.setitem(sys.modules, "jointdiff.dreamblend", types.SimpleNamespace(blend_from_run=blend_from_run))
    run = tmp_path / "run"
    run.mkdir()
    blend = BlendService([run], tmp_path / "work")
    out = blend.run(str(run), " a sks toy ", "auto", "25", 3, 4)
    assert calls == [(run, "a sks toy", None, 25, 3, 4)]
    assert [c for _, c in out.gallery] == ["underfit checkpoint, step 5", "DreamBlend, overfit step 25"]
    with PIL.Image.open(out.files[1]) as im:
        assert json.loads(im.text["jointdiff"])["overfit"] == 25 and im.getpixel((0, 0)) == (3, 0, 0)
    for args, needle in (
        ((str(tmp_path), "p"), "pick one of the run directories"),  # never a path the server was not given
        ((str(run), "  "), "type a prompt"),
        ((str(run), "p", "-5"), "underfit step must be"),
    ):
        assert needle in blend.run(*args).status
    assert len(calls) == 1
    assert "Fine-tuned run" in json.dumps(_build(JeDiService(pipe, "tiny", tmp_path), blend).get_config_file())


def make_tiny_run(root: Path) -> Path:
    """A real ``jointdiff finetune`` run of the tiny model: 6 steps, checkpoints at steps 2 and 6 (~2 s)."""
    return save_tiny_run(root)


def test_dreamblend_tab_matches_blend_from_run_on_a_real_run(tmp_path):
    dreamblend = pytest.importorskip("jointdiff.dreamblend.blend", reason="DreamBlend is not in this install")
    run = make_tiny_run(tmp_path)
    blend = BlendService([run], tmp_path / "work")
    assert blend.unavailable is None and blend.checkpoints(str(run)) == [2, 6]
    assert blend.example_prompt(str(run)) == "a photo of sks toy on the beach"
    prompt = "a photo of sks toy on the beach"
    out = blend.run(str(run), prompt, "2", "6", 5, 3)
    assert out.status == "DreamBlend done, seed 5", out.status
    want = dreamblend.blend_from_run(run, prompt, underfit=2, overfit=6, seed=5, num_inference_steps=3)
    for path, image in zip(out.files, (want.reference, want.image), strict=True):
        with PIL.Image.open(path) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(image.convert("RGB")))
    assert "no underfit checkpoint at step 3" in blend.run(str(run), prompt, "3", "6", 0, 3).status


# -- one queue slot for the model ------------------------------------------------------------------


def test_model_events_share_one_queue_slot(pipe, tmp_path, monkeypatch):
    """Three JeDi and two DreamBlend requests sent at once through the server run one after another."""
    pytest.importorskip("gradio", reason="gradio not installed (pip install 'jointdiff[app]')")
    from gradio_client import Client, handle_file

    spans, lock = [], threading.Lock()

    def timed(result):
        start = time.monotonic()
        time.sleep(0.3)
        with lock:
            spans.append((start, time.monotonic()))
        return result

    class SlowPipe:
        scheduler = pipe.scheduler

        def __call__(self, prompts, **kwargs):
            return timed(types.SimpleNamespace(images=[PIL.Image.new("RGB", (16, 16))] * len(prompts)))

    def blend_from_run(run_dir, prompt, **kwargs):
        im = PIL.Image.new("RGB", (16, 16))
        return timed(types.SimpleNamespace(image=im, reference=im, underfit_step=1, overfit_step=2))

    monkeypatch.setitem(sys.modules, "jointdiff.dreamblend", types.SimpleNamespace(blend_from_run=blend_from_run))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    jedi = JeDiService(SlowPipe(), "slow", tmp_path / "work")
    jedi.lock = _NoLock()  # only the queue is left to serialise the model
    blend = BlendService([tmp_path], tmp_path / "work")
    blend.lock = _NoLock()
    demo = app.build_app(jedi, blend)
    url = app.launch(demo, port=_free_port(), block=False)
    try:
        client = Client(url, verbose=False)
        ref = handle_file(write(tmp_path / "r.png", png_bytes()))
        jobs = [
            client.submit([ref], "a toy", None, "joint", 7.5, 7.5, 1, 0, False, api_name="/generate") for _ in range(3)
        ]
        jobs += [client.submit(str(tmp_path), "a sks toy", "auto", "auto", 0, 1, api_name="/dreamblend") for _ in "ab"]
        statuses = [job.result(timeout=30)[-1] for job in jobs]
    finally:
        demo.close()
    assert all("Error" not in s for s in statuses), statuses
    spans.sort()
    assert len(spans) == 5
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))  # never two at once


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- CLI -------------------------------------------------------------------------------------------


def test_serve_without_a_model_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import jointdiff.common.paths

    monkeypatch.setattr(jointdiff.common.paths, "SHIPPED_MODEL", tmp_path / "no-model")
    assert jointdiff.common.paths.shipped_model() is None
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "jointdiff: error: no model given and this install ships none yet; pass --model DIR (a jointdiff model)"
    )
    assert main(["serve", "--model", str(tmp_path / "nope")]) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--run", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert not os.environ.get("JOINTDIFF_DEBUG")
