"""Run the `listen` pipeline over recordings and keep every window's score for every label.

`record` calls `edge.listen.listen` itself (top_k = every label, a file read as fast as
possible) with a `WindowRecorder` sink, so the scores are exactly what the device computes
for the same options: frontend, windowing, backend, the label set's calibration. The sink
keeps the RAW window scores as the events read them (`WindowResult.evidence` where a bundle's
head needs the student's agreement, else the scores shown); `Stream.smoothed` replays
`edge.scoring.Smoother` over them in order, a gated window (digital silence, or under
`--min-level`) counting as zeros, as the listener does before its event detector.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibrate.progress import Progress
from edge.capture.audio import decode_audio, read_audio
from edge.errors import AudioError
from edge.events import Event
from edge.fsutil import LockHeld, remove_tree, take_lock
from edge.listen import ListenOptions, listen
from edge.outputs.sinks import Sink, Status, WindowResult
from edge.scoring import Smoother

log = logging.getLogger(__name__)
HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # held while a temporary folder is made or removed
TEMPORARY = "semanticac-calibrate-"  # the prefix of the temporary folders calibrate listens in
IN_USE = ".in-use"  # the lock held inside one while its run lives
LEFT_BEHIND_AGE = 86400.0  # a folder without the lock (an older version's) is left behind after this long


class WindowRecorder(Sink):
    """A sink that keeps each window's time, scores as its events read them (in the label set's
    order) and gate flag."""

    def __init__(self, labels: Sequence[str], progress: Progress | None = None, offset: float = 0.0):
        super().__init__(stream=io.StringIO())
        self.labels = tuple(labels)
        self.progress, self.offset = progress, offset  # counts seconds of audio from `offset` as the windows come
        self.index = {name: i for i, name in enumerate(self.labels)}
        self.times: list[float] = []
        self.rows: list[np.ndarray] = []
        self.gated: list[bool] = []
        self.starts = 0  # events `listen` started with the label set as it is
        self.failed: str | None = None  # the code of the error that ended listen (source_error: the file's)

    def window(self, result: WindowResult) -> None:
        if result.evidence is not None:  # what the listener's events read (edge.scoring.Scorer.with_evidence)
            row = np.asarray(result.evidence, dtype=np.float64)
        else:
            row = np.full(len(self.labels), np.nan)
            for name, score in result.top:
                row[self.index[name]] = score
        if np.isnan(row).any():  # top_k below the number of labels: the replay would be wrong
            raise ValueError(
                f"WindowRecorder: a window carries {len(result.top)} of {len(self.labels)} labels: "
                "run listen with top_k = the number of labels"
            )
        self.times.append(result.t)
        self.rows.append(row)
        self.gated.append(bool(result.gated))
        if self.progress is not None and int(self.offset + result.t) > self.progress.done:
            self.progress.update(int(self.offset + result.t) - self.progress.done)

    def event(self, event: Event) -> None:
        self.starts += event.kind == "start"

    def status(self, status: Status) -> None:
        if status.level == "warning":
            log.debug("listen: %s", status.message)
        elif status.level == "error":
            self.failed = status.code


@dataclass(frozen=True)
class Stream:
    """One continuous stream's windows: times [N], raw scores [N, K], gate flags [N]."""

    name: str
    times: np.ndarray
    scores: np.ndarray
    gated: np.ndarray
    seconds: float  # the stream's length, as listen counts it
    starts: int  # events listen started on it with the label set's own thresholds

    def smoothed(self, windows: int) -> np.ndarray:
        """[N, K] smoothed scores: `Smoother(windows)` replayed in order, as the listener does."""
        smoother = Smoother(windows)
        out = np.empty_like(self.scores)
        for i, (row, gated) in enumerate(zip(self.scores, self.gated)):
            out[i] = smoother.update(np.zeros_like(row) if gated else row)
        return out


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT wait (they are raised again at the end) while a temporary folder is made
    or removed: a SystemExit or KeyboardInterrupt raised halfway through either would leave it
    behind. Python runs signal handlers in the main thread only, so elsewhere this holds nothing
    back (a signal mask would not do: another thread can take a process's signal)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in HELD_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in caught:
            signal.raise_signal(signum)


@contextlib.contextmanager
def temporary_folder() -> Iterator[Path]:
    """A temporary folder calibrate listens in, removed however the block ends (a signal included), and
    held (a lock inside) while it is in use: the folders of runs killed before they could remove their own
    (kill -9, out of memory, a power cut: a joined hour of background is 230 MB) go at the next run."""
    _left_behind_removed()
    folder: Path | None = None
    held: int | None = None
    try:
        with _signals_held():
            folder = Path(tempfile.mkdtemp(prefix=TEMPORARY))
            held = take_lock(folder / IN_USE)
        yield folder
    finally:
        if folder is not None:
            try:
                with _signals_held():
                    shutil.rmtree(folder, ignore_errors=True)
            finally:  # a signal that came before the hold was in place: remove it anyway
                shutil.rmtree(folder, ignore_errors=True)
                if held is not None:
                    os.close(held)


@functools.cache
def _left_behind_removed() -> int:
    """remove_left_behind, once a process: a run makes a folder for each clip it pads."""
    return remove_left_behind()


def remove_left_behind(root: Path | None = None) -> int:
    """Remove the temporary folders of calibrate runs that ended without removing them (their lock is
    free: the kernel let it go with the process; a folder without one, from before, once a day old);
    return the bytes freed. `root`: the temporary folder (tempfile's)."""
    freed = 0
    for folder in Path(root or tempfile.gettempdir()).glob(TEMPORARY + "*"):
        lock = folder / IN_USE
        try:
            if not lock.exists():
                if time.time() - folder.stat().st_mtime < LEFT_BEHIND_AGE:
                    continue  # another run's, made a moment ago and not yet held
                held = None
            else:
                held = take_lock(lock)
        except (LockHeld, OSError):  # in use by a run now
            continue
        try:
            size = remove_tree(folder)
            freed += size
            log.info("removed %s, %.1f MB that a calibrate run killed before its end left behind", folder, size / 1e6)
        except OSError:
            pass
        finally:
            if held is not None:
                os.close(held)
    return freed


def listen_to(
    options: ListenOptions,
    labels: Sequence[str],
    path: Path,
    name: str | None = None,
    progress: Progress | None = None,
    offset: float = 0.0,
) -> Stream:
    """Run listen over one file (fast, every label); AudioError when it cannot be read or fails.
    `progress`: a bar in seconds of audio, advanced from `offset` as the file's windows come."""
    options = dataclasses.replace(options, input=str(path), fast=True, top_k=len(labels))
    recorder = WindowRecorder(labels, progress, offset)
    summary = listen(options, sink=recorder)
    if summary.error and not (recorder.failed == "source_error" and recorder.times):
        raise AudioError(summary.error)
    if summary.error:  # a recording damaged further on (a recorder's battery ran out): what decoded counts
        log.warning("%s: %s; the %.1f s before the damage are counted", name or path, summary.error, summary.seconds)
    k = len(labels)
    return Stream(
        name or str(path),
        np.asarray(recorder.times, dtype=np.float64),
        np.asarray(recorder.rows, dtype=np.float64).reshape(-1, k),
        np.asarray(recorder.gated, dtype=bool),
        float(summary.seconds),
        recorder.starts,
    )


def listen_in_silence(options: ListenOptions, labels: Sequence[str], path: Path) -> Stream:
    """Run listen over one clip heard in a quiet stream: digital silence before and after it, so
    every window that overlaps the clip is scored, as in a continuous stream (a clip no longer
    than the window would otherwise be one window, too short for any min_duration). The silent
    windows are gated, as on the device. Before it, `smooth` - 1 silent windows more than the
    window: the smoothing of the clip's first window then averages as many windows as a stream
    that has been quiet a while (a young stream averages fewer: a clip a hop long scored half
    its score there, not a third, and started an event a site would not have)."""
    import soundfile as sf

    from edge.bundle import resolve_bundle

    meta = resolve_bundle(options.bundle).meta
    rate = meta.frontend.sample_rate
    window = options.window or meta.clip_seconds
    after = np.zeros(meta.frontend.seconds_to_samples(window), dtype=np.float32)
    before = np.zeros(meta.frontend.seconds_to_samples(window + (options.smooth - 1) * options.hop), dtype=np.float32)
    samples = np.concatenate([before, read_audio(path, rate), after])
    with temporary_folder() as folder:
        padded = folder / "padded.wav"
        sf.write(str(padded), samples, rate, subtype="FLOAT")
        return listen_to(options, labels, padded, name=str(path))


def record(
    options: ListenOptions,
    labels: Sequence[str],
    files: Sequence[Path],
    join: bool = False,
    what: str = "background",
    in_silence: bool = False,
) -> tuple[list[Stream], list[tuple[Path, str]]]:
    """Streams of `files` (one per file, or with `join` one stream of them all, end to end, no
    gap; with `in_silence` each file padded with silence, `listen_in_silence`) and the files
    skipped as unreadable, each with the reason (a warning is logged). What listen says of the
    label set at each start (a weak name, other settings than fitted) is said once, not per file."""
    with _quieter(logging.getLogger("edge.listen")), _quieter(logging.getLogger("edge.capture.sources")):
        return _record(options, labels, files, join, what, in_silence)


@contextlib.contextmanager
def _quieter(logger: logging.Logger) -> Iterator[None]:
    """While inside, each distinct message of `logger` passes once, and none about clipping in the
    temporary files calibrate listens to (a joined background, a padded clip): the clipped files
    themselves are named when they are read."""
    seen: set[str] = set()

    def said(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if TEMPORARY in message and "clip" in message:
            return False
        new = message not in seen
        seen.add(message)
        return new

    logger.addFilter(said)
    try:
        yield
    finally:
        logger.removeFilter(said)


def _record(
    options: ListenOptions,
    labels: Sequence[str],
    files: Sequence[Path],
    join: bool,
    what: str,
    in_silence: bool,
) -> tuple[list[Stream], list[tuple[Path, str]]]:
    skipped: list[tuple[Path, str]] = []
    if join:
        return [_joined(options, labels, files, skipped)], skipped
    streams = []
    if in_silence:  # clips: a bar over the files
        with Progress(len(files), f"listening to {what}") as bar:
            for path in files:
                try:
                    streams.append(listen_in_silence(options, labels, path))
                except AudioError as err:
                    _skip(path, err, skipped)
                bar.update()
        return streams, skipped
    lengths = [audio_seconds(path) for path in files]  # recordings: a bar over their seconds (one may be a day)
    with Progress(int(sum(lengths)), f"listening to {what} (seconds of audio)") as bar:
        offset = 0.0
        for path, length in zip(files, lengths):
            try:
                streams.append(listen_to(options, labels, path, progress=bar, offset=offset))
            except AudioError as err:
                _skip(path, err, skipped)
            offset += length
            bar.update(max(0, int(offset) - bar.done))
    return streams, skipped


def _skip(path: Path, err: AudioError, skipped: list[tuple[Path, str]]) -> None:
    log.warning("skipped %s: %s", path, err)
    skipped.append((path, str(err)))


def audio_seconds(path: Path) -> float:
    """A file's length from its header (0 when it cannot be read: listening will say why)."""
    import soundfile as sf

    from edge.capture.audio import DECODE_ERRORS, sf_name

    try:
        return float(sf.info(sf_name(path)).duration)
    except DECODE_ERRORS:  # its error comes when it is listened to
        return 0.0


def _joined(
    options: ListenOptions, labels: Sequence[str], files: Sequence[Path], skipped: list[tuple[Path, str]]
) -> Stream:
    """The files decoded at the model's rate, concatenated into one file, listened to as one stream."""
    import soundfile as sf

    from edge.bundle import resolve_bundle

    rate = resolve_bundle(options.bundle).meta.frontend.sample_rate
    with temporary_folder() as folder:
        joined = folder / "joined.w64"  # Sony Wave64: no 4 GB limit (WAV's is ~18 h at 16 kHz float)
        parts, samples = 0, 0
        clipped: list[Path] = []
        # each file appended as it is decoded: memory holds one file, not the whole background (a
        # day at 16 kHz is 5.5 GB of float32)
        with (
            sf.SoundFile(str(joined), "w", rate, 1, "FLOAT", format="W64") as out,
            Progress(len(files), "reading background") as bar,
        ):
            for path in files:
                try:
                    audio, clips = decode_audio(path, rate)
                except AudioError as err:
                    _skip(path, err, skipped)
                else:
                    out.write(audio)
                    parts, samples = parts + 1, samples + audio.size
                    if clips:
                        clipped.append(path)  # said of the files: the joined stream's own lines name a temporary one
                bar.update()
        if clipped:
            log.warning(
                "%d background file(s) are clipped (flat at full scale; clipped audio scores lower): %s%s",
                len(clipped),
                ", ".join(str(path) for path in clipped[:5]),
                f" and {len(clipped) - 5} more" if len(clipped) > 5 else "",
            )
        if not parts:
            return Stream("nothing", np.zeros(0), np.zeros((0, len(labels))), np.zeros(0, dtype=bool), 0.0, 0)
        seconds = samples / rate
        log.info("listening to %d file(s) joined into one stream of %.1f s", parts, seconds)
        name = f"{parts} file(s) joined"
        with Progress(int(seconds), f"listening to {name} (seconds of audio)") as bar:
            stream = listen_to(options, labels, joined, name=name, progress=bar)
            bar.update(bar.total - bar.done)  # the last window may end a little before the last second
        return stream
