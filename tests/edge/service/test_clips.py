"""Clips: the real listen pipeline through a tapped FileSource, real FLAC files, a real folder."""

import gc
import logging
import os
import re
import shutil
import weakref

import numpy as np
import pytest
import soundfile as sf

from edge.capture.sources import FileSource
from edge.errors import ConfigError
from edge.events import Event
from edge.listen import ListenOptions, is_live, listen
from edge.outputs.clips import ClipRecorder, ClipsConfig, clip_label
from edge.outputs.sinks import FanOut, WindowResult
from edge.service.config import example_path
from edge.service.serve import start_lag
from edge.service.sections import parse_section
from tests.collect import Collect
from tests.signals import noise, silence, tone

RATE = 16000  # the demo bundle's rate: FileSource does not resample, so a clip's samples are the file's
PRE, POST = 1.0, 1.5


def recorder(tmp_path, **settings):
    settings = {"enabled": True, "pre_roll": PRE, "post_roll": POST, **settings}
    return ClipRecorder(ClipsConfig(**settings), tmp_path, RATE)


def clips_in(folder):
    return sorted(p.name for p in folder.glob("*.flac"))


def test_each_event_of_a_listen_run_gets_a_clip_of_exactly_its_audio(demo_bundle, eager_labels, tmp_path):
    # two sounds between digital silence, which is gated: each sound is one event per eager label
    x = np.concatenate([silence(3, RATE), tone(700, 4, RATE), silence(4, RATE), noise(4, RATE), silence(4, RATE)])
    path = tmp_path / "scene.wav"
    sf.write(path, x, RATE, subtype="PCM_16")
    audio, _ = sf.read(path, dtype="float32")  # the 16-bit samples FileSource delivers
    clips = recorder(tmp_path)
    sink = Collect()
    source = clips.tap(FileSource(path, sample_rate=RATE, fast=True))
    options = ListenOptions(labels=str(eager_labels), bundle=str(demo_bundle.path), input=str(path), fast=True,
                            window=1.0, hop=1.0, min_duration=0.0, smooth=1)
    summary = listen(options, sink=FanOut([sink, clips]), source=source)
    clips.close()
    assert summary.error is None and summary.seconds == pytest.approx(19.0, abs=0.05)
    starts = {e.event_id: e for e in sink.of("start")}
    ends = sink.of("end")
    assert len(ends) == 6 and all(end.t < 17.0 for end in ends)  # both sounds ended, post-roll audio after them
    names = [clips.clip_for(starts[end.event_id]) for end in ends]
    assert sorted(names) == clips_in(tmp_path / "clips") and clips.written == 6 and clips.skipped == 0
    for end, name in zip(ends, names):
        start = starts[end.event_id]
        assert re.fullmatch(rf"\d{{8}}T\d{{6}}Z_{end.event_id}_{start.label}\.flac", name)
        assert clips.clip_for(end) == name  # an end names the same clip as its start
        info = sf.info(tmp_path / "clips" / name)
        assert (info.format, info.subtype, info.samplerate) == ("FLAC", "PCM_16", RATE)
        clip, _ = sf.read(tmp_path / "clips" / name, dtype="float32")
        assert abs(len(clip) - (end.duration + PRE + POST) * RATE) <= demo_bundle.meta.frontend.hop_length
        first = round((start.t - PRE) * RATE)
        np.testing.assert_array_equal(clip, audio[first:first + len(clip)])  # 16-bit in, 16-bit out: exact


