"""Datasets: ESC-50, UrbanSound8K and a user's CSV, as (log-mel, class index) for the loop.

    catalogue   read_esc50 / read_us8k / read_csv -> (clips, class_names)
    splits      select_folds, random_split, holdout_classes (build_dataset applies a DataSpec)
    loading     ClipDataset: decode (edge.capture.audio.read_audio: mono, soxr to the model rate;
                cached), augment the waveform (training only), log-mel of the clip
                (train.features.LogMel), tiled to the model's frames (edge.features.tile_frames,
                the rule the listen loop tiles its windows by), SpecAugment (training only)

Class indices are positions in the official class list (ESC-50 `target`, US8K `classID`),
whatever subset of clips or classes a split holds, so a checkpoint's outputs mean the same
in every experiment.

Unreadable files are found once, when a ClipDataset is built: every clip is decoded into
the waveform cache then (the work a first epoch would do anyway; free when the cache is
warm), and a file that fails (missing, empty, not audio, NaN samples) is dropped with a
warning and listed in `dataset.skipped`. The clip list is fixed from then on, so epochs
are deterministic and never meet a bad file; a file that changes after the dataset was
built keeps its decoded copy for the run.
"""

from __future__ import annotations

import csv
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from edge.capture.audio import SOXR_QUALITY, read_audio, too_short_warning
from edge.errors import AudioError, SemanticACError
from edge.features import Frontend, tile_frames
from edge.labels.labelset import label_key
from edge.schema import undecodable
from train.data.cache import FeatureCache, file_identity
from train.features import LogMel

log = logging.getLogger(__name__)

# Official class lists, in ESC-50 `target` order and UrbanSound8K `classID` order.
ESC50_CLASSES = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind",
    "pouring_water", "toilet_flush", "thunderstorm", "crying_baby", "sneezing", "clapping",
    "breathing", "coughing", "footsteps", "laughing", "brushing_teeth", "snoring",
    "drinking_sipping", "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks",
    "can_opening", "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick",
    "glass_breaking", "helicopter", "chainsaw", "siren", "car_horn", "engine", "train",
    "church_bells", "airplane", "fireworks", "hand_saw",
)
US8K_CLASSES = (
    "air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling", "engine_idling",
    "gun_shot", "jackhammer", "siren", "street_music",
)
KINDS = ("esc50", "us8k", "csv")
# Names the tiling rule inside mel cache keys: change it when edge.features.tile_frames changes.
TILING = "frames:repeat-whole-clip-then-cut;longer:first-n"


class DatasetError(SemanticACError, ValueError):
    """A dataset that cannot be read as asked: missing meta file, bad row, empty split."""


@dataclass(frozen=True)
class Clip:
    """One labelled audio file."""

    path: Path
    target: int  # index into the dataset's class_names
    fold: int | None  # official fold; None when unknown (most of the development ESC-50 copy)
    group: str | None = None  # source recording: random_split keeps a group on one side


# ---------------------------------------------------------------------------- catalogues

