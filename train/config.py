"""Config machinery: dataclasses hold the fields, commented YAML files hold the values.

Only builders read configs. `from_dict` fills a dataclass from plain data (YAML, a
checkpoint) and fails on an unknown key or a wrong type, naming the key and the file;
`to_dict` is its inverse; `read_config_yaml` reads a shipped or local YAML, `extends:` included.
The schemas live beside their readers: ModelConfig in train/model/config.py, the recipe's
TrainConfig in train/recipe.py.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from importlib import resources
from pathlib import Path

import yaml

from edge.schema import unbuildable_error, undecodable


class ConfigError(ValueError):
    """A config file or mapping that does not fit its schema."""


def _check(value, hint, where: str):
    """`value` converted to the type `hint`, or ConfigError naming `where`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors, fitting = [], []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
                if _same_shape(value, arg):  # a list entry's own error, not "must be a mapping"
                    fitting.append(str(err))
        raise ConfigError((fitting or errors)[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        inner = args[0] if args else typing.Any
        return tuple(_check(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if hint is typing.Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as text
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def _same_shape(value, hint) -> bool:
    """Whether `value` is the kind of container `hint` is (a list for a tuple, a mapping for a
    dataclass or dict): the candidate of a Union whose error says what is wrong inside it."""
    if typing.get_origin(hint) is tuple:
        return isinstance(value, (list, tuple))
    return isinstance(value, dict) and (dataclasses.is_dataclass(hint) or hint is dict or typing.get_origin(hint) is dict)


def from_dict(cls, data, where: str = "config"):
    """An instance of dataclass `cls` from a mapping; unknown keys and wrong types fail."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [key for key in data if key not in names]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(names)}")
    values = {key: _check(value, hints[key], f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def to_dict(config) -> dict:
    """Plain data (lists, not tuples) that from_dict reads back and YAML/JSON can hold."""
    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def read_config_yaml(path: str | Path, folder: str, what: str, chain: tuple[Path, ...] = ()) -> tuple[Path, dict]:
    """(path, mapping) of a config YAML; a bare name looks in the shipped configs/<folder>/.

    `extends: BASE` (a name, or a file beside this one) starts from BASE's mapping and puts this
    file's keys over it: a mapping over a mapping merges key by key (optim, augment, frontend,
    ...) unless it names another `kind` (a new head's options replace the old head's); anything
    else replaces (a `data` list is replaced whole).
    """
    path = Path(path)
    if not path.is_file() and len(path.parts) == 1:
        shipped = Path(str(resources.files("edge.configs") / folder / path.with_suffix(".yaml").name))
        path = shipped if shipped.is_file() else path
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except UnicodeDecodeError as err:
        raise ConfigError(f"cannot read {what} {path}: {undecodable(err, path.read_bytes())}") from None
    except OSError as err:
        named = f" (named by `extends:` in {chain[-1]})" if chain else ""
        shipped_names = sorted(p.stem for p in Path(str(resources.files("edge.configs") / folder)).glob("*.yaml"))
        close = difflib.get_close_matches(path.stem, shipped_names, n=1) if len(path.parts) == 1 else []
        hint = (f": did you mean {close[0]}?" if close
                else f"; a bare name is one of the shipped {what}s: {', '.join(shipped_names)}"
                if len(path.parts) == 1 else "")
        raise ConfigError(f"cannot read {what} {path}{named}: {err.strerror or err}{hint}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except ValueError as err:  # a value the safe loader cannot build: a date that is none (2026-02-30)
        raise ConfigError(unbuildable_error(err, str(path), text)) from None
    if not isinstance(data, dict) or "extends" not in data:
        return path, data or {}
    if path.resolve() in chain:
        raise ConfigError(f"{path}: extends {data['extends']!r} makes a loop: "
                          f"{' -> '.join(str(p) for p in chain + (path,))}")
    base = Path(str(data.pop("extends")))
    beside = path.parent / base.with_suffix(".yaml")
    _, merged = read_config_yaml(beside if beside.is_file() else base, folder, what, chain + (path.resolve(),))
    for key, value in data.items():
        old = merged.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and value.get("kind", old.get("kind")) == old.get("kind"):
            value = {**old, **value}
        merged[key] = value
    return path, merged
