"""One reader for the JSON and YAML files that edge reads: model.json, tokenizer/config.json,
engine sidecars, the demo scene sidecar (and the wording of the label-set YAML's line-numbered
errors). It checks what every such file needs: a mapping at the top, required fields, their
types (a bool is never a number), positive numbers, lists of text, one-of choices, the format
version, unknown keys. Every error names the file, the field, the value, what is allowed and
the fix the reader passes:

    fields = Fields(read_json(path, BundleError), "model.json", BundleError, fix="re-export the bundle")
    fields.unknown(KNOWN)
    scale = fields.positive("logit_scale", "a positive multiplier")
    -> BundleError("model.json: field 'logit_scale' must be a positive multiplier, got -3: re-export the bundle")
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, overload

MISSING: Any = object()  # no default: the field is required
NUMBER = (int, float)


def must_be(what: str, value: object) -> str:
    """The tail every type or value error shares: "must be <what>, got <value>" (YAML's null, an
    entry or key left empty, is said so: "got nothing (it is empty)", not "got None")."""
    return f"must be {what}, got " + ("nothing (it is empty)" if value is None else repr(value))


def unknown_keys(keys: Iterable[str], allowed: Iterable[str], word: str = "field", context: str = "") -> str:
    """ "unknown field 'x' (for kind 'y'): allowed fields are [...]" (plural for several)."""
    keys, allowed = sorted(keys), sorted(allowed)
    named = f"{word} {keys[0]!r}" if len(keys) == 1 else f"{word}s {keys}"
    near = difflib.get_close_matches(str(keys[0]), allowed, n=1) if len(keys) == 1 else []
    guess = f"did you mean {near[0]!r}? " if near else ""
    return f"unknown {named}{f' {context}' if context else ''}: {guess}allowed {word}s are {allowed}"


# PyYAML's problem (its start) -> what a person who wrote the file usually did, and the fix.
_YAML_HINTS = (
    ("found character '\\t'", "a tab: YAML indents with spaces only; replace the tab with spaces"),
    (
        "mapping values are not allowed",
        "a text holding ': ' must be quoted (name: \"alarm: fire\"), or this line is indented deeper than its section",
    ),
    ("could not find expected ':'", "a key needs ': ' after it, or a quote on this line is not closed"),
    ("expected ',' or '}'", "a { is not closed with }"),
    ("expected ',' or ']'", "a [ is not closed with ]"),
    ("found unexpected end of stream", "a quote is not closed"),
    ("expected <block end>", "the items of one list or section must start in the same column"),
    ("found undefined alias", "a * starts an alias in YAML: quote the text"),
    ("found character '@'", "a text starting with @ or ` must be quoted"),
    ("found character '`'", "a text starting with @ or ` must be quoted"),
)


def undecodable(err: UnicodeDecodeError, data: bytes) -> str:
    """ "line 4 is not UTF-8 (byte 0xfc): save the file as UTF-8 ..." for a file that is not."""
    line = data[: err.start].count(b"\n") + 1
    return f"line {line} is not UTF-8 (byte 0x{data[err.start]:02x}): save the file as UTF-8 in your editor"


def unbuildable_error(err: ValueError, source: str, text: str) -> str:
    """The message for a YAML document that parses but that the safe loader cannot build (a date that is
    none: 2026-02-30; yaml.safe_load raises a bare ValueError): the file, line and value, and the fix."""
    import yaml

    def first(node: Any) -> Any:  # the first scalar that cannot be built
        if isinstance(node, yaml.ScalarNode):
            try:
                yaml.SafeLoader("").construct_object(node)
            except ValueError:
                return node
            return None
        children = node.value if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)) else []
        items = (item for child in children for item in (child if isinstance(child, tuple) else (child,)))
        return next((found for item in items if (found := first(item)) is not None), None)

    node = first(yaml.compose(text, Loader=yaml.SafeLoader))
    where = f"{source}:{node.start_mark.line + 1}: {node.value!r}" if node is not None else source
    return f"{where}: YAML cannot read it ({err}): quote it to make it text"


def yaml_error(err: Exception, source: str, text: str) -> str:
    """ "FILE:LINE: not valid YAML: <problem> (line 'the line'): <usual cause and fix>" for a
    PyYAML error: the line is the one the problem starts on (an unclosed quote's opening line, not
    the end of the file)."""
    if getattr(err, "character", None) is not None and getattr(err, "position", None) is not None:  # a ReaderError
        line = text[: err.position].count("\n") + 1  # type: ignore[attr-defined]
        character = err.character  # type: ignore[attr-defined]
        shown = chr(character) if isinstance(character, int) else character
        return (
            f"{source}:{line}: not valid YAML: the character {shown!r} is not allowed in YAML: delete it (a copy "
            "from a document or a terminal can bring it)"
        )
    problem = str(getattr(err, "problem", None) or err)
    mark = getattr(err, "problem_mark", None)
    context_mark = getattr(err, "context_mark", None)
    if context_mark is not None and ("end of stream" in problem or "<stream end>" in problem):
        mark = context_mark  # the quote or bracket that was opened and never closed
    if mark is None:
        return f"{source}: not valid YAML: {problem}"
    lines = text.splitlines()
    shown = lines[mark.line].strip() if mark.line < len(lines) else ""
    hint = next((fix for start, fix in _YAML_HINTS if problem.startswith(start)), "")
    return (
        f"{source}:{mark.line + 1}: not valid YAML: {problem}"
        + (f" (line {mark.line + 1}: {shown!r})" if shown else "")
        + (f": {hint}" if hint else "")
    )


def yaml_float(number: float) -> str:
    """A number as YAML 1.1 reads one: an exponent needs a dot before it and a sign (1.0e-05, not 1e-05)."""
    text = f"{number:g}"
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return text


UNIT = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+))\s*([a-zA-Z]{1,8})")  # "10s", "0.5 sec", "10MB": a number and its unit


def number_hint(value: object) -> str:
    """Why a text that reads as a number to a person is not one to YAML, and the fix."""
    if not isinstance(value, str):
        return ""
    text = value.strip()
    if text.endswith("%"):
        try:
            return f" (write a share as a number: {float(text[:-1]) / 100:g}, not {text})"
        except ValueError:
            return ""
    try:
        number = float(text)
    except ValueError:
        unit = UNIT.fullmatch(text)
        if unit is None or unit[2] in ("e", "E"):  # 1e: an exponent cut short, not a unit
            return ""
        return (
            f" (write a plain number in the key's own unit, as its name or comment says, without {unit[2]!r}: "
            "500 ms for a key in seconds is 0.5)"
        )
    if not math.isfinite(number):  # YAML's are .inf and .nan; none is a usable value here
        return " (a finite number is needed)"
    if "e" in text.lower():  # YAML 1.1 reads 7e-1 and 5.0e1 as text: its exponent needs a dot and a sign
        return f" (YAML reads {text} as text: write {yaml_float(number)})"
    return f" (a number in quotes is text to YAML: write {text} without quotes)"


def is_kind(value: object, kinds: type | tuple[type, ...]) -> bool:
    """isinstance, except that a bool is not an int unless bool is asked for."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


