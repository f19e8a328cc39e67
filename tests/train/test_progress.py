"""Training-side progress bars: in place on a terminal, readable lines in a log."""

import io
import re
import time

from train.progress import bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_whole_lines_not_thousands_of_redraws():
    log = io.StringIO()
    assert sum(bar(range(20000), stream=log, desc="clips")) == sum(range(20000))
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and log.getvalue().endswith("\n")
    assert 1 <= len(lines) <= 3, lines  # the start, the end: well within LOG_SECONDS
    assert lines[-1].startswith("clips: 100%") and "20000/20000" in lines[-1]


def test_a_log_keeps_the_last_line_of_a_bar_the_loop_asks_not_to_leave():
    """The training loop's epoch bar is leave=False (a terminal erases it): in a log, erasing
    writes nothing, so a pass shorter than LOG_SECONDS left no 100 % line at all."""
    log = io.StringIO()
    for _ in bar(range(7), stream=log, desc="epoch 1/2", leave=False):
        pass
    assert log.getvalue().splitlines()[-1].startswith("epoch 1/2: 100%"), log.getvalue()


def test_a_postfix_set_every_step_waits_for_the_next_log_line():
    log = io.StringIO()
    steps = bar(range(5000), stream=log, desc="epoch 1/1")
    for i in steps:
        steps.set_postfix(loss=f"{1 / (i + 1):.4f}")  # as the training loop does, every batch
        steps.set_description("epoch 1/1")
    lines = log.getvalue().splitlines()
    assert 1 <= len(lines) <= 3, lines[:5]
    assert "loss=0.0002" in lines[-1]


def test_a_pass_that_slows_down_keeps_its_lines():
    log = io.StringIO()
    for i in bar(range(2030), stream=log, mininterval=0.1):
        if i >= 2000:  # thousands per second, then 50 per second for 0.6 s
            time.sleep(0.02)
    counts = [int(m.group(1)) for m in re.finditer(r"(\d+)/2030", log.getvalue())]
    assert sum(n > 2000 for n in counts) >= 3, log.getvalue()  # adaptive step counts printed none here


def test_a_log_line_every_interval_and_a_terminal_redrawn_in_place():
    log = io.StringIO()
    for _ in bar(range(50), stream=log, mininterval=0, miniters=1):
        pass
    assert len(log.getvalue().splitlines()) >= 50  # every update is a line of its own
    terminal = Terminal()
    for _ in bar(range(50), stream=terminal, mininterval=0, miniters=1):
        pass
    assert terminal.getvalue().count("\r") >= 50 and terminal.getvalue().count("\n") <= 1
