"""The service config: one YAML file -> `ServiceConfig`, every key checked.

    schema_version: 1
    audio:       input, device, fast                       } edge.listen.ListenOptions: the
    model:       bundle, backend, threads, max_batch       } defaults and value checks live
    labels:      set, thresholds                           } there; an error names the key
    listen:      window, hop, top_k, smooth, ...           } here (`listen.hop`)
    supervision: the device-supervision options of ListenOptions
    service:     state_dir, log_level, trust_clock
    systemd:     status_interval, extend_timeout
    mqtt, metrics, event_log, clips: the outputs' own sections (edge.outputs.*)

configs/edge/service.yaml (installed as edge.configs) documents every key. `--set
section.key=value` overrides a key before the file is checked (the value is YAML). A
ConfigError names the dotted key, the value, what is allowed and the fix; `serve` and
`check-config` exit 78 (EX_CONFIG) on it, so systemd does not restart into the same mistake.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from edge.errors import ConfigError, OptionError
from edge.fsutil import looked_at
from edge.listen import ListenOptions
from edge.outputs.clips import ClipsConfig
from edge.outputs.eventlog import EventLogConfig
from edge.outputs.metrics import MetricsConfig
from edge.outputs.mqtt import MqttConfig
from edge.schema import unbuildable_error, undecodable, yaml_error
from edge.service.sections import invalid, parse_section

SCHEMA_VERSION = 1
EX_CONFIG = 78  # sysexits.h: a configuration error (RestartPreventExitStatus=78 in the unit)
# listen.hold where the config leaves it out: a service's events are notifications, one per episode of a
# sound (an air conditioner's score dipping, a dog barking on and off: 120-167 events an hour without it,
# 1-12 with it, on real clips); `listen` itself holds none (0), each return its own event (Frigate's audio
# events end after 30 s unheard too)
SERVICE_HOLD = 30.0
EXAMPLE = "service.yaml"  # configs/edge/: the commented example, every key
LOG_LEVELS = ("debug", "info", "warning", "error")

# Which ListenOptions field each key of the pipeline's sections sets (config key -> field).
OPTION_SECTIONS: dict[str, dict[str, str]] = {
    "audio": {"input": "input", "device": "device", "fast": "fast"},
    "model": {"bundle": "bundle", "backend": "backend", "threads": "threads", "max_batch": "max_batch"},
    "listen": {
        name: name
        for name in (
            "window",
            "hop",
            "top_k",
            "heard",
            "smooth",
            "min_duration",
            "release",
            "hold",
            "min_level",
            "agree",
        )
    },
}
# Fields a service does not use: the label set is labels.set; stdin and terminal output are for a shell.
NOT_IN_SERVICE = ("labels", "json", "rate", "sample_format", "channels")


def supervision_fields() -> dict[str, str]:
    """Every other ListenOptions field is a key of `supervision` (device supervision: reconnect, ...)."""
    taken = {f for keys in OPTION_SECTIONS.values() for f in keys.values()} | set(NOT_IN_SERVICE)
    return {f.name: f.name for f in dataclasses.fields(ListenOptions) if f.init and f.name not in taken}


def option_keys() -> dict[str, str]:
    """ListenOptions field -> its dotted key in the config (for errors)."""
    sections = {**OPTION_SECTIONS, "supervision": supervision_fields()}
    keys = {fld: f"{section}.{key}" for section, mapping in sections.items() for key, fld in mapping.items()}
    return {**keys, "labels": "labels.set"}


def _options_section(section: str, keys: Mapping[str, str]) -> type:
    """A frozen dataclass of `keys`, each typed and defaulted as its ListenOptions field."""
    hints = typing.get_type_hints(ListenOptions)
    defaults = {f.name: f.default for f in dataclasses.fields(ListenOptions)}
    return dataclasses.make_dataclass(
        f"{section.capitalize()}Section",
        [(key, hints[fld], field(default=defaults[fld])) for key, fld in keys.items()],
        frozen=True,
    )


@dataclass(frozen=True)
class LabelsSection:
    set: str | None = None  # a shipped set (urban, esc50) or a label-set YAML path; required
    thresholds: dict[str, float] = field(default_factory=dict)  # label -> threshold, over the set's own

    def __post_init__(self):
        if self.set is None or not self.set.strip():
            raise invalid("set", self.set, "a shipped label set (urban, esc50) or the path of a label-set YAML")
        for name, value in self.thresholds.items():
            if not 0.0 < value <= 1.0:
                raise invalid(f"thresholds.{name}", value, "a score in (0, 1]: the smoothed score that starts an event")


@dataclass(frozen=True)
class ServiceSection:
    state_dir: str | None = None  # event log, clips; $STATE_DIRECTORY (systemd) wins; None: ~/.local/state
    log_level: str = "info"  # info: every event start/end and status line; debug: more
    trust_clock: bool = False  # remove by age (event log, clips) while the kernel says the clock is unsynchronised

    def __post_init__(self):
        if self.log_level not in LOG_LEVELS:
            raise invalid("log_level", self.log_level, f"one of {', '.join(LOG_LEVELS)}")
        if self.state_dir is not None and not self.state_dir.strip():
            raise invalid("state_dir", self.state_dir, "a folder path, or leave the key out")


@dataclass(frozen=True)
class SystemdSection:
    status_interval: float = 5.0  # seconds between STATUS= updates (events and warnings go at once)
    extend_timeout: float = 900.0  # seconds of start-up asked for while a new label set is embedded

    def __post_init__(self):
        if not self.status_interval > 0:
            raise invalid("status_interval", self.status_interval, "a number of seconds > 0")
        if not self.extend_timeout > 0:
            raise invalid("extend_timeout", self.extend_timeout, "a number of seconds > 0")


# The outputs' sections: each config class has `enabled`; serve builds the sink of an enabled one only.
OUTPUTS: dict[str, type] = {
    "mqtt": MqttConfig,
    "metrics": MetricsConfig,
    "event_log": EventLogConfig,
    "clips": ClipsConfig,
}


def section_keys(section: str) -> list[str]:
    """The keys a section of the config takes (for "did you mean" when one is written unindented)."""
    sections: dict[str, Any] = {**OPTION_SECTIONS, "supervision": supervision_fields()}
    if section in sections:
        return list(sections[section])
    typed = {"labels": LabelsSection, "service": ServiceSection, "systemd": SystemdSection, **OUTPUTS}.get(section)
    return [f.name for f in dataclasses.fields(typed)] if typed is not None else []


@dataclass(frozen=True)
class ServiceConfig:
    options: ListenOptions  # audio, model, labels.set, listen, supervision
    thresholds: dict[str, float]  # labels.thresholds
    service: ServiceSection
    systemd: SystemdSection
    outputs: dict[str, Any]  # section -> its config (MqttConfig, ...), every output section
    source: str = "<memory>"

    def enabled_outputs(self) -> dict[str, Any]:
        return {name: cfg for name, cfg in self.outputs.items() if getattr(cfg, "enabled", False)}

    def to_dict(self) -> dict[str, Any]:
        """The effective config: every key with the value in force (the file's, else the default)."""
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for section, keys in {**OPTION_SECTIONS, "supervision": supervision_fields()}.items():
            if section == "listen":
                out["labels"] = {"set": self.options.labels, "thresholds": dict(self.thresholds)}
            out[section] = {key: getattr(self.options, fld) for key, fld in keys.items()}
        out["service"] = dataclasses.asdict(self.service)
        out["systemd"] = dataclasses.asdict(self.systemd)
        for name, cfg in self.outputs.items():
            out[name] = dataclasses.asdict(cfg)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False, allow_unicode=True)


