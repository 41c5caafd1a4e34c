"""`jointdiff evaluate` (generation and scoring) and `jointdiff generate --prompt-sets` in two CPU processes under
`accelerate launch`: the work split between them, every file written by one process, the results those of one
process; the evaluation caches safe with concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from safetensors.torch import load_file

from jointdiff.cli import main
from jointdiff.testing.evaluation import (
    save_tiny_clip,
    save_tiny_clipseg,
    save_tiny_vit,
    write_cache_entries,
    write_fake_dreambooth,
)
from jointdiff.testing.probe import launch, read_records

pytestmark = [pytest.mark.multiprocess, pytest.mark.usefixtures("one_thread")]

PROMPT_SETS = ["a toy on the beach | a toy in the snow", "a toy in the jungle", "# a comment", "a toy | a cat | a dog"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from jointdiff.common.tiny import save_tiny_base
    from jointdiff.jedi.convert import convert_pipeline

    root = tmp_path_factory.mktemp("mp-eval")
    data = write_fake_dreambooth(root / "dreambooth")
    clip, dino, seg = save_tiny_clip(root / "clip"), save_tiny_vit(root / "dino"), save_tiny_clipseg(root / "seg")
    save_tiny_base(root / "base")
    convert_pipeline(str(root / "base"), root / "jedi")
    PIL.Image.new("RGB", (24, 20), (200, 30, 30)).save(root / "ref.png")
    (root / "sets.txt").write_text("\n".join(PROMPT_SETS) + "\n")
    scoring = ["--data", str(data), "--clip-model", str(clip), "--dino-model", str(dino)]
    scoring += ["--segmenter", "clipseg", "--segmenter-model", str(seg)]
    return root, scoring


def commands(assets, tag: str) -> tuple[list[str], list[str]]:
    root, scoring = assets
    evaluate = ["evaluate", "--method", "jedi", "--model", str(root / "jedi"), "--steps", "2", "--max-prompts", "2"]
    evaluate += ["--out", str(root / f"eval-{tag}"), "--images-per-prompt", "2", *scoring]
    generate = ["generate", "--model", str(root / "jedi"), "--ref", str(root / "ref.png"), "--device", "cpu"]
    generate += [
        "--prompt-sets",
        str(root / "sets.txt"),
        "--steps",
        "2",
        "--seed",
        "3",
        "--out",
        str(root / f"gen-{tag}"),
    ]
    return evaluate, generate


@pytest.fixture(scope="module")
def runs(assets):
    """Both commands in one process (in this one) and in two (one launch runs both, one after the other)."""
    root, _ = assets
    evaluate, generate = commands(assets, "one")
    assert main(evaluate) == 0 and main(generate) == 0
    evaluate, generate = commands(assets, "two")
    proc = launch([*evaluate, "--then", *generate], root / "record", processes=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, read_records(root / "record")


def pixels(path: Path) -> np.ndarray:
    with PIL.Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def writers(records: dict[int, list[dict]], under: Path) -> dict[str, list[int]]:
    """Each file written under ``under`` (relative path) -> the ranks that wrote it, once per write."""
    out: dict[str, list[int]] = {}
    for rank, recs in records.items():
        for x in recs:
            if "write" in x and Path(x["write"]).is_relative_to(under.resolve()):
                out.setdefault(os.path.relpath(x["write"], under.resolve()), []).append(rank)
    return out


def test_evaluate_in_two_processes_gives_the_results_of_one(runs):
    root, records = runs
    one, two = root / "eval-one", root / "eval-two"
    a, b = json.loads((one / "results.json").read_text()), json.loads((two / "results.json").read_text())
    for key in ("overall", "subjects", "prompts", "protocols", "real_images", "num_images", "num_subjects"):
        assert a[key] == b[key], key  # equal, not close: each subject is scored whole in one process
    assert (a["generation"]["generated"], b["generation"]["generated"]) == (24, 24)  # 2 subjects x 3 inputs x 2 x 2
    assert a["overall"]["Diversity"] is not None
    images = sorted(p.relative_to(one) for p in (one / "images").rglob("*.png"))
    assert len(images) == 24 and images == sorted(p.relative_to(two) for p in (two / "images").rglob("*.png"))
    assert all(np.array_equal(pixels(one / p), pixels(two / p)) for p in images)
    scores = [(one / "scores.jsonl").read_text(), (two / "scores.jsonl").read_text().replace("eval-two", "eval-one")]
    assert scores[0] == scores[1]

    written = writers(records, two)
    made = {p: ranks for p, ranks in written.items() if p.startswith("images/") and p.endswith(".png")}
    assert sorted(made) == sorted(map(str, images)) and all(len(r) == 1 for r in made.values())  # each image once
    assert {r[0] for r in made.values()} == {0, 1}  # and both processes generated
    features = {p: r for p, r in written.items() if p.startswith("features/") and p.endswith(".safetensors")}
    assert sorted(features) == ["features/backpack.safetensors", "features/dog.safetensors"]
    assert sorted(r[0] for r in features.values()) == [0, 1] and all(len(set(r)) == 1 for r in features.values())
    for name in ("results.json", "table.md", "run.json", "images/timing.json"):
        assert written.get(name) == [0], name  # the main process, once
    assert (
        load_file(str(one / "features" / "dog.safetensors")).keys()
        == load_file(str(two / "features" / "dog.safetensors")).keys()
    )


def test_generate_prompt_sets_in_two_processes_gives_the_files_of_one(runs):
    root, records = runs
    one, two = root / "gen-one", root / "gen-two"
    files = sorted(p.relative_to(one) for p in one.rglob("*.png"))
    assert [str(p.parent) for p in files].count("0000") == 3 and len(files) == 2 + 1 + 1 + 1 + 3 + 1
    assert files == sorted(p.relative_to(two) for p in two.rglob("*.png"))
    assert all(np.array_equal(pixels(one / p), pixels(two / p)) for p in files)
    with PIL.Image.open(two / "0002" / "00-02-a_dog.png") as im:
        assert json.loads(im.text["jointdiff"])["seed"] == 3 + 2  # line i: --seed + i
    by_set: dict[str, set[int]] = {}
    for path, ranks in writers(records, two).items():
        by_set.setdefault(path.split("/")[0], set()).update(ranks)
    assert sorted(by_set) == ["0000", "0001", "0002"] and all(len(r) == 1 for r in by_set.values())
    assert set().union(*by_set.values()) == {0, 1}  # each set made by one process, both made some


def test_caches_are_safe_with_concurrent_writers(tmp_path):
    """Two processes adding features to one subject's file and rewriting one cached image, at once: no feature is
    lost, no file is torn."""
    from jointdiff.evaluation.cache import FeatureCache, load_cached_image

    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)  # the writes overlap (measured: the previous cache kept 23 and 29 of the 50 features)
    workers = [context.Process(target=write_cache_entries, args=(str(tmp_path), w, 25, start)) for w in (1, 2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=240)
    assert [p.exitcode for p in workers] == [0, 0]
    tensors = FeatureCache(tmp_path, "subject", {"clip": "tiny"}).tensors
    assert sorted(tensors) == sorted(f"w{w}/{i}" for w in (1, 2) for i in range(25))
    assert all(float(tensors[f"w{w}/{i}"][0]) == i for w in (1, 2) for i in range(25))
    assert load_cached_image(tmp_path / "same.png") is not None  # a whole PNG, from one writer or the other
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
