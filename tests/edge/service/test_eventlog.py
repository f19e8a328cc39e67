"""The event log: a real SQLite file, a real kill -9, real locks."""

import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import edge.clock
import edge.outputs.eventlog as eventlog
from edge.errors import ConfigError
from edge.events import Event
from edge.outputs.eventlog import EventLogConfig, EventLogSink, recent_events
from edge.outputs.sinks import FanOut, Sink, Status
from edge.service.sections import parse_section

REPO = Path(__file__).resolve().parents[3]


def start(event_id, t=1.0, label="siren"):
    return Event("start", t, event_id, label, score=0.61234)


def end(event_id, t=3.0, label="siren", duration=2.0):
    return Event("end", t, event_id, label, duration=duration, peak=0.9)


def rows(path, sql):
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def test_events_and_statuses_land_in_sqlite_with_wal(tmp_path):
    origin = datetime(2025, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    log_sink = EventLogSink(EventLogConfig(), tmp_path, clip_for=lambda e: f"clip_{e.event_id}.flac")
    FanOut([log_sink], origin=origin)  # the service's FanOut gives every sink its origin
    log_sink.event(start(1, t=1.5))
    log_sink.status(Status(2.0, "warning", "inference fell behind", code="overload"))
    log_sink.event(start(2, t=2.0, label="dog bark"))
    path = tmp_path / "events.sqlite"
    # committed at once, visible to another connection while the service runs
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    assert [r["end_reason"] for r in recent_events(path, 10)] == [None, None]
    log_sink.event(end(1, t=4.0, duration=2.5))
    log_sink.close()
    siren, = recent_events(path, 10, label="siren")
    assert siren == {
        "run_id": log_sink.run_id, "event_id": 1, "label": "siren",
        "onset_utc": "2025-05-01T12:00:01.500+00:00", "onset_t": 1.5, "score": 0.6123,
        "end_utc": "2025-05-01T12:00:04.000+00:00", "end_t": 4.0, "duration": 2.5, "peak": 0.9,
        "end_reason": "end", "clip": "clip_1.flac",
    }
    assert [r["label"] for r in recent_events(path, 1)] == ["dog bark"]  # newest first
    assert rows(path, "SELECT run_id, utc, level, code, message FROM statuses") == [
        (log_sink.run_id, "2025-05-01T12:00:02.000+00:00", "warning", "overload", "inference fell behind")]
    assert rows(path, "PRAGMA user_version") == [(eventlog.SCHEMA_VERSION,)]


def test_statuses_can_be_left_out_and_an_end_without_its_start_is_kept(tmp_path):
    log_sink = EventLogSink(EventLogConfig(statuses=False, path=str(tmp_path / "x" / "log.db")), tmp_path)
    log_sink.status(Status(1.0, "info", "listening"))
    log_sink.event(end(7, t=5.0, duration=1.5))  # its start was lost (a failed write)
    log_sink.close()
    path = tmp_path / "x" / "log.db"
    assert rows(path, "SELECT count(*) FROM statuses") == [(0,)]
    event, = recent_events(path, 5)
    assert (event["event_id"], event["onset_t"], event["end_t"], event["end_reason"]) == (7, 3.5, 5.0, "end")


def test_one_service_per_event_log(tmp_path):
    """Two services given one event_log.path (their own state folders) marked each other's open events
    interrupted and removed each other's runs rows: the second is refused with the first's pid, as a
    second serve on one state folder is, and takes the file once the first has closed it."""
    config = EventLogConfig(path=str(tmp_path / "shared" / "events.sqlite"))
    first = EventLogSink(config, tmp_path / "a")
    first.event(Event("start", 1.0, 1, "siren", score=0.9))
    with pytest.raises(ConfigError, match=rf"event_log.path {tmp_path / 'shared' / 'events.sqlite'} is in use by "
                                          rf"another serve \(pid {os.getpid()}\)") as refused:
        EventLogSink(config, tmp_path / "b")
    assert refused.value.key == "event_log.path"
    assert rows(config.resolve_path(tmp_path), "SELECT end_reason FROM events") == [(None,)]  # still open: its own
    first.close()
    EventLogSink(config, tmp_path / "b").close()  # free now: the first's open event is the second's to mark


KILLED = textwrap.dedent("""
    import sys, time
    from edge.events import Event
    from edge.outputs.eventlog import EventLogConfig, EventLogSink
    clips = iter(["siren_1.flac", "dog_2.flac"])
    sink = EventLogSink(EventLogConfig(), sys.argv[1], clip_for=lambda event: next(clips))
    sink.event(Event("start", 1.0, 1, "siren", score=0.7))
    sink.event(Event("start", 1.5, 2, "dog", score=0.8))
    print(sink.run_id, flush=True)
    time.sleep(60)
""")


def test_a_killed_run_keeps_its_open_event_and_the_next_run_marks_it_interrupted(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             cwd=REPO)
    try:
        killed_run = child.stdout.readline().strip()
        assert killed_run, "the child did not start"
        child.kill()  # SIGKILL: no close, no atexit
    finally:
        child.wait(timeout=10)
        child.stdout.close()
    assert child.returncode == -9
    path = tmp_path / "events.sqlite"
    dog, siren = recent_events(path, 5)
    assert (siren["run_id"], siren["label"], siren["end_reason"], siren["clip"]) == (killed_run, "siren", None,
                                                                                     "siren_1.flac")
    # a clip is made after its event's end, which never came: none is there (unless a long event's was cut)
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "dog_2.flac").write_bytes(b"fLaC")
    next_run = EventLogSink(EventLogConfig(), tmp_path, clips_dir=tmp_path / "clips")
    next_run.event(start(1, t=2.0))  # the same event id in another run: no clash
    newest, dog, interrupted = recent_events(path, 5)
    assert interrupted["run_id"] == killed_run and interrupted["end_reason"] == "interrupted"
    assert (interrupted["clip"], dog["clip"], dog["end_reason"]) == (None, "dog_2.flac", "interrupted")
    assert newest["run_id"] == next_run.run_id != killed_run and newest["end_reason"] is None
    next_run.close()


