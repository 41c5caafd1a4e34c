"""The DreamBooth loader and the evaluation protocol: input choices, averaging (real-images upper
bound and noise), resumable caching with corrupt-file regeneration, --images scoring, the JeDi adapter."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from jointdiff.evaluation.benchmarks import Benchmark, Subject, load_dreambooth, parse_prompts_and_classes
from jointdiff.evaluation.metrics import cosine_matrix
from jointdiff.evaluation.options import EvalConfig, MethodOptions
from jointdiff.evaluation.protocol import Method, input_choices
from jointdiff.evaluation.run import evaluate
from jointdiff.evaluation.scoring import Scorer
from jointdiff.jedi.guidance import Guidance
from jointdiff.testing.evaluation import HistogramDualEncoder, ThumbnailEncoder

DREAMBOOTH = Path(os.environ.get("JOINTDIFF_DREAMBOOTH", Path(__file__).resolve().parents[2] / "shared" / "dreambooth"))
needs_dreambooth = pytest.mark.skipif(not DREAMBOOTH.is_dir(), reason=f"DreamBooth dataset not at {DREAMBOOTH}")


@dataclass
class SmallDreamBooth:
    """Real DreamBooth subjects with 64 px copies of their images (fast protocol tests)."""

    subjects_: list[Subject]
    full: Benchmark
    name: str = "dreambooth-small"

    def subjects(self) -> list[Subject]:
        return self.subjects_

    def prompt_templates(self, subject: Subject) -> list[str]:
        return self.full.prompt_templates(subject)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread on a shared CPU


@pytest.fixture(scope="module")
def small():
    if not DREAMBOOTH.is_dir():
        pytest.skip(f"DreamBooth dataset not at {DREAMBOOTH}")
    full = load_dreambooth(str(DREAMBOOTH))
    picked = {s.name: s for s in full.subjects()}
    subjects = []
    for name in ("dog", "teapot", "duck_toy"):  # live, object, the 4-image subject
        s = picked[name]
        images = [im.convert("RGB").resize((64, 64), PIL.Image.Resampling.BICUBIC) for im in s.images]
        subjects.append(Subject(s.name, s.class_word, s.live, images))
    return SmallDreamBooth(subjects, full)


class FirstInput:
    """Fake method: every output is the (first) input image itself."""

    name = "inputs"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def generate(self, subject, references, prompts, seed):
        self.calls.append((subject.name, len(prompts)))
        return [references[0].copy() for _ in prompts]


class Noise:
    """Fake method: uniform noise images, a function of (seed, prompt)."""

    name = "noise"

    def generate(self, subject, references, prompts, seed):
        out = []
        for p in prompts:
            rng = np.random.default_rng([seed, len(p)])
            out.append(PIL.Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
        return out


class TaggedFirstInput(FirstInput):
    """FirstInput with the call count written into pixel (0, 0): every regeneration is a new file."""

    def generate(self, subject, references, prompts, seed):
        out = super().generate(subject, references, prompts, seed)
        for im in out:
            im.putpixel((0, 0), (len(self.calls) % 256, 0, 0))
        return out


def _scorer() -> Scorer:
    return Scorer(HistogramDualEncoder(name="h-clip"), ThumbnailEncoder(name="thumb-dino"))


def test_parse_prompts_and_classes_by_hand():
    text = """Classes\n\nsubject_name,class\ndog,dog\nvase,vase\n\nObject Prompts\n\nprompt_list = [
'a {0} {1} in the jungle'.format(unique_token, class_token),\n]\n\nLive Subject Prompts\n
prompt_list = [\n'a {0} {1} wearing a red hat'.format(unique_token, class_token),\n'a red {0} {1}'.format(unique_token, class_token)\n]\n"""
    classes, objects, live = parse_prompts_and_classes(text)
    assert classes == {"dog": "dog", "vase": "vase"}
    assert objects == ["a {} in the jungle"] and live == ["a {} wearing a red hat", "a red {}"]
    with pytest.raises(ValueError, match="expected a class table"):
        parse_prompts_and_classes("Classes\n")


@needs_dreambooth
def test_dreambooth_loader_matches_the_benchmark():
    bench = load_dreambooth(str(DREAMBOOTH))
    subjects = bench.subjects()
    assert len(subjects) == 30 and sum(len(s.images) for s in subjects) == 158
    live = {s.name for s in subjects if s.live}
    assert live == {"cat", "cat2", "dog", "dog2", "dog3", "dog5", "dog6", "dog7", "dog8"}
    by = {s.name: s for s in subjects}
    assert by["bear_plushie"].class_word == "stuffed animal" and not by["bear_plushie"].live
    obj, liv = bench.prompt_templates(by["vase"]), bench.prompt_templates(by["dog"])
    assert len(obj) == len(liv) == 25 and all(t.count("{}") == 1 for t in obj + liv)
    assert "a {} wearing a santa hat" in liv and "a {} wearing a santa hat" not in obj
    assert obj[:10] == liv[:10] and obj[20:] == liv[20:]  # 10 shared contexts and 5 shared property prompts


def test_input_choices():
    assert input_choices(5, "dog", EvalConfig()) == [(0,), (1,), (2,), (3,), (4,)]
    three = EvalConfig(refs=3, seed=7)
    got = input_choices(6, "dog", three)
    assert len(got) == 1 and len(set(got[0])) == 3 and got == input_choices(6, "dog", three)  # seeded
    assert input_choices(6, "dog", EvalConfig(refs=3, inputs="all")) == list(itertools.combinations(range(6), 3))
    many = input_choices(6, "dog", EvalConfig(refs=3, num_random=50))
    assert len(many) == 20 and len(set(many)) == 20  # no more than C(6, 3) distinct choices
    with pytest.raises(ValueError, match="fewer than refs=5"):
        input_choices(4, "duck_toy", EvalConfig(refs=5))


def test_upper_bound_row_and_noise_average_as_the_protocol_says(small, tmp_path):
    """The paper's protocol (``against="all"``). Outputs = the input image: CLIP-I / DINO equal the mean of each
    subject's full cosine matrix (every input choice against all real images, itself included). Noise scores
    its own exact average and lies below the real images."""
    scorer = _scorer()
    config = EvalConfig(max_prompts=2, against="all")
    real = evaluate(tmp_path / "real", small, scorer, config, method=FirstInput(), report=False)
    noise = evaluate(tmp_path / "noise", small, scorer, config, method=Noise(), report=False)
    assert real["num_images"] == (5 + 5 + 4) * 2  # every choice of 1 input x 2 prompts
    expect_subject = {}
    for s in small.subjects():
        f = scorer.dino.encode_images(s.images)
        expect_subject[s.name] = cosine_matrix(f, f).mean().item()
        assert real["subjects"][s.name]["DINO"] == pytest.approx(expect_subject[s.name], abs=1e-6)
        # noise: each image against all real images, averaged over choices and prompts
        rows = [json.loads(x) for x in (tmp_path / "noise" / "scores.jsonl").read_text().splitlines()]
        paths = [r["path"] for r in rows if r["subject"] == s.name and "path" in r]
        g = scorer.dino.encode_images([PIL.Image.open(p) for p in paths])
        assert noise["subjects"][s.name]["DINO"] == pytest.approx(cosine_matrix(g, f).mean().item(), abs=1e-6)
    assert real["overall"]["DINO"] == pytest.approx(np.mean(list(expect_subject.values())), abs=1e-6)
    # the "real images" reference row excludes identical pairs, so it is below the inputs row
    assert real["real_images"]["DINO"] < real["overall"]["DINO"]
    assert noise["overall"]["DINO"] < 0.05 < real["real_images"]["DINO"] < real["overall"]["DINO"]
    assert real["overall"]["MDINO"] is None  # no segmenter and no masks: masked metrics are absent
    # the first two prompts are shared by the live (dog) and object lists: 14 images each
    assert {t: p["images"] for t, p in real["prompts"].items()} == {"a {} in the jungle": 14, "a {} in the snow": 14}


def test_unseen_protocol_never_scores_an_image_against_its_inputs(small, tmp_path):
    """The default protocol (issue 26): an output that copies its input scores exactly the "real images" row
    (mean cosine over distinct pairs), not above it; with a held-out gallery the copy is scored against the
    gallery and the other real images; 3 inputs leave the 2 others and the gallery."""
    scorer = _scorer()
    copy = evaluate(tmp_path / "copy", small, scorer, EvalConfig(max_prompts=1), method=FirstInput(), report=False)
    assert copy["config"]["against"] == "unseen"
    for s in small.subjects():
        assert copy["subjects"][s.name]["DINO"] == pytest.approx(_self_similarity(scorer, s.images), abs=1e-6)
    assert copy["overall"]["DINO"] == pytest.approx(copy["real_images"]["DINO"], abs=1e-6)
    # a gallery of views that are never inputs: a copy of input i is scored against the others and the gallery
    s = small.subjects()[1]
    gallery = [im.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT) for im in s.images[:2]]
    one = SmallDreamBooth([Subject(s.name, s.class_word, s.live, s.images, gallery=gallery)], small.full)
    run = evaluate(tmp_path / "gal", one, scorer, EvalConfig(max_prompts=1, refs=3), method=FirstInput(), report=False)
    f = scorer.dino.encode_images(s.images + gallery)
    (choice,) = input_choices(len(s.images), s.name, EvalConfig(refs=3))
    rest = [i for i in range(len(s.images)) if i not in choice] + [len(s.images), len(s.images) + 1]
    expect = cosine_matrix(f[choice[0] : choice[0] + 1], f[rest]).mean().item()
    assert run["overall"]["DINO"] == pytest.approx(expect, abs=1e-6)


def test_results_hold_every_protocol_and_the_partid_column(small, tmp_path):
    """results.json names its protocol and holds the identity metrics under the others, equal to runs made
    with them; a part-aware backbone adds the PartID column (here a second thumbnail encoder)."""
    scorer = Scorer(HistogramDualEncoder(name="h-clip"), ThumbnailEncoder(name="thumb-dino"), parts=ThumbnailEncoder())
    config = EvalConfig(max_prompts=1)
    run = evaluate(tmp_path / "u", small, scorer, config, method=Noise(), report=False)
    assert run["protocol"]["name"] == "unseen" and set(run["protocols"]) == {"unseen", "all", "inputs"}
    assert run["overall"]["PartID"] == pytest.approx(run["overall"]["DINO"])  # the same encoder in both roles
    paper = evaluate(
        tmp_path / "a", small, scorer, EvalConfig(max_prompts=1, against="all"), method=Noise(), report=False
    )
    for m in ("DINO", "CLIP-I", "PartID"):
        assert run["protocols"]["all"][m] == pytest.approx(paper["overall"][m], abs=1e-9)
        assert paper["protocols"]["unseen"][m] == pytest.approx(run["overall"][m], abs=1e-9)
    from jointdiff.evaluation.report import markdown_table

    text = markdown_table([run, paper], paper=False)
    assert "PartID" in text and "`unseen`: real views not given" in text and "`all`: all real images" in text


def test_gallery_indices_by_hand():
    from jointdiff.evaluation.scoring import gallery_indices

    assert gallery_indices(5, 0, (1,), "unseen") == [0, 2, 3, 4]
    assert gallery_indices(5, 3, (0, 2, 4), "unseen") == [1, 3, 5, 6, 7]
    assert gallery_indices(5, 3, (0,), "all") == [0, 1, 2, 3, 4]
    assert gallery_indices(5, 3, (0, 2), "inputs") == [0, 2]
    assert gallery_indices(5, 2, None, "unseen") == [5, 6]  # inputs unknown: the gallery only
    with pytest.raises(ValueError, match="needs the input choice"):
        gallery_indices(5, 0, None, "unseen")
    with pytest.raises(ValueError, match="no real view is left"):
        gallery_indices(2, 0, (0, 1), "unseen")
    with pytest.raises(ValueError, match="unknown scoring protocol"):
        gallery_indices(5, 0, (0,), "everything")


def _self_similarity(scorer, images):
    f = scorer.dino.encode_images(images)
    n = len(images)
    return ((cosine_matrix(f, f).sum() - n) / (n * (n - 1))).item()


def test_resume_recomputes_nothing_and_regenerates_a_corrupt_image(small, tmp_path):
    scorer, method = _scorer(), TaggedFirstInput()
    config = EvalConfig(refs=2, inputs="random", num_random=2, max_prompts=3, images_per_prompt=2)
    first = evaluate(tmp_path, small, scorer, config, method=method, report=False)
    g = first["generation"]
    assert (g["generated"], g["cached"]) == (3 * 2 * 3 * 2, 0) and g["seconds_per_image"] >= 0
    timing = json.loads((tmp_path / "images" / "timing.json").read_text())
    assert timing["images"] == 36 and timing["seconds"] / 36 == pytest.approx(g["seconds_per_image"])
    encoded = scorer.clip.calls, scorer.dino.calls
    calls = len(method.calls)

    second = evaluate(tmp_path, small, scorer, config, method=method, report=False)
    assert len(method.calls) == calls  # nothing generated
    assert (scorer.clip.calls, scorer.dino.calls) == encoded  # no feature recomputed (real ones included)
    assert second["overall"] == first["overall"] and second["generation"]["cached"] == 36
    assert second["generation"]["seconds_per_image"] == g["seconds_per_image"]  # kept from the run that generated

    victim = sorted((tmp_path / "images" / "teapot").rglob("*.png"))[1]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated PNG
    third = evaluate(tmp_path, small, scorer, config, method=method, report=False)
    assert method.calls[calls:] == [("teapot", 1)]  # exactly the corrupt image, alone
    assert (third["generation"]["generated"], third["generation"]["cached"]) == (1, 35)
    assert json.loads((tmp_path / "images" / "timing.json").read_text())["images"] == 37
    assert (scorer.clip.calls - encoded[0], scorer.dino.calls - encoded[1]) == (1, 1)  # only the new image
    assert PIL.Image.open(victim).getpixel((0, 0)) == (len(method.calls), 0, 0)  # the regenerated file is scored
    assert third["overall"]["DINO"] == pytest.approx(first["overall"]["DINO"], abs=1e-3)  # one pixel changed

    with pytest.raises(ValueError, match=r"holds images made with other settings \(seed\)"):
        evaluate(tmp_path, small, scorer, EvalConfig(refs=2, inputs="random", num_random=2, seed=1), method=method)


def test_images_directory_scores_like_the_run_that_made_them(small, tmp_path):
    scorer = _scorer()
    config = EvalConfig(max_prompts=2, images_per_prompt=2)
    run = evaluate(tmp_path / "run", small, scorer, config, method=Noise(), report=False)
    ext = tmp_path / "other-system"
    for p in (tmp_path / "run" / "images").rglob("*.png"):  # images/<subject>/in<i>/pNN_sJ.png
        subject, choice = p.parts[-3], p.parts[-2]
        dest = ext / subject / choice / (p.stem.removeprefix("p") + ".png")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(p.read_bytes())
    other = evaluate(tmp_path / "scored", small, scorer, config, images_dir=ext, report=False)
    assert other["label"] == "other-system" and other["num_images"] == run["num_images"]
    for m in ("CLIP-T", "CLIP-I", "DINO", "Diversity"):
        assert other["overall"][m] == pytest.approx(run["overall"][m], abs=1e-9)
    assert run["overall"]["Diversity"] > 0.0
    (ext / "dog" / "in0" / "99_x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="prompt index 99 out of range"):
        evaluate(tmp_path / "bad", small, scorer, config, images_dir=ext, report=False)


@pytest.fixture(scope="module")
def tiny_jedi(tmp_path_factory):
    from jointdiff.common.tiny import save_tiny_base
    from jointdiff.jedi.convert import convert_pipeline

    root = tmp_path_factory.mktemp("jedi")
    save_tiny_base(root / "base")
    convert_pipeline(str(root / "base"), root / "jedi")
    return root / "jedi"


def test_jedi_adapter_on_the_real_pipeline(tiny_jedi):
    """JointDiffusionPipeline.__call__ with tiny components: one image per prompt, each a function of
    (seed, prompt) only, so resumed runs reproduce full runs."""
    from jointdiff.evaluation.methods import load_jedi

    method = load_jedi(MethodOptions(model=str(tiny_jedi), steps=2, guidance=Guidance(scale=2.0)))
    assert isinstance(method, Method) and method.name == "jedi"
    rng = np.random.default_rng(0)
    refs = [PIL.Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))]
    subject = Subject("dog", "dog", True, refs)
    both = method.generate(subject, refs, ["a dog in the snow", "a dog on the beach"], seed=3)
    alone = method.generate(subject, refs, ["a dog on the beach"], seed=3)
    assert len(both) == 2 and all(isinstance(im, PIL.Image.Image) for im in both)
    size = method.pipe.unet.config.sample_size * method.pipe.vae_scale_factor
    assert both[0].size == (size, size)
    np.testing.assert_array_equal(np.asarray(both[1]), np.asarray(alone[0]))
    assert not np.array_equal(np.asarray(both[0]), np.asarray(both[1]))  # different prompts and seeds
    other = method.generate(subject, refs, ["a dog on the beach"], seed=4)
    assert not np.array_equal(np.asarray(other[0]), np.asarray(alone[0]))
    with pytest.raises(ValueError, match="needs --model DIR"):
        load_jedi(MethodOptions())


def test_method_options_hold_the_guidance_and_record_the_settings_as_before():
    """run.json's generation settings (the cache's key) keep their keys, values and order: flat, the guidance
    under the pipeline's argument names, as when they were five fields of MethodOptions."""
    import argparse

    from jointdiff.cli.evaluate import register

    o = MethodOptions(model="m", steps=7, guidance=Guidance("text_first", 4.0, 2.0, "mask", "isolated"))
    assert list(o.settings().items()) == [
        ("model", "m"),
        ("dtype", None),
        ("steps", 7),
        ("guidance_scale", 4.0),
        ("image_guidance_scale", 2.0),
        ("guidance", "text_first"),
        ("null_reference", "mask"),
        ("reference_attention", "isolated"),
        ("batch_size", 1),
        ("resolution", None),
        ("reference_caption", "a photo of a {}"),
    ]
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    argv = ["evaluate", "--method", "jedi", "--model", "m", "--steps", "7", "--guidance", "text_first"]
    argv += ["--guidance-scale", "4", "--image-guidance-scale", "2", "--null-reference", "mask"]
    assert MethodOptions.from_args(parser.parse_args([*argv, "--reference-attention", "isolated"])) == o
    with pytest.raises(ValueError, match="guidance must be a Guidance"):
        MethodOptions(guidance="joint")


