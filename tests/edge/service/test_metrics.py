"""MetricsSink over real HTTP on a free port: /metrics, /healthz, /stream, a stuck reader, bind errors."""

import http.client
import json
import socket
import threading
import time

import pytest

from edge.errors import ConfigError
from edge.events import Event
from edge.outputs.metrics import STREAM_BUFFER, MetricsConfig, MetricsSink
from edge.outputs.sinks import Status, WindowResult, record_dict
from edge.service.sections import parse_section

LABELS = ["siren", "dog_bark", "car_horn"]
THRESHOLDS = {"siren": 0.5, "dog_bark": 0.3, "car_horn": 0.4}


def window(t, dropped=0, level=-20.0, latency_ms=12.0, gated=False):
    return WindowResult(t, (("siren", 0.7), ("dog_bark", 0.2), ("car_horn", 0.05)), latency_ms, dropped, level, gated)


@pytest.fixture
def make_sink():
    made = []

    def make(stale_seconds=10.0, **kwargs):
        kwargs.setdefault("build_info", {"version": "0.1.0", "model": "demo"})
        sink = MetricsSink(MetricsConfig(port=0, stale_seconds=stale_seconds), LABELS, thresholds=THRESHOLDS, **kwargs)
        sink.start()
        made.append(sink)
        return sink

    yield make
    for sink in made:
        sink.close()


def get(sink, path):
    """(status, body) over a real connection (http.client: no proxy from the environment)."""
    connection = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def health_when(sink, wanted):
    """Poll /healthz until its status is `wanted` (a stale verdict takes stale_seconds to come)."""
    deadline = time.monotonic() + 10
    while True:
        code, body = get(sink, "/healthz")
        if json.loads(body)["status"] == wanted or time.monotonic() > deadline:
            return code, json.loads(body)
        time.sleep(0.05)


def value(sink, name, **labels):
    return sink.registry.get_sample_value(name, labels or None)


class StreamReader:
    """A /stream client reading JSON lines (keepalives skipped)."""

    def __init__(self, sink):
        self.connection = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=10)
        self.connection.request("GET", "/stream")
        self.response = self.connection.getresponse()
        assert self.response.status == 200

    def next(self):
        while True:
            line = self.response.readline()
            if not line:
                return None
            if line.strip():
                return json.loads(line)

    def close(self):
        self.response.close()  # it holds the socket too: closing only the connection leaves it open
        self.connection.close()


def test_metrics_show_what_was_fed(make_sink):
    sink = make_sink(mqtt_connected=lambda: True)
    sink.window(window(1.0, latency_ms=12.0))
    sink.window(window(2.0, dropped=2, level=-31.5, latency_ms=300.0, gated=True))
    sink.event(Event("start", 1.0, 1, "siren", score=0.6))
    sink.event(Event("start", 1.5, 2, "dog_bark", score=0.4))
    sink.event(Event("end", 2.0, 1, "siren", duration=1.0, peak=0.8))
    sink.status(Status(2.0, "warning", "inference fell behind", code="overload"))

    status, text = get(sink, "/metrics")
    assert status == 200
    expected = [
        "semanticac_windows_total 2.0",
        "semanticac_dropped_windows_total 2.0",
        "semanticac_gated_windows_total 1.0",
        'semanticac_inference_latency_seconds_bucket{le="0.025"} 1.0',
        "semanticac_inference_latency_seconds_count 2.0",
        "semanticac_audio_level_dbfs -31.5",
        'semanticac_events_total{label="siren"} 1.0',
        'semanticac_events_total{label="car_horn"} 0.0',  # every label's series from the start
        'semanticac_event_active{label="siren"} 0.0',
        'semanticac_event_active{label="dog_bark"} 1.0',
        'semanticac_status_total{code="overload",level="warning"} 1.0',
        "semanticac_device_up 1.0",
        "semanticac_mqtt_connected 1.0",
        'semanticac_build_info{model="demo",version="0.1.0"} 1.0',
    ]
    assert [line for line in expected if line not in text.splitlines()] == []
    assert time.time() - value(sink, "semanticac_last_window_timestamp_seconds") < 60


def test_dropped_counts_the_increase_of_the_cumulative_total(make_sink):
    sink = make_sink()
    for dropped in (0, 3, 3, 5, 1):  # 1: a new stream counts from 0 again
        sink.window(window(1.0, dropped=dropped))
    assert value(sink, "semanticac_dropped_windows_total") == 5