@pytest.mark.slow  # the model over 43 s of audio a second at a time: ~4 s of CPU each
@pytest.mark.parametrize("hold", [0.0, 5.0])
def test_a_held_event_s_clip_ends_at_its_end_not_at_the_limit(demo_bundle, eager_labels, tmp_path, hold):
    """A service holds an event 30 s after its score falls, and the end comes that late: the clip was
    taken at its limit (onset + max_seconds + post_roll) before the end came, with up to the hold's worth
    of the quiet after the sound in it (a 33 s bark episode: a 69 s clip, not 42 s). A clip open at its
    limit now waits the hold for its end; an event longer than max_seconds is still cut at the limit.
    Counted in the events' time, with a hold or without: listen reads up to a model window ahead of its
    events, and a clip taken when the audio reached its limit missed an end dated before it (CI's loaded
    machine, where every read was a whole window)."""
    x = np.concatenate([silence(3, RATE), tone(700, 4, RATE), silence(12, RATE), noise(12, RATE), silence(12, RATE)])
    path = tmp_path / "scene.wav"
    sf.write(path, x, RATE, subtype="PCM_16")
    options = ListenOptions(labels=str(eager_labels), bundle=str(demo_bundle.path), input=str(path), fast=True,
                            window=1.0, hop=1.0, min_duration=0.0, smooth=1, hold=hold)
    clips = ClipRecorder(ClipsConfig(enabled=True, pre_roll=PRE, post_roll=POST, max_seconds=6.0), tmp_path, RATE,
                         hold=hold, lag_seconds=start_lag(options, options.windowing(demo_bundle)))
    sink = Collect()
    source = FileSource(path, sample_rate=RATE, fast=True)
    read, first = source.read, [2 * RATE]

    def ahead(max_samples, timeout=0.5):  # a first read of 2 s, then a whole model window (5 s) each: the
        wanted = first.pop() if first else max_samples  # audio runs up to 5 s ahead of the events, as on a
        blocks = []                                     # loaded CI machine whose decoder kept the ring full
        while sum(b.size for b in blocks) < wanted:
            block = read(wanted - sum(b.size for b in blocks), timeout)
            if block is None:
                break
            blocks.append(block)
        return np.concatenate(blocks) if blocks else None

    source.read = ahead
    summary = listen(options, sink=FanOut([sink, clips]), source=clips.tap(source))
    clips.close()
    assert summary.error is None and clips.written == len(sink.of("end")) > 0
    starts = {e.event_id: e for e in sink.of("start")}
    lengths = {}
    for end in sink.of("end"):
        clip, _ = sf.read(tmp_path / "clips" / clips.clip_for(end), dtype="float32")
        wanted = min(end.duration, 6.0) + PRE + POST  # end + post_roll, or the limit for the 12 s noise
        assert abs(len(clip) - wanted * RATE) <= demo_bundle.meta.frontend.hop_length, (end, len(clip) / RATE)
        lengths[starts[end.event_id].t] = len(clip) / RATE
    assert any(d < 6.0 for d in (e.duration for e in sink.of("end"))), "no short event: the test shows nothing"
    assert any(d > 6.0 for d in (e.duration for e in sink.of("end"))), "no long event: the cap is not shown"


def test_tap_keeps_the_source_what_it_is(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, noise(1.0, RATE), RATE)
    source = FileSource(path, sample_rate=RATE)
    tapped = recorder(tmp_path).tap(source)
    assert tapped is source and is_live(tapped)  # a real-time file still drops late windows
    assert recorder(tmp_path).tap(tapped) is source  # its read is a plain function now: tapped again, it is kept
    with pytest.raises(ValueError, match="32000 Hz"):
        recorder(tmp_path).tap(FileSource(path, sample_rate=32000))
    off = ClipRecorder(ClipsConfig(), tmp_path / "off", RATE)
    assert off.tap(source) is source and off.clip_for(Event("start", 1.0, 1, "siren", score=0.5)) is None
    assert not (tmp_path / "off").exists()


def test_a_tapped_source_is_freed_at_once_not_by_the_cycle_collector(tmp_path):
    """The tap wraps `read` on the source itself: the wrapper held the source's own read, so each
    device a service lost kept its ring (1.7 MiB at 44.1 kHz stereo) until a full collection."""
    path = tmp_path / "a.wav"
    sf.write(path, noise(2.0, RATE), RATE)
    clips = recorder(tmp_path)
    gc.disable()
    try:
        with clips.tap(FileSource(path, sample_rate=RATE, fast=True)) as source:
            assert source.read(RATE, timeout=5.0).size
        freed = weakref.ref(source)
        del source
        assert freed() is None, "the tapped source outlived its last reference"
    finally:
        gc.enable()
        clips.close()


class Feed:
    """A tapped FileSource read by hand, and events sent to the recorder at chosen stream times."""

    def __init__(self, clips, tmp_path, seconds=30.0, seed=3, start_t=0.0, amplitude=0.3):
        self.audio = noise(seconds, RATE, amplitude=amplitude, seed=seed)
        path = tmp_path / f"noise{seed}.wav"
        sf.write(path, self.audio, RATE, subtype="PCM_16")
        self.audio, _ = sf.read(path, dtype="float32")
        self.clips, self.start_t = clips, start_t
        self.source = clips.tap(FileSource(path, sample_rate=RATE, fast=True), start_t).start()

    def until(self, t):
        wanted = round((t - self.start_t) * RATE)
        while self.source.samples_delivered < wanted:
            block = self.source.read(min(1600, wanted - self.source.samples_delivered), timeout=1.0)
            assert block is not None

    def event(self, kind, t, event_id, duration=None):
        self.until(t)  # an event comes after the audio of its window
        event = Event(kind, t, event_id, "dog bark", score=0.5) if kind == "start" else \
            Event(kind, t, event_id, "dog bark", duration=duration, peak=0.9)
        self.clips.event(event)
        return self.clips.clip_for(event)

    def clip(self, name):
        data, _ = sf.read(self.clips.dir / name, dtype="float32")
        return data


