"""The event log: every event (and status record) of the service in one SQLite file.

    <state_dir>/events.sqlite (event_log.path)
      events    one row per event: inserted at its `start`, completed at its `end`
      statuses  one row per status record (event_log.statuses)

Every service start is a run with its own `run_id`, so event ids (which restart at 1) do
not clash between runs. An event whose `end` never came (the process was killed) stays open;
the next start marks the open rows of earlier runs `end_reason = 'interrupted'`.

Durability without stalls: WAL mode with synchronous=NORMAL, so a commit is a write to the
WAL without an fsync (a kill -9 loses nothing committed; a power cut may lose the last
commits), and a reader (`recent_events`, a tool) never blocks the writer. Every record is
committed on its own. The one connection is used by the listen loop's thread only (sinks are
called from it). A write that fails in the loop (disk full, a lock held too long) is logged
once, counted in `errors`, and the loop goes on; an unusable file at start is a ConfigError.

Retention runs at start and then at most once an hour: rows older than `max_age_days` go,
then the oldest beyond `max_events` (per table).

The schema's version is `PRAGMA user_version`; a file written by a newer version is refused
with a clear error rather than misread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from edge.errors import ConfigError
from edge.events import Event
from edge.outputs.sinks import Sink, Status, WindowResult, record_dict
from edge.service.sections import UNWRITABLE_FIX, invalid

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FILE_NAME = "events.sqlite"
RETENTION_SECONDS = 3600.0  # retention runs at start, then at most this often
BUSY_SECONDS = 0.25  # how long a write waits for a lock another connection holds: never long
INTERRUPTED = "interrupted"

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
        if not (math.isfinite(self.max_age_days) and self.max_age_days > 0):
            raise invalid("max_age_days", self.max_age_days, "a number of days > 0 (e.g. 90)")
        if self.max_events < 1:
            raise invalid("max_events", self.max_events, "a whole number >= 1 (e.g. 100000)")

    def resolve_path(self, state_dir: str | Path) -> Path:
        return Path(self.path).expanduser() if self.path is not None else Path(state_dir) / FILE_NAME


class EventLogSink(Sink):
    """Events (and status records) into the SQLite file of `config` (see the module's doc).

    `clip_for(start) -> name | None`: the clip file an event will have (ClipRecorder.clip_for),
    stored with the event. ConfigError (key `event_log.path`) when the file cannot be opened,
    created, written, or was written by a newer version.
    """

    def __init__(
        self,
        config: EventLogConfig,
        state_dir: str | Path,
        *,
        clip_for: Callable[[Event], str | None] | None = None,
        origin: datetime | None = None,
    ):
        super().__init__(stream=sys.stderr, origin=origin)
        self.config = config
        self.path = config.resolve_path(state_dir)
        self.clip_for = clip_for
        self.run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        self.errors = 0  # records that could not be written
        self._failing = False  # the last write failed: the next failure is not logged again
        self._next_retention = 0.0  # time.monotonic() of the next retention
        self._db: sqlite3.Connection | None = _open(self.path, create=True)
        try:
            interrupted = self._db.execute(
                "UPDATE events SET end_reason = ? WHERE end_reason IS NULL AND run_id != ?",
                (INTERRUPTED, self.run_id),
            ).rowcount
            self._retain()
        except sqlite3.Error as err:
            self._db.close()
            raise _unusable(self.path, err) from None
        if interrupted:
            log.warning("event log: %d event(s) of an earlier run never ended: marked %s", interrupted, INTERRUPTED)
        log.info("event log: %s (run %s)", self.path, self.run_id)

    def window(self, result: WindowResult) -> None:
        pass  # windows are not logged: one a second would swamp the file

    def event(self, event: Event) -> None:
        row = record_dict(event, self.utc(event.t))
        if event.kind == "start":
            clip = self.clip_for(event) if self.clip_for is not None else None
            self._exec(
                "INSERT OR REPLACE INTO events (run_id, event_id, label, onset_utc, onset_t, score, clip) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (self.run_id, row["event_id"], row["label"], row["utc"], row["t"], row["score"], clip),
            )
            return
        changed = self._exec(
            "UPDATE events SET end_utc = ?, end_t = ?, duration = ?, peak = ?, end_reason = 'end' "
            "WHERE run_id = ? AND event_id = ?",
            (row["utc"], row["t"], row["duration"], row["peak"], self.run_id, row["event_id"]),
        )
        if changed == 0:  # its start was never written (a write failed then): the whole event now
            onset = event.t - (event.duration or 0.0)
            self._exec(
                "INSERT INTO events (run_id, event_id, label, onset_utc, onset_t, end_utc, end_t, duration, "
                "peak, end_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'end')",
                (
                    self.run_id,
                    row["event_id"],
                    row["label"],
                    self.utc(onset),
                    round(onset, 3),
                    row["utc"],
                    row["t"],
                    row["duration"],
                    row["peak"],
                ),
            )

    def status(self, status: Status) -> None:
        if not self.config.statuses:
            return
        row = record_dict(status, self.utc(status.t))
        self._exec(
            "INSERT INTO statuses (run_id, utc, t, level, code, message) VALUES (?, ?, ?, ?, ?, ?)",
            (self.run_id, row["utc"], row["t"], row["level"], row.get("code"), row["message"]),
        )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def retain(self) -> tuple[int, int]:
        """Remove what retention says now: (events, statuses) removed."""
        assert self._db is not None, "the event log is closed"
        cutoff = (datetime.now(timezone.utc) - timedelta(days=self.config.max_age_days)).isoformat(
            timespec="milliseconds"
        )
        removed = []
        with _transaction(self._db):
            for table, when in (("events", "onset_utc"), ("statuses", "utc")):
                n = self._db.execute(f"DELETE FROM {table} WHERE {when} < ?", (cutoff,)).rowcount
                n += self._db.execute(  # the oldest beyond max_events
                    f"DELETE FROM {table} WHERE id <= (SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (self.config.max_events,),
                ).rowcount
                removed.append(n)
        if any(removed):
            log.info("event log: retention removed %d event(s) and %d status record(s)", *removed)
        return removed[0], removed[1]

    def _retain(self) -> None:
        self.retain()
        self._next_retention = time.monotonic() + RETENTION_SECONDS

    def _exec(self, sql: str, args: tuple) -> int | None:
        """One statement, committed at once: the rows it changed, None when it failed."""
        if self._db is None:
            return None
        try:
            changed = self._db.execute(sql, args).rowcount
            if time.monotonic() >= self._next_retention:
                self._retain()
        except sqlite3.Error as err:  # disk full, locked, I/O error: never the loop's end
            self.errors += 1
            if not self._failing:
                log.warning(
                    "event log %s: cannot write (%s); records are lost until it can (counted in errors)",
                    self.path,
                    err,
                )
            self._failing = True
            return None
        if self._failing:
            log.info("event log %s: writing again (%d record(s) lost so far)", self.path, self.errors)
            self._failing = False
        return changed


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _open(path: Path, create: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (each statement its own transaction), WAL, schema checked.

    `create`: make the folder and the schema when missing, and check that the file can be
    written; else open read-only (tools)."""
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
        db = sqlite3.connect(
            target, uri=not create, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False
        )
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
            db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        elif create:
            db.execute("COMMIT")
    except sqlite3.Error as err:
        raise _unusable(path, err) from None


def _unusable(path: Path, err: BaseException) -> ConfigError:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return ConfigError(
        f"event_log.path {path} cannot be used as the event log: {reason}: {UNWRITABLE_FIX}; or "
        "event_log.enabled: false",
        key="event_log.path",
    )


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
