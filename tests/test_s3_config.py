"""S3 config: files, one-line errors, the content hash that guards resumed runs."""

from __future__ import annotations

import json

import pytest

from jointdiff.data.s3.config import config_from_dict, load_config
from jointdiff.data.s3.work import derive_seed, plan_shards


def test_json_and_toml_give_the_same_config(tmp_path):
    data = {
        "objects": ["mug"],
        "collages_per_object": 3,
        "clip": {"threshold": 0.9},
        "inpainter": {"object_scale": [0.2, 0.4]},
    }
    (tmp_path / "c.json").write_text(json.dumps(data))
    (tmp_path / "c.toml").write_text(
        'objects = ["mug"]\ncollages_per_object = 3\n[clip]\nthreshold = 0.9\n[inpainter]\nobject_scale = [0.2, 0.4]\n'
    )
    a, b = load_config(tmp_path / "c.json"), load_config(tmp_path / "c.toml")
    assert a == b and a.inpainter.object_scale == (0.2, 0.4) and a.clip.threshold == 0.9


def test_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^clip\.treshold: unknown key \(did you mean 'threshold'\?\)$"):
        config_from_dict({"clip": {"treshold": 0.9}})
    with pytest.raises(ValueError, match=r"^s3: the object list is empty \('objects' holds no names\)$"):
        config_from_dict({"objects": []}).object_names()
    (tmp_path / "objects.txt").write_text("# only a comment\n\n")
    cfg = config_from_dict({"objects_file": "objects.txt"}, base_dir=tmp_path)
    with pytest.raises(ValueError, match="object list is empty"):
        cfg.object_names()
    with pytest.raises(ValueError, match="are the same name"):
        config_from_dict({"objects": ["Teddy bear", "teddy-bear"]}).object_names()
    with pytest.raises(ValueError, match=r"stylizer\.probability"):
        config_from_dict({"stylizer": {"probability": 1.5}})


def test_objects_file_and_shard_plan(tmp_path):
    (tmp_path / "objects.txt").write_text("mug  # a comment\nred backpack\n")
    cfg = config_from_dict(
        {"objects": ["cat"], "objects_file": "objects.txt", "collages_per_object": 5, "collages_per_shard": 2},
        base_dir=tmp_path,
    )
    shards = plan_shards(cfg)
    assert [s.shard_id for s in shards][:4] == ["cat-00000", "cat-00001", "cat-00002", "mug-00000"]
    assert [s.seeds for s in shards[:3]] == [[0, 1], [2, 3], [4]]  # every seed exactly once
    assert len(shards) == 9


def test_content_hash_ignores_placement_and_objects_only():
    a = config_from_dict({"objects": ["a"]})
    b = config_from_dict({"objects": ["a", "b"], "device": "cuda", "ray": {"fuse": True}, "inpainter": {"num_gpus": 1}})
    c = config_from_dict({"objects": ["a"], "clip": {"threshold": 0.9}})
    assert a.content_hash() == b.content_hash() != c.content_hash()


def test_derived_seeds_are_stable_and_distinct():
    s = derive_seed(0, "mug", 3, "paste", 1)
    assert s == derive_seed(0, "mug", 3, "paste", 1)
    assert (
        len(
            {
                s,
                derive_seed(0, "mug", 3, "paste", 2),
                derive_seed(0, "cup", 3, "paste", 1),
                derive_seed(1, "mug", 3, "paste", 1),
            }
        )
        == 4
    )
