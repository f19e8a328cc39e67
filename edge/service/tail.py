"""`semanticac-edge tail`: what a running service hears, from its `/stream` (no second model).

The service's MetricsSink (edge.outputs.metrics) serves JSON lines at `/stream`: a `hello`
line (origin, labels, thresholds), then the records of the JSON-lines schema
(edge.outputs.sinks.record_dict). `tail` turns each line back into the record it describes
and hands it to the same sink `listen` draws with: the live view on a terminal (top-k with
bars, level, active events, events and statuses scrolling), plain lines otherwise. The
thresholds are shown once, as the first line.

The service sends an empty line after each second without a record, so `stop` is seen
promptly; READ_TIMEOUT seconds without even that means the service hangs.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import math
import sys
import threading
from datetime import datetime
from typing import TextIO
from urllib.parse import urlsplit

from edge.errors import SemanticACError
from edge.events import Event
from edge.outputs.sinks import SCHEMA, LiveView, PlainLines, Sink, Status, WindowResult

DEFAULT_URL = "http://127.0.0.1:9464"
READ_TIMEOUT = 10.0  # seconds without a line (the service sends a keepalive each second)
NOT_SERVING = (
    "is `semanticac-edge serve` running with metrics enabled? it serves /stream on metrics.host:metrics.port "
    "of its config (default 127.0.0.1:9464); pass that address with --url"
)


class StreamError(SemanticACError):
    """The service's /stream cannot be read: nothing listens, another program answers, it ended or hangs."""


def tail(
    url: str = DEFAULT_URL,
    out: TextIO | None = None,
    *,
    top_k: int | None = None,
    stop: threading.Event | None = None,
    once: bool = False,
) -> int:
    """Draw the service's records on `out` (default stdout) until `stop` is set; returns 0.

    `top_k`: show at most this many labels per window (at most what the service sends: its
    listen.top_k). `once`: return after the first window (the service sends its latest one at
    once). Raises StreamError when nothing listens at `url`, it is not a semanticac-edge
    service, the stream ends (the service stopped) or goes silent for READ_TIMEOUT seconds.
    """
    if top_k is not None and top_k < 1:
        raise ValueError(f"tail: top_k {top_k!r} must be at least 1")
    stop = stop or threading.Event()
    base = normalize_url(url)
    response = _open(base)
    sink: Sink | None = None
    try:
        while not stop.is_set():
            line = _readline(response, base)
            if not line.strip():
                continue  # keepalive
            record = _parse(line, base)
            if record.get("type") == "hello":
                try:
                    sink = _hello(record, out, top_k, base)
                except (KeyError, TypeError, ValueError, AttributeError) as err:
                    raise StreamError(
                        f"{base}/stream began with a hello this tail cannot read ({err!r}): {NOT_SERVING}"
                    ) from None
                continue
            if sink is None:
                raise StreamError(f"{base}/stream did not begin with its hello line: {NOT_SERVING}")
            try:
                parsed = from_record(record)
            except (KeyError, TypeError, ValueError) as err:
                raise StreamError(
                    f"{base}/stream sent a record this tail cannot read ({err!r}): {line.strip()}"
                ) from None
            if parsed is None:  # a type this version does not know: newer service
                continue
            if isinstance(parsed, WindowResult) and top_k is not None:
                parsed = dataclasses.replace(parsed, top=parsed.top[:top_k])
            sink.emit(parsed)
            if once and isinstance(parsed, WindowResult):
                break
        return 0
    finally:
        response.close()
        if sink is not None:
            sink.close()


def normalize_url(url: str) -> str:
    """`host:port`, `http://host:port[/]` or a bare `port` (127.0.0.1) -> `http://host:port` (no
    path: /stream is added)."""
    text = url.strip().rstrip("/")
    text = f"127.0.0.1:{text}" if text.isdigit() else text  # a bare port: this machine's service
    text = text if "://" in text else "http://" + text
    parts = urlsplit(text)
    try:
        ok = parts.scheme == "http" and bool(parts.hostname) and not parts.path and not parts.query
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number or out of range)
    except ValueError:
        ok = False
    if not ok:
        raise StreamError(
            f"--url {url!r} is not the address of a service: use http://HOST:PORT, e.g. {DEFAULT_URL} "
            "(metrics.host and metrics.port of its config)"
        )
    return text


