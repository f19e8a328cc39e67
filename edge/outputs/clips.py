"""Clips: the audio of each event, with some before and after it, as a FLAC file.

    source.read ──tap──> the listen loop              (the samples it returns, unchanged)
                  │
                  └─> history: the last pre_roll + max_seconds + post_roll (+ the start's lag) seconds
    start (onset t) ──> a pending clip from onset - pre_roll
    end (t)         ──> ... until t + post_roll has arrived ──> worker thread: FLAC, then the disk budget

A sample's index is its stream time times the model rate, counted from the stream's first
sample exactly as the listen pipeline counts it, so an event's times name its samples.
An event longer than `max_seconds` gets a clip of its first `max_seconds` (plus the rolls),
written once the events, which come up to a model window behind the audio, are out to the limit
(plus listen's `hold`), so that an end dated before it is seen.
Note that an event's onset is the END time of the
first window whose SMOOTHED score reached the threshold: the sound may have begun up to a window
before the first window that heard it, and the smoothing (the mean of `smooth` windows) reaches
the threshold up to smooth - 1 hops after that one; so the pre_roll is window + (smooth - 1) x hop
unless the config gives one (serve.onset_reach; 2 s, the default until 2026-12-06, left most clips
without their sound's first second or two, and the window alone, the default until 2026-12-07,
clips with a hop of 2 s and smooth 5 two seconds). A window the student does not agree with
counts as 0 in the smoothing and can put an onset later still.

Files: `<dir>/<onset as YYYYmmddTHHMMSSZ>_<event_id>_<label>.flac` (16-bit, the model rate),
written atomically by a worker thread (a bounded queue: the audio path never waits on the
disk). Around each write clips go: those older than `max_age_days` (while the system clock can be
trusted: edge.clock.dates_trusted), then the oldest while the folder holds more than
`max_megabytes` or its disk has less than `min_free_megabytes` free (so a full disk never takes
the event log with it); a clip dated in the future (written while the clock was ahead) counts as
the oldest. Only files named as this writes them count, and only they are removed: other files
of a shared folder are left alone. A clip that cannot be written (no room, a failing disk) is a
status with code `clips` for every output, and the next one written `clips_restored`.
`clip_for(event)` gives the name at the event's start, so the event log and MQTT can name it.

A reopened device: the listen loop's stream time goes on across the gap (it resumes at the
wall-clock time elapsed), so the new source is tapped with the stream time of its first sample,
`tap(source, start_t)`; the history starts again there, and the clips still waiting are
written with the audio there is from before the gap. A stream time that does not match the
audio seen all the same never produces a clip of other audio: what the history holds of the
span is written, and a span it holds none of is skipped with a log line.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import shutil
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import soundfile as sf

from edge.capture.sources import Source, weakly
from edge.clock import UNSET_BEFORE, age_note, dates_trusted
from edge.errors import ConfigError, Repeats, gist
from edge.events import Event
from edge.fsutil import atomic_path, nearest_existing, unwritable_reason
from edge.outputs.metrics import ClipCounts
from edge.outputs.sinks import Sink, Status, WindowResult
from edge.service.mounts import read_only_disk
from edge.service.sections import UNWRITABLE_FIX, invalid

log = logging.getLogger(__name__)

DIR_NAME = "clips"
QUEUE_CLIPS = 8  # clips waiting for the worker; beyond it a clip is skipped (the disk is far too slow)
MEGABYTE = 1_000_000
LABEL_CHARS = 48  # a label's length in a file name
AHEAD_SECONDS = 0.1  # an onset later than the audio seen by more than this: the stream time jumped
FUTURE_SECONDS = 60.0  # a clip's time further ahead of the clock than this: written while the clock was ahead
DAY = 86400.0
LOST_SAID_EVERY = 3600.0  # while clips cannot be written, a skipped one is said in the log this often
NAMES_KEPT = 1024  # clip names of recent ended events kept (an open event's is kept until its end)
REDATED_CLIPS = 10_000  # clips of this run whose file times a clock step may move (the newest)


@dataclass(frozen=True)
class ClipsConfig:
    """Section `clips` of the service config."""

    enabled: bool = False
    dir: str | None = None  # None: <state_dir>/clips
    pre_roll: float | None = None  # seconds before the onset; None: window + (smooth - 1) x hop
    post_roll: float = 2.0  # seconds after the end
    max_megabytes: float = 1024.0  # disk budget of the folder: the oldest clips go first
    min_free_megabytes: float = 100.0  # the oldest clips go while their disk has less free
    max_age_days: float | None = 90.0  # older clips go (None: none by age)
    max_seconds: float = 60.0  # of an event in one clip (plus the rolls)

    def __post_init__(self) -> None:
        if self.dir is not None and not self.dir.strip():
            raise invalid("dir", self.dir, "a folder path, or leave it out for <state directory>/clips")
        for name in ("post_roll",) if self.pre_roll is None else ("pre_roll", "post_roll"):  # None: the reach
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 60):
                raise invalid(name, value, "a number of seconds from 0 to 60 (e.g. 2)")
        if not (math.isfinite(self.max_seconds) and 0 < self.max_seconds <= 3600):
            raise invalid("max_seconds", self.max_seconds, "a number of seconds > 0 and <= 3600 (e.g. 60)")
        if not (math.isfinite(self.max_megabytes) and self.max_megabytes > 0):
            raise invalid("max_megabytes", self.max_megabytes, "a number of megabytes > 0 (e.g. 1024)")
        if not (math.isfinite(self.min_free_megabytes) and self.min_free_megabytes >= 0):
            raise invalid("min_free_megabytes", self.min_free_megabytes, "a number of megabytes >= 0 (e.g. 100)")
        if self.max_age_days is not None and not (math.isfinite(self.max_age_days) and self.max_age_days > 0):
            raise invalid("max_age_days", self.max_age_days, "a number of days > 0 (e.g. 90), or null: none by age")

    def resolve_dir(self, state_dir: str | Path) -> Path:
        return Path(self.dir).expanduser() if self.dir is not None else Path(state_dir) / DIR_NAME


# The names this recorder writes (clip_for); the disk budget counts and removes only these, never
# other files a shared folder holds.
CLIP_NAME = re.compile(r"\d{8}T\d{6}Z_\d+_[A-Za-z0-9.-][A-Za-z0-9._-]*\.flac")


def clip_label(label: str) -> str:
    """A label as a file name's part: letters, digits, '-' and '.'; anything else becomes '_'."""
    safe = re.sub(r"[^A-Za-z0-9.-]+", "_", label).strip("._")[:LABEL_CHARS]
    return safe or "event"


