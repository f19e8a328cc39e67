"""The event log: every event (and status record) of the service in one SQLite file.

    <state_dir>/events.sqlite (event_log.path)
      events    one row per event: inserted at its `start`, completed at its `end`
      statuses  one row per status record (event_log.statuses)
      runs      one row per service start: its version, model, label set and settings (`run_info`),
                so event rates before and after a change of model or thresholds can be told apart

Every service start is a run with its own `run_id`, so event ids (which restart at 1) do
not clash between runs. An event whose `end` never came (the process was killed) stays open;
the next start marks the open rows of earlier runs `end_reason = 'interrupted'`.

Durability without stalls: WAL mode with synchronous=NORMAL, so a commit is a write to the
WAL without an fsync (a kill -9 loses nothing committed; a power cut may lose the last
commits), and a reader (`recent_events`, a tool) never blocks the writer. Every record is
committed on its own. The one connection is used by the listen loop's thread only (sinks are
called from it).

Nothing is lost to a passing problem. A write that fails (disk full, a lock held too long, an
I/O error) keeps its record, and those after it, in memory (up to PENDING_MAX, then the oldest
go and `lost` counts them); each new record tries them again, in order, so an event's end
still finds its start. The trouble is said once, as a status record with code `event_log` that
every output sees (metrics, MQTT's problem sensor, STATUS=), and its end as `event_log_restored`.
At start a busy, full or failing file does not stop the service: it listens, and the file is
opened again at the next record (at most every REOPEN_SECONDS). A damaged file is moved aside
(`events.sqlite.damaged-<time>`) and a new one begun; a file deleted or replaced while the
service runs is noticed at the next record and a new one begun at the path. A disk the kernel
made read-only (errors) is passing trouble too (edge.service.mounts.read_only_disk). Only what a
person must fix (a path that cannot be created, a read-only file or view, another program's file,
a newer schema) is a ConfigError at start.

Retention runs at start and then at most once an hour: rows older than `max_age_days` go,
then the oldest beyond `max_events` (per table). The age is read on the system clock, so it waits
while the kernel says that clock is not synchronised (see edge.clock; service.trust_clock for a
box with a good RTC and no NTP): one boot with the clock 200 days ahead had deleted the whole log.

The schema's version is `PRAGMA user_version`; a file written by a newer version is refused
with a clear error rather than misread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from edge import clock
from edge.clock import UNSET_BEFORE
from edge.errors import ConfigError, InUseError
from edge.events import Event
from edge.fsutil import LockHeld, hand_on, take_lock
from edge.outputs.sinks import Sink, Status, WindowResult, record_dict, utc_text
from edge.service.mounts import mounted_over, read_only_disk
from edge.service.sections import UNWRITABLE_FIX, invalid

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FILE_NAME = "events.sqlite"
RETENTION_SECONDS = 3600.0  # retention runs at start, then at most this often
BUSY_SECONDS = 0.25  # how long a write waits for a lock another connection holds: never long
OPEN_BUSY_SECONDS = 5.0  # at start, a lock is waited for this long (a reader's checkpoint, a backup)
PENDING_MAX = 10_000  # records kept in memory while the file cannot be written
REOPEN_SECONDS = 30.0  # a file that could not be opened is tried again at most this often
INTERRUPTED = "interrupted"
LOCK_SUFFIX = ".lock"  # beside the file: held while a service writes it
# SQLite's words for trouble that passes (a lock, a full disk, an I/O error): the service starts anyway
PASSING = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR")

_SCHEMA = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY,      -- insertion order: oldest first
    run_id TEXT NOT NULL,        -- one per service start
    event_id INTEGER NOT NULL,   -- the listen loop's id, unique within a run
    label TEXT NOT NULL,
    onset_utc TEXT NOT NULL,     -- ISO 8601, milliseconds, +00:00 (sorts as text)
    onset_t REAL,                -- stream seconds
    score REAL,                  -- smoothed score at onset
    end_utc TEXT,                -- NULL while the event is open
    end_t REAL,
    duration REAL,
    peak REAL,
    end_reason TEXT,             -- 'end', 'interrupted' (the run died first), NULL: open
    clip TEXT,                   -- the clip's file name, when clips are recorded
    UNIQUE (run_id, event_id)
);
CREATE INDEX events_onset ON events (onset_utc);
CREATE INDEX events_label ON events (label, onset_utc);
CREATE TABLE statuses (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    utc TEXT NOT NULL,
    t REAL,
    level TEXT NOT NULL,
    code TEXT,
    message TEXT NOT NULL
);
CREATE INDEX statuses_utc ON statuses (utc);
"""
# added to schema version 1 without a new version (a file an older version wrote gets it at its next
# start; an older version reading a newer file ignores it)
_RUNS = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_utc TEXT NOT NULL,
    version TEXT,                -- semanticac-edge's
    model_id TEXT,
    label_set TEXT,
    labels_sha256 TEXT,
    settings TEXT                -- JSON: the thresholds in force, the listen settings
);
"""

EVENT_COLUMNS = (
    "run_id",
    "event_id",
    "label",
    "onset_utc",
    "onset_t",
    "score",
    "end_utc",
    "end_t",
    "duration",
    "peak",
    "end_reason",
    "clip",
)


DAMAGED_KEPT = 3  # damaged files set aside that are kept (the newest)


# Bounds of the retention keys: beyond them SQLite's integers and Python's dates overflow (a start that
# crashed and was restarted into the same crash), and no box keeps a century of rows.
MAX_AGE_DAYS = 36500
MAX_EVENTS = 1_000_000_000


def lock_event_log(path: Path) -> int | None:
    """One service per event log (`<file>.lock`, as the state folder's serve.lock): two services given one
    event_log.path marked each other's open events interrupted and removed each other's runs rows. The
    lock's fd; ConfigError while another holds it; None where it cannot be made (the file's errors say why)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return take_lock(path.with_name(path.name + LOCK_SUFFIX))
    except LockHeld as held:
        raise InUseError(
            f"event_log.path {path} is in use by another serve (pid {held.holder}): two would mark each other's "
            "open events interrupted and remove each other's runs; give each service its own event_log.path (or "
            "leave it out: <state folder>/events.sqlite)",
            key="event_log.path",
        ) from None
    except OSError as err:
        log.debug("event log %s: not locked (%s)", path, err)
        return None


