"""``jointdiff demo`` on a tiny random model: grid, scores beside their real and text-only rows, determinism, errors."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

from jointdiff.cli import main
from jointdiff.common.tiny import save_tiny_base
from jointdiff.evaluation.demo import DEMO_SCENES, format_scores, run_demo
from jointdiff.jedi.convert import convert_pipeline


@pytest.fixture(scope="module")
def model(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("demo")
    save_tiny_base(root / "base")
    convert_pipeline(str(root / "base"), root / "model")
    return root / "model"


def test_demo_on_a_toy_subject_writes_grid_and_scores(model, tmp_path):
    result = run_demo(tmp_path / "a", model=model, subject=3, steps=2)
    assert result.grid.is_file() and len(result.prompts) == len(DEMO_SCENES)
    grid = PIL.Image.open(result.grid)
    assert grid.width > grid.height  # one column per scene, reference first
    s = result.scores
    assert set(s) == {"JeDi, 1 reference", "same model, no reference", "real renders (upper bound)", "text-only floor"}
    # The trained toy evaluators tell the subject itself from another of its class, with both identity measures.
    for measure in ("identity", "parts"):
        assert s["real renders (upper bound)"][measure] > s["text-only floor"][measure] + 0.2
    text = format_scores(result)
    assert "normalised identity" in text and "PartID" in text and "toy DINO" in text
    again = run_demo(tmp_path / "b", model=model, subject=3, steps=2)
    assert again.scores == result.scores
    for k in range(len(DEMO_SCENES)):
        a = np.asarray(PIL.Image.open(tmp_path / "a" / f"{k:02d}-jedi.png"))
        b = np.asarray(PIL.Image.open(tmp_path / "b" / f"{k:02d}-jedi.png"))
        assert np.array_equal(a, b)  # seeded: the same images twice


def test_demo_with_a_user_photo_and_cli_errors(model, tmp_path, capsys):
    photo = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8))
    photo.save(tmp_path / "photo.jpg")
    argv = ["demo", "--model", str(model), "--ref", str(tmp_path / "photo.jpg"), "--prompt", "a toy on the beach"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "JeDi, 1 reference" in out and "text-only floor" not in out  # no toy rows for a photo
    assert out.strip().splitlines()[-1] == "Your own image: jointdiff demo --ref my.png --class-word dog"
    assert "knows only the toy world" not in out  # said only when the shipped miniature ran
    assert (tmp_path / "out" / "grid.png").is_file()
    assert main(["demo", "--model", str(model), "--ref", str(tmp_path / "missing.png")]) == 2
    assert capsys.readouterr().err.strip() == f"jointdiff: error: reference image not found: {tmp_path / 'missing.png'}"
    assert main(["demo", "--model", str(model), "--subject", "-1"]) == 2
    assert "--subject must be >= 0" in capsys.readouterr().err


def test_demo_without_a_shipped_model_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import jointdiff.common.paths

    monkeypatch.setattr(jointdiff.common.paths, "SHIPPED_MODEL", tmp_path / "none")
    assert main(["demo", "--out", str(tmp_path / "x")]) == 2
    assert "no shipped miniature model" in capsys.readouterr().err


def test_two_subject_demo_scores_each_subject_beside_real_and_floor(model, tmp_path, capsys):
    """Issue 33: `jointdiff demo --two-subjects`: references of two held-out subjects, the scenes with both class
    words, per-subject scores with the real two-subject renders at 1 and the floor at 0; deterministic."""
    argv = ["demo", "--two-subjects", "--model", str(model), "--subject", "2", "--out", str(tmp_path / "a")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "JeDi, references of A and B" in out and "real two-subject renders" in out and "leakage" in out
    assert out.strip().splitlines()[-1].startswith("Your own two subjects: jointdiff generate --ref")
    grid = PIL.Image.open(tmp_path / "a" / "grid.png")
    assert grid.width > 7 * 128  # two references and six scenes
    from jointdiff.evaluation.demo import run_two_subject_demo

    result = run_two_subject_demo(tmp_path / "b", model=model, subject=2, steps=2)
    s = result.scores
    assert s["real two-subject renders"]["PartID (norm)"] == pytest.approx(1.0)
    assert s["text-only floor"]["PartID (norm)"] == pytest.approx(0.0)
    assert s["real two-subject renders"]["PartID A"] > s["text-only floor"]["PartID A"] + 0.3
    assert all(" and a" in p or " and an" in p for p in result.prompts)
    assert main(["demo", "--two-subjects", "--model", str(model), "--ref", "x.png"]) == 2
    assert "--two-subjects runs on two held-out toy subjects" in capsys.readouterr().err


def test_two_subject_demo_binds_each_reference_to_its_column(model, tmp_path, capsys):
    """Issue 33: the two-subject demo uses the region bias by default (the measured one); 0 turns it off and gives
    other images; the flag is refused without --two-subjects and below 0 (one line)."""
    from jointdiff.evaluation.demo import run_two_subject_demo
    from jointdiff.jedi.coupling import SEVERAL_SUBJECTS_REGION_BIAS

    assert SEVERAL_SUBJECTS_REGION_BIAS > 0
    bound = run_two_subject_demo(tmp_path / "a", model=model, subject=2, steps=2)
    again = run_two_subject_demo(
        tmp_path / "b", model=model, subject=2, steps=2, region_bias=SEVERAL_SUBJECTS_REGION_BIAS
    )
    plain = run_two_subject_demo(tmp_path / "c", model=model, subject=2, steps=2, region_bias=0.0)

    def grid(result) -> np.ndarray:
        return np.asarray(PIL.Image.open(result.grid))

    assert (grid(bound) == grid(again)).all()  # the default is the measured region bias
    assert (grid(bound) != grid(plain)).any()  # and it changes the scenes with both references
    assert main(["demo", "--model", str(model), "--region-bias", "4"]) == 2
    assert "--region-bias is for --two-subjects" in capsys.readouterr().err
    assert main(["demo", "--two-subjects", "--model", str(model), "--region-bias", "-1"]) == 2
    assert "region bias must be >= 0" in capsys.readouterr().err
