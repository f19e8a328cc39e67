"""Domain errors. Each message names the bad value, what is allowed and how to fix it.

The CLI turns these into one-line messages (click.ClickException) at its boundary; library
code raises them and never prints.
"""

import logging
import math
import re
import time
from collections.abc import Callable
from typing import TypeVar

E = TypeVar("E", bound=BaseException)

log = logging.getLogger(__name__)


def gist(message: str) -> str:
    """`message` with its numbers left out: what stays the same when a failure repeats (a try
    count, megabytes free, seconds lost)."""
    return re.sub(r"\d+(\.\d+)?", "#", message)


class Repeats:
    """Whether a failure that repeats is said again: when its reason (a `gist`) is another than the
    last said, or `every` s have passed since then (a fault lasting months must not fill a journal
    on an SD card). `clock`: seconds, monotonic or since boot."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic):
        self.every, self.clock = every, clock
        self.reset()

    def reset(self) -> None:
        self._said: tuple[float, str] = (-math.inf, "")  # when the last was said, and its reason

    def due(self, reason: str, force: bool = False) -> bool:
        """Whether to say `reason` now (`force`: say it whatever came before); if so, it counts as said."""
        now = self.clock()
        if not force and reason == self._said[1] and now - self._said[0] < self.every:
            return False
        self._said = (now, reason)
        return True


def detached(err: E) -> E:
    """`err` without its traceback, nor those of the errors it was raised from or during: an error
    kept beyond its handler (a lost device's, for the loop) holds no frames, so neither the objects
    they hold (a source and its ring) nor a cycle through them that only a full collection frees.
    Where it is not one of ours (a bug, not a bad device or file), its traceback is logged first (debug)."""
    if not isinstance(err, SemanticACError):
        log.debug("%s: its traceback, dropped from it now", type(err).__name__, exc_info=err)
    seen: set[int] = set()
    chain: list[BaseException | None] = [err]
    while chain:
        link = chain.pop()
        if link is not None and id(link) not in seen:
            seen.add(id(link))
            link.__traceback__ = None
            chain += [link.__cause__, link.__context__]
    return err


class SemanticACError(Exception):
    """Base class of every error the product reports to a user."""


class AudioError(SemanticACError):
    """Audio that cannot be used: unreadable, empty, non-finite, unsupported."""


class BundleError(SemanticACError):
    """A model bundle that is missing, incomplete or of another format version."""


class UnreadableBundle(BundleError):
    """A bundle file this user may not read: its permissions are the fix, not a new copy."""


class OutdatedBundle(BundleError):
    """A bundle of an older export that a command converts in place: the message names it."""


class LabelSetError(SemanticACError):
    """A label-set YAML that does not follow the schema."""


class LabelEmbeddingsError(SemanticACError):
    """Label embeddings that are missing, stale or malformed."""


class BackendError(SemanticACError):
    """An inference graph or engine that cannot be opened or run: corrupt, mismatched with the
    bundle, built for another device, or given inputs of the wrong name, type or shape."""


class OptionError(SemanticACError):
    """A pipeline option with a value that is not allowed; `option` is its field name in
    ListenOptions (the CLI shows it as a flag, the service config as a key)."""

    def __init__(self, message: str, option: str):
        super().__init__(message)
        self.option = option


class OutputError(SemanticACError):
    """Results cannot be written: stdout closed, full, or its reader gone (`broken_pipe`)."""

    def __init__(self, message: str, broken_pipe: bool = False):
        super().__init__(message)
        self.broken_pipe = broken_pipe


class ConfigError(SemanticACError):
    """A service config (semanticac-edge serve) that cannot be used; `key` is the dotted key
    (e.g. `mqtt.port`) or "" for the file itself. `serve` exits 78 (EX_CONFIG) on it, so
    systemd does not restart into the same mistake."""

    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.key = key


class InUseError(ConfigError):
    """A state folder or an event log another serve holds: that one runs, and this start is the
    mistake (it says nothing on MQTT, where it would speak over the running one)."""