@dataclass(frozen=True)
class EventLogConfig:
    """Section `event_log` of the service config."""

    enabled: bool = True
    path: str | None = None  # None: <state_dir>/events.sqlite
    max_age_days: float = 90.0  # rows older than this are removed
    max_events: int = 100_000  # per table: the oldest rows beyond this are removed
    statuses: bool = True  # also log status records (device lost, overload, ...)

    def __post_init__(self) -> None:
        if self.path is not None and not self.path.strip():
            raise invalid("path", self.path, "a file path, or leave it out for <state directory>/events.sqlite")
        if self.path is not None and self.path.endswith(("/", os.sep)):  # a file would be made at the folder's name
            raise invalid(
                "path", self.path, f"a file path, not a folder's: e.g. {self.path.rstrip('/' + os.sep)}/{FILE_NAME}"
            )
        if not (math.isfinite(self.max_age_days) and 0 < self.max_age_days <= MAX_AGE_DAYS):
            raise invalid("max_age_days", self.max_age_days, f"a number of days > 0 and <= {MAX_AGE_DAYS} (e.g. 90)")
        if not 1 <= self.max_events <= MAX_EVENTS:
            raise invalid("max_events", self.max_events, f"a whole number from 1 to {MAX_EVENTS} (e.g. 100000)")

    def resolve_path(self, state_dir: str | Path) -> Path:
        return Path(self.path).expanduser() if self.path is not None else Path(state_dir) / FILE_NAME


