"""`semanticac-calibrate thresholds`: the fitted set keeps `listen` within the false-alarm budget."""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import calibrate.cli
from calibrate.recording import record
from calibrate.thresholds import allocate_budget, count_starts, fit_label, quiet_runs_dropped, shortest_decimal
from edge.bundle import read_bundle, shipped_bundle
from edge.labels.labelset import load_label_set, resolve_label_set
from edge.listen import ListenOptions, listen
from edge.outputs.sinks import PlainLines
from tests.calibrate.conftest import BUDGET, LISTEN, cli_options, needs_matplotlib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def events_started(labels: str, files) -> tuple[int, float]:
    """(events started, seconds) of `listen` over each file, each its own stream."""
    events, seconds = 0, 0.0
    for path in files:
        summary = listen(ListenOptions(labels=labels, input=str(path), fast=True, **LISTEN),
                         sink=PlainLines(io.StringIO()))
        assert summary.error is None
        events, seconds = events + summary.events, seconds + summary.seconds
    return events, seconds


# ---------------------------------------------------------------------------------------------
# the whole command on the demo bundle and a synthesised background


def test_thresholds_run_reports_every_label_and_the_skipped_file(thresholds_run):
    result = thresholds_run.result
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "2 file(s), 1 skipped as unreadable" in out  # broken.wav; notes.txt is no audio file
    assert "too short" not in out
    for name in resolve_label_set("urban").names:
        assert name in out
    assert "recall old" in out and f"wrote {thresholds_run.out}" in out
    assert "1 positive file(s) skipped as unreadable" in out
    assert "threshold(s) lowered" in out  # labels the background never triggers fall to 1/K
    siren = next(line.split() for line in out.splitlines() if line.startswith("siren "))
    assert siren[6] == "1"  # one readable siren clip: recall over it alone
    assert siren[7] == "100.0%"  # the demo model hears the synthetic siren at the shipped threshold


def test_site_file_keeps_the_labels_and_their_embeddings(thresholds_run):
    urban = resolve_label_set("urban")
    site = load_label_set(thresholds_run.out)
    assert site.sha256 == urban.sha256  # the bundle's labels/urban.npz stays valid
    assert site.name == urban.name and site.names == urban.names
    assert [label.prompts for label in site.labels] == [label.prompts for label in urban.labels]
    text = thresholds_run.out.read_text()
    assert text.startswith("# Label set 'urban' with per-label thresholds") and "--false-alarms-per-hour" in text
    assert "window 1 s, hop 1 s, smooth 2, min_duration 1 s, release 0.7, hold 0 s, agree 0.5" in text
    assert all(0 < label.threshold <= 1 for label in site.labels)
    assert site.agree == 0.5 and urban.agree is None  # fitted under --agree: the set keeps it
    assert site.fitted_for == {"window": 1.0, "hop": 1.0, "smooth": 2.0, "min_duration": 1.0, "release": 0.7,
                               "hold": 0.0}
    assert site.fitted_model == read_bundle(shipped_bundle()).meta.model_id and urban.fitted_model is None


def test_listen_warns_when_it_runs_a_site_set_with_other_settings(thresholds_run, background):
    """The thresholds hold for the settings they were fitted under: listen (and check-config, the
    service) says so when it runs with others; with the same, nothing."""
    from edge.listen import listen
    from tests.collect import Collect

    def notes(**options):
        sink = Collect()
        listen(ListenOptions(labels=str(thresholds_run.out), input=str(background / "street1.wav"), fast=True,
                             **{**LISTEN, **options}), sink=sink)
        return [s.message for s in sink.statuses if "fitted for other listen settings" in s.message]

    assert notes() == []
    said = notes(hop=0.5, smooth=3, min_level=-50.0)
    assert len(said) == 1 and "(hop 1 -> 0.5, smooth 2 -> 3, min_level off -> -50)" in said[0], said
    assert notes(hold=30.0) == []  # a longer hold than the fit's only merges events: fewer, never more


def test_a_hold_shorter_than_the_fit_s_is_said():
    from edge.labels.labelset import parse_label_set
    from edge.listen import fitted_notes

    site = parse_label_set("name: site\nfitted_for: {hold: 30}\nlabels: [siren]\n")
    options = ListenOptions(labels="site", hop=1.0)
    windowing = options.windowing(read_bundle(shipped_bundle()))
    assert fitted_notes(site, ListenOptions(labels="site", hold=30.0), windowing) == []
    [(level, said)] = fitted_notes(site, options, windowing)
    assert level == "warning" and "(hold 30 -> 0)" in said, said


def replayed_starts(stream, label_set, smooth) -> int:
    smoothed = stream.smoothed(smooth)
    return sum(count_starts([(stream.times, smoothed[:, k])], label.name, label.threshold, LISTEN["release"],
                            LISTEN["min_duration"]) for k, label in enumerate(label_set.labels))


