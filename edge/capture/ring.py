"""A preallocated float32 ring buffer between one producer thread and one consumer thread.

The producer is usually PortAudio's audio callback, so `write` never allocates sample memory
and never waits: it copies a block in at most two slice assignments and, when the ring is
full, overwrites the oldest unread frames and counts them in `dropped` (a live source cannot
be paused). The lock guards only the two indices, never a copy.

Positions are absolute frame counts (`_write_end`: frames ever written, `_read_at`: the
oldest unread frame); a position p lives at p % capacity. A write first reserves its range
(moving `_read_at` past whatever it will overwrite), then copies, then commits. A reader
copies only committed frames and, after copying, discards any that a write reserved in the
meantime, so it never returns a half-overwritten frame.
"""

from __future__ import annotations

import threading

import numpy as np


class RingBuffer:
    """`capacity` frames of `channels` float32 samples; frames come out in the order they went in."""

    def __init__(self, capacity: int, channels: int = 1):
        if capacity <= 0 or channels <= 0:
            raise ValueError(f"ring capacity and channels must be positive, got {capacity} and {channels}")
        self.capacity = capacity
        self.channels = channels
        self.dropped = 0  # frames overwritten before the consumer read them
        self._data = np.zeros((capacity, channels), dtype=np.float32)
        self._lock = threading.Lock()
        self._write_end = 0  # committed: frames [_read_at, _write_end) are readable
        self._read_at = 0

    @property
    def written(self) -> int:
        """Frames ever written (dropped ones included)."""
        return self._write_end

    def read_available(self) -> int:
        with self._lock:
            return max(0, self._write_end - self._read_at)

    def free(self) -> int:
        """Frames that can be written without overwriting unread ones."""
        return self.capacity - self.read_available()

    def write(self, block: np.ndarray) -> None:
        """Append [n] (mono) or [n, channels] frames; the oldest unread frames give way when full."""
        n = len(block)
        kept = block[n - self.capacity :] if n > self.capacity else block  # a view: only the newest fit
        with self._lock:
            end = self._write_end + n
            oldest_kept = end - self.capacity
            if oldest_kept > self._read_at:
                self.dropped += oldest_kept - self._read_at
                self._read_at = oldest_kept
        self._copy_in(kept.reshape(len(kept), self.channels), end - len(kept))
        with self._lock:
            self._write_end = end

    def read(self, n: int) -> np.ndarray:
        """Up to `n` of the oldest unread frames, as a new [m, channels] array (m may be 0)."""
        with self._lock:
            start = self._read_at
            n = max(0, min(n, self._write_end - start))
        out = np.empty((n, self.channels), dtype=np.float32)
        i = start % self.capacity
        first = min(n, self.capacity - i)
        out[:first] = self._data[i : i + first]
        out[first:] = self._data[: n - first]
        with self._lock:
            overwritten = min(n, self._read_at - start)  # reserved by a write while we copied
            self._read_at = max(self._read_at, start + n)
        return out[overwritten:]

    def _copy_in(self, block: np.ndarray, start: int) -> None:
        i = start % self.capacity
        first = min(len(block), self.capacity - i)
        self._data[i : i + first] = block[:first]
        self._data[: len(block) - first] = block[first:]
