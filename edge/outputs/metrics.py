"""The service's window on itself: Prometheus `/metrics`, `/healthz` and the `/stream` of records.

`MetricsSink` is a Sink (edge.outputs.sinks) that counts what the listen loop sends it and,
once `start()`ed, serves three paths from one small threaded HTTP server (127.0.0.1:9464 by
default, section `metrics` of the service config):

- `/metrics`  Prometheus text format, from the sink's own registry (never the global one, so
  several sinks in one process, as in tests, do not clash). Every name starts `semanticac_`.
- `/healthz`  200 while windows keep coming and the audio device is there; 503 when no window
  came for `stale_seconds` or after an `audio_lost` status (until `audio_restored`). The body
  is a small JSON object saying why, in both cases.
- `/stream`   JSON lines for `semanticac-edge tail`: first a `hello` line (schema, origin,
  labels, thresholds, build), then the start of every event still active and the latest
  window, then every record as it comes (edge.outputs.sinks.record_dict: the JSON-lines
  schema, windows included). An empty line is a keepalive, sent after KEEPALIVE_SECONDS
  without a record. At most MAX_STREAM_READERS read at once; one more is answered 503.

The listen loop must never wait on an HTTP client: the Sink methods only update counters and
append to each stream reader's bounded buffer. A reader that falls behind loses its oldest
records (it is told how many in a `status` line), never slows the loop or the other readers;
one stuck for STREAM_WRITE_TIMEOUT seconds is disconnected.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import re
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from edge.errors import ConfigError
from edge.events import Event
from edge.outputs.sinks import SCHEMA, Sink, Status, WindowResult, record_dict
from edge.service.sections import invalid

log = logging.getLogger(__name__)

STREAM_BUFFER = 256  # records a /stream reader may lag behind before its oldest are dropped (~1 min of windows)
MAX_STREAM_READERS = 8  # each is a thread: more are refused (503), so a client loop cannot exhaust them
KEEPALIVE_SECONDS = 1.0  # an empty line after this long without a record: tail sees a live server and its stop
STREAM_WRITE_TIMEOUT = 30.0  # seconds a reader may refuse data before it is disconnected
# A connection whose request has not all come after REQUEST_TIMEOUT s is closed (however slowly it
# drips in: the socket's own timeout is per read), and at most MAX_CONNECTIONS are served at once
# (each is a thread and a file descriptor): idle or half-open connections from a LAN (metrics.host
# 0.0.0.0) had taken every descriptor, and the clips could no longer be written; 40 that sent a byte
# every 5 s kept /healthz from answering for as long as they liked. BACKLOG: connections the kernel
# holds until one is accepted (socketserver's 5 had a burst of clients wait 20-30 s to connect).
REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 32
BACKLOG = 64
CLOSE_GRACE_SECONDS = 1.0  # close(): how long readers get to receive what is queued before their sockets are shut
# inference latency (the audio's arrival to its scores): a Jetson's GPU is in the low ms, a CPU in tens to hundreds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# serve: an address that cannot be listened on at the start is tried again this often, the service
# running meanwhile without its endpoints (a LAN address that DHCP gives only after the start, a port
# another program frees: at a boot, exit 78 had left the box without events until someone came)
RETRY_SECONDS = 30.0
# a port below 1024: never a passing trouble (the unit gives the service no capability, whoever checks the config)
PRIVILEGED_PORT_FIX = (
    "ports below 1024 need a privilege the service does not have (the unit gives it no capability): "
    "choose one from 1024 (9464), or set metrics.enabled: false"
)


@dataclass(frozen=True)
class MetricsConfig:
    """Section `metrics` of the service config."""

    enabled: bool = True
    host: str = "127.0.0.1"  # loopback: the endpoints are for this machine unless you open them
    port: int = 9464  # 0: any free port (tests); the sink's `port` says which
    stale_seconds: float = 10.0  # /healthz says 503 after this long without a window (a few hops)

    def __post_init__(self) -> None:
        if not self.host.strip() or any(c.isspace() for c in self.host):
            raise invalid("host", self.host, 'an address to listen on, e.g. "127.0.0.1" (this machine) or "0.0.0.0"')
        if not 0 <= self.port <= 65535:
            raise invalid("port", self.port, "a TCP port from 1 to 65535 (0: any free port)")
        if not (math.isfinite(self.stale_seconds) and self.stale_seconds > 0):
            raise invalid("stale_seconds", self.stale_seconds, "a number of seconds > 0, a few hops (e.g. 10)")


class AddressUnavailable(ConfigError):
    """An address the metrics cannot listen on now that may be free later: a port another program
    holds, an address this machine does not have (yet), a name that does not resolve (yet).
    `reason`: that in a few words."""

    def __init__(self, message: str, key: str, reason: str):
        super().__init__(message, key=key)
        self.reason = reason


class _Reader:
    """One /stream client: a bounded buffer that the Sink methods append to without waiting."""

    def __init__(self, connection: socket.socket):
        self.connection = connection
        self.lines: deque[tuple[float, bytes]] = deque(maxlen=STREAM_BUFFER)  # (t, JSON line); full: drops oldest
        self.ready = threading.Event()
        self.dropped = 0  # written by the audio path only
        self.done = threading.Event()

    def offer(self, t: float, line: bytes) -> bool:
        """Append; False when the oldest line had to go (deque.append is atomic: no lock)."""
        full = len(self.lines) >= STREAM_BUFFER
        self.dropped += full
        self.lines.append((t, line))
        self.ready.set()
        return not full

    def drain(self) -> list[tuple[float, bytes]]:
        out = []
        while True:
            try:
                out.append(self.lines.popleft())
            except IndexError:
                return out


@dataclass(frozen=True)
class ClipCounts:
    """What the clip recorder has done, and the room its disk has (None: not known)."""

    written: int
    skipped: int
    removed: int
    free_bytes: int | None


class _ClipsCollector:
    """The recorder's counts, read at each scrape (its worker thread keeps them)."""

    def __init__(self, counts: Callable[[], ClipCounts]):
        self.counts = counts

    def collect(self):
        counts = self.counts()
        outcomes = CounterMetricFamily(
            "semanticac_clips",
            "Clips by outcome: written, skipped (not written: no room, a failing disk), removed (by age or for room)",
            labels=["outcome"],
        )
        for outcome in ("written", "skipped", "removed"):
            outcomes.add_metric([outcome], getattr(counts, outcome))
        yield outcomes
        free = GaugeMetricFamily("semanticac_clips_disk_free_bytes", "Free bytes on the clips' disk")
        free.add_metric([], math.nan if counts.free_bytes is None else counts.free_bytes)
        yield free


