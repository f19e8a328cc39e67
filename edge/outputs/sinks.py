"""Sinks: where `semanticac-edge listen` writes its results (stdout; logs go to stderr).

The listen loop passes three kinds of record: a `WindowResult` per window, an `Event`
(edge.events) per start/end, a `Status` for what a user must see in the output itself
(device lost, windows dropped). Three formats, picked by `make_sink`:

- `JsonLines` (`--json`): one JSON object per line, flushed at once (a consumer may pipe it).
  Every line: `schema` (1), `type` (window | start | end | status), `t` (stream seconds,
  3 decimals), `utc` (ISO 8601, milliseconds, `+00:00`: Python 3.10's fromisoformat reads
  it, not `Z`). window: `top` [{label, score}] best first, `latency_ms`, `dropped` (total
  so far), `level_dbfs` (20 log10 RMS of the window; null for digital silence), `gated` (true:
  below the level gate or digital silence, so no event starts), `gain_db` (the bundle's window
  gain applied before the model: edge.features.WindowGain; null when the bundle has none), `heard`
  (--heard only) and `held` (only when there is one: the labels shown at or above their threshold
  that the window's events do not count, the student alone scoring them under the agreement asked
  of it: edge.scoring) and `holding` (only when there is one: [{event_id, label, since}], the
  events held open by `hold`, their score below the release level since stream time `since`:
  edge.events); start: `event_id`, `label`,
  `score`; end: `event_id`, `label`, `duration`, `peak`;
  status: `level`, `message`, and `code` when there is one (a stable word: source_error,
  backend_error, overload, overload_ended, audio_lost, audio_restored, clipping, channels_cancel,
  clock_step; the service's add event_log, event_log_restored, clips, clips_restored, metrics,
  metrics_restored and failure). A non-finite number is written as null.
- `PlainLines` (stdout is not a terminal): one readable, greppable line per record.
- `LiveView` (a terminal): the top-k with bars, active events and counters redrawn in place
  with ANSI cursor moves; events and status lines scroll above it and stay.

`t` is seconds since the stream began; a window's `t` is the stream time of its END. `utc`
is `origin + t`, `origin` being the UTC wall-clock time of stream time 0 (the loop sets it as
it starts to read the source, `Sink.start_clock`, unless the sink was made with one). A
`start` is dated at its onset and emitted `min_duration` later (edge.events), so it follows
windows with a later `t`; with a hold (`listen.hold`) an `end` is dated where the score fell
and emitted `hold` later too.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import textwrap
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TextIO

from edge.errors import OutputError
from edge.events import Event

SCHEMA = 1
LEVELS = ("info", "warning", "error")


@dataclass(frozen=True)
class WindowResult:
    t: float  # stream time of the window's END, in seconds
    top: tuple[tuple[str, float], ...]  # (label, score), best first
    latency_ms: float  # from the arrival of the audio that completed the window to its scores
    dropped: int  # windows dropped so far because inference fell behind (cumulative)
    level_dbfs: float | None = None  # the window's loudness: 20 log10 RMS (-inf: digital silence)
    gated: bool = False  # below the level gate (or digital silence): no event starts or goes on
    gain_db: float | None = None  # the bundle's window gain applied to this window (None: it has none)
    heard: tuple[tuple[str, float], ...] = ()  # `--heard`: the vocabulary's top (class, score), best first
    # what the events read, one per label in the set's order, where it is not the scores (a head that needs the
    # student's agreement: edge.scoring.Scorer.with_evidence); None: the scores. Not written by the sinks.
    evidence: tuple[float, ...] | None = None
    held: tuple[str, ...] = ()  # shown at or above their threshold, not counted: the student alone did not agree
    # (event_id, label, since): active events held open (edge.events' hold), quiet since stream time `since`
    holding: tuple[tuple[int, str, float], ...] = ()


@dataclass(frozen=True)
class Status:
    t: float
    level: str  # info | warning | error
    message: str
    code: str | None = None  # a stable word a program can match (source_error, overload, ...)

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f"Status: level {self.level!r} is not one of {', '.join(LEVELS)}")


def _num(x: float | None, digits: int) -> float | None:
    """`x` rounded to `digits` (+ 0.0: a -0.04 dB gain is 0.0, not -0.0); None for None, NaN and inf."""
    return round(float(x), digits) + 0.0 if x is not None and math.isfinite(x) else None


def columns(text: str) -> int:
    """The terminal columns `text` takes: two for a wide or full-width character (犬, 🐶), none for a
    combining mark, else one (len() lined a label table up wrong past a CJK or emoji name)."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def cut(text: str, width: int) -> str:
    """`text` cut to at most `width` terminal columns (a line of CJK names cut by characters came out
    wider than the terminal, which wrapped it and broke the live view's redraw)."""
    used = 0
    for i, character in enumerate(text):
        used += columns(character)
        if used > width:
            return text[:i]
    return text


