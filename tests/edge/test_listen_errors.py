"""Bad input to `listen`: one clear line and a non-zero exit where it cannot go on; handled
and reported where it can. Never a traceback."""

import gc
import io
import json
import shutil
import threading
import time
import weakref

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import edge.cli
from edge.capture.sources import Source
from edge.errors import AudioError
from tests.signals import tone


def run(bundle, *args, stdin=None):
    result = CliRunner().invoke(edge.cli.main, ["listen", "--bundle", str(bundle), *args], input=stdin)
    assert "Traceback" not in result.output, result.output
    return result


def one_line_error(result, text):
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and text in lines[0], result.output


def statuses(result):
    return [json.loads(line) for line in result.stdout.splitlines() if '"status"' in line]


def test_unknown_device(demo_bundle):
    one_line_error(run(demo_bundle.path, "--labels", "urban", "--device", "no such microphone 42"),
                   "no such microphone 42")


def test_unsupported_stdin_rate(demo_bundle):
    one_line_error(run(demo_bundle.path, "--labels", "urban", "--input", "-", "--rate", "0", stdin=b""),
                   "--rate 0 is not allowed")


def test_corrupt_and_nan_files(demo_bundle, tmp_path):
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + bytes(range(256)) * 16)
    one_line_error(run(demo_bundle.path, "--labels", "urban", "--input", str(corrupt), "--fast"),
                   f"cannot read audio file {corrupt}")
    x = tone(440, 3.0, 16000)
    x[20000] = np.nan
    nan = tmp_path / "nan.wav"
    sf.write(nan, x, 16000, subtype="FLOAT")
    one_line_error(run(demo_bundle.path, "--labels", "urban", "--input", str(nan), "--fast"),
                   "NaN or infinite samples, the first at 1.250 s")