def test_budget_forces_thresholds_up_and_listen_keeps_to_it(thresholds_run, background):
    files = [background / "street1.wav", background / "more" / "street2.flac"]
    site, urban = load_label_set(thresholds_run.out), resolve_label_set("urban")
    assert any(label.threshold > 0.5 for label in site.labels), "the background should force a threshold up"
    streams, _ = record(ListenOptions(labels="urban", input=str(files[0]), fast=True, **LISTEN), urban.names, files)
    for stream in streams:  # the replay (Smoother + one-label EventDetectors) starts what listen started
        assert replayed_starts(stream, urban, LISTEN["smooth"]) == stream.starts
    before, seconds = sum(s.starts for s in streams), sum(s.seconds for s in streams)
    budget = BUDGET * seconds / 3600.0
    assert before > budget, f"the shipped thresholds start {before} events: the test background is too quiet"
    after, _ = events_started(str(thresholds_run.out), files)
    assert after <= budget


def test_replay_with_a_level_gate_matches_listen(background):
    """Gated windows (under --min-level) count as zeros before smoothing, as in the listener. The
    gate closes on some of the car horn's windows too: the quiet ones' events read nothing either
    way, as the student alone hears nothing there (the demo bundle's vocabulary.head.agree)."""
    urban = resolve_label_set("urban")
    options = ListenOptions(labels="urban", input="x", fast=True, min_level=-15.0, **{**LISTEN, "hop": 0.5})
    [stream], _ = record(options, urban.names, [background / "street1.wav"])
    assert 0 < stream.gated.sum() < len(stream.gated)
    assert stream.starts > 0 and replayed_starts(stream, urban, LISTEN["smooth"]) == stream.starts
    ungated = dataclasses.replace(stream, gated=np.zeros_like(stream.gated))
    assert not np.array_equal(ungated.smoothed(2), stream.smoothed(2))


def test_replay_with_a_hold_matches_listen(background, tmp_path):
    """The thresholds a service's hold was fitted with: the replay (one-label detectors, quiet runs
    dropped) starts what listen with the same hold started, which merges some of what it starts
    without one (the street three times over: its sounds come back within the hold)."""
    import soundfile as sf

    audio, rate = sf.read(background / "street1.wav", dtype="float32")
    street = tmp_path / "street3.wav"
    sf.write(street, np.concatenate([audio] * 3), rate)
    urban = resolve_label_set("urban")
    starts = {}
    for hold in (0.0, 10.0):
        options = ListenOptions(labels="urban", input="x", fast=True, **{**LISTEN, "hold": hold})
        [stream], _ = record(options, urban.names, [street])
        smoothed = stream.smoothed(LISTEN["smooth"])
        replayed = sum(count_starts(quiet_runs_dropped([(stream.times, smoothed[:, k])], label.threshold * 0.7),
                                    label.name, label.threshold, LISTEN["release"], LISTEN["min_duration"], hold)
                       for k, label in enumerate(urban.labels))
        assert replayed == stream.starts, hold
        starts[hold] = stream.starts
    assert 0 < starts[10.0] < starts[0.0], starts  # the hold merged some: the test can tell


def test_a_positive_shorter_than_the_window_can_start_an_event(tmp_path):
    """Alone, a 3 s clip is one 5 s window: no event can last min_duration. Heard in a quiet
    stream (as a positive is), every window overlapping it is scored, as on the device."""
    import soundfile as sf

    from calibrate.recording import listen_in_silence, listen_to
    from edge.tools.demo import siren
    from tests.calibrate.conftest import RATE, scene

    clip = tmp_path / "siren.wav"
    sf.write(clip, scene(3, [(0, siren, 3, 0.5)], seed=7), RATE)
    urban = resolve_label_set("urban")
    options = ListenOptions(labels="urban", input="x", fast=True, **{**LISTEN, "window": None})  # 5 s windows
    alone = listen_to(options, urban.names, clip)
    assert len(alone.times) == 1 and alone.starts == 0
    heard = listen_in_silence(options, urban.names, clip)
    assert heard.name == str(clip) and heard.gated[0] and heard.gated[-1] and len(heard.times) >= 8
    k = urban.names.index("siren")
    assert count_starts([(heard.times, heard.smoothed(LISTEN["smooth"])[:, k])], "siren", 0.5, 0.7, 1.0) == 1
    # as at a site quiet a while: the smoothing of its first window averages `smooth` windows, not fewer
    # (one window of silence before it left a third of a 3-window average to the clip's first score alone)
    thrice = dataclasses.replace(options, smooth=3, hop=2.5)
    heard = listen_in_silence(thrice, urban.names, clip)
    first = int(np.argmin(heard.gated))  # the first window that hears the clip
    assert first >= 2 and heard.gated[:first].all()
    assert heard.smoothed(3)[first, k] == pytest.approx(heard.scores[first, k] / 3)


@needs_matplotlib
def test_false_alarm_plot_is_a_png(thresholds_run):
    assert thresholds_run.plot.read_bytes()[:8] == PNG_MAGIC