def test_the_disk_budget_removes_the_oldest_clips(tmp_path):
    clips = recorder(tmp_path, max_megabytes=0.25)  # room for three clips of 3.5 s of noise (~70 kB each)
    # a folder shared with other files (clips.dir set by the user): an old recording of theirs,
    # larger than the budget, is neither counted nor removed
    clips.dir.mkdir(parents=True, exist_ok=True)
    precious = clips.dir / "my_recording.flac"
    sf.write(precious, np.zeros(RATE * 30, np.float32) + 0.1 * np.random.default_rng(1).standard_normal(RATE * 30),
             RATE)
    os.utime(precious, (0, 0))
    feed = Feed(clips, tmp_path)
    names = []
    for i in range(5):
        names.append(feed.event("start", 2.0 + 4 * i, i + 1))
        feed.event("end", 3.0 + 4 * i, i + 1, duration=1.0)
        feed.until(5.0 + 4 * i)  # the post-roll has come: the worker writes it
    feed.source.stop()
    clips.close()
    assert precious.stat().st_size > 0.25e6
    kept = [name for name in clips_in(clips.dir) if name != precious.name]
    assert kept == names[-len(kept):] and 2 <= len(kept) < 5 and clips.removed == 5 - len(kept)
    assert sum((clips.dir / name).stat().st_size for name in kept) <= 0.25e6
    np.testing.assert_array_equal(feed.clip(names[-1]), feed.audio[round(17.0 * RATE):round(20.5 * RATE)])


