"""The listen pipeline's contracts: every option checked, every `start` ended, failures and
signals reported in one line, never a traceback.

The pipeline runs on the shipped demo bundle (no torch). Where an event must start whatever
the model hears, the `eager_labels` set (tests/conftest.py) is used.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import edge.cli
from edge.bundle import BUNDLE_ENV
from edge.capture.sources import Source
from edge.errors import AudioError, OptionError
from edge.listen import ListenOptions, listen
from tests.collect import Collect
from tests.signals import noise, tone

RATE = 16000
EDGE = str(Path(sys.executable).with_name("semanticac-edge"))





@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, np.concatenate([tone(700, 3.0, RATE), noise(3.0, RATE)]), RATE)
    return path


def cli(*args, stdin=None):
    result = CliRunner().invoke(edge.cli.main, list(args), input=stdin)
    assert "Traceback" not in result.output, result.output
    return result


def assert_usage_error(result, *texts):
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for text in texts:
        assert text in errors[0], errors[0]


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize("args, texts", [
    (["--hop", "inf"], ["--hop inf", "finite number of seconds > 0"]),
    (["--hop", "0"], ["--hop 0.0", "> 0"]),
    (["--window", "nan"], ["--window nan", "finite"]),
    (["--window", "0"], ["--window 0.0", "leave it out for the bundle's clip length"]),
    (["--window", "-2"], ["--window -2.0"]),
    (["--min-duration", "-5"], ["--min-duration -5.0", ">= 0"]),
    (["--min-duration", "inf"], ["--min-duration inf"]),
    (["--release", "1.5"], ["--release 1.5", "(0, 1]"]),
    (["--release", "nan"], ["--release nan"]),
    (["--agree", "1.5"], ["--agree 1.5", "a score in [0, 1] (0: events need no agreement)"]),
    (["--top-k", "0"], ["--top-k 0", ">= 1"]),
    (["--smooth", "0"], ["--smooth 0"]),
    (["--max-batch", "-1"], ["--max-batch -1"]),
    (["--threads", "0"], ["--threads 0"]),
    (["--threads", "100000"], ["--threads 100000", "core(s)"]),
    (["--window", "60"], ["--window 60", "longer than the model's input"]),
    (["--hop", "0.001"], ["--hop 0.001", "shorter than one frame"]),
])
def test_bad_option_values_are_usage_errors(demo_bundle, clip, args, texts):
    result = cli("listen", "--bundle", str(demo_bundle.path), "--labels", "urban", "--input", str(clip), "--fast",
                 *args)
    assert_usage_error(result, *texts)


def test_a_second_label_set_is_a_usage_error_not_silently_the_only_one(demo_bundle, clip):
    result = cli("listen", "--bundle", str(demo_bundle.path), "--labels", "urban", "--labels", "esc50",
                 "--input", str(clip), "--fast")
    assert_usage_error(result, "--labels", "given 2 times (urban, esc50): this command takes one label set")


@pytest.mark.parametrize("source, args, texts", [
    ("file", ["--device", "usb"], ["--device applies to the microphone", "not to --input FILE"]),
    ("file", ["--rate", "16000"], ["--rate applies to --input - (stdin) only"]),
    ("file", ["--format", "f32le"], ["--format applies to --input - (stdin) only"]),
    ("file", ["--channels", "2"], ["--channels applies"]),
    ("stdin", ["--rate", "16000", "--device", "usb"], ["--device applies to the microphone"]),
    ("stdin", ["--rate", "16000", "--fast"], ["--fast applies to --input FILE only"]),
    ("stdin", [], ["needs --rate"]),
    ("stdin", ["--rate", "10000000000"], ["--rate 10000000000 is not allowed: use a whole number from 1 to 768000"]),
    ("stdin", ["--rate", "16000", "--channels", "0"], ["--channels 0 is not allowed: use a whole number from 1 to 128"]),
    ("microphone", ["--fast"], ["--fast applies to --input FILE only", "not to the microphone"]),
    ("microphone", ["--rate", "16000"], ["--rate applies"]),
    ("file", ["--reconnect"], ["--reconnect applies to the microphone"]),
    ("file", ["--max-silence", "30"], ["--max-silence applies to the microphone"]),
    ("microphone", ["--backoff-max", "5"], ["--backoff-max", "--reconnect"]),
])
def test_options_of_another_source_are_usage_errors(demo_bundle, clip, source, args, texts):
    where = {"file": ["--input", str(clip)], "stdin": ["--input", "-"], "microphone": []}[source]
    result = cli("listen", "--bundle", str(demo_bundle.path), "--labels", "urban", *where, *args, stdin=b"")
    assert_usage_error(result, *texts)


def test_options_dataclass_names_the_option_and_holds_the_defaults():
    with pytest.raises(OptionError) as err:
        ListenOptions(labels="urban", hop=float("inf"))
    assert err.value.option == "hop"
    defaults = ListenOptions.defaults()
    assert defaults["hop"] == ListenOptions(labels="urban").hop == 1.0
    assert defaults["window"] is None and defaults["smooth"] >= 1 and 0 < defaults["release"] <= 1
    with pytest.raises(OptionError, match="--labels is required"):
        ListenOptions(labels="")


def test_a_hop_longer_than_the_window_warns(demo_bundle, clip):
    sink = Collect()
    summary = listen(ListenOptions(labels="urban", bundle=str(demo_bundle.path), input=str(clip), fast=True,
                                   window=2.0, hop=3.0), sink=sink)
    warnings = [s.message for s in sink.of("status") if s.level == "warning"]
    assert any("never analysed" in w and "hop 3 s" in w for w in warnings), warnings
    assert summary.windows == 3 and summary.error is None  # windows end at 2 and 5 s, and one with the file at 6 s
    infos = [s.message for s in sink.of("status") if s.level == "info"]
    assert any(i.startswith("--fast (a service: audio.fast): a date is this start plus") for i in infos), infos


@pytest.mark.parametrize("how", ["file", pytest.param("stdin", marks=pytest.mark.slow)])
def test_the_end_of_a_stream_is_heard_by_a_last_window_that_ends_with_it(demo_bundle, tmp_path, how):
    """Windows come every hop, so up to a hop of a stream's end fell after the last one: a sound in a
    file's last second was never scored. A last window now ends with the stream (its last frame
    centred on the last sample); a stream whose windows reach its end gets none."""
    quiet, loud = noise(8.0, RATE, amplitude=0.001), tone(700, 0.9, RATE)
    for x, ends in ((np.concatenate([quiet, loud]), [5.0, 6.0, 7.0, 8.0, 8.9]), (quiet[: 7 * RATE], [5.0, 6.0, 7.0])):
        if how == "file":
            path = tmp_path / "clip.wav"
            sf.write(path, x, RATE)
            args = ["--input", str(path), "--fast"]
            result = CliRunner().invoke(edge.cli.main, ["listen", "--bundle", str(demo_bundle.path), "--labels",
                                                        "urban", "--json", *args])
        else:
            result = CliRunner().invoke(edge.cli.main, ["listen", "--bundle", str(demo_bundle.path), "--labels",
                                                        "urban", "--json", "--input", "-", "--rate", str(RATE),
                                                        "--format", "f32le"], input=x.astype("<f4").tobytes())
        assert result.exit_code == 0, result.output
        windows = [json.loads(line) for line in result.stdout.splitlines() if '"type": "window"' in line]
        assert [round(w["t"], 2) for w in windows] == ends
        last = json.loads(result.stdout.splitlines()[-1])  # the stream's length: its samples, not a frame more
        assert last["type"] == "status" and last["t"] == len(x) / RATE, last
        if len(ends) == 5:  # the tone is in the last window alone: heard
            levels = [w["level_dbfs"] for w in windows]
            assert levels[-1] > -30 and max(levels[:-1]) < -40, levels


@pytest.mark.slow  # plays a file in real time
def test_a_backend_that_cannot_keep_up_drops_windows_says_so_at_most_once_a_while_and_when_it_is_over(
        demo_bundle, tmp_path, monkeypatch):
    """A machine that cannot keep up drops a window a hop; a status each (code overload) filled the event
    log's statuses, MQTT and the journal (4 a second). The first drop is said at once, then at most one
    status per OVERLOAD_STATUS_SECONDS with the drops since, and the summary counts them all. Once as long
    has passed without a drop, `overload_ended` says so with what it cost (it ends MQTT's problem), and a
    later overload is said at once again: the overload was never said to be over, so a lasting one was a
    line a minute for good and a passing one held its problem on MQTT for 15 minutes."""
    import re

    import edge.listen
    from edge.backends import select_backend
    from edge.bundle import read_bundle
    from edge.outputs.sinks import ENDS
    from tests.bundles import bundle_copy

    monkeypatch.setattr(edge.listen, "OVERLOAD_STATUS_SECONDS", 1.0)
    path = tmp_path / "clip.wav"
    sf.write(path, noise(9.0, RATE), RATE)
    # the audio graph alone (no vocabulary graph beside it), and in the fast phase its last answer again: a
    # machine loaded by other work (make test's, a benchmark's) kept dropping through a fast phase that ran
    # the graphs, and the overload never ended
    bundle = read_bundle(bundle_copy(demo_bundle, tmp_path / "bundle", lambda meta: meta.pop("vocabulary")))
    backend = select_backend(bundle, "onnxruntime")
    run, last = backend.run, []
    started = time.monotonic()
    # slow, then 3.5 s fast, then slow again
    slow = lambda: time.monotonic() - started < 2.0 or 5.5 <= time.monotonic() - started < 7.0  # noqa: E731

    def answer(feed):
        if slow():
            time.sleep(0.5)
        elif last:
            return last[0]
        last[:] = [run(feed)]
        return last[0]

    monkeypatch.setattr(backend, "run", answer)
    sink = Collect()
    summary = listen(ListenOptions(labels="urban", bundle=str(bundle.path), input=str(path), window=1.0,
                                   hop=0.2, max_batch=1), sink=sink, backend=backend)  # a file played in real time
    elapsed = time.monotonic() - started
    said = [(s.code, s.message) for s in sink.of("status") if s.code in ("overload", "overload_ended")]
    codes = [code for code, _ in said]
    assert ENDS["overload_ended"] == "overload"
    ended = codes.index("overload_ended")
    assert 0 < ended < len(codes) - 1 and codes[ended + 1:-1].count("overload_ended") == 0, \
        f"the first overload, its end, then a second (ended too if the last second had no drop): {said}"
    if codes[-1] == "overload_ended":
        said, codes = said[:-1], codes[:-1]
    counts = [int(re.search(r"dropped (\d+) (more )?window", m).group(1)) for c, m in said if c == "overload"]
    assert summary.dropped >= 6 and 2 <= len(counts) <= elapsed / 1.0 + 2 and len(counts) < summary.dropped, said
    for episode in (said[:ended], said[ended + 1:]):  # each said at once as it starts, then only what followed
        assert episode[0][1].startswith("inference fell behind: dropped "), said
        assert all(m.startswith("inference still falls behind: dropped ") for _, m in episode[1:]), said
    assert said[ended][1].startswith("inference keeps up again: no window dropped for 1 s"), said
    # the end counts the first overload's drops, those said and those since; the second counts on from there
    cost = int(re.search(r"(\d+) windows? dropped over the \d+ s it fell behind \((\d+) so far\)", said[ended][1])[1])
    assert cost >= sum(counts[:ended]) and f"({cost} so far)" in said[ended][1], said
    assert f"({cost + sum(counts[ended:])} so far" in said[-1][1] and cost + sum(counts[ended:]) <= summary.dropped, said


def test_digital_silence_in_a_file_is_not_asked_about_as_a_microphone(demo_bundle, tmp_path):
    """A recording with a long silent stretch was asked "is the microphone muted or unplugged?" (an input
    audit): a file's silence is said as the recording's."""
    path = tmp_path / "quiet.wav"
    sf.write(path, np.concatenate([noise(2.0, RATE), np.zeros(20 * RATE, np.float32)]), RATE)
    sink = Collect()
    listen(ListenOptions(labels="urban", bundle=str(demo_bundle.path), input=str(path), fast=True), sink=sink)
    said = [s.message for s in sink.of("status") if "digital silence for" in s.message]
    assert len(said) == 1 and "the recording holds no sound there" in said[0] and "microphone" not in said[0], said


def test_a_stop_while_a_label_set_is_embedded_ends_it_at_once_and_caches_nothing(demo_bundle, clip, tmp_path,
                                                                                monkeypatch):
    """A 90-label set takes 15 s to embed here (more on a small board) and SIGTERM waited for it: under
    systemd's TimeoutStopSec= a stop or restart during a first start was killed. The embedding now
    checks the stop between prompts: a stop, not a failure, and no partial set cached."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    labels = tmp_path / "many.yaml"
    labels.write_text("name: many\nlabels:\n" + "".join(f"  - sound number {k}\n" for k in range(3)))
    stop = threading.Event()
    stop.set()
    sink = Collect()
    summary = listen(ListenOptions(labels=str(labels), bundle=str(demo_bundle.path), input=str(clip), fast=True),
                     sink=sink, stop=stop)
    assert summary.end_reason == "stopped" and summary.error is None and summary.windows == 0
    assert not list((tmp_path / "cache").rglob("*.npz"))
    summary = listen(ListenOptions(labels=str(labels), bundle=str(demo_bundle.path), input=str(clip), fast=True),
                     sink=sink)  # not stopped: embedded, cached, heard
    assert summary.windows > 0 and len(list((tmp_path / "cache").rglob("many.npz"))) == 1


def test_a_file_in_real_time_says_nothing_of_fast_dates(demo_bundle, tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, tone(700, 1.0, RATE), RATE)
    sink = Collect()
    listen(ListenOptions(labels="urban", bundle=str(demo_bundle.path), input=str(short), window=1.0), sink=sink)
    assert not any("--fast" in s.message for s in sink.of("status"))


def test_stream_time_0_is_when_the_loop_starts_to_read_not_when_the_sink_was_made(demo_bundle, clip, monkeypatch):
    """A first start that embeds a label set (minutes on a Jetson) must not date every record early."""
    import io
    from datetime import datetime, timedelta, timezone

    import edge.listen
    from edge.outputs.sinks import FanOut, JsonLines

    slow = edge.listen.scorer_for

    def embedding_for_a_while(*args, **kwargs):
        time.sleep(0.5)
        return slow(*args, **kwargs)

    monkeypatch.setattr(edge.listen, "scorer_for", embedding_for_a_while)
    stream = io.StringIO()
    made = datetime.now(timezone.utc)
    sink = FanOut([JsonLines(stream)])  # as the service makes its outputs, before the model is loaded
    listen(ListenOptions(labels="urban", bundle=str(demo_bundle.path), input=str(clip), fast=True), sink=sink)
    windows = [r for r in map(json.loads, stream.getvalue().splitlines()) if r["type"] == "window"]
    origin = datetime.fromisoformat(windows[0]["utc"]) - timedelta(seconds=windows[0]["t"])
    assert origin - made >= timedelta(seconds=0.5), (made, origin)
    fixed = datetime(2026, 1, 1, tzinfo=timezone.utc)  # a sink made with an origin keeps it
    given = JsonLines(io.StringIO(), origin=fixed)
    given.start_clock(datetime.now(timezone.utc))
    assert given.origin == fixed


@pytest.mark.slow  # plays a 6 s file in real time
@pytest.mark.parametrize("synchronised", [False, True, "suspended"])
def test_a_live_stream_s_dates_follow_a_clock_that_steps(demo_bundle, clip, monkeypatch, synchronised):
    """NTP sets a Jetson's clock (no battery) minutes after boot: the dates of a stream that began
    before must follow it at once, not stay an hour off for months (nor for the minute between two
    drift checks). When the kernel said the clock was not synchronised, the run's earlier records
    are dated again too (the event log's), so retention never reads them as old. A real-time file
    is a live source."""
    import io
    from datetime import datetime, timedelta, timezone

    import edge.listen
    from edge.outputs.sinks import JsonLines

    # set by the first now() 2.5 s after the stream's start (its first now(): a start that loads the model
    # for longer, under load, did not date its first windows before the step); since_boot() moves with it
    # at that instant (each reading monotonic() itself, a thread switch between them under load showed a step)
    stepped_at, stepped = [], []

    class Stepped(datetime):  # the system clock: right at the start, an hour later after 2.5 s
        @classmethod
        def now(cls, tz=None):
            if not stepped_at:
                stepped_at.append(time.monotonic() + 2.5)
            if not stepped and time.monotonic() > stepped_at[0]:
                stepped.append(True)
            return datetime.now(tz) + (timedelta(hours=1) if stepped else timedelta(0))

    class Kept(JsonLines):
        def __init__(self, stream):
            super().__init__(stream)
            self.redated = []

        def redate(self, by):
            self.redated.append(by)

    monkeypatch.setattr(edge.listen, "datetime", Stepped)
    monkeypatch.setattr(edge.listen, "clock_synchronised", lambda: synchronised is not False)
    if synchronised == "suspended":  # an hour asleep: the time since boot moves on with the wall clock
        awake = edge.listen.since_boot
        monkeypatch.setattr(edge.listen, "since_boot",
                            lambda: awake() + (3600.0 if stepped else 0.0))
    stream = io.StringIO()
    started = datetime.now(timezone.utc)
    sink = Kept(stream)
    listen(ListenOptions(labels="urban", bundle=str(demo_bundle.path), input=str(clip), window=1.0, hop=0.5),
           sink=sink)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    moved = [r for r in records if r["type"] == "status" and r.get("code") == "clock_step"]
    if synchronised == "suspended":  # no step of the clock: the audio stopped with the system
        said = [r["message"] for r in records if r["type"] == "status" and "suspended" in r["message"]]
        assert said == ["the system was suspended for 3600 s: dates follow the clock from here"], records
        assert moved == [] and sink.redated == []
    else:
        assert len(moved) == 1 and moved[0]["message"].startswith("the system clock is +36"), moved  # +3600 s
        assert moved[0]["level"] == "warning"
    windows = [r for r in records if r["type"] == "window"]
    origins = [datetime.fromisoformat(w["utc"]) - timedelta(seconds=w["t"]) - started for w in windows]
    assert abs(origins[0].total_seconds()) < 2  # before the step: the clock as it was
    assert abs(origins[-1].total_seconds() - 3600) < 2  # after it: the clock as it is now
    after = [w["t"] for w, origin in zip(windows, origins) if origin.total_seconds() > 1800]
    assert after and min(after) < 2.5 + 1.0 + 1.0  # followed at the next read, not a minute later
    if synchronised is True:  # a clock already right was moved: the dates before stand
        assert sink.redated == [] and "move with it" not in moved[0]["message"]
    elif synchronised is False:
        assert len(sink.redated) == 1 and abs(sink.redated[0].total_seconds() - 3600) < 2
        assert "earlier dates in the event log move with it" in moved[0]["message"]


def test_an_agreement_that_checks_nothing_warns(demo_bundle, clip, tmp_path):
    """A set of new labels only is scored by the vocabulary alone: no head to agree with."""
    new = tmp_path / "new.yaml"
    new.write_text("name: new\nagree: 0.5\nlabels: [doorbell, whistle]\n")
    for labels, agree, warns in ((str(new), None, True), ("urban", 0.3, False)):
        sink = Collect()
        listen(ListenOptions(labels=labels, bundle=str(demo_bundle.path), input=str(clip), fast=True, agree=agree),
               sink=sink)
        warnings = [s.message for s in sink.of("status") if s.level == "warning"]
        assert any("agreement (--agree, agree: in the label set) has no effect" in w for w in warnings) == warns, warnings


def test_thresholds_fitted_under_another_agreement_warn(demo_bundle, tmp_path):
    """`--agree 0` on a set fitted under the bundle's agreement (0.5) lets every window of the head's
    mix count: more events than the fit measured, and nothing said (agree was not in fitted_for)."""
    fitted = tmp_path / "fitted.yaml"
    fitted.write_text("name: fitted\nfitted_for: {window: 5, hop: 1, smooth: 3, min_duration: 1, release: 0.7}\n"
                      "labels: [siren, dog_bark]\n")
    clip = tmp_path / "short.wav"  # the start says it: a window is enough
    sf.write(clip, noise(1.0, RATE), RATE)
    for agree, warns in ((0.0, True), (0.5, False)):  # (none given: the fit's own, nothing to say)
        sink = Collect()
        listen(ListenOptions(labels=str(fitted), bundle=str(demo_bundle.path), input=str(clip), fast=True,
                             agree=agree), sink=sink)
        said = [s.message for s in sink.of("status") if "fitted with the student's agreement" in s.message]
        assert bool(said) == warns, (agree, said)
        if warns:
            assert "fitted with the student's agreement 0.5, this run has --agree 0" in said[0], said


def test_thresholds_fitted_on_another_model_warn(demo_bundle, tmp_path):
    """A site set fitted on one model (calibrate writes fitted_model) and heard with another (a pip
    upgrade replaces the demo bundle: thresholds and temperature then fit a model that is gone)."""
    clip = tmp_path / "short.wav"
    sf.write(clip, noise(1.0, RATE), RATE)
    for model, warns in (("semanticac-yamnet-0123456789abcdef", True), (demo_bundle.meta.model_id, False)):
        fitted = tmp_path / "fitted.yaml"
        fitted.write_text(f"name: fitted\nfitted_model: {model}\nlabels: [siren, dog_bark]\n")
        sink = Collect()
        listen(ListenOptions(labels=str(fitted), bundle=str(demo_bundle.path), input=str(clip), fast=True), sink=sink)
        said = [s.message for s in sink.of("status") if "were fitted on model" in s.message]
        assert bool(said) == warns, (model, said)
        if warns:
            assert f"fitted on model {model}, and bundle {demo_bundle.path} is {demo_bundle.meta.model_id}" in said[0]


# --- every start gets its end, also when the source fails -------------------------------------


class FailingSource(Source):
    """A real Source whose producer delivers `audio`, then fails as a lost device does."""

    def __init__(self, audio: np.ndarray, message: str):
        super().__init__("test device", RATE, 1, RATE, buffer_seconds=30.0)
        self.audio, self.message = audio, message

    def _produce(self) -> None:
        self._put_waiting(self.audio[:, None])
        raise AudioError(self.message)


def assert_events_paired(records):
    starts = {e.event_id: e for e in records.of("start")}
    ends = {e.event_id: e for e in records.of("end")}
    assert starts and set(starts) == set(ends), (starts, ends)
    for event_id, end in ends.items():
        assert end.label == starts[event_id].label and end.t >= starts[event_id].t


def test_a_source_lost_mid_stream_ends_every_event_and_reports_the_cause(demo_bundle, eager_labels):
    audio = np.concatenate([tone(700, 4.0, RATE), noise(3.0, RATE)])
    sink = Collect()
    summary = listen(ListenOptions(labels=str(eager_labels), bundle=str(demo_bundle.path), min_duration=0.0),
                     sink=sink, source=FailingSource(audio, "test device vanished"))
    assert_events_paired(sink)
    errors = [s for s in sink.of("status") if s.level == "error"]
    assert len(errors) == 1 and errors[0].code == "source_error" and "test device vanished" in errors[0].message
    # the 7 s delivered before the failure are scored: windows end at 5, 6 and 7 s
    assert [round(w.t, 2) for w in sink.of("window")] == [5.0, 6.0, 7.0]
    assert summary.error == "test device vanished"
    # the error comes after every event's end
    last_end = max(i for i, (k, _) in enumerate(sink.records) if k == "end")
    error_at = next(i for i, (k, r) in enumerate(sink.records) if k == "status" and r.level == "error")
    assert last_end < error_at


def test_nan_samples_in_a_file_end_events_and_exit_1(demo_bundle, eager_labels, tmp_path):
    x = np.concatenate([tone(700, 6.0, RATE), noise(4.0, RATE)])
    x[int(8.5 * RATE)] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, RATE, subtype="FLOAT")
    result = cli("listen", "--bundle", str(demo_bundle.path), "--labels", str(eager_labels), "--input", str(path),
                 "--fast", "--json", "--min-duration", "0")
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    starts = {line["event_id"] for line in lines if line["type"] == "start"}
    ends = {line["event_id"] for line in lines if line["type"] == "end"}
    assert starts and starts == ends
    errors = [line for line in lines if line["type"] == "status" and line["level"] == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "source_error" and "the first at 8.500 s" in errors[0]["message"]
    windows = [line["t"] for line in lines if line["type"] == "window"]
    assert windows[-1] >= 8.0  # the audio before the bad sample was scored
    stderr_errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(stderr_errors) == 1 and "NaN or infinite" in stderr_errors[0]


# --- the shipped demo bundle says so ------------------------------------------------------


def test_the_demo_bundle_is_named_with_its_licence_first(clip, monkeypatch):
    monkeypatch.delenv(BUNDLE_ENV, raising=False)
    result = cli("listen", "--labels", "urban", "--input", str(clip), "--fast", "--json")
    assert result.exit_code == 0, result.output
    first = json.loads(result.stdout.splitlines()[0])
    assert first["type"] == "status" and "demo bundle" in first["message"]
    assert "CC BY-NC" in first["message"] and "non-commercial" in first["message"]


def test_an_explicit_bundle_is_not_called_the_demo(demo_bundle, clip):
    result = cli("listen", "--bundle", str(demo_bundle.path), "--labels", "urban", "--input", str(clip), "--fast",
                 "--json")
    statuses = [json.loads(line)["message"] for line in result.stdout.splitlines() if '"status"' in line]
    assert statuses and not any("demo bundle" in s for s in statuses)


# --- signals and standard streams, in a real process ----------------------------------------


def edge_process(*args, shell_redirect: str = "", **popen):
    """`semanticac-edge ARGS` in a real process; `shell_redirect` is appended in bash (`<&-`, ...)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if shell_redirect:
        command = " ".join(["exec", *map(_quote, [EDGE, *args]), shell_redirect])
        return subprocess.Popen(["bash", "-c", command], env=env, stderr=subprocess.PIPE, text=True, **popen)
    return subprocess.Popen([EDGE, *args], env=env, stderr=subprocess.PIPE, text=True, **popen)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def on_terminal(*args, stderr_to=None) -> tuple[str, str]:
    """`semanticac-edge ARGS` with stdout (and stderr, unless `stderr_to` is a pipe) on a pseudo-terminal, as
    in a shell: (what the terminal showed, what the pipe got)."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([EDGE, *args], env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
                                stdout=slave, stderr=slave if stderr_to is None else stderr_to, text=True)
        os.close(slave)
        shown = bytearray()
        while True:  # until the process's end closes the terminal's last writer
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: no writer is left
                break
            if not chunk:
                break
            shown += chunk
        _, piped = proc.communicate(timeout=60)
    finally:
        os.close(master)
    return shown.decode(errors="replace"), piped or ""