def pre_roll_warning(config: ClipsConfig, reach: float) -> str | None:
    """What the recorder's start (and check-config) says of a clips.pre_roll shorter than `reach`, how
    long an onset may come after its sound begins (serve.onset_reach: 2.0, the default before 2026-12-06,
    kept in a config written then; the window's length, the default until 2026-12-07); None otherwise."""
    if config.pre_roll is None or config.pre_roll >= reach - 1e-9:
        return None
    return (
        f"clips.pre_roll {config.pre_roll:g} s is shorter than the {reach:g} s an event's onset may come after "
        "its sound begins (the listen window, then listen.smooth - 1 hops of smoothing), so its clip may miss "
        f"that beginning; leave pre_roll out (null: {reach:g} s)"
    )


def room_warning(config: ClipsConfig, folder: Path) -> str | None:
    """What the recorder's start (and check-config) says when the disk of `folder` (of the folder it
    will be made in, while it is not there) cannot give the clips clips.max_megabytes: what is free
    and what its clips hold now, less clips.min_free_megabytes; None when it can, or cannot be read."""
    try:  # exists() raises where a folder on the way cannot be entered (/var/lib/private, as another user)
        free = shutil.disk_usage(nearest_existing(folder)).free
        held = sum(p.stat().st_size for p in folder.glob("*.flac") if CLIP_NAME.fullmatch(p.name))
    except OSError:
        return None
    room = free + held - round(config.min_free_megabytes * MEGABYTE)
    if room >= config.max_megabytes * MEGABYTE:
        return None
    return (
        f"clips.max_megabytes {config.max_megabytes:g} is more than the disk of {folder} can give the clips "
        f"({max(0, room) / MEGABYTE:.0f} MB, with the clips there now, above clips.min_free_megabytes "
        f"{config.min_free_megabytes:g}): the oldest go sooner, to keep that much free"
        + (" (none fits now: no clip is kept until space is freed)" if room <= 0 else "")
    )


