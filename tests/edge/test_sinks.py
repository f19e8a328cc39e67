import io
import json
import os
import re
from datetime import datetime, timedelta, timezone

import pytest

from edge.events import Event
from edge.errors import OutputError
from edge.outputs.sinks import (
    FanOut,
    JsonLines,
    LiveView,
    PlainLines,
    Status,
    WindowResult,
    make_sink,
    record_dict,
    same_terminal,
)

ORIGIN = datetime(2026, 11, 27, 0, 31, 0, 500000, tzinfo=timezone.utc)
ANSI = re.compile(r"\x1b\[")

RECORDS = [
    Status(0.0, "info", "listening on default input"),
    WindowResult(2.0, (("dog_bark", 0.8123456), ("siren", 0.1), ("car_horn", 0.05)), latency_ms=12.34, dropped=0,
                 level_dbfs=-23.456, gain_db=6.54),
    Event("start", 1.5, 1, "dog_bark", score=0.61),
    WindowResult(2.5, (("dog_bark", 0.2), ("siren", 0.1), ("car_horn", 0.05)), latency_ms=9.0, dropped=2,
                 level_dbfs=-71.0, gated=True),
    Event("end", 2.5, 1, "dog_bark", duration=1.0, peak=0.83),
    Status(2.5, "warning", "inference fell behind: 2 windows dropped"),
]

KEYS = {  # type -> the keys it adds to schema/type/t/utc, and their types
    "window": {"top": list, "latency_ms": float, "dropped": int, "level_dbfs": float, "gated": bool,
               "gain_db": (float, type(None))},
    "start": {"event_id": int, "label": str, "score": float},
    "end": {"event_id": int, "label": str, "duration": float, "peak": float},
    "status": {"level": str, "message": str},
}


class FlushCounter(io.StringIO):
    """Records how much had been written at each flush."""

    def __init__(self):
        super().__init__()
        self.flushed_at = []

    def flush(self):
        self.flushed_at.append(len(self.getvalue()))


def test_json_lines_parse_with_every_key_and_flush_per_line():
    stream = FlushCounter()
    with make_sink(json_lines=True, stream=stream, origin=ORIGIN) as sink:
        assert isinstance(sink, JsonLines)
        for record in RECORDS:
            sink.emit(record)
    text = stream.getvalue()
    lines = text.splitlines()
    assert len(lines) == len(RECORDS) and not ANSI.search(text)
    ends = [m.end() for m in re.finditer("\n", text)]
    assert set(ends) <= set(stream.flushed_at)  # flushed after each line, before the next is written
    for line, record in zip(lines, RECORDS):
        obj = json.loads(line)
        assert obj["schema"] == 1 and obj["type"] in KEYS
        assert set(obj) == {"schema", "type", "t", "utc"} | set(KEYS[obj["type"]])
        for key, kind in KEYS[obj["type"]].items():
            assert isinstance(obj[key], kind), (key, obj)
        assert isinstance(obj["t"], float) and obj["t"] == pytest.approx(record.t)
        utc = datetime.fromisoformat(obj["utc"])
        assert utc.utcoffset() == timedelta(0)
        assert utc == ORIGIN + timedelta(seconds=record.t)
    window, start, end = (json.loads(lines[i]) for i in (1, 2, 4))
    assert [entry["label"] for entry in window["top"]] == ["dog_bark", "siren", "car_horn"]
    assert window["top"][0]["score"] == pytest.approx(0.8123, abs=1e-4) and window["latency_ms"] == 12.3
    assert json.loads(lines[3])["dropped"] == 2
    assert (window["level_dbfs"], window["gated"]) == (-23.5, False)
    assert (json.loads(lines[3])["level_dbfs"], json.loads(lines[3])["gated"]) == (-71.0, True)
    assert (window["gain_db"], json.loads(lines[3])["gain_db"]) == (6.5, None)  # None: a bundle without a gain
    assert (start["event_id"], start["label"], start["score"]) == (1, "dog_bark", 0.61)
    assert (end["duration"], end["peak"]) == (1.0, 0.83)
    assert json.loads(lines[0])["utc"] == "2026-11-27T00:31:00.500+00:00"


