"""Device supervision with a real device: the microphone is a PulseAudio null sink's monitor,
captured through PortAudio as the service captures it (listen with `reconnect`), and lost the
ways a device is lost:

    pactl unload-module (a USB microphone unplugged)   -> the stream ends: audio_lost
    pulseaudio --kill (the sound server dies)          -> the stream ends: audio_lost
    the source goes, another is left (PulseAudio moves -> digital silence for max_silence:
      the stream there; PortAudio reports nothing)        audio_lost
    pactl suspend-sink (a source that delivers nothing)  -> no audio for 5 s: audio_lost

each mended (the module loaded again, the daemon restarted with the same sink, the default
source back, the sink resumed), then `audio_restored` once audio flows again, its audio dated by
its arrival and the time lost counted from the last audio heard. Every event open at a loss ends
before the loss is reported. While it waits to reopen, the process stays under 5 % of one
core and the heartbeat goes on.

The test breaks a PulseAudio daemon of its own (the recipe of tests/pulse.py, in its own
runtime folder), so the session's `null_sink` stays usable by the other capture tests.
"""

import os
import re
import resource
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
import soundfile as sf

from edge.listen import READ_SECONDS, ListenOptions, listen
from tests.collect import Collect
from tests.pulse import RATE, NullSink, PulseUnavailable
from tests.signals import tone

pytestmark = pytest.mark.capture

# of one core, while waiting to reopen the lost device: a loop that spins or polls fast takes most of
# a core; waiting takes 1-4 % here, and up to 6.3 % was seen on a loaded 2-core machine (each try
# initialises PortAudio again), so the bound leaves room for slow tries and still catches a spin
CPU_MAX = 0.25
DATE_TOLERANCE = 1.0  # seconds from a window's date (its end) to its arrival at the sink: a read, its inference
WAIT_SECONDS = 15.0  # for any expected record (PulseAudio starts capture ~2 s late; longer is a hang)