class MetricsSink(Sink):
    """Counters, gauges and a histogram of the records; /metrics, /healthz and /stream once started.

    `labels` and `thresholds` (label -> threshold) describe the label set (series exist from
    the start at 0; `tail` shows the thresholds); `build_info` becomes semanticac_build_info;
    `mqtt_connected`, when given, is asked at each scrape (semanticac_mqtt_connected);
    `clips` too (the recorder's counts: semanticac_clips_total by outcome, and the free bytes of
    the clips' disk). `retry_seconds`: an address that start() cannot listen on (AddressUnavailable)
    is a status with code `metrics` and is tried again this often, `metrics_restored` once it
    listens; None: start() raises it.
    """

    def __init__(
        self,
        config: MetricsConfig,
        labels: Sequence[str],
        *,
        build_info: Mapping[str, str],
        mqtt_connected: Callable[[], bool] | None = None,
        thresholds: Mapping[str, float] | None = None,
        clips: Callable[[], ClipCounts] | None = None,
        retry_seconds: float | None = None,
    ):
        super().__init__()
        self.config = config
        self.retry_seconds = retry_seconds
        self.labels = list(labels)
        self.thresholds = dict(thresholds or {})
        # Prometheus label names: letters, digits and _ ("label-set" -> "label_set")
        self.build_info = {re.sub(r"\W", "_", str(k), flags=re.ASCII): str(v) for k, v in build_info.items()}
        self._mqtt_connected = mqtt_connected
        self._clips = clips
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics(self.registry)
        # what /healthz and a new /stream reader read; each a reference swapped whole (no lock on the audio path)
        self._started_at = time.monotonic()
        self._last_window_at: float | None = None
        self._last_window: WindowResult | None = None
        self._windows = 0
        self._dropped = 0  # the cumulative `dropped` of the last window
        self._lost: Status | None = None  # the audio_lost status while the device is gone
        self._active: dict[int, Event] = {}  # event_id -> its start, replaced on each change
        self._readers: tuple[_Reader, ...] = ()
        self._readers_lock = threading.Lock()  # attach/detach only (HTTP threads)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._retrying: threading.Thread | None = None
        self._restored: str | None = None  # the retry's news, said from the listen loop's thread

    def _metrics(self, registry: CollectorRegistry) -> None:
        p = "semanticac_"
        self.m_windows = Counter(p + "windows", "Windows scored", registry=registry)
        self.m_dropped = Counter(p + "dropped_windows", "Windows dropped: inference fell behind", registry=registry)
        self.m_gated = Counter(
            p + "gated_windows", "Windows below the level gate or digital silence", registry=registry
        )
        self.m_latency = Histogram(
            p + "inference_latency_seconds",
            "From the arrival of the audio that completed a window to its scores",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.m_level = Gauge(p + "audio_level_dbfs", "Loudness of the last window (20 log10 RMS)", registry=registry)
        self.m_last = Gauge(p + "last_window_timestamp_seconds", "Unix time of the last window", registry=registry)
        self.m_events = Counter(p + "events", "Events started, per label", ["label"], registry=registry)
        self.m_active = Gauge(p + "event_active", "1 while an event of the label is on", ["label"], registry=registry)
        for label in self.labels:  # every label's series from the start, at 0
            self.m_events.labels(label)
            self.m_active.labels(label)
        self.m_device_up = Gauge(p + "device_up", "1 while the audio device delivers, 0 once lost", registry=registry)
        self.m_device_up.set(1)
        self.m_restarts = Counter(p + "device_restarts", "Times the audio device came back", registry=registry)
        self.m_status = Counter(p + "status", "Status records, by level and code", ["level", "code"], registry=registry)
        self.m_readers = Gauge(p + "stream_readers", "Clients reading /stream", registry=registry)
        self.m_stream_dropped = Counter(
            p + "stream_dropped_records", "Records a slow /stream reader did not get", registry=registry
        )
        Info(p + "build", "Version of the software, model and label set", registry=registry).info(self.build_info)
        if self._mqtt_connected is not None:
            Gauge(p + "mqtt_connected", "1 while connected to the MQTT broker", registry=registry).set_function(
                self._mqtt_value
            )
        if self._clips is not None:
            registry.register(_ClipsCollector(self._clips))

    def _mqtt_value(self) -> float:
        assert self._mqtt_connected is not None
        try:
            return float(bool(self._mqtt_connected()))
        except Exception:  # a scrape must not fail because of the MQTT client
            log.debug("mqtt_connected failed", exc_info=True)
            return math.nan

    # --- the Sink: called from the listen loop; only counters and non-blocking appends

    def window(self, result: WindowResult) -> None:
        if self._restored is not None:  # report() reaches every output (the event log's connection): this thread
            restored, self._restored = self._restored, None
            self.report("info", restored, "metrics_restored")
        self.m_windows.inc()
        if result.dropped > self._dropped:
            self.m_dropped.inc(result.dropped - self._dropped)
        self._dropped = result.dropped  # lower: a new stream began counting from 0
        self.m_gated.inc(result.gated)
        if math.isfinite(result.latency_ms) and result.latency_ms >= 0:
            self.m_latency.observe(result.latency_ms / 1000.0)
        self.m_level.set(math.nan if result.level_dbfs is None else result.level_dbfs)
        self.m_last.set(time.time())
        self._windows += 1
        self._last_window, self._last_window_at = result, time.monotonic()
        self._publish(result)

    def event(self, event: Event) -> None:
        if event.kind == "start":
            self.m_events.labels(event.label).inc()
            self.m_active.labels(event.label).inc()
            self._active = {**self._active, event.event_id: event}
        elif event.event_id in self._active:  # an end whose start this sink saw
            self.m_active.labels(event.label).dec()
            self._active = {i: e for i, e in self._active.items() if i != event.event_id}
        self._publish(event)

    def status(self, status: Status) -> None:
        self.m_status.labels(status.level, status.code or "").inc()
        if status.code == "audio_lost":
            self._lost = status
            self.m_device_up.set(0)
        elif status.code == "audio_restored":
            self._lost = None
            self.m_device_up.set(1)
            self.m_restarts.inc()
        self._publish(status)

    def _publish(self, record: WindowResult | Event | Status) -> None:
        readers = self._readers
        if not readers:
            return
        line = self._line(record)
        for reader in readers:
            if not reader.offer(record.t, line):
                self.m_stream_dropped.inc()

    def _line(self, record: WindowResult | Event | Status) -> bytes:
        return (json.dumps(record_dict(record, self.utc(record.t)), allow_nan=False) + "\n").encode()

    # --- health

    def health(self) -> tuple[bool, dict]:
        """(healthy, the /healthz body): stale frames or a lost device are unhealthy."""
        now = time.monotonic()
        since = None if self._last_window_at is None else round(now - self._last_window_at, 3)
        body: dict = {"windows": self._windows, "last_window_seconds_ago": since, "device_up": self._lost is None}
        if self._mqtt_connected is not None:
            body["mqtt_connected"] = self._mqtt_value() == 1.0
        stale = self.config.stale_seconds
        lost = self._lost
        if lost is not None:
            status, why = "device_lost", f"the audio device is lost since stream time {lost.t:.1f} s: {lost.message}"
        elif since is None and now - self._started_at > stale:
            status = "stale"
            why = (
                f"no window in the {now - self._started_at:.1f} s since the service started (more than "
                f"metrics.stale_seconds {stale:g}): the model may still be loading, or the audio never came"
            )
        elif since is not None and since > stale:
            status = "stale"
            why = (
                f"no window for {since:.1f} s (more than metrics.stale_seconds {stale:g}): "
                "the listen loop is stuck or the audio stopped"
            )
        elif since is None:
            status, why = "starting", "no window yet: the model is loading or the audio has not started"
        else:
            status, why = "ok", f"last window {since:.1f} s ago"
        healthy = status in ("ok", "starting")
        return healthy, {"status": status, "reason": why, **body}

    # --- the server

    @property
    def port(self) -> int:
        """The port it listens on (the bound one after start(): port 0 picks a free one)."""
        return self._server.server_address[1] if self._server is not None else self.config.port

    @property
    def url(self) -> str:
        host = self.config.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self) -> None:
        """Listen on config.host:config.port and serve in a daemon thread; ConfigError when it cannot
        bind, or, with retry_seconds, a `metrics` status for an address that may be free later."""
        if self._server is not None or self._retrying is not None:
            raise RuntimeError("MetricsSink.start: already started")
        try:
            server = bind_server(self.config.host, self.config.port)
        except AddressUnavailable as err:
            if self.retry_seconds is None:
                raise
            message = f"{err}; the service runs without them and tries again every {self.retry_seconds:g} s"
            log.warning("%s", message)
            self.report("warning", message, "metrics")
            self._retrying = threading.Thread(target=self._retry, args=(err,), name="metrics-retry", daemon=True)
            self._retrying.start()
            return
        self._serve(server)

    def _serve(self, server: _Server) -> None:
        server.sink = self
        self._server, self._started_at = server, time.monotonic()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="metrics-http", daemon=True
        )
        self._thread.start()
        log.info("metrics: /metrics, /healthz and /stream on %s", self.url)

    def _retry(self, first: AddressUnavailable) -> None:
        """Bind every retry_seconds until it works or close(); the news waits for the next window."""
        assert self.retry_seconds is not None
        began = time.monotonic()
        while not self._closing.wait(self.retry_seconds):
            try:
                server = bind_server(self.config.host, self.config.port)
            except AddressUnavailable as err:
                log.debug("metrics: still cannot listen: %s", err)
                continue
            self._serve(server)
            self._restored = (
                f"metrics: listening on {self.url} now, {time.monotonic() - began:.0f} s after it could not "
                f"({first.reason})"
            )
            log.info("%s", self._restored)
            return

    def close(self) -> None:
        """Stop the server and end every /stream (readers get what is queued, for up to a second)."""
        self._closing.set()
        if self._retrying is not None:  # first: it may be starting the server
            self._retrying.join()
        readers = self._readers
        for reader in readers:
            reader.ready.set()
        deadline = time.monotonic() + CLOSE_GRACE_SECONDS
        for reader in readers:
            if not reader.done.wait(max(0.0, deadline - time.monotonic())):
                _shut(reader.connection)  # a stuck reader: its blocked write fails now
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def _attach(self, connection: socket.socket) -> _Reader | None:
        """A new /stream reader, or None when MAX_STREAM_READERS are reading already."""
        reader = _Reader(connection)
        with self._readers_lock:
            if len(self._readers) >= MAX_STREAM_READERS:
                return None
            self._readers = (*self._readers, reader)
            self.m_readers.set(len(self._readers))
        return reader

    def _detach(self, reader: _Reader) -> None:
        with self._readers_lock:
            self._readers = tuple(r for r in self._readers if r is not reader)
            self.m_readers.set(len(self._readers))
        reader.done.set()

    def _hello(self) -> bytes:
        """A new reader's first lines: what it needs to draw, then the state it joins in."""
        hello = {
            "type": "hello",
            "schema": SCHEMA,
            "origin": self.origin.isoformat(timespec="milliseconds"),
            "labels": self.labels,
            "thresholds": self.thresholds,
            "build": self.build_info,
        }
        lines = [(json.dumps(hello) + "\n").encode()]
        lines += [self._line(start) for start in self._active.values()]
        last = self._last_window
        if last is not None:
            lines.append(self._line(last))
        return b"".join(lines)


