"""Per-label thresholds that keep false alarms on a site's background under a budget.

    background audio ─► edge.listen.listen (every window, every label) ─► raw scores
      ─► Smoother replayed (as the listener) ─► per label: EventDetector replayed at candidate
         thresholds ─► starts per hour of background ─► the lowest threshold within budget

The event logic is edge's own: `count_starts` feeds a one-label `EventDetector` (labels are
independent in it: a label's events do not depend on the others' scores or thresholds) with
that label's smoothed scores, with the release ratio, minimum duration and hold `listen` uses.

Which thresholds are tried. A label's number of starts is a step function of its threshold
θ: it can change only where θ crosses a smoothed score s (start: s >= θ) or s / release (end:
s < θ x release), and on each interval (b_j, b_{j+1}] between those breakpoints it equals its
value at b_{j+1}. Hysteresis makes it non-monotone (a higher θ ends an event sooner, and the
sound may start a second one), so the search is: the starts at up to 64 breakpoints spread over
all of them, from the highest one over budget the budget is met at every breakpoint tried
above it; between that one and the next tried, bisection over the breakpoints finds the
interval (b_lo, b_hi] where the count drops within budget; the threshold written is the
shortest decimal in it of at least 3 decimals (0.618 rather than 0.61734...: the same count, a
little margin above the breakpoint, at most 0.001 above the lowest).
Thresholds never go below `min_threshold` (default 1/K, the chance level of a softmax over K
labels: lower, a label could start an event when the model prefers nothing; with `only_raise`,
below the set's own threshold) nor above 1. A label the background never triggers gets that
floor: the background says nothing against it, so mind the sounds it did not hold.
A label over budget at 1.0 gets the tried threshold with the fewest starts (the highest of
those: 1.0 itself when nothing does better), reported as not meeting the budget when even those
exceed it (a score that saturates at 1.0 and dips under 1.0 x release starts an event at each
return above 1.0, where a lower threshold holds one long event).

With `total`, the budget is the whole set's, not each label's: every label starts at its floor,
then, while the set starts more events than the budget, the label whose next step down (one
false alarm fewer, or more) costs the smallest rise in threshold is raised to it
(`allocate_budget`): the false alarms go where cutting them would cost the most.

Windows far below a threshold's release level cannot change a detector's state (it is idle
after the first of them), so a run of them is fed as its first window only (`quiet_runs_dropped`):
an exact reduction that makes the replay cost scale with the windows near the threshold.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibrate.errors import CalibrationError
from calibrate.progress import Progress
from calibrate.recording import audio_seconds, record
from edge.events import EventDetector
from edge.labels.labelset import LabelSet, resolve_label_set
from edge.listen import ListenOptions

log = logging.getLogger(__name__)

GRID = 64  # breakpoints tried before bisection (see the module docstring)

Sequences = list[tuple[np.ndarray, np.ndarray]]  # per stream: (times [N], one label's smoothed scores [N])


def count_starts(
    sequences: Sequences, label: str, threshold: float, release: float, min_duration: float, hold: float = 0.0
) -> int:
    """Events that edge's EventDetector starts for one label over the streams at `threshold`."""
    starts = 0
    for times, values in sequences:
        detector = EventDetector([label], [threshold], release_ratio=release, min_duration=min_duration, hold=hold)
        for t, value in zip(times, values):
            starts += sum(event.kind == "start" for event in detector.update(float(t), np.array([value])))
    return starts


def quiet_runs_dropped(sequences: Sequences, level: float) -> Sequences:
    """Drop every window below `level` whose previous window is below it too (and a first window
    below it): for any threshold with release level >= `level` the detector is idle after the
    first window of such a run and stays idle through it, so the starts are the same (a held event:
    held through it, and the next window kept ends it, or goes on with it, as the first after the
    hold would have: the starts are the same too)."""
    out = []
    for times, values in sequences:
        low = values < level
        keep = ~(low & np.concatenate([[True], low[:-1]]))
        out.append((times[keep], values[keep]))
    return out