def read_json(path: str | Path, error: type[Exception], fix: str | None = None, what: str = "") -> object:
    """The JSON content of `path`; `error` naming the file (`what` it is) and the fix when it
    cannot be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"cannot read {what + ' ' if what else ''}{path}: {err}" + (f": {fix}" if fix else "")) from None


class Fields:
    """The fields of one mapping read from a file (`where` names it in every message)."""

    def __init__(
        self, data: object, where: str, error: type[Exception], fix: str | None = None, what: str = "a JSON object"
    ):
        self.where, self.error, self.fix = where, error, fix
        if not isinstance(data, dict):
            raise self.fail(f"must hold {what}, got {type(data).__name__}")
        self.data: dict = data

    def fail(self, message: str) -> Exception:
        return self.error(f"{self.where}: {message}" + (f": {self.fix}" if self.fix else ""))

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def unknown(self, allowed: Iterable[str], context: str = "") -> None:
        allowed = set(allowed)
        extra = set(self.data) - allowed
        if extra:
            raise self.fail(unknown_keys(extra, allowed, context=context))

    def get(self, name: str, kinds: type | tuple[type, ...], what: str, default: Any = MISSING) -> Any:
        """A required field (or `default` when absent) of one of `kinds`."""
        if name not in self.data:
            if default is not MISSING:
                return default
            raise self.fail(f"missing field {name!r} ({what})")
        value = self.data[name]
        if not is_kind(value, kinds):
            raise self.fail(f"field {name!r} {must_be(what, value)}")
        return value

    def text(self, name: str, what: str, default: Any = MISSING) -> str:
        value = self.get(name, str, what, default)
        if value is not default and not value.strip():
            raise self.fail(f"field {name!r} {must_be(what, value)}")
        return value

    def positive(self, name: str, what: str, kinds: type | tuple[type, ...] = NUMBER, default: Any = MISSING):
        value = self.get(name, kinds, what, default)
        if value is not default and not value > 0:
            raise self.fail(f"field {name!r} {must_be(what, value)}")
        return value

    def names(self, name: str, what: str = "a non-empty list of names") -> tuple[str, ...]:
        """A non-empty list of non-empty strings."""
        value = self.get(name, list, what)
        if not value or not all(isinstance(v, str) and v for v in value):
            raise self.fail(f"field {name!r} {must_be(what, value)}")
        return tuple(value)

    def choice(self, name: str, choices: Iterable[str], default: Any = MISSING) -> str:
        choices = list(choices)
        value = self.data.get(name, default)
        if value is MISSING:
            raise self.fail(f"missing field {name!r} (one of {choices})")
        if value not in choices:
            raise self.fail(f"field {name!r} {must_be(f'one of {choices}', value)}")
        return value

    @overload
    def nested(self, name: str, what: str) -> Fields: ...

    @overload
    def nested(self, name: str, what: str, default: None) -> Fields | None: ...

    def nested(self, name: str, what: str, default: Any = MISSING) -> Fields | None:
        """The mapping under `name` as Fields of its own ("model.json audio: ..."); `default` when absent."""
        value = self.get(name, dict, what, default)
        return value if value is default else Fields(value, f"{self.where} {name}", self.error, self.fix)

    def version(self, supported: int, newer_fix: str, older_fix: str, name: str = "format_version") -> int:
        """`format_version`, refused with the fix for a newer or an older file than this reader."""
        value = self.get(name, int, "an integer")
        if value != supported:
            fix = newer_fix if value > supported else older_fix
            raise self.error(
                f"{self.where}: {name} {value} is not supported (this semanticac-edge reads version {supported}): {fix}"
            )
        return value

    def problems(self, spec: dict[str, tuple[type | tuple[type, ...], str]]) -> list[str]:
        """Every missing or mistyped field of `spec` {name: (kinds, what)}, for readers that
        report all at once instead of raising at the first."""
        missing = [name for name in spec if name not in self.data]
        found = [f"missing field(s) {missing}"] if missing else []
        return found + [
            f"field {name!r} {must_be(what, self.data[name])}"
            for name, (kinds, what) in spec.items()
            if name in self.data and not is_kind(self.data[name], kinds)
        ]
