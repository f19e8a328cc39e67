"""Label sets: free-text classes in a YAML file, validated with errors that give the line.

    name: urban                          # file-name safe; the embeddings are labels/<name>.npz
    prompt: "an audio clip of {label}"   # optional, this is the default ({label}: the name, _ -> space)
    threshold: 0.5                       # optional default for every label
    calibration: {temperature: 1.3, new_labels: true}   # optional: logits / T (semanticac-calibrate
                                         # scores); new_labels: T and the biases reach the labels
                                         # no one trained too (scores writes it; without it they do not)
    fitted_for: {window: 5, hop: 1, smooth: 3, min_duration: 1, release: 0.7, hold: 0}   # optional: the
                                         # listen settings the thresholds were fitted under (listen warns
                                         # when it runs others; semanticac-calibrate thresholds writes it)
    fitted_model: semanticac-yamnet-c91b24129906b541   # optional: the model (model.json model_id) the
                                         # thresholds and calibration were fitted on (semanticac-calibrate
                                         # writes it; listen warns when its bundle is another model)
    agree: 0.5                           # optional: an event of a trained label needs the student alone
                                         # at this score (default: the bundle's model.json
                                         # vocabulary.head.agree; 0: no agreement; only with a head)
    labels:
      - dog_bark                         # a bare name ...
      - name: siren                      # ... or a mapping
        prompts: ["an ambulance siren wailing"]   # extra phrasings, averaged with the template's
        threshold: 0.6                   # score that starts an event (default: the set's)
        group: traffic                   # free text, for sinks and dashboards
        bias: -0.4                       # optional: added to the label's logit (calibration)
        agree: 0                         # optional: this label's agreement (default: the set's)

A new label is a YAML edit: the device embeds it itself with the bundle's text tower.
`labels_sha256` covers only the label names and their prompt texts, so editing a
threshold, a group or the calibration never makes cached embeddings stale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import string
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from edge.errors import LabelSetError
from edge.fsutil import looked_at
from edge.schema import NUMBER, is_kind, must_be, number_hint, undecodable, unknown_keys, yaml_error

log = logging.getLogger(__name__)
DEFAULT_PROMPT = "an audio clip of {label}"  # the paper's best prompt (Table 4)
DEFAULT_THRESHOLD = 0.5
NAME_LENGTH = 64
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SET_KEYS = {
    "name": "str",
    "extends": "str",
    "prompt": "str",
    "threshold": "number",
    "description": "str",
    "labels": "list",
    "calibration": "mapping",
    "agree": "number",
    "fitted_for": "mapping",
    "fitted_model": "str",
}
# the listen settings a set's thresholds were fitted under (semanticac-calibrate thresholds writes them)
FITTED_KEYS = {
    "window": "number",
    "hop": "number",
    "smooth": "number",
    "min_duration": "number",
    "release": "number",
    "hold": "number",
    "min_level": "number",
}
FITTED_RANGES = {  # what listen runs with (edge.listen.ListenOptions)
    "window": ("a number of seconds > 0", lambda v: v > 0),
    "hop": ("a number of seconds > 0", lambda v: v > 0),
    "smooth": ("a whole number of windows >= 1", lambda v: v >= 1 and float(v).is_integer()),
    "min_duration": ("a number of seconds >= 0", lambda v: v >= 0),
    "release": ("a ratio in (0, 1]", lambda v: 0 < v <= 1),
    "hold": ("a number of seconds >= 0", lambda v: v >= 0),
    "min_level": ("a level in dBFS <= 0", lambda v: v <= 0),
}
LABEL_KEYS = {
    "name": "str",
    "text": "str",
    "prompts": "list of str",
    "threshold": "number",
    "group": "str",
    "bias": "number",
    "agree": "number",
}
CALIBRATION_KEYS = {"temperature": "number", "new_labels": "bool"}


@dataclass(frozen=True)
class Label:
    name: str
    prompts: tuple[str, ...]  # every text embedded for this label: the template's first, then extras
    threshold: float
    group: str | None = None
    bias: float = 0.0  # added to this label's logit after the temperature (semanticac-calibrate scores)
    agree: float | None = None  # the student alone must score it this much for an event (None: the set's)
    text: str | None = None  # what the text tower reads for it instead of its name (a name in another language)
    own_threshold: bool = False  # its YAML gives it a `threshold:` (calibrate writes one for every label it fits)

    @property
    def reads(self) -> str:
        """The words the label is read as: its `text`, else its name."""
        return self.text or self.name


@dataclass(frozen=True)
class LabelSet:
    name: str
    prompt: str
    labels: tuple[Label, ...]
    source: str = "<memory>"  # the YAML file it was read from
    description: str | None = None
    shipped: bool = False  # one of the sets installed with the package (configs/labels/)
    temperature: float = 1.0  # logits are divided by it before the per-label bias (calibration)
    agree: float | None = None  # the labels' agreement where they set none (None: the bundle's)
    fitted_for: dict[str, float] | None = None  # the listen settings its thresholds were fitted under
    fitted_model: str | None = None  # the model_id its thresholds and calibration were fitted on
    # the calibration reaches the labels no one trained (calibration.new_labels: calibrate scores
    # writes it since it fits them); an older calibration was fitted for the trained labels only
    calibrated_new: bool = False

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.labels]

    @property
    def reads(self) -> list[str]:
        """What each label is read as (its `text`, else its name): what names a trained label."""
        return [label.reads for label in self.labels]

    def find(self, name: str) -> str | None:
        """The set's own name for `name`, compared as the set compares its names (ignoring case and
        '_' vs ' ': `crying_baby` is `Crying baby`), or None when the set has no such label."""
        key = label_key(name)
        return next((own for own in self.names if label_key(own) == key), None)

    def unknown_label_hint(self, name: str) -> str:
        """What to say of a name the set does not have: the nearest of its names, then all of them."""
        import difflib

        near = difflib.get_close_matches(label_key(name), [label_key(own) for own in self.names], n=1, cutoff=0.6)
        guess = next((own for own in self.names if near and label_key(own) == near[0]), None)
        return (f"did you mean {guess!r}? " if guess else "") + f"its labels are: {', '.join(self.names)}"

    def agreement(self, override: float | None = None, default: float | None = None) -> list[float | None]:
        """Each label's agreement: `override` (listen --agree) over the label's over the set's;
        `default` where none of them sets one (the bundle's model.json vocabulary.head.agree: None
        leaves it to the scorer, which applies it)."""
        if override is not None:
            return [float(override)] * len(self.labels)
        own = (self.agree if label.agree is None else label.agree for label in self.labels)
        return [default if a is None else a for a in own]

    def flat_prompts(self) -> tuple[list[str], list[int]]:
        """All prompt texts, flat, and the index of the label each belongs to."""
        prompts: list[str] = []
        owner: list[int] = []
        for i, label in enumerate(self.labels):
            prompts += label.prompts
            owner += [i] * len(label.prompts)
        return prompts, owner

    @property
    def sha256(self) -> str:
        """Identity of what gets embedded: names and prompt texts (not thresholds or groups)."""
        content = [[label.name, list(label.prompts)] for label in self.labels]
        blob = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()


def label_text(name: str) -> str:
    """The words a label name stands for: underscores become spaces."""
    return " ".join(name.replace("_", " ").split())


def label_key(name: str) -> str:
    """What two label names are compared by: their words, ignoring case and how Unicode composes them
    (an editor that saves `café` decomposed, e + combining accent, as macOS names files)."""
    return unicodedata.normalize("NFC", label_text(name)).casefold()


# ---------------------------------------------------------------------------------------------
# Parsing: walk the YAML node tree so every error can name its line.


EXTENDS_DEPTH = 4  # a set extends one that extends one ...: deeper is almost surely a loop


class _Parser:
    def __init__(self, source: str, loader: yaml.SafeLoader, depth: int = 0):
        self.source = source
        self.loader = loader
        self.depth = depth

    def fail(self, node: yaml.Node | None, where: str, message: str) -> LabelSetError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return LabelSetError(f"{self.source}{line}: {where}: {message}")

    def value(self, node: yaml.Node, where: str, kind: str):
        """The Python value of a node, checked against `kind` (str, number, list, list of str)."""
        if kind in ("list", "list of str"):
            if not isinstance(node, yaml.SequenceNode):
                raise self.fail(node, where, f"must be a list, got {self._show(node)}")
            if kind == "list":
                return node.value
            return [self.value(item, f"{where}[{i}]", "str") for i, item in enumerate(node.value)]
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, where, f"must be a {kind}, got {self._show(node)}")
        value = self.construct(node, where)
        if kind == "bool":
            if not isinstance(value, bool):
                raise self.fail(node, where, must_be("true or false", value))
            return value
        if kind == "str":
            if not isinstance(value, str) or not value.strip():
                quote = f" (YAML reads {node.value} as {value!r}, not text: quote it, '{node.value}')"
                typed = value is not None and not isinstance(value, str) and node.style is None
                raise self.fail(node, where, must_be("a non-empty text", value) + (quote if typed else ""))
            return value.strip()
        if not is_kind(value, NUMBER):
            raise self.fail(node, where, must_be("a number", value) + number_hint(value))
        return float(value)

    def construct(self, node: yaml.ScalarNode, where: str):
        """The Python value of a scalar. What the safe loader cannot build is an error that names its
        line: a tag (!foo), a merge key (<<: *anchor), a date that is none (2026-02-30)."""
        try:
            return self.loader.construct_object(node)
        except (yaml.YAMLError, ValueError) as err:
            if node.tag == "tag:yaml.org,2002:merge":
                why = "is a YAML merge key, which a label set does not read: write each key out"
            elif isinstance(err, yaml.YAMLError):
                why = f"has the YAML tag {node.tag!r}, which a label set does not read: remove the tag"
            else:
                why = f"cannot be read ({err}): quote it to make it text, '{node.value}'"
            raise self.fail(node, where, f"{node.value!r} {why}") from None

    def mapping(self, node: yaml.Node, where: str, allowed: dict) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, where, f"must be a mapping with keys {sorted(allowed)}, got {self._show(node)}")
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, where, f"a key must be a word, got {self._show(key_node)}")
            key = self.construct(key_node, where)
            if key not in allowed:
                colon = ""
                if "name" in allowed and len(node.value) == 1 and isinstance(value_node, yaml.ScalarNode):
                    colon = (
                        f" (the ':' after {key!r} makes this item a mapping: "
                        + (
                            f"write - {key}"
                            if not value_node.value
                            else f'quote the label, - "{key}: {value_node.value}"'
                        )
                        + ")"
                    )
                raise self.fail(key_node, where, unknown_keys([key], allowed, word="key") + colon)
            if key in out:
                raise self.fail(key_node, where, f"key {key!r} appears twice")
            out[key] = value_node
        return out

    def threshold(self, node: yaml.Node, where: str) -> float:
        value = self.value(node, where, "number")
        if not 0.0 < value <= 1.0:
            raise self.fail(node, where, f"{value:g} is not a score: a threshold must be in (0, 1]")
        return value

    def agree(self, keys: dict[str, yaml.Node], where: str) -> float | None:
        if "agree" not in keys:
            return None
        value = self.value(keys["agree"], where, "number")
        if not 0.0 <= value <= 1.0:
            raise self.fail(
                keys["agree"],
                where,
                f"{value:g} is not a score: the student's agreement is in [0, 1] (0: an event needs none)",
            )
        return value

    @staticmethod
    def _show(node: yaml.Node) -> str:
        kinds: dict[type[yaml.Node], str] = {yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list"}
        return kinds.get(type(node), repr(node.value))

    def label_set(self, root: yaml.Node | None) -> LabelSet:
        if root is None:
            raise self.fail(None, "file", "is empty: a label set needs `name` and `labels`")
        if isinstance(root, yaml.ScalarNode):  # not quoted: the wrong file named may hold a password or a key
            raise self.fail(
                root,
                "file",
                f"is {len(root.value)} characters of text, not a label set (YAML with `name:` and `labels:`): "
                "is it the file you meant?",
            )
        keys = self.mapping(root, "label set", SET_KEYS)
        for required in ("name", "labels"):
            if required not in keys:
                raise self.fail(root, "label set", f"missing key {required!r}")
        name = self.value(keys["name"], "name", "str")
        if len(name) > NAME_LENGTH:
            raise self.fail(keys["name"], "name", f"{name!r} is {len(name)} characters: use at most {NAME_LENGTH}")
        if not NAME_PATTERN.match(name):
            raise self.fail(
                keys["name"],
                "name",
                f"{name!r} is not allowed: use letters, digits, '_', '-', '.', beginning with a letter or a digit "
                "(it names the embeddings file labels/<name>.npz)",
            )
        base = self.extends(keys["extends"]) if "extends" in keys else None
        inherited_prompt = base.prompt if base is not None else DEFAULT_PROMPT
        prompt = (
            unicodedata.normalize("NFC", self.value(keys["prompt"], "prompt", "str"))
            if "prompt" in keys
            else inherited_prompt
        )
        if _template_error(prompt):
            raise self.fail(
                keys.get("prompt"),
                "prompt",
                f"{prompt!r} must contain {{label}}, as written (no index, attribute, conversion or format), and no "
                'other {...} field, e.g. "an audio clip of {label}"',
            )
        default = self.threshold(keys["threshold"], "threshold") if "threshold" in keys else DEFAULT_THRESHOLD
        description = self.value(keys["description"], "description", "str") if "description" in keys else None
        items = self.value(keys["labels"], "labels", "list")
        if not items:
            raise self.fail(keys["labels"], "labels", "is empty: list at least one label")
        # one template for every label of a set, the base set's too (its first prompt is the template's)
        labels: list[Label] = [
            dataclasses.replace(
                label, prompts=tuple(dict.fromkeys([prompt.format(label=label_text(label.reads)), *label.prompts[1:]]))
            )
            for label in (base.labels if base is not None else ())
        ]
        inherited = {label_key(label.name): k for k, label in enumerate(labels)}
        seen: dict[str, tuple[int, int]] = {}  # casefolded name -> (index, line)
        for i, item in enumerate(items):
            label = self.label(item, f"labels[{i}]", prompt, default)
            key = label_key(label.name)
            if key in inherited and key not in seen:  # a label of the base set, given again: this one counts
                labels[inherited[key]] = label
                seen[key] = (i, item.start_mark.line + 1)
                continue
            if key in seen:
                j, line = seen[key]
                raise self.fail(
                    item,
                    f"labels[{i}]",
                    f"{label.name!r} duplicates labels[{j}] (line {line}): "
                    "names are compared ignoring case, '_' vs ' ' and how accents are composed (NFC)",
                )
            seen[key] = (i, item.start_mark.line + 1)
            labels.append(label)
        temperature, calibrated_new = self.calibration(keys["calibration"]) if "calibration" in keys else (1.0, False)
        return LabelSet(
            name=name,
            prompt=prompt,
            labels=tuple(labels),
            source=self.source,
            description=description,
            temperature=temperature,
            agree=self.agree(keys, "agree"),
            fitted_for=self.fitted_for(keys["fitted_for"]) if "fitted_for" in keys else None,
            fitted_model=self.value(keys["fitted_model"], "fitted_model", "str") if "fitted_model" in keys else None,
            calibrated_new=calibrated_new,
        )

    def extends(self, node: yaml.Node) -> LabelSet:
        """The set `extends:` names: a shipped one by name, or a file (relative: to this file's folder)."""
        spec = self.value(node, "extends", "str")
        if self.depth >= EXTENDS_DEPTH:
            raise self.fail(node, "extends", f"{spec!r}: sets extend each other {EXTENDS_DEPTH} deep: is it a loop?")
        shipped = shipped_label_sets()
        bare = spec.removesuffix(".yaml")
        if not _is_path(spec) and bare in shipped:
            return load_label_set(shipped[bare], shipped=True, depth=self.depth + 1)
        path = Path(spec).expanduser()
        if not path.is_absolute() and self.source not in ("<string>", "<memory>"):
            path = Path(self.source).parent / path
        if not path.is_file():
            what = "a directory, not" if path.is_dir() else "neither a shipped set nor"
            raise self.fail(
                node,
                "extends",
                f"{spec!r} is {what} a label-set file ({path}; shipped sets: {', '.join(sorted(shipped))})",
            )
        return load_label_set(path, depth=self.depth + 1)

    def fitted_for(self, node: yaml.Node) -> dict[str, float]:
        """`fitted_for: {window: 5, hop: 1, smooth: 3, ...}`: numbers (calibrate thresholds writes it), each
        one listen could have run with (a hand edit to `window: -1` made every warning about it nonsense)."""
        keys = self.mapping(node, "fitted_for", FITTED_KEYS)
        fitted = {key: self.value(value, f"fitted_for.{key}", "number") for key, value in keys.items()}
        for key, value in fitted.items():
            allowed, fits = FITTED_RANGES[key]
            if not (math.isfinite(value) and fits(value)):
                raise self.fail(keys[key], f"fitted_for.{key}", f"{value:g} is not allowed: use {allowed}")
        return fitted

    def calibration(self, node: yaml.Node) -> tuple[float, bool]:
        """`calibration: {temperature: T, new_labels: true}`: T a finite number > 0, and whether it
        (and the labels' biases) reach the new labels (semanticac-calibrate scores writes both)."""
        keys = self.mapping(node, "calibration", CALIBRATION_KEYS)
        new = self.value(keys["new_labels"], "calibration.new_labels", "bool") if "new_labels" in keys else False
        if "temperature" not in keys:
            return 1.0, new
        value = self.value(keys["temperature"], "calibration.temperature", "number")
        if not (math.isfinite(value) and value > 0):
            raise self.fail(
                keys["temperature"],
                "calibration.temperature",
                f"{value:g} is not allowed: a temperature is a finite number > 0 (1: none)",
            )
        return value, new

    def label(self, node: yaml.Node, where: str, template: str, default: float) -> Label:
        keys: dict[str, yaml.Node]
        if isinstance(node, yaml.ScalarNode):
            keys = {"name": node}
        else:
            keys = self.mapping(node, where, LABEL_KEYS)
            if "name" not in keys:
                raise self.fail(node, where, "missing key 'name'")
        # composed (NFC): the same name typed or saved decomposed is the same label, embedding and MQTT topic
        name = unicodedata.normalize("NFC", self.value(keys["name"], f"{where}.name", "str"))
        node_name = keys["name"]
        plain = getattr(node_name, "style", "") is None  # written unquoted
        if plain and node_name.end_mark.line > node_name.start_mark.line:
            raise self.fail(
                node_name,
                f"{where}.name",
                f"{name!r} runs over lines {node_name.start_mark.line + 1}-{node_name.end_mark.line + 1}: YAML "
                "joins an unquoted text's lines into one label; start each item's '-' in the same column",
            )
        if name[-1] in ",;" and plain:
            raise self.fail(
                node_name,
                f"{where}.name",
                f"{name!r} ends with {name[-1]!r}: items of a YAML list need no separator (each '-' starts one); "
                f"write {name[:-1].rstrip()!r}, or quote the label if it belongs to it",
            )
        if "\n" in name or len(name) > 100:
            raise self.fail(node_name, f"{where}.name", f"{name[:40]!r}... must be one line of at most 100 characters")
        hidden = _hidden_character(name)
        if hidden is not None:
            raise self.fail(node_name, f"{where}.name", f"{name!r} holds {hidden}: remove it")
        extra = self.value(keys["prompts"], f"{where}.prompts", "list of str") if "prompts" in keys else []
        extra = [unicodedata.normalize("NFC", prompt) for prompt in extra]
        templated = [p for p in extra if "{label}" in p]
        if templated:
            raise self.fail(
                keys["prompts"],
                f"{where}.prompts",
                f"{templated[0]!r}: a label's own prompts are used as written: write the sound's words "
                "instead of {label} (the set's `prompt:` template is where {label} goes)",
            )
        text = (
            unicodedata.normalize("NFC", self.value(keys["text"], f"{where}.text", "str")) if "text" in keys else None
        )
        hidden = _hidden_character(text or "")
        if hidden is not None:
            raise self.fail(keys["text"], f"{where}.text", f"{text!r} holds {hidden}: remove it")
        # drop repeats
        prompts = tuple(dict.fromkeys([template.format(label=label_text(text or name))] + extra))
        threshold = self.threshold(keys["threshold"], f"{where}.threshold") if "threshold" in keys else default
        group = self.value(keys["group"], f"{where}.group", "str") if "group" in keys else None
        bias = self.value(keys["bias"], f"{where}.bias", "number") if "bias" in keys else 0.0
        if not math.isfinite(bias):
            raise self.fail(keys["bias"], f"{where}.bias", f"{bias} is not allowed: a bias is a finite number")
        agree = self.agree(keys, f"{where}.agree")
        return Label(
            name=name,
            prompts=prompts,
            threshold=threshold,
            group=group,
            bias=bias,
            agree=agree,
            text=text,
            own_threshold="threshold" in keys,
        )


# Invisible characters that no correct spelling needs: a name holding one reads as another name, or as
# nothing (the joiners, direction marks and tag characters that scripts and emoji need are allowed)
INVISIBLE = frozenset(
    "\u00ad\u180e\u200b\u2060\ufeff"
    + "".join(map(chr, range(0x202A, 0x202F)))
    + "".join(map(chr, range(0x2066, 0x206A)))
)


def _hidden_character(text: str) -> str | None:
    """The first control or invisible character of a name, described (None: none): one would
    end a file name (NUL), move a terminal's cursor (CR, ESC) or make a label that reads as
    another, or as nothing (a zero-width space, a soft hyphen, a direction override)."""
    for ch in text:
        if unicodedata.category(ch) == "Cc" or ch in INVISIBLE:
            return f"the invisible character U+{ord(ch):04X} ({unicodedata.name(ch, 'a control character')})"
    return None


def _template_error(prompt: str) -> bool:
    """Whether the template does not put the label in (no `{label}`, only an escaped `{{label}}`)
    or has another field, or a label field that is not `{label}` as written (`{label[0]}`,
    `{label.upper}`, `{label:>9}`, `{label!r}`: part of the name, or a method's address)."""
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in string.Formatter().parse(prompt)
            if name is not None
        ]
    except ValueError:  # a lone { or }
        return True
    return not fields or any(
        field not in (("label", "", None), ("label", "", "s"), ("label", "s", None)) for field in fields
    )