def test_an_mqtt_probe_that_fails_does_not_fail_the_scrape(make_sink):
    def broken():
        raise RuntimeError("client gone")

    sink = make_sink(mqtt_connected=broken)
    status, text = get(sink, "/metrics")
    assert status == 200 and "semanticac_mqtt_connected NaN" in text


def test_healthz_ok_then_stale_then_device_lost_and_restored(make_sink):
    # 2 s: the time from start() or window() to the GET that must find it fresh (0.5 s was missed on a loaded machine)
    sink = make_sink(stale_seconds=2.0)
    status, body = get(sink, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "starting"

    sink.window(window(1.0))
    status, body = get(sink, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"

    status, health = health_when(sink, "stale")
    assert status == 503 and health["status"] == "stale" and health["last_window_seconds_ago"] > 2.0
    assert "no window for" in health["reason"] and "metrics.stale_seconds 2" in health["reason"]

    sink.window(window(2.0))
    sink.status(Status(2.0, "error", "the microphone disappeared", code="audio_lost"))
    status, body = get(sink, "/healthz")
    health = json.loads(body)
    assert status == 503 and health["status"] == "device_lost" and health["device_up"] is False
    assert "the microphone disappeared" in health["reason"]
    assert value(sink, "semanticac_device_up") == 0

    sink.status(Status(5.0, "info", "the microphone is back", code="audio_restored"))
    sink.window(window(5.0))
    status, body = get(sink, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert value(sink, "semanticac_device_up") == 1
    assert value(sink, "semanticac_device_restarts_total") == 1


def test_healthz_is_stale_when_no_window_ever_came(make_sink):
    sink = make_sink(stale_seconds=0.2)
    status, health = health_when(sink, "stale")
    assert status == 503 and health["status"] == "stale" and "since the service started" in health["reason"]


def test_unknown_path_is_404_naming_the_paths(make_sink):
    status, body = get(make_sink(), "/nope")
    assert status == 404 and "/metrics, /healthz and /stream" in body


def test_stream_says_hello_then_replays_the_state_then_delivers_every_record(make_sink):
    sink = make_sink()
    start = Event("start", 1.0, 7, "siren", score=0.6)
    sink.event(start)
    sink.window(window(1.5))
    reader = StreamReader(sink)
    try:
        hello = reader.next()
        assert hello["type"] == "hello" and hello["labels"] == LABELS and hello["thresholds"] == THRESHOLDS
        assert hello["origin"] == sink.origin.isoformat(timespec="milliseconds")
        assert reader.next() == record_dict(start, sink.utc(1.0))  # still active: tail needs it
        assert reader.next() == record_dict(window(1.5), sink.utc(1.5))  # the latest window

        records = [window(2.0), Event("end", 2.0, 7, "siren", duration=1.0, peak=0.8),
                   Status(2.0, "warning", "inference fell behind", code="overload"), window(2.5, level=float("-inf"))]
        for record in records:
            sink.emit(record)
        for record in records:
            assert reader.next() == record_dict(record, sink.utc(record.t))
    finally:
        reader.close()


def test_a_stuck_reader_never_blocks_the_sink_nor_the_other_readers(make_sink):
    sink = make_sink()
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills fast: the server's writes block
    stuck.connect(("127.0.0.1", sink.port))
    stuck.sendall(b"GET /stream HTTP/1.0\r\n\r\n")  # and never reads

    reader = StreamReader(sink)
    assert reader.next()["type"] == "hello"
    got = []
    consumer = threading.Thread(target=lambda: got.extend(iter(reader.next, None)), daemon=True)
    consumer.start()
    deadline = time.monotonic() + 20
    while value(sink, "semanticac_stream_readers") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)

    n = 0
    while not value(sink, "semanticac_stream_dropped_records_total") and n < 200_000:
        for _ in range(1000):  # window() returns while the stuck reader's buffer is full
            n += 1
            sink.window(window(n / 10))
    assert value(sink, "semanticac_stream_dropped_records_total") > 0, f"no reader fell behind in {n} windows"
    assert n > STREAM_BUFFER
    sink.status(Status(n / 10, "info", "last"))

    sink.close()  # ends both streams: the stuck one by shutting its socket
    consumer.join(10)
    assert not consumer.is_alive()
    assert got[-1]["type"] == "status" and got[-1]["message"] == "last"  # the healthy reader got the end
    assert value(sink, "semanticac_stream_readers") == 0
    reader.close()
    stuck.close()


def test_close_ends_the_streams_and_frees_the_port(make_sink):
    sink = make_sink()
    reader = StreamReader(sink)
    assert reader.next()["type"] == "hello"
    sink.window(window(1.0))
    port = sink.port
    sink.close()
    assert reader.next()["type"] == "window"  # what was queued still arrives
    assert reader.next() is None  # then the stream ends
    reader.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_port_in_use_is_a_config_error_naming_the_key_and_the_fix(make_sink):
    first = make_sink()
    second = MetricsSink(MetricsConfig(port=first.port), LABELS, build_info={})
    with pytest.raises(ConfigError) as info:
        second.start()
    assert info.value.key == "metrics.port"
    assert f"metrics.port {first.port}" in str(info.value) and "choose a free port" in str(info.value)


def test_an_address_taken_at_the_start_is_a_problem_tried_again_until_it_listens(make_sink):
    """serve's start exited 78 on a port another program held or a LAN address DHCP had not given yet,
    and systemd does not restart that: a box whose network came up after the service stayed without
    events. With retry_seconds the start says it (code `metrics`), runs on, and listens once it can."""
    holder = make_sink()
    port = holder.port
    sink = MetricsSink(MetricsConfig(port=port), LABELS, build_info={}, retry_seconds=0.05)
    said = []
    sink.report = lambda level, message, code: said.append((level, code, message))
    try:
        sink.start()  # no ConfigError
        assert [(level, code) for level, code, _ in said] == [("warning", "metrics")]
        assert f"metrics.port {port}" in said[0][2] and "tries again every 0.05 s" in said[0][2]
        time.sleep(0.3)  # several tries while the port is held
        sink.window(window(1.0))
        assert len(said) == 1 and sink._server is None
        holder.close()
        sink._retrying.join(10)  # it ends once it listens and has the news ready (not as _server is set)
        assert sink._server is not None, "never listened once the port was free"
        sink.window(window(2.0))  # the news is said from the listen loop's thread
        assert [(level, code) for level, code, _ in said[1:]] == [("info", "metrics_restored")]
        assert f"listening on http://127.0.0.1:{port} now" in said[1][2] and f"port {port} was taken" in said[1][2]
        code, body = get(sink, "/healthz")
        assert code == 200 and json.loads(body)["windows"] == 2
    finally:
        sink.close()


def test_a_sink_closed_while_it_waits_for_its_address_stops_trying():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    sink = MetricsSink(MetricsConfig(port=holder.getsockname()[1]), LABELS, build_info={}, retry_seconds=3600)
    try:
        sink.start()
        began = time.monotonic()
        sink.close()  # does not wait out the hour
        assert time.monotonic() - began < 5 and not sink._retrying.is_alive() and sink._server is None
    finally:
        holder.close()


def test_a_host_that_does_not_resolve_is_a_config_error():
    sink = MetricsSink(MetricsConfig(host="no-such-host.invalid", port=0), LABELS, build_info={})
    with pytest.raises(ConfigError) as info:
        sink.start()
    assert info.value.key == "metrics.host" and "'no-such-host.invalid'" in str(info.value)
    # an address that resolves but is none of this machine's: the host's fault, not the port's
    sink = MetricsSink(MetricsConfig(host="192.0.2.1", port=0), LABELS, build_info={})  # TEST-NET-1
    with pytest.raises(ConfigError) as info:
        sink.start()
    assert info.value.key == "metrics.host" and "'192.0.2.1' is not an address of this machine" in str(info.value)


def test_config_defaults_and_bad_values():
    assert parse_section(MetricsConfig, None, "metrics") == MetricsConfig(True, "127.0.0.1", 9464, 10.0)
    for mapping, key, text in [
        ({"port": 70000}, "metrics.port", "a TCP port from 1 to 65535"),
        ({"port": -1}, "metrics.port", "metrics.port -1 is not allowed"),
        ({"host": ""}, "metrics.host", "an address to listen on"),
        ({"stale_seconds": 0}, "metrics.stale_seconds", "seconds > 0"),
        ({"stale_second": 5}, "metrics.stale_second", "did you mean `stale_seconds`?"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_section(MetricsConfig, mapping, "metrics")
        assert info.value.key == key and text in str(info.value), str(info.value)


def test_more_stream_readers_than_allowed_are_refused_and_a_freed_place_is_taken(make_sink):
    from edge.outputs.metrics import MAX_STREAM_READERS

    sink = make_sink()
    readers = [StreamReader(sink) for _ in range(MAX_STREAM_READERS)]
    try:
        for reader in readers:
            assert reader.next()["type"] == "hello"
        extra = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=10)
        extra.request("GET", "/stream")
        refused = extra.getresponse()
        assert refused.status == 503 and b"close one" in refused.read()
        extra.close()
        readers.pop().close()
        deadline = time.monotonic() + 10
        while len(sink._readers) >= MAX_STREAM_READERS:  # the server sees the close at its next keepalive
            assert time.monotonic() < deadline, "a closed reader kept its place"
            time.sleep(0.05)
        again = StreamReader(sink)
        assert again.next()["type"] == "hello"
        readers.append(again)
    finally:
        for reader in readers:
            reader.close()


def test_idle_connections_are_closed_and_capped(make_sink, monkeypatch):
    """A connection that sends nothing is closed after the request timeout, and beyond
    MAX_CONNECTIONS one is closed at once: idle or half-open clients cannot take every thread and
    file descriptor (they had, and the clips could no longer be written)."""
    import socket

    from edge.outputs import metrics

    monkeypatch.setattr(metrics._Handler, "timeout", 0.5)
    monkeypatch.setattr(metrics, "MAX_CONNECTIONS", 4)
    sink = make_sink()
    idle = [socket.create_connection(("127.0.0.1", sink.port), timeout=5) for _ in range(metrics.MAX_CONNECTIONS)]
    try:
        extra = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
        assert extra.recv(1) == b""  # over the cap: closed at once, no thread for it
        extra.close()
        started = time.monotonic()
        assert all(s.recv(1) == b"" for s in idle)  # each closed by the server after its request timeout
        assert time.monotonic() - started < 3
        assert get(sink, "/healthz")[0] in (200, 503)  # places free again: a real request is answered
    finally:
        for s in idle:
            s.close()


def test_a_request_that_drips_in_is_closed_after_the_request_timeout_in_all(make_sink, monkeypatch):
    """The socket's timeout is per read: connections that each sent a byte every 5 s held every place for
    as long as they liked, and /healthz answered none (a privacy audit: 40 of them, 45 s). A request
    must now all come within the timeout."""
    import select
    import socket

    from edge.outputs import metrics

    monkeypatch.setattr(metrics._Handler, "timeout", 1.0)
    monkeypatch.setattr(metrics, "MAX_CONNECTIONS", 4)
    sink = make_sink()
    drips = [socket.create_connection(("127.0.0.1", sink.port), timeout=5) for _ in range(metrics.MAX_CONNECTIONS)]
    started, closed = time.monotonic(), {}
    try:
        extra = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
        assert extra.recv(1) == b""  # every place is taken
        extra.close()
        request = b"GET /metrics" + b"a" * 1000  # a request line that never ends, a byte every 0.2 s
        for k in range(30):
            for i, s in enumerate(drips):
                if i not in closed and (select.select([s], [], [], 0)[0] and s.recv(1) == b""):
                    closed[i] = time.monotonic() - started
                elif i not in closed:
                    try:
                        s.sendall(request[k:k + 1])
                    except OSError:
                        closed[i] = time.monotonic() - started
            if len(closed) == len(drips):
                break
            time.sleep(0.2)
        # though each kept sending: closed after the 1 s timeout (a loaded machine's threads answer late, so
        # up to 4.5 s), where a per-read timeout kept all of them past the 6 s this loop drips for
        assert len(closed) == len(drips) and max(closed.values()) < 4.5, closed
        assert get(sink, "/healthz")[0] in (200, 503)  # places free again: a real request is answered
    finally:
        for s in drips:
            s.close()


def test_the_clip_recorder_s_counts_and_its_disk_s_room_are_scraped_as_they_are_now(make_sink):
    from edge.outputs.metrics import ClipCounts

    counts = {"now": ClipCounts(written=3, skipped=1, removed=2, free_bytes=5_000_000)}
    sink = make_sink(clips=lambda: counts["now"])
    _, body = get(sink, "/metrics")
    assert 'semanticac_clips_total{outcome="written"} 3.0' in body
    assert 'semanticac_clips_total{outcome="skipped"} 1.0' in body
    assert 'semanticac_clips_total{outcome="removed"} 2.0' in body
    assert "semanticac_clips_disk_free_bytes 5e+06" in body
    counts["now"] = ClipCounts(written=4, skipped=1, removed=2, free_bytes=None)
    _, body = get(sink, "/metrics")
    assert 'semanticac_clips_total{outcome="written"} 4.0' in body and "semanticac_clips_disk_free_bytes NaN" in body