def parse_config(raw: Any, source: str = "<memory>") -> ServiceConfig:
    """Check a parsed YAML document and build the config; ConfigError names the first bad key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{source}: a service config is a mapping of sections (schema_version, audio, model, labels, ...), "
            f"{'but it is empty (or only comments)' if raw is None else 'not ' + type(raw).__name__}: start from "
            f"the example {example_path()}"
        )
    known = ["schema_version", *OPTION_SECTIONS, "labels", "supervision", "service", "systemd", *OUTPUTS]
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            owners = [section for section in known if key in section_keys(section)]
            fix = (
                f"did you mean {' or '.join(f'`{owner}.{key}`' for owner in owners)}? (indent it under its section)"
                if owners
                else f"did you mean `{close[0]}`?"
                if close
                else f"the sections are: {', '.join(known)}"
            )
            raise ConfigError(f"{key} is not a section of the service config: {fix}", key=str(key))
    for section, mapping in raw.items():  # a key under the wrong section: name its own (parse_section names typos)
        if not isinstance(mapping, Mapping) or section == "schema_version":
            continue
        own = section_keys(section)
        for key in mapping:
            owners = [other for other in known if other != section and key not in own and key in section_keys(other)]
            if owners:
                raise ConfigError(
                    f"{section}.{key} is not a setting of {section}: it is "
                    f"{' or '.join(f'`{owner}.{key}`' for owner in owners)} (move it under "
                    + ("that section)" if len(owners) == 1 else "its section)"),
                    key=f"{section}.{key}",
                )
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION or type(version) is not int:  # true == 1 and 1.0 == 1 in Python
        shown = "missing" if version is None else repr(version)
        raise ConfigError(
            f"schema_version {shown} is not allowed: use {SCHEMA_VERSION} (this semanticac-edge reads "
            f"version {SCHEMA_VERSION}; see {example_path()})",
            key="schema_version",
        )
    fields_of = {**OPTION_SECTIONS, "supervision": supervision_fields()}
    values: dict[str, Any] = {}
    for section, keys in fields_of.items():
        if section == "audio":
            _check_audio(raw.get(section))
        parsed: Any = parse_section(_options_section(section, keys), raw.get(section), section)
        values.update({fld: getattr(parsed, key) for key, fld in keys.items()})
    for path in ("input", "bundle"):  # ~ as in labels.set, event_log.path, clips.dir, state_dir
        if isinstance(values.get(path), str):
            values[path] = os.path.expanduser(values[path])
    supervision = raw.get("supervision")
    if (
        "reconnect" in values
        and values["input"] is None
        and not (isinstance(supervision, Mapping) and "reconnect" in supervision)
    ):
        values["reconnect"] = True  # a service reopens a lost microphone (a shell's `listen` fails instead)
    listen = raw.get("listen")
    if not (isinstance(listen, Mapping) and "hold" in listen):
        values["hold"] = SERVICE_HOLD  # one event (one notification) per episode, not per bark
    labels = parse_section(LabelsSection, raw.get("labels"), "labels")
    options = listen_options(labels.set or "", values)
    return ServiceConfig(
        options=options,
        thresholds=dict(labels.thresholds),
        service=parse_section(ServiceSection, raw.get("service"), "service"),
        systemd=parse_section(SystemdSection, raw.get("systemd"), "systemd"),
        outputs={name: parse_section(cls, raw.get(name), name) for name, cls in OUTPUTS.items()},
        source=source,
    )


def _check_audio(section: Any) -> None:
    """A service names its microphone, never by index alone (indices move when devices come and
    go), and reads a microphone or a file, not stdin."""
    if not isinstance(section, Mapping):
        return  # parse_section says what is wrong with it
    device = section.get("device")
    if isinstance(device, bool) or (isinstance(device, str) and not device.strip()):  # "" names every device
        raise ConfigError(
            f"audio.device {device!r} is not allowed: use (part of) the microphone's name as `semanticac-edge "
            'devices` lists it, e.g. device: "USB Audio", or leave the key out for the default device',
            key="audio.device",
        )
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        raise ConfigError(
            f"audio.device {device!r} is an index, and indices change when devices are plugged in or "
            "the machine restarts: use (part of) the device's name as `semanticac-edge devices` lists it, "
            'e.g. device: "USB Audio"',
            key="audio.device",
        )
    if section.get("input") == "-":
        raise ConfigError(
            "audio.input '-' (stdin) is not allowed in a service: leave it out for a microphone, or give an audio file",
            key="audio.input",
        )
    if section.get("input") is not None and device is not None:
        raise ConfigError(
            f"audio.device {device!r} names a microphone, but audio.input {section['input']!r} is a file: "
            "leave one of them out",
            key="audio.device",
        )


def listen_options(labels: str, values: Mapping[str, Any]) -> ListenOptions:
    """ListenOptions from the config's values; its OptionError becomes a ConfigError naming the key."""
    try:
        return ListenOptions(labels=labels, **values)
    except OptionError as err:
        keys = option_keys()

        def as_key(flag: re.Match) -> str:  # --hop -> listen.hop: the message speaks the config's language
            return keys.get(flag.group(1).replace("-", "_"), flag.group(0))

        key = keys.get(err.option, err.option)
        raise ConfigError(re.sub(r"--([a-z][a-z-]*)", as_key, str(err)), key=key) from None


