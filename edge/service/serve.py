"""`semanticac-edge serve`: the listen pipeline (edge.listen.listen) run as a service.

    config (edge.service.config) -> bundle, label set (+ labels.thresholds), backend
      -> sinks of the enabled outputs + ServiceSink, in one FanOut
      -> listen(options, sink, stop, backend, heartbeat) until the source ends or a stop signal

`ServiceSink` is what systemd and the journal see: READY=1 once the first window has been
scored (audio flows and the model answered), or once the loop reports the microphone lost
(missing at boot: the service is up and reopening it), a STATUS= line (labels, backend, audio, windows
per second, the last event, the last warning), WATCHDOG=1 from the loop's heartbeat, and a
log line per event start/end. `serve` sends STOPPING=1 when the loop ends.

Errors before audio flows are raised; the CLI maps the ones a restart cannot fix (config,
bundle, label set, model: `CONFIG_ERRORS`) to exit status 78, the rest to 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edge import __version__
from edge.backends.base import Backend
from edge.bundle import Bundle, resolve_bundle_origin
from edge.errors import (
    AudioError,
    BackendError,
    BundleError,
    ConfigError,
    InUseError,
    LabelEmbeddingsError,
    LabelSetError,
    OptionError,
)
from edge.events import Event
from edge.features import Windowing
from edge.fsutil import LockHeld, hand_on, is_lock_of, release_handed_locks, take_lock
from edge.labels.labelset import LabelSet, label_files, resolve_label_set
from edge.listen import ListenOptions, ListenSummary
from edge.outputs.clips import ClipRecorder, clip_history_seconds
from edge.outputs.eventlog import EventLogSink, new_run_id
from edge.outputs.metrics import PRIVILEGED_PORT_FIX, RETRY_SECONDS, MetricsSink
from edge.outputs.mqtt import MqttSink
from edge.outputs.sinks import ENDS, FanOut, Sink, Status, WindowResult
from edge.service.config import ServiceConfig
from edge.service.mounts import Mount, absent_disk, boot_race, mounted_over, read_mounts, read_only_disk
from edge.service.notify import Notifier

log = logging.getLogger(__name__)

# Errors a restart cannot fix: the CLI exits 78 (EX_CONFIG) on them, and the unit's
# RestartPreventExitStatus=78 keeps systemd from looping. ImportError: a backend or output
# whose package is missing (e.g. TensorRT asked for on a machine without it).
CONFIG_ERRORS = (ConfigError, OptionError, BundleError, LabelSetError, LabelEmbeddingsError, BackendError, ImportError)


@dataclass(frozen=True)
class Resolved:
    """What a config points at, found and checked (check-config stops here; serve goes on)."""

    bundle: Bundle
    origin: str  # where the bundle came from, in words
    label_set: LabelSet  # with labels.thresholds applied


def disk_note(path: str | Path | None, mounts: tuple[list[Mount], list[Mount]] | None = None) -> str:
    """ " (the disk of X is not mounted now: ...)" for an absolute `path` on a disk /etc/fstab names that is
    not mounted (edge.service.mounts: a boot that did not wait for it); else "". `mounts`: read_mounts()'s,
    read here when not given."""
    if path is None or not Path(path).is_absolute():
        return ""
    absent = absent_disk(path, *(mounts or read_mounts()))
    return f" (the disk it is on: {absent})" if absent else ""


def resolve(config: ServiceConfig, label_texts: Mapping[str, str] | None = None) -> Resolved:
    """The bundle and the label set of `config`, with its threshold overrides; no model is run.
    `label_texts`: the label-set files as a reload checked them ({absolute path: text}; labelset.label_files)."""
    options = config.options
    try:
        bundle, origin = resolve_bundle_origin(options.bundle)
    except BundleError as err:
        raise ConfigError(
            f"model.bundle {options.bundle!r}: {err}{disk_note(options.bundle)}", key="model.bundle"
        ) from None
    try:
        with label_files(label_texts):
            label_set = resolve_label_set(options.labels)
    except LabelSetError as err:
        raise ConfigError(
            f"labels.set {options.labels!r}: {err}{disk_note(options.labels)}", key="labels.set"
        ) from None
    listen_windowing(config, bundle)
    audio_file = options.input
    if audio_file is not None and not Path(audio_file).is_file():
        raise ConfigError(
            f"audio.input {audio_file!r} is not a file: give the path of an audio file, or leave the key out "
            f"for the microphone{disk_note(audio_file)}",
            key="audio.input",
        )
    if audio_file is not None:  # not audio: a restart (exit 1) would never mend it
        from edge.capture.audio import open_audio

        try:
            open_audio(audio_file).close()
        except AudioError as err:
            raise ConfigError(f"audio.input: {err}", key="audio.input") from None
    return Resolved(bundle, origin, with_thresholds(label_set, config.thresholds))


def device_notes(config: ServiceConfig) -> list[tuple[str, str]]:
    """check-config: a warning when `audio.device` names no capture device PortAudio sees now, or
    several (the service starts and keeps trying to open it), or when PortAudio itself is missing
    (a start then exits 78: check-config may run on another machine than the service, so it warns);
    nothing for a file input."""
    if config.options.input is not None:
        return []
    from edge.capture.sources import find_input_device

    try:
        find_input_device(config.options.device)
    except ImportError as err:
        return [("warning", f"audio: {err}; without it, on this machine, the service stops at its start (exit 78)")]
    except AudioError as err:
        then = (
            "the service starts and keeps trying to open it"
            if config.options.reconnect
            else "with supervision.reconnect: false the service stops at its start, exit 1"
        )
        return [("warning", f"audio.device: {err} ({then})")]
    return []


def disk_notes(config: ServiceConfig, environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """check-config: a warning for each folder the service writes on a disk the kernel made read-only
    (it starts, and writes nothing there until the disk is writable), and when the clips' disk cannot
    give them clips.max_megabytes (as the service's start says it). Only where the config (its paths,
    service.state_dir) or $STATE_DIRECTORY says where they go: from a shell the default folder is the
    user's, not the unit's StateDirectory=, and its disk may not be the service's."""
    from edge.outputs.clips import room_warning
    from edge.service.config import state_dir

    env = os.environ if environ is None else environ
    placed = bool(config.service.state_dir or env.get("STATE_DIRECTORY"))
    outputs = config.enabled_outputs()
    clips = outputs.get("clips")
    given = {
        "event_log.path": getattr(outputs.get("event_log"), "path", None),
        "clips.dir": getattr(clips, "dir", None),
    }
    folder = state_dir(config, environ=env)
    mounts = read_mounts()[1]
    notes = [  # the event log and the clips (the state folder holds only the lock beside them)
        ("warning", f"{key} {path}: {read_only}: the service starts, and writes nothing there until it can")
        for key, path in written_paths(config, folder).items()
        if key in given and (placed or given[key]) and (read_only := read_only_disk(path, mounts))
    ]
    if clips is None or not (clips.dir or placed):
        return notes
    short = room_warning(clips, clips.resolve_dir(folder))
    return notes if short is None else [*notes, ("warning", short)]