def _shut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:  # already gone
        pass


def bind_server(host: str, port: int) -> _Server:
    """The metrics HTTP server bound to host:port (not yet serving); ConfigError naming the key and the
    fix when it cannot bind (a reload's check binds one and closes it: another program's port),
    AddressUnavailable where that may pass (a port taken, an address or name not there yet)."""
    server_class = _Server6 if ":" in host else _Server
    try:
        return server_class((host, port), _Handler)
    except socket.gaierror as err:
        raise AddressUnavailable(
            f"metrics.host {host!r} is not an address of this machine ({err.strerror}): "
            'use an IP address such as "127.0.0.1", or a name that resolves',
            key="metrics.host",
            reason=f"{host!r} did not resolve",
        ) from None
    except OSError as err:
        if err.errno == errno.EADDRNOTAVAIL:  # the host, not the port
            raise AddressUnavailable(
                f"metrics.host {host!r} is not an address of this machine ({err.strerror}): use one of its own "
                '(`ip -brief address`), "127.0.0.1" for this machine only, or "0.0.0.0" for every interface',
                key="metrics.host",
                reason=f"{host} was not an address of this machine",
            ) from None
        message = f"metrics.port {port}: cannot listen on {host}:{port} ({err.strerror or err}): "
        if err.errno == errno.EACCES and port < 1024:
            raise ConfigError(message + PRIVILEGED_PORT_FIX, key="metrics.port") from None
        raise AddressUnavailable(
            message + "another program (a second service?) may use it; choose a free port in metrics.port, "
            "or set metrics.enabled: false",
            key="metrics.port",
            reason=f"port {port} was taken" if err.errno == errno.EADDRINUSE else str(err.strerror or err),
        ) from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler thread never keeps the process alive
    request_queue_size = BACKLOG
    sink: MetricsSink

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._served = 0  # connections with a thread of their own now
        self._count = threading.Lock()
        self._refused = 0
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        with self._count:
            full = self._served >= MAX_CONNECTIONS
            self._served += 0 if full else 1
            self._refused += 1 if full else 0
            refused = self._refused
        if full:  # closed at once: a thread and a descriptor each would run out
            self.shutdown_request(request)
            if refused in (1, 10, 100) or refused % 1000 == 0:
                log.warning(
                    "metrics: %d connections are open already (each waits %g s at most for its request): refused "
                    "one from %s (%d so far)",
                    MAX_CONNECTIONS,
                    REQUEST_TIMEOUT,
                    client_address[0],
                    refused,
                )
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: its place is free again
            with self._count:
                self._served -= 1
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._count:
                self._served -= 1

    def server_bind(self) -> None:
        # HTTPServer's would look the host's name up (socket.getfqdn): a DNS wait on a device offline
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request, client_address) -> None:
        # socketserver prints a traceback to stderr; a client that went away mid-answer is no news
        log.debug("metrics: a request from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "semanticac-edge"
    timeout = REQUEST_TIMEOUT  # the socket's: a connection that sends nothing is closed (/stream sets its own)

    def setup(self) -> None:
        super().setup()
        self._parsed = False
        self._late = threading.Timer(self.timeout, self._cut_short)  # the whole request's time, not a read's
        self._late.daemon = True
        self._late.start()

    def _cut_short(self) -> None:
        if not self._parsed:
            _shut(self.connection)

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self._parsed = True
        self._late.cancel()
        return parsed

    def finish(self) -> None:
        self._late.cancel()
        super().finish()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.sink.registry))
        elif path == "/healthz":
            healthy, body = self.server.sink.health()
            self._send(200 if healthy else 503, "application/json", (json.dumps(body) + "\n").encode())
        elif path == "/stream":
            self._stream()
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: the paths are /metrics, /healthz and /stream\n")

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        """JSON lines until the sink closes or the client goes; HTTP/1.0: the body ends with the connection."""
        sink = self.server.sink
        self.connection.settimeout(STREAM_WRITE_TIMEOUT)
        reader = sink._attach(self.connection)
        if reader is None:
            body = f"/stream has {MAX_STREAM_READERS} readers already: close one (e.g. another tail) and retry\n"
            self._send(503, "text/plain; charset=utf-8", body.encode())
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(sink._hello())
            reported, last_t = 0, 0.0
            while not (sink._closing.is_set() and not reader.lines):
                reader.ready.wait(KEEPALIVE_SECONDS)
                reader.ready.clear()
                lines = reader.drain()
                if reader.dropped > reported:
                    t = lines[0][0] if lines else last_t
                    missed, reported = reader.dropped - reported, reader.dropped
                    note = Status(t, "warning", f"this reader fell behind: {missed} record(s) it did not get")
                    self.wfile.write(sink._line(note))
                if lines:
                    last_t = lines[-1][0]
                self.wfile.write(b"".join(line for _, line in lines) or b"\n")
        except OSError:  # the client went away, or close() shut a stuck one
            pass
        finally:
            sink._detach(reader)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)
