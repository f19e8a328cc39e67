"""Whether the system clock can be trusted for dates that decide what is deleted.

A box without a real-time clock (most Jetsons and Raspberry Pis) starts with the time of its
last shutdown, or 1970, and a dying RTC battery can start it years ahead; NTP (or chrony,
systemd-timesyncd) steps it right later. Until then the kernel marks the clock unsynchronised
(adjtimex's STA_UNSYNC), which is what `timedatectl` reports as "System clock synchronized".
"""

from __future__ import annotations

import ctypes
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

# a date before this was read on a clock not yet set (1970 after a boot without a clock battery): what
# was dated so is never removed by age, which it does not have (a run restarted before NTP set the
# clock is not dated again with it, as the running one is)
UNSET_BEFORE = datetime(2020, 1, 1, tzinfo=timezone.utc)
TIME_ERROR = 5  # adjtimex's return for a clock not synchronised
TIMEX_BYTES = 512  # more than struct timex on any Linux ABI (208 on 64-bit); modes 0: read only
# systemd-timesyncd makes the folder when it starts and the file once it has synchronised the clock
TIMESYNCD = Path("/run/systemd/timesync")


def since_boot() -> float:
    """Seconds since boot, counting a suspend (CLOCK_BOOTTIME: the wall clock moves on through one,
    the monotonic clock does not, and a resume must not read as a step of the wall clock, nor an
    outage through one as shorter than it was)."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


def clock_synchronised() -> bool | None:
    """True when the kernel says the system clock is synchronised, False when it says it is
    not, None where nothing can say (not Linux). Where a seccomp filter refuses adjtimex even to
    read (systemd's ProtectClock=, or a SystemCallFilter= without it), systemd-timesyncd's
    files answer if it runs."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        state = ctypes.CDLL(None, use_errno=True).adjtimex(ctypes.create_string_buffer(TIMEX_BYTES))
    except (OSError, AttributeError):
        state = -1
    if state >= 0:  # a zeroed struct timex: `modes` 0 reads and sets nothing
        return state != TIME_ERROR
    if TIMESYNCD.is_dir():
        return (TIMESYNCD / "synchronized").exists()
    return None


def dates_trusted(trust_clock: bool = False) -> bool:
    """Whether what is removed by age may be read on the system clock now: unless the kernel says
    it is not synchronised, or `trust_clock` (service.trust_clock: a good RTC without NTP)."""
    return trust_clock or clock_synchronised() is not False


def age_note(days: float, things: str, beyond: str, trust_clock: bool = False) -> str | None:
    """What an output says once about removing its `things` older than `days` by age where the clock is not
    known to be right (None where it is, or where no kernel can say: not Linux): that it waits for the clock
    to be synchronised (the kernel says it is not), or that it goes by the clock as it reads (nothing says).
    `beyond`: what still removes them meanwhile (their count, their size)."""
    synchronised = True if trust_clock else clock_synchronised()
    if synchronised is True or not sys.platform.startswith("linux"):
        return None
    if synchronised is None:
        return (
            "nothing says whether the system clock is synchronised (adjtimex refused, no systemd-timesyncd): "
            f"{things} older than {days:g} days are removed as the clock reads"
        )
    return (
        f"removing {things} older than {days:g} days waits for the system clock to be synchronised (the kernel "
        "says it is not; NTP, chrony or systemd-timesyncd sets it): a clock that starts wrong would date every "
        f"one as too old. {beyond} still go; a box whose clock is right without NTP: service.trust_clock: true"
    )