def shortest_decimal(low: float, high: float, digits_from: int = 3) -> float:
    """The shortest decimal x with low < x <= high, of at least `digits_from` decimals (so x is
    within 10^-digits_from of low: the lowest threshold, readable); high itself when none has <= 8."""
    for digits in range(digits_from, 9):
        step = 10.0**-digits
        x = round((math.floor(low / step + 1e-9) + 1) * step, digits)
        if x <= low:
            x = round(x + step, digits)
        if low < x <= high:
            return x
    return high


@dataclass
class LabelFit:
    label: str
    old_threshold: float
    threshold: float
    starts: int  # at the chosen threshold, over the whole background
    per_hour: float
    met: bool  # False: over budget at every threshold tried
    old_starts: int = 0  # at the old threshold, over the whole background: what the fit changed
    curve: list[tuple[float, int]] = field(default_factory=list)  # (threshold, starts) tried, sorted
    recall_old: float | None = None  # fraction of positives of this label that start an event
    recall_new: float | None = None
    positives: int = 0


def fit_label(
    sequences: Sequences,
    label: str,
    old_threshold: float,
    budget: float,
    release: float,
    min_duration: float,
    min_threshold: float,
    hours: float,
    hold: float = 0.0,
) -> LabelFit:
    """The lowest threshold in [min_threshold, 1] whose starts stay <= `budget` (events)."""
    old_starts = count_starts(sequences, label, old_threshold, release, min_duration, hold)
    sequences = quiet_runs_dropped(sequences, min_threshold * release)
    values = np.concatenate([v for _, v in sequences]) if sequences else np.zeros(0)
    breaks = np.unique(np.concatenate([values, values / release, [min_threshold, 1.0]]))
    breaks = breaks[(breaks >= min_threshold) & (breaks <= 1.0)]
    tried: dict[float, int] = {}

    def starts(threshold: float) -> int:
        if threshold not in tried:
            tried[threshold] = count_starts(sequences, label, threshold, release, min_duration, hold)
        return tried[threshold]

    grid = np.unique(np.round(np.linspace(0, len(breaks) - 1, min(GRID, len(breaks)))).astype(int))
    over = [i for i in grid if starts(float(breaks[i])) > budget]
    if not over:  # within budget everywhere from the floor up
        threshold = min(shortest_decimal(min_threshold - 1e-12, min_threshold + 1e-4), 1.0)
        if threshold < min_threshold or starts(threshold) > budget:
            threshold = float(min_threshold)
        met = True
    elif over[-1] == len(breaks) - 1:  # over budget at 1.0: the tried threshold with the fewest starts
        fewest = min(tried.values())  # (hysteresis: a lower one can hold one long event where 1.0 starts many)
        threshold, met = max(t for t, n in tried.items() if n == fewest), fewest <= budget
    else:
        lo = over[-1]
        hi = int(grid[np.searchsorted(grid, lo) + 1])
        while hi - lo > 1:  # starts(breaks[lo]) > budget >= starts(breaks[hi])
            mid = (lo + hi) // 2
            if starts(float(breaks[mid])) > budget:
                lo = mid
            else:
                hi = mid
        threshold = shortest_decimal(float(breaks[lo]), float(breaks[hi]))
        if starts(threshold) > budget:  # rounding met a float edge: the breakpoint itself is exact
            threshold = float(breaks[hi])
        met = True
    n = starts(threshold)
    return LabelFit(
        label, old_threshold, threshold, n, n / hours, met and n <= budget, old_starts, sorted(tried.items())
    )


def allocate_budget(fit: Callable[[int, float], LabelFit], labels: int, budget: float) -> tuple[list[LabelFit], bool]:
    """Per-label fits whose starts add up to at most `budget` (see the module docstring):
    `fit(k, n)` is label k's lowest-threshold fit with at most n starts (n = inf: its floor).
    Returns the fits and whether the budget was met (False: even every label at its highest
    useful threshold starts more)."""
    fits = [fit(k, math.inf) for k in range(labels)]
    steps: dict[int, LabelFit] = {}
    excess = sum(f.starts for f in fits) - budget
    with Progress(max(0, math.ceil(excess)), "sharing the budget (false alarms cut)") as bar:
        while sum(f.starts for f in fits) > budget:
            for k, current in enumerate(fits):
                if k not in steps and current.starts > 0:
                    steps[k] = fit(k, current.starts - 1)
            useful = {k: step for k, step in steps.items() if step.met and step.starts < fits[k].starts}
            if not useful:
                return fits, False
            k = min(useful, key=lambda i: (useful[i].threshold - fits[i].threshold, i))
            bar.update(fits[k].starts - useful[k].starts)
            fits[k] = steps.pop(k)
    return fits, True