def test_join_makes_one_stream(background, tmp_path, caplog):
    out = tmp_path / "joined.yaml"
    with caplog.at_level(logging.INFO, logger="calibrate.progress"):
        result = CliRunner().invoke(calibrate.cli.main, [
            "thresholds", "--labels", "urban", "--background", str(background / "street1.wav"),
            "--background", str(background / "more" / "street2.flac"), "--join", "--only-raise",
            "--false-alarms-per-hour", "1e6", "--out", str(out), *cli_options(hop=2.0)])
    assert result.exit_code == 0, result.output
    # the one long listen has a progress of its own, in seconds of the stream
    heard = [r.getMessage() for r in caplog.records if r.getMessage().startswith("listening to 2 file(s) joined")]
    assert len(heard) >= 3 and heard[-1].split(": ")[1].startswith("24/24 (100 %"), heard
    assert "in 1 stream(s), 2 file(s)" in result.stdout
    seconds = float(result.stdout.split("background: ")[1].split(" s")[0])
    assert math.isclose(seconds, 24.0, abs_tol=0.05)
    assert "joined into one stream" in out.read_text()
    # a budget nothing exceeds: the lowest thresholds allowed, which --only-raise keeps at the set's own
    own = [label.threshold for label in resolve_label_set("urban").labels]
    assert [label.threshold for label in load_label_set(out).labels] == own
    assert "lowered" not in result.stdout


def test_each_file_its_own_stream_shows_progress_in_seconds_of_audio(background, tmp_path, caplog):
    """Without --join a site's day-long recording is one file: the bar counts its seconds, not files."""
    with caplog.at_level(logging.INFO, logger="calibrate.progress"):
        result = CliRunner().invoke(calibrate.cli.main, [
            "thresholds", "--labels", "urban", "--background", str(background / "street1.wav"),
            "--background", str(background / "more" / "street2.flac"), "--false-alarms-per-hour", "1e6",
            "--out", str(tmp_path / "x.yaml"), *cli_options(hop=2.0)])
    assert result.exit_code == 0, result.output
    heard = [r.getMessage().split(": ")[1] for r in caplog.records
             if r.getMessage().startswith("listening to background (seconds of audio)")]
    done = [int(line.split("/")[0]) for line in heard]
    # lines while the first file is heard (not only one per file), then all 24 s
    assert any(0 < n < 12 for n in done) and heard[-1].startswith("24/24 (100 %"), heard
    # the demo bundle scores each label on its own (sigmoid): by default a threshold is only raised
    own = [label.threshold for label in resolve_label_set("urban").labels]
    assert [label.threshold for label in load_label_set(tmp_path / "x.yaml").labels] == own
    assert "lowered" not in result.stdout and "--only-raise" in (tmp_path / "x.yaml").read_text()


def test_a_background_too_short_for_the_budget_is_said(background, tmp_path, caplog):
    """24 s at 1 false alarm per hour allows 0.0067 events: every threshold is set to start none,
    which measures no rate."""
    result = CliRunner().invoke(calibrate.cli.main, [
        "thresholds", "--labels", "urban", "--background", str(background / "street1.wav"),
        "--false-alarms-per-hour", "1", "--out", str(tmp_path / "x.yaml"), *cli_options(hop=2.0)])
    assert result.exit_code == 0, result.output
    assert "allows no event in it" in caplog.text and "record at least 1 h of the site" in caplog.text
    was = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.startswith("siren ")}
    assert int(was["siren"][4]) >= 1 and was["siren"][3] == "0"  # the siren started events at 0.5, none now


# ---------------------------------------------------------------------------------------------
# the search itself, on score sequences written by hand


def test_count_starts_uses_the_event_detector():
    times = np.arange(8, dtype=float)
    values = np.array([0.1, 0.8, 0.8, 0.1, 0.9, 0.2, 0.9, 0.9])
    seq = [(times, values)]
    assert count_starts(seq, "x", 0.5, 0.7, 1.0) == 2  # 0.8 0.8, then 0.9 0.9 (0.9 0.2: too short)
    assert count_starts(seq, "x", 0.5, 0.7, 0.0) == 3
    assert count_starts(seq, "x", 0.95, 0.7, 0.0) == 0


def test_dropping_quiet_runs_changes_no_count():
    rng = np.random.default_rng(0)
    for _ in range(20):
        values = np.clip(rng.random(200) ** 3 * 1.2, 0, 1)
        seq = [(np.arange(200) * 0.5, values)]
        floor = 0.1
        reduced = quiet_runs_dropped(seq, floor * 0.7)
        assert len(reduced[0][0]) < 200
        for threshold in (0.1, 0.2, 0.35, 0.5, 0.8):
            for min_duration in (0.0, 1.0):
                for hold in (0.0, 2.0, 10.0):  # a held event ends, or goes on, at the next window kept
                    assert count_starts(reduced, "x", threshold, 0.7, min_duration, hold) == \
                        count_starts(seq, "x", threshold, 0.7, min_duration, hold)
    held = count_starts(seq, "x", 0.5, 0.7, 0.0, 10.0)
    assert held < count_starts(seq, "x", 0.5, 0.7, 0.0, 0.0)  # the hold merges: the test above can tell


