"""THE listen pipeline: audio source -> incremental log-mel -> windows -> model -> scores -> events.

    Source.read (model rate) -> StreamingLogMel.push (only the new frames)
      -> every hop, the latest window of frames, tiled to the model's frames
      -> backend.embed (several windows at once when several are ready)
      -> Scorer (softmax(logit_scale * cosine)) -> top-k per window
      -> what the events read (Scorer.with_evidence: the scores, or 0 for a trained label the
         student alone does not agree on, where the bundle's head asks for it)
      -> Smoother -> EventDetector (thresholds, hysteresis, minimum duration) -> start/end
      -> Sink (live view, plain lines or JSON lines)

`ListenOptions` holds every setting and its default (here and nowhere else) and validates
each value; `listen(options)` composes the pipeline (bundle, label set, embeddings,
windowing, backend, source, detector, smoother, sink) and runs it. `semanticac-edge listen`,
`demo`, `bench` and the service call it; the CLI only parses and prints.

Windows are counted in frames of the bundle's frontend, so they do not depend on how the
audio arrived: window k holds frames [k * hop, k * hop + window) of the stream's log-mel,
the same frames `log_mel` computes over the whole recording. A window shorter than the
model's input is tiled (edge.features.tile_frames), as training tiles its clips.

A live source never builds a backlog: when inference falls behind and more windows are
ready than one batch holds, the oldest are dropped and counted (`dropped`).

Failure contract: when the source fails mid-stream (a decode error, NaN samples, a lost
device) or the backend fails, the audio delivered before the failure is still scored, every
open event gets its `end`, a `status` line with level `error` (code `source_error` or
`backend_error`) names the cause, and the summary carries the error (the CLI exits 1).

Device supervision (`reconnect`, the service's microphone): a microphone is lost when it
fails (the stream ends: PortAudio reports this when the PulseAudio source or daemon goes
away), delivers nothing for `stale_seconds`, or only digital silence for `max_silence` (what
is left to see when PulseAudio silently moves the stream to an idle source: PortAudio reports
nothing then, measured). The open events end, a `status` warning `audio_lost` names the
device and the reason, and the loop reopens it (PortAudio rescans its devices, so a
re-plugged USB microphone is found) after waits that double up to `backoff_max`, with
jitter, calling the heartbeat meanwhile; `audio_restored` (info) follows when audio flows
again, saying how long no audio was heard. Stream time goes on across the gap: the new audio
starts at the wall-clock time elapsed since the stream began, and the first of it read as it
comes dates what follows (see `_anchor`), so `utc` stays right. Without `reconnect` a loss is
the failure above.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.backends import BACKENDS, select_backend
from edge.backends.base import Backend, usable_cores
from edge.bundle import Bundle, resolve_bundle_origin
from edge.capture.sources import (
    MAX_CHANNELS,
    MAX_INPUT_RATE,
    STDIN_FORMATS,
    FileSource,
    MicrophoneSource,
    Source,
    StdinSource,
    rescan_note,
    stuck_close_seconds,
)
from edge.clock import clock_synchronised, since_boot
from edge.errors import AudioError, BackendError, OptionError, Repeats, SemanticACError, detached, gist
from edge.events import DEFAULT_MIN_DURATION, DEFAULT_RELEASE_RATIO, EventDetector
from edge.features import (
    FrameQueue,
    Frontend,
    LevelMeter,
    StreamingLogMel,
    WindowGain,
    Windowing,
    mean_square_dbfs,
    tile_frames,
)
from edge.labels.labelset import label_key, label_text
from edge.outputs.sinks import Sink, Status, WindowResult, make_sink, same_terminal
from edge.scoring import DEFAULT_SMOOTH_WINDOWS, DEFAULT_TOP_K, Scorer, Smoother, top_k
from edge.vocabulary import WEAK_NAME_ADVICE, Vocabulary

if TYPE_CHECKING:  # imported where it is used: listen() resolves the label set lazily
    from edge.labels.labelset import LabelSet

log = logging.getLogger(__name__)

READ_SECONDS = 0.2  # a read waits at most this long, so a stop request is seen promptly
# A PortAudio close stuck this long while the device cannot be reopened ends the run (exit 1, which
# the unit restarts): the process can no longer rescan devices (edge.capture.sources.stuck_close_seconds)
STUCK_CLOSE_SECONDS = 300.0
SILENCE_WARN_SECONDS = 10.0
MAX_HEARD = 20  # --heard: the most vocabulary classes a window reports
MAX_SMOOTH = 1000  # windows averaged (--smooth): over 16 minutes at a 1 s hop
DIGITAL_SILENCE = 1e-6  # |sample| at most this (-120 dBFS) is "no signal": a microphone's own noise is far above
STILL_LOST_TRIES = 10  # tries to reopen a lost device each said in the log; then one STILL_LOST_EVERY s
STILL_LOST_EVERY = 3600.0
BACKOFF_FIRST = 1.0  # the wait after the first failed try to reopen a lost device (doubled after each failure)
# A live stream's dates are its sample count from when it began; they are checked against the
# wall clock every CLOCK_CHECK_SECONDS of audio and follow it when they differ by CLOCK_TOLERANCE
# or more: a device's clock drifts from the system's (50 ppm: 6 min in 3 months). A step of the
# system clock (NTP on a Jetson without a clock battery sets it minutes after boot) is followed at
# the next read; when the clock was not synchronised, what the run dated before is dated again.
CLOCK_CHECK_SECONDS = 60.0
CLOCK_TOLERANCE = 2.0
CLOCK_STEP_WARNING = 60.0  # seconds: a larger move is a warning (the dates before it were that far off)
# A try to reopen a lost device runs on a thread of its own and is given up after this long: a
# hung sound server blocks PortAudio's open for good, and the loop must go on beating (the
# watchdog) and hear a stop request.
OPEN_SECONDS = 10.0
# Input clipping (the source counts samples at full scale) is a status with code "clipping", so
# the event log, MQTT and the metrics see a gain set too high; at most once per this many seconds.
CLIPPING_STATUS_SECONDS = 600.0
# Windows dropped because inference fell behind: the first drop is a status at once (code "overload"),
# then at most one a this many seconds with the drops since; a machine that cannot keep up dropped a
# window a hop, and a status each filled the event log's statuses (evicting the rest), MQTT and the journal.
# Once this long has passed with no drop, `overload_ended` (info) says it is over, with what it cost, and
# the next drop is said at once again. Under the MQTT problem's hold (PROBLEM_HOLD_SECONDS), so a lasting
# overload stays one problem there.
OVERLOAD_STATUS_SECONDS = 600.0
DEMO_LICENCE_NOTE = "non-commercial use only"


def plural(n: int, noun: str) -> str:
    """ "1 window", "3 windows"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _peak(so_far: np.ndarray | None, now: np.ndarray) -> np.ndarray:
    """The running maximum of per-label scores (None before the first window)."""
    return now if so_far is None else np.maximum(so_far, now)


def _flag(name: str) -> str:
    """The command-line spelling of an option (the service config uses the field name)."""
    return {"sample_format": "--format", "top_k": "--top-k"}.get(name, "--" + name.replace("_", "-"))