def test_a_file_damaged_part_way_is_scored_that_far_then_a_failure(demo_bundle, tmp_path):
    """Random bytes in the middle of a FLAC file (a bad copy): the windows before the damage are
    scored, then a status error names where it stopped and the run exits 1. It used to end as if
    the file were over (info, exit 0): a script checking the exit code took half a file for all of it."""
    x = tone(440, 12.0, 16000)
    whole = tmp_path / "whole.flac"
    sf.write(whole, x, 16000)
    data = whole.read_bytes()
    damaged = tmp_path / "damaged.flac"
    damaged.write_bytes(data[: len(data) // 2] + np.random.default_rng(1).bytes(2000) + data[len(data) // 2:])
    result = run(demo_bundle.path, "--labels", "urban", "--input", str(damaged), "--fast", "--json")
    assert result.exit_code == 1, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r for r in records if r["type"] == "window"], "the audio before the damage is scored"
    errors = [r for r in records if r["type"] == "status" and r["level"] == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "source_error", errors
    assert f"audio file {damaged} is truncated or corrupt after" in errors[0]["message"]


@pytest.fixture
def cut_short(tmp_path):
    """A FLAC file cut in half (8 s of tone): read, it is a source lost after ~4 s."""
    whole = tmp_path / "whole.flac"
    sf.write(whole, tone(440, 8.0, 16000), 16000)
    damaged = tmp_path / "damaged.flac"
    damaged.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return damaged

class Busy(Source):
    """A microphone another program holds: it fails in start(), raised from PortAudio's error."""

    def _start_producer(self):
        try:
            raise OSError("Device unavailable [PaErrorCode -9985]")
        except OSError as err:
            raise AudioError("cannot open it: is another program holding it?") from err

def test_a_failed_source_is_freed_at_once_not_by_the_cycle_collector(demo_bundle, cut_short):
    """A lost microphone's source holds its ring (1.7 MiB at 44.1 kHz stereo). Its error's traceback
    held the frames that held the source, and the source its error: a cycle that only a full
    collection frees, so a service reopening a flaky microphone kept a ring a loss meanwhile."""
    from edge.listen import ListenOptions, listen
    from tests.collect import Collect

    tapped = []

    def tap(source, offset):
        tapped.append(weakref.ref(source))
        return source

    gc.disable()
    try:
        summary = listen(ListenOptions(labels="urban", bundle=str(demo_bundle.path), input=str(cut_short), fast=True),
                         sink=Collect(), tap=tap)
        assert summary.error and "is truncated or corrupt after" in summary.error
        deadline = time.monotonic() + 5.0  # its reader thread may still be ending on a loaded machine
        while len(tapped) == 1 and tapped[0]() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(tapped) == 1 and tapped[0]() is None, "the failed source outlived the run"
    finally:
        gc.enable()


def test_a_source_that_fails_to_start_is_freed_at_once_not_by_the_cycle_collector():
    """A reopen try that fails in start() (the device busy): its error, kept for the loop, held the
    traceback of the thread that opened it, whose frame held the source and its ring; the error
    raised from PortAudio's (its context) held the source's own frame too. Raised to the loop, it
    made a cycle with the frame that raised it, which holds what that frame holds."""
    import threading

    from edge.listen import _Opening

    made = []

    def make():
        made.append(weakref.ref(source := Busy("busy microphone", 44100, 2, 16000, 5.0)))
        return source

    gc.disable()
    try:
        with pytest.raises(AudioError, match="another program"):
            _Opening().open(make, threading.Event(), lambda: None)
        assert len(made) == 1 and made[0]() is None, "the source that failed to start outlived the try"
        maker = weakref.ref(make)
        del make
        assert maker() is None, "the try's frame (it holds `make`) is kept by a cycle through its raise"
    finally:
        gc.enable()



def test_each_lost_source_of_a_reconnecting_run_is_freed_at_once(demo_bundle, cut_short, monkeypatch):
    """A service that loses its device again and again (a file cut short: lost mid-stream; a busy
    device: lost in start()) keeps none of the sources it lost: listen's own frame had kept the
    first for the whole run, and each try that failed in start() a cycle through its raise."""
    import edge.listen as listen_module
    from edge.capture.sources import FileSource
    from edge.listen import ListenOptions, listen
    from tests.collect import Collect


    made = []

    def open_source(options, frontend, rescan=False):  # the first and every third: a file cut short
        source = FileSource(cut_short, sample_rate=16000, fast=True) if len(made) % 3 == 0 else Busy(
            "busy microphone", 44100, 2, 16000, 5.0)
        made.append(weakref.ref(source))
        return source

    monkeypatch.setattr(listen_module, "open_source", open_source)
    monkeypatch.setattr(listen_module, "BACKOFF_FIRST", 0.01)
    stop, kept = threading.Event(), []

    def tap(source, offset):
        deadline = time.monotonic() + 5.0  # the last reader thread may still be ending on a loaded machine
        while any(ref() is not None for ref in made[:-1]) and time.monotonic() < deadline:
            time.sleep(0.05)
        kept.append([i for i, ref in enumerate(made[:-1]) if ref() is not None])
        if len(made) >= 7:
            stop.set()
        return source

    gc.disable()
    try:
        summary = listen(ListenOptions(labels="urban", bundle=str(demo_bundle.path), reconnect=True, backoff_max=0.05),
                         sink=Collect(), stop=stop, tap=tap)
        assert summary.end_reason == "stopped" and len(made) == 7, (summary, len(made))
        assert kept == [[], [], []], f"sources still alive at each new segment: {kept}"
        assert [i for i, ref in enumerate(made) if ref() is not None] == [], "a lost source outlived the run"
    finally:
        gc.enable()


def test_a_suspend_while_the_device_is_lost_counts_in_the_time_lost(demo_bundle, cut_short, tmp_path, monkeypatch):
    """A box suspended while its microphone was lost: `audio_restored` says the time no audio was
    heard, the suspend included (boot time; the monotonic clock stops in a suspend), and the dates
    after it follow the clock, said as a suspend, not as a step of the clock."""
    from datetime import datetime, timedelta

    import edge.listen as listen_module
    from edge.capture.sources import FileSource
    from edge.listen import ListenOptions, listen
    from edge.outputs.sinks import JsonLines

    good = tmp_path / "good.flac"
    sf.write(good, tone(440, 4.0, 16000), 16000)
    asleep = []  # set while the device is lost: an hour asleep, the wall clock and boot time moved on with it
    awake_boot = listen_module.since_boot

    class Wall(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + timedelta(seconds=sum(asleep))

    def open_source(options, frontend, rescan=False):
        if not rescan:  # the start: a file cut short, lost after ~4 s
            return FileSource(cut_short, sample_rate=16000, fast=True)
        asleep.append(3600.0)
        return FileSource(good, sample_rate=16000)  # real time: a live source, its first audio dated as it comes

    monkeypatch.setattr(listen_module, "open_source", open_source)
    monkeypatch.setattr(listen_module, "BACKOFF_FIRST", 0.01)
    monkeypatch.setattr(listen_module, "datetime", Wall)
    monkeypatch.setattr(listen_module, "since_boot", lambda: awake_boot() + sum(asleep))
    stream = io.StringIO()
    listen(ListenOptions(labels="urban", bundle=str(demo_bundle.path), reconnect=True, backoff_max=0.05,
                         window=1.0, hop=0.5), sink=JsonLines(stream))
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    said = {r.get("code"): r["message"] for r in records if r["type"] == "status"}
    assert "audio_lost" in said and "clock_step" not in said, said
    lost = float(said["audio_restored"].split(" after ")[1].split(" s lost")[0])
    assert 3600 <= lost < 3600 + 10, said["audio_restored"]
    messages = [r["message"] for r in records if r["type"] == "status"]
    assert "the system was suspended for 3600 s: dates follow the clock from here" in messages, messages
    windows = [r for r in records if r["type"] == "window"]
    dated = [datetime.fromisoformat(w["utc"]) - timedelta(seconds=w["t"]) for w in (windows[0], windows[-1])]
    assert 3600 - 10 < (dated[1] - dated[0]).total_seconds() < 3600 + 10  # the stream's time did not count the hour


def test_a_device_lost_for_long_is_said_in_the_log_now_and_then_not_at_every_try(demo_bundle, cut_short, monkeypatch,
                                                                                 caplog):
    """Each try to reopen a lost device had its own log line: a microphone lost for months wrote
    3,900 a day to the journal. The first STILL_LOST_TRIES of a loss are said, then one an hour, or
    at once when the reason is another (its numbers aside, and the note on PortAudio's device list,
    which comes and goes as rescans go ahead or wait). A device that flaps (lost again soon after a
    restore) keeps its longer waits, and its new loss's tries are said afresh."""
    import logging

    import edge.listen as listen_module
    from edge.capture import sources
    from edge.capture.sources import FileSource
    from edge.listen import ListenOptions, listen
    from tests.collect import Collect

    calls, stop, slept = [0], threading.Event(), [0.0]
    note = sources.rescan_note(30.0, 570.0)

    def open_source(options, frontend, rescan=False):
        calls[0] += 1
        if calls[0] == 25:
            slept[0] = 3600.0  # an hour later
        if calls[0] == 26:
            return FileSource(cut_short, sample_rate=16000, fast=True)  # restored, and lost again at once
        if calls[0] == 31:
            stop.set()
        if 15 <= calls[0] < 26:  # another reason, with the device list's note on every other try
            raise AudioError(f"microphone gone ({calls[0]} s since it was seen){note if calls[0] % 2 else ''}")
        raise AudioError(f"microphone busy ({calls[0]} s since it was seen)")  # the numbers change at every try

    awake = listen_module.since_boot
    monkeypatch.setattr(listen_module, "open_source", open_source)
    monkeypatch.setattr(listen_module, "since_boot", lambda: awake() + slept[0])
    monkeypatch.setattr(listen_module.Reconnect, "delay", lambda self, tries: 0.001)
    monkeypatch.setattr(listen_module, "STILL_LOST_TRIES", 3)
    with caplog.at_level(logging.INFO, logger="edge.listen"):
        listen(ListenOptions(labels="urban", bundle=str(demo_bundle.path), reconnect=True, backoff_max=60.0),
               sink=Collect(), stop=stop)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("still no audio")]
    tries = [int(line.split("(try ")[1].split(",")[0]) for line in said]
    # the loss said at the first try (call 2); its next three tries; the new reason (call 15); the hour (call
    # 25); the file lost again within backoff_max of its restore (a flap): its first three tries
    assert tries == [1, 2, 3, 13, 23, 1, 2, 3], said
    assert said[2].endswith("(from here said once every 1 h while it is the same)"), said[2]
    assert "microphone gone" in said[3] and " 1.0 h lost)" in said[4], said
    assert all("microphone busy" in line for line in said[5:]), said

def test_stdin_nan_samples_are_replaced_and_reported(demo_bundle):
    x = tone(440, 6.0, 16000)
    x[1000:1010] = np.inf
    result = run(demo_bundle.path, "--labels", "urban", "--input", "-", "--rate", "16000", "--format", "f32le",
                 "--json", stdin=x.astype("<f4").tobytes())
    assert result.exit_code == 0, result.output
    assert any(line["type"] == "window" for line in map(json.loads, result.stdout.splitlines()))


def test_stereo_silence_and_clipping_are_handled(demo_bundle, tmp_path):
    rate = 16000
    loud = np.clip(3.0 * tone(300, 6.0, rate), -1, 1)  # clipped at full scale
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([loud, np.zeros_like(loud)], axis=1), rate)
    result = run(demo_bundle.path, "--labels", "urban", "--input", str(path), "--fast", "--json")
    assert result.exit_code == 0, result.output
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(rate * 16, np.float32), rate)
    result = run(demo_bundle.path, "--labels", "urban", "--input", str(silence), "--fast", "--json")
    assert result.exit_code == 0
    assert any("digital silence" in s["message"] and s["level"] == "warning" for s in statuses(result))