def padded(text: str, width: int, cut_mark: str = "") -> str:
    """`text` in exactly `width` columns: spaces after it, or cut to fit with `cut_mark` (one column) at its end."""
    if columns(text) > width:
        while text and columns(text) > width - columns(cut_mark):
            text = text[:-1]
        text += cut_mark
    return text + " " * max(0, width - columns(text))


# status codes that end a trouble an earlier status said: code -> the code it ends
ENDS = {
    "audio_restored": "audio_lost",
    "overload_ended": "overload",
    "event_log_restored": "event_log",
    "clips_restored": "clips",
    "metrics_restored": "metrics",
}


class Sink:
    """Base of the three formats: `window`, `event`, `status`, `close`; usable as a context."""

    def __init__(self, stream: TextIO | None = None, origin: datetime | None = None):
        self.stream = stream if stream is not None else sys.stdout
        self.origin = origin if origin is not None else datetime.now(timezone.utc)
        self.origin_given = origin is not None
        if self.origin.tzinfo is None:
            raise ValueError(f"sink origin {self.origin.isoformat()} has no timezone: pass an aware UTC datetime")

    def start_clock(self, now: datetime) -> None:
        """Stream time 0 is `now`: the listen loop calls it as it starts to read the source, after
        the model, the label embeddings and the device are ready (a first start that embeds a set
        takes minutes on a Jetson). A sink made with an origin keeps it."""
        if not self.origin_given:
            self.origin = now

    def utc(self, t: float) -> str:
        return utc_text(self.origin + timedelta(seconds=t))

    def redate(self, by: timedelta) -> None:
        """The records this sink has kept were dated `by` too early (a clock that was not
        synchronised was stepped right): a sink that keeps them dates them again. Default: none kept."""

    def emit(self, record: WindowResult | Event | Status) -> None:
        if isinstance(record, WindowResult):
            self.window(record)
        elif isinstance(record, Event):
            self.event(record)
        elif isinstance(record, Status):
            self.status(record)
        else:
            raise TypeError(f"sink: cannot write a {type(record).__name__}: expected WindowResult, Event or Status")

    def window(self, result: WindowResult) -> None:
        raise NotImplementedError

    def event(self, event: Event) -> None:
        raise NotImplementedError

    def status(self, status: Status) -> None:
        raise NotImplementedError

    def report(self, level: str, message: str, code: str) -> None:
        """The sink's own trouble (an event log that cannot be written) as a status record for
        every sink of the FanOut it is in (FanOut sets this); alone, the sink's log line says it."""

    def close(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):  # already reported by the write that failed
            pass

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            raise OutputError("stdout was closed by its reader", broken_pipe=True) from None
        except (OSError, ValueError) as err:  # ENOSPC (/dev/full), EIO; ValueError: a closed file
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise OutputError(
                f"cannot write results to stdout: {reason}; send them to a file or a pipe with room (or /dev/null)"
            ) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def utc_text(moment: datetime) -> str:
    """How every record writes its wall-clock time: ISO 8601 in UTC, to the millisecond."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def record_dict(record: WindowResult | Event | Status, utc: str) -> dict:
    """The JSON-lines schema's object for one record (`utc`: its wall-clock time, Sink.utc).

    The one definition of the record fields: JSON lines, MQTT messages, the event log and
    `tail` all use it.
    """
    head = {"schema": SCHEMA, "t": _num(record.t, 3), "utc": utc}
    if isinstance(record, WindowResult):
        return {
            "type": "window",
            **head,
            "top": [{"label": label, "score": _num(score, 4)} for label, score in record.top],
            "latency_ms": _num(record.latency_ms, 1),
            "dropped": int(record.dropped),
            "level_dbfs": _num(record.level_dbfs, 1),
            "gated": record.gated,
            "gain_db": _num(record.gain_db, 1),
            **(
                {"heard": [{"name": name, "score": _num(score, 4)} for name, score in record.heard]}
                if record.heard
                else {}
            ),
            **({"held": list(record.held)} if record.held else {}),
            **(
                {
                    "holding": [
                        {"event_id": event_id, "label": label, "since": _num(since, 3)}
                        for event_id, label, since in record.holding
                    ]
                }
                if record.holding
                else {}
            ),
        }
    if isinstance(record, Event):
        if record.kind == "start":
            return {
                "type": "start",
                **head,
                "event_id": record.event_id,
                "label": record.label,
                "score": _num(record.score, 4),
            }
        return {
            "type": "end",
            **head,
            "event_id": record.event_id,
            "label": record.label,
            "duration": _num(record.duration, 3),
            "peak": _num(record.peak, 4),
        }
    if isinstance(record, Status):
        code = {"code": record.code} if record.code else {}
        return {"type": "status", **head, "level": record.level, "message": unicode_text(record.message), **code}
    raise TypeError(f"cannot describe a {type(record).__name__}: expected WindowResult, Event or Status")


def unicode_text(text: str) -> str:
    """`text` with the bytes of a file name that is no UTF-8 (which Python keeps as lone surrogates, and
    JSON wrote as `\udce9`, refused by strict parsers and by SQLite) written as `\xe9`."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class JsonLines(Sink):
    def _line(self, record: WindowResult | Event | Status) -> None:
        self._write(json.dumps(record_dict(record, self.utc(record.t)), allow_nan=False) + "\n")

    def window(self, result: WindowResult) -> None:
        self._line(result)

    def event(self, event: Event) -> None:
        self._line(event)

    def status(self, status: Status) -> None:
        self._line(status)