def test_fit_label_is_the_lowest_threshold_within_budget():
    times = np.arange(40, dtype=float)
    values = np.full(40, 0.05)
    values[5:10], values[20:25] = 0.6, 0.72  # two loud events of 5 s
    seq = [(times, values)]
    fit = fit_label(seq, "x", 0.5, budget=0.0, release=0.7, min_duration=1.0, min_threshold=0.1, hours=1.0)
    assert fit.met and fit.starts == 0 and 0.72 < fit.threshold <= 0.721
    one = fit_label(seq, "x", 0.5, budget=1.0, release=0.7, min_duration=1.0, min_threshold=0.1, hours=1.0)
    assert one.starts == 1 and 0.6 < one.threshold <= 0.601
    assert count_starts(seq, "x", one.threshold - 0.002, 0.7, 1.0) == 2  # just below: over budget
    free = fit_label(seq, "x", 0.5, budget=5.0, release=0.7, min_duration=1.0, min_threshold=0.1, hours=1.0)
    assert free.threshold == pytest.approx(0.1) and free.starts == 2
    stuck = fit_label([(times, np.ones(40))], "x", 0.5, budget=0.0, release=0.7, min_duration=1.0,
                      min_threshold=0.1, hours=1.0)
    assert stuck.threshold == 1.0 and not stuck.met
    # a score saturated at 1.0 that dips under 1.0 x release: 1.0 starts an event at each return,
    # 0.9 (release level 0.63) holds one long event: over budget at 1.0 is not a reason to pick 1.0
    dips = np.tile([1.0, 1.0, 1.0, 0.65], 30)
    saturated = [(np.arange(dips.size, dtype=float), dips)]
    assert count_starts(saturated, "x", 1.0, 0.7, 1.0) == 30 and count_starts(saturated, "x", 0.9, 0.7, 1.0) == 1
    held = fit_label(saturated, "x", 0.5, budget=2.0, release=0.7, min_duration=1.0, min_threshold=0.1, hours=1.0)
    assert held.met and held.starts == 1 and 0.6 < held.threshold < 0.93


def test_a_total_budget_cuts_the_false_alarms_that_cost_the_least_threshold(caplog):
    """Label a: two loud false alarms (0.9, 0.95); label b: two barely over its floor (0.55, 0.6).
    A set budget of 2 removes b's (threshold 0.5 -> 0.6) rather than a's (-> 0.95)."""
    times = np.arange(40, dtype=float)
    a, b = np.full(40, 0.05), np.full(40, 0.05)
    a[5:10], a[20:25] = 0.9, 0.95
    b[5:10], b[20:25] = 0.55, 0.6
    sequences = {0: [(times, a)], 1: [(times, b)]}

    def fit(k, events):
        return fit_label(sequences[k], "ab"[k], 0.5, events, release=0.7, min_duration=1.0, min_threshold=0.5,
                         hours=1.0)

    fits, met = allocate_budget(fit, 2, budget=2.0)
    assert met and [f.starts for f in fits] == [2, 0]
    assert fits[0].threshold == pytest.approx(0.5) and 0.6 < fits[1].threshold <= 0.601
    with caplog.at_level(logging.INFO, logger="calibrate.progress"):
        fits, met = allocate_budget(fit, 2, budget=1.0)  # then a's quieter one goes too
    assert met and [f.starts for f in fits] == [1, 0] and 0.9 < fits[0].threshold <= 0.901
    cut = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sharing the budget")]
    assert cut and cut[-1].split(": ")[1].startswith("3/3 (100 %"), cut  # 4 starts at the floors, budget 1
    stuck = {0: [(times, np.ones(40))], 1: [(times, b)]}
    fits, met = allocate_budget(lambda k, n: fit_label(stuck[k], "ab"[k], 0.5, n, 0.7, 1.0, 0.5, 1.0), 2, 0.0)
    assert not met and fits[0].starts == 1 and fits[1].starts == 0  # a cannot go lower even at 1.0


def test_no_threshold_tried_above_the_choice_is_over_budget():
    """Hysteresis makes the count non-monotone in the threshold: a higher threshold ends an event
    sooner and the sound may start a second one. The choice is safe against every tried threshold above it."""
    rng = np.random.default_rng(5)
    for _ in range(4):
        values = np.clip(0.5 + 0.35 * np.sin(np.arange(300) / 3.0) + 0.1 * rng.standard_normal(300), 0, 1)
        seq = [(np.arange(300) * 0.5, values)]
        fit = fit_label(seq, "x", 0.5, budget=3.0, release=0.7, min_duration=1.0, min_threshold=0.1, hours=1.0)
        assert fit.met and fit.starts <= 3
        assert all(n <= 3 for threshold, n in fit.curve if threshold >= fit.threshold)


def test_a_threshold_raised_past_one_within_budget_says_why():
    """Crickets at 0.5 started 1 event, within a budget of 1, and were raised to 0.917: between them one
    event splits in two. The table showed 'starts 1 was 1' and no reason; now a line gives it."""
    from calibrate.cli import raised_within_budget
    from calibrate.thresholds import LabelFit

    curve = [(0.5, 1), (0.6, 1), (0.734, 2), (0.85, 2), (0.917, 1), (0.95, 0)]
    fit = LabelFit("crickets", 0.5, 0.917, 1, 30.0, True, old_starts=1, curve=curve)
    assert raised_within_budget(fit, budget=1.0) == [
        "crickets: raised though 0.5 started 1, within the budget: from 0.734 to 0.85 the background starts up to 2 "
        "(a higher threshold ends an event sooner and the sound starts it again), and the fit takes a threshold "
        "that every higher one keeps within the budget"]
    assert raised_within_budget(dataclasses.replace(fit, old_starts=2), budget=1.0) == []  # it had to rise
    assert raised_within_budget(dataclasses.replace(fit, threshold=0.5), budget=1.0) == []  # not raised