def test_bad_labels_yaml(demo_bundle, tmp_path):
    labels = tmp_path / "site.yaml"
    labels.write_text("name: site\nlabels:\n  - dog\n  - {name: cat, threshold: 7}\n")
    one_line_error(run(demo_bundle.path, "--labels", str(labels)), f"{labels}:4: labels[1].threshold")


def test_bundle_without_text_tower_and_embeddings(demo_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle.path, bundle)
    meta = json.loads((bundle / "model.json").read_text())
    meta["text"] = None
    (bundle / "model.json").write_text(json.dumps(meta))
    (bundle / "text.onnx").unlink()
    (bundle / "labels" / "esc50.npz").unlink()  # the demo bundle ships esc50's embeddings: not this copy
    one_line_error(run(bundle, "--labels", "esc50"), "semanticac-edge embed-labels")


def test_corrupt_or_mismatched_graph_and_missing_engine(demo_bundle, tmp_path):
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(440, 2.0, 16000), 16000)
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle.path, bundle)
    (bundle / "model.onnx").write_bytes(b"\x08\x07garbage")
    one_line_error(run(bundle, "--labels", "urban", "--input", str(clip)), "model.onnx")
    shutil.copy(demo_bundle.path / "text.onnx", bundle / "model.onnx")  # another graph: names do not match
    one_line_error(run(bundle, "--labels", "urban", "--input", str(clip)), "model.json")
    result = run(demo_bundle.path, "--labels", "urban", "--backend", "tensorrt", "--input", str(clip))
    one_line_error(result, "TensorRT")