class FanOut(Sink):
    """Every record to several sinks, in order (the service: clips, event log, MQTT, metrics and systemd).

    One origin for all, so each dates a record alike. A sink that fails with OutputError
    fails the whole (as stdout does for `listen`); each sink is closed even when another's
    close fails.
    """

    def __init__(self, sinks: Sequence[Sink], origin: datetime | None = None):
        super().__init__(stream=sys.stderr, origin=origin)
        self.sinks = list(sinks)
        self._t = 0.0  # stream time of the latest record: a sink's report is dated with it
        self._share_origin()
        for sink in self.sinks:
            sink.report = self._report  # type: ignore[method-assign]

    def start_clock(self, now: datetime) -> None:
        super().start_clock(now)
        self._share_origin()

    def _share_origin(self) -> None:
        for sink in self.sinks:
            sink.origin = self.origin

    def window(self, result: WindowResult) -> None:
        self._t = result.t
        for sink in self.sinks:
            sink.window(result)

    def event(self, event: Event) -> None:
        self._t = max(self._t, event.t)
        for sink in self.sinks:
            sink.event(event)

    def status(self, status: Status) -> None:
        self._t = max(self._t, status.t)
        for sink in self.sinks:
            sink.status(status)

    def redate(self, by: timedelta) -> None:
        for sink in self.sinks:
            sink.redate(by)

    def _report(self, level: str, message: str, code: str) -> None:
        self.status(Status(self._t, level, message, code=code))

    def close(self) -> None:
        first: BaseException | None = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as err:  # close the rest, then raise the first failure
                first = first or err
        if first is not None:
            raise first