def test_json_writes_a_non_finite_number_as_null():
    stream = io.StringIO()
    JsonLines(stream, ORIGIN).window(WindowResult(1.0, (("a", float("nan")),), float("inf"), 0))
    obj = json.loads(stream.getvalue())  # strict JSON: no NaN literal
    assert obj["top"][0]["score"] is None and obj["latency_ms"] is None


def test_a_file_name_that_is_no_utf8_is_written_as_its_bytes_not_a_lone_surrogate():
    """`listen --input` of caf\xe9.wav (a Latin-1 name) ended its JSON with "\udce9", which strict parsers
    refuse (and SQLite, the event log's, cannot store)."""
    import os

    name = os.fsdecode(b"/rec/caf\xe9.wav")
    line = json.dumps(record_dict(Status(1.0, "info", f"stopped (end of audio file {name})"), "x"))
    assert "\\udce9" not in line and json.loads(line)["message"] == "stopped (end of audio file /rec/caf\\xe9.wav)"
    assert record_dict(Status(1.0, "info", "Türklingel 犬"), "x")["message"] == "Türklingel 犬"  # UTF-8 stays


def test_json_never_writes_minus_zero():
    """A gain of -0.04 dB rounds to 0.0, not -0.0 (a reader comparing strings, or a sign, was misled)."""
    stream = io.StringIO()
    JsonLines(stream, ORIGIN).window(WindowResult(1.0, (("a", 0.5),), 5.0, 0, gain_db=-0.04))
    assert '"gain_db": 0.0' in stream.getvalue() and "-0.0" not in stream.getvalue()


def test_a_window_says_what_the_vocabulary_heard_only_when_asked():
    heard = WindowResult(3.0, (("siren", 0.2),), 10.0, 0, heard=(("Beep, bleep", 0.96123), ("Sine wave", 0.05)))
    stream = io.StringIO()
    JsonLines(stream, ORIGIN).window(heard)
    assert json.loads(stream.getvalue())["heard"] == [{"name": "Beep, bleep", "score": 0.9612},
                                                      {"name": "Sine wave", "score": 0.05}]
    plain = io.StringIO()
    PlainLines(plain, ORIGIN).window(heard)
    assert plain.getvalue().rstrip().endswith("heard: Beep, bleep 0.96, Sine wave 0.05")
    live = io.StringIO()
    LiveView(live, ORIGIN).window(heard)
    assert "heard: Beep, bleep 0.96, Sine wave 0.05" in live.getvalue()
    # without it, no key and no text (test_json_lines_parse_with_every_key... checks the exact keys)
    stream = io.StringIO()
    PlainLines(stream, ORIGIN).window(RECORDS[1])
    assert "heard" not in stream.getvalue()


def test_plain_lines_one_per_record():
    stream = io.StringIO()
    sink = make_sink(stream=stream, origin=ORIGIN)
    assert isinstance(sink, PlainLines)
    for record in RECORDS:
        sink.emit(record)
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(RECORDS) and not ANSI.search(stream.getvalue())
    kinds = [line.split()[1] for line in lines]
    assert kinds == ["status", "window", "start", "window", "end", "status"]
    assert "dog_bark 0.812" in lines[1] and "dropped 2" in lines[3]
    assert "gain +6.5 dB" in lines[1] and "gain" not in lines[3]  # the second window's bundle has no gain
    assert "#1 dog_bark" in lines[2] and "duration 1.000 s" in lines[4] and "peak 0.830" in lines[4]


