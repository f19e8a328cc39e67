"""One section of the service config (a YAML mapping) -> a frozen dataclass of settings.

Each section's dataclass holds its keys and their defaults (and nowhere else); its
`__post_init__` checks values and raises ConfigError with the field name as `key`.
`parse_section` checks the keys and their types, so a typo or a wrong type is an error
naming the dotted key (`mqtt.port`), the value, what is allowed and the fix, never a
silently ignored setting.

Types understood: bool, int, float (an int is accepted), str, a nested section dataclass,
dict[str, float], list[str], and any of them `| None`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from edge.errors import ConfigError
from edge.schema import number_hint

T = TypeVar("T")


def parse_section(cls: type[T], mapping: Mapping[str, Any] | None, section: str) -> T:
    """`cls(**mapping)` with every key and type checked; `section` prefixes keys in errors."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(
            f"{section} must be a mapping of keys to values, not {_shown(mapping)}: "
            f"write `{section}:` followed by indented `key: value` lines",
            key=section,
        )
    assert dataclasses.is_dataclass(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in mapping.items():
        if name not in known:
            close = difflib.get_close_matches(str(name), list(known), n=1)
            fix = f"did you mean `{close[0]}`?" if close else f"the keys are: {', '.join(known)}"
            if name == "password" and "password_file" in known:  # the advice to use password_env logged the password
                fix = (
                    "a password never goes in the config: put it in a file only the service may read "
                    "(password_file), or in an environment variable whose name password_env gives"
                )
            raise ConfigError(f"{section}.{name} is not a setting of {section}: {fix}", key=f"{section}.{name}")
        values[name] = _convert(value, hints[name], f"{section}.{name}")
    try:
        return cls(**values)
    except ConfigError as err:
        key = f"{section}.{err.key}" if err.key else section
        raise ConfigError(str(err).replace(f"{err.key} ", f"{key} ", 1) if err.key else str(err), key=key) from None


NAME = "semanticac-edge"  # the command, and the systemd unit's name (edge.service.unit)
# Where an output's file or folder cannot be written: the systemd unit (ProtectSystem=strict)
# can write only its state folder, so permissions are not the fix there.
UNWRITABLE_FIX = (
    "leave the key out (its place in the state folder), or point it at a folder the service can write: under "
    f"the systemd unit only the state folder can be, so add that folder with `systemctl edit {NAME}` "
    "([Service] ReadWritePaths=FOLDER)"
)


def invalid(key: str, value: Any, allowed: str, shown: str | None = None) -> ConfigError:
    """The error for a value that is not allowed (raise it from a section's __post_init__); `shown`: what
    it says instead of the value (one that may be a secret typed in the wrong place)."""
    return ConfigError(f"{key} {shown or _shown(value)} is not allowed: use {allowed}", key=key)


def _shown(value: Any) -> str:
    return "(empty)" if value is None else repr(value)


def _convert(value: Any, hint: Any, key: str) -> Any:
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        nested = typing.get_origin(hint) in (dict, list) or dataclasses.is_dataclass(hint)
        below = f", on the lines below `{key.rpartition('.')[2]}:` and indented deeper than it" if nested else ""
        raise invalid(key, value, _describe(hint) + below + " (leave the key out for the default)")
    errors = []
    for option in (o for o in options if o is not type(None)):
        try:
            return _convert_one(value, option, key)
        except ConfigError as err:
            errors.append(err)
    if len(errors) == 1:
        raise errors[0]
    raise invalid(key, value, _describe(hint))


def _convert_one(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return parse_section(hint, value, key)  # type: ignore[arg-type]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is dict:
        key_type, value_type = typing.get_args(hint)
        if isinstance(value, Mapping):
            return {str(k): _convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
    elif origin is list:
        (item_type,) = typing.get_args(hint)
        if isinstance(value, list):
            return [_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    else:
        raise TypeError(f"parse_section: {key} has a type it cannot read: {hint}")
    hint_text = number_hint(value) if hint in (int, float) else ""
    if hint is str and isinstance(value, (bool, int, float)):
        hint_text = (
            " (YAML reads yes, no, on, off, true and false as true or false, and digits as a number: quote a text)"
        )
    raise invalid(key, value, _describe(hint) + hint_text)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _describe(hint: Any) -> str:
    if _is_union(hint):
        return " or ".join(_describe(o) for o in typing.get_args(hint) if o is not type(None))
    if dataclasses.is_dataclass(hint):
        return "a mapping of its keys"
    origin = typing.get_origin(hint)
    if origin is dict:
        return f"a mapping of names to {_plural(typing.get_args(hint)[1])}"
    if origin is list:
        return f"a list of {_plural(typing.get_args(hint)[0])}"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a text"}.get(hint, str(hint))


def _plural(hint: Any) -> str:
    """ "a number" -> "numbers": what a mapping's values or a list's items are."""
    one = _describe(hint)
    return one.removeprefix("a ") + "s" if one.startswith("a ") and " or " not in one else one