def new_run_id() -> str:
    """A service start's id: its UTC time and 6 random hex digits (20261207T093816Z-fa0782), the event log's
    `run_id`, which MQTT's event messages carry too (event ids start at 1 again in each run)."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class EventLogSink(Sink):
    """Events (and status records) into the SQLite file of `config` (see the module's doc).

    `clip_for(start) -> name | None`: the clip file an event will have (ClipRecorder.clip_for),
    stored with the event; `clips_dir`: the folder it goes to (an earlier run's events marked
    interrupted lose the name of a clip that is not there: it never was). ConfigError (key
    `event_log.path`) when the file cannot be created or written for a reason a person must fix,
    or was written by a newer version.
    """

    def __init__(
        self,
        config: EventLogConfig,
        state_dir: str | Path,
        *,
        clip_for: Callable[[Event], str | None] | None = None,
        clips_dir: Path | None = None,
        origin: datetime | None = None,
        trust_clock: bool = False,
        run_info: dict | None = None,
        keep_lock: threading.Event | None = None,
        run_id: str | None = None,
    ):
        super().__init__(stream=sys.stderr, origin=origin)
        self.config = config
        self.path = config.resolve_path(state_dir)
        self.keep_lock = keep_lock  # set by the close: the lock is handed on across a reload's exec
        self.clip_for = clip_for
        self.clips_dir = clips_dir  # where clip_for's clips go: an interrupted event's clip not there is unnamed
        self._started: dict[int, tuple[float | None, str | None]] = {}  # open events' start score and clip
        self.run_id = run_id or new_run_id()
        self.trust_clock = trust_clock  # remove by age even while the kernel says the clock is not synchronised
        # the run's row, written into every file the run opens: {version, model_id, label_set,
        # labels_sha256, settings} (any may be missing)
        info = run_info or {}
        self._run_row = (
            self.run_id,
            utc_text(datetime.now(timezone.utc)),
            *(info.get(key) for key in ("version", "model_id", "label_set", "labels_sha256")),
            json.dumps(info.get("settings") or {}, sort_keys=True),
        )
        self.lost = 0  # records dropped: the file could not be written for PENDING_MAX records
        # writes not yet done, each with the record it writes (a stop with them waiting says them in the journal)
        self._pending: deque[tuple[Callable[[sqlite3.Connection], object], dict | None]] = deque()
        self._failing: str | None = None  # why the last write failed (said once), None while writing
        self._flushing = False
        self._next_retention = 0.0  # time.monotonic() of the next retention
        self._age_wait_said = False  # that retention by age waits for a synchronised clock
        self._next_open = 0.0  # time.monotonic() from which a closed file is opened again
        self._db: sqlite3.Connection | None = None
        self._inode: tuple[int, int] | None = None  # the file's (device, inode): one deleted or replaced is noticed
        self._lock = lock_event_log(self.path)
        try:
            self._open(busy=OPEN_BUSY_SECONDS)
        except (sqlite3.Error, ConfigError) as err:  # passing trouble: listen anyway; the first record tries again
            if isinstance(err, ConfigError) and read_only_disk(self.path.parent) is None:  # and reports it
                raise
            log.warning(
                "event log %s: cannot be opened now (%s): the service starts, and its records wait in memory "
                "until the file can be written",
                self.path,
                _reason(err) if isinstance(err, sqlite3.Error) else err,
            )
        log.info("event log: %s (run %s)", self.path, self.run_id)

    @property
    def pending(self) -> int:
        """Records waiting for the file to be writable again."""
        return len(self._pending)

    def window(self, result: WindowResult) -> None:
        pass  # windows are not logged: one a second would swamp the file

    def event(self, event: Event) -> None:
        row = record_dict(event, self.utc(event.t))
        if event.kind == "start":
            clip = self.clip_for(event) if self.clip_for is not None else None
            self._started[event.event_id] = (row["score"], clip)
            self._record(
                lambda db: db.execute(
                    "INSERT OR REPLACE INTO events (run_id, event_id, label, onset_utc, onset_t, score, clip) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (self.run_id, row["event_id"], row["label"], row["utc"], row["t"], row["score"], clip),
                ),
                {**row, "clip": clip},
            )
            return
        onset = event.t - (event.duration or 0.0)
        whole = (self.run_id, row["event_id"], row["label"], self.utc(onset), round(onset, 3), row["utc"], row["t"])
        # for a row written whole: the start's score and clip (its start row is in a file set aside)
        score, clip = self._started.pop(event.event_id, (None, None))

        def write_end(db: sqlite3.Connection) -> None:
            changed = db.execute(
                "UPDATE events SET end_utc = ?, end_t = ?, duration = ?, peak = ?, end_reason = 'end' "
                "WHERE run_id = ? AND event_id = ?",
                (row["utc"], row["t"], row["duration"], row["peak"], self.run_id, row["event_id"]),
            ).rowcount
            if changed == 0:  # its start is not there (dropped, or a new file begun since): the whole event
                db.execute(
                    "INSERT INTO events (run_id, event_id, label, onset_utc, onset_t, end_utc, end_t, duration, "
                    "peak, end_reason, score, clip) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'end', ?, ?)",
                    (*whole, row["duration"], row["peak"], score, clip),
                )

        self._record(write_end, {**row, "clip": clip})

    def status(self, status: Status) -> None:
        if not self.config.statuses:
            return
        row = record_dict(status, self.utc(status.t))
        self._record(
            lambda db: db.execute(
                "INSERT INTO statuses (run_id, utc, t, level, code, message) VALUES (?, ?, ?, ?, ?, ?)",
                (self.run_id, row["utc"], row["t"], row["level"], row.get("code"), row["message"]),
            ),
            row,
        )

    def redate(self, by: timedelta) -> None:
        """This run's rows (written or waiting) move `by`: they were dated by a clock that was not
        synchronised, and retention would have read them as that far in the past (or future)."""

        run_id, started, *rest = self._run_row  # a file begun later gets the run's start as dated now
        self._run_row = (run_id, utc_text(datetime.fromisoformat(str(started)) + by), *rest)

        def move(db: sqlite3.Connection) -> None:
            with _transaction(db):
                tables = (("events", ("onset_utc", "end_utc")), ("statuses", ("utc",)), ("runs", ("started_utc",)))
                for table, columns in tables:
                    rows = db.execute(
                        f"SELECT rowid, {', '.join(columns)} FROM {table} WHERE run_id = ?", (self.run_id,)
                    )
                    for row_id, *dates in rows.fetchall():
                        moved = [None if d is None else utc_text(datetime.fromisoformat(d) + by) for d in dates]
                        assignments = ", ".join(f"{column} = ?" for column in columns)
                        db.execute(f"UPDATE {table} SET {assignments} WHERE rowid = ?", (*moved, row_id))

        self._record(move)

    def close(self) -> None:
        if self._pending:  # a last try: the file may be writable again since the last record
            self._next_open = 0.0
            self._flush()
        if self._pending:
            log.warning(
                "event log %s: closing with %d record(s) never written (%s): each follows as a journal line "
                "(event log: never written: ...), the record as listen --json writes it",
                self.path,
                sum(record is not None for _, record in self._pending),  # a redating is no record of its own
                self._failing or "not written",
            )
            for _, record in self._pending:  # a stop or reload while the disk is full: kept in the journal at least
                self._never_written(record)
        self._close_db()
        if self._lock is not None:
            if self.keep_lock is not None and self.keep_lock.is_set():
                hand_on(self._lock)  # free for a moment, another serve had taken it and the reload exited 78
            else:
                os.close(self._lock)
            self._lock = None

    def _close_db(self) -> None:
        """Close the connection, its WAL checkpointed into the file first: SQLite does not do that
        on close for a file moved away (a log rotation), whose last records would stay behind."""
        if self._db is None:
            return
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
        self._db = None

    def retain(self) -> tuple[int, int]:
        """Remove what retention says now: (events, statuses) removed."""
        assert self._db is not None, "the event log is closed"
        by_age = clock.dates_trusted(self.trust_clock)
        if not self._age_wait_said:
            note = clock.age_note(self.config.max_age_days, "rows", "Rows beyond max_events", self.trust_clock)
            if note is not None:
                self._age_wait_said = True
                log.info("event log: %s", note)
        cutoff = (datetime.now(timezone.utc) - timedelta(days=self.config.max_age_days)).isoformat(
            timespec="milliseconds"
        )
        unset = utc_text(UNSET_BEFORE)  # rows dated before it go by count only (edge.clock)
        removed = []
        with _transaction(self._db):
            for table, when in (("events", "onset_utc"), ("statuses", "utc")):
                n = (
                    self._db.execute(f"DELETE FROM {table} WHERE {when} < ? AND {when} >= ?", (cutoff, unset)).rowcount
                    if by_age
                    else 0
                )
                n += self._db.execute(  # the oldest beyond max_events
                    f"DELETE FROM {table} WHERE id <= (SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (self.config.max_events,),
                ).rowcount
                removed.append(n)
            # a run's row goes with its last row (never this run's, however long it has run)
            self._db.execute(
                "DELETE FROM runs WHERE run_id != ? AND run_id NOT IN (SELECT run_id FROM events) "
                "AND run_id NOT IN (SELECT run_id FROM statuses)",
                (self.run_id,),
            )
        if any(removed):
            log.info("event log: retention removed %d event(s) and %d status record(s)", *removed)
        return removed[0], removed[1]

    # -- writing ------------------------------------------------------------------------------

    def _open(self, busy: float = BUSY_SECONDS) -> None:
        """Open (or create) the file, mark earlier runs' open events interrupted (the first time),
        run retention. sqlite3.Error for passing trouble; ConfigError for what a person must fix;
        a damaged file is moved aside and a new one begun, but at the start never a file that was
        plainly never an event log (event_log.path naming the config or a recording by mistake)."""
        try:
            self._begin(busy)
        except sqlite3.DatabaseError as err:
            if not _damaged(err):
                raise
            if self._inode is None:  # the start: never a file that was plainly no event log
                refuse_foreign(self.path)
            self._set_aside(err)
            self._begin(busy)

    def _begin(self, busy: float) -> None:
        db = _open(self.path, create=True, busy=busy)
        try:
            if self._inode is None:  # the first file of this run
                if self.clips_dir is not None:  # their clips come after their end, which never came: none was made
                    unmade = [
                        (row_id,)
                        for row_id, clip in db.execute(
                            "SELECT id, clip FROM events WHERE end_reason IS NULL AND run_id != ? AND clip IS NOT NULL",
                            (self.run_id,),
                        )
                        if not (self.clips_dir / clip).exists()
                    ]
                    db.executemany("UPDATE events SET clip = NULL WHERE id = ?", unmade)
                interrupted = db.execute(
                    "UPDATE events SET end_reason = ? WHERE end_reason IS NULL AND run_id != ?",
                    (INTERRUPTED, self.run_id),
                ).rowcount
                if interrupted:
                    log.warning(
                        "event log: %d event(s) of an earlier run never ended: marked %s", interrupted, INTERRUPTED
                    )
            stat = os.stat(self.path)
            db.execute(f"PRAGMA busy_timeout = {round(BUSY_SECONDS * 1000)}")  # the start's longer wait is over
            db.execute(
                "INSERT OR REPLACE INTO runs (run_id, started_utc, version, model_id, label_set, labels_sha256, "
                "settings) VALUES (?, ?, ?, ?, ?, ?, ?)",
                self._run_row,
            )
            self._db, self._inode = db, (stat.st_dev, stat.st_ino)
            self._retain()
        except (sqlite3.Error, OSError) as err:
            db.close()
            self._db = None
            if isinstance(err, OSError):
                raise _unusable(self.path, err) from None
            raise

    def _set_aside(self, err: sqlite3.Error) -> None:
        stamp = f"{self.path.name}.damaged-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
        aside, n = self.path.with_name(stamp), 1
        while aside.exists():  # damaged twice within a second: never over the first copy
            n += 1
            aside = self.path.with_name(f"{stamp}-{n}")
        try:
            for suffix in ("", "-wal", "-shm"):
                part = self.path.with_name(self.path.name + suffix)
                if part.exists():
                    os.replace(part, aside.with_name(aside.name + suffix))
        except OSError as move:  # a folder gone read-only, a failing card: records wait, as for a full disk
            log.warning("event log %s is damaged (%s) and cannot be moved aside (%s)", self.path, err, move)
            return
        log.warning("event log %s is damaged (%s): moved to %s, a new one begun", self.path, err, aside)
        # a failing card damages file after file: the oldest copies go, so they never fill the disk
        # (by their names' dates; the one just set aside is kept whatever the clock said)
        copies = sorted(c for c in self.path.parent.glob(f"{self.path.name}.damaged-*[0-9TZ]") if c != aside)
        for old in copies[: max(0, len(copies) - (DAMAGED_KEPT - 1))]:
            for suffix in ("", "-wal", "-shm"):
                old.with_name(old.name + suffix).unlink(missing_ok=True)
            log.warning("event log: the damaged copy %s removed (the newest %d are kept)", old.name, DAMAGED_KEPT)

    def _same_file(self) -> bool:
        """Whether the path still names the file open (not deleted, moved away or replaced)."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino) == self._inode

    def _retain(self) -> None:
        assert self._db is not None
        self.retain()
        self._next_retention = time.monotonic() + RETENTION_SECONDS

    def _never_written(self, record: dict | None) -> None:
        """A record the file will not get, whole in the journal (one JSON line, with its run)."""
        if record is not None:
            log.warning("event log: never written: %s", json.dumps({"run_id": self.run_id, **record}))

    def _record(self, write: Callable[[sqlite3.Connection], object], record: dict | None = None) -> None:
        """Keep `write` (of `record`: None for no record of its own) after those still waiting, then
        write what can be, in order."""
        if len(self._pending) >= PENDING_MAX:
            self._never_written(self._pending.popleft()[1])
            self.lost += 1
            if self.lost == 1:
                log.warning(
                    "event log %s: %d records wait to be written: dropping the oldest from now on",
                    self.path,
                    PENDING_MAX,
                )
        self._pending.append((write, record))
        if not self._flushing:  # a report (a status to every sink) while flushing only queues its record
            self._flushing = True
            try:
                self._flush()
                if self._pending and self._failing is None and self._db is not None:
                    self._flush()  # the record of a report made while flushing ("writing again")
            finally:
                self._flushing = False

    def _flush(self) -> None:
        if self._db is not None and not self._same_file():
            assert self._inode is not None
            log.warning(
                "event log %s was deleted or replaced while the service ran: a new one begun%s",
                self.path,
                mounted_over(self.path.parent, self._inode[0]),
            )
            self._close_db()
            self._next_open = 0.0
        try:
            if self._db is None:
                if time.monotonic() < self._next_open:
                    return
                self._next_open = time.monotonic() + REOPEN_SECONDS
                self._open()
            assert self._db is not None
            while self._pending:
                self._pending[0][0](self._db)  # autocommit: each statement is committed as it runs
                self._pending.popleft()
            if time.monotonic() >= self._next_retention:
                self._retain()
        except sqlite3.Error as err:  # disk full, locked, I/O error: never the loop's end
            if _damaged(err) and self._db is not None:  # damaged under the service: begun again at the next record
                self._close_db()
                self._next_open = 0.0
                self._set_aside(err)
            self._fail(_reason(err))
            return
        except ConfigError as err:  # a new file cannot be begun (its folder gone read-only): the same
            self._fail(str(err))
            return
        if self._failing is not None:
            self._failing = None
            lost = f", {self.lost} lost" if self.lost else ""
            self.report(
                "info",
                f"event log {self.path}: writing again (every waiting record written{lost})",
                "event_log_restored",
            )
            log.info("event log %s: writing again%s", self.path, lost)

    def _fail(self, reason: str) -> None:
        if self._failing is not None:
            self._failing = reason
            return
        self._failing = reason
        read_only = read_only_disk(self.path.parent)
        fix = (  # the advice for this failure, not every one (a lock had been told to free disk space)
            ""
            if read_only and read_only in reason  # a file that could not be opened: said in the reason
            else f": {read_only}"
            if read_only
            else ": free disk space"
            if "no space left" in reason
            else f": end what holds the file (fuser {self.path})"
            if "lock" in reason
            else ": free disk space, or end what holds the file"
        )
        message = (
            f"event log {self.path}: cannot write ({reason}); records wait in memory (up to {PENDING_MAX}) "
            f"and are written once it can be{fix}"
        )
        log.warning("%s", message)
        self.report("warning", message, "event_log")


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _open(path: Path, create: bool, busy: float = BUSY_SECONDS) -> sqlite3.Connection:
    """A connection in autocommit mode (each statement its own transaction), WAL, schema checked.

    `create`: make the folder and the schema when missing, and check that the file can be
    written; else open read-only (tools). `busy`: how long a lock is waited for. ConfigError for
    what a person must fix; with `create`, passing trouble (PASSING: a lock, a full disk, an I/O
    error) and a damaged file (SQLITE_CORRUPT) as the sqlite3.Error itself."""
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.is_file():
            raise ConfigError(
                f"event_log.path {path}: no event log there: has the service run with event_log enabled? "
                "Pass the event_log.path of its config",
                key="event_log.path",
            )
        target = str(path) if create else f"{path.resolve().as_uri()}?mode=ro"
        db = sqlite3.connect(target, uri=not create, timeout=busy, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as err:
        raise _unusable(path, err) from None
    try:
        _check_schema(db, path, create)
    except BaseException:
        db.close()
        raise
    return db


def _check_schema(db: sqlite3.Connection, path: Path, create: bool) -> None:
    try:
        if create:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                log.warning("event log %s: journal mode %s, not WAL (is it on a network file system?)", path, mode)
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("BEGIN IMMEDIATE")  # takes the write lock: fails now on a read-only file
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"event_log.path {path} was written by a newer semanticac-edge (event log schema version "
                f"{version}; this one reads up to {SCHEMA_VERSION}): upgrade semanticac-edge, or set "
                "event_log.path to another file",
                key="event_log.path",
            )
        if version == 0 and tables:
            raise ConfigError(
                f"event_log.path {path} is an SQLite file of something else (tables {', '.join(sorted(tables))}, "
                "no event log schema): set event_log.path to a new file",
                key="event_log.path",
            )
        if version == 0 and create:  # a new file: the schema and its version in one transaction
            db.execute("COMMIT")
            db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} {_RUNS} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        elif create:
            db.execute("COMMIT")
            db.executescript(f"BEGIN IMMEDIATE; {_RUNS} COMMIT;")
    except sqlite3.Error as err:
        if create and _passing_or_damaged(err):
            raise
        raise _unusable(path, err) from None


