"""Progress of long calibration runs on stderr (never stdout, where results go).

On a terminal: one bar redrawn in place (`\\r`). Elsewhere (a log file, CI): a log line at
about every 10 % so the log stays short. No tqdm: the edge runtime does not depend on it.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

# A logger with its own level: its lines show at the CLI's default verbosity (warnings),
# as edge.labels.embeddings does for its embedding progress.
log = logging.getLogger(__name__)
log.setLevel(logging.INFO)

BAR_WIDTH = 30
STEP = 0.1  # a log line every 10 % when stderr is not a terminal


class Progress:
    """`with Progress(total, "what") as bar: ... bar.update()` (or `bar.update(n)`)."""

    def __init__(self, total: int, description: str, stream: TextIO | None = None):
        self.total, self.description = max(int(total), 0), description
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.terminal = bool(isatty is not None and isatty())
        self.done = 0
        self._next_log = STEP
        self._start = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total) if self.total else self.done + n
        if self.terminal:
            self._draw()
        elif self.total and self.done / self.total >= self._next_log - 1e-9:
            while self._next_log <= self.done / self.total + 1e-9:
                self._next_log += STEP
            log.info(
                "%s: %d/%d (%.0f %%, %.0f s)",
                self.description,
                self.done,
                self.total,
                100.0 * self.done / self.total,
                time.monotonic() - self._start,
            )

    def _draw(self) -> None:
        fraction = self.done / self.total if self.total else 1.0
        filled = round(fraction * BAR_WIDTH)
        self.stream.write(
            f"\r{self.description} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
            f"{self.done}/{self.total} {time.monotonic() - self._start:.0f} s"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.terminal:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