def test_live_view_redraws_in_place_and_keeps_events():
    stream = io.StringIO()
    view = LiveView(stream, ORIGIN)
    for record in RECORDS:
        view.emit(record)
    text = stream.getvalue()
    assert ANSI.search(text)
    # every redraw after the first goes up exactly the height of the block drawn before it
    draws = re.split(r"\x1b\[(\d+)F\x1b\[J", text)
    blocks, heights = draws[0::2], [int(h) for h in draws[1::2]]
    assert len(heights) == len(RECORDS) - 1
    for previous, height in zip(blocks, heights):  # a scrolled line (event, status) comes before the block
        lines = previous.splitlines()
        header = next(i for i, line in enumerate(lines) if line.startswith("semanticac-edge"))
        assert len(lines) - header == height
    assert "active: #1 dog_bark 0.5 s" in blocks[2]  # drawn with the start: its age at the last window
    assert "active: #1 dog_bark 1.0 s" in blocks[3]
    assert "input: level -23 dBFS (the model hears it +7 dB)" in blocks[1]
    assert "input: level -71 dBFS  gated" in blocks[3]  # no gain: a bundle without one
    assert "active: none" in blocks[-1] and "start   #1 dog_bark" in text and "end     #1 dog_bark" in text


def test_live_view_wraps_a_long_status_line_and_still_redraws_only_its_block(monkeypatch):
    """The first status line names the demo bundle's licence at its end: cut at the terminal's
    width it was lost; wrapped, every word stays, and the block below is still redrawn in place."""
    import shutil

    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size((60, 24)))
    stream = io.StringIO()
    view = LiveView(stream, ORIGIN)
    message = "model: the demo bundle shipped with semanticac-edge (/a/long/path/to/it); licence: CC BY-NC 3.0: " \
              "non-commercial use only"
    view.window(WindowResult(1.0, (("siren", 0.9),), 5.0, 0))
    view.status(Status(1.0, "info", message))
    view.window(WindowResult(2.0, (("siren", 0.8),), 5.0, 0))
    draws = re.split(r"\x1b\[(\d+)F\x1b\[J", stream.getvalue())
    scrolled = draws[2].split("semanticac-edge  t")[0].splitlines()
    assert len(scrolled) > 1 and all(len(line) <= 59 for line in scrolled)
    assert " ".join(line.strip() for line in scrolled).endswith("non-commercial use only")
    assert int(draws[3]) == len(view._block())  # the next redraw goes up the block only


def test_live_view_lines_of_wide_names_fit_the_terminal(monkeypatch):
    """Lines were cut by characters: a row of CJK names took twice the columns, wrapped in a 60-column
    terminal and the redraw (which goes up the block's line count) left stale lines behind."""
    import shutil

    from edge.outputs.sinks import columns

    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size((60, 24)))
    stream = io.StringIO()
    view = LiveView(stream, ORIGIN)
    for event_id in range(6):  # the active line lists every open event by name
        view.event(Event("start", 1.0, event_id, "犬の鳴き声" * 2, score=0.9))
    view.window(WindowResult(2.0, (("犬の鳴き声" * 4, 0.9), ("🚨 サイレン", 0.5)), 5.0, 0))
    block = re.split(r"\x1b\[\d+F\x1b\[J", stream.getvalue())[-1].splitlines()
    assert any("犬" in line for line in block) and max(columns(line) for line in block) <= 59, block


@pytest.mark.parametrize("n", [0, 1, 200])
def test_live_view_with_no_or_many_labels(n):
    stream = io.StringIO()
    view = LiveView(stream, ORIGIN)
    top = tuple((f"label_{i}_with_a_rather_long_name_indeed", 1.0 / (i + 1)) for i in range(n))
    view.window(WindowResult(1.0, top, 5.0, 0))
    view.window(WindowResult(1.5, top, 5.0, 0))
    view.close()
    last = re.split(r"\x1b\[\d+F\x1b\[J", stream.getvalue())[-1].splitlines()
    assert len(last) <= view.max_rows + 3  # header, rows, "... more", active
    assert ("(no labels)" in last[1]) == (n == 0)
    assert ("and 190 more" in stream.getvalue()) == (n == 200)


def test_factory_picks_the_live_view_on_a_terminal():
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert isinstance(make_sink(stream=tty), LiveView)
            assert isinstance(make_sink(json_lines=True, stream=tty), JsonLines)
    finally:
        os.close(master)
        os.close(slave)