def test_the_training_free_options_reach_the_pipeline_and_the_run_settings(tiny_jedi):
    """Issue 32 through the harness: ``--reference-bias`` / ``--coupled-layers`` / ``--coupled-steps`` and ``--layout``
    become MethodOptions, are recorded in run.json only where they differ from the defaults, and change the images
    of the JeDi method (a reference bias of -inf: the targets ignore the references, as without them)."""
    import argparse

    from jointdiff.cli.evaluate import register
    from jointdiff.evaluation.methods import load_jedi
    from jointdiff.jedi.coupling import Coupling

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    argv = ["evaluate", "--method", "jedi", "--model", str(tiny_jedi), "--steps", "2", "--layout", "jedi"]
    argv += ["--reference-bias=-inf", "--coupled-layers", "down,up", "--coupled-steps", "0.5"]
    o = MethodOptions.from_args(parser.parse_args(argv))
    assert o.coupling == Coupling(float("-inf"), ("down", "up"), 0.5) and o.layout == "jedi"
    assert list(o.settings())[-4:] == ["layout", "reference_bias", "coupled_layers", "coupled_steps"]
    regions = MethodOptions.from_args(parser.parse_args([*argv, "--region-bias", "8"]))
    assert regions.settings() == o.settings() | {"region_bias": 8.0}  # recorded only where set (issue 33)
    plain = MethodOptions.from_args(parser.parse_args(argv[:7]))
    assert "reference_bias" not in plain.settings() and "layout" not in plain.settings()
    with pytest.raises(ValueError, match="layout must be one of auto, jedi, inpainting"):
        MethodOptions(layout="sdxl")

    rng = np.random.default_rng(0)
    refs = [PIL.Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))]
    subject, prompts = Subject("dog", "dog", True, refs), ["a dog on the beach"]
    ignore = Coupling(reference_bias=float("-inf"))
    images = {
        name: np.asarray(load_jedi(opts).generate(subject, refs, prompts, seed=3)[0], dtype=np.int16)
        for name, opts in {
            "jedi": plain,
            "ignore": dataclasses.replace(plain, coupling=ignore),
        }.items()
    }
    other = [PIL.Image.fromarray(255 - np.asarray(refs[0]))]
    ignored_other = load_jedi(dataclasses.replace(plain, coupling=ignore)).generate(subject, other, prompts, seed=3)
    assert np.abs(images["jedi"] - images["ignore"]).max() > 0  # the option reached the attention
    np.testing.assert_array_equal(images["ignore"], np.asarray(ignored_other[0], dtype=np.int16))  # refs ignored


def test_real_method_returns_held_out_real_images(small):
    from jointdiff.evaluation.methods import RealImagesMethod

    s = small.subjects()[0]
    out = RealImagesMethod().generate(s, [s.images[0]], ["a", "b", "c", "d", "e"], seed=0)
    expect = [s.images[i] for i in (1, 2, 3, 4, 1)]  # cycling through the non-inputs
    assert [np.asarray(o).tobytes() for o in out] == [np.asarray(e).tobytes() for e in expect]
    small_out = RealImagesMethod(resolution=32).generate(s, [s.images[0]], ["a"], seed=0)[0]
    assert small_out.size == (32, 32)  # a generator-sized copy of images[1]