def _heard(record: WindowResult) -> str:
    """`--heard`: "  heard: Engine 0.62, Lawn mower 0.31" (empty without it)."""
    return "  heard: " + ", ".join(f"{name} {score:.2f}" for name, score in record.heard) if record.heard else ""


def _held(record: WindowResult) -> str:
    """The labels shown at their threshold that start no event: "  not counted (the student disagrees): siren"."""
    return "  not counted (the student disagrees): " + ", ".join(record.held) if record.held else ""


def _holding(record: WindowResult) -> str:
    """The events held open, quiet but not ended: "  held open: #3 dog_bark (quiet 4.0 s)"."""
    held = [f"#{event_id} {label} (quiet {_quiet(record, since)})" for event_id, label, since in record.holding]
    return "  held open: " + ", ".join(held) if held else ""


def _quiet(record: WindowResult, since: float) -> str:
    return f"{max(0.0, record.t - since):.1f} s"


def _plain(record: WindowResult | Event | Status) -> str:
    """One line per record: the stream time, the record's type, then its content."""
    if isinstance(record, WindowResult):
        top = ", ".join(f"{label} {score:.3f}" for label, score in record.top) or "(no labels)"
        level = "" if record.level_dbfs is None else f"  level {record.level_dbfs:.1f} dBFS"
        gain = "" if record.gain_db is None else f"  gain {round(record.gain_db, 1) + 0.0:+.1f} dB"  # +0.0: no -0.0
        gated = "  (gated)" if record.gated else ""
        return (
            f"{record.t:9.3f} window  {top}  latency {record.latency_ms:.1f} ms  dropped {record.dropped}"
            f"{level}{gain}{gated}{_heard(record)}{_held(record)}{_holding(record)}"
        )
    if isinstance(record, Event):
        if record.kind == "start":
            return f"{record.t:9.3f} start   #{record.event_id} {record.label}  score {record.score:.3f}"
        return (
            f"{record.t:9.3f} end     #{record.event_id} {record.label}  duration {record.duration:.3f} s  "
            f"peak {record.peak:.3f}"
        )
    return f"{record.t:9.3f} status  {record.level}: {record.message}"


class PlainLines(Sink):
    def window(self, result: WindowResult) -> None:
        self._write(_plain(result) + "\n")

    def event(self, event: Event) -> None:
        self._write(_plain(event) + "\n")

    def status(self, status: Status) -> None:
        self._write(_plain(status) + "\n")


