"""Decisions: smoothed scores over time -> `start` and `end` events, one label at a time.

Per label, silero-vad's enter/leave thresholds (hysteresis) plus a minimum duration:

    idle ──score >= threshold──> candidate ──lasted min_duration──> active (`start`)
      ^                              │                                 │
      └────── score < release ───────┴──── score < release (`end`) ────┘

- `threshold` comes per label from the label set (edge.labels.Label.threshold).
- `release = threshold * release_ratio` (default 0.7: 0.5 -> 0.35). A ratio rather than
  silero's `threshold - 0.15` because softmax scores over many labels are small: a label
  with threshold 0.1 would never be released by a fixed offset.
- An event lasts from its onset (the first window with score >= threshold) to the first
  window whose score falls below `release`. An event shorter than `min_duration` is never
  reported: `start` is emitted only once the candidate has lasted `min_duration` (default
  1.0 s: at a 0.5 s hop, three windows in a row). So `start` comes late by `min_duration`,
  carries the onset as its `t`, and every `start` gets exactly one `end`.
- `hold` (seconds, default 0: off): an active event whose score falls below `release` is held
  open that long; a score back at its threshold within it goes on with the same event (a dog
  barking on and off, an air conditioner whose score dips for a window or two: one event, not one
  per bark or dip), and once the hold has passed the event ends, dated at the first window below
  `release` (its `end` is emitted `hold` late, as a `start` is `min_duration` late). A sound's
  episode is then one event, one notification (Frigate's audio `max_not_heard`).
- Several labels may be active at once; a window under every threshold starts nothing.
- `flush(t)` at the end of a stream ends the active events at `t` (a held one at its own end)
  and drops candidates.

Times are stream seconds (the `t` of the window: the time of its END). Event ids run on for
the detector's whole life, across `reset()`, so they stay unique in one output stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.labels.labelset import LabelSet

DEFAULT_RELEASE_RATIO = 0.7
DEFAULT_MIN_DURATION = 1.0  # seconds; rejects a one-window spike at any usual hop


@dataclass(frozen=True)
class Event:
    """A `start` or `end` of one label's event.

    start: t = onset, score = the smoothed score at onset.
    end:   t = the first window below the release level (the last such window that no return
           above the threshold followed within the hold), duration = t - onset,
           peak = the highest smoothed score over the event.
    """

    kind: str  # "start" | "end"
    t: float
    event_id: int
    label: str
    score: float | None = None  # start only
    duration: float | None = None  # end only
    peak: float | None = None  # end only


@dataclass
class _Track:
    """One label's state: idle (onset None), candidate (no event_id yet) or active (held: `quiet`
    is the time its score fell below the release level)."""

    onset: float | None = None
    score: float = 0.0  # at onset
    peak: float = 0.0
    event_id: int | None = None
    quiet: float | None = None


class EventDetector:
    """Per-label hysteresis with a minimum duration. `update(t, scores)` once per window."""

    def __init__(
        self,
        labels: Sequence[str],
        thresholds: Sequence[float],
        release_ratio: float = DEFAULT_RELEASE_RATIO,
        min_duration: float = DEFAULT_MIN_DURATION,
        hold: float = 0.0,
    ):
        if len(thresholds) != len(labels) or not labels:
            raise ValueError(
                f"EventDetector: {len(thresholds)} thresholds for {len(labels)} labels: "
                "give one threshold per label (at least one label)"
            )
        for label, threshold in zip(labels, thresholds):
            if not 0.0 < threshold <= 1.0:
                raise ValueError(f"EventDetector: threshold {threshold!r} of label {label!r} must be in (0, 1]")
        if not 0.0 < release_ratio <= 1.0:
            raise ValueError(
                f"EventDetector: release_ratio {release_ratio!r} must be in (0, 1] "
                "(1: no hysteresis; the default 0.7 releases a 0.5 threshold at 0.35)"
            )
        if not min_duration >= 0.0:
            raise ValueError(f"EventDetector: min_duration {min_duration!r} must be >= 0 seconds")
        if not 0.0 <= hold < float("inf"):
            raise ValueError(f"EventDetector: hold {hold!r} must be a number of seconds >= 0")
        self.labels = tuple(labels)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.releases = self.thresholds * release_ratio
        self.min_duration = float(min_duration)
        self.hold = float(hold)
        self._next_id = 1
        self.reset()

    @classmethod
    def from_label_set(cls, label_set: LabelSet, **options) -> EventDetector:
        """One threshold per label from the YAML (scores must come in the label set's order)."""
        return cls(label_set.names, [label.threshold for label in label_set.labels], **options)

    def reset(self) -> None:
        """Forget every open event and candidate (no `end` is emitted: call flush() first)."""
        self._tracks = [_Track() for _ in self.labels]
        self._last_t: float | None = None

    def update(self, t: float, scores: np.ndarray) -> list[Event]:
        """Feed one window's smoothed [K] scores at stream time `t`; returns ends, then starts."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(self.labels),):
            raise ValueError(
                f"EventDetector.update: scores of shape {scores.shape}, expected "
                f"({len(self.labels)},): one per label, in the label set's order"
            )
        self._advance(t)
        ends, starts = [], []
        for i, score in enumerate(scores):
            track = self._tracks[i]
            if track.quiet is not None:  # held: back at the threshold within the hold goes on, after it ends
                if t - track.quiet < self.hold:
                    if score >= self.thresholds[i]:
                        track.quiet, track.peak = None, max(track.peak, score)
                    continue
                ends.append(self._end(i, track.quiet))
                self._tracks[i] = track = _Track()  # and this window may begin the next
            if track.onset is None:
                if score >= self.thresholds[i]:
                    track.onset, track.score, track.peak = t, score, score
            elif score < self.releases[i]:
                if track.event_id is not None and self.hold > 0:
                    track.quiet = t
                    continue
                if track.event_id is not None:
                    ends.append(self._end(i, t))
                self._tracks[i] = _Track()
                continue
            else:
                track.peak = max(track.peak, score)
            if track.onset is not None and track.event_id is None and t - track.onset >= self.min_duration:
                track.event_id, self._next_id = self._next_id, self._next_id + 1
                starts.append(Event("start", track.onset, track.event_id, self.labels[i], score=float(track.score)))
        return ends + starts

    def flush(self, t: float) -> list[Event]:
        """End of stream at `t` (usually the last window's t): end every active event, drop candidates."""
        self._advance(t)
        ends = [
            self._end(i, t if track.quiet is None else track.quiet)
            for i, track in enumerate(self._tracks)
            if track.event_id is not None
        ]
        self.reset()
        return ends

    @property
    def active(self) -> list[tuple[int, str, float]]:
        """(event_id, label, onset) of every event started and not yet ended."""
        return [
            (tr.event_id, self.labels[i], tr.onset)
            for i, tr in enumerate(self._tracks)
            if tr.event_id is not None and tr.onset is not None
        ]

    @property
    def holding(self) -> list[tuple[int, str, float]]:
        """(event_id, label, since) of every active event held open: its score fell below the release
        level at `since` and the hold has not passed yet (it goes on if the score is back in time)."""
        return [
            (tr.event_id, self.labels[i], tr.quiet)
            for i, tr in enumerate(self._tracks)
            if tr.event_id is not None and tr.quiet is not None
        ]

    def _advance(self, t: float) -> None:
        if self._last_t is not None and t < self._last_t:
            raise ValueError(
                f"EventDetector: time went back from {self._last_t} s to {t} s: stream times "
                "must not decrease; call reset() when a new stream starts"
            )
        self._last_t = t

    def _end(self, i: int, t: float) -> Event:
        track = self._tracks[i]
        assert track.event_id is not None and track.onset is not None, "only an active event ends"
        return Event("end", t, track.event_id, self.labels[i], duration=t - track.onset, peak=float(track.peak))