@pytest.mark.slow  # two real processes on a pseudo-terminal
def test_a_warning_shows_once_in_a_shell_and_on_each_stream_when_one_is_redirected(demo_bundle, clip):
    args = ("listen", "--bundle", str(demo_bundle.path), "--labels", "urban", "--input", str(clip), "--fast",
            "--window", "2", "--hop", "3")
    shown, _ = on_terminal(*args)
    assert shown.count("never analysed") == 1, shown  # the status line alone: the log line would repeat it
    shown, piped = on_terminal(*args, stderr_to=subprocess.PIPE)
    assert shown.count("never analysed") == 1 and piped.count("never analysed") == 1, (shown, piped)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_stdin_is_idle_stops_cleanly(demo_bundle, sig):
    proc = edge_process("listen", "--bundle", str(demo_bundle.path), "--labels", "urban", "--input", "-",
                        "--rate", "16000", "--json", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        line = proc.stdout.readline()  # the first status: the pipeline is reading stdin now
        assert '"listening to stdin' in line, line
        time.sleep(0.3)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Fatal Python error" not in err and "Traceback" not in err, err
    assert '"stopped (asked to stop' in out or "stopped" in out


@pytest.mark.parametrize("data", [b"", b"\x01"])
def test_stdin_that_ends_before_a_frame_is_a_failure_not_a_stream_heard(demo_bundle, data):
    """A recorder that dies at once: "0 windows" and exit 0 looked like success (an empty file fails)."""
    result = cli("listen", "--bundle", str(demo_bundle.path), "--labels", "urban", "--input", "-", "--rate", "16000",
                 stdin=data)
    assert result.exit_code == 1 and "stdin closed before a whole frame of audio arrived" in result.output
    # one frame is a frame, though at 96 kHz it resamples to no sample of the model's rate
    result = cli("listen", "--bundle", str(demo_bundle.path), "--labels", "urban", "--input", "-", "--rate", "96000",
                 stdin=b"\x00\x00")
    assert "stdin closed before" not in result.output, result.output


def test_closed_stdin_is_one_line(demo_bundle):
    proc = edge_process("listen", "--bundle", str(demo_bundle.path), "--labels", "urban", "--input", "-",
                        "--rate", "16000", shell_redirect="<&-", stdout=subprocess.DEVNULL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert stderr_lines(err) == [line for line in stderr_lines(err) if "stdin is closed" in line] != [], err


@pytest.mark.parametrize("redirect, text", [(">&-", "stdout is closed"),
                                            (">/dev/full", "cannot write results to stdout: No space left")])
def test_closed_or_full_stdout_is_one_line(demo_bundle, clip, redirect, text):
    proc = edge_process("listen", "--bundle", str(demo_bundle.path), "--labels", "urban", "--input", str(clip),
                        "--fast", "--json", shell_redirect=redirect)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    lines = stderr_lines(err)
    assert len(lines) == 1 and text in lines[0], err


def test_a_reader_that_goes_away_is_a_quiet_stop(demo_bundle, clip):
    proc = edge_process("listen", "--bundle", str(demo_bundle.path), "--labels", "urban", "--input", str(clip),
                        "--fast", "--json", shell_redirect="| head -n 1 >/dev/null")
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err and "Exception ignored" not in err, err


# --- the heartbeat (the service's watchdog) ----------------------------------------------------


class Pausing:
    """Delegates to a real backend; the `stall`-th run blocks until `release` is set."""

    def __init__(self, backend, stall: int):
        self.backend, self.stall, self.calls = backend, stall, 0
        self.stalled, self.release = threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.backend.close()

    def run(self, inputs):
        self.calls += 1
        if self.calls == self.stall:
            self.stalled.set()
            self.release.wait(30)
        return self.backend.run(inputs)


def test_the_heartbeat_beats_from_the_loop_and_stops_while_inference_hangs(demo_bundle, tmp_path):
    from edge.backends import select_backend

    clip = tmp_path / "long.wav"
    sf.write(clip, noise(30.0, RATE), RATE)
    backend = Pausing(select_backend(demo_bundle, "onnxruntime", threads=1), stall=2)
    beats: list[float] = []
    options = ListenOptions(labels="urban", bundle=str(demo_bundle.path), input=str(clip), fast=True, max_batch=1)
    run = threading.Thread(
        target=listen,
        args=(options,),
        kwargs=dict(sink=Collect(), backend=backend, heartbeat=lambda: beats.append(time.monotonic())),
    )
    run.start()
    assert backend.stalled.wait(30)
    during = len(beats)
    time.sleep(1.0)
    assert len(beats) == during  # a hung inference: no beat
    backend.release.set()
    run.join(30)
    assert not run.is_alive() and len(beats) > during and during >= 1


# --- device supervision: a lost source is reopened (the service's microphone) -----------------
# Real sources and the real loop; tests/edge/service/test_supervision.py loses a real PulseAudio
# device the same ways.


@pytest.mark.parametrize("kwargs, option, text", [
    (dict(input="clip.wav", reconnect=True), "reconnect", "--reconnect applies to the microphone"),
    (dict(input="-", rate=16000, max_silence=30.0), "max_silence", "--max-silence applies to the microphone"),
    (dict(stale_seconds=0.0), "stale_seconds", "--stale-seconds 0.0"),
    (dict(max_silence=float("nan")), "max_silence", "--max-silence nan"),
    (dict(reconnect=True, backoff_max=-1.0), "backoff_max", "--backoff-max -1.0"),
    (dict(backoff_max=5.0), "backoff_max", "--backoff-max applies with --reconnect only"),
])
def test_supervision_options_are_checked(kwargs, option, text):
    with pytest.raises(OptionError) as err:
        ListenOptions(labels="urban", **kwargs)
    assert err.value.option == option and text in str(err.value)
    supervised = ListenOptions(labels="urban", reconnect=True, max_silence=30.0, backoff_max=10.0)
    assert supervised.source_kind == "microphone" and ListenOptions.defaults()["reconnect"] is False


def test_reopening_backs_off_exponentially_with_jitter_up_to_the_cap():
    from edge.listen import BACKOFF_FIRST, Reconnect

    reconnect = Reconnect(reopen=lambda: None, backoff_max=8.0)
    assert reconnect.delay(0) == 0.0  # the first try at once
    for tries in range(1, 40):
        cap = min(8.0, BACKOFF_FIRST * 2 ** (tries - 1))
        waits = [reconnect.delay(tries) for _ in range(50)]
        assert all(cap / 2 <= w <= cap for w in waits), (tries, min(waits), max(waits))
        assert len(set(waits)) > 1  # jittered: devices that lost one server do not retry in step


class Clip(Source):
    """A real Source delivering `audio` in 0.1 s blocks (at wall-clock pace when `live`), then
    failing with `fail` as an unplugged microphone does, or ending."""

    def __init__(self, audio: np.ndarray, fail: str | None = None, live: bool = False):
        super().__init__("test microphone", RATE, 1, RATE, buffer_seconds=30.0)
        self.audio, self.fail, self.live = audio, fail, live
        self.started = 0.0

    def _start_producer(self) -> None:
        self.started = time.monotonic()
        super()._start_producer()

    def _produce(self) -> None:
        for block in np.array_split(self.audio[:, None], max(1, self.audio.size // (RATE // 10))):
            if self.live:
                if self._stopping.wait(len(block) / RATE):
                    return
                self._ring.write(block)
            elif not self._put_waiting(block):
                return
        if self.fail:
            raise AudioError(self.fail)


class Supervised:
    """The loop as `listen` builds it, over 1 s windows every 0.5 s and the eager label set."""

    def __init__(self, bundle, labels, max_silence=None):
        from edge.backends import select_backend
        from edge.events import EventDetector
        from edge.features import Windowing
        from edge.labels.embeddings import label_embeddings_for
        from edge.labels.labelset import resolve_label_set
        from edge.listen import Listener
        from edge.scoring import Scorer, Smoother

        label_set = resolve_label_set(str(labels))
        self.sink, self.beats = Collect(), []
        self.backend = select_backend(bundle, "onnxruntime", threads=1)
        self.listener = Listener(
            bundle, self.backend, Scorer.for_bundle(bundle.meta, label_embeddings_for(bundle, label_set), label_set),
            EventDetector.from_label_set(label_set, min_duration=0.0), Smoother(1), self.sink,
            Windowing.from_seconds(bundle.meta.frontend, 1.0, 0.5), max_silence=max_silence)

    def run(self, source, stop=None, reconnect=None):
        self.tapped = []  # (source, stream time of its first sample): what a clip recorder is given

        def tap(source, t):
            self.tapped.append((source, t))
            return source

        with self.backend:
            return self.listener.run(source, stop, heartbeat=lambda: self.beats.append(time.monotonic()),
                                     reconnect=reconnect, tap=tap)

    def coded(self):
        return [s for s in self.sink.statuses if s.code]

    def run_lost_until_stopped(self, reconnect, seconds):
        """Run with the device lost from the start for `seconds`, then stop: (whether the loop
        ended within 2 s of the stop, its summary)."""
        stop, out = threading.Event(), {}
        thread = threading.Thread(target=lambda: out.update(summary=self.run(None, stop, reconnect)))
        thread.start()
        time.sleep(seconds)
        stop.set()
        thread.join(2.0)  # the waits watch `stop` every READ_SECONDS
        return not thread.is_alive(), out.get("summary")


def test_a_lost_source_is_reopened_with_backoff_and_stream_time_goes_on(demo_bundle, eager_labels):
    from edge.listen import BACKOFF_FIRST, Reconnect

    first = Clip(tone(700, 1.5, RATE), fail="test microphone unplugged", live=True)
    second = Clip(tone(700, 1.5, RATE))
    tries = []

    def reopen():
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise AudioError(f"no input device 'test microphone' (try {len(tries)})")
        return second

    run = Supervised(demo_bundle, eager_labels)
    summary = run.run(first, reconnect=Reconnect(reopen, backoff_max=1.0))
    assert summary.error is None and summary.end_reason == "end of stream"
    lost, restored = run.coded()
    assert lost.code == "audio_lost" and lost.level == "warning" and "test microphone unplugged" in lost.message
    assert restored.code == "audio_restored" and restored.level == "info"
    assert "test microphone" in restored.message and "s lost" in restored.message
    # every event open at the loss ended before it was reported
    assert_events_paired(run.sink)
    at = {id(record): i for i, (_, record) in enumerate(run.sink.records)}
    before = [e for e in run.sink.events if at[id(e)] < at[id(lost)]]
    assert before and {e.event_id for e in before if e.kind == "start"} == {
        e.event_id for e in before if e.kind == "end"}
    # tried at once, then after waits of at least the lower bound of their jitter, beating meanwhile
    assert len(tries) == 3 and min(np.diff(tries)) >= BACKOFF_FIRST / 2
    waiting = [b for b in run.beats if tries[0] <= b <= tries[2]]
    assert len(waiting) >= 3 and np.diff(waiting).max() < 1.0
    # stream time goes on with the wall clock across the gap; each segment counts its own windows
    windows = [w.t for w in run.sink.windows]
    assert windows == sorted(windows)
    assert abs(restored.t - (second.started - first.started)) < 0.3, (restored.t, second.started - first.started)
    after = [round(t - restored.t, 3) for t in windows if t > restored.t]
    assert after == [round(t, 3) for t in windows if t <= lost.t] == [1.0, 1.5]
    # each source read was tapped, at the stream time its segment starts
    assert [(source, round(t, 1)) for source, t in run.tapped] == [(first, 0.0), (second, round(restored.t, 1))]


class Busy(Clip):
    """A device found, whose stream fails as it starts (held by another program at a boot)."""

    def _start_producer(self) -> None:
        raise AudioError("cannot open test microphone at 16000 Hz, 1 channel(s): Device unavailable: is another "
                         "program holding it?")


def test_a_device_that_fails_as_it_first_starts_is_reopened_as_a_lost_one(demo_bundle, eager_labels):
    """Only a reopen went through the supervision: a device found at the start whose stream failed to
    start (busy) ended the run (exit 1, a restart by systemd every few seconds, the model loaded again)."""
    from edge.listen import Reconnect

    later = Clip(tone(700, 1.5, RATE))
    run = Supervised(demo_bundle, eager_labels)
    summary = run.run(Busy(tone(700, 1.5, RATE)), reconnect=Reconnect(lambda: later, backoff_max=1.0))
    assert summary.error is None and summary.end_reason == "end of stream"
    lost, restored = run.coded()
    assert lost.code == "audio_lost" and "Device unavailable" in lost.message and restored.code == "audio_restored"
    assert [w.t for w in run.sink.windows if w.t > restored.t], "the device that came back was not heard"
    alone = Supervised(demo_bundle, eager_labels)  # without supervision (a shell): the run's error, exit 1
    summary = alone.run(Busy(tone(700, 1.5, RATE)))
    assert "Device unavailable" in summary.error and [s.code for s in alone.sink.statuses if s.code] == ["source_error"]


def test_a_device_missing_from_the_start_is_retried_until_stop(demo_bundle, eager_labels):
    from edge.listen import Reconnect

    tries = []

    def reopen():
        tries.append(time.monotonic())
        raise AudioError("no input device 'usb mic'; input devices are 0: 'pulse'")

    run = Supervised(demo_bundle, eager_labels)
    ended, summary = run.run_lost_until_stopped(Reconnect(reopen, 30.0), 1.2)
    assert ended, "the loop did not stop while waiting to reopen the device"
    assert len(tries) == 2  # at once, after 0.5-1 s, then not before 1-2 s more: no retry storm
    assert [(s.code, "'usb mic'" in s.message) for s in run.coded()] == [("audio_lost", True)]  # reported once
    assert summary.end_reason == "stopped" and summary.error is None
    assert not any("listening to" in s.message for s in run.sink.statuses)


def test_a_portaudio_close_stuck_for_minutes_ends_the_run_so_a_fresh_process_starts(demo_bundle, eager_labels,
                                                                                     monkeypatch):
    """A close that never returns (a deadlock inside libpulse) stops every rescan for the life of
    the process: once it has been stuck STUCK_CLOSE_SECONDS and the device still cannot be
    reopened, the run fails (exit 1; the unit restarts the service) instead of trying for ever."""
    import edge.listen
    from edge.listen import Reconnect

    stuck = [0.0]
    monkeypatch.setattr(edge.listen, "stuck_close_seconds", lambda: stuck[0])
    tries = []

    def reopen():
        tries.append(1)
        if len(tries) == 2:
            stuck[0] = edge.listen.STUCK_CLOSE_SECONDS  # the close left behind has hung this long now
        raise AudioError("no input device 'usb mic'")

    run = Supervised(demo_bundle, eager_labels)
    ended, summary = run.run_lost_until_stopped(Reconnect(reopen, 0.2), 1.0)
    assert ended and len(tries) == 2
    assert summary.error.startswith("PortAudio has been stuck closing the lost device for 300 s")
    assert run.coded()[-1].code == "source_error"


def test_a_reopen_the_sound_server_never_answers_does_not_hang_the_loop(demo_bundle, eager_labels, monkeypatch):
    """A SIGSTOPped PulseAudio blocks PortAudio's open for good: each try is given up after
    OPEN_SECONDS, no second one starts while the first is stuck, the loop beats throughout, and
    a stop is heard at once."""
    import edge.listen
    from edge.listen import Reconnect

    monkeypatch.setattr(edge.listen, "OPEN_SECONDS", 0.6)
    hung, tries = threading.Event(), []

    def reopen():
        tries.append(time.monotonic())
        hung.wait(30)  # the sound server does not answer
        raise AudioError("too late")

    run = Supervised(demo_bundle, eager_labels)
    ended, summary = run.run_lost_until_stopped(Reconnect(reopen, 0.5), 2.5)
    hung.set()
    assert ended, "the loop hung in the reopen"
    assert len(tries) == 1  # the stuck try is not joined by another in PortAudio
    beats = [b for b in run.beats if b >= tries[0]]
    assert len(beats) >= 5 and np.diff(beats).max() < 1.0  # the watchdog went on
    lost = [s for s in run.coded() if s.code == "audio_lost"]
    assert len(lost) == 1 and "did not finish within 0.6 s (the sound server is not responding)" in lost[0].message
    assert summary.end_reason == "stopped" and summary.error is None


def test_a_device_given_by_index_is_reopened_only_while_the_index_names_it(monkeypatch):
    """After a replug PortAudio can renumber the devices: `--device 1` must not carry on with
    another microphone; `--device usb` follows whichever device the name matches."""
    from types import SimpleNamespace

    import edge.listen
    from edge.capture.sources import MicrophoneSource
    from edge.listen import reopener

    def mic(name):
        source = MicrophoneSource.__new__(MicrophoneSource)  # no PortAudio: only its device is read
        source.device = SimpleNamespace(name=name)
        return source

    now = {"device": "USB Audio 1"}
    monkeypatch.setattr(edge.listen, "open_source", lambda options, frontend, rescan=False: mic(now["device"]))
    first = ["USB Audio 1"]  # the name of the device opened at the start
    by_index = reopener(ListenOptions(labels="urban", device="1", reconnect=True), None, first)
    by_name = reopener(ListenOptions(labels="urban", device="usb", reconnect=True), None, first)
    assert by_index().device.name == "USB Audio 1"  # the same device: reopened
    now["device"] = "HDMI capture"
    with pytest.raises(AudioError, match="input device 1 is now 'HDMI capture', not 'USB Audio 1'"):
        by_index()
    assert by_name().device.name == "HDMI capture"  # a name is the user's choice of what to follow
    missing_at_start = []  # then the first device reopened is the one to keep to
    late = reopener(ListenOptions(labels="urban", device="1", reconnect=True), None, missing_at_start)
    assert late().device.name == "HDMI capture"
    now["device"] = "USB Audio 1"
    with pytest.raises(AudioError, match="input device 1 is now 'USB Audio 1', not 'HDMI capture'"):
        late()


def test_input_clipping_is_a_status_the_outputs_see_at_most_every_ten_minutes(demo_bundle, eager_labels):
    """A gain set too high for months was only a log line: now a status with code "clipping"
    (the event log keeps it, metrics count it, the service's STATUS= shows it), not repeated
    for every clipped block."""
    square = np.sign(np.sin(2 * np.pi * 50 * np.arange(2 * RATE) / RATE)).astype(np.float32)  # flat at 1.0
    audio = np.concatenate([square, 0.1 * tone(700, 1.0, RATE), square])  # clips twice, a second apart
    run = Supervised(demo_bundle, eager_labels)
    summary = run.run(Clip(audio))
    assert summary.error is None
    clipping = [s for s in run.coded() if s.code == "clipping"]
    assert len(clipping) == 1 and clipping[0].level == "warning", run.coded()
    assert "test microphone clips:" in clipping[0].message
    # the fix is the source's: a file is clipped as it is; a microphone's gain can be lowered
    from edge.capture.sources import MicrophoneSource

    assert "the recording is clipped as it is" in clipping[0].message
    assert "lower its input gain (alsamixer" in MicrophoneSource.clipping_fix


@pytest.mark.slow  # waits out one real backoff (2.5-5 s)
def test_a_source_lost_to_digital_silence_is_reopened_at_once(demo_bundle, eager_labels, monkeypatch):
    """A muted microphone was open and read during its max_silence: it is reopened without a
    backoff wait (which would miss up to --backoff-max of audio after the unmute); a try that
    fails to open still backs off."""
    import edge.listen as listen_module
    from edge.listen import Reconnect

    monkeypatch.setattr(listen_module, "BACKOFF_FIRST", 5.0)  # a wait would be 2.5-5 s
    silent = [Clip(np.zeros(RATE, np.float32)) for _ in range(2)]
    tries = []

    def reopen():
        tries.append(time.monotonic())
        if len(tries) == 1:
            return silent[1]  # muted still: lost again
        if len(tries) == 2:
            raise AudioError("no input device 'test microphone'")  # unplugged meanwhile: backs off
        return Clip(tone(700, 1.5, RATE))

    run = Supervised(demo_bundle, eager_labels, max_silence=0.5)
    began = time.monotonic()
    summary = run.run(silent[0], reconnect=Reconnect(reopen, backoff_max=60.0))
    assert summary.error is None and len(tries) == 3
    assert [s.code for s in run.coded()] == ["audio_lost", "audio_restored"]
    assert tries[1] - tries[0] < 2.0 and tries[0] - began < 2.0  # silence: no wait (each took ~0.5 s of audio)
    assert tries[2] - tries[1] >= 2.5  # a failed open: the backoff


def test_digital_silence_beyond_max_silence_is_a_lost_source(demo_bundle, eager_labels):
    run = Supervised(demo_bundle, eager_labels, max_silence=1.0)
    summary = run.run(Clip(np.zeros(3 * RATE, np.float32)))  # no reconnect: the failure contract
    assert "only digital silence for 1 s" in summary.error
    assert [s.code for s in run.coded()] == ["source_error"]
    # the silence read before the loss (at least the 1 s that made it one; how much more the
    # reader took at once depends on the machine's load) is scored, gated
    windows = run.sink.windows
    assert windows and windows[-1].t >= 1.0 and all(w.gated for w in windows)


def test_a_reopened_source_s_dates_never_go_back_before_the_loss_s():
    """An audio clock that runs fast carries the dates ahead of the wall clock (up to the 2 s the
    minute's check allows). A microphone lost to digital silence is reopened at once: its first
    audio re-dates the stream by its arrival (Listener._anchor), which had moved the dates back by
    that lead with nothing said, so `audio_restored` was dated before the `audio_lost` before it.
    The dates may move back by the gap's length at most."""
    from datetime import datetime, timedelta, timezone
    from types import SimpleNamespace

    import edge.listen
    from edge.listen import Listener

    lost_t, ahead, latency = 3600.0, 1.9, 0.5  # the loss at stream time 1 h, dated 1.9 s ahead, 0.5 s ago
    origin = datetime.now(timezone.utc) - timedelta(seconds=latency - ahead + lost_t)
    sink = SimpleNamespace(origin=origin, origin_given=False)
    sink.start_clock = lambda now: setattr(sink, "origin", now)
    lost = sink.origin + timedelta(seconds=lost_t)  # audio_lost's date
    listener = SimpleNamespace(sink=sink, _skew=time.time() - edge.listen.since_boot(),
                               _asleep=edge.listen.since_boot() - time.monotonic(), _clock_checked=0.0,
                               _slack=0.0)  # reopened at once: the stream time the audio was ahead of is the gap's
    Listener._anchor(listener, lost_t + 0.1)  # the first 0.1 s of the reopened device, read as it came
    assert sink.origin + timedelta(seconds=lost_t) >= lost  # audio_restored, at the same stream time
    listener._slack = 5.0  # after a gap of 5 s of stream time, the dates follow the arrival
    Listener._anchor(listener, lost_t + 0.1)
    assert abs((sink.origin + timedelta(seconds=lost_t + 0.1) - datetime.now(timezone.utc)).total_seconds()) < 1.0