def _rows(meta: Path, required: Sequence[str]) -> list[tuple[int, dict]]:
    """(line number, row) for every data row of a CSV with a header holding `required`."""
    try:
        with open(meta, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            found = list(reader.fieldnames or [])
            missing = [c for c in required if c not in found]
            if missing:
                raise DatasetError(f"{meta}: missing column(s) {', '.join(missing)}; the header must name "
                                   f"{', '.join(required)} (found: {', '.join(map(repr, found)) or 'nothing'})"
                                   + _header_hint(found, missing))
            used = (*required, "fold", "group")  # others (notes, a spreadsheet's empty trailing columns) are ignored
            twice = sorted({c for c in found if c in used and found.count(c) > 1})
            if twice:  # DictReader keeps the last of two: the first column's values would be dropped unsaid
                raise DatasetError(f"{meta}: column(s) {', '.join(map(repr, twice))} appear more than once in the "
                                   "header: name each column once")
            rows = []
            for row in reader:  # reader.line_num: the row's last line (blank lines and quoted newlines counted)
                if None in row:  # more fields than the header names: an unquoted comma cut a value
                    raise DatasetError(
                        f"{meta}:{reader.line_num}: {len(reader.fieldnames or []) + len(row[None])} fields, the header "
                        f"names {len(reader.fieldnames or [])}: a value holding a comma must be quoted "
                        f'(e.g. "Dog, barking"), and each row needs one value per column'
                    )
                rows.append((reader.line_num, row))
            return rows
    except OSError as err:
        raise DatasetError(f"cannot read {meta}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"cannot read {meta}: {undecodable(err, meta.read_bytes())}") from None


# other names people give the columns of `file,label` (a header row from another tool)
COLUMN_NAMES = {"file": ("path", "filename", "filepath", "file_name", "audio", "wav"),
                "label": ("class", "category", "class_name", "classname", "labels", "tag", "target")}


def _header_hint(found: Sequence[str], missing: Sequence[str]) -> str:
    """Why a header lacks columns a person thinks it has: another separator, spaces, another name."""
    if len(found) == 1:
        separator = next((name for mark, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars"))
                          if mark in found[0]), None)
        if separator:
            return f": its columns are separated by {separator}; write it with commas"
    hints = []
    for column in missing:
        near = [name for name in found
                if name.strip().lower() == column or name.strip().lower() in COLUMN_NAMES.get(column, ())]
        if near:
            hints.append(f"rename {near[0]!r} to {column!r}")
    return f": {'; '.join(hints)} (column names are exact: no spaces, lower case)" if hints else ""


def _meta_file(root: Path, candidates: Sequence[str], what: str) -> Path:
    for name in candidates:
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"no {what} meta file in {root}: looked for {' and '.join(candidates)}; "
                       f"point the dataset root at the folder that holds it and audio/")


def _fold(value: str, meta: Path, line: int) -> int | None:
    value = (value or "").strip()
    if value.lower() in ("", "unknown"):
        return None
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{meta}:{line}: fold {value!r} is not an integer; write a fold number, "
                           "or 'unknown' / nothing when it is not known") from None


