"""Write a site's label set: a copy of the deployed set with fitted thresholds or calibration.

The copy keeps the set's name, prompt template, extra prompts, groups and description, so
it has the same `labels_sha256` (names and prompt texts) and the embeddings already in the
bundle or the device's cache stay valid. It is written only after it parses back with edge's
own parser (`parse_label_set`) to the same names, prompts and values, atomically: a failed
run leaves the previous file, never half of one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import yaml

from calibrate.errors import CalibrationError
from edge.fsutil import atomic_write_text
from edge.labels.labelset import LabelSet, parse_label_set

log = logging.getLogger(__name__)


def dump_label_set(
    label_set: LabelSet,
    thresholds: Sequence[float] | None = None,
    temperature: float | None = None,
    biases: Sequence[float] | None = None,
    agree: float | None = None,
    fitted_for: dict[str, float] | None = None,
    fitted_model: str | None = None,
    header: Sequence[str] = (),
) -> str:
    """YAML text of `label_set` with the given per-label thresholds / temperature / biases
    (None: keep the set's own); `agree` the set's agreement for every label (None: keep the set's
    and its labels' own); `fitted_for` the listen settings the thresholds were fitted under (None:
    keep the set's); `fitted_model` the model_id of the bundle they (and the calibration) were fitted
    on (None: keep the set's); `header` lines become `#` comments at the top."""
    k = len(label_set.labels)
    for name, values in (("thresholds", thresholds), ("biases", biases)):
        if values is not None and len(values) != k:
            raise ValueError(f"dump_label_set: {len(values)} {name} for {k} labels")
    temperature = label_set.temperature if temperature is None else float(temperature)
    data: dict = {"name": label_set.name}
    if label_set.description:
        data["description"] = label_set.description
    data["prompt"] = label_set.prompt
    if temperature != 1.0 or label_set.calibrated_new:
        data["calibration"] = {"temperature": temperature, **({"new_labels": True} if label_set.calibrated_new else {})}
    agreement = label_set.agree if agree is None else agree
    if agreement is not None:
        data["agree"] = float(agreement)
    fitted = label_set.fitted_for if fitted_for is None else fitted_for
    if fitted:
        # a whole number stays one (smooth: 3, not 3.0: smooth is a count of windows)
        data["fitted_for"] = {
            key: int(value) if float(value).is_integer() and key == "smooth" else float(value)
            for key, value in fitted.items()
        }
    model = label_set.fitted_model if fitted_model is None else fitted_model
    if model:
        data["fitted_model"] = model
    items = []
    for i, label in enumerate(label_set.labels):
        item: dict = {"name": label.name}
        if label.text is not None:
            item["text"] = label.text
        extra = list(label.prompts[1:])  # the first prompt is the template's; the parser adds it again
        if extra:
            item["prompts"] = extra
        item["threshold"] = float(label.threshold if thresholds is None else thresholds[i])
        if label.group is not None:
            item["group"] = label.group
        bias = float(label.bias if biases is None else biases[i])
        if bias != 0.0:
            item["bias"] = bias
        if agree is None and label.agree is not None:
            item["agree"] = float(label.agree)
        items.append(item)
    data["labels"] = items
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
    # a path in the header that is no UTF-8 (a surrogate for its byte) is written escaped: YAML refuses the character
    lines = [line.encode("utf-8", "backslashreplace").decode() for text in header for line in str(text).splitlines()]
    comments = "".join(f"# {line}\n".replace("# \n", "#\n") for line in lines)
    return comments + body


def write_label_set(path: str | Path, label_set: LabelSet, keep_previous_always: bool = False, **values) -> LabelSet:
    """Dump (see `dump_label_set`), check it reads back the same, write it atomically; returns
    the label set as read back. `keep_previous_always`: the file there is kept as .bak even when
    calibrate wrote it (another run wrote it while this one ran: keep_previous)."""
    text = dump_label_set(label_set, **values)
    back = parse_label_set(text, source=str(path))
    if back.sha256 != label_set.sha256 or back.names != label_set.names:
        raise CalibrationError(
            f"{path}: the written label set would change its names or prompts "
            "(labels_sha256): not written; this is a bug, please report it"
        )
    for key in ("thresholds", "biases"):
        want = values.get(key)
        have = [label.threshold if key == "thresholds" else label.bias for label in back.labels]
        if want is not None and not all(math.isclose(a, b, rel_tol=0, abs_tol=0) for a, b in zip(want, have)):
            raise CalibrationError(f"{path}: {key} do not read back exactly: not written; please report it")
    if back.agreement() != label_set.agreement(values.get("agree")):
        raise CalibrationError(f"{path}: the agreement does not read back exactly: not written; please report it")
    base = _extends(label_set.source)
    if base is not None:
        log.warning(
            "%s extends %s: %s holds every label of both, written out, and no longer follows %s (a label added "
            "to it later does not reach it): write its `extends:` back by hand, keeping only this set's own labels, "
            "if it should",
            label_set.source,
            base,
            path,
            base,
        )
    text = stamped(text)
    keep_previous(Path(path), text, always=keep_previous_always)
    atomic_write_text(path, text)
    return back


def _extends(source: str) -> str | None:
    """The set the YAML file `source` extends (None: none, or no file: a shipped set by name)."""
    try:
        document = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    base = document.get("extends") if isinstance(document, dict) else None
    return str(base) if base is not None else None


STAMP = "# (written by semanticac-calibrate; content {digest}: an edit above changes it)\n"


def stamped(text: str) -> str:
    """`text` with a last line that names its content: a later refit tells an untouched file
    (replaced as it is) from one a person edited (kept)."""
    return text + STAMP.format(digest=hashlib.sha256(text.encode()).hexdigest()[:16])


def untouched(text: str) -> bool:
    """Whether `text` is a file `stamped` wrote, as it wrote it."""
    body, _, _ = text.rstrip("\n").rpartition("\n")
    return bool(body) and stamped(body + "\n") == text


def keep_previous(path: Path, text: str, always: bool = False) -> None:
    """An existing file at `path` that `text` would replace is kept as `<path>.bak` first: `--out`
    is often the `--labels` file itself (a site's set refitted), and its hand-written comments,
    hand edits and set-level defaults are not in the new one. A file calibrate wrote and nobody
    touched since is replaced as it is (unless `always`); an older .bak that differs is kept beside,
    timestamped."""
    try:
        old = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    if old == text or (untouched(old) and not always):
        return
    backup = backup_path(path)
    if backup.exists() and backup.read_text(encoding="utf-8") != old:
        when = datetime.fromtimestamp(backup.stat().st_mtime)
        os.replace(backup, backup.with_name(f"{backup.name}-{when:%Y%m%dT%H%M%S}"))
    atomic_write_text(backup, old, like=path)  # as private as the file it keeps


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".bak")
