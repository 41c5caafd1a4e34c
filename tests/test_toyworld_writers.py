"""Toy world writers: paper and WebDataset round trips, resume, determinism across worker processes, CLI."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest

from jointdiff.cli import main
from jointdiff.data.formats import decode_paper_set, iter_tar_samples, read_paper_set
from jointdiff.data.toyworld.generator import make_set
from jointdiff.data.toyworld.writers import write_sets


def _same_pixels(image_set, toy_set) -> bool:
    return all(np.array_equal(np.asarray(im), v.image) for im, v in zip(image_set.images, toy_set.views, strict=True))


def test_paper_round_trip_with_masks(tmp_path):
    rep = write_sets(
        tmp_path / "sets", 3, start=5, resolution=32, workers=1, masks_dir=tmp_path / "masks", progress=False
    )
    assert rep["written"] == 3 and rep["skipped"] == 0
    for i in range(5, 8):
        toy = make_set(i, resolution=32)
        got = read_paper_set(tmp_path / "sets" / f"{toy.key}.png")
        assert got.captions == [v.caption for v in toy.views]
        assert _same_pixels(got, toy)
        mask = np.asarray(PIL.Image.open(tmp_path / "masks" / f"{toy.key}.png")) > 127
        assert np.array_equal(mask, np.concatenate([v.mask for v in toy.views]))
    again = write_sets(tmp_path / "sets", 4, start=5, resolution=32, workers=1, progress=False)  # resume and extend
    assert (again["written"], again["skipped"]) == (1, 3)


def test_webdataset_shards_resume_and_workers_agree(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_sets(a, 5, fmt="webdataset", sets_per_shard=2, resolution=16, workers=1, progress=False)
    write_sets(b, 5, fmt="webdataset", sets_per_shard=2, resolution=16, workers=2, progress=False)
    shards = sorted(p.name for p in a.glob("*.tar"))
    assert shards == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    for name in shards:  # one process or two: byte-identical shards
        assert (a / name).read_bytes() == (b / name).read_bytes()
    samples = [s for name in shards for s in iter_tar_samples(a / name)]
    assert [k for k, _ in samples] == [make_set(i, resolution=16).key for i in range(5)]
    assert _same_pixels(decode_paper_set(samples[4][1]["png"], samples[4][1]["txt"]), make_set(4, resolution=16))
    last = (a / shards[-1]).read_bytes()
    (a / shards[-1]).unlink()
    rep = write_sets(a, 5, fmt="webdataset", sets_per_shard=2, resolution=16, workers=1, progress=False)
    assert (rep["written"], rep["skipped"]) == (1, 4) and (a / shards[-1]).read_bytes() == last


def test_manifest_guards_mixing(tmp_path):
    write_sets(tmp_path, 1, resolution=16, workers=1, progress=False)
    with pytest.raises(ValueError, match="another toy-world data set"):
        write_sets(tmp_path, 1, resolution=32, workers=1, progress=False)
    with pytest.raises(ValueError, match="must not be inside"):
        write_sets(tmp_path, 1, resolution=16, workers=1, masks_dir=tmp_path / "m", progress=False)


def test_cli_make_and_errors(tmp_path, capsys):
    assert (
        main(["toyworld", "make", "--sets", "2", "--out", str(tmp_path / "d"), "--resolution", "16", "--workers", "1"])
        == 0
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["written"] == 2 and report["images"] >= 4
    assert len(list((tmp_path / "d").glob("*.png"))) == 2
    assert (
        main(
            ["toyworld", "make", "--sets", "1", "--out", str(tmp_path / "e"), "--split", "eval", "--start", "100000000"]
        )
        == 2
    )
    assert "outside split" in capsys.readouterr().err


def test_cli_show_and_stats(tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert main(["toyworld", "show", "--out", str(out), "--subjects", "2", "--resolution", "16"]) == 0
    assert PIL.Image.open(out).size == (16 * 10, 16 * 2)  # 10 conditions x 2 subjects
    capsys.readouterr()
    assert main(["toyworld", "stats", "--subjects", "50", "--render", "0"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["subjects"] == 50 and stats["distinct_specs"] == 50 and "pixels" not in stats


def test_cli_split_choices_are_the_seed_ranges():
    """The CLI writes the split names out (its --help imports no toy world); they must stay the library's."""
    from jointdiff.cli import build_parser
    from jointdiff.data.toyworld.subjects import SEED_RANGES

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["toyworld"]
    steps = next(a for a in sub._actions if getattr(a, "choices", None) and isinstance(a.choices, dict)).choices
    found = [a.choices for p in steps.values() for a in p._actions if a.dest == "split"]
    assert found and all(list(c) == list(SEED_RANGES) for c in found)