def _int(value: str, meta: Path, line: int, column: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{meta}:{line}: {column} {value!r} is not an integer") from None


def read_esc50(root: str | Path) -> tuple[list[Clip], list[str]]:
    """ESC-50 in its official layout (meta/esc50.csv + audio/) or ours (meta.csv + audio/).

    Columns used: filename, fold (a number or `unknown`), target, category, and src_file when
    present (else the source id in an official file name `{fold}-{src}-{take}-{target}`)
    as the group. Audio may be WAV, FLAC or Ogg.
    """
    root = Path(root)
    meta = _meta_file(root, ["meta.csv", "meta/esc50.csv"], "ESC-50")
    clips = []
    for line, row in _rows(meta, ("filename", "fold", "target", "category")):
        target = _int(row["target"], meta, line, "target")
        if not 0 <= target < len(ESC50_CLASSES) or ESC50_CLASSES[target] != row["category"]:
            official = ESC50_CLASSES[target] if 0 <= target < len(ESC50_CLASSES) else "no class"
            raise DatasetError(f"{meta}:{line}: target {target} is {official!r} in ESC-50 but the row says "
                               f"{row['category']!r}: use the official meta file (targets 0-49)")
        official_name = re.fullmatch(r"\d+-(\w+)-[A-Z]+-\d+\.\w+", row["filename"])
        group = row.get("src_file") or (official_name.group(1) if official_name else None)
        clips.append(Clip(root / "audio" / row["filename"], target, _fold(row["fold"], meta, line), group))
    return clips, list(ESC50_CLASSES)


def read_us8k(root: str | Path) -> tuple[list[Clip], list[str]]:
    """UrbanSound8K in its official layout (metadata/UrbanSound8K.csv + audio/fold<N>/) or ours
    (meta.csv + audio/fold<N>/). The group is the Freesound id (fsID)."""
    root = Path(root)
    meta = _meta_file(root, ["meta.csv", "metadata/UrbanSound8K.csv"], "UrbanSound8K")
    clips = []
    for line, row in _rows(meta, ("slice_file_name", "fsID", "fold", "classID", "class")):
        target = _int(row["classID"], meta, line, "classID")
        if not 0 <= target < len(US8K_CLASSES) or US8K_CLASSES[target] != row["class"]:
            official = US8K_CLASSES[target] if 0 <= target < len(US8K_CLASSES) else "no class"
            raise DatasetError(f"{meta}:{line}: classID {target} is {official!r} in UrbanSound8K but the row "
                               f"says {row['class']!r}: use the official meta file (classID 0-9)")
        fold = _int(row["fold"], meta, line, "fold")
        clips.append(Clip(root / "audio" / f"fold{fold}" / row["slice_file_name"], target, fold, row["fsID"]))
    return clips, list(US8K_CLASSES)


def read_csv(path: str | Path, classes: Sequence[str] | None = None) -> tuple[list[Clip], list[str]]:
    """A user's dataset: a CSV with a header `file,label` and optional `fold`, `group` columns.

    `file` is relative to the CSV's folder (or absolute). Class order: `classes` when given
    (every label must be one of them), else the sorted unique labels. Other columns are
    ignored. `fold` is an integer or empty/`unknown`.
    """
    path = Path(path)
    rows = _rows(path, ("file", "label"))
    if not rows:
        raise DatasetError(f"{path} has a header and no rows: add one row per clip (file,label[,fold,group])")
    labels = [(row["label"] or "").strip() for _, row in rows]
    for line, row in rows:
        for column in ("file", "label"):
            if not (row[column] or "").strip():
                raise DatasetError(f"{path}:{line}: empty {column}: every row needs a file and a class name")
    spellings: dict[str, dict[str, int]] = {}  # a label's key -> its spellings, each with its first line
    for (line, _), label in zip(rows, labels):
        spellings.setdefault(label_key(label), {}).setdefault(label, line)
    clashes = [found for found in spellings.values() if len(found) > 1]
    if clashes:  # edge and calibrate compare names by label_key: they would be one label there
        shown = "; ".join(", ".join(f"{name!r} (line {line})" for name, line in found.items()) for found in clashes)
        raise DatasetError(f"{path}: one label spelt more than one way: {shown}: they would train as different "
                           "classes but the device reads them as one label (case and _ do not count); write each "
                           "the same way on every row")
    if classes is None:
        class_names = sorted(set(labels))
    else:
        class_names = list(classes)
        unknown = sorted(set(labels) - set(class_names))
        if unknown:
            raise DatasetError(f"{path}: label(s) {', '.join(map(repr, unknown))} are not in the given classes "
                               f"({', '.join(class_names)}): add them or fix the rows")
    seen: dict[str, tuple[int, str]] = {}  # a file -> its first line and label
    for (line, row), label in zip(rows, labels):
        name = row["file"].strip()
        if name in seen:  # trained twice, or once under each of two labels
            first, was = seen[name]
            same = "with the same label" if was == label else f"as {was!r} there and {label!r} here"
            raise DatasetError(f"{path}:{line}: {name} is listed on line {first} too ({same}): list each file once")
        seen[name] = (line, label)
    index = {name: i for i, name in enumerate(class_names)}
    clips = [Clip(path.parent / row["file"].strip(), index[label], _fold(row.get("fold", ""), path, line),
                  (row.get("group") or "").strip() or None)
             for (line, row), label in zip(rows, labels)]
    grouped = sum(clip.group is not None for clip in clips)
    if 0 < grouped < len(clips):
        log.warning("%s: %d of %d clips have no group: each is taken as a recording of its own, so a random split "
                    "may put clips cut from one recording on both sides (fill in every row's group)",
                    path, len(clips) - grouped, len(clips))
    return clips, class_names


# ------------------------------------------------------------------------------ splits

def select_folds(clips: Iterable[Clip], folds: Iterable[int]) -> list[Clip]:
    """The clips whose fold is one of `folds` (clips of unknown fold never match)."""
    wanted = set(folds)
    return [c for c in clips if c.fold is not None and c.fold in wanted]


def random_split(clips: Sequence[Clip], val_fraction: float, seed: int = 0) -> tuple[list[Clip], list[Clip]]:
    """(train, val): a seeded split, stratified per class, that keeps each group whole.

    About `val_fraction` of each class goes to val, in units of a group (a source recording,
    when the catalogue knows it) or of a clip (when it does not). The same clips, fraction
    and seed give the same split on any machine.

    OPTIMISTIC where groups are unknown (the development ESC-50 copy: fold `unknown`, no
    source ids): ESC-50 cuts several clips from one source recording, so fragments of one
    recording can land on both sides and val accuracy reads higher than on a held-out fold.
    Report such figures as optimistic; use official folds for honest ones.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction={val_fraction!r} must be in [0, 1): the share of clips held out for validation")
    units: dict[tuple, list[Clip]] = {}
    for clip in clips:  # a group spans classes rarely (US8K); it is filed under its first clip's class
        key = (clip.group,) if clip.group is not None else ("", str(clip.path))
        units.setdefault(key, []).append(clip)
    by_class: dict[int, list[list[Clip]]] = {}
    for members in units.values():
        by_class.setdefault(members[0].target, []).append(members)
    rng = np.random.default_rng(seed)
    val_ids: set[int] = set()
    for target in sorted(by_class):
        stratum = sorted(by_class[target], key=lambda m: str(m[0].path))  # independent of input order
        want = round(val_fraction * sum(len(m) for m in stratum))
        taken = 0
        for i in rng.permutation(len(stratum)):
            if taken >= want:
                break
            val_ids.update(id(c) for c in stratum[i])
            taken += len(stratum[i])
    train = [c for c in clips if id(c) not in val_ids]
    val = [c for c in clips if id(c) in val_ids]
    return train, val


def holdout_classes(clips: Iterable[Clip], class_names: Sequence[str],
                    held_out: Iterable[str]) -> tuple[list[Clip], list[Clip]]:
    """(kept, held): the clips of classes not in `held_out`, and of those that are.

    For zero-shot experiments: train on `kept`, measure on `held`. Targets keep their
    indices in the full `class_names`.
    """
    held_out = list(held_out)
    unknown = [name for name in held_out if name not in class_names]
    if unknown:
        raise DatasetError(f"held-out class(es) {', '.join(map(repr, unknown))} are not in this dataset; "
                           f"its classes are: {', '.join(class_names)}")
    held_ids = {class_names.index(name) for name in held_out}
    clips = list(clips)
    return [c for c in clips if c.target not in held_ids], [c for c in clips if c.target in held_ids]


# ----------------------------------------------------------------------------- tiling

def model_samples(frontend: Frontend) -> int:
    """Samples of the model's clip: `frontend.frames` frames (1001 at hop 320, 32 kHz = 10 s)."""
    return (frontend.frames - 1) * frontend.hop_length


# ------------------------------------------------------------------------------ dataset

class ClipDataset(Dataset):
    """(log-mel [1, frames, n_mels] float32, class index) for each readable clip.

    A clip is decoded once into the waveform cache (mono, at the model rate, as long as the
    file). Without waveform augmentation (evaluation, or training with SpecAugment only)
    the tiled log-mel itself is cached and an item is one small file read; with it (time
    scale, pad/crop, noise, low-pass: train.augment) the cached waveform is augmented, tiled
    and turned into a log-mel on the fly. Randomness comes from a generator seeded with
    (seed, epoch, index): an item's augmentation does not depend on the order, batch or
    DataLoader worker that loads it. Call `set_epoch(e)` before each epoch's loader pass.
    """

    def __init__(self, clips: Sequence[Clip], class_names: Sequence[str], frontend: Frontend = Frontend(),
                 cache: FeatureCache | str | Path | None = None, augment=None, seed: int = 0):
        self.class_names = list(class_names)
        self.frontend = frontend
        self.samples = model_samples(frontend)
        self.cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.log_mel = LogMel(frontend)
        self._frame = max(frontend.n_fft, frontend.win_length)  # a shorter clip is padded to this (one frame)
        self._wave_identity = {"sample_rate": frontend.sample_rate, "resampler": f"soxr-{SOXR_QUALITY}"}
        self._mel_identity = {"frontend": frontend.to_dict(), "samples": self.samples, "tiling": TILING}
        self.clips: list[Clip] = []
        self.skipped: list[tuple[Path, str]] = []  # (file, why) for every clip left out
        self._wave_entries: list[Path] = []
        self._mel_entries: list[Path] = []
        self._decode_all(clips)

    def _decode_all(self, clips: Sequence[Clip]) -> None:
        start, longest = time.perf_counter(), 0
        misses = self.cache.misses["wave"]
        for clip in clips:
            try:  # only the source's faults skip a clip: a cache that cannot be written raises
                entry = self.cache.entry("wave", {"file": file_identity(clip.path), **self._wave_identity})
                wave = self.cache.get(entry, lambda: read_audio(clip.path, self.frontend.sample_rate), mmap=True)
            except (FileNotFoundError, AudioError) as err:
                reason = f"no such file: {clip.path}" if isinstance(err, FileNotFoundError) else str(err)
                log.warning("skipping a clip: %s", reason)
                self.skipped.append((clip.path, reason))
                continue
            if wave.shape[0] < self._frame:  # the log-mel pads it with silence, as listen pads such a file
                log.warning("%s", too_short_warning(clip.path, wave.shape[0] / self.frontend.sample_rate,
                                                    self._frame / self.frontend.sample_rate))
            longest = max(longest, wave.shape[0])
            self.clips.append(clip)
            self._wave_entries.append(entry)
            self._mel_entries.append(self.cache.entry("mel", {"wave": entry.stem, **self._mel_identity}))
        if clips and not self.clips:
            raise DatasetError(f"none of the {len(clips)} clips could be read (the first: {self.skipped[0][1]}): "
                               "check the dataset root and the audio files")
        decoded = self.cache.misses["wave"] - misses
        log.info("%d clips ready (%d decoded into %s in %.1f s, %d skipped)", len(self.clips), decoded,
                 self.cache.root, time.perf_counter() - start, len(self.skipped))
        # The clip length the model is trained on, before tiling (model.json's clip_seconds).
        self.clip_seconds = min(longest, self.samples) / self.frontend.sample_rate

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def targets(self) -> list[int]:
        return [c.target for c in self.clips]

    def set_epoch(self, epoch: int) -> None:
        """Augmentations of the next pass draw from (seed, epoch, index)."""
        self.epoch = epoch

    def waveform(self, index: int) -> np.ndarray:
        """The clip's decoded samples at the model rate (untiled, float32)."""
        clip = self.clips[index]
        return self.cache.get(self._wave_entries[index], lambda: read_audio(clip.path, self.frontend.sample_rate))

    def _mel(self, wave: np.ndarray) -> np.ndarray:
        """The model's input: log-mel of (at most 10 s of) the clip, tiled to the model's frames."""
        wave = wave[:self.samples]
        if wave.size < self._frame:  # a 16 ms clip had stopped an epoch inside torch.stft (reflect padding)
            wave = np.pad(wave, (0, self._frame - wave.size))
        with torch.no_grad():
            mel = self.log_mel(torch.from_numpy(np.ascontiguousarray(wave))[None])[0].numpy()
        return tile_frames(mel, self.frontend.frames)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.item(index)

    def item(self, index: int, under=None) -> tuple[torch.Tensor, int]:
        """Item `index`; `under(wave) -> wave`, if given, adds audio to its (augmented) waveform
        before the log-mel (train.data.underlay: background laid under a labelled clip)."""
        augment = self.augment if self.augment is not None and self.augment.training else None
        rng = np.random.default_rng([self.seed, self.epoch, index]) if augment is not None else None
        if under is not None or (augment is not None and augment.changes_waveform):
            wave = self.waveform(index)
            if augment is not None and augment.changes_waveform:
                wave = augment.waveform(wave, rng, length=min(wave.size, self.samples))
            mel = self._mel(wave if under is None else under(wave[:self.samples]))
        else:
            mel = self.cache.get(self._mel_entries[index],
                                 lambda: self._mel(self.waveform(index)))
        if augment is not None:
            mel = augment.spectrogram(mel, rng)
        return torch.from_numpy(np.ascontiguousarray(mel))[None], self.clips[index].target  # [1, T, F]


def collate(batch: Sequence[tuple]) -> tuple[torch.Tensor, ...]:
    """[(mel [1, T, F], target, *extra)] -> (mels float32 [B, 1, T, F], targets int64 [B], *extra
    stacked: e.g. the teacher's scores [B, 521] of train.distill.WithTeacher)."""
    mels, targets, *extra = zip(*batch)
    return (torch.stack(mels), torch.tensor(targets, dtype=torch.int64),
            *(torch.from_numpy(np.stack(column)) for column in extra))


def make_loader(dataset: ClipDataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader with a seeded shuffle (each pass draws the next permutation of one generator).

    Workers are optional (0 on a 2-core machine: the main process then does the loading);
    they are not persistent, so `dataset.set_epoch(e)` before a pass reaches them.
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      collate_fn=collate, drop_last=drop_last, generator=generator)


# ------------------------------------------------------------------------------ builder

@dataclass(frozen=True)
class DataSpec:
    """Which clips make the train, val and test splits (a training config's `data` section)."""

    kind: str  # esc50 | us8k | csv
    root: str  # the dataset folder (esc50, us8k) or the CSV file (csv)
    test_folds: tuple[int, ...] = ()  # clips of these folds form `test`
    train_folds: tuple[int, ...] | None = None  # None: every clip not in test_folds, unknown folds included
    val_fraction: float = 0.0  # of the train clips, per class, to `val` (random_split: optimistic without groups)
    split_seed: int = 0
    holdout: tuple[str, ...] = ()  # class names kept out of train and val (zero-shot); test keeps them
    classes: tuple[str, ...] | None = None  # csv only: the class order (default: sorted labels)
    max_per_class: int | None = None  # keep at most this many clips per class and split (quick runs)

    def __post_init__(self):
        if self.max_per_class is not None and self.max_per_class < 1:
            raise DatasetError(f"max_per_class={self.max_per_class!r} must be a positive number of clips (or unset)")
        if self.kind not in KINDS:
            raise DatasetError(f"data kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise DatasetError(f"val_fraction={self.val_fraction!r} must be in [0, 1)")
        if self.classes is not None and self.kind != "csv":
            raise DatasetError(f"classes is for kind 'csv' only: {self.kind} has its official class list")
        overlap = set(self.test_folds) & set(self.train_folds or ())
        if overlap:
            raise DatasetError(f"fold(s) {sorted(overlap)} are in both train_folds and test_folds: pick one side")


SPLITS = ("train", "val", "test", "heldout")  # heldout: the clips of DataSpec.holdout (zero-shot)


def first_per_class(clips: Sequence[Clip], n: int) -> list[Clip]:
    """The first `n` clips of each class, in catalogue order."""
    seen: dict[int, int] = {}
    kept = []
    for clip in clips:
        seen[clip.target] = seen.get(clip.target, 0) + 1
        if seen[clip.target] <= n:
            kept.append(clip)
    return kept


def read_catalogue(spec: DataSpec) -> tuple[list[Clip], list[str]]:
    if spec.kind == "esc50":
        return read_esc50(spec.root)
    if spec.kind == "us8k":
        return read_us8k(spec.root)
    return read_csv(spec.root, spec.classes)


def split_clips(spec: DataSpec, split: str) -> tuple[list[Clip], list[str]]:
    """The clips of one split (train, val, test, or heldout: every clip outside the test folds of
    the classes in `holdout`) and the dataset's class names."""
    if split not in SPLITS:
        raise DatasetError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    clips, class_names = read_catalogue(spec)
    if split == "test":
        chosen = select_folds(clips, spec.test_folds)
    else:
        pool = [c for c in clips if c.fold not in spec.test_folds]
        if spec.train_folds is not None:
            pool = select_folds(pool, spec.train_folds)
        pool, held = holdout_classes(pool, class_names, spec.holdout)
        train, val = random_split(pool, spec.val_fraction, spec.split_seed) if spec.val_fraction else (pool, [])
        chosen = {"train": train, "val": val, "heldout": held}[split]
    if spec.max_per_class is not None:
        chosen = first_per_class(chosen, spec.max_per_class)
    if not chosen:
        present = sorted({c.fold for c in clips if c.fold is not None})
        unknown = sum(c.fold is None for c in clips)
        raise DatasetError(
            f"split {split!r} of {spec.root} is empty (folds present: {present or 'none'}, {unknown} clip(s) of "
            f"unknown fold; test_folds={list(spec.test_folds)}, train_folds={spec.train_folds}, "
            f"val_fraction={spec.val_fraction}): choose folds that exist, or a val_fraction above 0")
    return chosen, class_names


def check_held_out(train: Sequence[Clip], held: Sequence[Clip], split: str, source: str | Path,
                   val_fraction: float = 0.0) -> None:
    """A held-out split that shares a file with training is refused (its accuracy would be measured
    on what the model learnt); one that shares a recording (`group`) is warned of, as is a split
    drawn clip by clip where no clip names its recording (fragments of one recording on both sides),
    and a val split far from `val_fraction` (recordings are kept whole)."""
    trained = {c.path.resolve() for c in train}
    shared = [c.path for c in held if c.path.resolve() in trained]
    if shared:
        raise DatasetError(
            f"{source}: {len(shared)} of the {len(held)} {split} clips are training clips too (e.g. {shared[0]}): "
            f"its accuracy would be measured on what the model learnt; list each file once, in one fold"
        )
    groups = {c.group for c in train if c.group is not None}
    crossing = sorted({c.group for c in held if c.group is not None and c.group in groups})
    if crossing:
        log.warning(
            "%s: %d recording(s) (group) have clips in training and in the %s split (e.g. %s): its accuracy reads "
            "high; keep each group in one fold", source, len(crossing), split, crossing[0])
    elif split == "val" and not any(c.group for c in (*train, *held)):
        log.warning(
            "%s: the val split is drawn clip by clip (no clip names its recording): fragments of one recording can "
            "fall on both sides, so val accuracy is optimistic; give a CSV a `group` column (the source recording), "
            "or hold out whole folds (test_folds)", source)
    share = len(held) / max(1, len(train) + len(held))
    if split == "val" and abs(share - val_fraction) > 0.05:
        log.warning("%s: val_fraction %.2f asked, %.2f held out (%d of %d clips): recordings (group) are kept whole",
                    source, val_fraction, share, len(held), len(train) + len(held))


def build_dataset(spec: DataSpec, split: str, frontend: Frontend = Frontend(),
                  cache_dir: FeatureCache | str | Path | None = None, augment=None, seed: int = 0) -> ClipDataset:
    """The ClipDataset of `split`; `augment` is used only when given and in training mode."""
    clips, class_names = split_clips(spec, split)
    return ClipDataset(clips, class_names, frontend, cache_dir, augment, seed)