@pytest.fixture
def small_disk(tmp_path):
    """A real 3 MB file system (tmpfs), unmounted after the test; skipped where mounting is not allowed."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_check_config_says_a_disk_short_of_the_clips_budget_as_the_start_does(small_disk, tmp_path, monkeypatch):
    """A 3 MB disk cannot give the clips their 1024 MB: check-config says it before the service
    starts (it had said nothing, and the start's warning went to the journal only), for the folder
    clips.dir names or the one the service would make in service.state_dir or $STATE_DIRECTORY; a
    budget the disk can give is not warned of, nor a folder the config leaves to the unit (from a
    shell the default is the user's own, maybe on another disk than the service's)."""
    from click.testing import CliRunner

    import edge.cli
    from edge.service.config import example_path, load_config
    from edge.service.serve import disk_notes

    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(1600, dtype=np.float32), 16000)  # opened, never played
    settings = ["clips.enabled=true", f"audio.input={clip}"]
    result = CliRunner().invoke(edge.cli.main, ["check-config", str(example_path()), *(
        x for s in [*settings, f"clips.dir={small_disk / 'clips'}"] for x in ("--set", s))])
    assert result.exit_code == 0, result.output
    assert re.search(rf"^# warning: clips.max_megabytes 1024 is more than the disk of {small_disk / 'clips'} can "
                     r"give the clips \(\d MB, .* above clips.min_free_megabytes 100\).*\(none fits now",
                     result.output, re.M)
    assert not (small_disk / "clips").exists()  # checked, not made

    def said(*more: str, **environ: str) -> str:
        notes = disk_notes(load_config(example_path(), [*settings, *more]), environ={"XDG_STATE_HOME": str(small_disk),
                                                                                     **environ})
        return " ".join(message for _, message in notes)

    assert said() == ""  # the unit's StateDirectory= decides, not this shell's ~/.local/state
    assert f"the disk of {small_disk / 'clips'} can give the clips (0 MB" in said(STATE_DIRECTORY=str(small_disk))
    quiet = said(f"service.state_dir={small_disk}", "clips.min_free_megabytes=0")
    assert f"the disk of {small_disk / 'clips'} can give the clips (3 MB" in quiet and "none fits now" not in quiet
    assert said(f"clips.dir={small_disk / 'clips'}", "clips.max_megabytes=1", "clips.min_free_megabytes=0") == ""


def test_check_config_refuses_output_paths_the_start_would_refuse(tmp_path):
    """The service's start refuses a clips.dir that is a file, and an event_log.path that is a folder
    or under a file (exit 78); check-config had said OK."""
    from click.testing import CliRunner

    import edge.cli
    from edge.labels.labelset import resolve_label_set
    from edge.service.config import example_path, load_config
    from edge.service.serve import check_outputs

    sf.write(tmp_path / "clip.wav", np.zeros(1600, dtype=np.float32), 16000)  # opened, never played
    taken = tmp_path / "clips"
    taken.write_text("a file where the folder should be")
    base = [f"audio.input={tmp_path / 'clip.wav'}"]
    result = CliRunner().invoke(edge.cli.main, ["check-config", str(example_path()), *(
        x for s in [*base, "clips.enabled=true", f"clips.dir={taken}"] for x in ("--set", s))])
    assert result.exit_code == 78 and f"clips.dir {taken} cannot hold clips: {taken} is a file" in result.output

    def check(*more: str) -> None:
        check_outputs(load_config(example_path(), [*base, *more]), resolve_label_set("urban"))

    with pytest.raises(ConfigError, match=f"clips.dir {taken / 'in'} cannot hold clips: {taken} is a file"):
        check("clips.enabled=true", f"clips.dir={taken / 'in'}")
    for where, reason in ((tmp_path, f"{tmp_path} is a folder \\(name a file in it, e.g. {tmp_path / 'events.sqlite'}"),
                          (taken / "events.sqlite", f"{taken} is a file")):
        with pytest.raises(ConfigError, match=f"event_log.path {where} cannot be used as the event log: {reason}"):
            check("event_log.enabled=true", f"event_log.path={where}")
    check("event_log.enabled=true", f"event_log.path={tmp_path / 'new' / 'events.sqlite'}")
    assert not (tmp_path / "new").exists()  # checked, not made
    with pytest.raises(ConfigError, match=f"event_log.path {taken} is a text file .*not an event log"):
        check("event_log.enabled=true", f"event_log.path={taken}")  # the start would refuse it too
    with pytest.raises(ConfigError, match=f"service.state_dir {taken} cannot hold the service's state: {taken} is "
                                          "a file") as info:  # the start named event_log.path or clips.dir
        check(f"service.state_dir={taken}")
    assert info.value.key == "service.state_dir"


def wait_for(predicate, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_no_older_clip_is_removed_for_a_new_one_the_disk_can_take(small_disk, tmp_path):
    """Room was made for a new clip by the size of its 16-bit PCM, three times its FLAC's for a quiet
    sound: on a nearly full disk older clips went for one that would have fitted (or that then did not
    fit either, and was skipped too). Room is now made for what the disk holds, and the clip written."""
    clips = ClipRecorder(ClipsConfig(enabled=True, dir=str(small_disk / "clips"), pre_roll=PRE, post_roll=POST,
                                     min_free_megabytes=0), tmp_path, RATE)
    feed = Feed(clips, tmp_path, seconds=40.0, amplitude=0.003)  # a quiet room: its FLAC is small

    def clip_of(event_id, at, seconds=10.0):
        feed.event("start", at, event_id)
        feed.event("end", at + seconds, event_id, duration=seconds)
        feed.until(at + seconds + POST + 0.1)

    clip_of(1, 2.0)
    wait_for(lambda: clips.written == 1)
    (first,) = clips_in(clips.dir)
    size = (clips.dir / first).stat().st_size
    assert size < 0.7 * 2 * (10.0 + PRE + POST) * RATE  # well under its PCM
    (small_disk / "filler").write_bytes(b"x" * (shutil.disk_usage(small_disk).free - round(1.5 * size)))
    clip_of(2, 20.0)
    wait_for(lambda: clips.written + clips.skipped == 2)
    assert (clips.written, clips.skipped, clips.removed) == (2, 0, 0) and len(clips_in(clips.dir)) == 2
    feed.source.stop()
    clips.close()


def test_a_disk_another_program_fills_still_takes_new_clips_in_place_of_the_oldest(small_disk, tmp_path):
    """With no floor to keep (min_free_megabytes 0) and another program's file filling the disk, a new
    clip's write fails: the oldest clip goes and the write is tried again, so the clips keep rotating
    (a tidy that counted nothing for the clip kept the old ones and lost every new one)."""
    clips = ClipRecorder(ClipsConfig(enabled=True, dir=str(small_disk / "clips"), pre_roll=PRE, post_roll=POST,
                                     min_free_megabytes=0), tmp_path, RATE)
    feed = Feed(clips, tmp_path, seconds=60.0)

    def clip_of(event_id, seconds=3.0):
        at = 2.0 + 8 * (event_id - 1)
        feed.event("start", at, event_id)
        feed.event("end", at + seconds, event_id, duration=seconds)
        feed.until(at + seconds + POST + 0.1)
        wait_for(lambda: clips.written + clips.skipped == event_id)

    for event_id in (1, 2, 3):
        clip_of(event_id)
    oldest = clips_in(clips.dir)
    (small_disk / "filler").write_bytes(b"x" * (shutil.disk_usage(small_disk).free - 1024))
    for event_id in (4, 5, 6):
        clip_of(event_id)
    assert (clips.written, clips.skipped) == (6, 0) and clips.removed >= 3
    assert not set(oldest) & set(clips_in(clips.dir)) and len(clips_in(clips.dir)) == 3
    assert not list(clips.dir.glob(".*.tmp.flac"))  # no half-written clip left by the failed tries
    feed.source.stop()
    clips.close()


def test_a_disk_short_of_room_loses_the_oldest_clips_then_says_it_and_says_when_it_is_over(small_disk, tmp_path,
                                                                                          caplog):
    """The size budget alone had let the clips fill a small disk (a Jetson's eMMC), and then the
    event log could not be written either; a clip that was not written was said in the journal
    only. Now the oldest clips go to keep min_free_megabytes free; with none left to remove a
    clip is skipped and every output gets a `clips` status (once), and `clips_restored` when one
    is written again."""
    filler = small_disk / "other program's file"
    filler.write_bytes(b"x" * 1_000_000)
    with caplog.at_level(logging.WARNING, logger="edge.outputs.clips"):
        clips = ClipRecorder(ClipsConfig(enabled=True, dir=str(small_disk / "clips"), pre_roll=PRE, post_roll=POST,
                                         min_free_megabytes=1.2), tmp_path, RATE)
    assert "clips.max_megabytes 1024 is more than the disk" in caplog.text and "(0 MB" not in caplog.text
    heard = Collect()
    outputs = FanOut([heard, clips])
    feed = Feed(clips, tmp_path, seconds=120.0)

    def clip_of(event_id, at, seconds=10.0):
        feed.event("start", at, event_id)
        feed.event("end", at + seconds, event_id, duration=seconds)
        feed.until(at + seconds + POST + 0.1)

    for i in range(6):  # ~300 kB each: 2 MB free, 1.2 MB kept free
        clip_of(i + 1, 2.0 + 13 * i)
        wait_for(lambda: clips.written + clips.skipped == i + 1)
    # the worker counts a clip written before its tidy makes room for the next: wait for the room too
    wait_for(lambda: shutil.disk_usage(small_disk).free >= 1_200_000)
    assert clips.skipped == 0 and clips.removed >= 2
    outputs.window(WindowResult(t=0.0, top=(), latency_ms=1.0, dropped=0))
    assert heard.of("status") == []
    with open(filler, "ab") as more:  # another program fills the disk: no clip can make room now
        more.write(b"x" * (shutil.disk_usage(small_disk).free - 50_000))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.outputs.clips"):
        clip_of(7, 80.0)
        wait_for(lambda: clips.skipped == 1)
        clip_of(9, 88.0, seconds=1.0)  # a disk full for good had a journal line per event
        wait_for(lambda: clips.skipped == 2)
        clips._lost_said.every = 0.0  # an hour later
        clip_of(10, 91.0, seconds=1.0)
        wait_for(lambda: clips.skipped == 3)
    skipped = [r.getMessage() for r in caplog.records if " skipped: " in r.getMessage()]
    assert len(skipped) == 2 and "_7_dog_bark" in skipped[0], skipped  # the first one said, not the next
    assert "_10_dog_bark" in skipped[1] and "(3 clips skipped since the first, this one included" in skipped[1]
    assert clips_in(clips.dir) == []  # every clip went first, to make room
    outputs.window(WindowResult(t=0.0, top=(), latency_ms=1.0, dropped=0))  # the worker's trouble reaches the outputs from the loop's thread
    said = heard.of("status")
    assert [(s.level, s.code) for s in said] == [("warning", "clips")]
    assert "under clips.min_free_megabytes 1.2" in said[0].message
    filler.unlink()
    clip_of(8, 95.0)
    wait_for(lambda: clips.written == 7)
    outputs.window(WindowResult(t=0.0, top=(), latency_ms=1.0, dropped=0))
    assert [s.code for s in heard.of("status")] == ["clips", "clips_restored"]
    assert heard.of("status")[1].message.endswith(" again (3 skipped meanwhile)")
    feed.source.stop()
    clips.close()
    counts = clips.counts()
    assert (counts.written, counts.skipped) == (7, 3) and counts.free_bytes >= 1_200_000


def test_clips_older_than_max_age_go_while_the_clock_is_trusted(tmp_path, monkeypatch, caplog):
    """A nursery's recordings must go after a time; not while the clock is unset (a clip's time
    is read on it), and that wait is said once (a box kept offline without NTP kept its clips past
    their age without a word). One dated ahead of the clock (written while it was ahead) goes first for room."""
    import logging
    import time

    import edge.clock

    # without a worker (enabled false): its own tidying at start would race the files made here
    clips = ClipRecorder(ClipsConfig(max_age_days=30), tmp_path, RATE)
    clips.dir.mkdir()
    now = time.time()
    for name, age_days in (("20260101T000000Z_1_dog.flac", 40), ("20260102T000000Z_2_dog.flac", 10),
                           ("20270101T000000Z_3_dog.flac", -300)):
        sf.write(clips.dir / name, noise(1.0, RATE), RATE)
        os.utime(clips.dir / name, (now - age_days * 86400, now - age_days * 86400))
    unset = clips.dir / "19700101T000500Z_4_dog.flac"  # written before NTP set the clock: no age
    sf.write(unset, noise(1.0, RATE), RATE)
    os.utime(unset, (300, 300))
    monkeypatch.setattr(edge.clock, "clock_synchronised", lambda: False)
    with caplog.at_level(logging.INFO, logger="edge.outputs.clips"):
        assert clips._tidy() and clips._tidy() and len(clips_in(clips.dir)) == 4  # not synchronised: nothing by age
    said = [r.getMessage() for r in caplog.records if "waits for the system clock" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("clips: removing clips older than 30 days waits") and \
        "service.trust_clock: true" in said[0], caplog.text
    monkeypatch.setattr(edge.clock, "clock_synchronised", lambda: True)
    clips._tidy()
    assert clips_in(clips.dir) == [unset.name, "20260102T000000Z_2_dog.flac", "20270101T000000Z_3_dog.flac"]
    unset.unlink()
    tight = ClipRecorder(ClipsConfig(max_megabytes=(clips.dir / "20260102T000000Z_2_dog.flac").stat().st_size / 1e6),
                         tmp_path, RATE)
    tight._tidy()
    assert clips_in(clips.dir) == ["20260102T000000Z_2_dog.flac"]  # the future one went first


def test_a_long_event_is_cut_at_max_seconds_and_close_writes_what_is_pending(tmp_path):
    clips = recorder(tmp_path, max_seconds=2.0)
    feed = Feed(clips, tmp_path)
    long = feed.event("start", 2.0, 1)
    feed.until(8.0)  # taken once onset + max_seconds + post_roll has come, before the history loses it
    open_at_close = feed.event("start", 9.0, 2)
    feed.event("end", 10.0, 1, duration=8.0)  # its clip is taken already
    feed.source.stop()
    clips.close()
    assert clips_in(clips.dir) == sorted([long, open_at_close])
    np.testing.assert_array_equal(feed.clip(long), feed.audio[round(1.0 * RATE):round(5.5 * RATE)])
    np.testing.assert_array_equal(feed.clip(open_at_close), feed.audio[round(8.0 * RATE):round(10.0 * RATE)])


def test_an_event_open_past_many_others_ends_with_its_own_clip_name(tmp_path, monkeypatch):
    """The names of ended events are forgotten, oldest first, beyond NAMES_KEPT; an open event's never
    is: its end (in the event log and MQTT) names the clip its start named, though that clip, cut at
    max_seconds, is on disk already (it was named anew, with a "-2", when forgotten)."""
    monkeypatch.setattr("edge.outputs.clips.NAMES_KEPT", 2)
    clips = recorder(tmp_path, max_seconds=2.0)
    feed = Feed(clips, tmp_path)
    long = feed.event("start", 2.0, 1)
    feed.until(8.0)
    wait_for(lambda: (clips.dir / long).exists())
    for event_id, t in zip(range(2, 6), range(9, 17, 2)):  # more events than the names kept
        name = feed.event("start", t, event_id)
        assert feed.event("end", t + 0.5, event_id, duration=0.5) == name
    assert feed.event("end", 17.0, 1, duration=15.0) == long
    feed.source.stop()
    clips.close()
    assert clips.skipped == 0 and clips.written == 5


def test_a_pre_roll_shorter_than_the_onset_s_reach_is_warned_of_at_the_start_and_by_check_config(tmp_path, caplog):
    """A config written before 2026-12-06 spells out `pre_roll: 2.0`, the old default, and
    install-service keeps it: with 5 s windows its clips miss their sound's beginning. So did the
    window's length (the default until 2026-12-07) with a hop of 2 s and smooth 5: the smoothed score
    reaches the threshold up to smooth - 1 hops after the first window that heard the sound (an
    audit's siren at 20 s: its clip began at 22 s). Said, not refused (a site may want short
    clips); a pre_roll of the reach or more, or none (the reach), is not."""
    from edge.service.serve import checked, clip_notes

    with caplog.at_level(logging.WARNING, logger="edge.outputs.clips"):
        ClipRecorder(ClipsConfig(enabled=True, pre_roll=2.0), tmp_path, RATE, reach=7.0).close()
        ClipRecorder(ClipsConfig(enabled=True, pre_roll=7.0), tmp_path, RATE, reach=7.0).close()
        ClipRecorder(ClipsConfig(enabled=True), tmp_path, RATE, reach=7.0).close()
    said = [r.getMessage() for r in caplog.records if "pre_roll" in r.getMessage()]
    assert said == ["clips.pre_roll 2 s is shorter than the 7 s an event's onset may come after its sound begins "
                    "(the listen window, then listen.smooth - 1 hops of smoothing), so its clip may miss that "
                    "beginning; leave pre_roll out (null: 7 s)"]
    on = ["clips.enabled=true", f"clips.dir={tmp_path / 'clips'}"]
    assert clip_notes(*checked(str(example_path()), [*on, "clips.pre_roll=2.0"])) == [("warning", said[0])]
    assert clip_notes(*checked(str(example_path()), on)) == []
    # the demo bundle's 5 s window, hop 2 and smooth 5: 13 s; the window alone is short of it
    slow = [*on, "listen.hop=2", "listen.smooth=5"]
    assert "shorter than the 13 s" in clip_notes(*checked(str(example_path()), [*slow, "clips.pre_roll=5"]))[0][1]
    assert clip_notes(*checked(str(example_path()), [*slow, "clips.pre_roll=13"])) == []


@pytest.mark.parametrize("lag", [0.0, 8.0])
def test_a_start_that_comes_late_still_gets_its_onset_and_a_window_before_it(tmp_path, lag):
    """An onset is the end of the first window above threshold, and its start comes once the smoothed
    score has held min_duration: with a 2 s pre_roll (the old default) most clips began after their
    sound, and with min_duration 8 s the history (pre + max + post) had lost the onset: a clip of its
    last 2 s. The pre_roll is now the onset's reach (the window and the smoothing), and the history holds
    the start's lag too."""
    clips = ClipRecorder(ClipsConfig(enabled=True, post_roll=0.5, max_seconds=3.0), tmp_path, RATE,
                         reach=2.0, lag_seconds=lag)
    assert clips.pre_roll == 2.0  # none given: the reach
    feed = Feed(clips, tmp_path)
    feed.until(5.0 + 8.0)  # the start of an event at 5 s comes 8 s late
    name = feed.event("start", 5.0, 1)
    feed.event("end", 13.5, 1, duration=8.5)
    feed.until(14.0)
    feed.source.stop()
    clips.close()
    if lag:
        np.testing.assert_array_equal(feed.clip(name), feed.audio[round(3.0 * RATE):round(8.5 * RATE)])
    else:  # the lag not counted: the onset and the window before it are gone (the clip is what was left)
        assert not (clips.dir / name).exists() or len(feed.clip(name)) < round(5.5 * RATE)


def test_a_stream_time_that_jumps_never_gives_a_clip_of_other_audio(tmp_path, caplog):
    clips = recorder(tmp_path, max_seconds=2.0)  # history: 1 + 2 + 1.5 s and one second of slack
    feed = Feed(clips, tmp_path)
    feed.until(20.0)
    with caplog.at_level(logging.WARNING, logger="edge.outputs.clips"):
        ahead = Event("start", 100.0, 1, "siren", score=0.5)  # a time the audio never reached
        clips.event(ahead)
        gone = Event("start", 3.0, 2, "siren", score=0.5)  # a time whose audio is long overwritten
        clips.event(gone)
        clips.event(Event("end", 4.0, 2, "siren", duration=1.0, peak=0.6))
        # its pre-roll is gone; its whole span (to onset + max_seconds + post_roll) is there: taken at once
        partly = Event("start", 15.0, 3, "siren", score=0.5)
        clips.event(partly)
        clips.event(Event("end", 16.0, 3, "siren", duration=1.0, peak=0.6))
        feed.until(18.0)
    feed.source.stop()
    clips.close()
    assert clips.skipped == 2 and clips_in(clips.dir) == [clips.clip_for(partly)]
    assert clips.clip_for(ahead) not in clips_in(clips.dir)
    assert any("after the audio the recorder saw" in r.message for r in caplog.records)
    assert any("no audio of its span" in r.message for r in caplog.records)
    kept = feed.clip(clips.clip_for(partly))  # 14.5 .. 18.5 s of its 14.0 .. 18.5 s
    np.testing.assert_array_equal(kept, feed.audio[round(14.5 * RATE):round(18.5 * RATE)])


def test_a_reopened_source_goes_on_at_its_stream_time(tmp_path):
    clips = recorder(tmp_path)
    lost = Feed(clips, tmp_path)
    before = lost.event("start", 4.0, 1)
    lost.event("end", 5.0, 1, duration=1.0)
    lost.until(6.0)  # lost before its post-roll came
    lost.source.stop()
    reopened = Feed(clips, tmp_path, seed=4, start_t=10.0)  # the loop's time went on across the gap
    after = reopened.event("start", 11.0, 2)
    reopened.event("end", 12.0, 2, duration=1.0)
    reopened.until(14.0)
    reopened.source.stop()
    clips.close()
    assert clips_in(clips.dir) == [before, after] and clips.skipped == 0
    np.testing.assert_array_equal(lost.clip(before), lost.audio[round(3.0 * RATE):round(6.0 * RATE)])
    np.testing.assert_array_equal(reopened.clip(after), reopened.audio[:round(3.5 * RATE)])  # 10.0 .. 13.5 s


def test_labels_are_safe_in_file_names():
    assert clip_label("dog bark") == "dog_bark"
    assert clip_label("../../etc/passwd") == "etc_passwd"
    assert clip_label("sirène: police/ambulance") == "sir_ne_police_ambulance"
    assert clip_label("///") == "event"
    assert len(clip_label("x" * 300)) <= 48


def test_an_unwritable_folder_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match="clips.dir .*file/clips cannot hold clips") as info:
        ClipRecorder(ClipsConfig(enabled=True, dir=str(tmp_path / "file" / "clips")), tmp_path, RATE)
    assert info.value.key == "clips.dir" and "clips.enabled: false" in str(info.value)
    assert "systemctl edit semanticac-edge" in str(info.value)  # the unit writes only its state folder


