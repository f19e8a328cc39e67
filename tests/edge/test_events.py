import numpy as np
import pytest

from edge.events import EventDetector
from edge.labels.labelset import parse_label_set
from edge.scoring import Scorer, Smoother

HOP = 0.5


def run(detector, rows, t0=HOP):
    """Feed one [K] score row per hop; returns every event and the last window time."""
    events, t = [], t0
    for i, row in enumerate(rows):
        t = t0 + i * HOP
        events += detector.update(t, np.atleast_1d(np.asarray(row, dtype=float)))
    return events, t


def one_label(**options):
    return EventDetector(["siren"], [0.5], **options)


def test_oscillating_between_threshold_and_release_does_not_flap():
    wobble = [0.1, 0.55, 0.6, 0.4, 0.55, 0.37, 0.52, 0.36, 0.6, 0.2, 0.1]  # release = 0.35
    events, _ = run(one_label(min_duration=0.0), wobble)
    assert [(e.kind, e.label) for e in events] == [("start", "siren"), ("end", "siren")]
    start, end = events
    assert start.event_id == end.event_id == 1
    assert start.t == pytest.approx(1.0) and start.score == pytest.approx(0.55)
    assert end.t == pytest.approx(5.0) and end.duration == pytest.approx(4.0) and end.peak == pytest.approx(0.6)
    # without hysteresis the same scores flap: the test above could fail
    flapping, _ = run(one_label(min_duration=0.0, release_ratio=1.0), wobble)
    assert sum(e.kind == "start" for e in flapping) == 4


def test_a_blip_shorter_than_min_duration_reports_nothing():
    blip = [0.1, 0.9, 0.9, 0.1, 0.1]  # above threshold for 1.0 s (onset 1.0, released at 2.0)
    assert run(one_label(min_duration=1.5), blip)[0] == []
    assert run(one_label(min_duration=1.0), blip)[0] == []  # released on the window that would confirm it


def test_start_waits_for_min_duration_and_carries_the_onset():
    detector = one_label(min_duration=1.0)
    assert detector.update(0.5, np.array([0.2])) == []
    assert detector.update(1.0, np.array([0.7])) == []  # onset, candidate
    assert detector.update(1.5, np.array([0.8])) == []
    [start] = detector.update(2.0, np.array([0.6]))  # lasted 1.0 s: reported now, dated at the onset
    assert (start.kind, start.t, start.score) == ("start", 1.0, pytest.approx(0.7))
    assert detector.active == [(1, "siren", 1.0)]
    [end] = detector.update(2.5, np.array([0.3]))
    assert (end.kind, end.event_id, end.duration, end.peak) == ("end", 1, pytest.approx(1.5), pytest.approx(0.8))
    assert end.duration >= detector.min_duration and detector.active == []


def test_under_threshold_starts_nothing():
    events, _ = run(EventDetector(["a", "b", "c"], [0.5] * 3, min_duration=0.0), [[0.4, 0.35, 0.25]] * 6)
    assert events == []


def test_two_labels_active_at_once():
    rows = [[0.1, 0.1], [0.7, 0.1], [0.7, 0.6], [0.7, 0.6], [0.1, 0.6], [0.1, 0.6], [0.1, 0.1]]
    events, _ = run(EventDetector(["dog", "siren"], [0.5, 0.5], min_duration=0.5), rows)
    assert [(e.kind, e.label, e.event_id) for e in events] == [
        ("start", "dog", 1), ("start", "siren", 2), ("end", "dog", 1), ("end", "siren", 2)]
    dog_end, siren_end = events[2], events[3]
    assert dog_end.duration == pytest.approx(1.5) and siren_end.duration == pytest.approx(2.0)
    assert events[1].t == pytest.approx(1.5) and siren_end.t == pytest.approx(3.5)


def test_flush_ends_open_events_and_drops_candidates():
    detector = EventDetector(["dog", "siren"], [0.5, 0.5], min_duration=1.0)
    events, t = run(detector, [[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.8]])  # dog from 0.5, siren from 2.0
    assert [(e.kind, e.label) for e in events] == [("start", "dog")]
    [end] = detector.flush(t + 0.25)
    assert (end.kind, end.label, end.event_id) == ("end", "dog", 1)
    assert end.t == pytest.approx(2.25) and end.duration == pytest.approx(1.75) and end.peak == pytest.approx(0.9)
    assert detector.active == [] and detector.flush(3.0) == []