def test_shortest_decimal():
    assert shortest_decimal(0.61734, 0.7) == 0.618
    assert shortest_decimal(0.6, 0.7) == 0.601
    assert shortest_decimal(0.123456, 0.1234565) == 0.1234561
    assert shortest_decimal(0.3, 0.3 + 1e-12) == 0.3 + 1e-12


# ---------------------------------------------------------------------------------------------
# errors: one line, no traceback, no file


def run(args):
    return CliRunner().invoke(calibrate.cli.main, ["thresholds", *args])


@pytest.mark.parametrize("budget", ["0", "-1", "nan", "inf"])
def test_budget_must_be_positive_and_finite(budget, background, tmp_path):
    result = run(["--labels", "urban", "--background", str(background), "--false-alarms-per-hour", budget,
                  "--out", str(tmp_path / "x.yaml")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--false-alarms-per-hour" in result.output and "finite number > 0" in result.output
    assert not (tmp_path / "x.yaml").exists()


def test_empty_background_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run(["--labels", "urban", "--background", str(tmp_path / "empty"), "--false-alarms-per-hour", "1",
                  "--out", str(tmp_path / "x.yaml")])
    assert result.exit_code == 1 and "no background audio files found" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "x.yaml").exists()


def test_unreadable_background_only_is_an_error_and_keeps_the_old_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    out = tmp_path / "site.yaml"
    out.write_text("previous content\n")
    result = run(["--labels", "urban", "--background", str(bad), "--false-alarms-per-hour", "1",
                  "--out", str(out), *cli_options()])
    assert result.exit_code == 1, result.output
    assert "holds no audio" in result.output and "1 unreadable file(s) skipped" in result.output
    assert str(bad) in result.output
    assert out.read_text() == "previous content\n"  # never a partial or replaced file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav", "site.yaml"]  # no temporary file


def test_positive_label_not_in_the_set(background, tmp_path):
    csv_path = tmp_path / "pos.csv"
    csv_path.write_text("path,label\nclip.wav,helicopter\n")
    result = run(["--labels", "urban", "--background", str(background), "--positives", str(csv_path),
                  "--false-alarms-per-hour", "1", "--out", str(tmp_path / "x.yaml")])
    assert result.exit_code == 1
    assert "['helicopter']" in result.output and "air_conditioner" in result.output
    assert not (tmp_path / "x.yaml").exists()


def test_label_set_without_labels(background, tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("name: site\nlabels: []\n")
    result = run(["--labels", str(empty), "--background", str(background), "--false-alarms-per-hour", "1",
                  "--out", str(tmp_path / "x.yaml")])
    assert result.exit_code == 1 and "labels: is empty" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_output_over_an_input_is_refused_before_listening(background, positives, tmp_path):
    street = background / "street1.wav"
    before = street.read_bytes(), positives.read_bytes()
    for extra, said in ((["--out", str(tmp_path / "x.yaml"), "--plot", str(street)],
                         "ends in .wav: the figure is written as .png, .pdf, .svg"),  # never a figure's name
                        (["--positives", str(positives), "--out", str(positives)],
                         f"--out {positives} is also given as --positives")):
        result = run(["--labels", "urban", "--background", str(background), "--false-alarms-per-hour", "1", *extra])
        assert result.exit_code == 2 and said in result.output and "Traceback" not in result.output, result.output
    assert (street.read_bytes(), positives.read_bytes()) == before and not (tmp_path / "x.yaml").exists()


def test_bad_listen_option_is_a_usage_error(background, tmp_path):
    result = run(["--labels", "urban", "--background", str(background), "--false-alarms-per-hour", "1",
                  "--out", str(tmp_path / "x.yaml"), "--release", "1.5"])
    assert result.exit_code == 2 and "--release" in result.output


@needs_matplotlib
@pytest.mark.parametrize("failing", ["plot", "yaml"])
def test_a_failing_write_leaves_no_file(background, tmp_path, monkeypatch, failing):
    """The figure and the site's set, all or nothing: a full disk at either is one line, no file."""
    import calibrate.labelfile
    import calibrate.plots

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(calibrate.plots if failing == "plot" else calibrate.labelfile,
                        "plot_false_alarms" if failing == "plot" else "write_label_set", broken)
    out, png = tmp_path / "site.yaml", tmp_path / "p.png"
    result = run(["--labels", "urban", "--background", str(background / "street1.wav"), "--false-alarms-per-hour",
                  "1", "--out", str(out), "--plot", str(png), *cli_options(hop=3.0)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"cannot write {png if failing == 'plot' else out}: No space left on device; nothing was written" \
        in result.output
    assert list(tmp_path.iterdir()) == []  # neither file, no temporary file either


def test_an_output_that_cannot_be_written_fails_before_listening(background, tmp_path, monkeypatch):
    import calibrate.thresholds

    monkeypatch.setattr(calibrate.thresholds, "fit_thresholds", lambda *a, **k: pytest.fail("listened"))
    (tmp_path / "file").write_text("a file, not a folder\n")
    for option in ("--out", "--plot"):
        paths = {"--out": str(tmp_path / "x.yaml"), "--plot": str(tmp_path / "x.png"), option: str(
            tmp_path / "file" / "x")}
        result = run(["--labels", "urban", "--background", str(background), "--false-alarms-per-hour", "1",
                      "--out", paths["--out"], "--plot", paths["--plot"]])
        assert result.exit_code == 2 and option in result.output and "cannot be written" in result.output, \
            result.output
        # why: a file stands where a folder must be (mkdir's own words were "File exists")
        assert f"({tmp_path / 'file'} is a file, not a folder)" in " ".join(result.output.split()), result.output


def test_plot_without_matplotlib_fails_before_listening(background, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run(["--labels", "urban", "--background", str(background), "--false-alarms-per-hour", "1",
                  "--out", str(tmp_path / "x.yaml"), "--plot", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "pip install matplotlib" in result.output
    assert list(tmp_path.iterdir()) == []


def test_files_too_short_for_an_event_are_flagged_and_only_short_ones_are_an_error(positives, background, tmp_path,
                                                                                   monkeypatch):
    clip = positives.parent / "clips" / "siren.wav"  # 5 s: one 5 s window, never min_duration long
    street = background / "street1.wav"  # 12 s: long enough
    result = run(["--labels", "urban", "--background", str(clip), "--background", str(street),
                  "--false-alarms-per-hour", "1", "--out", str(tmp_path / "x.yaml"), *cli_options(window=5.0)])
    assert result.exit_code == 0, result.output
    assert "1 background stream(s) too short for an event" in result.stdout and "--join" in result.stdout
    # only streams too short to start anything: nothing was measured, and any threshold would "pass"
    import soundfile as sf

    import calibrate.thresholds

    nearly = tmp_path / "nearly.wav"  # windows at 5 s only: within the headers' slack of the 6 s needed
    audio, rate = sf.read(street)
    sf.write(nearly, audio[: int(5.97 * rate)], rate)
    result = run(["--labels", "urban", "--background", str(nearly), "--false-alarms-per-hour", "1",
                  "--out", str(tmp_path / "y.yaml"), *cli_options(window=5.0)])
    assert result.exit_code == 1 and "every background stream (1, 6.0 s in all) is too short" in result.output
    assert "--join" in result.output and not (tmp_path / "y.yaml").exists()
    # files whose headers say so are refused before a second of them is heard (a folder of short clips
    # took a minute to be told to --join)
    heard = []
    monkeypatch.setattr(calibrate.thresholds, "record", lambda *a, **k: heard.append(a))
    again = tmp_path / "again.wav"
    again.write_bytes(clip.read_bytes())
    result = run(["--labels", "urban", "--background", str(clip), "--background", str(again),
                  "--false-alarms-per-hour", "1", "--out", str(tmp_path / "y.yaml"), *cli_options(window=5.0)])
    assert result.exit_code == 1 and heard == [] and not (tmp_path / "y.yaml").exists()
    assert "every background file (2, 10.0 s in all), each under the 6 s its windows need, is too short" in \
        result.output and "--join" in result.output


def test_a_set_over_its_total_budget_says_so_in_the_file(background, tmp_path, monkeypatch):
    """The header's budget line is a promise: a set the allocation could not bring within it says so
    (scores that sit at 1.0 are rare on real audio: the allocation is told it failed here)."""
    import calibrate.thresholds

    allocate = calibrate.thresholds.allocate_budget
    monkeypatch.setattr(calibrate.thresholds, "allocate_budget", lambda *a: (allocate(*a)[0], False))
    out = tmp_path / "site.yaml"
    result = run(["--labels", "urban", "--background", str(background / "street1.wav"), "--false-alarms-per-hour",
                  "1", "--total", "--out", str(out), *cli_options(hop=0.5)])
    assert result.exit_code == 0, result.output
    header = [line for line in out.read_text().splitlines() if line.startswith("#")]
    assert [line for line in header if "Over budget: the set starts 0 per hour even at these thresholds" in line]
    monkeypatch.setattr(calibrate.thresholds, "allocate_budget", allocate)
    result = run(["--labels", "urban", "--background", str(background / "street1.wav"), "--false-alarms-per-hour",
                  "1", "--total", "--out", str(out), *cli_options(hop=0.5)])
    assert result.exit_code == 0 and "Over budget" not in out.read_text(), result.output


def test_missing_positive_files_are_named_before_the_listening(background, positives, tmp_path, monkeypatch, caplog):
    import calibrate.thresholds

    def listening(*args, **kwargs):
        raise RuntimeError("listening")

    monkeypatch.setattr(calibrate.thresholds, "fit_thresholds", listening)
    with caplog.at_level(logging.WARNING, logger="calibrate.cli"):
        result = run(["--labels", "urban", "--background", str(background), "--positives", str(positives),
                      "--false-alarms-per-hour", "1", "--out", str(tmp_path / "x.yaml")])
    assert isinstance(result.exception, RuntimeError)
    warned = [r.getMessage() for r in caplog.records if "not found" in r.getMessage()]
    assert len(warned) == 1 and "1 of 3 file(s) not found" in warned[0] and "missing.wav" in warned[0], warned


def test_sigterm_removes_the_joined_background_and_writes_nothing(tmp_path):
    """`timeout`, a closed terminal or a CI job's end send SIGTERM: like Ctrl-C, the joined
    background's temporary file (gigabytes for a day of audio) goes, and no output is written."""
    import os
    import signal
    import subprocess
    import sys

    import soundfile as sf

    from tests.calibrate.conftest import RATE, scene

    folder = tmp_path / "bg"
    folder.mkdir()
    for i in range(4):
        sf.write(folder / f"part{i}.wav", scene(60, [], seed=i), RATE)
    temp = tmp_path / "tmp"
    temp.mkdir()
    out = tmp_path / "site.yaml"
    env = {**os.environ, "TMPDIR": str(temp), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("SEMANTICAC_BUNDLE", None)
    child = subprocess.Popen(
        [sys.executable, "-m", "calibrate", "-v", "thresholds", "--labels", "urban", "--background", str(folder),
         "--join", "--false-alarms-per-hour", "1", "--out", str(out), "--threads", "1"],
        stderr=subprocess.PIPE, text=True, env=env)
    for line in child.stderr:
        if "joined into one stream" in line:  # the joined file is written: now listening to it
            break
    assert list(temp.glob("semanticac-calibrate-*/joined.w64"))
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=60)
    assert child.returncode == 128 + signal.SIGTERM
    assert not list(temp.iterdir()) and not out.exists()


@pytest.mark.parametrize("at", ["made", "removed"])
def test_a_signal_while_a_temporary_folder_is_made_or_removed_leaves_nothing(tmp_path, monkeypatch, at):
    """A SIGTERM that lands between mkdtemp and the block that removes the folder, or inside the
    removal, waits until the folder is safe: the folder is gone and the exit still comes."""
    import os
    import shutil
    import signal
    import tempfile

    import calibrate.recording as recording

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real_mkdtemp, real_rmtree = tempfile.mkdtemp, shutil.rmtree

    def made_then_signalled(*args, **kwargs):
        folder = real_mkdtemp(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # the folder exists, the block that removes it has not begun
        return folder

    def signalled_then_removed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the files are being removed
        return real_rmtree(*args, **kwargs)

    if at == "made":
        monkeypatch.setattr(recording.tempfile, "mkdtemp", made_then_signalled)
    else:
        monkeypatch.setattr(recording.shutil, "rmtree", signalled_then_removed)
    previous = signal.signal(signal.SIGTERM, calibrate.cli._terminated)
    try:
        with pytest.raises(SystemExit) as info:
            with recording.temporary_folder() as folder:
                (folder / "padded.wav").write_bytes(b"x" * 1000)
                if at == "made":
                    pytest.fail("the signal held back at the folder's making came after the block began")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert info.value.code == 128 + signal.SIGTERM
    assert not list(tmp_path.iterdir())


def test_the_folder_of_a_run_killed_before_its_end_goes_at_the_next_run(tmp_path, monkeypatch):
    """A calibrate run killed with SIGKILL (or out of memory, or by a power cut) left its temporary folder:
    `--join` writes the whole background there (230 MB an hour), which no later run removed. A folder in
    use by a live run, and one just made, stay."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    import calibrate.recording as recording

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, tempfile; tempfile.tempdir = sys.argv[1]\n"
         "import calibrate.recording as r\n"
         "with r.temporary_folder() as f:\n"
         "    (f / 'joined.w64').write_bytes(b'x' * 100000); print(f, flush=True); time.sleep(60)\n", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    killed = Path(child.stdout.readline().strip())
    assert (killed / "joined.w64").is_file()
    with recording.temporary_folder() as live:
        assert recording.remove_left_behind(tmp_path) == 0 and killed.exists()  # its run still holds it
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        fresh = Path(tempfile.mkdtemp(prefix=recording.TEMPORARY))  # another run's, not yet held
        assert recording.remove_left_behind(tmp_path) >= 100000
        assert not killed.exists() and live.exists() and fresh.exists()
    old = time.time() - recording.LEFT_BEHIND_AGE - 10
    os.utime(fresh, (old, old))  # without a lock, a day old: an older version's
    assert recording.remove_left_behind(tmp_path) == 0 and not fresh.exists() and not list(tmp_path.iterdir())


def test_a_clipped_background_file_is_named(tmp_path, caplog):
    """Joined, the stream is a temporary file: clipping is said of the file it came from."""
    import soundfile as sf

    from tests.calibrate.conftest import RATE, scene

    # a 44.1 kHz recorder's short clipped peaks (12 samples flat at full scale): resampled to the
    # model's rate they are neither flat nor long enough any more, so the file itself is tested
    clipped = 0.1 * np.random.default_rng(5).standard_normal(6 * 44100)
    for start in range(1000, 6 * 44100 - 100, 12000):
        clipped[start:start + 12] = 1.0
    # and a second of a hard-clipped hum, flat long enough to stay clipped in the joined stream too
    clipped[-44100:] = np.clip(5 * np.sin(2 * np.pi * 100 * np.arange(44100) / 44100), -1.0, 1.0)
    noisy = np.clip(12 * scene(6, [], seed=7), -1.0, 1.0)  # full scale now and then, never for 8 samples: not clipped
    sf.write(tmp_path / "noisy.wav", noisy.astype(np.float32), RATE, subtype="FLOAT")
    sf.write(tmp_path / "loud.wav", clipped.astype(np.float32), 44100, subtype="FLOAT")
    sf.write(tmp_path / "quiet.wav", scene(6, [], seed=6), RATE)
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(calibrate.cli.main, [
            "thresholds", "--labels", "urban", "--background", str(tmp_path), "--join",
            "--false-alarms-per-hour", "1e6", "--out", str(tmp_path / "x.yaml"), *cli_options(hop=2.0)])
    assert result.exit_code == 0, result.output
    assert "joined.w64" not in caplog.text  # the temporary stream's own clipping lines are not said
    said = [r.getMessage() for r in caplog.records if "are clipped" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("1 background file(s) are clipped") and said[0].endswith(
        str(tmp_path / "loud.wav"))


def test_positives_leave_out_none_rows_and_name_the_fix_for_a_typo(background, positives, tmp_path, caplog):
    """A CSV shared with `scores` holds `none` rows: positives leave them out (with a word); a typo
    is an error whose fix fits this command."""
    shared = tmp_path / "shared.csv"
    shared.write_text("path,label\n" + "".join(f"{p},{l}\n" for p, l in [
        (positives.parent / "clips/siren.wav", "siren"), (background / "street1.wav", "none")]))
    args = ["thresholds", "--labels", "urban", "--background", str(background / "street1.wav"),
            "--false-alarms-per-hour", "1e6", "--out", str(tmp_path / "x.yaml"), *cli_options(hop=2.0)]
    result = CliRunner().invoke(calibrate.cli.main, [*args, "--positives", str(shared)])
    assert result.exit_code == 0, result.output
    assert "1 clip(s) labelled none left out" in caplog.text
    typo = tmp_path / "typo.csv"
    typo.write_text(f"path,label\n{positives.parent / 'clips/siren.wav'},sirne\n")
    result = CliRunner().invoke(calibrate.cli.main, [*args, "--positives", str(typo)])
    assert result.exit_code == 1 and "did you mean 'siren'?" in result.output
    assert "correct the label, or leave the row out" in result.output and "--others-are-none" not in result.output


def test_what_listen_says_of_the_set_is_said_once_not_per_file(background, tmp_path, caplog, monkeypatch):
    """listen warns at each start (here: a set calibrated before calibrations reached new labels);
    calibrate starts one listen per file: a 400-file background said it 400 times."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the new set is embedded there
    old = tmp_path / "old.yaml"
    old.write_text("name: old\ncalibration: {temperature: 1.5}\nlabels:\n  - siren\n  - name: kettle\n    bias: 1.0\n")
    folder = tmp_path / "bg"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.wav").write_bytes((background / "street1.wav").read_bytes())
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(calibrate.cli.main, [
            "thresholds", "--labels", str(old), "--background", str(folder), "--false-alarms-per-hour", "1e6",
            "--out", str(tmp_path / "x.yaml"), *cli_options(hop=2.0)])
    assert result.exit_code == 0, result.output
    said = [r for r in caplog.records if "was calibrated before" in r.getMessage()]
    assert len(said) == 1


def test_a_label_the_fit_leaves_deaf_to_its_positives_is_said_on_a_line_of_its_own(background, positives, tmp_path,
                                                                                     monkeypatch, caplog):
    """A budget the background forces up to 0.999 left `rain` no event on any positive (100 % -> 0 %): one
    cell of the table said so, and the set was written as if all were well."""
    import calibrate.thresholds

    def recalled(report, options, files):  # the listening of positives, as it came out there
        for fit in report.fits:
            fit.positives, fit.recall_old, fit.recall_new = 3, 1.0, 0.0 if fit is report.fits[0] else 2 / 3

    monkeypatch.setattr(calibrate.thresholds, "_positive_recall", recalled)
    with caplog.at_level(logging.WARNING, logger="calibrate.cli"):
        result = run(["--labels", "urban", "--background", str(background / "street1.wav"), "--positives",
                      str(positives), "--false-alarms-per-hour", "1", "--out", str(tmp_path / "x.yaml"),
                      *cli_options(hop=0.5)])
    assert result.exit_code == 0, result.output
    said = [r.getMessage() for r in caplog.records if "start no event on any of their positives" in r.getMessage()]
    first = resolve_label_set("urban").names[0]
    assert len(said) == 1 and said[0].startswith(f"1 label(s) start no event") and f": {first} (" in said[0], said


def test_a_background_damaged_further_on_counts_what_decoded(background, tmp_path, caplog):
    """A day's recording cut short (a recorder's battery ran out, a card pulled) was skipped whole after
    being listened to, though its message said the first seconds were scored: with `--join` and in `listen`
    what decoded counts, and so it does now."""
    whole = (background / "more" / "street2.flac").read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole[: len(whole) * 2 // 3] + b"\x00" * 4096)  # damaged two thirds in
    urban = resolve_label_set("urban")
    options = ListenOptions(labels="urban", input="x", fast=True, **LISTEN)
    with caplog.at_level(logging.WARNING, logger="calibrate.recording"):
        streams, skipped = record(options, urban.names, [cut])
    [stream] = streams
    assert not skipped and 4.0 < stream.seconds < 11.0 and len(stream.times) > 3, (stream.seconds, skipped)
    assert f"{cut}: " in caplog.text and "before the damage are counted" in caplog.text, caplog.text
    broken = background / "broken.wav"  # nothing decodes: skipped, as before
    streams, skipped = record(options, urban.names, [broken])
    assert not streams and [path for path, _ in skipped] == [broken]