def apply_overrides(raw: Any, overrides: Sequence[str]) -> Any:
    """`--set section.key=value` (value in YAML) over the parsed file; a copy, the input is kept."""
    if not overrides:
        return raw
    doc: dict[str, Any] = _copy(raw) if isinstance(raw, Mapping) else {}
    for item in overrides:
        path, sep, text = item.partition("=")
        keys = path.strip().split(".")
        if keys[:2] == ["labels", "thresholds"] and len(keys) > 3:  # a label's name may hold a dot
            keys = [*keys[:2], ".".join(keys[2:])]
        if not sep or not all(keys):
            raise ConfigError(
                f"--set {item!r} is not allowed: use --set section.key=value, e.g. --set listen.hop=0.5",
                key=path.strip(),
            )
        try:
            value = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError) as err:  # ValueError: a date that is none (2026-02-30)
            raise ConfigError(
                f"--set {item!r}: the value {text!r} is not valid YAML ({getattr(err, 'problem', err)}): quote a text",
                key=path,
            ) from None
        node = doc
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigError(f"--set {item!r}: {where} is {child!r}, not a section with keys", key=where)
            node = child
        node[keys[-1]] = value
    return doc


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    return value


def config_text(path: str | Path) -> str:
    """A config file's text; ConfigError when it is missing, a folder or not UTF-8."""
    path = Path(path)
    try:
        data = path.read_bytes()
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"cannot read config file {path}: {undecodable(err, data)}") from None
    except IsADirectoryError:
        inside = sorted(p.name for p in path.glob("*.yaml"))
        raise ConfigError(
            f"config file {path} is a folder: name the config file itself, "
            + (
                f"e.g. {path / inside[0]}"
                if inside
                else f"e.g. {path / EXAMPLE} (write one with `semanticac-edge install-service`)"
            )
        ) from None
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found{looked_at(path)}: write one with `semanticac-edge install-service`, or copy "
            f"the commented example {example_path()}"
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None


