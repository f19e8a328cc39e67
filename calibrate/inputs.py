"""What a calibration reads: background recordings, labelled clips (CSV or a dataset's meta.csv).

    background   files, or folders searched recursively for audio files (sorted by path)
    CSV          a header with `path` (or `file`) and `label` (or `class`, `category`); paths relative
                 to the CSV's folder; label `none`: a clip of none of the set's labels (a negative)
    esc50:ROOT   ROOT/meta.csv (filename, fold, target, category), audio in ROOT/audio/
    us8k:ROOT[:FOLDS]   ROOT/meta.csv in UrbanSound8K's columns, audio in ROOT/audio/fold<N>/;
                 FOLDS: comma-separated fold numbers (e.g. us8k:/data/us8k:1,2), default all

Every label must be a name of the label set, compared as the set compares its names (ignoring
case and '_' vs ' ': `crying_baby` is `crying baby`): `resolve_labels` gives each clip the set's
own name, lists the unknown ones with the set's names, or (`others_are_none`: a dataset's other
categories as background) takes them as clips of none of the set's labels. Errors are
CalibrationError naming the file, the line and the fix.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from calibrate.errors import CalibrationError
from edge.labels.labelset import LabelSet, label_key

log = logging.getLogger(__name__)

# What libsndfile (edge's decoder) reads; other files in a background folder are ignored (said: those of
# the audio formats below it cannot read are warned of, the rest counted).
AUDIO_SUFFIXES = {
    ".wav", ".wave", ".bwf", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd",
    ".caf", ".w64", ".rf64", ".sph", ".nist", ".voc",
}  # fmt: skip
UNREADABLE_AUDIO = {".m4a", ".aac", ".mp4", ".wma", ".amr", ".3gp", ".ac3", ".ape", ".wv", ".webm", ".mka", ".alac"}
DATASETS = ("esc50", "us8k")


NONE = "none"  # a CSV's label for a clip of none of the set's labels


@dataclass(frozen=True)
class LabelledClip:
    path: Path
    label: str | None  # None (after resolve_labels): none of the set's labels
    where: str  # for messages: the CSV line or meta.csv row it came from
    recording: str | None = None  # the recording it was cut from (clips of one stay on one side of a split)


def audio_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for audio files; CalibrationError when none."""
    found: list[Path] = []
    empty_folders = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            inside = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
            _say_left_out(path, [p for p in files if p.suffix.lower() not in AUDIO_SUFFIXES])
            if not inside:
                empty_folders.append(str(path))
            found += inside
        else:
            found.append(path)
    if not found:
        where = (
            f" (searched {', '.join(empty_folders)} for {', '.join(sorted(AUDIO_SUFFIXES))})" if empty_folders else ""
        )
        raise CalibrationError(f"no background audio files found{where}: pass audio files or folders holding them")
    return list(dict.fromkeys(found))


def _say_left_out(folder: Path, others: Sequence[Path]) -> None:
    """A folder's files that are not read: audio in a format libsndfile cannot read is warned of (a phone's
    .m4a had been left out without a word), the rest counted."""
    unreadable = [p for p in others if p.suffix.lower() in UNREADABLE_AUDIO]
    if unreadable:
        kinds = Counter(p.suffix.lower() for p in unreadable)
        log.warning(
            "%s: %d audio file(s) in a format this cannot read are left out (%s; e.g. %s): convert them to FLAC or "
            "WAV (ffmpeg -i IN.m4a OUT.flac)",
            folder,
            len(unreadable),
            ", ".join(f"{suffix}: {n}" for suffix, n in kinds.most_common()),
            unreadable[0],
        )
    if len(others) > len(unreadable):
        log.info("%s: %d file(s) that are not audio files are left out", folder, len(others) - len(unreadable))