def _open(base: str) -> http.client.HTTPResponse:
    parts = urlsplit(base)
    assert parts.hostname is not None  # normalize_url checked it
    # http.client, not urllib: a proxy from the environment must not stand between tail and 127.0.0.1
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=READ_TIMEOUT)
    try:
        connection.request("GET", "/stream", headers={"Accept": "application/x-ndjson"})
        response = connection.getresponse()
    except ConnectionRefusedError:
        connection.close()
        raise StreamError(f"nothing listens at {base}: {NOT_SERVING}") from None
    except TimeoutError:
        connection.close()
        raise StreamError(f"{base} did not answer in {READ_TIMEOUT:g} s: {NOT_SERVING}") from None
    except (OSError, http.client.HTTPException) as err:
        connection.close()
        raise StreamError(f"cannot read {base}/stream ({err}): {NOT_SERVING}") from None
    if response.status != 200:
        connection.close()
        raise StreamError(f"{base}/stream answered HTTP {response.status} {response.reason}: {NOT_SERVING}")
    return response


def _readline(response: http.client.HTTPResponse, base: str) -> str:
    try:
        raw = response.readline()
    except TimeoutError:
        raise StreamError(
            f"{base}/stream sent nothing for {READ_TIMEOUT:g} s: the service hangs; see its logs "
            "(journalctl -u semanticac-edge) and its /healthz"
        ) from None
    except (OSError, http.client.HTTPException) as err:
        raise StreamError(f"the stream from {base} broke ({err}): the service stopped or restarted") from None
    if not raw:
        raise StreamError(f"the stream from {base} ended: the service stopped or restarted; run tail again")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StreamError(f"{base}/stream sent bytes that are not UTF-8 text: {NOT_SERVING}") from None


def _parse(line: str, base: str) -> dict:
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise StreamError(f"{base}/stream sent {line.strip()[:80]!r}, not a JSON object: {NOT_SERVING}")
    return record


def _hello(hello: dict, out: TextIO | None, top_k: int | None, base: str) -> Sink:
    """The sink that draws: LiveView on a terminal (each label's threshold beside its score),
    PlainLines otherwise (the thresholds in a first line)."""
    if hello.get("schema") != SCHEMA:
        raise StreamError(
            f"{base}/stream speaks schema {hello.get('schema')!r}, this tail reads schema {SCHEMA}: "
            "use the tail of the service's version"
        )
    origin = datetime.fromisoformat(hello["origin"])
    stream = out if out is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    live = isatty is not None and isatty()
    thresholds = hello.get("thresholds") or {}
    if live:
        return LiveView(stream, origin, max_rows=top_k or 10, thresholds=thresholds)
    sink = PlainLines(stream, origin)
    shown = ", ".join(f"{label} {thresholds[label]:.3f}" for label in hello.get("labels", []) if label in thresholds)
    sink.status(Status(0.0, "info", f"tail {base}: thresholds {shown or '(none given)'}"))
    return sink


def from_record(record: dict) -> WindowResult | Event | Status | None:
    """A JSON-lines record back into what the service's sinks were given (None: an unknown type)."""
    kind, t = record.get("type"), float(record["t"])
    if kind == "window":
        level = record.get("level_dbfs")
        return WindowResult(
            t=t,
            top=tuple((item["label"], _number(item["score"])) for item in record["top"]),
            latency_ms=_number(record["latency_ms"]),
            dropped=int(record["dropped"]),
            level_dbfs=-math.inf if level is None else float(level),  # null: digital silence
            gated=bool(record["gated"]),
            gain_db=None if record.get("gain_db") is None else float(record["gain_db"]),  # older logs: none
            heard=tuple((item["name"], _number(item["score"])) for item in record.get("heard", ())),
            held=tuple(record.get("held", ())),
            holding=tuple(
                (int(item["event_id"]), item["label"], _number(item["since"])) for item in record.get("holding", ())
            ),
        )
    if kind == "start":
        return Event("start", t, int(record["event_id"]), record["label"], score=_number(record["score"]))
    if kind == "end":
        return Event(
            "end",
            t,
            int(record["event_id"]),
            record["label"],
            duration=_number(record["duration"]),
            peak=_number(record["peak"]),
        )
    if kind == "status":
        return Status(t, record["level"], record["message"], code=record.get("code"))
    return None


def _number(value: float | None) -> float:
    """JSON null (a non-finite number in the service) -> NaN."""
    return math.nan if value is None else float(value)