def read_config_file(path: str | Path, text: str | None = None) -> Any:
    """The YAML document of a config file (`text`: its text as read before, else read now);
    ConfigError when it is missing or not YAML."""
    path = Path(path)
    if text is None:
        text = config_text(path)
    try:
        twice = _repeated_key(yaml.compose(text, Loader=yaml.SafeLoader))
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error(err, str(path), text)) from None
    except ValueError as err:  # a value the safe loader cannot build: a date that is none (2026-02-30)
        raise ConfigError(unbuildable_error(err, str(path), text)) from None
    if twice is not None:  # YAML keeps the last one: the first would be silently ignored
        key, first, again = twice
        raise ConfigError(
            f"{path}:{again}: {key} appears twice (lines {first} and {again}): only the last would count; "
            "keep one (the example already has every key: edit it in place)",
            key=key,
        )
    return document


def _repeated_key(node: yaml.Node | None, prefix: str = "") -> tuple[str, int, int] | None:
    """The first mapping key that appears twice in a composed YAML document: (dotted key, first
    line, second line), else None."""
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key, value in node.value:
            name = f"{prefix}{key.value}"
            if name in lines:
                return name, lines[name], key.start_mark.line + 1
            lines[name] = key.start_mark.line + 1
            found = _repeated_key(value, f"{name}.")
            if found is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _repeated_key(item, f"{prefix.rstrip('.')}[{i}].")
            if found is not None:
                return found
    return None


def load_config(path: str | Path, overrides: Sequence[str] = (), text: str | None = None) -> ServiceConfig:
    """Read (`text`: the file's text as read before), override (`--set`), check: the config `serve` runs with."""
    raw = apply_overrides(read_config_file(path, text), overrides)
    return parse_config(raw, source=str(path))


def example_path() -> Path:
    """The commented example config installed with the package (configs/edge/service.yaml)."""
    return Path(str(resources.files("edge.configs") / "edge" / EXAMPLE))


def example_text() -> str:
    return example_path().read_text(encoding="utf-8")


def state_dir(config: ServiceConfig, override: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """Where state goes: $STATE_DIRECTORY (systemd's StateDirectory=), else `override` (--state-dir),
    else service.state_dir, else $XDG_STATE_HOME/semanticac-edge (~/.local/state/semanticac-edge)."""
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if override or config.service.state_dir:
        return Path(override or config.service.state_dir or "").expanduser()
    root = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(root) / "semanticac-edge"