def write_events(tmp_path, n, origin=None, **config):
    sink = EventLogSink(EventLogConfig(**config), tmp_path)
    if origin is not None:
        sink.origin = origin
    for i in range(1, n + 1):
        sink.event(start(i, t=float(i), label=f"l{i}"))
        sink.status(Status(float(i), "info", f"s{i}"))
    sink.close()
    return tmp_path / "events.sqlite"


def test_retention_by_count_keeps_the_newest(tmp_path):
    path = write_events(tmp_path, 8)
    EventLogSink(EventLogConfig(max_events=5), tmp_path).close()  # retention runs at start
    assert [r["label"] for r in recent_events(path, 100)] == ["l8", "l7", "l6", "l5", "l4"]
    assert rows(path, "SELECT message FROM statuses ORDER BY id") == [(f"s{i}",) for i in range(4, 9)]


def test_retention_by_age(tmp_path, monkeypatch):
    monkeypatch.setattr(edge.clock, "clock_synchronised", lambda: True)
    now = datetime.now(timezone.utc)
    write_events(tmp_path, 3, origin=now - timedelta(days=100))
    path = write_events(tmp_path, 2, origin=now - timedelta(days=80))
    EventLogSink(EventLogConfig(max_age_days=90), tmp_path).close()
    assert [r["label"] for r in recent_events(path, 100)] == ["l2", "l1"]
    assert rows(path, "SELECT count(*) FROM statuses") == [(2,)]
    EventLogSink(EventLogConfig(max_age_days=0.5), tmp_path).close()
    assert recent_events(path, 100) == []