class _History:
    """The last `capacity` samples of a stream, addressed by their index since its start."""

    def __init__(self, capacity: int):
        self._data = np.zeros(capacity, dtype=np.float32)
        self.end = 0  # the index after the newest sample: the history holds [start, end)
        self._floor = 0  # the index of the first sample since the last restart

    @property
    def start(self) -> int:
        return max(self._floor, self.end - self._data.size)

    def restart(self, index: int) -> None:
        """Forget everything: the next sample appended has this index."""
        self.end = self._floor = index

    def append(self, x: np.ndarray) -> None:
        n = self._data.size
        assert x.size <= n, "append at most the history's capacity at a time"
        at = self.end % n
        first = min(x.size, n - at)
        self._data[at : at + first] = x[:first]
        self._data[: x.size - first] = x[first:]
        self.end += x.size

    def span(self, first: int, last: int) -> np.ndarray:
        """A copy of samples [first, last) that the history still holds (maybe fewer, or none)."""
        first, last = max(first, self.start), min(last, self.end)
        if last <= first:
            return np.zeros(0, dtype=np.float32)
        idx = np.arange(first, last) % self._data.size
        return self._data[idx]


@dataclass
class _Pending:
    name: str
    first: int  # sample index of onset - pre_roll
    limit: int  # the clip ends here at the latest: onset + max_seconds + post_roll
    last: int | None = None  # end + post_roll, once the event has ended


MAX_HISTORY_SECONDS = 7200.0  # of audio the recorder keeps: 460 MB at 16 kHz


def clip_history_seconds(config: ClipsConfig, reach: float, lag_seconds: float, hold: float = 0.0) -> float:
    """The audio the recorder keeps: pre_roll (none given: `reach`) + max_seconds + post_roll, the lag
    of an event's start behind its onset and listen's hold (a clip open at its limit waits that long for
    its end); a ConfigError beyond MAX_HISTORY_SECONDS (a listen.min_duration of a million seconds asked
    for 60 GB, and the start failed, over and over under systemd)."""
    pre_roll = reach if config.pre_roll is None else config.pre_roll
    seconds = pre_roll + config.max_seconds + config.post_roll + lag_seconds + hold
    if seconds > MAX_HISTORY_SECONDS:
        key = "listen.hold" if hold > lag_seconds else "listen.min_duration"
        raise ConfigError(
            f"clips: an event's start comes up to {lag_seconds:.0f} s after its onset (listen.min_duration, "
            f"listen.smooth x listen.hop, the model's window) and its end {hold:.0f} s after the score fell "
            f"(listen.hold), so the recorder would keep {seconds:.0f} s of audio, over {MAX_HISTORY_SECONDS:.0f}: "
            "lower listen.min_duration, listen.smooth or listen.hop, listen.hold, or clips.max_seconds; "
            "or clips.enabled: false",
            key=key,
        )
    return seconds


