"""Whether the system clock can be trusted for dates that decide what is deleted.

A box without a real-time clock (most Jetsons and Raspberry Pis) starts with the time of its
last shutdown, or 1970, and a dying RTC battery can start it years ahead; NTP (or chrony,
systemd-timesyncd) steps it right later. Until then the kernel marks the clock unsynchronised
(adjtimex's STA_UNSYNC), which is what `timedatectl` reports as "System clock synchronized".
"""

from __future__ import annotations

import ctypes
import sys

TIME_ERROR = 5  # adjtimex's return for a clock not synchronised
TIMEX_BYTES = 512  # more than struct timex on any Linux ABI (208 on 64-bit); modes 0: read only


def clock_synchronised() -> bool | None:
    """True when the kernel says the system clock is synchronised, False when it says it is
    not, None where it cannot say (not Linux, or adjtimex unavailable)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    timex = ctypes.create_string_buffer(TIMEX_BYTES)  # zeroed: `modes` 0 reads and sets nothing
    state = adjtimex(timex)
    if state < 0:
        return None
    return state != TIME_ERROR
