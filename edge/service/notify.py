"""The systemd notify protocol (sd_notify(3)), written out: one datagram per message.

    READY=1                  start-up is done (serve: audio flows and the model answered)
    STATUS=...               one line saying what the service does now
    WATCHDOG=1               the main loop is alive (WatchdogSec=; see `watchdog`)
    EXTEND_TIMEOUT_USEC=N    start-up needs N more microseconds (a label set being embedded)
    STOPPING=1               shutdown has begun
    RELOADING=1              a reload has begun (serve on SIGHUP); READY=1 ends it

Each message is `KEY=VALUE` lines in one AF_UNIX datagram to $NOTIFY_SOCKET: a path, or an
abstract socket written with a leading '@' (a NUL byte on the wire). Without $NOTIFY_SOCKET
(not started by systemd, or NotifyAccess=none) every call does nothing.

The watchdog is on when $WATCHDOG_USEC is set and $WATCHDOG_PID, when set, is this process.
`watchdog()` is cheap to call often: it sends a ping only when a quarter of the period has
passed since the last one, so systemd sees about four pings per WatchdogSec (it needs one),
and a loop that stalls for the whole period stops them.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

PINGS_PER_PERIOD = 4  # systemd asks for a ping at least every period; sd_watchdog_enabled(3) suggests every half


def _address(spec: str) -> str | bytes:
    """$NOTIFY_SOCKET as a socket address: '@name' is the abstract socket '\\0name'."""
    return b"\0" + spec[1:].encode() if spec.startswith("@") else spec


class Notifier:
    """Messages to the service manager; a no-op when `socket_path` is None."""

    def __init__(
        self,
        socket_path: str | None = None,
        watchdog_usec: int | None = None,
        clock=time.monotonic,
    ):
        if socket_path is not None and not socket_path.startswith(("/", "@")):
            # systemd 254+ also knows vsock: addresses, which this host cannot reach over AF_UNIX
            log.warning("NOTIFY_SOCKET %r is neither a path nor @abstract: systemd notifications are off", socket_path)
            socket_path = None
        self.socket_path = socket_path
        self.watchdog_usec = watchdog_usec if socket_path is not None else None
        self._clock = clock
        self._last_ping: float | None = None
        self._warned = False
        self._reloading = False  # RELOADING=1 sent: the process starts again in place, it does not stop

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """What systemd passes: $NOTIFY_SOCKET, $WATCHDOG_USEC, $WATCHDOG_PID (sd_watchdog_enabled)."""
        env = os.environ if environ is None else environ
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC", "")
        if raw:
            pid = env.get("WATCHDOG_PID", "")
            if not raw.isdigit() or int(raw) == 0:
                log.warning("WATCHDOG_USEC %r is not a positive whole number: the watchdog is off", raw)
            elif pid and pid != str(os.getpid()):
                log.debug("WATCHDOG_PID %s is another process (this is %d): no watchdog pings", pid, os.getpid())
            else:
                usec = int(raw)
        return cls(env.get("NOTIFY_SOCKET") or None, usec)

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings, or None when systemd runs no watchdog for this process."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 1e6 / PINGS_PER_PERIOD

    def send(self, **fields: str | int) -> bool:
        """One datagram `KEY=VALUE\\n...`; True when it was sent. A failure is logged once, never raised:
        the service keeps running when the manager cannot be told (it restarts on a missed watchdog)."""
        if self.socket_path is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, _address(self.socket_path))
        except OSError as err:
            if not self._warned:
                log.warning("cannot notify systemd at %s: %s", self.socket_path, err)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        """READY=1; with the watchdog on, its period too (WATCHDOG_USEC=: what a reload lengthened)."""
        period = {"WATCHDOG_USEC": self.watchdog_usec} if self.watchdog_usec is not None else {}
        return self.send(READY=1, STATUS=_one_line(status), **period)

    def status(self, status: str) -> bool:
        return self.send(STATUS=_one_line(status))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more of start-up (or shutdown) time, counted from now."""
        return self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1e6))

    def stopping(self, status: str | None = None, *, after_reloading: bool = False) -> bool:
        """STOPPING=1; nothing after reloading() (the run ends to start again in place), unless
        `after_reloading` (a stop asked for during the reload won)."""
        if self._reloading and not after_reloading:
            return False
        return self.send(STOPPING=1, **({"STATUS": _one_line(status)} if status else {}))

    def reloading(self, status: str, start_seconds: float | None = None) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (what Type=notify-reload asks for): READY=1 ends it.
        `start_seconds`: with the watchdog on, its period becomes that long (WATCHDOG_USEC=) until
        READY=1 sets it back: the new run starts (and may embed a label set) before it pings."""
        self._reloading = True
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        longer = (  # never shorter than it is
            {"WATCHDOG_USEC": max(self.watchdog_usec, round(start_seconds * 1e6))}
            if start_seconds is not None and self.watchdog_usec is not None
            else {}
        )
        return self.send(RELOADING=1, MONOTONIC_USEC=usec, STATUS=_one_line(status), **longer)

    def watchdog(self) -> bool:
        """Ping the watchdog when a quarter of its period has passed since the last ping."""
        interval = self.watchdog_interval
        if interval is None:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < interval:
            return False
        self._last_ping = now
        return self.send(WATCHDOG=1)


def _one_line(text: str) -> str:
    return " ".join(text.split())
