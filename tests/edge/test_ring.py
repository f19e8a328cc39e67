"""RingBuffer: order kept across wrap-around, overflow drops the oldest and counts it, no
allocation on write, and one producer thread plus one consumer thread lose nothing."""

import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest

from edge.capture.ring import RingBuffer


def ramp(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)


def test_wrap_around_keeps_order():
    ring = RingBuffer(10)
    ring.write(ramp(0, 7))
    np.testing.assert_array_equal(ring.read(5)[:, 0], ramp(0, 5))
    ring.write(ramp(7, 6))  # slots 7, 8, 9 then 0, 1, 2
    assert ring.read_available() == 8 and ring.free() == 2
    np.testing.assert_array_equal(ring.read(100)[:, 0], ramp(5, 8))
    assert ring.read(3).shape == (0, 1) and ring.dropped == 0 and ring.written == 13


def test_overflow_overwrites_the_oldest_and_counts_it():
    ring = RingBuffer(8)
    ring.write(ramp(0, 5))
    ring.write(ramp(5, 6))  # 11 written, room for 8: frames 0..2 are lost
    assert ring.dropped == 3 and ring.read_available() == 8
    np.testing.assert_array_equal(ring.read(8)[:, 0], ramp(3, 8))
    ring.write(ramp(11, 20))  # one block longer than the ring: only its newest 8 frames fit
    assert ring.dropped == 3 + 12
    np.testing.assert_array_equal(ring.read(100)[:, 0], ramp(23, 8))


def test_frames_keep_their_channels():
    ring = RingBuffer(4, channels=2)
    block = np.stack([ramp(0, 3), -ramp(0, 3)], axis=1)
    ring.write(block)
    ring.write(block)
    assert ring.dropped == 2
    np.testing.assert_array_equal(ring.read(4), np.concatenate([block, block])[2:])


def test_write_allocates_no_sample_memory():
    ring = RingBuffer(10_000, channels=2)
    block = np.ones((4096, 2), dtype=np.float32)  # 32 KiB: a copy of it would show
    ring.write(block)
    tracemalloc.start()
    try:
        for _ in range(20):
            ring.write(block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4096, f"write allocated {peak} bytes"


class _WritesWhileCopied(np.ndarray):
    """Ring storage whose first slice read runs a producer write: a write inside a read's copy."""

    def __getitem__(self, key):
        hook, type(self).hook = type(self).hook, None
        if hook is not None:
            hook()
        return super().__getitem__(key)


def test_a_write_during_a_read_never_returns_overwritten_frames():
    ring = RingBuffer(8)
    ring.write(ramp(0, 8))
    _WritesWhileCopied.hook = lambda: ring.write(ramp(8, 3))  # overwrites frames 0, 1, 2
    ring._data = ring._data.view(_WritesWhileCopied)
    np.testing.assert_array_equal(ring.read(8)[:, 0], ramp(3, 5))
    assert ring.dropped == 3
    np.testing.assert_array_equal(ring.read(8)[:, 0], ramp(8, 3))


@pytest.mark.slow  # a million samples through two threads switching every microsecond: 3-4 s of CPU each
@pytest.mark.parametrize("producer_waits", [True, False])
def test_producer_and_consumer_threads_move_a_million_samples(producer_waits):
    total = 1_000_000  # float32 holds every integer below 2**24 exactly
    ring = RingBuffer(4096)
    rng = np.random.default_rng(0)
    write_sizes, read_sizes = rng.integers(1, 400, size=10**5), iter(rng.integers(1, 3000, size=10**7))

    def produce():
        sent = 0
        for size in write_sizes:
            size = min(int(size), total - sent)
            while producer_waits and ring.free() < size:
                time.sleep(0)
            ring.write(ramp(sent, size))
            sent += size
        assert sent == total

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads every few microseconds, so writes land inside reads
    try:
        producer = threading.Thread(target=produce)
        producer.start()
        received = []
        while producer.is_alive() or ring.read_available():
            received.append(ring.read(int(next(read_sizes)))[:, 0])
        producer.join()
    finally:
        sys.setswitchinterval(interval)
    got = np.concatenate(received)
    assert got.size + ring.dropped == total
    if producer_waits:
        assert ring.dropped == 0
        np.testing.assert_array_equal(got, ramp(0, total))
    else:  # whatever survived is intact and in order: no torn or repeated frames
        assert ring.dropped > 0, "the consumer never fell behind: nothing was tested"
        assert np.all(np.diff(got) > 0) and np.all(got == np.round(got))