FOREIGN_MAGIC = {
    b"RIFF": "a WAV file",
    b"fLaC": "a FLAC file",
    b"OggS": "an Ogg file",
    b"ID3": "an MP3 file",
    b"\x89PNG": "a PNG image",
    b"PK\x03\x04": "a zip file",
    b"\x7fELF": "a program",
}


def foreign_file(path: str | Path) -> str | None:
    """What a file that is no SQLite database plainly is (text, an audio file, ...), else None: an
    event log whose header a power cut overwrote is garbage or zeros, which is set aside and begun
    again; a text file or a recording at event_log.path is a mistake in the config, left alone."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if not head or head.startswith(b"SQLite format 3\x00"):
        return None
    for magic, what in FOREIGN_MAGIC.items():
        if head.startswith(magic):
            return what
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # not a character cut at the 4096th byte
            return None
        text = head[: err.start].decode("utf-8")
    if "\x00" not in text and sum(ch.isprintable() or ch in "\n\r\t" for ch in text) >= 0.95 * len(text):
        return f"a text file (it begins {text.splitlines()[0][:40]!r})" if text.strip() else None
    return None


def refuse_foreign(path: str | Path) -> None:
    """ConfigError where event_log.path names a file that is plainly no event log (`foreign_file`):
    the start would have set it aside as damaged, and begun a database in its place."""
    foreign = foreign_file(path)
    if foreign is not None:
        raise ConfigError(
            f"event_log.path {path} is {foreign}, not an event log: it is left as it is; point event_log.path at "
            "another file (or leave the key out: the state folder's events.sqlite)",
            key="event_log.path",
        )


def _damaged(err: sqlite3.Error) -> bool:
    """Damaged pages (SQLITE_CORRUPT) or a header overwritten (SQLITE_NOTADB: a power cut on an SD
    card): the file is moved aside, which loses nothing; its path is the event log's, by default or
    because event_log.path names it so."""
    return getattr(err, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def _passing_or_damaged(err: sqlite3.Error) -> bool:
    return _damaged(err) or any(getattr(err, "sqlite_errorname", "").startswith(word) for word in PASSING)


def _reason(err: sqlite3.Error) -> str:
    """The error in words a person acts on: "database or disk is full" -> "... (no space left)"."""
    name = getattr(err, "sqlite_errorname", "")
    hint = {"SQLITE_FULL": "no space left on its disk", "SQLITE_BUSY": "another program holds a lock on it"}.get(
        name, ""
    )
    return f"{err}: {hint}" if hint else str(err)


def _unusable(path: Path, err: BaseException) -> ConfigError:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    read_only = read_only_disk(path.parent)  # no setting of ours to change: the disk's trouble
    fix = read_only or f"{UNWRITABLE_FIX}; or event_log.enabled: false"
    return ConfigError(f"event_log.path {path} cannot be used as the event log: {reason}: {fix}", key="event_log.path")


def recent_events(path: str | Path, limit: int = 20, label: str | None = None) -> list[dict]:
    """The newest `limit` events (of one `label`), newest first, as dicts of EVENT_COLUMNS.

    Opens the file read-only: a tool may read while the service writes."""
    if limit < 1:
        raise ValueError(f"recent_events: limit {limit!r} must be at least 1")
    db = _open(Path(path), create=False)
    try:
        where, args = ("WHERE label = ?", (label,)) if label is not None else ("", ())
        rows = db.execute(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM events {where} ORDER BY id DESC LIMIT ?", (*args, limit)
        ).fetchall()
    except sqlite3.Error as err:
        raise _unusable(Path(path), err) from None
    finally:
        db.close()
    return [dict(zip(EVENT_COLUMNS, row)) for row in rows]