def test_retention_by_age_waits_for_a_synchronised_clock(tmp_path, monkeypatch, caplog):
    """A box whose clock starts 200 days ahead (a dying RTC battery) had deleted its whole log at
    boot, before NTP set the clock right. While the kernel says the clock is not synchronised,
    nothing goes by age (the count cap still holds); service.trust_clock is for a good RTC without NTP."""
    day_old = datetime.now(timezone.utc) - timedelta(days=1)
    path = write_events(tmp_path, 4, origin=day_old)
    monkeypatch.setattr(edge.clock, "clock_synchronised", lambda: False)
    with caplog.at_level(logging.INFO, logger="edge.outputs.eventlog"):
        EventLogSink(EventLogConfig(max_age_days=0.001, max_events=3), tmp_path).close()
    assert [r["label"] for r in recent_events(path, 100)] == ["l4", "l3", "l2"]  # the cap only
    assert "waits for the system clock to be synchronised" in caplog.text
    EventLogSink(EventLogConfig(max_age_days=0.001), tmp_path, trust_clock=True).close()
    assert recent_events(path, 100) == []
    write_events(tmp_path, 2, origin=day_old)
    monkeypatch.setattr(edge.clock, "clock_synchronised", lambda: None)  # no way to tell: the clock is used
    EventLogSink(EventLogConfig(max_age_days=0.001), tmp_path).close()
    assert recent_events(path, 100) == []
    # dated 1970 by an earlier run that ended before NTP set the clock: no age to remove it by
    write_events(tmp_path, 2, origin=datetime(1970, 1, 1, 0, 5, tzinfo=timezone.utc))
    EventLogSink(EventLogConfig(max_age_days=0.001), tmp_path, trust_clock=True).close()
    assert len(recent_events(path, 100)) == 2


def test_retention_runs_again_while_the_service_runs(tmp_path, monkeypatch):
    sink = EventLogSink(EventLogConfig(max_events=3), tmp_path)
    for i in range(1, 5):
        sink.event(start(i))
    sink.close()
    assert len(recent_events(tmp_path / "events.sqlite", 100)) == 4  # not before the hour is over
    monkeypatch.setattr(eventlog, "RETENTION_SECONDS", 0.0)  # the hour is over after every record
    sink = EventLogSink(EventLogConfig(max_events=3), tmp_path)
    assert len(recent_events(tmp_path / "events.sqlite", 100)) == 3  # at start
    sink.event(start(1))
    sink.event(start(2))
    newest = recent_events(tmp_path / "events.sqlite", 100)
    assert [(r["run_id"] == sink.run_id, r["event_id"]) for r in newest] == [(True, 2), (True, 1), (False, 4)]
    sink.close()


class Statuses(Sink):
    """Another output beside the event log: the statuses it is given."""

    def __init__(self):
        super().__init__()
        self.statuses = []

    def window(self, result):
        pass

    def event(self, event):
        pass

    def status(self, status):
        self.statuses.append(status)


def test_records_wait_while_the_file_cannot_be_written_and_the_trouble_is_said_once(tmp_path, caplog):
    """A lock (or a full disk) loses nothing: the records wait, in order (an end finds its start),
    and are written once the file can be; the trouble is one warning and one status record with
    code event_log that every output sees (metrics, MQTT's problem sensor), its end another."""
    sink = EventLogSink(EventLogConfig(), tmp_path)
    others = Statuses()
    fan = FanOut([sink, others])
    path = tmp_path / "events.sqlite"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock: every write of the sink fails
    with caplog.at_level(logging.INFO, logger="edge.outputs.eventlog"):
        fan.event(start(1))
        fan.status(Status(1.5, "info", "x"))
        fan.event(end(1))
        fan.event(start(2, t=4.0))
        assert sink.pending == 5  # the four, and the status that said the trouble
        other.execute("ROLLBACK")
        other.close()
        fan.event(end(2, t=6.0))  # the file can be written again: everything, in order
    fan.close()
    assert sink.lost == 0 and sink.pending == 0
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "database is locked" in warnings[0] and str(path) in warnings[0]
    assert warnings[0].endswith(f"end what holds the file (fuser {path})")  # not "free disk space"
    assert [(s.code, s.t) for s in others.statuses if s.code] == [("event_log", 1.0), ("event_log_restored", 6.0)]
    events = recent_events(path, 10)
    assert [(e["event_id"], e["end_reason"], e["onset_t"]) for e in events] == [(2, "end", 4.0), (1, "end", 1.0)]
    assert [code for (code,) in rows(path, "SELECT code FROM statuses ORDER BY id")] == [
        "event_log", None, "event_log_restored"]