def test_same_terminal_is_one_terminal_device_not_two_or_a_pipe():
    first, second = os.openpty(), os.openpty()
    read, write = os.pipe()
    try:
        with (open(first[1], "w", closefd=False) as a, open(first[1], "w", closefd=False) as a_again,
              open(second[1], "w", closefd=False) as b, open(write, "w", closefd=False) as pipe):
            assert same_terminal(a, a_again)
            assert not same_terminal(a, b) and not same_terminal(a, pipe) and not same_terminal(pipe, pipe)
            assert not same_terminal(a, None) and not same_terminal(io.StringIO(), io.StringIO())
    finally:
        for fd in (*first, *second, read, write):
            os.close(fd)


def test_default_stream_is_stdout_and_bad_records_are_refused(capsys):
    sink = make_sink(json_lines=True, origin=ORIGIN)
    sink.status(Status(0.0, "error", "capture device lost"))
    assert json.loads(capsys.readouterr().out)["message"] == "capture device lost"
    with pytest.raises(TypeError, match="cannot write a dict"):
        sink.emit({"t": 0})
    with pytest.raises(ValueError, match="level 'fatal' is not one of info, warning, error"):
        Status(0.0, "fatal", "x")
    with pytest.raises(ValueError, match="no timezone"):
        JsonLines(io.StringIO(), datetime(2026, 1, 1))


class _Failing(JsonLines):
    def close(self) -> None:
        raise OutputError("disk gone")


def test_fan_out_gives_every_sink_each_record_with_one_origin_and_closes_all():
    origin = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    streams = [io.StringIO(), io.StringIO()]
    late = JsonLines(streams[1], origin=origin + timedelta(hours=1))
    fan = FanOut([JsonLines(streams[0]), late], origin=origin)
    fan.window(WindowResult(t=1.0, top=(("siren", 0.9),), latency_ms=3.0, dropped=0))
    fan.event(Event("start", 0.5, 1, "siren", score=0.9))
    fan.status(Status(t=1.0, level="warning", message="hello", code="overload"))
    lines = [[json.loads(line) for line in s.getvalue().splitlines()] for s in streams]
    assert lines[0] == lines[1]
    assert [r["type"] for r in lines[0]] == ["window", "start", "status"]
    assert lines[0][0]["utc"] == "2026-01-02T03:04:06.000+00:00"

    class Closing(JsonLines):
        closed = False

        def close(self) -> None:
            self.closed = True

    after = Closing(io.StringIO())
    fan = FanOut([_Failing(io.StringIO()), after])
    with pytest.raises(OutputError, match="disk gone"):
        fan.close()
    assert after.closed


def test_live_view_shows_long_labels_whole_as_far_as_the_terminal_allows(monkeypatch):
    """Free-text labels are long ("a baby crying in the nursery"): the column widens for them and
    cuts (marked) only what the terminal cannot show; the bars stay aligned."""
    import shutil

    long = "a baby crying in the nursery at night"  # 37 characters
    top = ((long, 0.9), ("siren", 0.2))
    for columns, whole in ((100, True), (60, False)):
        monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24), c=columns: os.terminal_size((c, 24)))
        stream = io.StringIO()
        LiveView(stream, ORIGIN, thresholds={long: 0.5}).window(WindowResult(1.0, top, 5.0, 0))
        rows = [line for line in stream.getvalue().splitlines() if line.startswith("  ")]
        assert (long in rows[0]) == whole and rows[0].endswith(">= 0.500") == whole
        assert rows[0].index("#") == rows[1].index("#")  # ASCII bars (a StringIO has no encoding)
        assert all(len(row) <= columns - 1 for row in rows)
        if not whole:
            assert "a baby crying in the" in rows[0] and "~ #" in rows[0]
    # a terminal just wide enough for the label: its threshold shows whole (one column short cut "0.500" to "0.50")
    columns = len(long) + LiveView.ROW_REST + 1
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size((columns, 24)))
    stream = io.StringIO()
    LiveView(stream, ORIGIN, thresholds={long: 0.5}).window(WindowResult(1.0, top, 5.0, 0))
    row = next(line for line in stream.getvalue().splitlines() if line.startswith("  a baby"))
    assert long in row and row.endswith(">= 0.500")


