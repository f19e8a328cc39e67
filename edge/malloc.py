"""One malloc arena for the process (glibc), so that a microphone reopened for months does not
grow the process.

glibc gives each new thread that allocates an arena of its own, up to 8 per core, and keeps
the memory each arena held. Every reopen of a lost microphone starts new threads (PortAudio's
callback thread, libpulse's main loop, the thread that opens it), and each left ~1.4 MiB behind
(benchmarks/reopen_memory.py: `serve` on a PulseAudio source whose daemon is killed and
restarted, RSS 179.9 -> 194.0 MiB over 10 reopens under glibc's limit of 16 arenas on 2 cores; a
12-core Jetson allows 96), against 186.2 -> 186.3 MiB with one arena in the same run. The loop
allocates little per window (ONNX Runtime keeps its own arena).

A limit set by the user (MALLOC_ARENA_MAX, or glibc.malloc.arena_max in GLIBC_TUNABLES) stands;
a C library without mallopt (musl) has no such arenas and is left alone.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # glibc's <malloc.h>
ARENAS = 1


def user_set() -> bool:
    """Whether the environment already sets glibc's arena limit."""
    return "MALLOC_ARENA_MAX" in os.environ or "glibc.malloc.arena_max" in os.environ.get("GLIBC_TUNABLES", "")


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at `arenas` for this process (call it before threads start),
    unless the environment sets a limit. Whether the cap was set."""
    if user_set():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_ARENA_MAX, arenas) == 1