class Pulse:
    """A PulseAudio daemon with the null sink `virt` (its monitor the default source) and a
    tone playing into it, which the test unplugs, kills and mends."""

    def __init__(self, runtime_dir, tone_path):
        self.runtime_dir, self.tone_path = runtime_dir, tone_path
        self.daemon = NullSink.start(runtime_dir)  # sets XDG_RUNTIME_DIR for this process
        self.player = None

    def pactl(self, *args) -> str:
        return subprocess.run(["pactl", *args], check=True, capture_output=True, text=True, timeout=10).stdout

    def play(self) -> None:
        self.silence()
        self.player = self.daemon.play(self.tone_path)

    def silence(self) -> None:
        if self.player is not None:
            self.player.kill()
            self.player.wait()

    def unplug(self, sink="virt") -> None:
        modules = [line.split()[0] for line in self.pactl("list", "short", "modules").splitlines()
                   if f"sink_name={sink} " in line + " "]
        assert len(modules) == 1, modules
        self.pactl("unload-module", modules[0])

    def plug(self, sink="virt") -> None:
        self.pactl("load-module", "module-null-sink", f"sink_name={sink}", f"rate={RATE}")
        self.pactl("set-default-source", "virt.monitor")
        self.play()

    def suspend(self) -> None:
        self.pactl("suspend-sink", "virt", "1")

    def resume(self) -> None:
        self.pactl("suspend-sink", "virt", "0")

    def kill(self) -> None:
        self.daemon.keepalive.kill()
        subprocess.run(["pulseaudio", "--kill"], capture_output=True, timeout=30)

    def restart(self) -> None:
        """The daemon again, in the same runtime folder, with the same sink."""
        self.daemon.keepalive.wait()
        self.daemon = NullSink.start(self.runtime_dir)
        self.play()

    def stop(self) -> None:
        self.silence()
        self.daemon.keepalive.kill()
        self.daemon.keepalive.wait()
        subprocess.run(["pulseaudio", "--kill"], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def pulse(tmp_path_factory):
    folder = tmp_path_factory.mktemp("supervision")
    tone_path = folder / "tone.wav"
    sf.write(tone_path, tone(1000.0, 60.0, RATE, amplitude=0.3), RATE, subtype="PCM_16")
    old = os.environ.get("XDG_RUNTIME_DIR")
    try:
        server = Pulse(folder, tone_path)
    except PulseUnavailable as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI real capture must work: {err}")
        pytest.skip(str(err))
    try:
        yield server
    finally:
        server.stop()
        if old is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = old
        if "sounddevice" in sys.modules:  # PortAudio looks again, at the session's sink if there is one
            from edge.capture.sources import rescan_devices

            rescan_devices(force=True)


class Timed(Collect):
    """Collect, noting how far each window's date (its end) is from the wall clock as it comes."""

    def __init__(self):
        super().__init__()
        self.lags = {}  # index in records -> seconds from the window's date to its arrival here

    def window(self, result):
        super().window(result)
        self.lags[len(self.records) - 1] = time.time() - (self.origin + timedelta(seconds=result.t)).timestamp()


class Running:
    """listen(options) in a thread as the service runs it: records in order, heartbeats timed."""

    def __init__(self, options: ListenOptions):
        self.sink, self.stop, self.beats, self.out = Timed(), threading.Event(), [], {}
        self.taken = 0  # records before this index were already awaited
        self.thread = threading.Thread(target=self._run, args=(options,), name="listen", daemon=True)
        self.thread.start()

    def _run(self, options):
        try:
            self.out["summary"] = listen(options, sink=self.sink, stop=self.stop,
                                         heartbeat=lambda: self.beats.append(time.monotonic()))
        except BaseException as err:  # raised again in the test's thread
            self.out["error"] = err

    def next(self, kind, code=None):
        """The index and record of the next `kind` record (with status `code`) after those taken."""
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline and self.thread.is_alive():
            records = list(self.sink.records)
            for i in range(self.taken, len(records)):
                k, record = records[i]
                if k == kind and (code is None or record.code == code):
                    self.taken = i + 1
                    return i, record
            time.sleep(0.05)
        if "error" in self.out:
            raise self.out["error"]
        statuses = [(s.code, s.message) for s in self.sink.statuses]
        pytest.fail(f"no {kind} {code or ''} within {WAIT_SECONDS:g} s; statuses: {statuses}")

    def finish(self):
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the listen loop did not stop within 15 s of its stop event"
        if "error" in self.out:
            raise self.out["error"]
        return self.out["summary"]

    def open_events(self, before: int) -> set:
        records = self.sink.records[:before]
        return ({r.event_id for k, r in records if k == "start"} - {r.event_id for k, r in records if k == "end"})


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process
    return usage.ru_utime + usage.ru_stime


def lose_and_mend(run: Running, lose, mend, measure_cpu: bool = False) -> str:
    """With an event open, lose the device; every open event ends before `audio_lost`; mend it;
    `audio_restored` follows. Returns the audio_lost message."""
    started_at, started = run.next("start")
    lost_from = time.monotonic()
    lose()
    lost_at, lost = run.next("status", "audio_lost")
    assert lost.level == "warning" and "'default'" in lost.message, lost.message
    assert any(e.event_id == started.event_id for k, e in run.sink.records[started_at:lost_at] if k == "end")
    assert not run.open_events(lost_at), "an event open at the loss was not ended before audio_lost"
    if measure_cpu:
        # Past the first, quick tries. Each try initialises PortAudio again (~35 ms of CPU here);
        # they come 0, 0.5-1, 1.5-3, 3-6 s after the loss, then 1.5-3 s apart (backoff_max 3 s):
        # one or two in the 3 s measured.
        time.sleep(1.5)
        cpu, wall = cpu_seconds(), time.monotonic()
        time.sleep(3.0)
        share = (cpu_seconds() - cpu) / (time.monotonic() - wall)
        print(f"CPU while waiting to reopen: {100 * share:.1f} % of one core")
        assert share < CPU_MAX, f"{100 * share:.1f} % of one core while waiting to reopen the device"
        waiting = [b for b in run.beats if b >= wall]
        assert waiting and max(b - a for a, b in zip([wall, *waiting], waiting)) < 5 * READ_SECONDS
    mend()
    restored_at, restored = run.next("status", "audio_restored")
    assert restored.level == "info" and restored.t > lost.t
    # counted from the last audio heard (a stall is found 5 s later, silence after max_silence)
    lost_for = float(re.fullmatch(r".* after ([0-9.]+) s lost", restored.message).group(1))
    assert abs(lost_for - (time.monotonic() - lost_from)) < 1.5, (lost_for, restored.message)
    # the audio after the gap is dated by its arrival: PulseAudio's first delivery comes seconds after
    # the device opened, and audio captured while the open was waited for comes at once
    deadline = time.monotonic() + WAIT_SECONDS
    while len(lags := [lag for i, lag in list(run.sink.lags.items()) if i > restored_at]) < 3:
        assert time.monotonic() < deadline and run.thread.is_alive(), f"no 3 windows after audio_restored: {lags}"
        time.sleep(0.05)
    assert max(abs(lag) for lag in lags) < DATE_TOLERANCE, f"windows after the gap dated {lags} s from their arrival"
    return lost.message


def test_a_lost_microphone_is_reported_and_reopened(pulse, demo_bundle, eager_labels):
    options = ListenOptions(labels=str(eager_labels), bundle=str(demo_bundle.path), window=0.5, hop=0.5,
                            smooth=1, min_duration=0.0, threads=1,
                            reconnect=True, max_silence=1.0, backoff_max=3.0)

    def move():  # the source goes while another is left: PulseAudio moves the stream there
        pulse.silence()
        pulse.pactl("load-module", "module-null-sink", "sink_name=other", f"rate={RATE}")
        pulse.unplug()

    pulse.play()
    run = Running(options)
    try:
        unplugged = lose_and_mend(run, pulse.unplug, pulse.plug, measure_cpu=True)  # a USB microphone
        killed = lose_and_mend(run, pulse.kill, pulse.restart)  # the sound server
        moved = lose_and_mend(run, move, pulse.plug)
        stalled = lose_and_mend(run, pulse.suspend, pulse.resume)  # a source that delivers nothing
    finally:
        summary = run.finish()
    assert "stopped delivering audio" in unplugged and "stopped delivering audio" in killed
    assert "only digital silence for 1 s" in moved
    assert "delivered no audio for 5 s" in stalled
    assert summary.error is None and summary.end_reason == "stopped"
    assert [s.code for s in run.sink.statuses if s.code] == ["audio_lost", "audio_restored"] * 4
    assert not run.open_events(len(run.sink.records))
    windows = [w.t for w in run.sink.windows]
    assert windows == sorted(windows)  # stream time goes on across every gap