def recall(
    sequences: Sequences, label: str, threshold: float, release: float, min_duration: float, hold: float = 0.0
) -> float:
    """Fraction of the positive streams in which an event of `label` starts at `threshold`.
    Each positive clip is heard in a quiet stream (calibrate.recording.listen_in_silence)."""
    hits = [count_starts([seq], label, threshold, release, min_duration, hold) > 0 for seq in sequences]
    return float(np.mean(hits)) if hits else float("nan")


@dataclass
class ThresholdReport:
    label_set: LabelSet
    fits: list[LabelFit]
    per_hour_budget: float
    hours: float
    streams: int
    files: int
    skipped: list[tuple[Path, str]]
    positives_skipped: list[tuple[Path, str]] = field(default_factory=list)
    short_streams: int = 0  # background streams too short for any event to last min_duration
    total: bool = False  # the budget is the whole set's (allocate_budget), not each label's
    total_met: bool = True  # with `total`: the set's starts are within it

    @property
    def thresholds(self) -> list[float]:
        return [fit.threshold for fit in self.fits]


def check_budget(per_hour: float) -> float:
    if (
        isinstance(per_hour, bool)
        or not isinstance(per_hour, (int, float))
        or not math.isfinite(per_hour)
        or per_hour <= 0
    ):
        raise CalibrationError(
            f"--false-alarms-per-hour {per_hour!r} is not allowed: use a finite number > 0 "
            "(e.g. 1: at most one false event per hour of background)"
        )
    return float(per_hour)


def _too_short(streams: int, seconds: float, min_duration: float, needed: float | None = None) -> str:
    """Said after listening (each stream heard), or before it (`needed`: the length each file falls short of)."""
    what, each = ("stream", "") if needed is None else ("file", f", each under the {needed:g} s its windows need,")
    return (
        f"every background {what} ({streams}, {seconds:.1f} s in all){each} is too short for an event to last "
        f"--min-duration {min_duration:g} s, so no false alarm could be counted and any threshold would pass: "
        "join short files into one stream with --join, or give longer recordings of the site"
    )


def _check_some_file_is_long_enough(options: ListenOptions, files: Sequence[Path]) -> None:
    """Before listening, from the files' headers: a background of files too short for their windows (one
    at the window's end, then one every hop while the file lasts) to span --min-duration is refused at
    once, not after every file was heard. A file within 0.05 s of the length needed (frames round) is
    left to the check on what was heard."""
    from edge.bundle import resolve_bundle

    if options.min_duration <= 0:
        return
    windowing = options.windowing(resolve_bundle(options.bundle))
    hops = math.ceil(options.min_duration / windowing.hop_seconds - 1e-9)
    needed = windowing.window_seconds + hops * windowing.hop_seconds
    lengths = [audio_seconds(path) for path in files]  # 0: unreadable (listening says why)
    if any(lengths) and max(lengths) < needed - 0.05:
        raise CalibrationError(_too_short(len(files), sum(lengths), options.min_duration, needed))