class LiveView(Sink):
    """A block redrawn in place under the lines that scroll (events, status)."""

    BAR_WIDTH = 20
    LABEL_WIDTH = 24  # the label column's least width; longer labels widen it as far as the terminal allows
    ROW_REST = 2 + 1 + BAR_WIDTH + 1 + 5 + 10  # a row beside its label: indent, bar, score, "  >= 0.790"

    def __init__(
        self,
        stream: TextIO | None = None,
        origin: datetime | None = None,
        max_rows: int = 10,
        thresholds: Mapping[str, float] | None = None,
    ):
        super().__init__(stream, origin)
        self.max_rows = max_rows
        self.thresholds = dict(thresholds or {})  # label -> threshold, shown beside its score
        encoding = (getattr(self.stream, "encoding", None) or "").lower().replace("-", "")
        utf = encoding.startswith("utf")
        self.bar_chars = ("\u2588", "\u2591") if utf else ("#", ".")
        self.cut_mark = "\u2026" if utf else "~"  # the end of a label cut to the terminal's width
        self._height = 0  # lines of the block on screen now
        self._last: WindowResult | None = None
        self._active: dict[int, tuple[str, float]] = {}  # event_id -> (label, onset)

    def window(self, result: WindowResult) -> None:
        self._last = result
        self._redraw()

    def event(self, event: Event) -> None:
        if event.kind == "start":
            self._active[event.event_id] = (event.label, event.t)
        else:
            self._active.pop(event.event_id, None)
        self._redraw(_plain(event))

    def status(self, status: Status) -> None:
        self._redraw(_plain(status))

    def _redraw(self, scrolled: str | None = None) -> None:
        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        out = f"\x1b[{self._height}F\x1b[J" if self._height else ""  # up to the block's top, erase below
        if scrolled is not None:  # stays on screen: wrapped, never cut (a status line's fix is at its end)
            out += "\n".join(textwrap.wrap(scrolled, width, subsequent_indent="    ") or [""]) + "\n"
        block = [cut(line, width) for line in self._block(width)]
        self._height = len(block)
        self._write(out + "".join(line + "\n" for line in block))

    def _block(self, width: int = 80) -> list[str]:
        last = self._last
        if last is None:
            return ["semanticac-edge: waiting for the first window..."]
        clock = self.utc(last.t)[11:19]
        lines = [
            f"semanticac-edge  t {last.t:.1f} s  {clock} UTC  latency {last.latency_ms:.1f} ms  dropped {last.dropped}"
        ]
        if last.level_dbfs is not None:  # the input's level on a line of its own: an 80-column terminal cut it
            gain = "" if last.gain_db is None else f" (the model hears it {round(last.gain_db) + 0:+d} dB)"
            gated = "  gated: nothing reported" if last.gated else ""
            lines.append(f"input: level {last.level_dbfs:.0f} dBFS{gain}{gated}")
        shown = last.top[: self.max_rows]
        longest = max((columns(label) for label, _ in shown), default=0)
        column = max(self.LABEL_WIDTH, min(longest, width - self.ROW_REST))
        for label, score in shown:
            threshold = self.thresholds.get(label)
            # to the score's own precision: at two places a score of 0.852 showed as "< 0.85" (the threshold 0.854)
            mark = "" if threshold is None else f"  {'>=' if score >= threshold else '< '} {threshold:.3f}"
            lines.append(f"  {padded(label, column, self.cut_mark)} {self._bar(score)} {score:.3f}{mark}")
        if len(last.top) > self.max_rows:
            lines.append(f"  ... and {len(last.top) - self.max_rows} more")
        if not last.top:
            lines.append("  (no labels)")
        if last.heard:
            lines.append(_heard(last).strip())
        if last.held:
            lines.append(_held(last).strip())
        quiet = {event_id: since for event_id, _, since in last.holding}
        active = ", ".join(
            f"#{i} {label} {max(0.0, last.t - onset):.1f} s"
            + (f" (quiet {_quiet(last, quiet[i])}: held open)" if i in quiet else "")
            for i, (label, onset) in self._active.items()
        )
        lines.append(f"active: {active or 'none'}")
        return lines

    def _bar(self, score: float) -> str:
        full, empty = self.bar_chars
        n = round(min(max(score, 0.0), 1.0) * self.BAR_WIDTH) if math.isfinite(score) else 0
        return full * n + empty * (self.BAR_WIDTH - n)


def same_terminal(a: TextIO | None, b: TextIO | None) -> bool:
    """Whether streams `a` and `b` write to one terminal (`listen` in a shell, stdout and stderr not
    redirected): what one shows, the person sees without the other."""
    try:
        first, second = a.fileno(), b.fileno()  # type: ignore[union-attr]
        if not (os.isatty(first) and os.isatty(second)):
            return False
        return os.fstat(first).st_rdev == os.fstat(second).st_rdev
    except (AttributeError, OSError, ValueError):  # None, closed, or not a real file (tests)
        return False


def make_sink(
    json_lines: bool = False,
    stream: TextIO | None = None,
    origin: datetime | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> Sink:
    """`--json` -> JsonLines; else a terminal -> LiveView (with each label's `thresholds`);
    else (a pipe, a file) -> PlainLines."""
    stream = stream if stream is not None else sys.stdout
    if stream is None:  # `>&-`: Python starts with sys.stdout None
        raise OutputError("stdout is closed: results have nowhere to go; redirect it to a file or /dev/null")
    if json_lines:
        return JsonLines(stream, origin)
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return LiveView(stream, origin, thresholds=thresholds)
    return PlainLines(stream, origin)
