"""``jointdiff evaluate`` end to end on a miniature DreamBooth-layout dataset with tiny random
backbones: real-images row, JeDi on a tiny converted pipeline, --images, --compare, one-line errors."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import PIL.Image
import pytest

from jointdiff.cli import main
from jointdiff.testing.evaluation import save_tiny_clip, save_tiny_clipseg, save_tiny_vit, write_fake_dreambooth

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread on a shared CPU


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    data = write_fake_dreambooth(root / "dreambooth")
    clip, dino, seg = save_tiny_clip(root / "clip"), save_tiny_vit(root / "dino"), save_tiny_clipseg(root / "seg")
    common = ["--data", str(data), "--clip-model", str(clip), "--dino-model", str(dino)]
    return root, [*common, "--segmenter", "clipseg", "--segmenter-model", str(seg)]


def test_evaluate_real_images_then_images_dir_then_compare(setup, capsys):
    root, common = setup
    out = root / "real"
    assert main(["evaluate", "--method", "real", "--out", str(out), *common]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["num_images"] == 2 * 3 * 3 and (res["generation"]["generated"], res["generation"]["cached"]) == (18, 0)
    assert set(res["subjects"]) == {"dog", "backpack"} and len(res["prompts"]) == 6
    assert all(isinstance(res["overall"][m], float) for m in ("CLIP-T", "CLIP-I", "MCLIP-I", "DINO", "MDINO"))
    assert res["overall"]["Diversity"] is None  # one image per prompt and input
    assert "clipseg" in res["scoring"]["segmenter"]
    table = (out / "table.md").read_text()
    assert "| real (1 input) |" in table and "| JeDi (1 input) | 0.3040 | 0.7818 | 0.8764 | 0.6190 | 0.7510 |" in table
    assert "Per subject" in table and "| a <subject> in the snow |" in table
    if importlib.util.find_spec("matplotlib") is not None:  # the optional [eval] extra
        with PIL.Image.open(out / "dino_vs_clipt.png") as im:
            assert im.format == "PNG" and im.width > 300
    assert "18 generated, 0 cached" in capsys.readouterr().out

    assert main(["evaluate", "--method", "real", "--out", str(out), *common]) == 0  # resume: all cached
    assert "0 generated, 18 cached" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["overall"] == res["overall"]

    assert main(["evaluate", "--images", str(out / "images"), "--out", str(root / "ext"), *common]) == 0
    ext = json.loads((root / "ext" / "results.json").read_text())
    assert ext["label"] == "images" and ext["overall"] == pytest.approx(res["overall"], abs=1e-9)

    cmp = root / "cmp"
    assert main(["evaluate", "--compare", str(out), str(root / "ext"), "--out", str(cmp), "--no-paper"]) == 0
    table = (cmp / "table.md").read_text()
    assert "| real (1 input) |" in table and "| images |" in table and "JeDi" not in table


def test_evaluate_jedi_on_tiny_pipeline(setup, tmp_path, capsys):
    from jointdiff.common.tiny import save_tiny_base
    from jointdiff.jedi.convert import convert_pipeline

    _root, common = setup
    save_tiny_base(tmp_path / "base")
    convert_pipeline(str(tmp_path / "base"), tmp_path / "jedi")
    out = tmp_path / "run"
    args = ["evaluate", "--method", "jedi", "--model", str(tmp_path / "jedi"), "--steps", "2", "--out", str(out)]
    assert main([*args, "--subjects", "dog", "--max-prompts", "1", *common]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["num_images"] == 3 and res["method_settings"]["steps"] == 2 and res["label"] == "jedi (1 input)"
    assert sorted(p.name for p in (out / "images" / "dog").rglob("*.png")) == ["p00_s0.png"] * 3
    capsys.readouterr()
    assert main([*args, "--subjects", "dog", "--max-prompts", "1", "--guidance-scale", "3", *common]) == 2
    assert "holds images made with other settings (method_settings)" in capsys.readouterr().err

    def images(method: str, null_reference: str) -> list[np.ndarray]:
        run = tmp_path / f"{method}-{null_reference}"
        argv = ["evaluate", "--method", method, "--model", str(tmp_path / "jedi"), "--steps", "2", "--out", str(run)]
        argv += ["--subjects", "dog", "--max-prompts", "1", "--null-reference", null_reference, *common]
        assert main(argv) == 0
        assert json.loads((run / "results.json").read_text())["method_settings"]["null_reference"] == null_reference
        return [np.asarray(PIL.Image.open(p)) for p in sorted((run / "images").rglob("*.png"))]

    drop, mask = images("jedi", "drop"), images("jedi", "mask")
    assert any(not np.array_equal(a, b) for a, b in zip(drop, mask, strict=True))  # the null branch differs
    free, free_mask = images("jedi-noref", "drop"), images("jedi-noref", "mask")
    assert all(np.array_equal(a, b) for a, b in zip(free, free_mask, strict=True))  # no references: nothing to drop
    assert all(not np.array_equal(a, b) for a, b in zip(free, drop, strict=True))  # the references change the image
    iso = tmp_path / "isolated"
    argv = [*args[:-1], str(iso), "--subjects", "dog", "--max-prompts", "1", "--reference-attention", "isolated"]
    assert main([*argv, *common]) == 0
    assert json.loads((iso / "results.json").read_text())["method_settings"]["reference_attention"] == "isolated"


def test_one_line_errors(setup, tmp_path, capsys):
    _root, common = setup
    bad = [*common[:2], "--clip-model", str(tmp_path / "missing-clip"), *common[4:]]
    assert main(["evaluate", "--method", "real", "--out", str(tmp_path / "o"), *bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing-clip" in err and "--clip-model DIR" in err
    assert main(["evaluate", "--method", "nope", *common]) == 2
    assert "unknown method 'nope'; choose one of: jedi, jedi-noref, real" in capsys.readouterr().err
    assert main(["evaluate", "--method", "real", "--subjects", "cat", *common]) == 2
    assert "unknown subject(s) cat; known: dog, backpack" in capsys.readouterr().err
    assert main(["evaluate", "--method", "real", "--data", str(tmp_path)]) == 2
    assert "prompts_and_classes.txt" in capsys.readouterr().err