def parse_label_set(text: str, source: str = "<string>", depth: int = 0) -> LabelSet:
    """Parse and validate label-set YAML; LabelSetError names the file, line, key and fix."""
    try:
        loader = yaml.SafeLoader(text)  # a control character is refused here already
    except yaml.YAMLError as err:
        raise LabelSetError(yaml_error(err, source, text)) from None
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as err:
            raise LabelSetError(yaml_error(err, source, text)) from None
        return _Parser(source, loader, depth).label_set(root)
    finally:
        loader.dispose()


@dataclass
class _LabelFiles:
    given: Mapping[str, str]  # absolute path -> the text to read it as
    read: dict[str, str] = field(default_factory=dict)  # absolute path -> the text read


_label_files: ContextVar[_LabelFiles | None] = ContextVar("label_files", default=None)


@contextmanager
def label_files(given: Mapping[str, str] | None = None) -> Iterator[dict[str, str]]:
    """Within it (this thread only), every label-set file read (`extends:` included) is recorded in the
    yielded {absolute path: text}: what a reload checked, handed to the process it becomes. A file
    named in `given` is read as that text, not from disk: the start after a reload runs exactly the set
    that was checked (a file saved since is said, and checked at the next reload)."""
    outer = _label_files.get()
    files = _LabelFiles(given or {}, outer.read if outer is not None else {})
    token = _label_files.set(files)
    try:
        yield files.read
    finally:
        _label_files.reset(token)


