"""`tail` against a running MetricsSink over real HTTP: top-k, level, thresholds, events, clear errors."""

import functools
import io
import math
import socket
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edge.events import Event
from edge.outputs.metrics import MetricsConfig, MetricsSink
from edge.outputs.sinks import Status, WindowResult, record_dict
from edge.service.tail import StreamError, from_record, normalize_url, tail

LABELS = ["siren", "dog_bark", "car_horn"]
THRESHOLDS = {"siren": 0.5, "dog_bark": 0.3, "car_horn": 0.4}
WINDOW = WindowResult(2.0, (("siren", 0.7), ("dog_bark", 0.2), ("car_horn", 0.05)), 12.0, 1, -20.0)


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def sink():
    sink = MetricsSink(MetricsConfig(port=0), LABELS, build_info={"version": "0.1.0"}, thresholds=THRESHOLDS)
    sink.start()
    yield sink
    sink.close()


def wait_for(condition, what):
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"waited 10 s for {what}"
        time.sleep(0.01)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_once_prints_the_thresholds_and_the_latest_window(sink):
    sink.window(WINDOW)
    out = io.StringIO()
    assert tail(sink.url, out, once=True) == 0
    text = out.getvalue()
    assert "thresholds siren 0.500, dog_bark 0.300, car_horn 0.400" in text.splitlines()[0]
    assert "window  siren 0.700, dog_bark 0.200, car_horn 0.050  latency 12.0 ms  dropped 1  level -20.0 dBFS" in text


def test_a_terminal_gets_the_live_view_with_bars_level_and_active_events(sink, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")  # the view cuts its lines to the terminal's width
    sink.event(Event("start", 1.0, 7, "siren", score=0.6))
    sink.window(WINDOW)
    out = Terminal()
    tail(sink.url, out, once=True)
    text = out.getvalue()
    assert "\x1b[" in text  # redrawn in place
    assert "level -20 dBFS" in text and "dropped 1" in text
    assert "siren" in text and "#" * 14 + "." * 6 + " 0.700" in text  # 0.7 of a 20-character bar
    assert "active: #7 siren 1.0 s" in text


def test_top_k_limits_the_labels_shown(sink):
    sink.window(WINDOW)
    out = io.StringIO()
    tail(normalize_url(f"127.0.0.1:{sink.port}"), out, top_k=1, once=True)
    window_line = [line for line in out.getvalue().splitlines() if " window " in line][0]
    assert "siren 0.700" in window_line and "dog_bark" not in window_line


def test_live_records_scroll_until_stop(sink):
    out, stop, result = io.StringIO(), threading.Event(), []
    runner = threading.Thread(target=lambda: result.append(tail(sink.url, out, stop=stop)), daemon=True)
    runner.start()
    wait_for(lambda: sink.registry.get_sample_value("semanticac_stream_readers") == 1, "tail to connect")
    sink.window(WINDOW)
    sink.event(Event("start", 1.0, 3, "siren", score=0.6))
    sink.event(Event("end", 2.5, 3, "siren", duration=1.5, peak=0.9))
    sink.status(Status(2.5, "warning", "inference fell behind", code="overload"))
    wait_for(lambda: "inference fell behind" in out.getvalue(), "the status line")
    text = out.getvalue()
    assert "start   #3 siren  score 0.600" in text and "end     #3 siren  duration 1.500 s  peak 0.900" in text
    stop.set()
    runner.join(10)
    assert not runner.is_alive() and result == [0]


def test_records_come_back_as_they_were_sent():
    records = [
        WINDOW,
        WindowResult(3.0, (("siren", 0.1),), 5.5, 0, -math.inf, gated=True),  # digital silence
        WindowResult(4.0, (("siren", 0.7),), 5.5, 0, -41.5, gain_db=21.5),  # a quiet window raised
        WindowResult(5.0, (("siren", 0.7),), 5.5, 0, -20.0, heard=(("Siren", 0.875), ("Vehicle", 0.5))),  # listen.heard
        WindowResult(6.0, (("siren", 0.7),), 5.5, 0, -20.0, held=("siren",)),  # no event: the student disagrees
        WindowResult(7.0, (("siren", 0.1),), 5.5, 0, -30.0, holding=((3, "siren", 6.5),)),  # quiet, held open
        Event("start", 1.0, 3, "siren", score=0.6),
        Event("end", 2.5, 3, "siren", duration=1.5, peak=0.9),
        Status(2.5, "warning", "inference fell behind", code="overload"),
        Status(3.0, "info", "no code"),
    ]
    for record in records:
        assert from_record(record_dict(record, "2026-01-01T00:00:00.000+00:00")) == record
    assert from_record({"type": "something_new", "t": 1.0}) is None


def test_nothing_listening_is_a_clear_error():
    port = free_port()
    with pytest.raises(StreamError) as info:
        tail(f"http://127.0.0.1:{port}", io.StringIO(), once=True)
    message = str(info.value)
    assert f"nothing listens at http://127.0.0.1:{port}" in message
    assert "is `semanticac-edge serve` running with metrics enabled?" in message and "/stream" in message


def test_the_stream_ending_is_a_clear_error(sink):
    out, errors = io.StringIO(), []

    def run():
        try:
            tail(sink.url, out)
        except StreamError as err:
            errors.append(err)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    wait_for(lambda: sink.registry.get_sample_value("semanticac_stream_readers") == 1, "tail to connect")
    sink.close()
    runner.join(10)
    assert not runner.is_alive() and "ended: the service stopped or restarted" in str(errors[0])


def test_another_server_at_the_url_is_a_clear_error(tmp_path):
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with pytest.raises(StreamError, match="answered HTTP 404 .*semanticac-edge serve"):
                tail(f"http://127.0.0.1:{server.server_address[1]}", io.StringIO(), once=True)
        finally:
            server.shutdown()
    # a server that answers /stream with bytes (a UnicodeDecodeError), or with a hello it cannot read (a KeyError)
    (tmp_path / "stream").write_bytes(b"\xff\xfe binary\n")
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            with pytest.raises(StreamError, match="sent bytes that are not UTF-8 text"):
                tail(url, io.StringIO(), once=True)
            (tmp_path / "stream").write_text('{"type": "hello", "schema": 1}\n')
            with pytest.raises(StreamError, match="began with a hello this tail cannot read"):
                tail(url, io.StringIO(), once=True)
        finally:
            server.shutdown()


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:9464", "http://127.0.0.1:9464/stream", "http://:9464", "h:99999"])
def test_a_bad_url_names_what_is_expected(url):
    with pytest.raises(StreamError, match="is not the address of a service: use http://HOST:PORT"):
        normalize_url(url)


def test_a_bare_port_is_this_machine_s_service():
    assert normalize_url("9464") == normalize_url("127.0.0.1:9464") == "http://127.0.0.1:9464"


def test_the_tail_command_shows_a_running_service_and_names_a_missing_one(sink):
    from click.testing import CliRunner

    import edge.cli

    sink.window(WINDOW)
    shown = CliRunner().invoke(edge.cli.main, ["tail", "--url", sink.url, "--once", "--top-k", "1"])
    assert shown.exit_code == 0, shown.output
    assert "window  siren 0.700  latency" in shown.output and "dog_bark 0.200" not in shown.output
    missing = CliRunner().invoke(edge.cli.main, ["tail", "--url", f"127.0.0.1:{free_port()}"])
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert "is `semanticac-edge serve` running with metrics enabled?" in missing.output
