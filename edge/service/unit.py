"""`semanticac-edge install-service`: the systemd unit (and a first config) for `serve`.

The unit runs `semanticac-edge serve --config PATH` as a notify service with a watchdog,
under a dynamic user (no account to create) in the groups that own the sound devices
(audio) and, on a Jetson, the GPU (video: /dev/nvmap, /dev/nvhost-*, /dev/nvgpu/*), with
the file system read-only except its state, cache and config folders. `systemd-analyze
security` scores it 1.7 "OK" (of 10; the tests hold it at or below 4.0).

What is deliberately left out, and why:
- PrivateDevices=: it hides /dev/snd and the GPU. Device access follows the groups above
  instead of a DevicePolicy= list, as a Jetson's GPU device nodes differ between L4T releases.
- PrivateUsers=: the audio and video groups would not be mapped into the service.
- ProcSubset=pid: the runtimes read /proc/cpuinfo and /proc/meminfo. @resources stays in the
  system-call filter: runtimes set thread affinity and priorities.
- MemoryDenyWriteExecute=: ONNX Runtime runs under it (checked: both graphs run with
  write+execute mappings refused), but PortAudio's callback does not: sounddevice makes it
  with cffi's ffi.callback(), which needs write+execute memory (MemoryError otherwise).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from edge import __version__
from edge.errors import ConfigError
from edge.fsutil import atomic_write_bytes, atomic_write_text
from edge.service.sections import NAME

UNIT_PATH = f"/etc/systemd/system/{NAME}.service"
CONFIG_PATH = f"/etc/{NAME}/service.yaml"  # ConfigurationDirectory= of the unit
WATCHDOG_SEC = 30  # a loop that does not turn for this long is restarted (pings come every few hundred ms)
START_TIMEOUT_SEC = 180  # bundle, backend, first window; serve extends it while a new label set is embedded


JETSON_GPU = ("/dev/nvmap", "/dev/nvhost-*", "/dev/nvgpu")  # a Jetson's GPU devices, of group video


def has_jetson_gpu(dev: str = "") -> bool:
    """Whether this machine has a Jetson's GPU devices (under `dev`, a root for tests): the unit's user
    needs group video for them; elsewhere that group only gives it the webcams (/dev/video*)."""
    return any(glob.glob(dev + pattern) for pattern in JETSON_GPU)


def default_exec() -> Path | None:
    """`semanticac-edge` beside the running interpreter (its venv's bin/), else the one on PATH."""
    beside = Path(sys.executable).parent / NAME  # not resolved: a venv's python is a symlink
    if beside.is_file():
        return beside
    found = shutil.which(NAME)
    return Path(found) if found else None


@dataclass(frozen=True)
class UnitSettings:
    exec_path: str  # the semanticac-edge executable (of the venv that has the package)
    config_path: str = CONFIG_PATH
    watchdog_sec: int = WATCHDOG_SEC
    start_timeout_sec: int = START_TIMEOUT_SEC
    gpu_group: bool = dataclasses.field(default_factory=has_jetson_gpu)  # group video, for the GPU

    def __post_init__(self):
        for name in ("exec_path", "config_path"):
            if not Path(getattr(self, name)).is_absolute():
                raise ConfigError(f"{name} {getattr(self, name)!r} must be an absolute path", key=name)
            try:  # a unit file is UTF-8: a name from an old Windows or FAT copy was a traceback
                getattr(self, name).encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(
                    f"{name} {os.fsencode(getattr(self, name))!r} is not UTF-8, which a unit file cannot carry: "
                    "rename the path",
                    key=name,
                ) from None
            if any(ord(c) < 32 or ord(c) == 127 for c in getattr(self, name)):  # a newline split the unit's lines
                raise ConfigError(
                    f"{name} {getattr(self, name)!r} holds a control character (a newline, a tab), which a unit "
                    "file cannot carry: rename the path",
                    key=name,
                )
        if set(self.exec_path) & {"'", '"', "\\"}:  # systemd: "Executable name contains special characters"
            raise ConfigError(
                f"exec_path {self.exec_path!r}: systemd does not run a program whose path holds a quote or a "
                "backslash: put the venv in a folder named without them (e.g. /opt/semanticac-edge)",
                key="exec_path",
            )
        if self.watchdog_sec < 1 or self.start_timeout_sec < 1:
            raise ConfigError("watchdog and start timeouts must be whole seconds >= 1")

    @property
    def reads_home(self) -> bool:
        """The executable or the config lives under /home or /root: ProtectHome must let it be read."""
        return any(
            Path(p).is_relative_to(home) for p in (self.exec_path, self.config_path) for home in ("/home", "/root")
        )


def systemd_word(text: str, command: bool = False) -> str:
    """`text` as one word of an ExecStart= line: quoted, with systemd's specifiers (`%n`, `%i`) doubled
    so that the path stays the path (`/opt/venv%n` was the unit's name), and in an argument (not the
    `command` itself, which systemd does not expand) its variables (`$X`) too. systemd decodes C escapes,
    quoted or not (`\\x41` is A): a backslash is doubled; a word with a quote is double-quoted, as systemd
    reads no `'"'"'`."""
    text = text.replace("%", "%%")
    text = (text if command else text.replace("$", "$$")).replace("\\", "\\\\")
    if "'" in text:
        return '"' + text.replace('"', '\\"') + '"'
    return shlex.quote(text)


def render_unit(settings: UnitSettings) -> str:
    """The unit file's text."""
    exec_start = " ".join(
        [systemd_word(settings.exec_path, command=True)]
        + [systemd_word(part) for part in ("serve", "--config", settings.config_path)]
    )
    # systemd reads no comment after a value ("read-only  # ..." was refused, the setting ignored)
    protect_home = (
        "# the venv or config is under /home: readable, never writable\nProtectHome=read-only"
        if settings.reads_home
        else "ProtectHome=yes"
    )
    groups, groups_note = (
        ("audio video", "; video: the GPU (on a Jetson /dev/nvmap,\n# /dev/nvhost-* and /dev/nvgpu/* belong to it).")
        if settings.gpu_group
        else ("audio", ". No video: this machine has no Jetson GPU, and the\n# group would only give it the cameras.")
    )
    return f"""\
# Written by `{NAME} install-service` ({NAME} {__version__}): run it again to regenerate.
# The service's settings are in {settings.config_path} (`{NAME} check-config` checks it).
[Unit]
Description=SemanticAC sound-event classifier ({NAME} serve)
After=network-online.target sound.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
# `systemctl reload`: serve checks the config again and, when it checks out, starts again in place
ExecReload=/bin/kill -HUP $MAINPID
# READY=1 comes after the first window is scored; serve asks for more (EXTEND_TIMEOUT_USEC)
# while it embeds a new label set. Build a TensorRT engine beforehand (`{NAME} build-engine`).
TimeoutStartSec={settings.start_timeout_sec}
TimeoutStopSec=30
WatchdogSec={settings.watchdog_sec}
Restart=on-failure
RestartSec=5
# 78 (EX_CONFIG): a bad config, bundle or label set; a restart would fail the same way
RestartPreventExitStatus=78
Environment=PYTHONUNBUFFERED=1
# Secrets stay root-only (chmod 600): systemd (247+) hands the service a copy, here at
# /run/credentials/{NAME}.service/mqtt-password (mqtt.password_file); a client key the same way.
#LoadCredential=mqtt-password:/etc/{NAME}/mqtt.pass
# label embeddings and TensorRT engines computed here go to %C/{NAME}/<model_id>/ (CacheDirectory=)
Environment=XDG_CACHE_HOME=%C

# A user made up for the service; audio: /dev/snd{groups_note}
DynamicUser=yes
SupplementaryGroups={groups}
StateDirectory={NAME}
CacheDirectory={NAME}
ConfigurationDirectory={NAME}
UMask=0077

# Hardening (`systemd-analyze security {NAME}`). Left out: PrivateDevices= (it hides
# /dev/snd and the GPU), PrivateUsers= (the audio and video groups would not map),
# MemoryDenyWriteExecute= (PortAudio's callback, made with cffi, needs write+execute memory;
# ONNX Runtime itself runs under it), ProcSubset=pid (/proc/cpuinfo and /proc/meminfo are
# read by the runtimes), @resources in the syscall filter (thread affinity and priorities),
# ProtectClock= (its filter refuses adjtimex even to read whether the clock is synchronised,
# which the event log asks before it removes rows by age; without CAP_SYS_TIME nothing here can
# set the clock).
ProtectSystem=strict
{protect_home}
PrivateTmp=yes
PrivateMounts=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
ProtectHostname=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
RemoveIPC=yes
KeyringMode=private
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @mount @swap @reboot @obsolete @debug @cpu-emulation
# after the line above, which takes @clock away with @privileged: reading whether the clock is
# synchronised (adjtimex with no change, which glibc 2.32+ makes as clock_adjtime; without
# CAP_SYS_TIME neither can change anything)
SystemCallFilter=adjtimex clock_adjtime clock_adjtime64
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class Installed:
    unit_path: Path
    config_path: Path
    config_written: bool  # False: an existing config was kept (no --force)
    backup: Path | None = None  # where --force kept the config it replaced (one that was not the example)


def install_service(settings: UnitSettings, unit_path: str | Path = UNIT_PATH, force: bool = False) -> Installed:
    """Write the unit (always: it is generated; local changes go in a drop-in, `systemctl edit`)
    and the commented example config, unless a config is there already and `force` is False."""
    exec_path = Path(settings.exec_path)
    if not exec_path.is_file():
        raise ConfigError(
            f"ExecStart {exec_path} does not exist: pass --exec with the semanticac-edge of the venv that has "
            "the package (e.g. /opt/semanticac/venv/bin/semanticac-edge)",
            key="exec",
        )
    from edge.service.config import example_text  # the outputs' modules: only when writing

    unit_path, config_path = Path(unit_path), Path(settings.config_path)
    try:
        atomic_write_text(unit_path, render_unit(settings))
        write_config, backup = force or not config_path.exists(), None
        if write_config:
            example = example_text()
            with contextlib.suppress(FileNotFoundError):
                old = config_path.read_bytes()
                if old != example.encode("utf-8"):  # a config someone edited: kept beside, as private
                    backup = config_path.with_name(config_path.name + ".bak")
                    atomic_write_bytes(backup, old, like=config_path)
            atomic_write_text(config_path, example)
    except OSError as err:
        raise ConfigError(
            f"cannot write {err.filename or unit_path}: {err.strerror or err}; run it as root (sudo), "
            "or choose other paths with --unit and --config",
        ) from None
    return Installed(unit_path, config_path, write_config, backup)