def test_a_name_too_long_for_the_file_system_is_one_line(demo_bundle, tmp_path):
    """Path.exists() raises for a name over 255 bytes (where it says False of a missing file): a
    traceback with exit 1, or 1 instead of 78 from check-config."""
    from edge.service.config import example_path

    long = str(tmp_path / ("e" * 300))
    for args in (["--labels", "urban", "--input", long + ".wav"], ["--labels", long + ".yaml"]):
        one_line_error(run(demo_bundle.path, *args), "file name too long (a name is at most 255 bytes")
    result = CliRunner().invoke(edge.cli.main, ["check-config", str(example_path()), "--set", f"audio.input={long}"])
    assert result.exit_code == 78 and "file name too long" in result.output and result.exception.__class__ is SystemExit


def test_a_locale_that_cannot_spell_a_label_prints_it_escaped(tmp_path):
    """A box whose locale is ISO-8859-1 and a label in Japanese: every readable output was a
    UnicodeEncodeError (labels, check-config), or `listen > file` said stdout had no room."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    labels = tmp_path / "jp.yaml"
    labels.write_text("name: jp\nlabels:\n  - {name: 犬の鳴き声, text: dog bark}\n  - siren\n", encoding="utf-8")
    command = str(Path(sys.executable).with_name("semanticac-edge"))
    env = {**os.environ, "PYTHONIOENCODING": "latin-1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run([command, "labels", str(labels)], env=env, capture_output=True, timeout=120)
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr.decode()
    assert b"\\u72ac\\u306e\\u9cf4\\u304d\\u58f0" in result.stdout


@pytest.mark.slow  # three processes of listen
def test_a_file_name_that_is_no_utf8_is_played_and_a_bundle_path_so_named_is_said(demo_bundle, tmp_path):
    """Names from an old Windows or FAT copy (café in Latin-1): listen stopped with a traceback in
    soundfile, calibrate's whole run with it; ONNX Runtime called such a bundle's graph corrupt. Run in
    processes of their own: a log record holding the name's surrogate, caught by pytest where another
    test had set the log level to info, made the report one pytest-xdist cannot send (INTERNALERROR)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    folder = os.fsencode(tmp_path)
    clip = folder + b"/caf\xe9.wav"
    sf.write(clip, 0.3 * tone(440, 2.0, 16000), 16000)
    command = str(Path(sys.executable).with_name("semanticac-edge"))

    def listen(bundle: bytes, *args: str) -> subprocess.CompletedProcess:
        # a UTF-8 stdout, which Python keeps strict: the last status names the file (exit 1 before)
        return subprocess.run([command, "listen", "--bundle", bundle, "--labels", "urban", "--input", clip, "--fast",
                               *args], env={**os.environ, "PYTHONIOENCODING": "utf-8"}, capture_output=True,
                              timeout=120)

    # plain lines escape what stdout cannot spell; JSON writes the name's byte (a lone surrogate, "\\udce9" in
    # JSON, is refused by strict parsers)
    for args, named in (((), b"caf\\udce9.wav"), (("--json",), b"caf\\\\xe9.wav")):
        played = listen(os.fsencode(demo_bundle.path), *args)
        assert played.returncode == 0 and named in played.stdout, played.stderr.decode(errors="replace")
        assert b"Traceback" not in played.stderr
    bundle = folder + b"/bund\xe9"
    os.symlink(demo_bundle.path, bundle)
    refused = listen(bundle)
    assert refused.returncode == 1 and b"Traceback" not in refused.stderr
    assert (b"its path is not UTF-8 (a name from an old Windows or FAT copy), which ONNX Runtime cannot open"
            in refused.stderr), refused.stderr.decode(errors="replace")