def test_beyond_pending_max_the_oldest_records_go_and_are_counted(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(eventlog, "PENDING_MAX", 2)
    sink = EventLogSink(EventLogConfig(statuses=False), tmp_path)
    other = sqlite3.connect(tmp_path / "events.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    for i in range(1, 5):
        sink.event(start(i, t=float(i)))
    other.execute("ROLLBACK")
    other.close()
    sink.event(end(4, t=6.0))
    sink.close()
    assert sink.lost == 3  # 1, 2, 3 went; 4 and its end were kept
    assert [e["event_id"] for e in recent_events(tmp_path / "events.sqlite", 10)] == [4]
    assert "dropping the oldest" in caplog.text
    dropped = [json.loads(r.getMessage().split("never written: ", 1)[1]) for r in caplog.records
               if r.getMessage().startswith("event log: never written: ")]  # what went is said whole in the journal
    assert [(d["type"], d["event_id"], d["t"]) for d in dropped] == [("start", 1, 1.0), ("start", 2, 2.0),
                                                                      ("start", 3, 3.0)]


def test_records_still_waiting_at_a_stop_are_said_whole_in_the_journal(tmp_path, caplog):
    """A stop or a reload (SIGHUP starts the service again in place) while the disk is full: the
    records waiting in memory were only counted, and the event log never got them; each now goes
    to the journal as the record listen --json writes, with its run."""
    sink = EventLogSink(EventLogConfig(), tmp_path)
    other = sqlite3.connect(tmp_path / "events.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # held across the close: its last try fails too
    with caplog.at_level(logging.WARNING, logger="edge.outputs.eventlog"):
        sink.event(start(1, t=1.0))
        sink.event(end(1, t=3.0))
        sink.close()
    other.execute("ROLLBACK")
    other.close()
    said = [json.loads(r.getMessage().split("never written: ", 1)[1]) for r in caplog.records
            if r.getMessage().startswith("event log: never written: ")]
    assert [(s["type"], s["event_id"], s["run_id"]) for s in said] == [("start", 1, sink.run_id), ("end", 1, sink.run_id)]
    assert said[0]["score"] == 0.6123 and said[1]["duration"] == 2.0
    assert "closing with 2 record(s) never written" in caplog.text


def test_a_locked_or_full_file_at_start_does_not_stop_the_service(tmp_path, monkeypatch):
    """A lock held through the start (a backup, a reader's checkpoint), a full disk or an I/O
    error passes: the service listens without the file and writes it once it can."""
    monkeypatch.setattr(eventlog, "OPEN_BUSY_SECONDS", 0.1)
    monkeypatch.setattr(eventlog, "REOPEN_SECONDS", 0.0)
    EventLogSink(EventLogConfig(), tmp_path).close()
    other = sqlite3.connect(tmp_path / "events.sqlite", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    sink = EventLogSink(EventLogConfig(), tmp_path)  # no ConfigError (exit 78: systemd would never restart it)
    sink.event(start(1))
    assert sink.pending == 1
    other.execute("ROLLBACK")
    other.close()
    sink.event(end(1))
    sink.close()
    assert [(e["event_id"], e["end_reason"]) for e in recent_events(tmp_path / "events.sqlite", 5)] == [(1, "end")]


def test_a_damaged_file_is_moved_aside_and_a_new_one_begun(tmp_path, caplog):
    sink = EventLogSink(EventLogConfig(), tmp_path)
    for i in range(1, 200):
        sink.event(start(i, t=float(i)))
    sink.close()
    path = tmp_path / "events.sqlite"
    with open(path, "r+b") as f:  # a power cut on a cheap SD card: pages of garbage
        f.seek(4096)
        f.write(os.urandom(8192))
    sink = EventLogSink(EventLogConfig(), tmp_path)
    sink.event(start(1))
    sink.close()
    aside = list(tmp_path.glob("events.sqlite.damaged-*"))
    assert aside and "is damaged" in caplog.text and str(aside[0]) in caplog.text
    assert [e["event_id"] for e in recent_events(path, 5)] == [1]
    # a failing card damages file after file: only the newest DAMAGED_KEPT copies stay, the one just
    # set aside among them even when copies dated by a clock that ran ahead look newer
    for day in range(1, 6):
        (tmp_path / f"events.sqlite.damaged-2099010{day}T000000Z").write_bytes(b"old")
        (tmp_path / f"events.sqlite.damaged-2099010{day}T000000Z-wal").write_bytes(b"old")
    for old in aside:
        old.unlink()
    path.write_bytes(bytes(range(256)) * 20)  # garbage over the whole file
    sink = EventLogSink(EventLogConfig(), tmp_path)
    sink.close()
    copies = sorted(p.name for p in tmp_path.glob("events.sqlite.damaged-*") if not p.name.endswith(("-wal", "-shm")))
    assert len(copies) == eventlog.DAMAGED_KEPT and copies[-2:] == [f"events.sqlite.damaged-2099010{d}T000000Z"
                                                                     for d in (4, 5)]
    assert copies[0].startswith(f"events.sqlite.damaged-{datetime.now(timezone.utc):%Y}")  # set aside now
    assert not [p for p in tmp_path.glob("events.sqlite.damaged-2099010[1-3]*")]  # the oldest, -wal and all


@pytest.mark.slow  # the start waits out its busy timeout
def test_a_damaged_file_that_cannot_be_moved_aside_is_said_and_records_wait(tmp_path, caplog, monkeypatch):
    """The move of a damaged file can fail too (its folder gone read-only, a failing card): an OSError
    that reached the listen loop. Said, and the records wait as for a full disk."""
    path = tmp_path / "events.sqlite"
    path.write_bytes(bytes(range(256)) * 20)  # garbage over the whole file

    def read_only(*args):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(eventlog.os, "replace", read_only)
    sink = EventLogSink(EventLogConfig(), tmp_path)
    sink.event(start(1))
    assert "cannot be moved aside ([Errno 30] Read-only file system)" in caplog.text
    assert sink.pending == 1
    monkeypatch.undo()
    sink.close()  # a last try: the file is set aside now, and the record written
    assert [e["event_id"] for e in recent_events(path, 5)] == [1]


def test_a_file_deleted_while_the_service_runs_is_begun_again(tmp_path, caplog):
    sink = EventLogSink(EventLogConfig(), tmp_path, clip_for=lambda e: f"clip_{e.event_id}.flac")
    path = tmp_path / "events.sqlite"
    sink.event(start(1))
    for part in tmp_path.glob("events.sqlite*"):
        part.unlink()  # `rm events.sqlite*`, or a log rotation that moves it away
    sink.event(end(1))
    sink.event(start(2, t=4.0))
    sink.close()
    assert "deleted or replaced while the service ran" in caplog.text
    assert [(e["event_id"], e["onset_t"]) for e in recent_events(path, 5)] == [(2, 4.0), (1, 1.0)]
    # the event written whole from its end keeps its start's score and its clip (they were null)
    whole = recent_events(path, 5)[1]
    assert (whole["score"], whole["clip"]) == (0.6123, "clip_1.flac"), whole


def test_a_rotated_file_keeps_every_record_and_close_makes_a_last_try(tmp_path):
    """`mv events.sqlite events.sqlite.1` (a log rotation): the moved file keeps every record (its
    WAL is checkpointed into it; SQLite does not on close for a moved file) and a new one is begun.
    Records that wait when the service stops are tried once more: the lock may be gone by then."""
    sink = EventLogSink(EventLogConfig(statuses=False), tmp_path)
    path = tmp_path / "events.sqlite"
    for i in range(1, 201):
        sink.event(start(i, t=float(i)))
    path.rename(tmp_path / "events.sqlite.1")
    sink.event(start(201, t=201.0))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    sink.event(start(202, t=202.0))
    assert sink.pending == 1
    other.execute("ROLLBACK")
    other.close()
    sink.close()
    assert sink.pending == 0
    assert rows(tmp_path / "events.sqlite.1", "SELECT count(*) FROM events") == [(200,)]
    assert [e["event_id"] for e in recent_events(path, 5)] == [202, 201]


def test_a_header_of_garbage_in_the_service_s_own_file_is_set_aside(tmp_path, caplog):
    EventLogSink(EventLogConfig(), tmp_path).close()
    path = tmp_path / "events.sqlite"
    with open(path, "r+b") as f:
        f.write(b"x" * 100)  # "SQLite format 3" gone: not a database any more
    sink = EventLogSink(EventLogConfig(), tmp_path)
    sink.event(start(1))
    sink.close()
    assert list(tmp_path.glob("events.sqlite.damaged-*")) and "is damaged" in caplog.text
    assert [e["event_id"] for e in recent_events(path, 5)] == [1]


def test_a_newer_schema_is_a_clear_error(tmp_path):
    path = tmp_path / "events.sqlite"
    EventLogSink(EventLogConfig(), tmp_path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 2")
    for opening in (lambda: EventLogSink(EventLogConfig(), tmp_path), lambda: recent_events(path, 5)):
        with pytest.raises(ConfigError, match="newer semanticac-edge .*schema version 2; this one reads up to 1") \
                as info:
            opening()
        assert info.value.key == "event_log.path" and "upgrade" in str(info.value)


def test_another_programs_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE recipes (name TEXT)")
    with pytest.raises(ConfigError, match="SQLite file of something else .*recipes"):
        EventLogSink(EventLogConfig(path=str(path)), tmp_path)
    # a file that is plainly no event log (text, a recording) where event_log.path says the log is: a
    # mistake in the config (it named the config itself, which was then set aside as a damaged log and
    # replaced by a database: the next start could not read its config); left as it is, refused
    for name, content in (("svc.yaml", b"schema_version: 1\nlabels: {set: urban}\n"), ("street.wav", b"RIFF\0\0")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError, match=f"event_log.path .*{name} is a (text|WAV) file.*not an event log: it "
                                              "is left as it is") as info:
            EventLogSink(EventLogConfig(path=str(tmp_path / name)), tmp_path)
        assert info.value.key == "event_log.path" and (tmp_path / name).read_bytes() == content
        assert not list(tmp_path.glob(f"{name}.damaged-*"))


def test_an_unwritable_path_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(ConfigError, match="file/sub/events.sqlite cannot be used as the event log") as info:
        EventLogSink(EventLogConfig(path=str(tmp_path / "file" / "sub" / "events.sqlite")), tmp_path)
    assert info.value.key == "event_log.path" and "ReadWritePaths=" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_a_read_only_file_is_a_config_error(tmp_path):
    EventLogSink(EventLogConfig(), tmp_path).close()
    (tmp_path / "events.sqlite").chmod(0o444)
    with pytest.raises(ConfigError, match="readonly") as info:
        EventLogSink(EventLogConfig(), tmp_path)
    assert info.value.key == "event_log.path"


def test_recent_events_of_a_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="no event log there: has the service run with event_log enabled"):
        recent_events(tmp_path / "nothing.sqlite", 5)
    assert not (tmp_path / "nothing.sqlite").exists()


@pytest.mark.parametrize("mapping, key, text", [
    ({"max_events": 0}, "event_log.max_events", "event_log.max_events 0 is not allowed: use a whole number from 1 to 1000000000"),
    ({"max_age_days": -1}, "event_log.max_age_days", "> 0"),
    ({"path": ""}, "event_log.path", "a file path"),
    ({"status": False}, "event_log.status", "did you mean `statuses`?"),
])
def test_bad_settings_name_the_key(mapping, key, text):
    with pytest.raises(ConfigError) as info:
        parse_section(EventLogConfig, mapping, "event_log")
    assert info.value.key == key and text in str(info.value)
    assert parse_section(EventLogConfig, {"max_age_days": 30}, "event_log") == EventLogConfig(max_age_days=30.0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="adjtimex is Linux's")
def test_the_kernel_says_whether_the_clock_is_synchronised():
    from edge.clock import clock_synchronised

    assert clock_synchronised() in (True, False)  # not None: adjtimex answered


def test_where_adjtimex_is_refused_systemd_timesyncd_s_files_say(tmp_path, monkeypatch):
    """A seccomp filter (ProtectClock=, or SystemCallFilter= without adjtimex) refuses even the
    read: systemd-timesyncd's folder says it runs, its `synchronized` file that it has set the clock."""
    import edge.clock

    def refused(*args, **kwargs):
        raise OSError("refused")

    monkeypatch.setattr(edge.clock.ctypes, "CDLL", refused)
    monkeypatch.setattr(edge.clock, "TIMESYNCD", tmp_path / "timesync")
    assert edge.clock.clock_synchronised() is None  # no timesyncd: nothing can say
    (tmp_path / "timesync").mkdir()
    assert edge.clock.clock_synchronised() is False
    (tmp_path / "timesync" / "synchronized").touch()
    assert edge.clock.clock_synchronised() is True


def test_a_run_dated_by_an_unset_clock_is_dated_again_when_it_steps(tmp_path):
    """A box without a clock battery boots 120 days behind; NTP steps the clock a minute later.
    The run's rows written before (and those waiting) move with it; other runs' rows stay."""
    now = datetime.now(timezone.utc)
    path = write_events(tmp_path, 1, origin=now - timedelta(days=3))  # an earlier run, rightly dated
    sink = EventLogSink(EventLogConfig(), tmp_path, origin=now - timedelta(days=120))
    sink.event(start(1, t=5.0, label="siren"))
    sink.status(Status(6.0, "info", "before the step"))
    sink.redate(timedelta(days=120))
    sink.origin = now  # what the listen loop's start_clock does as it follows the clock
    sink.event(Event("end", 9.0, 1, "siren", duration=4.0, peak=0.9))
    sink.close()
    events = rows(path, "SELECT label, onset_utc, end_utc, duration FROM events ORDER BY id")
    assert events[0][0] == "l1" and datetime.fromisoformat(events[0][1]) < now - timedelta(days=2)
    label, onset, end, duration = events[1]
    assert label == "siren" and duration == 4.0
    assert abs(datetime.fromisoformat(onset) - (now + timedelta(seconds=5))) < timedelta(seconds=1)
    assert abs(datetime.fromisoformat(end) - (now + timedelta(seconds=9))) < timedelta(seconds=1)
    (status_utc,) = rows(path, "SELECT utc FROM statuses WHERE message = 'before the step'")[0]
    assert abs(datetime.fromisoformat(status_utc) - (now + timedelta(seconds=6))) < timedelta(seconds=1)
    (started,) = rows(path, f"SELECT started_utc FROM runs WHERE run_id = '{sink.run_id}'")[0]
    assert datetime.fromisoformat(started) > now  # the real clock read at the start, 120 days on
    # a file begun after the step (the log deleted by hand) gets the run's start as dated now
    later = EventLogSink(EventLogConfig(), tmp_path / "again")
    later.redate(timedelta(days=1))
    (tmp_path / "again" / "events.sqlite").unlink()
    later.event(start(1))
    later.close()
    (moved,) = rows(tmp_path / "again" / "events.sqlite", "SELECT started_utc FROM runs")[0]
    assert datetime.fromisoformat(moved) > now + timedelta(hours=23)


def test_each_run_says_which_model_set_and_settings_heard_its_events(tmp_path):
    """Months of bundle upgrades and calibrate edits: a run's row tells event rates apart. A log
    an older version wrote gets the table at the next start; a run's row goes with its last row,
    never the running one's."""
    old = tmp_path / "events.sqlite"
    write_events(tmp_path, 2)
    with sqlite3.connect(old) as db:
        db.execute("DROP TABLE runs")  # as a version before runs wrote it
    info = {"version": "9.9", "model_id": "m-1", "label_set": "urban", "labels_sha256": "a" * 64,
            "settings": {"thresholds": {"siren": 0.7}}}
    sink = EventLogSink(EventLogConfig(max_events=1), tmp_path, run_info=info)
    sink.event(start(1))
    got = rows(old, "SELECT run_id, version, model_id, label_set, settings FROM runs")
    assert got == [(sink.run_id, "9.9", "m-1", "urban", '{"thresholds": {"siren": 0.7}}')]
    sink.close()
    later = EventLogSink(EventLogConfig(max_events=1), tmp_path)
    later.event(start(1))
    later.close()
    third = EventLogSink(EventLogConfig(max_events=1), tmp_path)  # max_events 1: the first run's event goes
    third.close()
    assert [r for (r,) in rows(old, "SELECT run_id FROM runs ORDER BY rowid")] == [later.run_id, third.run_id]