def test_a_hold_keeps_one_event_through_dips_and_ends_it_where_the_score_fell():
    """A dog barking on and off, an air conditioner whose score dips for a window or two: without a
    hold each return was an event of its own (120-167 an hour on real clips in an audit), each an
    MQTT ON/OFF and a notification. With one, a return to the threshold within it goes on with the
    event; once it has passed, the end is dated at the first window below release."""
    barks = [0.1, 0.8, 0.8, 0.1, 0.1, 0.9, 0.9, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.7, 0.7, 0.1]
    events, _ = run(one_label(min_duration=0.5), barks)
    assert [e.kind for e in events] == ["start", "end", "start", "end", "start", "end"]  # no hold: three
    held = one_label(min_duration=0.5, hold=2.0)
    got, holds = [], {}
    for i, score in enumerate(barks):
        t = HOP + i * HOP
        got += [(t, e) for e in held.update(t, np.array([score]))]
        holds[t] = held.holding
    kinds = [(e.kind, e.event_id) for _, e in got]
    assert kinds == [("start", 1), ("end", 1), ("start", 2)], kinds
    (_, start), (said_at, end) = got[0], got[1]
    # 0.8 0.8 at 1.0-1.5, below release at 2.0, back at 3.0 (within 2 s: the same event), below at 4.0;
    # the hold is over at 6.0, where the end is said, dated 4.0
    assert start.t == pytest.approx(1.0) and end.t == pytest.approx(4.0) and said_at == pytest.approx(6.0)
    assert end.duration == pytest.approx(3.0) and end.peak == pytest.approx(0.9)
    # held open while quiet (since the score fell), not while heard, not once ended
    assert [holds[t] for t in (1.5, 2.0, 2.5, 3.0, 4.0, 5.5, 6.0)] == [
        [], [(1, "siren", 2.0)], [(1, "siren", 2.0)], [], [(1, "siren", 4.0)], [(1, "siren", 4.0)], []]
    assert held.active == [(2, "siren", 7.5)]  # the third bark: 4.0 s after the second fell, another event
    assert held.holding == [(2, "siren", 8.5)]  # quiet since the last window, still active
    [last] = held.flush(9.0)  # held at the stream's end: dated where it fell, not at the end of the stream
    assert (last.event_id, last.t) == (2, pytest.approx(8.5))
    # a score between release and threshold within the hold does not go on with it (hysteresis holds)
    lingering, _ = run(one_label(min_duration=0.0, hold=1.0), [0.8, 0.8, 0.1, 0.45, 0.45, 0.45, 0.45])
    assert [(e.kind, e.t) for e in lingering] == [("start", pytest.approx(0.5)), ("end", pytest.approx(1.5))]
    with pytest.raises(ValueError, match="hold -1 must be a number of seconds >= 0"):
        one_label(hold=-1)


def test_thresholds_come_per_label_from_the_label_set():
    label_set = parse_label_set("name: t\nthreshold: 0.3\nlabels:\n  - quiet\n  - name: loud\n    threshold: 0.8\n")
    detector = EventDetector.from_label_set(label_set, min_duration=0.0)
    assert list(detector.thresholds) == [0.3, 0.8]
    starts = detector.update(0.5, np.array([0.5, 0.5]))
    assert [e.label for e in starts] == ["quiet"]
    assert [e.label for e in detector.update(1.0, np.array([0.1, 0.85]))] == ["quiet", "loud"]  # end, start
    assert [e.kind for e in detector.update(1.5, np.array([0.1, 0.85]))] == []


def test_ids_stay_unique_across_reset_and_bad_input_is_refused():
    detector = one_label(min_duration=0.0)
    assert detector.update(1.0, np.array([0.9]))[0].event_id == 1
    detector.reset()  # a new stream: times start again
    assert detector.active == []
    assert detector.update(0.5, np.array([0.9]))[0].event_id == 2
    with pytest.raises(ValueError, match="time went back from 0.5 s to 0.2 s"):
        detector.update(0.2, np.array([0.9]))
    with pytest.raises(ValueError, match=r"shape \(2,\), expected \(1,\)"):
        detector.update(1.0, np.array([0.9, 0.1]))
    with pytest.raises(ValueError, match="threshold 1.5 of label 'siren'"):
        EventDetector(["siren"], [1.5])
    with pytest.raises(ValueError, match="release_ratio 0"):
        EventDetector(["siren"], [0.5], release_ratio=0)


def test_embeddings_to_events_end_to_end():
    """Scorer -> Smoother -> EventDetector on embeddings near one label, then another."""
    rng = np.random.default_rng(1)
    labels = rng.normal(size=(4, 16)).astype(np.float32)
    labels /= np.linalg.norm(labels, axis=1, keepdims=True)
    scorer, smoother = Scorer(labels, ["a", "b", "c", "d"], logit_scale=30.0), Smoother(3)
    detector = EventDetector(["a", "b", "c", "d"], [0.5] * 4, min_duration=1.0)
    quiet = rng.normal(size=16) * 0.05  # near no label: nothing recognised
    plan = [quiet] * 4 + [labels[1]] * 8 + [quiet] * 6 + [labels[3]] * 6  # d still sounding at the end
    events, t = [], 0.0
    for i, audio in enumerate(plan):
        t = (i + 1) * HOP
        events += detector.update(t, smoother.update(scorer(audio)))
    events += detector.flush(t)
    assert [(e.kind, e.label) for e in events] == [("start", "b"), ("end", "b"), ("start", "d"), ("end", "d")]
    assert all(e.duration >= 1.0 for e in events if e.kind == "end")