@pytest.mark.parametrize("mapping, key, text", [
    ({"pre_roll": -1}, "clips.pre_roll", "from 0 to 60"),
    ({"max_seconds": 0}, "clips.max_seconds", "> 0"),
    ({"max_megabytes": 0}, "clips.max_megabytes", "> 0"),
    ({"min_free_megabytes": -1}, "clips.min_free_megabytes", ">= 0"),
    ({"max_age_days": 0}, "clips.max_age_days", "or null: none by age"),
    ({"dir": " "}, "clips.dir", "a folder path"),
    ({"post_rol": 1}, "clips.post_rol", "did you mean `post_roll`?"),
])
def test_bad_settings_name_the_key(mapping, key, text):
    with pytest.raises(ConfigError) as info:
        parse_section(ClipsConfig, mapping, "clips")
    assert info.value.key == key and text in str(info.value)
    assert parse_section(ClipsConfig, {"enabled": True, "pre_roll": 3}, "clips") == ClipsConfig(True, pre_roll=3.0)


def test_a_clock_step_moves_the_file_times_of_this_run_s_clips(tmp_path):
    """Written while the clock was unset (a box booted months behind), this run's clips are dated
    again with the event log (listen's redate): age and budget read their file times."""
    from datetime import timedelta

    clips = recorder(tmp_path)
    feed = Feed(clips, tmp_path)
    name = feed.event("start", 2.0, 1)
    feed.event("end", 3.0, 1, duration=1.0)
    feed.until(5.0)
    wait_for(lambda: clips.written == 1)
    before = (clips.dir / name).stat().st_mtime
    clips.redate(timedelta(days=120))
    clips._redating.join(10)  # off the listen loop's thread
    assert (clips.dir / name).stat().st_mtime == pytest.approx(before + 120 * 86400, abs=1)
    feed.source.stop()
    clips.close()


def test_a_clip_never_takes_the_name_of_another_run_s_clip(tmp_path):
    """Event ids start at 1 in each run: after a restart with the clock stepped back, a new clip
    could get an old one's name and replace it. And an end names the clip its start named, also
    once the clip is written (an event longer than max_seconds)."""
    from datetime import datetime, timezone

    origin = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
    names = []
    for run in range(2):
        clips = ClipRecorder(ClipsConfig(enabled=True, pre_roll=PRE, post_roll=POST, max_seconds=1.0), tmp_path,
                             RATE, origin=origin)
        feed = Feed(clips, tmp_path, seed=3 + run)
        names.append(feed.event("start", 2.0, 1))
        feed.until(6.0)  # past max_seconds + post_roll: written before the end
        wait_for(lambda: clips.written == 1)
        assert feed.event("end", 6.0, 1, duration=4.0) == names[-1]
        feed.source.stop()
        clips.close()
    assert names == ["20261205T120002Z_1_dog_bark.flac", "20261205T120002Z_1_dog_bark-2.flac"]
    assert clips_in(tmp_path / "clips") == sorted(names)