@dataclass(frozen=True)
class ListenOptions:
    """Every setting of the listen pipeline; each default lives here and nowhere else.

    `input`: None for the microphone, "-" for raw PCM on stdin, else an audio file. Options
    that only apply to one source (device and the supervision options: microphone; fast: file;
    rate, sample_format, channels: stdin) are errors with another when they are not their
    default. Construction validates every value and raises OptionError naming the option, the
    value and what is allowed.
    """

    labels: str  # a label-set YAML path or the name of a shipped set
    bundle: str | None = None  # None: $SEMANTICAC_BUNDLE, else the shipped demo bundle
    input: str | None = None
    device: str | None = None  # microphone: index or part of a name; None: the default input
    window: float | None = None  # seconds; None: the bundle's training clip length
    hop: float = 1.0  # seconds between windows
    top_k: int = DEFAULT_TOP_K
    heard: int = 0  # also the vocabulary's top classes of each window (what it hears: words for a label)
    json: bool = False  # JSON lines instead of the live view / plain lines
    backend: str = "auto"  # auto: a TensorRT engine built for this GPU, else ONNX Runtime
    fast: bool = False  # a file as fast as possible instead of in real time
    rate: int | None = None  # stdin: the raw PCM's sample rate (required there)
    sample_format: str | None = None  # stdin: s16le (default), s32le, f32le
    channels: int | None = None  # stdin: interleaved channels (default 1)
    smooth: int = DEFAULT_SMOOTH_WINDOWS  # windows averaged before event decisions
    min_duration: float = DEFAULT_MIN_DURATION  # seconds above threshold before a start
    release: float = DEFAULT_RELEASE_RATIO  # an event ends below threshold x release
    hold: float = 0.0  # seconds an event is held open below release: a return goes on with it (a service: 30)
    threads: int | None = None  # ONNX Runtime threads; None: all usable cores
    max_batch: int = 4  # windows run together; beyond it a live source drops the oldest
    min_level: float | None = None  # dBFS; quieter windows start no event (None: off; digital silence never does)
    agree: float | None = None  # every label's agreement (edge.scoring), over the set's and the bundle's; None: theirs
    # Device supervision (microphone only): see the module docstring.
    reconnect: bool = False  # reopen a lost microphone instead of failing (the service sets it)
    stale_seconds: float = 5.0  # no audio for this long: the microphone is lost (PulseAudio starts ~2 s late)
    max_silence: float | None = None  # seconds of digital silence: the microphone is lost (None: off)
    backoff_max: float = 30.0  # with reconnect: the longest wait between tries to reopen

    def __post_init__(self) -> None:
        self._validate()

    @classmethod
    def defaults(cls) -> dict[str, object]:
        """Field name -> default, for a CLI's `show_default`."""
        return {f.name: f.default for f in fields(cls) if f.init and f.name != "labels"}

    @property
    def source_kind(self) -> str:
        return "microphone" if self.input is None else "stdin" if self.input == "-" else "file"

    @property
    def stdin_format(self) -> str:
        return self.sample_format or "s16le"

    @property
    def stdin_channels(self) -> int:
        return self.channels or 1

    def _validate(self) -> None:
        if not isinstance(self.labels, str) or not self.labels.strip():
            from edge.labels.labelset import shipped_label_sets

            own = sorted((Path(self.bundle) / "labels").glob("*.yaml")) if isinstance(self.bundle, str) else []
            raise OptionError(
                "--labels is required: a label-set YAML file or a shipped set "
                f"({', '.join(sorted(shipped_label_sets()))})"
                + (f", or the bundle's own: {', '.join(f'--labels {path}' for path in own)}" if own else ""),
                option="labels",
            )
        self._seconds("hop", self.hop, allow_zero=False)
        if self.window is not None:
            self._seconds("window", self.window, allow_zero=False, hint="leave it out for the bundle's clip length")
        self._seconds("min_duration", self.min_duration, allow_zero=True)
        self._seconds("hold", self.hold, allow_zero=True, hint="0: an event ends as its score falls below release")
        if not (_finite(self.release) and 0.0 < self.release <= 1.0):
            self._fail("release", self.release, "a ratio in (0, 1]: an event ends below threshold x release")
        for name, low in (("top_k", 1), ("max_batch", 1)):
            self._whole(name, getattr(self, name), low)
        self._whole("smooth", self.smooth, 1, MAX_SMOOTH, "windows averaged before event decisions; 1: none")
        self._whole("heard", self.heard, 0, MAX_HEARD, "the vocabulary's classes shown per window; 0: none")
        if self.threads is not None:
            self._whole(
                "threads",
                self.threads,
                1,
                usable_cores(),
                f"this machine lets the process use {usable_cores()} core(s)",
            )
        if self.min_level is not None and not (_finite(self.min_level) and self.min_level <= 0):
            self._fail("min_level", self.min_level, "a level in dBFS <= 0 (e.g. -60), or leave it out")
        if self.agree is not None and not (_finite(self.agree) and 0.0 <= self.agree <= 1.0):
            self._fail("agree", self.agree, "a score in [0, 1] (0: events need no agreement), or leave it out")
        if self.backend not in BACKENDS:
            self._fail("backend", self.backend, f"one of {', '.join(BACKENDS)}")
        self._seconds("stale_seconds", self.stale_seconds, allow_zero=False, hint="e.g. 5; audio starts ~2 s late")
        if self.max_silence is not None:
            self._seconds("max_silence", self.max_silence, allow_zero=False, hint="or leave it out: off")
        self._seconds("backoff_max", self.backoff_max, allow_zero=False)
        self._check_source()
        if self.backoff_max != _DEFAULTS["backoff_max"] and not self.reconnect:
            raise OptionError(
                "--backoff-max applies with --reconnect only: add --reconnect or leave it out", option="backoff_max"
            )

    def _check_source(self) -> None:
        kind = self.source_kind
        where = {"device": "microphone", "fast": "file", "rate": "stdin", "sample_format": "stdin", "channels": "stdin"}
        where |= dict.fromkeys(("reconnect", "stale_seconds", "max_silence", "backoff_max"), "microphone")
        what = {"microphone": "the microphone (no --input)", "file": "--input FILE", "stdin": "--input - (stdin)"}
        for name, applies in where.items():
            if getattr(self, name) != _DEFAULTS[name] and applies != kind:
                raise OptionError(
                    f"{_flag(name)} applies to {what[applies]} only, not to {what[kind]}: leave it out", option=name
                )
        if kind == "stdin":
            if self.rate is None:
                raise OptionError(
                    "--input - (raw PCM on stdin) needs --rate, the rate it was recorded at (e.g. --rate 16000)",
                    option="rate",
                )
            self._whole("rate", self.rate, 1, MAX_INPUT_RATE, hint="the sample rate in Hz")
            if self.stdin_format not in STDIN_FORMATS:
                self._fail("sample_format", self.sample_format, f"one of {', '.join(STDIN_FORMATS)}")
            self._whole("channels", self.stdin_channels if self.channels is None else self.channels, 1, MAX_CHANNELS)
        if kind == "file" and not self.input:
            self._fail("input", self.input, "a path to an audio file, or - for stdin")

    def _seconds(self, name: str, value, allow_zero: bool, hint: str = "") -> None:
        low = ">= 0" if allow_zero else "> 0"
        if not _finite(value) or value < 0 or (value == 0 and not allow_zero):
            self._fail(name, value, f"a finite number of seconds {low}" + (f" ({hint})" if hint else ""))

    def _whole(self, name: str, value, low: int, high: int | None = None, hint: str = "") -> None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
        if not ok:
            allowed = f"a whole number >= {low}" if high is None else f"a whole number from {low} to {high}"
            self._fail(name, value, allowed + (f" ({hint})" if hint else ""))

    @staticmethod
    def _fail(name: str, value, allowed: str):
        raise OptionError(f"{_flag(name)} {value!r} is not allowed: use {allowed}", option=name)

    def windowing(self, bundle: Bundle) -> Windowing:
        """Window and hop in the bundle's frames; OptionError when its frontend cannot make them."""
        try:
            return Windowing.from_seconds(bundle.meta.frontend, self.window or bundle.meta.clip_seconds, self.hop)
        except ValueError as err:
            raise OptionError(str(err), option="window" if "--window" in str(err) else "hop") from None


_DEFAULTS = {f.name: f.default for f in fields(ListenOptions)}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class ListenSummary:
    windows: int = 0
    dropped: int = 0
    by_label: dict[str, int] = field(default_factory=dict)  # events started, per label
    seconds: float = 0.0
    end_reason: str = ""
    error: str | None = None  # why the stream failed (the CLI exits 1); None when it ended or was stopped

    @property
    def events(self) -> int:
        """Events started."""
        return sum(self.by_label.values())


def open_source(options: ListenOptions, frontend: Frontend, rescan: bool = False) -> Source:
    """The source `options.input` names: a file, stdin ('-') or a microphone (`rescan`: PortAudio
    looks for devices again first, as when a lost one is reopened)."""
    kind = options.source_kind
    if kind == "stdin":
        assert options.rate is not None  # ListenOptions refuses --input - without --rate
        return StdinSource(
            options.rate, format=options.stdin_format, channels=options.stdin_channels, sample_rate=frontend.sample_rate
        )
    if kind == "file":
        assert options.input is not None  # source_kind is "file" only for an --input path
        return FileSource(
            options.input,
            sample_rate=frontend.sample_rate,
            fast=options.fast,
            frame_seconds=frontend.win_length / frontend.sample_rate,
        )
    device = int(options.device) if options.device is not None and options.device.isdigit() else options.device
    return MicrophoneSource(
        device, sample_rate=frontend.sample_rate, stall_seconds=options.stale_seconds, rescan=rescan
    )