def fit_thresholds(
    options: ListenOptions,
    background: Sequence[Path],
    per_hour: float,
    join: bool = False,
    positives: Sequence[tuple[Path, str]] = (),
    min_threshold: float | None = None,
    only_raise: bool = False,
    total: bool = False,
) -> ThresholdReport:
    """Listen to `background` with `options` (their window, hop, smooth, release, min_duration,
    level gate), then fit each label's threshold to at most `per_hour` starts per hour (with
    `total`: the whole set's starts, shared out by allocate_budget). `only_raise`: never below
    the label set's own threshold (a label the background never triggers keeps it, instead of
    falling to `min_threshold`)."""
    per_hour = check_budget(per_hour)
    label_set = resolve_label_set(options.labels)
    names = label_set.names
    if min_threshold is None:
        min_threshold = 1.0 / len(names)
    if not (math.isfinite(min_threshold) and 0.0 < min_threshold <= 1.0):
        raise CalibrationError(f"--min-threshold {min_threshold!r} is not allowed: use a score in (0, 1]")
    unknown = sorted({label for _, label in positives} - set(names))
    if unknown:
        raise CalibrationError(
            f"--positives: label(s) {unknown} are not in label set {label_set.name!r}; "
            f"its labels are: {', '.join(names)}"
        )
    if not join:
        _check_some_file_is_long_enough(options, background)
    streams, skipped = record(options, names, list(background), join=join)
    hours = sum(stream.seconds for stream in streams) / 3600.0
    if not streams or hours <= 0.0 or not any(len(s.times) for s in streams):
        why = f" ({len(skipped)} unreadable file(s) skipped: first {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise CalibrationError(
            f"the background holds no audio to listen to{why}: pass recordings of the site without the sounds to detect"
        )
    if skipped:
        log.warning("%d of %d background file(s) skipped as unreadable", len(skipped), len(background))
    short = sum(len(s.times) == 0 or s.times[-1] - s.times[0] < options.min_duration for s in streams)
    if short == len(streams):  # nothing could start an event: every threshold would "meet" any budget
        raise CalibrationError(_too_short(short, hours * 3600, options.min_duration))
    if short:
        log.warning(
            "%d of %d background stream(s) are too short for an event to last --min-duration %g s: "
            "they can start no false alarm; join short files into one stream with --join",
            short,
            len(streams),
            options.min_duration,
        )
    budget = per_hour * hours
    if budget < 1.0:
        log.warning(
            "%.3g h of background at %g false alarm(s) per hour allows no event in it (%.2g): every threshold is "
            "set to start none on it, which measures no rate; record at least %.3g h of the site for this budget",
            hours,
            per_hour,
            budget,
            1.0 / per_hour,
        )
    smoothed = [stream.smoothed(options.smooth) for stream in streams]
    sequences = [[(stream.times, values[:, k]) for stream, values in zip(streams, smoothed)] for k in range(len(names))]

    def fit(k: int, events: float) -> LabelFit:
        label = label_set.labels[k]
        floor = max(min_threshold, label.threshold) if only_raise else min_threshold
        return fit_label(
            sequences[k],
            label.name,
            label.threshold,
            events,
            options.release,
            options.min_duration,
            floor,
            hours,
            options.hold,
        )

    total_met = True
    if total:
        log.info("sharing %g false alarm(s) per hour among %d labels", per_hour, len(names))
        fits, total_met = allocate_budget(fit, len(names), budget)
    else:
        fits = []
        with Progress(len(names), "fitting thresholds") as bar:
            for k in range(len(names)):
                fits.append(fit(k, budget))
                bar.update()
    report = ThresholdReport(
        label_set,
        fits,
        per_hour,
        hours,
        len(streams),
        len(background) - len(skipped),
        skipped,
        short_streams=short,
        total=total,
        total_met=total_met,
    )
    if positives:
        _positive_recall(report, options, positives)
    return report


def _positive_recall(report: ThresholdReport, options: ListenOptions, positives: Sequence[tuple[Path, str]]) -> None:
    names = report.label_set.names
    files = list(dict.fromkeys(path for path, _ in positives))
    streams, skipped = record(options, names, files, what="positives", in_silence=True)
    report.positives_skipped = skipped
    by_path = {Path(stream.name): stream for stream in streams}
    if skipped:
        log.warning("%d of %d positive file(s) skipped as unreadable", len(skipped), len(files))
    smoothed = {path: stream.smoothed(options.smooth) for path, stream in by_path.items()}
    for k, fit in enumerate(report.fits):
        mine = [path for path, label in positives if label == fit.label and path in by_path]
        if not mine:
            continue
        sequences = [(by_path[path].times, smoothed[path][:, k]) for path in mine]
        fit.positives = len(sequences)
        rule = (options.release, options.min_duration, options.hold)
        fit.recall_old = recall(sequences, fit.label, fit.old_threshold, *rule)
        fit.recall_new = recall(sequences, fit.label, fit.threshold, *rule)