def clip_notes(config: ServiceConfig, resolved: Resolved) -> list[tuple[str, str]]:
    """check-config: a warning for a clips.pre_roll shorter than onset_reach, as the recorder's start says."""
    from edge.outputs.clips import pre_roll_warning

    clips = config.enabled_outputs().get("clips")
    reach = onset_reach(config.options, config.options.windowing(resolved.bundle))
    short = None if clips is None else pre_roll_warning(clips, reach)
    return [] if short is None else [("warning", short)]


def exposure_notes(config: ServiceConfig) -> list[tuple[str, str]]:
    """check-config: a warning for each setting that shows the household to others, each of them valid and
    said nowhere before: a password or key file every user of this machine may read, a metrics address
    beyond this machine (its /stream is a live feed of what is heard, with no password), a broker's
    certificate not checked, a password sent to another machine without TLS."""
    notes = []
    mqtt = config.enabled_outputs().get("mqtt")
    tls = getattr(mqtt, "tls", None)
    secrets = {
        "mqtt.password_file": getattr(mqtt, "password_file", None),
        "mqtt.tls.keyfile": getattr(tls, "keyfile", None),
    }
    for key, path in secrets.items():
        try:
            mode = os.stat(path).st_mode if path else 0
        except OSError:
            mode = 0  # credentials() said why it cannot be read
        if mode & stat.S_IROTH:
            notes.append(
                (
                    "warning",
                    f"{key} {path!r} may be read by every user of this machine (mode {stat.S_IMODE(mode):04o}): "
                    "chmod 600 it and let systemd hand the service a copy (LoadCredential=; a password also as "
                    "password_env with EnvironmentFile=: README, Run as a service)",
                )
            )
    if mqtt is not None and tls is not None and tls.insecure:
        notes.append(
            (
                "warning",
                "mqtt.tls.insecure: true: the broker's certificate is not checked to name "
                f"{mqtt.host!r}, so anyone on the way can pose as the broker and read the events and the password",
            )
        )
    if mqtt is not None and tls is None and mqtt.username and not _this_machine(mqtt.host):
        notes.append(
            (
                "warning",
                f"mqtt: username and password go to {mqtt.host} unencrypted (no mqtt.tls): anyone on the network "
                "can read them, and the events; give the broker a TLS port (mqtt.tls)",
            )
        )
    metrics = config.enabled_outputs().get("metrics")
    if metrics is not None and not _this_machine(metrics.host):
        notes.append(
            (
                "warning",
                f"metrics.host {metrics.host!r}: /metrics, /healthz and /stream (a live feed of every window: what "
                "is heard, second by second) answer anyone who reaches port "
                f"{metrics.port}, with no password; keep 127.0.0.1 unless a firewall or the unit's IPAddressAllow= "
                "limits who can",
            )
        )
    return notes


