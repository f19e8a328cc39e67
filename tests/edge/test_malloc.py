"""The command caps glibc's malloc arenas (edge.malloc): counted by glibc itself (malloc_info's
heaps) in a child that runs a command, then starts threads that allocate at once, as each
reopen of a microphone does. A limit from the environment stands."""

import os
import subprocess
import sys

import pytest

# after a command: 12 threads allocate together; prints the arenas (malloc_info's <heap> entries)
CHILD = r"""
import ctypes, sys, threading
from edge.cli import main
try:
    main(["labels", "urban"])
except SystemExit as done:
    assert not done.code, done.code
ready, blocks = threading.Barrier(12), []
def work():
    ready.wait()
    blocks.append(bytearray(300_000))  # beyond pymalloc: glibc's malloc, in this thread's arena
threads = [threading.Thread(target=work) for _ in range(12)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.open_memstream.restype = ctypes.c_void_p
libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t)]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
text, size = ctypes.c_char_p(), ctypes.c_size_t()
stream = libc.open_memstream(ctypes.byref(text), ctypes.byref(size))
libc.malloc_info(0, stream)
libc.fclose(stream)
print("arenas", ctypes.string_at(text, size.value).count(b"<heap nr="), file=sys.stderr)
"""


def arenas(env: dict) -> int:
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=120)
    assert child.returncode == 0, child.stderr
    return int(child.stderr.rsplit("arenas ", 1)[1])


@pytest.fixture
def glibc():
    if not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.skip("the C library is not glibc")


def test_a_command_runs_on_one_malloc_arena(glibc):
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX" and k != "GLIBC_TUNABLES"}
    assert arenas(env) == 1


def test_an_arena_limit_from_the_environment_stands(glibc):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    assert arenas({**env, "MALLOC_ARENA_MAX": "4"}) == 4
