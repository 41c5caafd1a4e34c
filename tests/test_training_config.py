"""Training configs: TOML/YAML load to the same typed tree; bad configs fail at start naming the field."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from jointdiff.cli import main
from jointdiff.training.config import Config, config_template, load_config

TOML = """
[train]
output_dir = "{out}"
max_steps = 7
mixed_precision = "no"

[data]
resolution = 16
set_size = [1, 3]

[[data.sources]]
path = "{data}"
weight = 2.0

[[data.sources]]
path = "{data}"
format = "folder"
max_set_size = 1

[model]
source = "some/hub-id"
"""

YAML = """
train: {{output_dir: "{out}", max_steps: 7, mixed_precision: "no"}}
data:
  resolution: 16
  set_size: [1, 3]
  sources:
    - {{path: "{data}", weight: 2.0}}
    - {{path: "{data}", format: folder, max_set_size: 1}}
model: {{source: some/hub-id}}
"""


@pytest.fixture
def paths(tmp_path):
    (tmp_path / "data").mkdir()
    return {"out": str(tmp_path / "run"), "data": str(tmp_path / "data")}


def write(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_toml_and_yaml_give_the_same_config(tmp_path, paths):
    a = load_config(write(tmp_path, TOML.format(**paths)))
    b = load_config(write(tmp_path, YAML.format(**paths), "c.yaml"))
    assert a == b
    assert a.train.max_steps == 7 and a.data.sources[1].max_set_size == 1 and a.data.sources[0].weight == 2.0
    assert a.optim.learning_rate == 5e-5 and a.objective.text_dropout == 0.1  # documented defaults
    c = load_config(write(tmp_path, TOML.format(**paths)), ["train.max_steps=3", "objective.unknown_only=true"])
    assert c.train.max_steps == 3 and c.objective.unknown_only is True


@pytest.mark.parametrize(
    "edit,message",
    [
        (("max_steps = 7", "max_step = 7"), "train.max_step: unknown key (did you mean 'max_steps'?)"),
        (("max_steps = 7", 'max_steps = "7"'), "train.max_steps: expected int, got str '7'"),
        (("weight = 2.0", 'weight = "heavy"'), "data.sources[0].weight: expected float, got str 'heavy'"),
        (('mixed_precision = "no"', 'mixed_precision = "fp8"'), "train.mixed_precision: expected one of"),
        (("set_size = [1, 3]", "set_size = [3, 1]"), "data.set_size: must be [min, max]"),
        (('format = "folder"', 'format = "zip"'), "data.sources[1].format: expected one of"),
        (("[model]", "[modle]"), "modle: unknown key (did you mean 'model'?)"),
    ],
)
def test_bad_config_names_the_field(tmp_path, paths, capsys, edit, message):
    text = TOML.format(**paths).replace(*edit, 1)
    with pytest.raises(ValueError) as e:
        load_config(write(tmp_path, text))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert main(["train", "--config", str(tmp_path / "c.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jointdiff: error: ") and message in err and "\n" not in err


def test_missing_data_path_fails_at_start(tmp_path, paths, capsys):
    text = TOML.format(**paths).replace(f'path = "{paths["data"]}"\nweight', 'path = "/nonexistent/sets"\nweight')
    assert main(["train", "--config", str(write(tmp_path, text))]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "jointdiff: error: data.sources[0].path: no such file or directory: /nonexistent/sets"
    assert main(["train", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_required_fields_and_exclusive_model():
    with pytest.raises(ValueError, match=r"^train: required field missing$"):
        load_config(None)
    with pytest.raises(ValueError, match=r"model\.source: give exactly one"):
        load_config(None, ["train.output_dir='x'", "data.sources=[{path='.'}]"])


def test_every_field_documented_in_the_template():
    template = config_template()

    def walk(cls):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no documentation"
            assert f"{f.name} = " in template or f"[{f.name}]" in template or f".{f.name}]" in template, f.name
            hint = typing.get_type_hints(cls)[f.name]
            for sub in (hint, *typing.get_args(hint)):
                if dataclasses.is_dataclass(sub):
                    walk(sub)

    walk(Config)


def test_docs_and_example_configs_stay_valid(tmp_path, paths, capsys):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    docs = (root / "docs" / "training.md").read_text()
    assert f"```toml\n{config_template()}\n```" in docs  # docs/training.md lists every field as --print-config does
    examples = sorted((root / "configs").glob("*.toml"))
    assert examples
    for path in examples:
        load_config(path, check_paths=False)  # types and values valid; data paths are the user's
    assert main(["train", "--config", str(write(tmp_path, TOML.format(**paths))), "--check"]) == 2  # empty dirs
    assert "data.sources[0].path: " in (err := capsys.readouterr().err) and "no paper sets found" in err
