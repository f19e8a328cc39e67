"""MQTT: events, per-label states and the sound level to a broker, and Home Assistant discovery.

Topics under `base_topic` (default `semanticac/<node_id>`):

    availability      online / offline, retained; `offline` is also the last will (kill -9, power loss)
    events            one message per start / end: the JSON-lines record (record_dict) + `event_type`
                      (the label) + `clip` (when a clip is recorded); QoS `qos`, not retained. One
                      that waited for the broker longer than `late_after` seconds also carries
                      `delayed_s`, and Home Assistant's event entity does not fire for it (an
                      automation would act on a sound long gone as if it were heard now); so does
                      one paho sends again, late, after its connection turned out dead
    state/<label>     ON while an event of the label lasts, else OFF; retained
    microphone        ON while audio arrives, OFF before the first window, after `audio_lost` (until
                      `audio_restored`) and at a stop (a crash leaves it as it was); retained
    (every retained state a connection knows is sent before its `online`: Home Assistant shows an
    entity's last payload the moment it is available, and a crash leaves a label's ON behind)
    problem           what needs a person, retained: `{"state": "ON" | "OFF", "problems": [{code,
                      message, utc}, ...]}`: a lost microphone (until it is back), input clipping
                      or dropped windows, another client taking over this one's client id (each
                      until PROBLEM_HOLD_SECONDS pass without another), an
                      event log or clips that cannot be written (until they can), a failure that stops the
                      service (sent as it stops), a config a start refuses (`config_error`, exit 78; from a
                      connection of its own: publish_problem); OFF once a start hears its first window (a
                      service that fails again at each restart keeps saying why). Its sensor has
                      its own availability: it stays readable while the service is offline
    level             the window's level in dBFS (one decimal; `None`: digital silence), at most
                      every `level_interval` seconds; QoS 0, not retained
    heard             with the service's `listen.heard` N > 0: what the bundle's vocabulary hears
                      best in the window, `{"name", "score", "top": [{name, score}, ...]}` (its N
                      best AudioSet classes), sent with the level; QoS 0, not retained
    status            the status records (record_dict): device lost, windows dropped, failures;
                      QoS `qos`, not retained
    labels            the labels announced last (JSON list), retained: what the next start compares

Home Assistant (device-based discovery): one retained config at
`<discovery_prefix>/device/<node_id>/config` with one `event` entity whose event types are the
labels (it fires on starts), a `binary_sensor` per label, the level sensor, the microphone's
connectivity, a "Problem" sensor (on while `problem` holds one; the list as its attributes)
and, with `heard`, a "Sound heard" sensor (the best AudioSet class, the N best as its
attributes: words for a new label; without it the sensor is removed).
It is published once on every connection, once the previous run's `labels` are known (the
list this connection publishes has come back, after any retained one; ANNOUNCE_WAIT_SECONDS at
most), and again when Home Assistant announces itself (`<discovery_prefix>/status` = online).
Labels that were announced before and are gone now lose their entity (a component sent with
only its platform, in every config this run publishes: Home Assistant drops the components of a
config that comes while it still handles the one before, so a removal sent on its own was lost)
and their retained state.

The audio path never waits on the network: the sink methods only append to a bounded queue
(events, status) or replace a latest value (states, level), and a publisher thread hands
them to paho while connected. paho connects in its own thread (connect_async, loop_start) and
reconnects with backoff. While the broker is away, events and status messages wait in the
queue up to `queue_size`; beyond it the oldest go and `dropped` counts them. States are
latest values, never dropped: every connection republishes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge.clock import clock_synchronised, since_boot
from edge.errors import ConfigError
from edge.events import Event
from edge.outputs.sinks import ENDS, Sink, Status, WindowResult, record_dict, utc_text
from edge.service.sections import invalid

log = logging.getLogger(__name__)
paho_log = logging.getLogger(f"{__name__}.paho")

ON, OFF = "ON", "OFF"
ONLINE, OFFLINE = "online", "offline"
# status codes that need a person: held until they end (sinks.ENDS: audio_restored, overload_ended, ...; a
# failure ends the run) or, for the HELD ones, PROBLEM_HOLD_SECONDS after the last (clipping and overload
# repeat every 10 minutes at most while they last)
PROBLEMS = (
    "audio_lost",
    "source_error",
    "backend_error",
    "clipping",
    "channels_cancel",
    "overload",
    "event_log",
    "clips",
    "metrics",
    "failure",
)
HELD = ("clipping", "channels_cancel", "overload")
PROBLEM_HOLD_SECONDS = 900.0
TAKEN_OVER_SECONDS = 5.0  # connections ended sooner, twice in a row: likely one client id used twice
ANNOUNCE_WAIT_SECONDS = 5.0  # the discovery config waits this long at most for the labels list to come back
CLOSE_SECONDS = 2.0  # close() waits this long at most for the queue and the broker's acknowledgements
BATCH = 64  # queued messages handed to paho per turn of the publisher thread
# the last run's labels (a retained message anyone allowed on the topic may publish) are read up to this many:
# more than any label set a device runs (AudioSet names 527 classes)
FORGET_MAX = 1000
SHOWN_GONE = 20  # labels gone since the last run named in the log line (the rest counted)
# Home Assistant fires its event entity on starts only, and not for one sent late (`delayed_s`): an
# empty render is ignored.
START_ONLY = "{% if value_json.type == 'start' and value_json.delayed_s is not defined %}{{ value }}{% endif %}"
NODE_ID = re.compile(r"[A-Za-z0-9_-]+")  # what Home Assistant allows in a discovery topic


def slug(text: str) -> str:
    """`text` as a topic level and an object id: lower case, runs of other characters -> `_`."""
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")


def _sentence(text: str) -> str:
    """An entity name as Home Assistant writes its own: the first letter up (`dog bark` -> `Dog bark`)."""
    return text[:1].upper() + text[1:]


def label_slug(label: str) -> str:
    """A label's topic level (`state/<it>`) and entity key: its slug (`Türklingel` -> `t_rklingel`,
    kept as it was: it is in Home Assistant's unique_ids), or for a label with no ASCII letter or
    digit (`犬の鳴き声`, an emoji), which the service used to refuse, `u` and 8 hex digits of its
    SHA-1, stable across runs (Home Assistant still shows the label itself as the entity's name)."""
    return slug(label) or "u" + hashlib.sha1(label.encode("utf-8")).hexdigest()[:8]


def label_slugs(labels: Sequence[str]) -> dict[str, str]:
    """label -> its slug; ConfigError (labels.set) when two labels share one. check-config and
    the sink both call it, so a set the service would refuse fails the check too."""
    slugs: dict[str, str] = {}
    for label in labels:
        s = label_slug(label)
        other = next((k for k, v in slugs.items() if v == s), None)
        if other is not None:
            raise ConfigError(
                f"labels {other!r} and {label!r} cannot be told apart in MQTT topics (both become state/{s}): "
                "rename one of them in the label set",
                key="labels.set",
            )
        slugs[label] = s
    return slugs


def default_node_id() -> str:
    """This machine's host name as a node id ([a-z0-9_]); `edge` when nothing is left of it."""
    return slug(socket.gethostname()) or "edge"


def _topic_problem(topic: str) -> str | None:
    if not topic:
        return "it is empty"
    if set(topic) & {"+", "#", "\0"}:
        return "it holds a wildcard (+ or #)"
    if topic.startswith("$"):  # the server's (MQTT 3.1.1, 4.7.2); mosquitto drops a client's publish to $SYS/
        return "it begins with $, which brokers keep for their own topics ($SYS/...)"
    if topic.startswith("/") or topic.endswith("/") or "//" in topic:
        return "it has an empty level (a leading, trailing or doubled /)"
    return None


@dataclass(frozen=True)
class MqttTls:
    """TLS to the broker (`mqtt.tls`); the files are PEM and are read by start()."""

    ca_certs: str | None = None  # the CA that signed the broker's certificate; None: the system's CAs
    certfile: str | None = None  # a client certificate, for a broker that asks for one
    keyfile: str | None = None  # its private key; None: inside certfile
    insecure: bool = False  # do not check that the broker's certificate names `host` (test setups only)

    def __post_init__(self):
        for name in ("ca_certs", "certfile", "keyfile"):  # ~ as in the config's other paths
            if getattr(self, name) is not None:
                object.__setattr__(self, name, os.path.expanduser(getattr(self, name)))
        if self.keyfile is not None and self.certfile is None:
            raise invalid("keyfile", self.keyfile, "it together with certfile (the certificate the key belongs to)")


@dataclass(frozen=True)
class MqttConfig:
    """The `mqtt` section of the service config. None for node_id, client_id and base_topic:
    derived (from the host name); construction fills them in."""

    enabled: bool = False
    host: str = "localhost"
    port: int = 1883
    client_id: str | None = None  # None: semanticac-<node_id>
    base_topic: str | None = None  # None: semanticac/<node_id>
    discovery: bool = True  # Home Assistant MQTT discovery
    discovery_prefix: str = "homeassistant"
    node_id: str | None = None  # None: the host name, lower case, other characters as _
    qos: int = 1  # of events and status messages (states and availability: 1; the level: 0)
    keepalive: int = 60  # seconds; a silent broker is declared lost after 1.5 x this
    level_interval: float = 10.0  # seconds between level messages at most (0: every window)
    queue_size: int = 1000  # events and status messages kept while the broker is away
    late_after: float | None = 60.0  # an event that waited longer is sent with delayed_s (None: never)
    reconnect_min_delay: int = 1  # seconds before the first reconnection attempt; doubles up to max
    reconnect_max_delay: int = 60
    tls: MqttTls | None = None  # None: plain TCP
    username: str | None = None
    password_file: str | None = None  # a file holding the password (one line); never the password here
    password_env: str | None = None  # or the name of an environment variable holding it

    def __post_init__(self):
        if self.password_file is not None:  # ~ as in the config's other paths
            object.__setattr__(self, "password_file", os.path.expanduser(self.password_file))
        port_given = ":" in self.host and self.host.count(":") == 1  # host:port, tcp:host (IPv6 has 2 or more)
        if not self.host or self.host != self.host.strip() or " " in self.host or "/" in self.host or port_given:
            raise invalid(
                "host",
                self.host,
                "the broker's host name or IP address, not a URL (e.g. 192.168.1.10; the port goes in mqtt.port)",
            )
        if not 0 < self.port < 65536:
            raise invalid("port", self.port, "a TCP port from 1 to 65535 (1883; 8883 with TLS)")
        if self.node_id is None:
            object.__setattr__(self, "node_id", default_node_id())
        elif not NODE_ID.fullmatch(self.node_id):
            raise invalid("node_id", self.node_id, "letters, digits, _ and - only (Home Assistant's rule)")
        if self.client_id is None:
            object.__setattr__(self, "client_id", f"semanticac-{self.node_id}")
        elif not self.client_id or len(self.client_id.encode()) > 65535:
            raise invalid("client_id", self.client_id, "a non-empty name unique on the broker")
        if self.base_topic is None:
            object.__setattr__(self, "base_topic", f"semanticac/{self.node_id}")
        for key in ("base_topic", "discovery_prefix"):
            problem = _topic_problem(getattr(self, key))
            if problem:
                raise invalid(
                    key, getattr(self, key), f"a topic without wildcards, empty levels or a leading $ ({problem})"
                )
        if self.qos not in (0, 1, 2):
            raise invalid("qos", self.qos, "0, 1 or 2")
        if not 5 <= self.keepalive <= 65535:
            raise invalid("keepalive", self.keepalive, "a whole number of seconds from 5 to 65535")
        if not self.level_interval >= 0:
            raise invalid("level_interval", self.level_interval, "a number of seconds >= 0 (0: every window)")
        if self.queue_size < 1:
            raise invalid("queue_size", self.queue_size, "a whole number >= 1")
        if self.late_after is not None and not self.late_after > 0:
            raise invalid("late_after", self.late_after, "a number of seconds > 0, or null (never marked late)")
        if self.reconnect_min_delay < 1:
            raise invalid("reconnect_min_delay", self.reconnect_min_delay, "a whole number of seconds >= 1")
        if self.reconnect_max_delay < self.reconnect_min_delay:
            raise invalid(
                "reconnect_max_delay",
                self.reconnect_max_delay,
                f"at least reconnect_min_delay ({self.reconnect_min_delay})",
            )
        if self.password_file is not None and self.password_env is not None:
            raise invalid(
                "password_env",
                self.password_env,
                "either password_file or password_env, not both",
                shown=password_source("password_env", self.password_env),
            )
        has_password = self.password_file is not None or self.password_env is not None
        if has_password and not self.username:
            key = "password_file" if self.password_file is not None else "password_env"
            value = getattr(self, key)
            raise invalid(
                key,
                value,
                "it together with username (MQTT sends no password alone)",
                shown=password_source(key, value),
            )

    def password(self) -> str | None:
        """The password from password_file or password_env; ConfigError when it cannot be read."""
        if self.password_file is not None:
            try:
                text = Path(self.password_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
                raise ConfigError(
                    f"mqtt.password_file {password_source('password_file', self.password_file)} cannot be read "
                    f"({reason}): "
                    "give a readable file holding the password on one line",
                    key="mqtt.password_file",
                ) from None
            password = text.rstrip("\r\n")
            if not password:
                raise ConfigError(
                    f"mqtt.password_file {password_source('password_file', self.password_file)} is empty: write the "
                    "password into it",
                    key="mqtt.password_file",
                )
            return password
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if not value:
                raise ConfigError(
                    f"mqtt.password_env {password_source('password_env', self.password_env)}: that environment "
                    "variable is unset or empty: "
                    "set it for the service (systemd: EnvironmentFile=) or use password_file",
                    key="mqtt.password_env",
                )
            return value
        return None


ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")  # what an environment variable's name looks like (by custom)


def password_source(key: str, value: str) -> str:
    """password_file's or password_env's value as an error shows it: quoted where it looks like what it
    names (a path with a folder, an environment variable's name in capitals), else its length only: a
    password typed there by mistake went to the journal and to MQTT's retained problem."""
    if key == "password_file":
        looks, like = "/" in value or value.startswith("~"), "a path to a file"
    else:
        looks, like = ENV_NAME.fullmatch(value) is not None, "an environment variable's name (A-Z, 0-9 and _)"
    if looks:
        return repr(value)
    return f"(its {len(value)} characters not shown: not {like}; it names where the password is, never the password)"


def credentials(config: MqttConfig) -> tuple[str | None, ssl.SSLContext | None]:
    """The password and the TLS context of `config` (its files read now, as the user running
    this); ConfigError naming the key whose file cannot be used."""
    return config.password(), tls_context(config.tls) if config.tls is not None else None


def new_client(config: MqttConfig) -> tuple[mqtt.Client, ssl.SSLContext | None]:
    """A paho client for `config` (its client id, user and password, TLS) and its TLS context;
    ConfigError naming the key whose file cannot be used."""
    password, context = credentials(config)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=config.client_id or "", clean_session=True, protocol=mqtt.MQTTv311
    )
    if config.username:
        client.username_pw_set(config.username, password)
    if context is not None:
        client.tls_set_context(context)
        client.tls_insecure_set(bool(config.tls and config.tls.insecure))
    return client, context


def _moved_text(utc: str, by: timedelta) -> str:
    return utc_text(datetime.fromisoformat(utc) + by)


def _moved(payload: str, by: timedelta) -> str:
    """A queued JSON record (event or status) with its `utc` moved `by`."""
    record = json.loads(payload)
    if isinstance(record, dict) and isinstance(record.get("utc"), str):
        record["utc"] = _moved_text(record["utc"], by)
        return json.dumps(record, allow_nan=False)
    return payload


def problem_payload(problems: Sequence[dict[str, str]]) -> str:
    """The retained `problem` message: ON while it lists one, each {code, message, utc}."""
    return json.dumps({"state": ON if problems else OFF, "problems": list(problems)}, allow_nan=False)


PROBE_SECONDS = 3.0  # a connection tried to say why the broker cannot be reached


def publish_problem(config: MqttConfig, problem: dict[str, str], seconds: float = PROBE_SECONDS) -> bool:
    """Put `problem` ({code, message, utc}) on the retained `problem` topic from a connection of its own:
    a start that fails before the service's MQTT output runs (a config error: exit 78, which systemd does
    not restart) still tells Home Assistant's Problem sensor why, readable while the device is offline.
    False, said in the log, when the broker cannot be reached or does not take it within `seconds`."""
    where = f"{config.host}:{config.port}"
    try:  # a client id of its own: the broker would end a session of the service's (one that runs)
        client, context = new_client(replace(config, client_id=f"{config.client_id}-problem"))
        client.connect_timeout = seconds
        client.connect(config.host, config.port, keepalive=config.keepalive)
    except (ConfigError, OSError, ValueError) as err:
        reason = "" if isinstance(err, ConfigError) else unreachable_reason(config.host, config.port, context, seconds)
        log.warning("mqtt: cannot tell the broker at %s of the problem: %s", where, reason or err)
        return False
    client.loop_start()
    try:
        sent = client.publish(f"{config.base_topic}/problem", problem_payload([problem]), qos=1, retain=True)
        deadline = time.monotonic() + seconds
        while not sent.is_published() and time.monotonic() < deadline:
            time.sleep(0.01)
        connected = client.is_connected()
    finally:
        client.disconnect()
        client.loop_stop()
    if not sent.is_published():
        reason = "" if connected else unreachable_reason(config.host, config.port, context, seconds)
        log.warning(
            "mqtt: the broker at %s did not take the problem within %g s: %s",
            where,
            seconds,
            reason or "it refused this client (mqtt.username, its password) or did not answer",
        )
        return False
    log.info("mqtt: the problem is on %s/problem (Home Assistant's Problem sensor)", config.base_topic)
    return True


# OpenSSL's verify codes for a certificate's dates, in words
CERT_DATES = {9: "is not valid yet", 10: "has expired"}


def dates_advice() -> str:
    """What to do of a certificate this machine's clock reads as not yet valid or expired."""
    now = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    if clock_synchronised() is False:
        return (
            f"this machine's clock reads {now} and the kernel says it is not synchronised (a box without a "
            "real-time clock, at a boot): the dates are checked again as the connection is tried again, once NTP "
            "has set the clock (`timedatectl` says when)"
        )
    return (
        f"this machine's clock reads {now}: if that is right, the broker needs a certificate valid now "
        "(`openssl x509 -noout -dates -in CERT` shows its dates); else set the clock (`timedatectl`)"
    )


def unreachable_reason(host: str, port: int, context: ssl.SSLContext | None, seconds: float = PROBE_SECONDS) -> str:
    """Why a connection to the broker fails, found by trying one as paho does (the name, then TCP,
    then the TLS handshake with the same context): paho's connect-fail callback gets no reason, and
    "cannot reach the broker" alone sends a person to the network when the CA file is wrong. "" when
    the probe connects (the failure passed, or lies beyond the handshake)."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        return f"the name {host!r} does not resolve ({getattr(err, 'strerror', None) or err}): check mqtt.host"
    try:
        sock = socket.create_connection((host, port), timeout=seconds)
    except ConnectionRefusedError:
        return f"nothing accepts connections on port {port} there: check mqtt.port and that the broker runs"
    except TimeoutError:
        return f"no answer within {seconds:g} s: the host is down, or a firewall drops port {port}"
    except OSError as err:
        return err.strerror or str(err)
    with sock:
        if context is None:
            return ""
        try:
            with context.wrap_socket(sock, server_hostname=host):
                return ""
        except ssl.SSLCertVerificationError as err:
            if err.verify_code in CERT_DATES:  # the clock's fault as likely as the certificate's: not the CA file
                return f"TLS: the broker's certificate {CERT_DATES[err.verify_code]}: {dates_advice()}"
            return (
                f"TLS: the broker's certificate is not trusted ({err.verify_message}): mqtt.tls.ca_certs must be the "
                f"CA that signed it, and the certificate must name {host} (mqtt.tls.insecure skips that check)"
            )
        except (ssl.SSLError, OSError) as err:
            return f"TLS failed ({getattr(err, 'reason', None) or err}): is port {port} the broker's TLS port?"


def tls_context(tls: MqttTls) -> ssl.SSLContext:
    """An SSL context that checks the broker's certificate; ConfigError naming the file that fails."""
    for key in ("ca_certs", "certfile", "keyfile"):
        path = getattr(tls, key)
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(
                f"mqtt.tls.{key} {path!r} cannot be read: give the path of a readable PEM file", key=f"mqtt.tls.{key}"
            )
    try:
        context = ssl.create_default_context(cafile=tls.ca_certs)
    except (ssl.SSLError, OSError) as err:
        raise ConfigError(
            f"mqtt.tls.ca_certs {tls.ca_certs!r} holds no usable CA certificate ({err}): give the PEM of the "
            "CA that signed the broker's certificate",
            key="mqtt.tls.ca_certs",
        ) from None
    if tls.certfile is not None:
        try:
            context.load_cert_chain(tls.certfile, tls.keyfile)
        except (ssl.SSLError, OSError) as err:
            raise ConfigError(
                f"mqtt.tls.certfile {tls.certfile!r} (keyfile {tls.keyfile!r}) is not a usable certificate and "
                f"key ({err}): give the client certificate and its private key as PEM",
                key="mqtt.tls.certfile",
            ) from None
    return context


@dataclass(frozen=True)
class _Message:
    topic: str
    payload: str
    qos: int
    retain: bool = False
    made: float = 0.0  # time.monotonic() when it was queued


class MqttSink(Sink):
    """A Sink that publishes to MQTT. `start()` connects in the background; `close()` says offline.

    `labels`: the label set's names; `node_name`, `model`, `sw_version`: Home Assistant's device
    (its name, model and software); `clip_for(event)`: the clip file name recorded for an event,
    or None (added to the event message as `clip`); `heard`: windows carry what the vocabulary
    hears (listen's `heard`), published on `heard` with a sensor for it.
    """

    def __init__(
        self,
        config: MqttConfig,
        labels: Sequence[str],
        *,
        node_name: str,
        model: str,
        sw_version: str,
        clip_for: Callable[[Event], str | None] | None = None,
        origin: datetime | None = None,
        heard: bool = False,
        run_id: str | None = None,
    ):
        super().__init__(stream=sys.stderr, origin=origin)
        assert config.node_id and config.client_id and config.base_topic, "MqttConfig fills them in"
        self.run_id = run_id  # in every event message: event ids start at 1 again in each run
        self.config = config
        self.node_id: str = config.node_id
        self.base_topic: str = config.base_topic
        self.labels = tuple(labels)
        self.node_name, self.model, self.sw_version = node_name, model, sw_version
        self.clip_for = clip_for
        self.heard = heard
        self._slugs = label_slugs(self.labels)
        self.discovery_topic = f"{config.discovery_prefix}/device/{self.node_id}/config"

        self._cond = threading.Condition()  # guards everything below; held for microseconds only
        self._queue: deque[_Message] = deque()  # events and status, oldest first
        self._retained = {self.state_topic(label): OFF for label in self.labels}  # topic -> latest payload
        # no audio before the first window: the last run's ON (retained) showed a microphone while the model
        # loaded or a new set was embedded, and for good in a start that failed there
        self._retained[self.topic("microphone")] = OFF
        self._dirty: dict[str, None] = dict.fromkeys(self._retained)  # retained topics not yet sent
        self._level: str | None = None  # the latest level not yet sent
        self._heard: str | None = None  # the latest `heard` message not yet sent
        self._active = dict.fromkeys(self.labels, 0)  # label -> events going on
        self._audio_lost = False  # after audio_lost, until audio_restored: the microphone is OFF
        self._problems: dict[str, tuple[dict[str, str], float]] = {}  # code -> (its message, held until)
        self._heard_audio = False  # the first window ends the last run's problems
        self._connected = False
        self._closing = False
        self._dropped = 0
        self._dropped_reported = 0
        self._next_level = 0.0  # time.monotonic() from which the next level may go
        # handed to paho, QoS > 0, maybe not acknowledged: paho's receipt and what it was given
        self._outbox: deque[tuple[mqtt.MQTTMessageInfo, _Message]] = deque()
        self._client: mqtt.Client | None = None
        self._publisher: threading.Thread | None = None
        self._closed = False
        self._refused: str | None = None  # the last refusal logged (logged again only when it changes)
        self._lost_at: float | None = None  # since_boot() when a connection was lost, until the next
        self._unreachable_logged = False
        self._context: ssl.SSLContext | None = None  # the TLS context paho connects with (start())
        self._late_logged = False  # said once per connection
        self._connected_at = -math.inf  # time.monotonic() of the last connection
        self._short_links = 0  # connections in a row the broker ended within TAKEN_OVER_SECONDS
        self._taken_over = False  # set by paho's thread, made a problem by the audio thread's next window
        self._gone: list[str] = []  # slugs of the labels the previous run announced and this one has not
        self._links = 0  # connections made: a wait's end announces only on the connection it was for
        self._announced = False  # this connection's discovery config is out (or none is due)

    # -- topics ---------------------------------------------------------------------------------

    def topic(self, name: str) -> str:
        return f"{self.base_topic}/{name}"

    def state_topic(self, label: str) -> str:
        return self.topic(f"state/{self._slugs.get(label) or label_slug(label)}")

    # -- the Sink: called from the audio path, never waits --------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def dropped(self) -> int:
        """Events and status messages dropped so far because the queue was full (broker away)."""
        return self._dropped

    def window(self, result: WindowResult) -> None:
        if not self._audio_lost:
            self._set_retained(self.topic("microphone"), ON)  # audio arrives
        now = time.monotonic()
        if self._taken_over:
            self._taken_over = False
            problem = {"code": "client_id_taken", "message": self._taken_over_message(), "utc": self.utc(result.t)}
            self._problems["client_id_taken"] = (problem, now + PROBLEM_HOLD_SECONDS)
            self._set_retained(self.topic("problem"), self._problem_payload())
        elif self._problems and any(until <= now for _, until in self._problems.values()):
            self._problems = {code: held for code, held in self._problems.items() if held[1] > now}
            self._set_retained(self.topic("problem"), self._problem_payload())
        elif not self._heard_audio:  # this run works: the last run's problems (retained) end
            self._set_retained(self.topic("problem"), self._problem_payload())
        self._heard_audio = True
        if now < self._next_level:
            return
        self._next_level = now + self.config.level_interval
        level = result.level_dbfs
        heard = None
        if self.heard and result.heard:
            top = record_dict(result, self.utc(result.t))["heard"]  # the JSON lines' own (a NaN: null)
            heard = json.dumps({**top[0], "top": top}, allow_nan=False)
        with self._cond:
            # "None": Home Assistant's word for unknown (digital silence has no level in dBFS)
            self._level = f"{level:.1f}" if level is not None and math.isfinite(level) else "None"
            self._heard = heard or self._heard
            self._cond.notify()

    def event(self, event: Event) -> None:
        message = record_dict(event, self.utc(event.t))
        message["event_type"] = event.label
        if self.run_id is not None:
            message["run_id"] = self.run_id
        clip = self.clip_for(event) if self.clip_for is not None else None
        if clip:
            message["clip"] = clip
        payload = json.dumps(message, allow_nan=False)
        self._enqueue(_Message(self.topic("events"), payload, self.config.qos, made=time.monotonic()))
        if event.label in self._active:
            going = max(0, self._active[event.label] + (1 if event.kind == "start" else -1))
            self._active[event.label] = going
            self._set_retained(self.state_topic(event.label), ON if going else OFF)

    def status(self, status: Status) -> None:
        message = json.dumps(record_dict(status, self.utc(status.t)), allow_nan=False)
        self._enqueue(_Message(self.topic("status"), message, self.config.qos))
        if status.code in ("audio_lost", "audio_restored"):
            self._audio_lost = status.code == "audio_lost"
            self._set_retained(self.topic("microphone"), OFF if self._audio_lost else ON)
            if self._audio_lost:  # no window comes to update it: the level is unknown, not the last one heard
                with self._cond:
                    self._level = "None"
                    self._cond.notify()
        if status.code in ENDS:
            self._problems.pop(ENDS[status.code], None)
        elif status.code in PROBLEMS:
            until = time.monotonic() + PROBLEM_HOLD_SECONDS if status.code in HELD else math.inf
            problem = {"code": status.code, "message": status.message, "utc": self.utc(status.t)}
            self._problems[status.code] = (problem, until)
        else:
            return
        self._set_retained(self.topic("problem"), self._problem_payload())

    def redate(self, by: timedelta) -> None:
        """Messages still waiting for the broker and the problems held were dated by a clock that was
        not synchronised, now stepped right: their `utc` moves `by`, as the event log's rows do (at a boot
        without a real-time clock NTP and the broker both wait for the network, so events queued then went
        out days early, and Home Assistant, which fires an event that waited less than late_after, got it
        with a date from before the boot)."""
        with self._cond:
            self._queue = deque(replace(m, payload=_moved(m.payload, by)) for m in self._queue)
        if self._problems:
            self._problems = {
                code: ({**problem, "utc": _moved_text(problem["utc"], by)}, until)
                for code, (problem, until) in self._problems.items()
            }
            self._set_retained(self.topic("problem"), self._problem_payload())

    def _taken_over_message(self) -> str:
        return (
            f"the broker keeps ending this device's connection: another client likely connects with its client id "
            f"{self.config.client_id!r} (a device cloned from this one's image, or a second service): give each "
            "device its own mqtt.node_id (and mqtt.client_id where set)"
        )

    def _problem_payload(self) -> str:
        return problem_payload([problem for problem, _ in self._problems.values()])

    def _enqueue(self, message: _Message) -> None:
        with self._cond:
            first_drop = False
            if len(self._queue) >= self.config.queue_size:
                self._queue.popleft()
                self._dropped += 1
                first_drop = self._dropped == self._dropped_reported + 1
            self._queue.append(message)
            self._cond.notify()
        if first_drop:
            log.warning(
                "mqtt: %d messages wait for the broker at %s:%d: dropping the oldest from now on "
                "(raise mqtt.queue_size to keep more)",
                self.config.queue_size,
                self.config.host,
                self.config.port,
            )

    def _set_retained(self, topic: str, payload: str) -> None:
        if self._retained.get(topic) == payload:  # the usual case (every window): no lock taken
            return
        with self._cond:
            self._retained[topic] = payload
            self._dirty[topic] = None
            self._cond.notify()

    # -- connection ------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (never raises for an unreachable broker); ConfigError for
        TLS files or a password that cannot be used."""
        if self._client is not None:
            return
        cfg = self.config
        client, context = new_client(cfg)
        client.on_log = self._on_log
        client.suppress_exceptions = True  # a failing callback is logged; it must not end paho's thread
        self._context = context  # what unreachable_reason tries the handshake with
        client.will_set(self.topic("availability"), OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(cfg.reconnect_min_delay, cfg.reconnect_max_delay)
        # paho's own store of unacknowledged messages: bounded too (+ room for the connection's own)
        client.max_queued_messages_set(cfg.queue_size + len(self.labels) + 16)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive)
        client.loop_start()
        self._publisher = threading.Thread(target=self._publish_loop, name="mqtt-publisher", daemon=True)
        self._publisher.start()
        log.info("mqtt: connecting to %s:%d as %s (topics %s/...)", cfg.host, cfg.port, cfg.client_id, self.base_topic)

    def close(self) -> None:
        """Send the microphone OFF, what is queued and `offline` (retained), waiting CLOSE_SECONDS at most;
        disconnect."""
        if self._closed:
            return
        self._closed = True
        client = self._client
        if client is None:
            return
        deadline = time.monotonic() + CLOSE_SECONDS
        # no audio comes after a stop: a newcomer reading the retained topics finds no microphone ON
        self._set_retained(self.topic("microphone"), OFF)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._publisher is not None:
            self._publisher.join(max(0.0, deadline - time.monotonic()))
        if self._connected:
            offline = client.publish(self.topic("availability"), OFFLINE, qos=1, retain=True)
            while (
                self._connected
                and time.monotonic() < deadline
                and not all(i.is_published() for i in [*(info for info, _ in list(self._outbox)), offline])
            ):
                time.sleep(0.01)
        # QoS > 0 messages paho sent that the broker never acknowledged (a broker that stalled: the
        # link looks up until the keepalive runs out) are as lost as those never sent
        unacknowledged = sum(not info.is_published() for info, _ in list(self._outbox))
        client.disconnect()
        client.loop_stop()
        self._connected = False
        with self._cond:
            unsent = len(self._queue)
        if unsent or self._dropped or unacknowledged:
            log.warning(
                "mqtt: closing with %d messages not sent, %d dropped and %d not acknowledged (the broker at %s:%d "
                "was unreachable or stalled)",
                unsent,
                self._dropped,
                unacknowledged,
                self.config.host,
                self.config.port,
            )

    @staticmethod
    def _on_log(client: mqtt.Client, userdata: Any, level: int, text: str) -> None:
        # paho's own lines at debug (our callbacks say what a user needs), but a callback that failed
        if level == mqtt.MQTT_LOG_ERR and text.startswith("Caught exception"):
            log.error("mqtt: %s", text)
        else:
            paho_log.debug(text)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        cfg = self.config
        if reason.is_failure:
            if self._refused != str(reason):
                self._refused = str(reason)
                hint = " (check mqtt.username and its password)" if reason.value in (0x86, 0x87, 4, 5) else ""
                log.warning("mqtt: the broker at %s:%d refused the connection: %s%s", cfg.host, cfg.port, reason, hint)
            return
        self._refused = None
        self._unreachable_logged = self._late_logged = False
        lost, self._lost_at = self._lost_at, None
        again = "" if lost is None else f" again, {since_boot() - lost:.0f} s after the connection was lost"
        log.info("mqtt: connected to %s:%d%s", cfg.host, cfg.port, again)
        self._mark_resends(client)
        with self._cond:  # a restarted broker may have lost them; and they go before `online`
            known, self._dirty = dict(self._retained), {}
        for topic, payload in known.items():
            client.publish(topic, payload, qos=1, retain=True)
        client.publish(self.topic("availability"), ONLINE, qos=1, retain=True)
        # the previous run's labels (retained) arrive after this subscription is made, before
        # the list published below replaces them and comes back: the broker handles one client's
        # packets in order. The discovery config waits for it, so that one config holds the removals
        subscriptions = [(self.topic("labels"), 1)] + ([(f"{cfg.discovery_prefix}/status", 1)] if cfg.discovery else [])
        with self._cond:
            self._links += 1
            self._announced = False
        client.subscribe(subscriptions)
        client.publish(self.topic("labels"), self._labels_payload(), qos=1, retain=True)
        waiting = threading.Timer(ANNOUNCE_WAIT_SECONDS, self._announce, (client, self._links))
        waiting.daemon = True
        waiting.start()
        self._connected_at = time.monotonic()
        with self._cond:
            self._connected = True
            dropped, self._dropped_reported = self._dropped - self._dropped_reported, self._dropped
            self._cond.notify_all()
        if dropped:
            log.warning("mqtt: %d messages were dropped while the broker was unreachable", dropped)

    def _mark_resends(self, client: mqtt.Client) -> None:
        """Events paho wrote to a link that died before the broker acknowledged them (a Wi-Fi link
        gone: the connection looks up until the keepalive runs out) are sent again by paho on the
        new connection, as soon as `_on_connect` returns: one that is late by then gets `delayed_s`,
        as one that waited in the queue does, or Home Assistant would fire it as heard now. paho has
        no public way to change a message it holds, so its store is reached by name; where a paho
        release has no such store, they go as they are."""
        waiting = [(info, message) for info, message in list(self._outbox) if not info.is_published()]
        late = {info.mid: marked for info, message in waiting if (marked := self._late(message)) is not message}
        if not late:
            return
        store, lock = getattr(client, "_out_messages", None), getattr(client, "_out_message_mutex", None)
        if store is None or lock is None:
            log.debug("mqtt: this paho keeps no _out_messages: %d late events go again unmarked", len(late))
            return
        with lock:
            for mid, marked in late.items():
                held = store.get(mid)
                if held is not None and held.topic == marked.topic:
                    held.payload = marked.payload.encode("utf-8")

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._unreachable_logged:
            self._unreachable_logged = True
            why = unreachable_reason(self.config.host, self.config.port, self._context)
            log.warning(
                "mqtt: cannot reach the broker at %s:%d%s; retrying (every %d s at most), detection goes on",
                self.config.host,
                self.config.port,
                f": {why}" if why else "",
                self.config.reconnect_max_delay,
            )

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was = self._connected
        with self._cond:
            self._connected = False
        # a broker ends a connection when another client connects with the same client id
        short = time.monotonic() - self._connected_at < TAKEN_OVER_SECONDS
        self._short_links = self._short_links + 1 if short else 0
        taken_over = self._short_links >= 2 and not self._closing
        self._taken_over = self._taken_over or taken_over
        if not was and not self._closing and not self._unreachable_logged and self._refused is None:
            # ended before the broker accepted it: plain MQTT to a TLS port, or a broker dropping this client
            self._unreachable_logged = True
            log.warning(
                "mqtt: the broker at %s:%d ended the connection before accepting it (%s)%s; retrying (every %d s "
                "at most), detection goes on",
                self.config.host,
                self.config.port,
                reason,
                ": if that port is its TLS port (8883), set mqtt.tls" if self.config.tls is None else "",
                self.config.reconnect_max_delay,
            )
        if was and not self._closing:
            self._lost_at = since_boot()  # a suspend counts in the outage
            log.warning(
                "mqtt: lost the broker at %s:%d (%s); reconnecting, up to %d messages wait meanwhile%s",
                self.config.host,
                self.config.port,
                reason,
                self.config.queue_size,
                f"; it ended the last {self._short_links} connections within seconds: {self._taken_over_message()}"
                if taken_over
                else "",
            )

    def _labels_payload(self) -> str:
        return json.dumps(list(self.labels))

    def _announce(self, client: mqtt.Client, link: int | None = None) -> None:
        """The discovery config of this connection, once: its labels list came back, or (`link`: the
        connection the wait was for) ANNOUNCE_WAIT_SECONDS passed without it."""
        with self._cond:  # paho's thread (the list came back) and the wait's may both get here
            if self._announced or not self._connected or link not in (None, self._links):
                return
            self._announced = True
        if link is not None:  # a broker whose ACL lets this client publish its labels but not read them back
            log.info(
                "mqtt: %s did not come back: discovery published without the last run's labels", self.topic("labels")
            )
        if self.config.discovery:
            self._publish_discovery(client)

    def _publish_discovery(self, client: mqtt.Client) -> None:
        """The device's discovery config, retained, with the labels gone since the last run removed."""
        client.publish(self.discovery_topic, json.dumps(self.discovery_config(removed=self._gone)), qos=1, retain=True)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.topic("labels"):
            if message.retain:  # the previous run's list; our own publication comes back unretained
                self._forget_removed(client, message.payload)
            elif message.payload == self._labels_payload().encode():
                self._announce(client)
        elif message.payload == ONLINE.encode():  # Home Assistant (re)started: announce again
            log.info("mqtt: Home Assistant is online: discovery published again")
            self._publish_discovery(client)
            with self._cond:
                self._dirty = dict.fromkeys(self._retained)
                self._cond.notify_all()

    def _forget_removed(self, client: mqtt.Client, payload: bytes | bytearray) -> None:
        try:
            previous = json.loads(payload)
            assert isinstance(previous, list) and all(isinstance(x, str) for x in previous)
        except (ValueError, AssertionError):
            log.debug("mqtt: %s holds no list of labels: ignored", self.topic("labels"))
            return
        if len(previous) > FORGET_MAX:  # a retained list anyone may publish: 20,000 names had 20,000 removals sent
            log.warning(
                "mqtt: %s holds %d labels, more than a run publishes (%d at most): not read; the labels gone since "
                "the last run keep their entities (remove them in Home Assistant)",
                self.topic("labels"),
                len(previous),
                FORGET_MAX,
            )
            return
        current = set(self._slugs.values())
        removed = sorted({label_slug(label) for label in previous} - current)
        if not removed:
            return
        shown = ", ".join(removed[:SHOWN_GONE]) + (
            f" and {len(removed) - SHOWN_GONE} more" if len(removed) > SHOWN_GONE else ""
        )
        log.info("mqtt: labels gone since the last run: %s; their states and entities are removed", shown)
        self._gone = sorted(set(self._gone) | set(removed))  # in this run's every config (discovery_config)
        with self._cond:
            late = self._announced  # the config went without them (the wait ended first): they follow in another
        if late and self.config.discovery:
            self._publish_discovery(client)
        for s in removed:
            client.publish(self.topic(f"state/{s}"), None, qos=1, retain=True)  # empty: the broker forgets it

    # -- the publisher thread --------------------------------------------------------------------

    def _publish_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closing or (self._connected and self._has_work()))
                if not (self._connected and self._has_work()):
                    return  # closing, and nothing more can go out
                batch = [_Message(topic, self._retained[topic], 1, retain=True) for topic in self._dirty]
                self._dirty = {}
                if self._level is not None:
                    batch.append(_Message(self.topic("level"), self._level, 0))
                    self._level = None
                if self._heard is not None:
                    batch.append(_Message(self.topic("heard"), self._heard, 0))
                    self._heard = None
                for _ in range(min(BATCH, len(self._queue))):
                    batch.append(self._late(self._queue.popleft()))
            for message in batch:
                try:
                    self._hand_over(message)
                except Exception:  # never let the thread die: MQTT would fall silent for the service's life
                    log.exception("mqtt: publishing on %s failed", message.topic)

    def _late(self, message: _Message) -> _Message:
        """An event that waited for the broker longer than late_after, marked with `delayed_s`."""
        waited = time.monotonic() - message.made
        late_after = self.config.late_after
        if message.topic != self.topic("events") or late_after is None or waited <= late_after:
            return message
        if not self._late_logged:
            self._late_logged = True
            log.warning(
                "mqtt: events that waited for the broker more than %g s go out with delayed_s; Home Assistant's "
                "event entity does not fire for them (the event log and the events topic keep them)",
                late_after,
            )
        record = json.loads(message.payload)
        record["delayed_s"] = round(waited, 1)
        return replace(message, payload=json.dumps(record, allow_nan=False))

    def _has_work(self) -> bool:
        return bool(self._dirty or self._queue or self._level is not None or self._heard is not None)

    def _hand_over(self, message: _Message) -> None:
        assert self._client is not None
        info = self._client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            with self._cond:
                self._dropped += 1
        elif message.qos > 0:  # kept by paho until acknowledged, across reconnections
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                # the connection fell between our check and paho's: paho keeps the message and
                # sends it on reconnection (is_published() would raise for this rc otherwise)
                info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
            while self._outbox and self._outbox[0][0].is_published():
                self._outbox.popleft()
            self._outbox.append((info, message))

    # -- Home Assistant --------------------------------------------------------------------------

    def discovery_config(self, removed: Sequence[str] = ()) -> dict[str, Any]:
        """The device discovery message: the device, its entities, and `removed` label slugs
        as components with only their platform (Home Assistant deletes those)."""
        device_id = f"semanticac_{self.node_id}"

        def entity(key: str, platform: str, name: str, **options: Any) -> dict[str, Any]:
            return {"platform": platform, "name": name, "unique_id": f"{device_id}_{key}", **options}

        components = {
            "events": entity(
                "events",
                "event",
                "Sound event",
                state_topic=self.topic("events"),
                event_types=list(self.labels),
                value_template=START_ONLY,
                icon="mdi:waveform",
            ),
            "level": entity(
                "level",
                "sensor",
                "Sound level",
                state_topic=self.topic("level"),
                unit_of_measurement="dBFS",
                state_class="measurement",
                suggested_display_precision=1,
                icon="mdi:volume-high",
            ),
            "microphone": entity(
                "microphone",
                "binary_sensor",
                "Microphone",
                state_topic=self.topic("microphone"),
                device_class="connectivity",
                entity_category="diagnostic",
                payload_on=ON,
                payload_off=OFF,
            ),
            "problem": entity(
                "problem",
                "binary_sensor",
                "Problem",
                state_topic=self.topic("problem"),
                value_template="{{ value_json.state }}",
                json_attributes_topic=self.topic("problem"),
                device_class="problem",
                entity_category="diagnostic",
                payload_on=ON,
                payload_off=OFF,
                # its own availability, not the device's: the failure that stopped the service is
                # still read while the device is offline (any message on `problem` makes it available)
                availability=[{"topic": self.topic("problem"), "value_template": ONLINE}],
            ),
        }
        for label, s in self._slugs.items():
            components[f"label_{s}"] = entity(
                f"label_{s}",
                "binary_sensor",
                _sentence(label.replace("_", " ")),
                state_topic=self.state_topic(label),
                device_class="sound",
                payload_on=ON,
                payload_off=OFF,
            )
        components["heard"] = (
            entity(
                "heard",
                "sensor",
                "Sound heard",
                state_topic=self.topic("heard"),
                value_template="{{ value_json.name }}",
                json_attributes_topic=self.topic("heard"),
                icon="mdi:ear-hearing",
            )
            if self.heard
            else {"platform": "sensor"}  # a run without `heard` removes the sensor an earlier one made
        )
        for s in removed:
            components[f"label_{s}"] = {"platform": "binary_sensor"}
        return {
            "device": {
                "identifiers": [device_id],
                "name": self.node_name,
                "manufacturer": "semanticac-edge",
                "model": self.model,
                "sw_version": self.sw_version,
            },
            "origin": {"name": "semanticac-edge", "sw_version": self.sw_version},
            # a list (`availability`), not `availability_topic`: Home Assistant copies a shared key
            # into each component that lacks it, and a component may not hold both forms
            "availability": [
                {"topic": self.topic("availability"), "payload_available": ONLINE, "payload_not_available": OFFLINE}
            ],
            "qos": 1,
            "components": components,
        }