def test_live_view_shows_each_labels_threshold_and_which_side_the_score_is():
    stream = io.StringIO()
    view = LiveView(stream, ORIGIN, thresholds={"dog_bark": 0.8124, "siren": 0.3})
    view.window(RECORDS[1])  # dog_bark 0.812, siren 0.1, car_horn 0.05 (no threshold given)
    rows = {line.split()[0]: line for line in stream.getvalue().splitlines() if line.startswith("  ")}
    # to the score's precision: at two places 0.812 showed as "< 0.81", its threshold 0.8124
    assert rows["dog_bark"].endswith("0.812  <  0.812") and rows["siren"].endswith("<  0.300")
    assert rows["car_horn"].endswith("0.050")


def test_a_label_held_back_for_want_of_the_student_s_agreement_is_named_only_then():
    """Shown above its threshold, no event: every format says why."""
    held = WindowResult(3.0, (("siren", 0.93), ("dog_bark", 0.2)), 10.0, 0, held=("siren",))
    stream, plain, live = io.StringIO(), io.StringIO(), io.StringIO()
    JsonLines(stream, ORIGIN).window(held)
    assert json.loads(stream.getvalue())["held"] == ["siren"]
    PlainLines(plain, ORIGIN).window(held)
    assert plain.getvalue().rstrip().endswith("not counted (the student disagrees): siren")
    LiveView(live, ORIGIN, thresholds={"siren": 0.5}).window(held)
    assert "\nnot counted (the student disagrees): siren\n" in live.getvalue()
    stream = io.StringIO()
    JsonLines(stream, ORIGIN).window(RECORDS[1])
    assert "held" not in json.loads(stream.getvalue())


def test_an_event_held_open_is_shown_quiet_in_every_format():
    """A held event (`hold`) is still active with its sound gone: the views said only "active"."""
    quiet = WindowResult(12.0, (("dog_bark", 0.05),), 10.0, 0, holding=((3, "dog_bark", 8.0),))
    stream, plain, live = io.StringIO(), io.StringIO(), io.StringIO()
    JsonLines(stream, ORIGIN).window(quiet)
    assert json.loads(stream.getvalue())["holding"] == [{"event_id": 3, "label": "dog_bark", "since": 8.0}]
    PlainLines(plain, ORIGIN).window(quiet)
    assert plain.getvalue().rstrip().endswith("held open: #3 dog_bark (quiet 4.0 s)")
    view = LiveView(live, ORIGIN)
    view.event(Event("start", 5.0, 3, "dog_bark", score=0.8))
    view.event(Event("start", 6.0, 4, "siren", score=0.9))
    view.window(quiet)
    assert "\nactive: #3 dog_bark 7.0 s (quiet 4.0 s: held open), #4 siren 6.0 s\n" in live.getvalue()
    stream = io.StringIO()
    JsonLines(stream, ORIGIN).window(RECORDS[1])
    assert "holding" not in json.loads(stream.getvalue())


def test_a_gain_that_rounds_to_nothing_is_no_minus_zero():
    """A window gain of -0.04 dB printed "gain -0.0 dB": a user reads a cut that is not there."""
    plain = io.StringIO()
    PlainLines(plain, ORIGIN).window(WindowResult(1.0, (("siren", 0.5),), 5.0, 0, level_dbfs=-20.0, gain_db=-0.04))
    assert "gain +0.0 dB" in plain.getvalue()


def test_labels_line_up_in_terminal_columns_whatever_their_script():
    """A CJK or emoji character takes two columns: padded by len() its row ran past the others."""
    from edge.outputs.sinks import columns, padded

    assert [columns(text) for text in ("siren", "犬の鳴き声", "🐶", "café", "cafe\u0301")] == [5, 10, 2, 4, 4]
    rows = [padded(text, 12) for text in ("siren", "犬の鳴き声", "🐶")]
    assert {columns(row) for row in rows} == {12}
    assert padded("犬の鳴き声と猫", 9, "~") == "犬の鳴き~"  # cut to 8 columns, then the mark