def test_a_shell_s_log_times_carry_their_utc_offset():
    """From a shell (not journald) each line began with a local time and no zone, beside events dated in
    UTC: `03:20:53 ... start #1 siren at 02:21:12 UTC` under TZ=Europe/Berlin read as two clocks."""
    import logging
    import os
    import re
    import time

    from edge.cli import ZonedFormatter

    record = logging.LogRecord("edge", logging.INFO, __file__, 1, "start #1 siren", None, None)
    record.created = 1_765_000_000.0
    before = os.environ.get("TZ")
    try:
        os.environ["TZ"] = "America/St_Johns"
        time.tzset()
        line = ZonedFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s").format(record)
    finally:
        os.environ.pop("TZ") if before is None else os.environ.update(TZ=before)
        time.tzset()
    assert re.fullmatch(r"2025-12-06 02:16:40,\d{3}-0330 INFO edge: start #1 siren", line), line


def test_labels_left_out_are_asked_for_with_the_bundle_s_own_sets(tmp_path):
    """`listen --bundle B` without --labels named only urban and esc50, not the set `export` wrote into B."""
    import pytest

    from edge.errors import OptionError
    from edge.listen import ListenOptions

    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "trained.yaml").write_text("name: trained\nlabels: [siren]\n")
    with pytest.raises(OptionError, match=r"a shipped set \(esc50, urban\), or the bundle's own: --labels "
                                          rf"{tmp_path}/labels/trained.yaml"):
        ListenOptions(labels="", bundle=str(tmp_path))
    with pytest.raises(OptionError, match=r"a shipped set \(esc50, urban\)$"):
        ListenOptions(labels="")