def _read_label_file(path: Path) -> str:
    try:
        data = path.read_bytes()
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LabelSetError(f"cannot read label set {path}: {undecodable(err, data)}") from None
    except OSError as err:
        missing = looked_at(path) if isinstance(err, FileNotFoundError) else ""
        raise LabelSetError(f"cannot read label set {path}: {err}{missing}") from None


def load_label_set(path: str | Path, shipped: bool = False, depth: int = 0) -> LabelSet:
    path = Path(path)
    files = _label_files.get()
    key = os.path.abspath(path)
    text = files.given.get(key) if files is not None else None
    if text is None:
        text = _read_label_file(path)
    else:
        try:
            changed = _read_label_file(path) != text
        except LabelSetError:
            changed = True
        if changed:
            log.warning(
                "label set %s changed after the reload checked it: the service starts with the set as checked; "
                "send SIGHUP (systemctl reload) again to check the new one",
                path,
            )
    if files is not None:
        files.read[key] = text
    label_set = parse_label_set(text, source=str(path), depth=depth)
    return dataclasses.replace(label_set, shipped=True) if shipped else label_set


# ---------------------------------------------------------------------------------------------
# Where `--labels NAME|PATH` points.


def shipped_label_sets() -> dict[str, Path]:
    """The label sets installed with the package (configs/labels/*.yaml), by file stem."""
    folder = resources.files("edge.configs") / "labels"
    return {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml")}


def _is_path(spec: str | Path) -> bool:
    """A Path object, or text with a folder part ("./urban.yaml", "dir/urban.yaml", "/abs", "~/x")."""
    if isinstance(spec, Path):
        return True
    return any(sep in spec for sep in {"/", os.sep}) or spec.startswith("~")


def _label_set_file(spec: str | Path, shown: str | None = None) -> LabelSet:
    """`--labels PATH` (`shown`: as the log names it; a bare name: ./NAME)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        raise LabelSetError(f"label set {str(spec)!r} is a directory: pass a label-set YAML file")
    label_set = load_label_set(path)
    log.info("label set %r: file %s", label_set.name, shown or spec)
    return label_set


def resolve_label_set(spec: str | Path, bundle_labels: Path | None = None) -> LabelSet:
    """`--labels`: the name of a shipped set ("urban", "urban.yaml"), else a YAML file.

    A bare name that names a shipped set IS the shipped set, even when a file of that name is
    in the working directory (a warning says so and how to use the file: `./urban.yaml`).
    A file wins only when given as a path; a bare name that is no shipped set may be a file.
    `bundle_labels`: the bundle's labels/ folder, named in the error when it holds a set of that name
    (export writes `labels/trained.yaml`, and `--labels trained` had been told only of urban and esc50).
    """
    shipped = shipped_label_sets()
    if _is_path(spec):
        return _label_set_file(spec)
    assert isinstance(spec, str)  # _is_path is True for every Path
    bare = spec[:-5] if spec.endswith(".yaml") else spec
    if bare in shipped:
        local = [p for p in dict.fromkeys([spec, f"{bare}.yaml"]) if Path(p).is_file()]
        if local:
            log.warning(
                "label set %r: the shipped set is used, not the file ./%s in this directory; "
                "to use that file pass it as a path: --labels ./%s",
                spec,
                local[0],
                local[0],
            )
        label_set = load_label_set(shipped[bare], shipped=True)
        log.info("label set %r: shipped set (%s)", spec, label_set.source)
        return label_set
    if Path(spec).exists():
        return _label_set_file(spec, shown=f"./{spec}")
    beside = None if bundle_labels is None else bundle_labels / f"{bare}.yaml"
    raise LabelSetError(
        f"label set {spec!r} not found: it is neither a file nor a shipped set "
        f"(shipped: {', '.join(sorted(shipped))}); pass a path to your YAML file"
        + (f" (the bundle holds one: --labels {beside})" if beside is not None and beside.is_file() else "")
    )