def reopener(options: ListenOptions, frontend: Frontend, first: list[str]) -> Callable[[], Source]:
    """What reopens a lost microphone: `options.device` again after a PortAudio rescan; given
    by index, only while the index still names the device `first` holds the name of, the one
    opened at the start or, missing then, the first reopened (a replug can renumber the devices:
    never another microphone silently). The name, not the source: a source holds its ring."""

    def reopen() -> Source:
        again = open_source(options, frontend, rescan=True)
        if not isinstance(again, MicrophoneSource):
            return again
        before = first[0] if first else None
        by_index = options.device is not None and options.device.isdigit()
        if by_index and before is not None and again.device.name != before:
            raise AudioError(
                f"input device {options.device} is now {again.device.name!r}, not {before!r} "
                "(the devices were renumbered): name it by (part of) its name to follow it "
                "(--device; a service: audio.device)"
            )
        if before is None:  # missing at the start: the first one opened is it
            first.append(again.device.name)
        return again

    return reopen


class _Opening:
    """Opens (and starts) a source on a thread of its own, waiting for it in READ_SECONDS steps
    that beat and hear `stop`, at most OPEN_SECONDS: a hung sound server does not hang the loop.
    A try given up is left behind; while it is still stuck in PortAudio no other starts (two
    threads in PortAudio at once are not safe), and a source it opens late is stopped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def open(self, make: Callable[[], Source], stop: threading.Event, beat: Callable[[], None]) -> Source | None:
        if self._thread is not None and self._thread.is_alive():
            raise AudioError(
                "the sound server has not answered the previous try to open the device yet "
                f"(over {OPEN_SECONDS:g} s): it hangs; restart it, or wait"
            )
        result: dict = {}

        def work() -> None:
            source = None
            try:
                source = make()
                started = source.start()
            except BaseException as err:  # AudioError, or PortAudio's own: reported to the loop
                if source is not None:
                    source.stop()
                result["error"] = detached(err)  # its frames (this one's too) would hold the source
                return
            with self._lock:
                if result.get("abandoned"):
                    started.stop()
                else:
                    result["source"] = started

        self._thread = thread = threading.Thread(target=work, name="reopen device", daemon=True)
        thread.start()
        deadline = time.monotonic() + OPEN_SECONDS
        while thread.is_alive() and not stop.is_set() and time.monotonic() < deadline:
            beat()
            thread.join(READ_SECONDS)
        with self._lock:
            if "source" not in result and "error" not in result:
                result["abandoned"] = True
                if stop.is_set():
                    return None
                raise AudioError(
                    f"opening the device did not finish within {OPEN_SECONDS:g} s (the sound server is not "
                    "responding): given up, tried again later"
                )
        if "error" in result:
            err = result.pop("error")
            try:
                raise err if isinstance(err, AudioError) else AudioError(f"cannot open the device: {err}")
            finally:
                del err  # raised, it holds this frame: a cycle through this frame's own name for it
        if stop.is_set():
            result["source"].stop()
            return None
        return result["source"]


class DigitalSilence(AudioError):
    """A source that delivered only digital silence for `max_silence` (muted, or moved to an idle
    PulseAudio source): lost, but it was open and read all along."""


@dataclass(frozen=True)
class Reconnect:
    """How the loop gets a lost device back: `reopen()` opens it again, tried at once, then
    after waits that double from BACKOFF_FIRST up to `backoff_max` seconds (`delay`)."""

    reopen: Callable[[], Source]
    backoff_max: float

    def delay(self, tries: int) -> float:
        """Seconds to wait before the next try after `tries` failed ones (0: the first, at once).
        The wait is jittered within its upper half: devices that lost one sound server do not
        retry in step, and no wait collapses to nothing."""
        if tries == 0:
            return 0.0
        cap = min(self.backoff_max, BACKOFF_FIRST * 2.0 ** min(tries - 1, 30))
        return cap * random.uniform(0.5, 1.0)


WHY_STOPPED = {"stopped": "asked to stop: a signal or Ctrl-C"}  # end reasons said otherwise in the last status


def scorer_for(
    bundle: Bundle,
    label_set: LabelSet,
    threads: int | None = None,
    heard: bool = False,
    agree: float | None = None,
    stop: threading.Event | None = None,
) -> tuple[Scorer, Vocabulary | None]:
    """The scorer `listen` uses for `label_set` on `bundle` (`agree`: --agree), and the bundle's
    vocabulary when that scorer needs the vocabulary graph on every window (a label no one trained,
    or the bundle's head or intruder measurement: edge.vocabulary) or `heard` asks what it hears,
    else None (the graph is not run). `stop` set while the set is embedded raises
    edge.labels.embeddings.Stopped."""
    from edge.labels.embeddings import label_embeddings_for

    embeddings = label_embeddings_for(bundle, label_set, threads, stop)
    vocabulary = Vocabulary.from_bundle(bundle)
    scorer = Scorer.for_bundle(bundle.meta, embeddings, label_set, vocabulary=vocabulary, agree=agree)
    return scorer, vocabulary if scorer.fusion is not None or heard else None


def fitted_notes(label_set: LabelSet, options: ListenOptions, windowing: Windowing) -> list[tuple[str, str]]:
    """A warning when this run's window, hop, smoothing, minimum duration, release or level gate
    differ from those the set's thresholds were fitted under (its `fitted_for`): the same
    thresholds then start more or fewer events than the fit measured. A hold longer than the fit's
    (a set fitted before holds: 0) only merges events, so it is not said; a shorter one is."""
    assert label_set.fitted_for is not None
    now = {
        "window": windowing.window_seconds,
        "hop": windowing.hop_seconds,
        "smooth": options.smooth,
        "min_duration": options.min_duration,
        "release": options.release,
        "min_level": options.min_level,
    }
    if options.hold < label_set.fitted_for.get("hold", 0.0) - 1e-6:
        now["hold"] = options.hold

    def same(a: float | None, b: float | None) -> bool:
        return a is None and b is None or a is not None and b is not None and math.isclose(a, b, abs_tol=1e-6)

    def shown(value: float | None) -> str:
        return "off" if value is None else f"{value:g}"

    fitted = label_set.fitted_for  # min_level left out: the gate was off
    differ = [
        (key, fitted.get(key), value)
        for key, value in now.items()
        if (key in fitted or key == "min_level") and not same(fitted.get(key), value)
    ]
    if not differ:
        return []

    changes = ", ".join(f"{key} {shown(fitted)} -> {shown(value)}" for key, fitted, value in differ)
    return [
        (
            "warning",
            f"label set {label_set.name!r}: its thresholds were fitted for other listen settings ({changes}): "
            "they start more or fewer events than the fit measured; listen with the settings they were fitted "
            "for, or fit them again with these",
        )
    ]


NEGATION = re.compile(r"(?:^|\s)(?:not|no|non|without|never|except)(?:\s|-|$)", re.IGNORECASE)


def reading_notes_of(bundle: Bundle, label_set: LabelSet) -> list[tuple[str, str]]:
    """Label names the text tower cannot read as meant: a negation (it reads the words, not the
    "not": `not a dog` is scored as a dog), and edge.labels.embeddings.reading_notes for a set
    with a name beyond ASCII (the bundle's tokenizer is read only then; without one: nothing)."""
    notes = [
        (
            "warning",
            f"label {label.name!r}: a label names a sound to detect, and the text tower reads its words, not a "
            "negation: it is scored as what it negates; leave such sounds out of the set instead",
        )
        for label in label_set.labels
        if NEGATION.search(label_text(label.reads))
    ]
    if all(label.reads.isascii() for label in label_set.labels):
        return notes
    from edge.labels.embeddings import reading_notes
    from edge.labels.tokenizers import load_tokenizer
    from edge.labels.tokenizers.base import TokenizerError

    try:
        return notes + reading_notes(label_set, load_tokenizer(bundle.tokenizer_dir))
    except TokenizerError:
        return notes


def clocks() -> tuple[datetime, float, float]:
    """Now; the wall clock less the time since boot (a change is a step of the wall clock);
    the time since boot less the monotonic time (a rise is a suspend)."""
    now, boot = datetime.now(timezone.utc), since_boot()
    return now, now.timestamp() - boot, boot - time.monotonic()


def untrained_labels(bundle: Bundle, label_set: LabelSet) -> list[str]:
    """The set's labels that are none of the classes the bundle's model trained on (model.json's
    training.class_names; [] where the bundle does not record them, or has a vocabulary branch,
    which scores such labels and whose start notes say so)."""
    trained = bundle.meta.training.get("class_names")
    if bundle.meta.vocabulary is not None:
        return []
    if not isinstance(trained, list) or not all(isinstance(name, str) for name in trained):
        return []
    keys = {label_key(name) for name in trained}
    return [name for name in label_set.names if label_key(name) not in keys]


def start_notes(
    bundle: Bundle,
    label_set: LabelSet,
    scorer: Scorer,
    vocabulary: Vocabulary | None,
    windowing: Windowing,
    agree: float | None = None,
    options: ListenOptions | None = None,
) -> list[tuple[str, str]]:
    """What `listen` says at its start about a label set on a bundle, (level, message) pairs: the
    labels no one trained and what scores them, weakly named ones, an agreement (`agree`: --agree,
    or the set's) that checks nothing, thresholds fitted under other listen settings (`options`),
    a hop that skips audio. `check-config` prints the same."""
    from edge.labels.labelset import DEFAULT_THRESHOLD

    notes: list[tuple[str, str]] = []
    untrained = untrained_labels(bundle, label_set)
    if untrained:
        notes.append(
            (
                "warning",
                f"labels this model never trained: {', '.join(untrained)}; without a vocabulary branch they are "
                "scored by their text alone, which only the trained classes were tuned for: expect them to be "
                "unreliable (check with `semanticac-calibrate scores` on clips of them)",
            )
        )
    if scorer.kind == "softmax" and len(scorer.labels) == 1:
        notes.append(
            (
                "warning",
                f"label set {label_set.name!r} has one label, and this bundle's scores are a softmax over the set: "
                f"{scorer.labels[0]} scores 1 in every window, whatever is heard; add a label for the other sounds "
                "(the softmax then chooses between them), or use a bundle that scores each label on its own (the "
                "demo bundle does)",
            )
        )
    if scorer.fusion is not None and vocabulary is not None:
        meanings = scorer.fusion.meanings(scorer.labels, vocabulary.names, k=1)
        if meanings:
            named = ", ".join(f"{label} (as {meaning})" for label, meaning in meanings.items())
            vetoed = scorer.fusion.vetoed(scorer.labels)
            held = f"; beside them, held back where the vocabulary does not hear them: {', '.join(vetoed)}"
            outweighed = scorer.fusion.outweighed(scorer.labels)
            give = f"; held back where a new label is heard far above their own recordings: {', '.join(outweighed)}"
            notes.append(
                (
                    "info",
                    f"labels no one trained, scored by the bundle's vocabulary: {named}"
                    + (held if vetoed else "")
                    + (give if outweighed else ""),
                )
            )
            biased = {label.name for label in label_set.labels if label.bias != 0.0}
            if not label_set.calibrated_new and (label_set.temperature != 1.0 or biased & set(meanings)):
                notes.append(
                    (
                        "warning",
                        f"label set {label_set.name!r} was calibrated before a calibration reached new labels: its "
                        f"temperature and biases are not applied to {', '.join(meanings)}; run `semanticac-calibrate "
                        "scores` again to calibrate them too (or, for a calibration written by hand for them, add "
                        "`new_labels: true` to its `calibration:`)",
                    )
                )
            own = {label.name: label.threshold for label in label_set.labels}
            fitted = label_set.fitted_for is not None  # calibrate thresholds kept (or chose) these thresholds
            guessed = [label for label in meanings if own.get(label) == DEFAULT_THRESHOLD and not fitted]
            # a label added to a fitted set afterwards: calibrate writes a threshold for every label it fits
            later = [
                label.name
                for label in label_set.labels
                if fitted and label.name in meanings and not label.own_threshold
            ]
            if later:
                notes.append(
                    (
                        "info",
                        f"{', '.join(later)}: no threshold of its own in a set whose thresholds were fitted "
                        f"(fitted_for): added since, its threshold ({', '.join(f'{own[n]:g}' for n in later)}) is a "
                        "first guess: run `semanticac-calibrate thresholds` again to fit it too",
                    )
                )
            if guessed:
                notes.append(
                    (
                        "info",
                        f"{', '.join(guessed)}: threshold {DEFAULT_THRESHOLD:g}, a first guess: the vocabulary also "
                        "hears a label's near kin (speech in a laugh or a cough), so expect false alarms until "
                        "`semanticac-calibrate thresholds` fits them to recordings of the site",
                    )
                )
        for label, nearest in scorer.fusion.weakly_named(scorer.labels, vocabulary.names).items():
            notes.append(("warning", f"label {label!r}: {WEAK_NAME_ADVICE.format(nearest=nearest)}"))
    notes += reading_notes_of(bundle, label_set)
    if vocabulary is not None:
        notes += vocabulary.kin_notes(scorer.matrix_t.T, scorer.labels, scorer.read_as)
        notes += vocabulary.own_text_notes(
            scorer.matrix_t.T, scorer.labels, [label.prompts for label in label_set.labels], scorer.read_as
        )
    never = [label.name for label in label_set.labels if label.threshold >= 1.0]
    if never:
        notes.append(
            (
                "warning",
                f"{', '.join(never)}: threshold 1 is reached only by a score of exactly 1, which almost never comes: "
                "such a label starts almost no event; use 0.99 or less",
            )
        )
    if scorer.fusion is not None:
        own_new = [k.name for k, new in zip(label_set.labels, scorer.fusion.novel) if new and k.agree is not None]
        if own_new:
            notes.append(
                (
                    "warning",
                    f"{', '.join(own_new)}: `agree` has no effect on a label no one trained (the student's "
                    "agreement checks a trained label's events; the vocabulary alone scores a new one)",
                )
            )
    asked = agree is not None or any(a is not None for a in label_set.agreement())
    if asked and (scorer.fusion is None or scorer.fusion.head_rows is None):
        notes.append(
            (
                "warning",
                "the student's agreement (--agree, agree: in the label set) has no effect here: no label of "
                f"{label_set.name!r} is scored with a vocabulary head (bundle {bundle.path} has none in its "
                "model.json, or every label is new)",
            )
        )
    if label_set.fitted_model is not None and label_set.fitted_model != bundle.meta.model_id:
        notes.append(
            (
                "warning",
                f"label set {label_set.name!r}: its thresholds and calibration were fitted on model "
                f"{label_set.fitted_model}, and bundle {bundle.path} is {bundle.meta.model_id} (a new version's "
                "demo bundle is another model): they start more or fewer events than the fit measured; fit them "
                "again on this bundle (`semanticac-calibrate thresholds`, and `scores` for a calibration), or "
                "listen with the bundle they were fitted on",
            )
        )
    if label_set.fitted_for and options is not None:
        notes += fitted_notes(label_set, options, windowing)
        head = None if vocabulary is None else vocabulary.head
        if agree is not None and head is not None and scorer.fusion is not None and scorer.fusion.head_rows is not None:
            # the fit heard the set's agreement (calibrate thresholds --agree writes it as the set's), else the head's
            heard_with = {"off" if a is None else f"{a:g}" for a in label_set.agreement(default=head.agree)}
            if heard_with != {f"{agree:g}"}:
                notes.append(
                    (
                        "warning",
                        f"label set {label_set.name!r}: its thresholds were fitted with the student's agreement "
                        f"{' / '.join(sorted(heard_with))}, this run has --agree {agree:g} (a service: listen.agree): "
                        "they start more or fewer events than the fit measured; leave --agree out, or fit them again "
                        "with it",
                    )
                )
    if options is not None and options.fast and options.input not in (None, "-"):
        notes.append(
            (
                "info",
                "--fast (a service: audio.fast): a date is this start plus the file's own seconds, so it runs ahead "
                "of the clock by the time the replay saves; `t` is the position in the file",
            )
        )
    if windowing.hop_frames > windowing.window_frames:
        notes.append(
            (
                "warning",
                f"hop {windowing.hop_seconds:g} s is longer than the window "
                f"{windowing.window_seconds:g} s: {windowing.hop_seconds - windowing.window_seconds:g} s "
                "of audio between windows is never analysed; use a hop <= the window",
            )
        )
    return notes


def listen(
    options: ListenOptions,
    sink: Sink | None = None,
    stop: threading.Event | None = None,
    source: Source | None = None,
    backend: Backend | None = None,
    heartbeat: Callable[[], None] | None = None,
    tap: Callable[[Source, float], Source] | None = None,
    label_set: LabelSet | None = None,
) -> ListenSummary:
    """Compose the pipeline that `options` describe and run it until the source ends or `stop` is set.

    `sink`: where results go (default: make_sink(json_lines=options.json) on stdout);
    `source`: an already opened source instead of the one `options.input` names (tests, the
    demo); `backend`: an opened backend instead of the one `options.backend` selects (tests);
    `heartbeat`: called from the loop after every read (at least every READ_SECONDS while it
    turns, also while it waits to reopen a lost device), never from another thread, so a hung
    inference or a wedged loop stops the calls (the service's watchdog). Raises a
    SemanticACError subclass for anything wrong before audio flows (bundle, labels, graph,
    device: with `options.reconnect` a microphone that cannot be opened is lost instead, and
    retried); a failure mid-stream is reported in the summary (`error`). `tap(source, t)`
    wraps every source the loop reads (the first at stream time 0, each reopened one at the
    time its segment starts): the service's clip recorder. `label_set`: an already resolved set
    instead of the one `options.labels` names (the service: with its config's thresholds).
    """
    from edge.labels.embeddings import Stopped
    from edge.labels.labelset import resolve_label_set

    stop = stop or threading.Event()
    bundle, origin = resolve_bundle_origin(options.bundle)
    label_set = label_set or resolve_label_set(options.labels, bundle.path / "labels")
    windowing = options.windowing(bundle)
    try:
        scorer, vocabulary = scorer_for(
            bundle, label_set, options.threads, heard=options.heard > 0, agree=options.agree, stop=stop
        )
    except Stopped:  # asked to stop before any audio (the embedding said so): a stop, not a failure
        return ListenSummary(end_reason="stopped")
    if options.heard and vocabulary is None:
        raise OptionError(
            f"--heard {options.heard} is not allowed: bundle {bundle.path} has no vocabulary branch "
            "(model.json `vocabulary`) to say what it hears; leave --heard out",
            option="heard",
        )
    backend = backend or select_backend(bundle, options.backend, threads=options.threads)  # a bad graph fails here
    branch = None  # the vocabulary graph
    if vocabulary is not None:
        try:
            branch = select_backend(bundle, graph="vocabulary", threads=options.threads)
        except BaseException:
            backend.close()
            raise
    reconnect = None
    first: list[str] = []  # the name of the device opened at the start, when it opened
    if options.reconnect and source is None:
        reconnect = Reconnect(reopener(options, bundle.meta.frontend, first), options.backoff_max)
    try:
        source = source or open_source(options, bundle.meta.frontend)
        if isinstance(source, MicrophoneSource):
            first.append(source.device.name)
    except AudioError:
        if reconnect is None:
            _close(backend, branch)
            raise
        source = None  # lost from the start: the loop reports it and retries
    except BaseException:
        _close(backend, branch)
        raise
    detector = EventDetector.from_label_set(
        label_set, release_ratio=options.release, min_duration=options.min_duration, hold=options.hold
    )
    own_sink = sink is None
    sink = sink or make_sink(
        json_lines=options.json, thresholds={label.name: label.threshold for label in label_set.labels}
    )
    try:
        with backend, branch or contextlib.nullcontext():
            listener = Listener(
                bundle,
                backend,
                scorer,
                detector,
                Smoother(options.smooth),
                sink,
                windowing,
                k=options.top_k,
                max_batch=options.max_batch,
                min_level=options.min_level,
                max_silence=options.max_silence,
                vocabulary=None if branch is None or vocabulary is None else partial(vocabulary.scores, branch),
                heard=(vocabulary.names, options.heard) if options.heard and vocabulary is not None else None,
                # in a shell the status line on stdout and the log line on stderr would say it twice
                log_statuses=not (own_sink and same_terminal(sys.stdout, sys.stderr)),
            )
            notes = [("info", f"model: {origin}")] if origin.startswith("the demo bundle") else []
            notes += start_notes(bundle, label_set, scorer, vocabulary, windowing, options.agree, options)
            handed, source = [source], None  # run() lets go of each source it has read: this frame would keep the first
            return listener.run(handed.pop(), stop, notes=notes, heartbeat=heartbeat, reconnect=reconnect, tap=tap)
    finally:
        if own_sink:
            sink.close()


def _close(*backends: Backend | None) -> None:
    for backend in backends:
        if backend is not None:
            backend.close()


class Listener:
    """One label set, one model, one source: run() until the source ends or `stop` is set.

    With a `Reconnect`, run() goes on over segments: each opened source is one, read until it
    is lost; then the open events end, `audio_lost` is reported and the source is reopened.
    Each segment starts a fresh log-mel, window count, level meter and smoothing, at the stream
    time given by the wall clock (see the module docstring).
    """

    def __init__(
        self,
        bundle: Bundle,
        backend: Backend,
        scorer: Scorer,
        detector: EventDetector,
        smoother: Smoother,
        sink: Sink,
        windowing: Windowing,
        k: int = 3,
        max_batch: int = 4,
        min_level: float | None = None,
        max_silence: float | None = None,
        vocabulary: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
        heard: tuple[tuple[str, ...], int] | None = None,
        log_statuses: bool = True,
    ):
        """`vocabulary`: the audio graph's inputs and outputs -> the vocabulary graph's [N, V]
        scores, for a scorer that fuses them (edge.vocabulary) or for `heard`; None: the student's
        scores alone. `heard`: (the vocabulary's class names, how many of its top classes each
        window reports), or None. `log_statuses`: each status is logged as well as given to the sink
        (False: the sink shows it on the terminal the log would write to)."""
        if max_batch < 1:
            raise ValueError(f"max_batch {max_batch} must be at least 1")
        self.min_level = min_level  # dBFS: a quieter window is gated (digital silence always is)
        self.max_silence = max_silence  # seconds of digital silence before the source counts as lost
        self.frontend = bundle.meta.frontend
        self.gain = bundle.meta.gain  # each window's automatic gain (edge.features.WindowGain), or None
        self.backend, self.scorer, self.detector, self.smoother = backend, scorer, detector, smoother
        self.sink, self.windowing, self.k, self.max_batch = sink, windowing, k, max_batch
        self.summary = ListenSummary()
        self.log_statuses = log_statuses
        self._t = 0.0  # stream time of the latest window
        self._offset = 0.0  # stream time of the current segment's first sample
        self._clock_checked = 0.0  # stream time of the last check against the wall clock
        self._skew = 0.0  # wall clock - time since boot at the last read: a change is a step of the wall clock
        self._asleep = 0.0  # time since boot - monotonic time at the last read: a rise is a suspend
        self._dated_unsynchronised = False  # this run's dates came from a clock the kernel said was not synchronised
        self._opening = _Opening()  # tries to reopen a lost device, each time-boxed
        self._vocabulary = vocabulary
        self._heard = heard
        self._arrived = time.perf_counter()  # when the audio that completed the newest window arrived
        self._silence = log_floor_value(self.frontend) + 1e-3
        self._silent_since: float | None = None
        self._silence_warned = False
        self._microphone = False  # the segment's source is a microphone (not a file or stdin)
        self._silent_samples = 0  # digital silence in a row, in model-rate samples
        self._clipped_said = 0  # the source's clipped samples as of the last "clipping" status
        self._clipping_at = -math.inf  # monotonic time of that status
        self._cancelling_at = -math.inf  # monotonic time of the last "channels_cancel" status
        self._dropped_said, self._overload_at = 0, -math.inf  # windows dropped as of the last overload status, its time
        # the overload said and not yet said to be over: (windows dropped before it, monotonic time of its first
        # and of its latest drop); None: none
        self._overload: tuple[int, float, float] | None = None
        # since_boot() times (a suspend counts): of the loss, None while audio flows; of the last audio read that
        # was not digital silence (the run's start before any); of the last restore
        self._lost_at: float | None = None
        self._heard_at = 0.0
        self._tries = 0  # tries to reopen since the loss
        self._tries_at_loss = 0  # _tries when the loss was said (a device that flaps keeps counting them)
        self._still_lost = Repeats(STILL_LOST_EVERY, clock=since_boot)  # the "still no audio" lines
        self._reached: np.ndarray | None = None  # each label's highest smoothed score (what events read)
        self._shown: np.ndarray | None = None  # each label's highest score of one window (what windows show)
        self._read: np.ndarray | None = None  # ... of what events read of one window (after the agreement)
        # a source lost to digital silence was open all along (the silence was its wait): reopen it
        # at once, so audio after an unmute is not missed for a backoff
        self._reopen_at_once = False
        self._restored_at: float | None = None
        self._slack = 0.0  # stream time of the last gap: how far back a reopened source's dates may move
        self._listening = False

    def run(
        self,
        source: Source | None,
        stop: threading.Event | None = None,
        notes: Sequence[tuple[str, str]] = (),
        heartbeat: Callable[[], None] | None = None,
        reconnect: Reconnect | None = None,
        tap: Callable[[Source, float], Source] | None = None,
    ) -> ListenSummary:
        """Read `source` until it ends, fails or `stop` is set; `notes`: (level, message) status
        lines to emit first (after the model, before the first window); `heartbeat`: called
        after every read and the windows it completed (see `listen`). `reconnect`: a lost
        source is reopened instead of failing the run (`source` None: open it first); `tap`:
        wraps each source read, given the stream time its segment starts at (see `listen`)."""
        stop = stop or threading.Event()
        beat = heartbeat or (lambda: None)
        began = time.monotonic()
        self._heard_at = since_boot()
        now, self._skew, self._asleep = clocks()
        self.sink.start_clock(now)
        self._dated_unsynchronised = clock_synchronised() is False
        for level, message in notes:
            self._status(level, message)
        failure: SemanticACError | None = None
        while True:
            if source is None:  # lost (or not found at the start): reopen it
                assert reconnect is not None, "run() needs a source, or a Reconnect to open one"
                try:
                    source = self._reopen(reconnect, stop, beat)
                except AudioError as err:  # PortAudio is wedged: a fresh process is the way back
                    failure = err
                    break
                if source is None:  # stopped while waiting
                    self.summary.end_reason = "stopped"
                    break
                self._offset = max(self._t, time.monotonic() - began)
                self._slack, self._t = self._offset - self._t, self._offset
            if tap is not None:
                source = tap(source, self._offset)
            failure = self._segment(source, stop, beat)
            source = None
            if reconnect is None or not isinstance(failure, AudioError) or stop.is_set():
                break
            self._lose(failure, reconnect)
            self._reopen_at_once = isinstance(failure, DigitalSilence)
            failure = None
        self.summary.seconds = self._t
        if failure is not None:
            self.summary.error = str(failure)
            code = "source_error" if isinstance(failure, AudioError) else "backend_error"
            self._status("error", str(failure), code=code)
        elif self.summary.events == 0 and self._reached is not None:
            self._say_why_no_event()
        self._status(
            "info",
            f"stopped ({'failed' if failure else WHY_STOPPED.get(self.summary.end_reason, self.summary.end_reason)}): "
            f"{plural(self.summary.windows, 'window')}, {self.summary.dropped} dropped, "
            f"{plural(self.summary.events, 'event')}",
        )
        return self.summary

    def _say_why_no_event(self) -> None:
        """A run that started no event although a label's smoothed score reached its threshold (a
        clip of 5 s is one window): why, so `crying baby 1.000` and "0 events" do not contradict."""
        assert self._reached is not None
        reached = [
            f"{label} {peak:.3f} (threshold {threshold:g})"
            for label, peak, threshold in zip(self.scorer.labels, self._reached, self.detector.thresholds)
            if peak >= threshold
        ]
        assert self._shown is not None and self._read is not None
        rows = list(zip(self.scorer.labels, self._shown, self._read, self._reached, self.detector.thresholds))
        held = [f"{label} {shown:.3f}" for label, shown, read, _, threshold in rows if shown >= threshold > read]
        if held:
            self._status(
                "info",
                f"no event, though {', '.join(held)} reached the threshold in a window: the student alone did not "
                "agree there (an event of a trained label needs the student's own score at its agreement too: "
                "--agree, agree: in the label set)",
            )
        glimpsed = [
            f"{label} {read:.3f} in a window (averaged, at most {peak:.3f}; threshold {threshold:g})"
            for label, _, read, peak, threshold in rows
            if read >= threshold > peak
        ]
        if glimpsed and not reached:
            self._status(
                "info",
                f"no event, though {', '.join(glimpsed)} reached the threshold: an event reads a label's score "
                f"averaged over {plural(self.smoother.windows, 'window')} (--smooth; a service: listen.smooth), "
                "and a sound heard in one window alone does not hold it there",
            )
        if reached:
            self._status(
                "info",
                f"no event, though {', '.join(reached)} reached the threshold: an event needs a label's score, "
                f"averaged over {plural(self.smoother.windows, 'window')}, at or above its threshold for "
                f"{self.detector.min_duration:g} s (--min-duration; a service: listen.min_duration), and "
                f"{plural(self.summary.windows, 'window')} {'was' if self.summary.windows == 1 else 'were'} heard"
                + (
                    "; a clip alone is one window: hear it in the stream it came from, or with silence around it"
                    if self.summary.windows <= self.smoother.windows
                    else ""
                ),
            )

    def _segment(self, source: Source, stop: threading.Event, beat: Callable[[], None]) -> SemanticACError | None:
        """Read one opened source from `self._offset` on until it ends, fails or `stop` is set;
        end the open events at its end. Returns the failure (AudioError, BackendError) or None."""
        live = is_live(source)
        self._microphone = isinstance(source, MicrophoneSource)  # what digital silence is asked about
        mel, queue = StreamingLogMel(self.frontend), FrameQueue(self.frontend.n_mels)
        self._levels = LevelMeter(self.frontend.hop_length, self.frontend.sample_rate)
        self.smoother.reset()
        self._silent_samples = 0
        self._clipped_said = 0  # a new source counts from 0
        self._cancelling_at = -math.inf  # and is judged afresh
        next_k = 0
        anchored = not live or self.sink.origin_given  # a live source's first audio dates it (see _anchor)
        failure: SemanticACError | None = None
        # Read up to a model window at a time: after a slow inference everything waiting is
        # taken at once, so the windows that are too late can be dropped instead of queued.
        read_size = self.frontend.seconds_to_samples(self.frontend.window_seconds)
        try:
            source.start()
        except AudioError as err:  # a device that fails as it starts (busy at a boot): lost, so reopened
            source.stop()
            return err
        with source:
            if not self._listening:
                self._listening = True
                self._status(
                    "info",
                    f"listening to {source.name}: window {self.windowing.window_seconds:g} s, "
                    f"hop {self.windowing.hop_seconds:g} s, {len(self.scorer.labels)} labels, "
                    f"backend {self.backend.name}",
                )
            try:
                while not stop.is_set():
                    block = source.read(read_size, timeout=READ_SECONDS)
                    if block is None:
                        break
                    if block.size:
                        self._arrived = time.perf_counter()  # latency runs from here to the window's scores
                        if not anchored and block.size < read_size:  # caught up: the newest sample is now
                            anchored = True
                            self._anchor(self._offset + (mel.samples_seen + block.size) / self.frontend.sample_rate)
                        self._supervise(block, source)
                        self._levels.push(block)
                        queue.append(mel.push(block))
                        next_k = self._process_ready(queue, next_k, drop_late=live)
                        self._check_silence(source)
                        if live and block.size < read_size:  # caught up: the newest sample is now
                            self._keep_time(self._offset + queue.end * self.windowing.seconds_per_frame)
                    beat()
                ended = not stop.is_set()
                if ended and isinstance(source, StdinSource) and not source.frames_read:
                    raise AudioError(  # a sender that died at once: no stream was heard (a stop is no failure)
                        "stdin closed before a whole frame of audio arrived: is the command that writes to it "
                        "running? (e.g. arecord -t raw ... | semanticac-edge listen --input - ...)"
                    )
                if ended:  # the last frames need the end of the signal (right-hand padding)
                    next_k = self._finish(mel, queue, next_k)
            except (AudioError, BackendError) as err:  # score what came before, then report
                # without tracebacks: their frames hold the source, and the source its error, a cycle that
                # kept each lost microphone's ring (1.7 MiB at 44.1 kHz stereo) until a full collection
                failure = detached(err)
                if isinstance(err, AudioError):
                    try:
                        next_k = self._finish(mel, queue, next_k)
                    except BackendError as second:
                        log.warning("could not score the audio before the failure: %s", second)
            self.summary.end_reason = (
                f"failed: {failure}"
                if failure
                else source.end_reason or ("stopped" if stop.is_set() else "end of stream")
            )
            overflows = source.overflows
        t_end = self._offset + mel.samples_seen / self.frontend.sample_rate  # (frames: one more, centred)
        for event in self.detector.flush(max(t_end, self._t)):
            self._emit_event(event)
        self._t = t_end
        if overflows:
            self._status("warning", f"{overflows} input frames were lost: the reader fell behind the device")
        return failure

    def _anchor(self, t: float) -> None:
        """`t`: the stream time of the first audio of a live source read as it came (the newest
        sample is now): the dates from here are the clock's. The stream time of a source opened
        after a loss starts at the wall-clock time elapsed, but its first audio comes later
        (PulseAudio's first delivery takes up to ~3 s) or sooner (captured while the open was
        waited for) than that: a reopen is no step of the clock. A step or a suspend meanwhile
        is left to _keep_time, which says so."""
        now, skew, asleep = clocks()
        if abs(skew - self._skew) >= CLOCK_TOLERANCE or asleep - self._asleep >= CLOCK_TOLERANCE:
            return
        # back by the gap at most: a date never comes before one given already (a fast audio clock had put
        # them ahead of the wall clock, by up to CLOCK_TOLERANCE before _keep_time follows)
        moved = max((now - (self.sink.origin + timedelta(seconds=t))).total_seconds(), -self._slack)
        self.sink.start_clock(self.sink.origin + timedelta(seconds=moved))
        self._clock_checked = t
        log.debug("dates follow the audio's arrival from stream time %.3f s (%+.3f s)", t, moved)

    def _keep_time(self, t: float) -> None:
        """`t`: the stream time of the audio just read, which is now (the read drained what was
        waiting: a backlog behind a slow model is not a clock that moved): the dates follow the
        wall clock when they have moved CLOCK_TOLERANCE from it (see CLOCK_CHECK_SECONDS), at
        once when the wall clock stepped or the system was suspended (the audio stopped with it)."""
        if self.sink.origin_given:
            return
        now, skew, asleep = clocks()
        stepped, self._skew = abs(skew - self._skew) >= CLOCK_TOLERANCE, skew
        slept, self._asleep = asleep - self._asleep, asleep  # the audio stopped with the system: dates lag
        if not stepped and slept < CLOCK_TOLERANCE and t - self._clock_checked < CLOCK_CHECK_SECONDS:
            return
        self._clock_checked = t
        moved = (now - (self.sink.origin + timedelta(seconds=t))).total_seconds()
        if abs(moved) < CLOCK_TOLERANCE:
            return
        self.sink.start_clock(now - timedelta(seconds=t))
        redated = stepped and self._dated_unsynchronised
        if redated:  # the dates before were the unset clock's: they move with it
            self.sink.redate(timedelta(seconds=moved))
        self._dated_unsynchronised = clock_synchronised() is False
        if slept >= CLOCK_TOLERANCE and not stepped:
            self._status("info", f"the system was suspended for {slept:.0f} s: dates follow the clock from here")
            return
        self._status(
            "warning" if abs(moved) >= CLOCK_STEP_WARNING else "info",
            f"the system clock is {moved:+.1f} s from the audio's own count since it began: dates follow the "
            "clock from here"
            + (
                " (and this run's earlier dates in the event log move with it: the clock was not synchronised)"
                if redated
                else ""
            ),
            code="clock_step",
        )

    def _supervise(self, block: np.ndarray, source: Source) -> None:
        """Per block read: count digital silence (when `max_silence` watches for it); audio
        while lost restores the source (not digital silence when it is watched for)."""
        silent = self.max_silence is not None and float(np.abs(block).max()) <= DIGITAL_SILENCE
        self._silent_samples = self._silent_samples + block.size if silent else 0
        if not silent:
            self._heard_at = since_boot()
        if self._lost_at is not None and not silent:
            lost_for, self._lost_at = self._heard_at - self._lost_at, None
            self._restored_at = self._heard_at
            self._status("info", f"audio restored: {source.name} after {lost_for:.1f} s lost", code="audio_restored")
        if source.cancelling is not None and time.monotonic() - self._cancelling_at >= CLIPPING_STATUS_SECONDS:
            self._cancelling_at = time.monotonic()  # as clipping: a wiring fault lasts, and MQTT holds it a while
            self._status("warning", source.cancelling, code="channels_cancel")
        clipped = source.clipped_samples - self._clipped_said
        if clipped > 0 and time.monotonic() - self._clipping_at >= CLIPPING_STATUS_SECONDS:
            self._clipped_said, self._clipping_at = source.clipped_samples, time.monotonic()
            self._status(
                "warning",
                f"{source.name} clips: {plural(clipped, 'input sample')} at full scale: {source.clipping_fix}",
                code="clipping",
            )

    def _check_silence(self, source: Source) -> None:
        """Digital silence beyond `max_silence` loses the source (after its windows are scored)."""
        if self.max_silence is not None and self._silent_samples >= self.max_silence * self.frontend.sample_rate:
            raise DigitalSilence(
                f"{source.name} delivered only digital silence for {self.max_silence:g} s "
                "(muted, or its stream was moved to an idle source)"
            )

    def _lose(self, reason: AudioError, reconnect: Reconnect) -> None:
        """The first failure since audio last flowed: report it (later ones while lost are logged)."""
        if self._lost_at is not None:
            self._say_still_lost(reason)
            return
        self._lost_at = self._heard_at  # a device that stalled or went silent was lost when it was last heard
        if self._restored_at is not None and since_boot() - self._restored_at > reconnect.backoff_max:
            self._tries = 0  # a device that flaps (lost soon after each restore) keeps its longer waits
        self._tries_at_loss = self._tries  # each loss's tries are said afresh
        self._still_lost.reset()
        self._status(
            "warning",
            f"audio lost: {reason}; reopening it, waiting up to {reconnect.backoff_max:g} s between tries",
            code="audio_lost",
        )

    def _say_still_lost(self, reason: AudioError) -> None:
        """A try that failed while lost, in the log: the first STILL_LOST_TRIES, then one a STILL_LOST_EVERY
        or when the reason is another (numbers aside). Every try had its line: a microphone lost for
        months wrote 3,900 a day to the journal (an SD card's)."""
        tries = self._tries - self._tries_at_loss
        # the reason without the note on PortAudio's device list, there while a rescan waits
        said = gist(str(reason)).replace(gist(rescan_note(0, 0)), "")
        if not self._still_lost.due(said, force=tries <= STILL_LOST_TRIES):
            return
        now = since_boot()
        lost_for = now - (self._lost_at if self._lost_at is not None else now)
        log.info(
            "still no audio (try %d, %s lost): %s%s",
            tries,
            f"{lost_for / 3600:.1f} h" if lost_for >= 3600 else f"{lost_for:.0f} s",
            reason,
            f" (from here said once every {STILL_LOST_EVERY / 3600:g} h while it is the same)"
            if tries == STILL_LOST_TRIES
            else "",
        )

    def _reopen(self, reconnect: Reconnect, stop: threading.Event, beat: Callable[[], None]) -> Source | None:
        """The source opened again (started), waiting `reconnect.delay` before each try; None when stopped."""
        while self._wait(0.0 if self._reopen_at_once else reconnect.delay(self._tries), stop, beat):
            self._reopen_at_once = False
            self._tries += 1
            try:
                return self._opening.open(reconnect.reopen, stop, beat)
            except AudioError as err:
                self._lose(err, reconnect)
            stuck = stuck_close_seconds()
            if stuck >= STUCK_CLOSE_SECONDS:
                raise AudioError(
                    f"PortAudio has been stuck closing the lost device for {stuck:.0f} s (the sound server "
                    "deadlocked inside it), so this process can no longer look for devices: it stops so that it "
                    "starts afresh (the service's unit restarts it; by hand, run it again)"
                )
        return None

    @staticmethod
    def _wait(seconds: float, stop: threading.Event, beat: Callable[[], None]) -> bool:
        """Sleep `seconds` in steps of READ_SECONDS, beating after each; False once `stop` is set."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            beat()
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            stop.wait(min(left, READ_SECONDS))
        return False

    def _finish(self, mel: StreamingLogMel, queue: FrameQueue, next_k: int) -> int:
        """The end of the signal: its last frames (right-hand padding), the windows they
        complete, a stream shorter than one window scored as it is, and a last window that ends
        with the stream where the hops' windows stop short of it (a file's last seconds, up to a
        hop of them, were never heard: a sound there started no event)."""
        self._arrived = time.perf_counter()
        self._levels.flush()
        queue.append(mel.flush())
        next_k = self._process_ready(queue, next_k, drop_late=False)
        w = self.windowing
        if next_k == 0 and queue.end > 0:
            self._infer([(0, queue.window(0, queue.end), queue.end)])
            next_k = 1
        elif next_k > 0 and (next_k - 1) * w.hop_frames + w.window_frames < queue.end:
            first = queue.end - w.window_frames
            self._infer([(first, queue.window(first, w.window_frames), w.window_frames)])
        return next_k

    def _process_ready(self, queue: FrameQueue, next_k: int, drop_late: bool) -> int:
        w = self.windowing
        ready = []
        while next_k * w.hop_frames + w.window_frames <= queue.end:
            first = next_k * w.hop_frames
            ready.append((first, queue.window(first, w.window_frames), w.window_frames))
            next_k += 1
        if drop_late and len(ready) > self.max_batch:
            late = len(ready) - self.max_batch
            now = time.monotonic()
            if self._overload is None:  # a new overload: said at once
                self._overload_at, self._dropped_said = -math.inf, self.summary.dropped
                self._overload = (self.summary.dropped, now, now)
            else:
                self._overload = (*self._overload[:2], now)
            self.summary.dropped += late
            if now - self._overload_at >= OVERLOAD_STATUS_SECONDS:
                first, unsaid = self._dropped_said == self._overload[0], self.summary.dropped - self._dropped_said
                self._dropped_said, self._overload_at = self.summary.dropped, now
                self._status(
                    "warning",
                    (
                        f"inference fell behind: dropped {plural(unsaid, 'window')} ({self.summary.dropped} so far)"
                        if first
                        else f"inference still falls behind: dropped {unsaid} more window{'s' * (unsaid != 1)} "
                        f"({self.summary.dropped} so far; said at most every {OVERLOAD_STATUS_SECONDS:g} s)"
                    )
                    + "; try a longer --hop or a faster backend",
                    code="overload",
                )
            ready = ready[late:]
        elif self._overload is not None and time.monotonic() - self._overload[2] >= OVERLOAD_STATUS_SECONDS:
            self._say_overload_ended(*self._overload)
        for i in range(0, len(ready), self.max_batch):
            self._infer(ready[i : i + self.max_batch])
        # the last window frames stay: the stream's end may come before the next window's, and a window ends with it
        keep = min(next_k * w.hop_frames, queue.end - w.window_frames)
        queue.forget_before(keep)
        self._levels.forget_before(keep)
        return next_k

    def _say_overload_ended(self, before: int, since: float, last: float) -> None:
        """The overload that began at `since` (with `before` windows dropped) and last dropped one at `last`."""
        self._overload = None
        self._status(
            "info",
            f"inference keeps up again: no window dropped for {OVERLOAD_STATUS_SECONDS:g} s; "
            f"{plural(self.summary.dropped - before, 'window')} dropped over the {last - since:.0f} s it fell behind "
            f"({self.summary.dropped} so far)",
            code="overload_ended",
        )

    def _infer(self, windows: list[tuple[int, np.ndarray, int]]) -> None:
        """Score windows (first frame, frames, their count: a window at the segment's start may be
        shorter than a whole one) and hand each to the sink, the smoothing and the events."""
        # each window's hops: those between its first and last frame centres
        hops = [self._levels.squares(first, count - 1) for first, _, count in windows]
        gains = [None if self.gain is None else self.gain.gain_db(squares) for squares in hops]
        inputs = [
            frames if gain is None else WindowGain.scale(frames, gain, self.frontend)
            for (_, frames, _), gain in zip(windows, gains)
        ]
        batch = np.stack([tile_frames(frames, self.windowing.model_frames) for frames in inputs])[:, None]
        feed = {self.backend.input_names[0]: batch}
        outputs = self.backend.run(feed)
        # [N, K]; for a set with new labels the vocabulary graph's [N, V] scores (of the window, or
        # of a map the audio graph gave) are fused in
        rows = None if self._vocabulary is None else self._vocabulary({**feed, **outputs})
        scores, evidence = self.scorer.with_evidence(
            outputs[self.backend.output_names[0]], rows if self.scorer.fusion is not None else None
        )
        agreed = evidence is not scores  # the events read something other than the scores shown
        # shown at or above their threshold, not counted: the student alone did not agree (none without agreement)
        held = (scores >= self.detector.thresholds) & (evidence < scores)
        heard: list[tuple[tuple[str, float], ...]] = [()] * len(windows)
        if self._heard is not None and rows is not None:
            names, count = self._heard
            heard = [tuple(top_k(row[: len(names)], names, count)) for row in rows]
        latency_ms = (time.perf_counter() - self._arrived) * 1000.0  # from the audio's arrival
        for (first, frames, count), squares, gain, p, e, named, kept in zip(
            windows, hops, gains, scores, evidence, heard, held
        ):
            t = self._offset + (first + count - 1) * self.windowing.seconds_per_frame  # its last frame's centre
            level = mean_square_dbfs(squares)  # the stream's own level, before any gain
            gated = level == -math.inf or (self.min_level is not None and level < self.min_level)
            self.summary.windows += 1
            self._t = t
            # a gated window counts as "nothing heard" for events (and for the smoothing after it)
            read = np.zeros_like(e) if gated else e
            smoothed = self.smoother.update(read)
            self._reached = _peak(self._reached, smoothed)
            self._read = _peak(self._read, read)
            self._shown = _peak(self._shown, np.zeros_like(p) if gated else p)
            events = self.detector.update(t, smoothed)  # said after the window, which shows the holds they leave
            self.sink.window(
                WindowResult(
                    t=t,
                    top=tuple(top_k(p, self.scorer.labels, self.k)),
                    latency_ms=latency_ms,
                    dropped=self.summary.dropped,
                    level_dbfs=level,
                    gated=gated,
                    gain_db=gain,
                    heard=named,
                    evidence=tuple(e.tolist()) if agreed else None,
                    held=() if gated else tuple(label for label, h in zip(self.scorer.labels, kept) if h),
                    holding=tuple(self.detector.holding),
                )
            )
            for event in events:
                self._emit_event(event)
            self._watch_silence(t, frames)

    def _emit_event(self, event) -> None:
        if event.kind == "start":
            self.summary.by_label[event.label] = self.summary.by_label.get(event.label, 0) + 1
        self.sink.event(event)

    def _watch_silence(self, t: float, frames: np.ndarray) -> None:
        """Warn once when the input has been digital silence (every frame at the log floor)."""
        if float(frames.max()) > self._silence:
            self._silent_since, self._silence_warned = None, False
            return
        self._silent_since = t if self._silent_since is None else self._silent_since
        if not self._silence_warned and t - self._silent_since >= SILENCE_WARN_SECONDS:
            self._silence_warned = True
            self._status(
                "warning",
                f"the input has been digital silence for {t - self._silent_since:.0f} s: "
                + (
                    "is the microphone muted or unplugged?"
                    if self._microphone
                    else "the recording holds no sound there (a muted input when it was made?)"
                ),
            )

    def _status(self, level: str, message: str, code: str | None = None) -> None:
        # an error is the summary's: the CLI reports it once, on stderr
        if self.log_statuses:
            log.log({"info": logging.INFO, "warning": logging.WARNING}.get(level, logging.DEBUG), message)
        self.sink.status(Status(t=self._t, level=level, message=message, code=code))


def is_live(source: Source) -> bool:
    """A microphone or a real-time file: audio that will not wait for a slow reader."""
    return isinstance(source, MicrophoneSource) or (isinstance(source, FileSource) and not source.fast)


def log_floor_value(frontend: Frontend) -> float:
    """The log-mel value of digital silence."""
    return float(np.log(frontend.log_floor)) if frontend.log == "ln" else 10.0 * float(np.log10(frontend.log_floor))