def _this_machine(host: str) -> bool:
    """Whether `host` is this machine only (a loopback name or address)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost")


def checked(
    config_path: str, overrides: Sequence[str] = (), text: str | None = None, stop: threading.Event | None = None
) -> tuple[ServiceConfig, Resolved]:
    """The config at `config_path` read and checked as check-config and a reload (SIGHUP) check it:
    every key, the bundle (each graph there, readable and matching its SHA-256), the label set and its
    embeddings (found, or computed and cached as a start would: a prompt too long for the text tower is
    refused here), the backend (tensorrt: TensorRT and an engine for this GPU), the outputs' files;
    CONFIG_ERRORS when something is wrong. What a start refuses, this refuses: a reload that checks out
    starts again in place, and a start that fails then exits 78, which the unit does not restart.
    `text`: the file's text as read before (a reload starts from exactly what it checked); `stop`: set,
    it ends the embedding of a new label set (a SIGTERM during a reload's check: Stopped)."""
    from edge.backends import check_backend
    from edge.labels.embeddings import label_embeddings_for
    from edge.service.config import load_config

    config = load_config(config_path, overrides, text)
    found = resolve(config)
    try:  # every graph there and whole: a start loads them all
        found.bundle.verify()
    except BundleError as err:
        raise ConfigError(f"model.bundle: {err}", key="model.bundle") from None
    try:
        label_embeddings_for(found.bundle, found.label_set, config.options.threads, stop)
    except (LabelSetError, LabelEmbeddingsError) as err:
        raise ConfigError(f"labels.set {config.options.labels!r}: {err}", key="labels.set") from None
    try:
        check_backend(found.bundle, config.options.backend)
    except (BackendError, ImportError) as err:
        raise ConfigError(f"model.backend {config.options.backend!r}: {err}", key="model.backend") from None
    check_outputs(config, found.label_set, found.bundle)
    return config, found


def tell_mqtt_of_config_error(config_path: str, overrides: Sequence[str], text: str | None, error: Exception) -> None:
    """A start by systemd that fails on its config (exit 78: systemd does not restart it) says why on MQTT's
    retained `problem` (code config_error) when the config's mqtt section, read alone, is enabled and sound;
    the service's own MQTT output never started, so Home Assistant had shown the device offline, no reason.
    Not a run from a shell, nor a start refused because another serve holds its state folder or event log
    (InUseError): either would speak over a service that runs."""
    from edge.outputs.mqtt import MqttConfig, publish_problem
    from edge.outputs.sinks import utc_text
    from edge.service.config import apply_overrides, read_config_file
    from edge.service.sections import parse_section

    if isinstance(error, InUseError) or not (os.environ.get("INVOCATION_ID") or os.environ.get("NOTIFY_SOCKET")):
        return
    try:
        raw = apply_overrides(read_config_file(config_path, text), overrides)
        mqtt = parse_section(MqttConfig, raw.get("mqtt") if isinstance(raw, Mapping) else None, "mqtt")
    except CONFIG_ERRORS:
        return
    if mqtt.enabled:
        problem = {"code": "config_error", "message": str(error), "utc": utc_text(datetime.now(timezone.utc))}
        publish_problem(mqtt, problem)


def reload_problems(running: ServiceConfig, new: ServiceConfig, running_state: Path, new_state: Path) -> None:
    """ConfigError for what a reload's start would refuse that `checked` cannot see while this run
    holds its own: a metrics address another program has taken, a state folder or an event log another
    serve holds (each only where the new config changes it: this run holds its own until it starts again)."""
    from edge.outputs.eventlog import lock_event_log
    from edge.outputs.metrics import bind_server

    metrics = new.enabled_outputs().get("metrics")
    before = running.enabled_outputs().get("metrics")
    if metrics is not None and (before is None or (before.host, before.port) != (metrics.host, metrics.port)):
        bind_server(metrics.host, metrics.port).server_close()  # its ConfigError is the start's
    if new_state.resolve() != running_state.resolve():
        try:
            os.close(_take_lock(new_state))  # held by another serve: ConfigError, as the start's
        except OSError:
            pass  # a folder that cannot be made: the outputs that need it say why at the start
    events, before = (config.enabled_outputs().get("event_log") for config in (new, running))
    path = None if events is None else events.resolve_path(new_state).resolve()
    if path is not None and (before is None or before.resolve_path(running_state).resolve() != path):
        held = lock_event_log(path)  # held by another serve: ConfigError, as the start's
        if held is not None:
            os.close(held)


def onset_reach(options: ListenOptions, windowing: Windowing) -> float:
    """How long an event's onset may come after its sound begins, the default clips.pre_roll: the sound
    may begin up to a window before the first window that hears it ends, and the mean of `smooth` windows
    reaches the threshold up to smooth - 1 hops after that one (held windows, which count as 0, not counted)."""
    return windowing.window_seconds + (options.smooth - 1) * windowing.hop_seconds


def start_lag(options: ListenOptions, windowing: Windowing) -> float:
    """How long after its onset an event's start may come: once the smoothed score has held
    min_duration, and a few hops more; and how far the audio runs ahead of the events (listen reads
    up to a model window at a time). What the clip recorder's history must cover beyond a clip."""
    return options.min_duration + (options.smooth + 2) * windowing.hop_seconds + windowing.model_seconds


def check_outputs(config: ServiceConfig, label_set: LabelSet, bundle: Bundle | None = None) -> None:
    """What check-config checks of the enabled outputs without opening them: the MQTT password
    and TLS files, read as the user running it (a service under DynamicUser= reads them as
    another: keep them readable to it), the labels' MQTT topics, and a metrics port the unit can
    listen on (root's check passed port 80, and the service's start then exited 78); ConfigError
    naming the key."""
    from edge.outputs.mqtt import credentials, label_slugs

    mqtt = config.enabled_outputs().get("mqtt")
    if mqtt is not None:
        credentials(mqtt)
        label_slugs(label_set.names)
    metrics = config.enabled_outputs().get("metrics")
    if metrics is not None and 0 < metrics.port < 1024:
        raise ConfigError(f"metrics.port {metrics.port}: {PRIVILEGED_PORT_FIX}", key="metrics.port")
    if config.service.state_dir:  # else $STATE_DIRECTORY (systemd makes it) or the user's state folder
        _placed("service.state_dir", config.service.state_dir, "cannot hold the service's state", None, folder=True)
    clips, event_log = (config.enabled_outputs().get(name) for name in ("clips", "event_log"))
    if clips is not None and clips.dir:
        _placed("clips.dir", clips.dir, "cannot hold clips", "clips.enabled", folder=True)
    if clips is not None and bundle is not None:  # as the recorder's start checks it
        windowing = config.options.windowing(bundle)
        clip_history_seconds(
            clips, onset_reach(config.options, windowing), start_lag(config.options, windowing), config.options.hold
        )
    if event_log is not None and event_log.path:
        _placed("event_log.path", event_log.path, "cannot be used as the event log", "event_log.enabled", folder=False)
        from edge.outputs.eventlog import refuse_foreign

        refuse_foreign(Path(event_log.path).expanduser())  # as the start does


def _placed(key: str, value: str, cannot: str, switch: str | None, folder: bool) -> None:
    """ConfigError, as the output's start would raise it, when `value` (a folder, or a file with
    `folder` False) cannot be made where it is: a file stands in its way, or a file's path is a
    folder. Nothing where a folder on the way cannot be entered: the service's own user may."""
    from edge.fsutil import nearest_existing
    from edge.service.sections import UNWRITABLE_FIX

    path = Path(value).expanduser()
    try:
        found = nearest_existing(path if folder else path.parent)
        if not found.is_dir():
            reason = f"{found} is a file"
        elif not folder and path.is_dir():
            reason = f"{path} is a folder (name a file in it, e.g. {path / 'events.sqlite'})"
        else:
            return
    except OSError:
        return
    off = f"; or {switch}: false" if switch else ""
    raise ConfigError(f"{key} {value} {cannot}: {reason}: {UNWRITABLE_FIX}{off}", key=key)


def path_notes(config: ServiceConfig) -> list[tuple[str, str]]:
    """check-config: a warning for each relative path (taken from the working directory, which
    under systemd is /: a config checked from its own folder passes, and the service then finds
    nothing there), each path in a home folder (the unit's dynamic user cannot read it) and each
    on a disk a boot may not have mounted when the service starts (edge.service.mounts)."""
    from edge.labels.labelset import shipped_label_sets

    labels = config.options.labels
    mqtt = config.outputs.get("mqtt")
    tls = getattr(mqtt, "tls", None)
    paths = {
        "audio.input": config.options.input if config.options.input != "-" else None,
        "model.bundle": config.options.bundle,
        "labels.set": None if str(labels).removesuffix(".yaml") in shipped_label_sets() else labels,
        # service.state_dir: under systemd StateDirectory= decides, so a relative one matters to a shell only
        "event_log.path": getattr(config.outputs.get("event_log"), "path", None),
        "clips.dir": getattr(config.outputs.get("clips"), "dir", None),
        "mqtt.password_file": getattr(mqtt, "password_file", None),
        **{f"mqtt.tls.{key}": getattr(tls, key, None) for key in ("ca_certs", "certfile", "keyfile")},
    }
    notes = []
    fstab, now = read_mounts()
    for key, value in paths.items():
        if not value:
            continue
        path = Path(str(value)).expanduser()
        race = boot_race(path, fstab, now) if path.is_absolute() else None
        if race is not None:
            notes.append(f"{key} {str(value)!r}: {race}")
        if not path.is_absolute():
            notes.append(
                f"{key} {str(value)!r} is a relative path: it is taken from the working directory (here "
                f"{Path.cwd() / value}; under systemd {Path('/') / value}): give it as an absolute path"
            )
        elif any(path.is_relative_to(home) for home in ("/home", "/root", "/run/user")):
            notes.append(
                f"{key} {str(value)!r} is in a home folder: the unit's dynamic user cannot read a person's files, "
                "and ProtectHome= hides /home from it unless its venv or config lives there; keep it under "
                "/etc/semanticac-edge/ or /var/lib/semanticac-edge/ (a run from a shell reads it)"
            )
    return [("warning", note) for note in notes]


def label_notes(config: ServiceConfig, resolved: Resolved) -> list[tuple[str, str]]:
    """What the service's listen says at its start about its label set, (level, message) pairs
    (labels no one trained, weakly named ones, an agreement that checks nothing, a hop that skips
    audio); the set's embeddings found, or computed and cached as at a start."""
    from edge.listen import scorer_for, start_notes

    agree = config.options.agree
    scorer, vocabulary = scorer_for(resolved.bundle, resolved.label_set, agree=agree)
    windowing = config.options.windowing(resolved.bundle)
    return start_notes(resolved.bundle, resolved.label_set, scorer, vocabulary, windowing, agree, config.options)


def listen_windowing(config: ServiceConfig, bundle: Bundle) -> None:
    """listen.window and listen.hop in the bundle's frames; a ConfigError naming the key when they cannot be."""
    try:
        config.options.windowing(bundle)
    except OptionError as err:
        key = f"listen.{err.option}"
        raise ConfigError(f"{key}: {err}", key=key) from None


def with_thresholds(label_set: LabelSet, thresholds: dict[str, float]) -> LabelSet:
    """`labels.thresholds` over the set's own thresholds (names compared as the set compares
    them: `smoke_alarm` is `smoke alarm`); an unknown label is a ConfigError."""
    given: dict[str, float] = {}
    for name, value in thresholds.items():
        own = label_set.find(name)
        if own is None:
            raise ConfigError(
                f"labels.thresholds.{name}: label set {label_set.name!r} ({label_set.source}) has no label "
                f"{name!r}; {label_set.unknown_label_hint(name)}",
                key=f"labels.thresholds.{name}",
            )
        if own in given:
            raise ConfigError(
                f"labels.thresholds.{name}: label {own!r} is given twice (names are compared ignoring case, "
                "'_' vs ' ' and how accents are composed): keep one",
                key=f"labels.thresholds.{name}",
            )
        given[own] = value
    labels = tuple(
        dataclasses.replace(label, threshold=given[label.name], own_threshold=True) if label.name in given else label
        for label in label_set.labels
    )
    return dataclasses.replace(label_set, labels=labels)


def embeddings_ready(bundle: Bundle, label_set: LabelSet) -> bool:
    """Whether the label set's embeddings are already in the bundle or the cache (else listen computes them)."""
    from edge.labels.embeddings import find_label_embeddings

    try:
        find_label_embeddings(bundle, label_set)
    except LabelEmbeddingsError:
        return False
    return True


class ServiceSink(Sink):
    """READY, STATUS and the journal's lines; `heartbeat` pings the watchdog from the listen loop."""

    def __init__(self, notifier: Notifier, doing: str, status_interval: float, clock=time.monotonic):
        super().__init__()
        self.notifier, self.doing, self.status_interval, self.clock = notifier, doing, status_interval, clock
        self.ready = False
        self.windows = 0
        self.events = 0
        self.last_event = ""
        self.alert = ""  # the last warning or error; cleared when it ends (the audio back, the event log written)
        self._alert_code: str | None = None
        self._since = clock()
        self._since_windows = 0
        self._rate: float | None = None  # windows per second since the last STATUS=, once ready
        self._status_at = self._since
        self._changed = False  # an event or an alert since the last STATUS=

    def window(self, result: WindowResult) -> None:
        self.windows += 1
        if not self.ready:
            self._become_ready()

    def _become_ready(self) -> None:
        self.ready = True
        self._since, self._since_windows = self.clock(), self.windows  # the rate counts from here
        self.notifier.ready(self.line())
        log.info("ready: %s", self.line())

    def event(self, event: Event) -> None:
        clock = self.utc(event.t)[11:19]
        if event.kind == "start":
            self.events += 1
            self.last_event = f"{event.label} since {clock} UTC"
            log.info("start #%d %s at %s UTC (score %.3f)", event.event_id, event.label, clock, event.score or 0.0)
        else:
            self.last_event = f"{event.label} ended {clock} UTC"
            log.info(
                "end #%d %s at %s UTC after %.1f s (peak %.3f)",
                event.event_id,
                event.label,
                clock,
                event.duration or 0.0,
                event.peak or 0.0,
            )
        self._changed = True

    def status(self, status: Status) -> None:
        if status.level != "info":
            self.alert = f"{status.level} at {self.utc(status.t)[11:19]} UTC: {status.message}"
            self._alert_code = status.code
        elif status.code in ENDS and ENDS[status.code] == self._alert_code:  # the trouble shown is over
            self.alert, self._alert_code = "", None
        if status.level != "info" or status.code:
            self._changed = True
        if status.code == "audio_lost" and not self.ready:
            # a microphone missing at boot: the service is up and reopening it (not a start that
            # hangs), so systemd must not time the start out and restart it into the same wait
            self._become_ready()

    def heartbeat(self) -> None:
        """Called by the listen loop after every read: the watchdog, and STATUS= when an event or a
        warning came since the last one (a burst of them is one update) or every status_interval."""
        self.notifier.watchdog()
        if self._changed or self.clock() - self._status_at >= self.status_interval:
            self.push_status()

    def push_status(self) -> None:
        self._changed = False
        self._update_rate()
        self.notifier.status(self.line())

    def _update_rate(self) -> None:
        now = self.clock()
        self._status_at = now
        if self.ready and now - self._since >= 1.0:  # over a second at least: one window is not "1000 windows/s"
            self._rate = (self.windows - self._since_windows) / (now - self._since)
            self._since, self._since_windows = now, self.windows

    def line(self) -> str:
        """One line for `systemctl status`: what it does, how fast, the last event, the last alert."""
        parts = [self.doing] if self.ready else [f"starting: {self.doing}"]
        if self._rate is not None:
            parts.append(f"{self._rate:.2f} windows/s")
        parts.append(f"{self.events} events" + (f", last: {self.last_event}" if self.last_event else ""))
        if self.alert:
            parts.append(self.alert)
        return "; ".join(parts)


def describe(config: ServiceConfig, resolved: Resolved, backend: Backend) -> str:
    options = config.options
    audio = (
        f"file {options.input}"
        if options.input
        else f"microphone {options.device!r}"
        if options.device
        else "the default microphone"
    )
    labels = f"labels {resolved.label_set.name} ({len(resolved.label_set.labels)})"
    return f"{labels}, backend {backend.name}, {audio}"


LOCK_NAME = "serve.lock"
LOCK_CHECK_SECONDS = 10.0  # how often a running service checks that its lock file is still the one it holds


def _take_lock(folder: Path) -> int:
    """The locked, pid-stamped fd of <folder>/serve.lock; ConfigError when another process holds it,
    OSError when it cannot be made."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return take_lock(folder / LOCK_NAME)
    except LockHeld as held:
        raise InUseError(
            f"state folder {folder} is in use by another serve (pid {held.holder}): two would share one event log "
            "and clips folder, and their MQTT connections (one client id) would take each other's place; "
            "stop the other (systemctl stop semanticac-edge), or give this one its own --state-dir and "
            "mqtt.node_id",
            key="service.state_dir",
        ) from None


@contextlib.contextmanager
def hold_state_dir(folder: Path, reloading: threading.Event | None = None) -> Iterator[None]:
    """One service per state folder: an exclusive lock on <folder>/serve.lock (with our pid), held
    while the service runs and let go by the kernel however it ends. ConfigError when another
    process holds it. A folder that cannot be written is left to the outputs that need it. A lock
    file deleted or replaced while the service runs (the folder emptied by hand) is taken again
    within LOCK_CHECK_SECONDS, as a second serve would otherwise start on the same folder.
    `reloading` set at the end (a reload that starts again in place): the lock stays held across the
    exec (edge.fsutil.hand_on) for the new run to go on with."""
    try:
        fd = _take_lock(folder)
    except OSError as err:
        log.debug("state folder %s not locked: %s", folder, err)
        yield
        return
    done = threading.Event()
    held = [fd]
    device = [os.fstat(fd).st_dev]  # the folder's file system: another one mounted over it hides what was written
    said: list[str] = []  # the last reason the lock could not be taken again (said once, not every check)

    def keep() -> None:
        while not done.wait(LOCK_CHECK_SECONDS):
            if is_lock_of(folder / LOCK_NAME, held[0]):
                continue
            try:
                fresh = _take_lock(folder)
            except (ConfigError, OSError) as err:  # taken by a serve started meanwhile, or no folder to hold
                if said != [str(err)]:
                    said[:] = [str(err)]
                    log.error(
                        "state folder %s: its lock %s is gone and cannot be taken again: %s", folder, LOCK_NAME, err
                    )
                continue
            said.clear()
            os.close(held[0])
            held[0] = fresh
            why = mounted_over(folder, device[0])
            device[0] = os.fstat(fresh).st_dev
            log.warning("state folder %s: its lock %s was deleted or replaced: taken again%s", folder, LOCK_NAME, why)

    keeper = threading.Thread(target=keep, name="state lock", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        done.set()
        keeper.join(5)
        if reloading is not None and reloading.is_set():
            hand_on(held[0])
        else:
            os.close(held[0])  # the lock goes with it


def written_paths(config: ServiceConfig, state_dir: Path) -> dict[str, Path]:
    """What the service writes, by the key that places it: the state folder, the event log, the clips' folder."""
    written: dict[str, Path] = {"service.state_dir": state_dir}
    outputs = config.enabled_outputs()
    if "event_log" in outputs:
        written["event_log.path"] = outputs["event_log"].resolve_path(state_dir)
    if "clips" in outputs:
        written["clips.dir"] = outputs["clips"].resolve_dir(state_dir)
    return written


def unmounted_notes(config: ServiceConfig, state_dir: Path) -> list[str]:
    """A start's warning for each folder it writes (state, event log, clips) on a disk /etc/fstab names that
    is not mounted now: it would write on the disk beneath, and the disk, mounted later, would hide it."""
    mounts = read_mounts()  # once for the three
    return [
        f"{key} {path}{note}: what is written there goes to the disk beneath, hidden once that disk is mounted"
        for key, path in written_paths(config, state_dir).items()
        if (note := disk_note(path, mounts))
    ]


def serve(
    config: ServiceConfig,
    state_dir: Path,
    *,
    stop: threading.Event | None = None,
    notifier: Notifier | None = None,
    backend: Backend | None = None,
    label_texts: Mapping[str, str] | None = None,
    keep_lock: threading.Event | None = None,
) -> ListenSummary:
    """Run the listen pipeline with the config's outputs until the source ends or `stop` is set.

    `state_dir`: where the event log and clips go; `notifier`: default
    from the environment ($NOTIFY_SOCKET, $WATCHDOG_USEC); `backend`: an opened backend instead
    of the one model.backend selects (tests); `label_texts`: the label-set files as a reload checked
    them (resolve); `keep_lock` set by the end: the state folder's lock is kept for the run a reload
    starts in place (hold_state_dir). Raises before audio flows (see CONFIG_ERRORS).
    """
    for message in unmounted_notes(config, state_dir):
        log.warning("%s", message)
    with hold_state_dir(state_dir, keep_lock):
        return _serve(
            config,
            state_dir,
            stop or threading.Event(),
            notifier or Notifier.from_environ(),
            backend,
            label_texts,
            keep_lock,
        )


def _serve(
    config: ServiceConfig,
    state_dir: Path,
    stop: threading.Event,
    notifier: Notifier,
    backend: Backend | None,
    label_texts: Mapping[str, str] | None,
    keep_lock: threading.Event | None = None,
) -> ListenSummary:
    from edge.backends import select_backend
    from edge.listen import listen

    resolved = resolve(config, label_texts)
    options = config.options
    if not embeddings_ready(resolved.bundle, resolved.label_set):
        # the text tower embeds the set on the first start (EXTEND_TIMEOUT_USEC: start-up may take longer)
        notifier.extend_timeout(config.systemd.extend_timeout)
    backend = backend or select_backend(resolved.bundle, options.backend, threads=options.threads)
    reporter = ServiceSink(notifier, describe(config, resolved, backend), config.systemd.status_interval)
    outputs: list[Sink] = []
    sink: Sink | None = None
    try:
        outputs = build_outputs(config, resolved, state_dir, backend, keep_lock)
        release_handed_locks()  # a reload's locks this run did not take up: its config moved them
        recorder = next((sink for sink in outputs if isinstance(sink, ClipRecorder)), None)
        sink = FanOut([*outputs, reporter])
        for output in outputs:
            start = getattr(output, "start", None)
            if start is not None:
                start()
        notifier.status(reporter.line())
        # the recorder taps every source listen reads, a reopened microphone's too
        tap = recorder.tap if recorder is not None else None
        return listen(
            options,
            sink=sink,
            stop=stop,
            backend=backend,
            heartbeat=reporter.heartbeat,
            tap=tap,
            label_set=resolved.label_set,  # with the config's thresholds
        )
    except BaseException as err:
        backend.close()  # listen closes it once it runs; before that it is ours
        if sink is not None and isinstance(err, Exception):  # the outputs say why the service stops
            sink.status(stopping_status(sink, err))
        raise
    finally:
        notifier.stopping(f"stopping: {reporter.line()}")
        _close_all(outputs)


def stopping_status(sink: Sink, err: Exception) -> Status:
    """The status the outputs get when an error stops the service: its code by kind (an audio or
    a model failure, else `failure`), dated now (stream time from the sink's clock), not at the start."""
    code = (
        "source_error"
        if isinstance(err, AudioError)
        else "backend_error"
        if isinstance(err, BackendError)
        else "failure"
    )
    now = max(0.0, (datetime.now(timezone.utc) - sink.origin).total_seconds())
    return Status(t=now, level="error", message=f"the service stops: {err}", code=code)


def build_outputs(
    config: ServiceConfig,
    resolved: Resolved,
    state_dir: Path,
    backend: Backend,
    keep_lock: threading.Event | None = None,
) -> list[Sink]:
    """The sinks of the enabled output sections, in the order they get each record: clips first
    (the others name an event's clip), then the event log, MQTT, metrics."""
    enabled = config.enabled_outputs()
    labels = resolved.label_set.names
    sinks: list[Sink] = []
    thresholds = {label.name: label.threshold for label in resolved.label_set.labels}  # the config's in force
    try:
        clip_for = None
        recorder: ClipRecorder | None = None
        run_id = new_run_id()  # the event log's rows and MQTT's event messages name the run alike
        if "clips" in enabled:
            windowing, options = config.options.windowing(resolved.bundle), config.options
            recorder = ClipRecorder(
                enabled["clips"],
                state_dir,
                resolved.bundle.meta.frontend.sample_rate,
                trust_clock=config.service.trust_clock,
                reach=onset_reach(options, windowing),
                lag_seconds=start_lag(options, windowing),
                hold=options.hold,
            )
            sinks.append(recorder)
            clip_for = recorder.clip_for
        if "event_log" in enabled:
            effective = config.to_dict()
            label_set = resolved.label_set
            head = (resolved.bundle.meta.vocabulary or {}).get("head") or {}
            run_info = {
                "version": __version__,
                "model_id": resolved.bundle.meta.model_id,
                "label_set": label_set.name,
                "labels_sha256": label_set.sha256,
                "settings": {
                    "thresholds": thresholds,
                    "listen": effective["listen"],
                    "model": effective["model"],
                    # what else moves the scores and events (names and prompts are labels_sha256): an `agree:`
                    # or a calibration edited in the set had left two runs' rows alike
                    "agree": dict(
                        zip(label_set.names, label_set.agreement(config.options.agree, default=head.get("agree")))
                    ),
                    "calibration": {
                        "temperature": label_set.temperature,
                        "biases": {label.name: label.bias for label in label_set.labels if label.bias},
                        "new_labels": label_set.calibrated_new,
                        "fitted_model": label_set.fitted_model,
                    },
                },
            }
            sinks.append(
                EventLogSink(
                    enabled["event_log"],
                    state_dir,
                    clip_for=clip_for,
                    clips_dir=None if recorder is None else recorder.dir,
                    trust_clock=config.service.trust_clock,
                    run_info=run_info,
                    keep_lock=keep_lock,
                    run_id=run_id,
                )
            )
        mqtt: MqttSink | None = None
        if "mqtt" in enabled:
            mqtt = MqttSink(
                enabled["mqtt"],
                labels,
                node_name=f"SemanticAC {enabled['mqtt'].node_id}",
                model=resolved.bundle.meta.model_id,
                sw_version=f"semanticac-edge {__version__}",
                clip_for=clip_for,
                run_id=run_id,
                heard=config.options.heard > 0,
            )
            sinks.append(mqtt)
        if "metrics" in enabled:
            sinks.append(
                MetricsSink(
                    enabled["metrics"],
                    labels,
                    build_info={
                        "version": __version__,
                        "model_id": resolved.bundle.meta.model_id,
                        "backend": backend.name,
                        "label_set": resolved.label_set.name,
                    },
                    mqtt_connected=(lambda: mqtt.connected) if mqtt is not None else None,
                    thresholds=thresholds,
                    clips=recorder.counts if recorder is not None else None,
                    retry_seconds=RETRY_SECONDS,
                )
            )
    except BaseException:
        _close_all(sinks)
        raise
    return sinks


def _close_all(sinks: Sequence[Sink]) -> None:
    for sink in sinks:
        try:
            sink.close()
        except Exception as err:  # one output failing to close does not keep the others open
            log.warning("closing %s: %s", type(sink).__name__, err)