def _rows(path: Path, required: Sequence[str], aliases: dict[str, str] | None = None) -> list[tuple[int, dict]]:
    """(line number, row) of a CSV with a header holding `required` columns (after `aliases`)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's "CSV UTF-8" starts with a BOM
            reader = csv.DictReader(f)
            header = [name.strip() for name in (reader.fieldnames or [])]
            rows = []
            for row in reader:
                if None in row:  # more values than the header has columns
                    raise CalibrationError(
                        f"{path}:{reader.line_num}: {len(row) - 1 + len(row[None])} values for the header's "
                        f"{len(header)} columns {header}: quote a value that holds a comma"
                    )
                rows.append((reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items()}))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CalibrationError(f"cannot read {path}: {err}") from None
    columns = list(header)
    for alias, name in (aliases or {}).items():
        if alias in columns and name not in columns:
            columns.append(name)
            for _, row in rows:
                row[name] = row.get(alias, "")
    missing = [name for name in required if name not in columns]
    if missing:
        also = [f"{alias!r} for {name!r}" for alias, name in (aliases or {}).items()]
        raise CalibrationError(
            f"{path}: missing column(s) {missing}: the header has {header or 'nothing'}; it needs {list(required)}"
            + (f" (or {', '.join(also)})" if also else "")
        )
    if not rows:
        raise CalibrationError(f"{path}: holds no rows after its header: list at least one clip")
    for line, row in rows:
        for name in required:
            if not row.get(name):
                fix = f", or {NONE!r} for a clip of none of the set's labels" if name == "label" else ""
                raise CalibrationError(f"{path}:{line}: column {name!r} is empty: give a value on every row{fix}")
    return rows


def read_clip_csv(path: str | Path) -> list[LabelledClip]:
    """A CSV of labelled clips (columns path,label; `file` is accepted for `path`, `class` or
    `category` for `label`; an optional `recording` column (`group`, as training's CSV calls it)
    names the recording each clip was cut from, which keeps a recording's clips together when
    `scores` holds clips out; without it, the datasets' file names say it: `recording_of`)."""
    path = Path(path)
    rows = _rows(
        path, ("path", "label"), aliases={"file": "path", "class": "label", "category": "label", "group": "recording"}
    )
    return [
        LabelledClip(
            # absolute: a missing clip is said where it was looked for (the CSV's folder), not the command's
            path.absolute().parent / row["path"],
            row["label"],
            f"{path}:{line}",
            row.get("recording") or recording_of(row["path"]),
        )
        for line, row in rows
    ]


def recording_of(filename: str) -> str | None:
    """The recording a dataset's clip was cut from, by its file name: UrbanSound8K's
    `100032-3-0-0.wav` -> `us8k:100032` (fsID), ESC-50's `1-100032-A-0.wav` -> `esc50:100032`, a
    segment `unk-00-dog-seg01.flac` -> `unk-00-dog`; None for other names (each file its own)."""
    stem = Path(filename).stem
    # UrbanSound8K: fsID-classID(0-9)-occurrence-slice; ESC-50: fold(1-5)-source-take-target (a
    # date such as 2024-05-17-0830 is neither: its clips stay their own)
    for pattern, kind in ((r"(\d+)-\d-\d+-\d+", "us8k"), (r"[1-5]-(\d+)-[A-Z]-\d+", "esc50")):
        match = re.fullmatch(pattern, stem)
        if match:
            return f"{kind}:{match.group(1)}"
    segment = re.fullmatch(r"(.+)-seg\d+", stem)
    return segment.group(1) if segment else None


def _meta(root: Path, names: Sequence[str], what: str) -> Path:
    for name in names:
        if (root / name).is_file():
            return root / name
    raise CalibrationError(f"{what} folder {root} has no {' or '.join(names)}: point the spec at the dataset's root")


def read_dataset(spec: str) -> list[LabelledClip]:
    """`esc50:ROOT`, `us8k:ROOT[:FOLDS]` or a CSV path -> labelled clips."""
    kind, _, rest = spec.partition(":")
    if kind not in DATASETS or not rest:
        if Path(spec).is_file():
            return read_clip_csv(spec)
        raise CalibrationError(
            f"--data {spec!r} is neither a CSV file nor a dataset spec: use a CSV (path,label), "
            "esc50:ROOT or us8k:ROOT[:FOLDS] (e.g. us8k:/data/us8k:1,2)"
        )
    folds: set[int] | None = None
    match = re.fullmatch(r"(.+):(\d+(?:,\d+)*)", rest)
    if match and not Path(rest).is_dir():
        rest, folds = match.group(1), {int(x) for x in match.group(2).split(",")}
    root = Path(rest).expanduser()
    if not root.is_dir():
        raise CalibrationError(f"--data {spec!r}: {root} is not a folder: give the dataset's root folder")
    if kind == "esc50":
        if folds is not None:
            raise CalibrationError(
                f"--data {spec!r}: folds apply to us8k only (the ESC-50 copy's folds are "
                "mostly unknown): use esc50:ROOT"
            )
        meta = _meta(root, ["meta.csv", "meta/esc50.csv"], "ESC-50")
        rows = _rows(meta, ("filename", "category"))
        return [
            LabelledClip(
                root / "audio" / row["filename"],
                row["category"],
                f"{meta}:{line}",
                row.get("src_file") or recording_of(row["filename"]),
            )
            for line, row in rows
        ]
    meta = _meta(root, ["meta.csv", "metadata/UrbanSound8K.csv"], "UrbanSound8K")
    clips = []
    for line, row in _rows(meta, ("slice_file_name", "fold", "class")):
        if not row["fold"].isdigit():
            raise CalibrationError(f"{meta}:{line}: fold {row['fold']!r} is not a fold number")
        if folds is None or int(row["fold"]) in folds:
            clips.append(
                LabelledClip(
                    root / "audio" / f"fold{row['fold']}" / row["slice_file_name"],
                    row["class"],
                    f"{meta}:{line}",
                    row.get("fsID") or None,
                )
            )
    if not clips:
        raise CalibrationError(f"--data {spec!r}: no clip of fold(s) {sorted(folds or [])} in {meta}")
    return clips


def resolve_labels(
    clips: Sequence[LabelledClip],
    label_set: LabelSet,
    what: str,
    others_are_none: bool = False,
    fix: str = f"write {NONE!r} for a clip of none of them (--others-are-none: a dataset's other categories)",
) -> list[LabelledClip]:
    """`clips` with the set's own label names (None: `none`, or with `others_are_none` a label the
    set does not have, each such label logged); CalibrationError listing the unknown labels, the
    set's names and `fix`."""
    resolved: list[LabelledClip] = []
    unknown: dict[str, LabelledClip] = {}
    for clip in clips:
        own = None if clip.label is None else label_set.find(clip.label)
        if own is None and clip.label is not None and clip.label.casefold() != NONE and not others_are_none:
            unknown.setdefault(clip.label, clip)
        resolved.append(dataclasses.replace(clip, label=own))
    if unknown:
        first = next(iter(unknown.values()))
        raise CalibrationError(
            f"{what}: label(s) {sorted(unknown)} are not in label set {label_set.name!r} (first at {first.where}); "
            f"{label_set.unknown_label_hint(first.label or '')}; {fix}"
        )
    others = sorted(
        {c.label for c, r in zip(clips, resolved) if r.label is None and c.label and c.label.casefold() != NONE}
    )
    if others_are_none and others:
        log.warning("%s: %d categories taken as none of the set's labels: %s", what, len(others), ", ".join(others))
        # a category that shares a word with a label (ESC-50's dog, urban's dog_bark) is likely its sound
        near = [f"{other} ({name})" for other in others for name in label_set.names if _words(other) & _words(name)]
        if near:
            log.warning(
                "%s: taken as none of the set's labels, though they share a word with one: %s; if they are its "
                "sounds, list them under its name in a CSV instead",
                what,
                ", ".join(near),
            )
    return resolved


def _words(name: str) -> set[str]:
    """A label's telling words: "a kettle whistling on the stove" -> {kettle, whistling, stove}."""
    return {word for word in label_key(name).split() if len(word) > 2 and word not in ("the", "and", "with", "from")}
