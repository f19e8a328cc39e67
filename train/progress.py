"""Progress bars for the long passes of training-side work (teacher scores, epochs, features).

On a terminal: tqdm's bar, redrawn in place. Elsewhere (a log file, `nohup`, CI, journald), where
tqdm's carriage-return redraws pile up into one line of thousands of updates, the same bar is
written as a plain line every LOG_SECONDS (and at the end), so a 10-minute pass leaves a few dozen
readable lines. There a postfix or description update waits for the next line: tqdm's
`set_postfix` redraws at once by default, which in a log is a line per training step. Nor does
tqdm's monitor thread write there: it redraws a bar whose count it cannot see (the same count, a
later time), and its adaptive step count could leave a pass that slowed down silent for minutes.
"""

from __future__ import annotations

import sys
from typing import TextIO

LOG_SECONDS = 30.0


class _Lines:
    """A stream for tqdm that turns each in-place redraw into one line of its own."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def bar(iterable=None, stream: TextIO | None = None, **kwargs):
    """tqdm(iterable, **kwargs) on `stream` (stderr): in place on a terminal, else a line every
    LOG_SECONDS."""
    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return tqdm(iterable, file=stream, dynamic_ncols=True, **kwargs)
    kwargs.setdefault("mininterval", LOG_SECONDS)
    kwargs.setdefault("miniters", 1)  # a line as soon as the interval is up, however the pace changed
    kwargs["leave"] = True  # a log keeps the last line (leave=False would erase nothing: it writes none)

    class LogBar(tqdm):
        monitor_interval = 0  # tqdm's monitor thread redraws a stale count (the iterator's n is local)

        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            super().set_postfix(ordered_dict, refresh=False, **kwargs)

        def set_description(self, desc=None, refresh=True):
            super().set_description(desc, refresh=False)

    return LogBar(iterable, file=_Lines(stream), ncols=100, **kwargs)
