"""Typed configuration: one loader for every config dataclass (train, S3, DreamBooth, DreamBlend, VAE).

A config is a tree of dataclasses. A file (TOML, YAML or JSON), ``--set a.b=VALUE`` overrides and
command-line options all become one through :func:`from_dict`, which checks every value against its
annotation and names the field in one-line errors (``train.max_steps: expected int, got str 'ten'``).
Each dataclass checks its own values in ``__post_init__`` with ``ValueError("field: problem")``;
the loader puts the path of the table in front (``data.set_size: must be [min, max] ...``).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

# Precision names a config or a command line may use, and the torch dtype each means.
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def torch_dtype(name: str | None) -> torch.dtype | None:
    """The torch dtype a precision name means (None: keep the stored dtype)."""
    if name is None:
        return None
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    import torch

    return getattr(torch, DTYPES[name])


def doc(text: str, choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Field metadata holding the field's one-line documentation (and, for a string field, its allowed values)."""
    return {"doc": text} if choices is None else {"doc": text, "choices": choices}


# ----------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _parse(tp: Any, value: Any, where: str) -> Any:
    """``value`` checked against the annotation ``tp`` (recursively for dataclasses, lists and tuples)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse(inner[0], value, where)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: expected one of {', '.join(repr(a) for a in args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if origin is list:
            return [_parse(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{where}: expected {len(args)} values, got {len(value)}: {list(value)!r}")
        return tuple(_parse(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a table (dict), got {type(value).__name__} {value!r}")
        return dict(value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp)
    if ok is None:
        raise TypeError(f"{where}: unsupported annotation {tp}")
    if not ok:
        raise ValueError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return float(value) if tp is float else value


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Dataclass ``cls`` from a mapping: unknown keys, missing fields, wrong types and bad values raise ValueError."""
    label = where or "config"
    if not isinstance(data, Mapping):
        raise ValueError(f"{label}: expected a table (dict), got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{where}." if where else ""
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(fields)})"
            raise ValueError(f"{prefix}{key}: unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        path = prefix + name
        if name in data:
            kwargs[name] = _parse(hints[name], data[name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{path}: required field missing")
        elif dataclasses.is_dataclass(hints[name]) and f.default_factory is not dataclasses.MISSING:
            kwargs[name] = from_dict(hints[name], {}, path)  # a default table is checked like a given one
    try:
        return cls(**kwargs)
    except ValueError as e:  # the dataclass's own checks ("field: problem"): name the table
        raise ValueError(f"{prefix}{e}") from None


def from_args(cls: type[T], args: argparse.Namespace | Mapping[str, Any]) -> T:
    """Dataclass ``cls`` from command-line options: the fields given (not None), the defaults for the rest."""
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return from_dict(cls, {k: v for k, v in values.items() if k in names and v is not None})


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, names: list[str], flags: Mapping[str, str] | None = None
) -> None:
    """One command-line option per field ``names`` of dataclass ``cls``, in that order: ``--field-name`` (or
    ``flags[name]``, its value then named after the flag) with the field's type, default and choices (a
    ``Literal`` or the metadata's), its documentation as help. Read back with :func:`from_args`."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in names:
        f, tp = fields[name], hints[name]
        if f.default is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{name}: an option needs a plain default")
        if typing.get_origin(tp) in (typing.Union, types.UnionType):  # X | None: an option left out is None
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        choices = f.metadata.get("choices") or (typing.get_args(tp) if typing.get_origin(tp) is Literal else None)
        if tp not in (int, float, str) and choices is None:
            raise TypeError(f"{cls.__name__}.{name}: no command-line option for {_type_name(tp)}")
        flag = (flags or {}).get(name, "--" + name.replace("_", "-"))
        kwargs: dict[str, Any] = {"dest": name, "default": f.default, "help": f.metadata.get("doc")}
        if flag != "--" + name.replace("_", "-"):
            kwargs["metavar"] = flag.lstrip("-").replace("-", "_").upper()
        if choices is not None:
            kwargs["choices"] = list(choices)
        elif tp is not str:
            kwargs["type"] = tp
        parser.add_argument(flag, **kwargs)


# ----------------------------------------------------------------------------- files and overrides


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli

    return tomli


def _parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=VALUE`` -> (["a", "b"], value); VALUE is a TOML value, or else a plain string."""
    if "=" not in item:
        raise ValueError(f"--set {item}: expected KEY=VALUE (e.g. train.max_steps=100)")
    key, raw = item.split("=", 1)
    try:
        value = _toml().loads(f"v = {raw}")["v"]
    except Exception:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a raw config dict (before it is built, so typos are still caught)."""
    for item in overrides:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item}: '{k}' is not a table")
        node[keys[-1]] = value
    return data


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw dict of a .toml, .yaml/.yml or .json config file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = _toml().loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as e:
                raise ValueError(f"{path}: YAML configs need pyyaml (pip install pyyaml), or use TOML") from e
            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"{path}: unknown config format '{suffix}' (use .toml, .yaml or .json)")
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: cannot parse: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a table")
    return data


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Read a config file (or nothing), apply ``--set`` overrides and build ``cls``."""
    data = read_config_file(path) if path is not None else {}
    return from_dict(cls, apply_overrides(data, overrides or []))


# ----------------------------------------------------------------------------- documentation


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "REQUIRED"


def _table(cls: type, name: str, lines: list[str]) -> None:
    """One TOML table: every field with its default and documentation, then its sub-tables."""
    hints = typing.get_type_hints(cls)
    lines.append(f"[{name}]  # {(cls.__doc__ or '').strip()}")
    nested, arrays = [], []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        sub = [a for a in (hint, *args) if dataclasses.is_dataclass(a)]
        if sub and typing.get_origin(hint) is list:
            arrays.append((sub[0], f"{name}.{f.name}"))
            continue
        if sub:
            nested.append((sub[0], f"{name}.{f.name}"))
            continue
        value = _default(f)
        prefix = "# " if value is None or value == "REQUIRED" or (isinstance(value, dict) and not value) else ""
        shown = "REQUIRED" if value == "REQUIRED" else ("(unset)" if value is None else _toml_value(value))
        lines.append(f"{prefix}{f.name} = {shown}  # {f.metadata['doc']}")
    lines.append("")
    for item, path in arrays:
        entry = path.rsplit(".", 1)[-1].removesuffix("s")  # [[data.sources]]: one table per source
        lines.append(f"[[{path}]]  # " + (item.__doc__ or "").strip().rstrip(".") + f"; one table per {entry}")
        for f in dataclasses.fields(item):
            value = _default(f)
            shown = "(unset)" if value is None else (value if value == "REQUIRED" else _toml_value(value))
            lines.append(f"{'# ' if value in (None, 'REQUIRED', '') else ''}{f.name} = {shown}  # {f.metadata['doc']}")
        lines.append("")
    for item, path in nested:
        _table(item, path, lines)


def template(cls: type, title: str) -> str:
    """Every field of the config tree ``cls`` with its default and documentation, as a commented TOML file."""
    lines = [f"# {title}: every field, its default and what it does.", ""]
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        _table(hints[f.name], f.name, lines)
    return "\n".join(lines)