class ClipRecorder(Sink):
    """A sink (events in, FLAC files out) and an audio tap (`tap(source)`); see the module's doc.

    `sample_rate`: the model rate, the rate of the samples the tapped source returns.
    ConfigError (key `clips.dir`) when the folder cannot be created or written. With
    `enabled: false` it does nothing: `tap` returns the source as it is, `clip_for` None.
    Counters: `written`, `skipped`, `removed` (clips deleted by age or for the disk's room).
    `trust_clock`: remove by age even while the kernel says the clock is not synchronised.
    `reach`: how long an onset may come after its sound begins (the pre-roll the config leaves out); `lag_seconds`:
    how long after its onset a start can arrive (listen's smoothing and min_duration, and a model
    window's worth: listen reads that much ahead), which the audio history must also hold.
    `hold`: listen's hold (an end comes that long after the score fell): a clip whose event is still
    open at its limit waits until the windows (whose events come up to a model window behind the
    audio) are out to the limit + hold, for an end dated before the limit, so that it stops at end +
    post_roll, not at the limit (a 33 s event held 30 s had 27 s of the quiet after it in its clip).
    Without windows (events sent by hand) the audio's arrival at the limit takes it.
    """

    def __init__(
        self,
        config: ClipsConfig,
        state_dir: str | Path,
        sample_rate: int,
        *,
        origin: datetime | None = None,
        trust_clock: bool = False,
        reach: float = 0.0,
        lag_seconds: float = 0.0,
        hold: float = 0.0,
    ):
        super().__init__(stream=sys.stderr, origin=origin)
        self.config = config
        # `reach`: how long an onset may come after its sound begins (serve.onset_reach), the default pre_roll
        self.pre_roll = reach if config.pre_roll is None else config.pre_roll
        self.dir = config.resolve_dir(state_dir)
        self.sample_rate = sample_rate
        self.trust_clock = trust_clock
        self._hold = round(hold * sample_rate)  # samples a clip open at its limit waits for its end
        # the stream time (samples) of the last window whose events are all out (the window before the newest:
        # a window reaches the sinks before its events); the audio is read up to a model window ahead of it
        self._events_until: int | None = None
        self._newest_window: int | None = None
        self.written = self.skipped = self.removed = 0
        self._counting = threading.Lock()
        self._age_wait_said = False  # that removal by age waits for a synchronised clock
        self._written_now: deque[Path] = deque(maxlen=REDATED_CLIPS)  # this run's clips (a clock step moves them)
        self._troubles: queue.SimpleQueue[tuple[str, str, str]] = queue.SimpleQueue()  # worker -> report()
        self._failing = False  # the last clip could not be written (the worker's; said once until one is)
        self._lost_since = 0  # clips skipped before the failing began
        self._lost_said = Repeats(LOST_SAID_EVERY)  # the clips lost, in the log
        self._redating: threading.Thread | None = None  # moving this run's clips' file times (redate)
        # event_id -> clip name, from clip_for at the start; kept past the end (every output names the
        # end's clip after the recorder has seen it), the oldest ended one forgotten beyond NAMES_KEPT
        self._names: dict[int, str] = {}
        self._open: set[int] = set()  # started, end not yet seen: their names are never forgotten
        self._pending: dict[int, _Pending] = {}
        self._slice = max(1, sample_rate)  # audio is appended a second at most at a time (see _audio)
        # a start reaches the recorder `lag_seconds` after its onset (the smoothing and min_duration): by
        # then the history must still hold onset - pre_roll; and a clip waits up to `hold` past its limit
        seconds = clip_history_seconds(config, reach, lag_seconds, hold)
        self._history = _History(math.ceil(seconds * sample_rate) + self._slice)
        self._queue: queue.Queue[tuple[str, np.ndarray] | None] = queue.Queue(maxsize=QUEUE_CLIPS)
        self._worker: threading.Thread | None = None
        if not config.enabled:
            return
        reason = unwritable_reason(self.dir)
        read_only = None if reason is None else read_only_disk(self.dir)
        if reason is not None and read_only is None:
            raise ConfigError(
                f"clips.dir {self.dir} cannot hold clips: {reason}: {UNWRITABLE_FIX}; or clips.enabled: false",
                key="clips.dir",
            )
        if read_only is not None:  # the disk's trouble, not the config's: events go on, clips once it can be written
            log.warning(
                "clips.dir %s cannot hold clips now: %s; each clip is skipped until it can", self.dir, read_only
            )
        else:
            for stale in self.dir.glob(".*.tmp.flac"):  # a clip being written when the process died
                stale.unlink(missing_ok=True)
        for warning in (pre_roll_warning(config, reach), room_warning(config, self.dir)):
            if warning is not None:
                log.warning("%s", warning)
        self._worker = threading.Thread(target=self._work, name="clip writer", daemon=True)
        self._worker.start()

    # --- the audio tap -----------------------------------------------------------------------

    def tap(self, source: Source, start_t: float = 0.0) -> Source:
        """The same source, whose `read` also hands every block it returns to the recorder.

        `start_t`: the stream time of its first sample (a device reopened after a gap: the
        listen loop's time for the new segment). The source object itself is returned (its
        `read` wrapped on the instance), so it stays a MicrophoneSource or FileSource for the
        loop (a live source drops late windows), with its own `name`, `end_reason`,
        `overflows` and context manager."""
        if not self.config.enabled:
            return source
        if source.sample_rate != self.sample_rate:
            raise ValueError(
                f"ClipRecorder: {source.name} delivers {source.sample_rate} Hz, the recorder was made for "
                f"{self.sample_rate} Hz: pass the model rate (the bundle frontend's sample_rate) to both"
            )
        at = round(start_t * self.sample_rate)
        if at != self._history.end:  # a new segment of the stream: what waits is written as it is
            for event_id in list(self._pending):
                self._take(event_id, early=f"the stream restarts at {start_t:.3f} s")
            self._history.restart(at)
        read = weakly(source.read)  # the source holds `tapped`: through `read`, it would hold itself

        def tapped(max_samples: int, timeout: float = 0.5) -> np.ndarray | None:
            block = read(max_samples, timeout)
            if block is not None and block.size:
                self._audio(block)
            return block

        source.read = tapped  # type: ignore[method-assign]
        return source

    def _audio(self, block: np.ndarray) -> None:
        # A slice at a time, so a clip that becomes complete is taken before the history,
        # which holds one slice more than the longest clip, overwrites its first samples.
        for i in range(0, block.size, self._slice):
            self._history.append(block[i : i + self._slice])
            self._take_ready()

    # --- events ------------------------------------------------------------------------------

    def clip_for(self, event: Event) -> str | None:
        """The clip's file name (in `dir`) that `event` has or will have; None when disabled."""
        if not self.config.enabled:
            return None
        name = self._names.get(event.event_id)
        if name is None:
            onset = event.t if event.kind == "start" else event.t - (event.duration or 0.0)
            moment = (self.origin + timedelta(seconds=onset)).astimezone(timezone.utc)
            stem = f"{moment:%Y%m%dT%H%M%SZ}_{event.event_id}_{clip_label(event.label)}"
            name, n = f"{stem}.flac", 1
            # event ids start at 1 in each run: after a restart with the clock stepped back, another
            # run's clip may hold the name, and would have been replaced
            while (self.dir / name).exists() or name in self._names.values():
                n += 1
                name = f"{stem}-{n}.flac"
            if event.kind == "start":
                self._names[event.event_id] = name
                self._open.add(event.event_id)
                if len(self._names) > NAMES_KEPT + len(self._open):
                    del self._names[next(i for i in self._names if i not in self._open)]
        return name

    def window(self, result: WindowResult) -> None:
        self._say_troubles()
        self._events_until, self._newest_window = self._newest_window, round(result.t * self.sample_rate)
        self._take_ready()

    def status(self, status: Status) -> None:
        pass

    def redate(self, by: timedelta) -> None:
        """This run's clips move `by` in file time (their names keep the dates they were given), on a
        thread of their own: the listen loop calls it, and a long run may have written thousands."""
        paths, shift = list(self._written_now), round(by.total_seconds() * 1e9)
        self._redating = threading.Thread(target=_move_file_times, args=(paths, shift), name="clip redate", daemon=True)
        self._redating.start()

    def _say_troubles(self) -> None:
        """The worker's troubles and their ends as status records, from the listen loop's thread
        (report() reaches every output, the event log's SQLite connection among them)."""
        while True:
            try:
                level, message, code = self._troubles.get_nowait()
            except queue.Empty:
                return
            self.report(level, message, code)

    def event(self, event: Event) -> None:
        if not self.config.enabled:
            return
        rate, config = self.sample_rate, self.config
        name = self.clip_for(event)
        assert name is not None  # enabled
        if event.kind == "start":
            onset = round(event.t * rate)
            if onset > self._history.end + round(AHEAD_SECONDS * rate):  # the loop is never ahead of its audio
                self._skip(name, f"its onset {event.t:.3f} s is after the audio the recorder saw (a stream reopened?)")
                return
            self._pending[event.event_id] = _Pending(
                name,
                first=max(0, onset - round(self.pre_roll * rate)),
                limit=onset + round((config.max_seconds + config.post_roll) * rate),
            )
        else:
            self._open.discard(event.event_id)
            pending = self._pending.get(event.event_id)
            if pending is not None:
                pending.last = min(pending.limit, round((event.t + config.post_roll) * rate))
        self._take_ready()

    def close(self) -> None:
        """Write every pending clip with the audio there is, then wait for the worker."""
        if self._worker is None:
            return
        for event_id in list(self._pending):
            self._take(event_id, early="the recorder closes", wait=True)
        self._queue.put(None)
        self._worker.join()
        self._worker = None
        self._say_troubles()

    def _take_ready(self) -> None:
        end = self._history.end
        for event_id, p in list(self._pending.items()):
            if p.last is not None:
                ready = end >= p.last
            elif self._newest_window is None:  # no windows (events sent by hand): the audio's time
                ready = end >= p.limit
            else:  # still open at its limit: once the events are out to limit + hold, an end dated
                # before the limit has come (the audio's own time runs up to a model window ahead of theirs)
                ready = end >= p.limit and (self._events_until or 0) >= p.limit + self._hold
            if ready:
                self._take(event_id)

    def _take(self, event_id: int, early: str | None = None, wait: bool = False) -> None:
        """Hand one clip's samples to the worker (`wait`: for room in its queue, else never).
        `early`: why it is taken before its whole span has arrived."""
        p = self._pending.pop(event_id)
        wanted = p.limit if p.last is None else p.last
        last = min(wanted, self._history.end)
        samples = self._history.span(p.first, last)
        span = f"{p.first / self.sample_rate:.3f}-{wanted / self.sample_rate:.3f} s"
        if not samples.size:
            self._skip(p.name, f"no audio of its span {span}")
            return
        if samples.size < wanted - p.first and early:
            log.info("clip %s: %s: %.3f s of %s", p.name, early, samples.size / self.sample_rate, span)
        elif samples.size < last - p.first:
            log.warning(
                "clip %s: only %.3f s of its span %s were still there (the stream time jumped?): written as it is",
                p.name,
                samples.size / self.sample_rate,
                span,
            )
        try:
            if wait:
                self._queue.put((p.name, samples))
            else:
                self._queue.put_nowait((p.name, samples))
        except queue.Full:
            self._skip(p.name, f"{QUEUE_CLIPS} clips are waiting to be written: the disk is too slow")

    def _skip(self, name: str, why: str, level: int = logging.WARNING) -> None:
        with self._counting:  # the listen thread (no audio, a full queue) and the worker (the disk) both skip
            self.skipped += 1
        log.log(level, "clip %s skipped: %s", name, why)

    def _lost(self, name: str, why: str) -> None:
        """A clip the disk could not take: skipped, said (the first since one was written: also a status;
        the next ones once every LOST_SAID_EVERY s or for another reason: a disk full for good had a
        journal line per event)."""
        if not self._failing:
            self._lost_said.due(gist(why), force=True)
            self._failing, self._lost_since = True, self.skipped
            self._skip(name, why)
            message = f"clips cannot be written to {self.dir}: {why}; events are still detected and logged"
            self._troubles.put(("warning", message, "clips"))
        elif self._lost_said.due(gist(why)):  # another reason, or LOST_SAID_EVERY s since the last said
            skipped = self.skipped + 1 - self._lost_since
            self._skip(name, f"{why} ({skipped} clips skipped since the first, this one included; said once an hour)")
        else:
            self._skip(name, why, logging.DEBUG)

    # --- the worker thread -------------------------------------------------------------------

    def _work(self) -> None:
        self._tidy()
        while (job := self._queue.get()) is not None:
            name, samples = job
            path = self.dir / name
            # room made before the write for what the disk holds now, not for the clip: an estimate of its size
            # (16-bit PCM's: its FLAC is a third of it or less) removed older clips for one that then did not fit
            # either, or would have; the tidy after it counts the clip as written, dipping into the floor at most
            # one clip's size meanwhile
            if not self._tidy():
                room = self._free() or 0
                self._lost(
                    name,
                    f"its disk has {room / MEGABYTE:.1f} MB free, under clips.min_free_megabytes "
                    f"{self.config.min_free_megabytes:g}, with no clip left to remove: free space on it (or lower "
                    "clips.min_free_megabytes)",
                )
                continue
            failed = None
            while True:
                try:
                    self.dir.mkdir(parents=True, exist_ok=True)  # a disk read-only at the start had none made
                    _write_flac(path, samples, self.sample_rate)
                    break
                except Exception as err:  # a full disk, a removed folder: this clip is lost, not the service
                    free = self._free()
                    # a disk too full for it (a floor below one clip, another program's files; 16-bit PCM is the
                    # most its FLAC takes): the oldest clip goes and the write is tried again
                    if free is not None and free < 2 * samples.size:
                        if self._remove_oldest(keep=None, why="its disk is too full for a new clip"):
                            continue
                        failed = (
                            f"cannot write {path}: its disk is full ({free / MEGABYTE:.1f} MB free; libsndfile: "
                            f"{err}): free space on it"
                        )
                    else:
                        read_only = read_only_disk(self.dir)
                        failed = f"cannot write {path}: {err}" + (f": {read_only}" if read_only else "")
                    break
            if failed is not None:
                self._lost(name, failed)  # libsndfile says "System error." of a full disk
                continue
            self.written += 1
            self._written_now.append(path)
            log.info("clip %s: %.2f s", path, samples.size / self.sample_rate)
            if self._failing:
                self._failing = False
                lost = self.skipped - self._lost_since
                message = f"clips are written to {self.dir} again ({lost} skipped meanwhile)"
                self._troubles.put(("info", message, "clips_restored"))
            self._tidy(keep=path)

    def counts(self) -> ClipCounts:
        return ClipCounts(self.written, self.skipped, self.removed, self._free())

    def _free(self) -> int | None:
        """Bytes free on the clips' disk (None: not known)."""
        try:
            return shutil.disk_usage(self.dir).free
        except OSError:
            return None

    def _tidy(self, keep: Path | None = None) -> bool:
        """Remove clips (never `keep`): those older than max_age_days while the clock can be
        trusted, then the oldest while the folder holds more than max_megabytes or its disk has
        less than min_free_megabytes free. True when the disk then has min_free_megabytes free
        (or its free space is unknown)."""
        config = self.config
        try:
            now = time.time()
            clips = self._clips()
            free = self._free()
            if config.max_age_days is not None and not self._age_wait_said:  # said once: it had kept clips
                beyond = "Clips beyond max_megabytes and min_free_megabytes"  # past their age without a word
                note = age_note(config.max_age_days, "clips", beyond, self.trust_clock)
                if note is not None:
                    self._age_wait_said = True
                    log.info("clips: %s", note)
            if config.max_age_days is not None and dates_trusted(self.trust_clock):
                too_old, unset = now - config.max_age_days * DAY, UNSET_BEFORE.timestamp()
                old = [c for c in clips if unset <= c[0] < too_old and c[3] != keep]
                for clip in old:
                    free = self._remove(clip, free, "older than clips.max_age_days")
                gone = {clip[3] for clip in old}
                clips = [c for c in clips if c[3] not in gone]
            total = sum(size for _, _, size, _ in clips)
            budget, floor = config.max_megabytes * MEGABYTE, config.min_free_megabytes * MEGABYTE
            for clip in self._oldest_first(clips, now):
                over = total > budget
                short = free is not None and free < floor
                if not (over or short):
                    break
                if clip[3] == keep:
                    continue
                why = (
                    "the clips hold more than clips.max_megabytes"
                    if over
                    else "its disk is short of clips.min_free_megabytes"
                )
                free = self._remove(clip, free, why)
                total -= clip[2]
            if total > budget and keep is not None:
                log.warning(
                    "clip %s alone is larger than clips.max_megabytes %g: raise it or lower clips.max_seconds",
                    keep.name,
                    config.max_megabytes,
                )
            return free is None or free >= floor
        except OSError as err:  # a clip removed meanwhile, the folder gone: try again after the next clip
            log.warning("clips: cannot tidy %s: %s", self.dir, err)
            return True

    def _remove_oldest(self, keep: Path | None, why: str) -> bool:
        """Remove the oldest clip (never `keep`), as _tidy orders them; False when there is none."""
        try:
            clips = [c for c in self._oldest_first(self._clips(), time.time()) if c[3] != keep]
            if clips:
                self._remove(clips[0], None, why)
            return bool(clips)
        except OSError as err:  # the folder gone meanwhile
            log.warning("clips: cannot make room in %s: %s", self.dir, err)
            return False

    def _clips(self) -> list[tuple[float, str, int, Path]]:
        """(mtime, name, size, path) of each clip the service wrote in the folder (CLIP_NAME)."""
        return [
            (stat.st_mtime, p.name, stat.st_size, p)
            for p in self.dir.glob("*.flac")
            if CLIP_NAME.fullmatch(p.name) and (stat := p.stat())
        ]

    @staticmethod
    def _oldest_first(clips: list[tuple[float, str, int, Path]], now: float) -> list[tuple[float, str, int, Path]]:
        # one dated ahead of the clock was written while the clock was wrong: it goes first
        return sorted(clips, key=lambda c: (-math.inf if c[0] > now + FUTURE_SECONDS else c[0], c[1]))

    def _remove(self, clip: tuple[float, str, int, Path], free: int | None, why: str) -> int | None:
        """Remove one clip; the disk's free bytes after it."""
        clip[3].unlink(missing_ok=True)
        self.removed += 1
        log.info("clip %s removed: %s", clip[1], why)
        return None if free is None else free + clip[2]


def _move_file_times(paths: list[Path], shift_ns: int) -> None:
    for path in paths:
        try:
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + shift_ns))
        except OSError:  # removed meanwhile
            continue


def _write_flac(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    with atomic_path(path, suffix=".flac") as tmp:
        sf.write(tmp, np.clip(samples, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
