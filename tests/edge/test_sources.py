"""Audio sources: file, stdin and microphone deliver float32 mono at the model rate through one
interface, whatever the capture block size; bad input is a precise AudioError; a lost or hung
device is an error, never a hang.

The microphone tests capture for real: PortAudio records a PulseAudio null sink (see
tests/pulse.py); sounddevice is imported by edge.capture.sources only once the fixture is running.
"""

import gc
import io
import logging
import os
import signal
import subprocess
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.capture.audio import read_audio, resample, to_mono
from edge.capture.sources import (
    CLIP_RUN,
    FileSource,
    MicrophoneSource,
    StdinSource,
    find_input_device,
    list_input_devices,
)
from edge.errors import AudioError
from tests.signals import noise, tone

RATE = 32000  # the model rate
BLOCKS = [256, 1000, 4096, 7919]  # 7919 is prime
TOLERANCE = 1e-6  # soxr's stream and one-shot resamplers agree exactly here (max |diff| 0.0)


def read_all(source, max_samples=3333, timeout=5.0) -> np.ndarray:
    chunks = []
    with source:
        while (chunk := source.read(max_samples, timeout)) is not None:
            assert chunk.dtype == np.float32 and chunk.ndim == 1 and chunk.size <= max_samples
            chunks.append(chunk)
        assert source.read(max_samples) is None  # the end stays the end
    assert source.samples_delivered == sum(c.size for c in chunks)
    return np.concatenate(chunks)


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.size == expected.size
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


@pytest.fixture
def stereo_wav(tmp_path):
    """1 s of different content per channel at 44.1 kHz (an awkward ratio to 32 kHz)."""
    rate = 44100
    samples = np.stack([tone(440, 1.0, rate), noise(1.0, rate, amplitude=0.2)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, samples, rate, subtype="FLOAT")
    return path


# --- file ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", BLOCKS)
def test_fast_file_equals_read_audio_whatever_the_block(stereo_wav, block):
    source = FileSource(stereo_wav, fast=True, block=block, buffer_seconds=0.2)
    assert_same(read_all(source, max_samples=1 + block // 3), read_audio(stereo_wav, RATE))
    assert source.overflows == 0 and source.end_reason.startswith("end of audio file")


@pytest.mark.data
def test_real_clip_through_the_capture_path_equals_read_audio(data_dir):
    path = data_dir / "esc50" / "audio" / "1-187207-A-20.flac"
    expected = read_audio(path, RATE)
    for block in BLOCKS:
        assert_same(read_all(FileSource(path, fast=True, block=block), max_samples=RATE), expected)


def test_stereo_file_is_mixed_down_and_says_so(stereo_wav, caplog):
    with caplog.at_level(logging.INFO, logger="edge.capture.sources"):
        source = FileSource(stereo_wav, fast=True)
    assert source.channels == 2 and source.sample_rate == RATE
    assert "mixing 2 channels down to mono" in caplog.text


def test_real_time_file_is_paced_by_the_wall_clock(tmp_path):
    rate, seconds = 16000, 0.6
    path = tmp_path / "tone.wav"
    sf.write(path, tone(1000, seconds, rate), rate)
    start = time.monotonic()
    got = read_all(FileSource(path, block=1600))
    elapsed = time.monotonic() - start
    assert seconds - 0.05 < elapsed < seconds + 1.0
    assert_same(got, read_audio(path, RATE))


def test_real_time_file_drops_the_oldest_when_the_consumer_falls_behind(tmp_path):
    rate = 8000
    ramp = np.linspace(0, 0.9, rate, dtype=np.float32)  # 1 s, strictly increasing
    path = tmp_path / "ramp.wav"
    sf.write(path, ramp, rate, subtype="FLOAT")
    with FileSource(path, sample_rate=rate, block=80, buffer_seconds=0.1) as source:
        time.sleep(0.5)  # the consumer falls 0.5 s behind a 0.1 s ring
        got = []
        while (chunk := source.read(200, timeout=5.0)) is not None:
            got.append(chunk)
    got = np.concatenate(got)
    assert source.overflows > 0  # most of the 0.5 s, less where the producer started late on a loaded machine
    assert got.size + source.overflows == rate
    assert np.all(np.diff(got) > 0) and got[-1] == ramp[-1]  # the newest audio, in order


def test_fast_file_never_drops(tmp_path):
    rate = 8000
    path = tmp_path / "noise.wav"
    sf.write(path, noise(1.0, rate), rate, subtype="FLOAT")
    source = FileSource(path, sample_rate=rate, fast=True, block=80, buffer_seconds=0.02)
    source.start()
    time.sleep(0.3)  # a slow consumer: the producer waits for room
    got = read_all(source, max_samples=500)
    assert source.overflows == 0
    assert_same(got, read_audio(path, rate))


def test_nan_in_a_file_is_an_audio_error_naming_the_time(tmp_path):
    rate = 16000
    samples = tone(440, 1.0, rate)
    samples[12000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, samples, rate, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan.wav holds NaN or infinite samples, the first at 0\.750 s"):
        read_all(FileSource(path, fast=True, block=1000))


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"this is not audio" * 100, "cannot read audio file"),
])
def test_unreadable_file_is_an_audio_error(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioError, match=message):
        FileSource(path)


def test_empty_file_is_an_audio_error(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="holds no samples"):
        FileSource(path)


def patched_wav(tmp_path, name, seconds=2.0, riff=None, data=None, rate=None, channels=1):
    """A 16-bit WAV whose header's RIFF size, data size or rate is set by hand (as recorders leave them)."""
    import struct

    path = tmp_path / name
    sf.write(path, np.tile(noise(seconds, 16000, amplitude=0.3)[:, None], (1, channels)), 16000, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    for offset, value in ((4, riff), (40, data), (24, rate)):
        if value is not None:
            raw[offset:offset + 4] = struct.pack("<I", value)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("riff, data", [(0xFFFFFFFF, 0xFFFFFFFF), (0x7FFFFFFF, 0x7FFFFFFF),
                                        (0x7FFFF024, 0x7FFFF000)])  # sox's own "unknown length"
def test_a_wav_whose_writer_never_filled_in_its_sizes_is_read_whole_not_called_cut(tmp_path, caplog, riff, data):
    """A WAV written to a pipe carries "unknown length" sizes: every sample was scored, then the run
    failed, calling a whole recording truncated (its header promising 67108 s)."""
    path = patched_wav(tmp_path, "piped.wav", riff=riff, data=data)
    expected, _ = sf.read(tmp_path / "piped.wav", dtype="float32", frames=32000)
    with caplog.at_level(logging.WARNING):
        got = read_all(FileSource(path, sample_rate=16000, fast=True))
    assert got.size == 32000 and "truncated" not in caplog.text
    np.testing.assert_array_equal(got, expected)


def test_a_wav_whose_recorder_stopped_before_writing_its_sizes_says_so(tmp_path):
    path = patched_wav(tmp_path, "unfinished.wav", riff=0, data=0)
    with pytest.raises(AudioError, match=r"its header says it holds no samples, yet the file has 64044 bytes: a "
                                         r"recording that was never finished.*sox --ignore-length"):
        FileSource(path)


def test_a_sample_rate_no_audio_has_is_an_audio_error_not_a_memory_error(tmp_path):
    path = patched_wav(tmp_path, "rate.wav", rate=2_000_000_000)
    with pytest.raises(AudioError, match=r"rate.wav: 2000000000 Hz x 1 channel\(s\) is beyond what listen reads.*"
                                         "a corrupt header"):
        FileSource(path)


@pytest.mark.parametrize("invert, warned", [(True, True), (False, False)])
def test_channels_that_cancel_in_the_mono_mix_are_warned_of(tmp_path, caplog, invert, warned):
    """A balanced microphone on an unbalanced input: the channels are each other's negative, so the mix
    the model hears is digital silence, and nothing said why."""
    left = noise(2.0, 16000, amplitude=0.1)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, -left if invert else left], axis=1), 16000, subtype="FLOAT")
    source = FileSource(path, sample_rate=16000, fast=True)
    read_all(source)  # the source says what is wrong; listen makes it a status (below)
    assert ("its 2 channels cancel completely when mixed to mono" in (source.cancelling or "")) == warned
    # calibrate reads whole files (read_audio): it fitted a set's thresholds and calibration on silence unwarned
    short = tmp_path / "short.wav"  # a clip of 0.2 s: less than the stream's first second, judged whole
    sf.write(short, np.stack([left[:3200], -left[:3200] if invert else left[:3200]], axis=1), 16000, subtype="FLOAT")
    for file in (path, short):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edge.capture.audio"):
            read_audio(file, 16000)
        assert (f"audio file {file}: its 2 channels cancel completely" in caplog.text) == warned, caplog.text


def test_audio_at_a_lower_rate_than_the_model_s_is_warned_of_once(tmp_path, caplog, monkeypatch):
    """8 kHz audio (a telephone's, a voice recorder's) lost events without a word (an input audit); a
    folder of such recordings given to calibrate was then a warning per file: once a process is enough."""
    import edge.capture.sources

    monkeypatch.setattr(edge.capture.sources, "_band_said", set())
    for rate, warned in ((8000, True), (22050, False), (8000, False)):
        path = tmp_path / f"r{rate}.wav"
        sf.write(path, noise(0.5, rate), rate)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="edge.capture.sources"):
            read_all(FileSource(path, sample_rate=16000, fast=True))
        said = "8000 Hz audio carries sound up to 4000 Hz, and the model listens at 16000 Hz" in caplog.text
        assert said == warned and ("resampling 22050 Hz to 16000 Hz" in caplog.text) == (rate == 22050), caplog.text
        assert all(r.levelno < logging.WARNING for r in caplog.records) != warned, caplog.text
    assert "8000 Hz audio, below the model's 16000 Hz (said above)" in caplog.text


def test_corrupt_file_mid_stream_delivers_what_decoded_then_fails_saying_so(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(path, noise(3.0, 16000), 16000)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] + np.random.default_rng(0).bytes(2000))
    source = FileSource(path, fast=True)
    got = []
    with pytest.raises(AudioError, match="cut.flac is truncated or corrupt after .* s"):
        with source:
            while (chunk := source.read(4000, 5.0)) is not None:
                got.append(chunk)
    assert 0 < sum(c.size for c in got) < 3 * RATE



def test_a_source_stopped_before_its_failure_is_read_is_freed_at_once(tmp_path):
    """A producer's error (a file cut short) waits for `read` to raise it. Its traceback's frames held
    the source: a source stopped before that (a stop, a reload) was kept until a full collection."""
    path = tmp_path / "cut.flac"
    sf.write(path, noise(0.5, 16000), 16000)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_freed_once_stopped(lambda: FileSource(path, sample_rate=16000).start(),
                              lambda source: source._ended.wait(5.0))  # the producer reached the damage


def assert_freed_once_stopped(start, before_stop):
    """The source `start()` returns, once `before_stop(source)` and its stop, is freed as its last
    reference goes, with the cycle collector off."""
    gc.disable()
    try:
        source = start()
        assert before_stop(source) is not False
        source.stop()
        freed = weakref.ref(source)
        del source
        assert freed() is None, "the stopped source outlived its last reference"
    finally:
        gc.enable()


def test_read_needs_start_and_stop_ends_the_stream(stereo_wav):
    source = FileSource(stereo_wav)
    with pytest.raises(RuntimeError, match="start"):
        source.read(100)
    source.start()
    assert source.read(100, timeout=2.0).size > 0
    source.stop()
    while (chunk := source.read(RATE)) is not None:  # what was buffered, then the end
        assert chunk.size
    assert source.end_reason == "stopped"


@pytest.mark.parametrize("max_samples", [37, 4000])
def test_clipping_is_counted_whatever_the_chunks_and_logged_once(tmp_path, caplog, max_samples):
    """Counted for listen's `clipping` status, which says it to the user (every 10 minutes at most);
    the source's own line is debug: at warning it had said it again every 5 s in the journal."""
    rate = 16000
    samples = tone(440, 1.0, rate)
    samples[1000:1100] = 1.0  # one clipped run of 100 samples
    samples[5000:5003] = -1.0  # too short to count
    path = tmp_path / "clipped.wav"
    sf.write(path, samples, rate, subtype="FLOAT")
    with caplog.at_level(logging.DEBUG, logger="edge.capture.sources"):
        source = FileSource(path, fast=True, block=64)
        read_all(source, max_samples=max_samples)
    assert source.clipped_samples == 100 - (CLIP_RUN - 1)
    said = [r for r in caplog.records if "at full scale" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.DEBUG]


@pytest.mark.parametrize("source", ["file", "stdin"])
@pytest.mark.parametrize("peak, said", [(4.0, True), (1.5, False)])
def test_float_audio_beyond_full_scale_is_said_once_with_where_and_how_far(tmp_path, caplog, source, peak, said):
    """A float file (or a broken encode), or f32le on stdin, can hold samples no microphone delivers:
    at 4 times full scale the model hears it 12 dB louder than anything it was trained on; a lossy
    codec's overshoot (1.5) is no such file. Those samples are beyond full scale, not clipped: the
    clipping advice says so and how to fix it, not "record it again with less gain"."""
    rate = 16000
    samples = np.concatenate([tone(440, 0.5, rate), tone(440, 1.0, rate, amplitude=peak)]).astype(np.float32)
    path = tmp_path / "loud.wav"
    sf.write(path, samples, rate, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="edge.capture.sources"):
        if source == "file":
            audio = FileSource(path, fast=True, block=256)
        else:
            audio = StdinSource(rate, format="f32le", sample_rate=rate, block=256,
                                stream=io.BytesIO(samples.astype("<f4").tobytes()))
        read_all(audio)
    lines = [r.getMessage() for r in caplog.records if "beyond full scale" in r.getMessage()]
    if not said:
        assert lines == [] and "less gain" in audio.clipping_fix  # 1.5 clips (runs at full scale) as it is
        return
    assert len(lines) == 1, lines  # once, however many blocks go beyond
    name = str(path) if source == "file" else "stdin"
    assert f"{name} goes beyond full scale at 0.50" in lines[0] and "(4.0 times it there" in lines[0], lines
    fix = "sox --norm=-1 IN OUT" if source == "file" else "into -1..1"
    assert fix in lines[0] and audio.clipped_samples > 0
    assert "less gain" not in audio.clipping_fix and "beyond it, not clipped (4.0 times" in audio.clipping_fix
    assert fix in audio.clipping_fix


def test_a_clean_signal_has_no_clipping(stereo_wav, caplog):
    source = FileSource(stereo_wav, fast=True)
    read_all(source)
    assert source.clipped_samples == 0 and "at full scale" not in caplog.text


# --- stdin --------------------------------------------------------------------------------------

def encode(samples: np.ndarray, fmt: str) -> bytes:
    if fmt == "f32le":
        return samples.astype("<f4").tobytes()
    bits = {"s16le": 16, "s32le": 32}[fmt]
    scaled = np.clip(np.round(samples.astype(np.float64) * 2 ** (bits - 1)), -2 ** (bits - 1), 2 ** (bits - 1) - 1)
    return scaled.astype(f"<i{bits // 8}").tobytes()


@pytest.mark.parametrize("fmt", ["s16le", "s32le", "f32le"])
def test_stdin_pcm_equals_whole_conversion_whatever_the_block(fmt):
    rate = 22050
    stereo = np.stack([tone(300, 0.5, rate), noise(0.5, rate, amplitude=0.3)], axis=1)
    data = encode(stereo, fmt)
    dtype, scale = {"s16le": ("<i2", 2.0 ** -15), "s32le": ("<i4", 2.0 ** -31), "f32le": ("<f4", 1.0)}[fmt]
    decoded = np.frombuffer(data, dtype=dtype).astype(np.float32).reshape(-1, 2) * np.float32(scale)
    expected = resample(to_mono(decoded), rate, RATE)
    for block in BLOCKS:
        source = StdinSource(rate, format=fmt, channels=2, block=block, stream=io.BytesIO(data))
        assert_same(read_all(source), expected)
        assert source.end_reason == "stdin closed"


def test_stdin_through_a_real_pipe_written_in_odd_pieces():
    rate = 16000
    samples = noise(0.5, rate, amplitude=0.3)
    data = encode(samples, "f32le")
    read_end, write_end = os.pipe()

    def writer():
        with os.fdopen(write_end, "wb", buffering=0) as pipe:
            for i in range(0, len(data), 997):  # pieces that split samples
                pipe.write(data[i:i + 997])

    thread = threading.Thread(target=writer)
    thread.start()
    with os.fdopen(read_end, "rb") as pipe:
        got = read_all(StdinSource(rate, format="f32le", stream=pipe))
    thread.join()
    assert_same(got, resample(samples, rate, RATE))


def test_stdin_nan_and_inf_become_zero_counted_and_warned_at_most_once_a_second(caplog):
    rate = 16000
    samples = tone(440, 0.5, rate)
    bad = [10, 11, 2000, 5000]
    samples[bad] = [np.nan, np.inf, -np.inf, np.nan]
    source = StdinSource(rate, format="f32le", sample_rate=rate, block=1000,
                         stream=io.BytesIO(encode(samples, "f32le")))
    with caplog.at_level(logging.WARNING, logger="edge.capture.sources"):
        got = read_all(source)
    assert source.nonfinite_samples == len(bad)
    assert np.all(got[bad] == 0) and np.all(np.isfinite(got))
    assert caplog.text.count("NaN or infinite") == 1  # three bad blocks within a second: one warning


def test_stdin_trailing_partial_frame_is_dropped_with_a_warning(caplog):
    data = encode(tone(440, 0.1, 16000), "s16le") + b"\x01"
    with caplog.at_level(logging.WARNING, logger="edge.capture.sources"):
        got = read_all(StdinSource(16000, sample_rate=16000, stream=io.BytesIO(data)))
    assert got.size == 1600 and "dropped 1 trailing byte" in caplog.text


class Pieces(io.RawIOBase):
    """A stream whose reads return the given pieces, one a read (a pipe's writer doing small writes)."""

    def __init__(self, *pieces: bytes):
        self.pieces = list(pieces)

    def read(self, size=-1):
        return self.pieces.pop(0) if self.pieces else b""


def test_stdin_whose_first_read_is_shorter_than_a_frame_is_read_whole_and_still_checked():
    """f32le's first read of 2 bytes made an empty block, whose max() crashed the run (a traceback,
    no end for an open event); and the container check saw 2 bytes, so no MP3 or AIFF was refused."""
    samples = noise(0.5, 16000, amplitude=0.3)
    data = encode(samples, "f32le")
    got = read_all(StdinSource(16000, format="f32le", sample_rate=16000, stream=Pieces(data[:2], data[2:5], data[5:])))
    np.testing.assert_array_equal(got, samples)
    for head, what in ((b"ID3\x04", "an MP3 stream"), (b"FORM", "an AIFF file"), (b".snd", "an AU file")):
        with pytest.raises(AudioError, match=f"stdin holds {what}"):
            read_all(StdinSource(16000, sample_rate=16000, stream=Pieces(head[:1], head[1:] + data[:4000])))


@pytest.mark.parametrize("kwargs, message", [
    ({"rate": 0}, "positive integer"),
    ({"rate": 10_000_000_000}, r"10000000000 Hz x 1 channel\(s\) is beyond what listen reads"),
    ({"rate": 16000, "channels": 100_000}, "is beyond what listen reads"),
    ({"rate": -16000}, "positive integer"),
    ({"rate": 16000.5}, "positive integer"),
    ({"rate": 16000, "format": "u8"}, "s16le, s32le, f32le"),
    ({"rate": 16000, "channels": 0}, "channels"),
])
def test_stdin_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(AudioError, match=message):
        StdinSource(stream=io.BytesIO(b""), **kwargs)


# --- microphone (real capture through a PulseAudio null sink) ------------------------------------

def capture_after_first_audio(mic, seconds: float, play=None) -> np.ndarray:
    """Wait until the device delivers (PulseAudio may take ~1.5 s), start `play`, record."""
    deadline = time.monotonic() + 10
    while not mic.read(3200, 0.5).size:
        assert time.monotonic() < deadline, "the device delivered nothing for 10 s"
    player = play() if play else None
    chunks, wanted = [], int(seconds * mic.sample_rate)
    while sum(c.size for c in chunks) < wanted:
        chunks.append(mic.read(3200, 0.5))
    if player:
        player.wait(timeout=30)
    return np.concatenate(chunks)


def align(recorded: np.ndarray, reference: np.ndarray) -> float:
    """Normalised correlation of `reference` with the part of `recorded` that matches it best."""
    n = recorded.size + reference.size
    xcorr = np.fft.irfft(np.fft.rfft(recorded, n) * np.conj(np.fft.rfft(reference, n)), n)
    lag = int(np.argmax(xcorr[:recorded.size - reference.size + 1]))
    part = recorded[lag:lag + reference.size]
    return float(part @ reference / (np.linalg.norm(part) * np.linalg.norm(reference) + 1e-12))


@pytest.mark.capture
def test_input_devices_are_listed_and_found(null_sink):
    devices = list_input_devices()
    assert devices and sum(d.is_default for d in devices) == 1
    assert all(d.channels > 0 and d.default_rate > 0 for d in devices)
    default = find_input_device()
    assert default.is_default
    assert find_input_device(default.index) == find_input_device(str(default.index)) == default
    assert find_input_device(default.name.upper()) == default
    assert find_input_device("puls").name == "pulse"
    with pytest.raises(AudioError, match=r"no input device 'no such mic'; input devices are .*'pulse'.*\(a service: audio.device\)"):
        find_input_device("no such mic")
    with pytest.raises(AudioError, match="no input device 999"):
        find_input_device(999)


@pytest.mark.capture
def test_unsupported_device_rate_is_a_clear_error(null_sink):
    with pytest.raises(AudioError, match=r"cannot capture 2 channel\(s\) at 10000000 Hz"):
        MicrophoneSource("default", device_rate=10_000_000)
    with pytest.raises(AudioError, match="device rate must be a positive integer"):
        MicrophoneSource("default", device_rate=-1)


@pytest.mark.capture
@pytest.mark.data
def test_microphone_hears_the_clip_played_into_the_sink(null_sink, data_dir):
    clip = data_dir / "esc50" / "audio" / "1-187207-A-20.flac"
    expected = read_audio(clip, RATE)
    with MicrophoneSource("default", sample_rate=RATE) as mic:
        recorded = capture_after_first_audio(mic, expected.size / RATE + 1.0, lambda: null_sink.play(clip))
        assert mic.overflows == 0
    # PulseAudio resamples 16 kHz -> 48 kHz -> the device's 44.1 kHz, soxr -> 32 kHz: 0.997 seen.
    assert align(recorded, expected) > 0.9


@pytest.mark.capture
def test_microphone_by_name_hears_a_tone_at_the_model_rate(null_sink, tmp_path):
    path, freq = tmp_path / "tone.wav", 1000.0
    sf.write(path, tone(freq, 3.0, 48000, amplitude=0.5), 48000)
    with MicrophoneSource("puls", block=256) as mic:
        recorded = capture_after_first_audio(mic, 1.0, lambda: null_sink.play(path))
    heard = recorded[-RATE // 2:]
    spectrum = np.abs(np.fft.rfft(heard * np.hanning(heard.size)))
    assert abs(np.fft.rfftfreq(heard.size, 1 / RATE)[np.argmax(spectrum)] - freq) < 4.0
    assert 0.25 < heard.std() * np.sqrt(2) < 0.75  # amplitude 0.5 came back


@pytest.mark.capture
def test_a_stopped_microphone_is_freed_at_once_not_by_the_cycle_collector(null_sink):
    """A sounddevice stream is a reference cycle of its own (its C callback holds it). While it held
    the source's callbacks, each microphone stopped (a lost one, in a service reopening it for months)
    kept its ring (1.7 MiB at 44.1 kHz stereo) until a full collection, which a steady process seldom runs."""
    assert_freed_once_stopped(lambda: MicrophoneSource("default").start(),
                              lambda mic: capture_after_first_audio(mic, 0.1).size > 0)


@pytest.mark.capture
@pytest.mark.parametrize("failure", ["daemon killed", "daemon hung"])
def test_device_loss_is_an_error_not_a_hang(null_sink, tmp_path_factory, failure):
    """A private PulseAudio (its own XDG_RUNTIME_DIR) dies or freezes under an open stream."""
    from tests.pulse import NullSink

    session_runtime = os.environ["XDG_RUNTIME_DIR"]
    private = NullSink.start(tmp_path_factory.mktemp("lost"))  # sets XDG_RUNTIME_DIR until stop()
    daemon = int((private.runtime_dir / "pulse" / "pid").read_text())
    mic = None
    try:
        mic = MicrophoneSource("default").start()  # the ALSA pulse plugin connects to the private one
        capture_after_first_audio(mic, 0.1)
        mic.stall_seconds = 0.5
        os.kill(daemon, signal.SIGKILL if failure == "daemon killed" else signal.SIGSTOP)
        start = time.monotonic()
        message = "stopped delivering audio" if failure == "daemon killed" else "delivered no audio for 0.5 s"
        with pytest.raises(AudioError, match=message):
            while time.monotonic() - start < 10:
                mic.read(3200, 0.2)
        assert time.monotonic() - start < 3
        start = time.monotonic()
        mic.stop()  # a frozen server cannot close the stream: stop gives up after CLOSE_SECONDS
        assert time.monotonic() - start < 4
    finally:
        try:
            os.kill(daemon, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if mic is not None:
            mic.stop()
        private.stop()
    assert os.environ["XDG_RUNTIME_DIR"] == session_runtime


def test_stdin_that_is_a_file_not_raw_pcm_says_so(caplog):
    """`arecord` without -t raw writes a WAV header; a FLAC or Ogg stream would be heard as pure noise."""
    import soundfile as sf

    samples = tone(440, 0.2, 16000)
    wav, flac = io.BytesIO(), io.BytesIO()
    sf.write(wav, samples, 16000, format="WAV", subtype="PCM_16")
    sf.write(flac, samples, 16000, format="FLAC")
    with caplog.at_level(logging.WARNING, logger="edge.capture.sources"):
        got = read_all(StdinSource(16000, sample_rate=16000, stream=io.BytesIO(wav.getvalue())))
    assert "stdin starts with a WAV header" in caplog.text and "arecord -t raw" in caplog.text
    assert got.size == (len(wav.getvalue()) // 2)  # heard, header and all: a warning, not a stop
    with pytest.raises(AudioError, match="stdin holds a FLAC stream, not raw PCM"):
        read_all(StdinSource(16000, sample_rate=16000, stream=io.BytesIO(flac.getvalue())))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.capture.sources"):
        read_all(StdinSource(16000, sample_rate=16000, stream=io.BytesIO(encode(samples, "s16le"))))
    assert "stdin" not in caplog.text  # raw PCM: nothing to say


def test_rescans_for_a_lost_microphone_wait_for_the_sound_cards_to_change(monkeypatch):
    """Each PortAudio rescan leaks ~12 KiB: a microphone left unplugged for months is retried
    every 30 s, so after RESCAN_FREELY rescans one waits for the sound cards to change (a device
    plugged in) or RESCAN_EVERY seconds; a device that opens again gives back the free ones."""
    from edge.capture import sources

    calls = []
    fake = type("FakeSoundDevice", (), {"_terminate": staticmethod(lambda: calls.append("terminate")),
                                        "_initialize": staticmethod(lambda: calls.append("initialize"))})
    cards, now = ["0 [USB]: one card"], [1000.0]
    monkeypatch.setattr(sources, "_sounddevice", lambda: fake)
    monkeypatch.setattr(sources, "sound_cards", lambda: cards[0])
    monkeypatch.setattr(sources.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(sources, "_rescans", sources._Rescans())
    done = [sources.rescan_devices() for _ in range(sources.RESCAN_FREELY + 5)]
    assert done == [True] * sources.RESCAN_FREELY + [False] * 5
    assert calls.count("terminate") == sources.RESCAN_FREELY
    cards[0] = "0 [USB]: one card\n1 [Mic]: plugged in"
    assert sources.rescan_devices() and not sources.rescan_devices()  # the change, once
    now[0] += sources.RESCAN_EVERY
    assert sources.rescan_devices() and not sources.rescan_devices()  # then every RESCAN_EVERY seconds
    assert sources.rescan_devices(force=True)
    # a device that captures again gives them back: test_a_microphone_that_captures_again_...


def test_a_sound_server_s_socket_made_anew_is_a_change_of_the_sound_cards(tmp_path, monkeypatch):
    """A sound server started again changes no kernel sound card: its socket, made anew, is what
    changes. $PULSE_SERVER's unix paths count too (a machine id before one; tcp ones cannot, nor one that is
    not absolute: the current folder's time changes with every file made in it)."""
    import socket as sockets

    from edge.capture import sources

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("PULSE_SERVER", f"{{0123abcd}}unix:{tmp_path}/elsewhere tcp:box:4713 unix: unix:rel /also")
    assert sources.sound_server_sockets()[:4] == [tmp_path / "elsewhere", Path("/also"),
                                                  tmp_path / "pulse" / "native", tmp_path / "pipewire-0"]
    (tmp_path / "pulse").mkdir()
    before = sources.sound_cards()

    def serve():  # a server's socket, as a daemon makes it at its start
        (tmp_path / "pulse" / "native").unlink(missing_ok=True)
        server = sockets.socket(sockets.AF_UNIX)
        server.bind(str(tmp_path / "pulse" / "native"))
        server.close()

    serve()
    started = sources.sound_cards()
    assert started != before and str(tmp_path / "pulse" / "native") in started
    assert sources.sound_cards() == started  # read again, unchanged
    time.sleep(0.01)
    serve()
    assert sources.sound_cards() != started  # started again

@pytest.mark.capture
def test_a_microphone_that_captures_again_gives_back_the_free_rescans(null_sink, monkeypatch):
    """The free rescans spent (a microphone lost for a while), a real capture that starts on the
    sound server resets them: its next loss is rescanned at once, not after RESCAN_EVERY."""
    from edge.capture import sources

    monkeypatch.setattr(sources, "_rescans", sources._Rescans())
    while sources.rescan_devices():  # real PortAudio rescans, until the throttle holds
        pass
    assert sources._rescans.count == sources.RESCAN_FREELY
    with MicrophoneSource("default", sample_rate=RATE) as mic:
        mic.read(RATE // 10)
    assert sources.rescan_devices()


@pytest.mark.capture
def test_a_sound_server_started_again_is_looked_for_at_once(null_sink, tmp_path_factory, monkeypatch):
    """The free rescans spent (a microphone lost for minutes), PulseAudio started again makes its
    socket anew: PortAudio looks again at once. It had waited RESCAN_EVERY (a restart changes no
    sound card), so a service's audio came back up to 10 minutes after its sound server."""
    from edge.capture import sources
    from tests.pulse import NullSink

    session_runtime = os.environ["XDG_RUNTIME_DIR"]
    monkeypatch.setattr(sources, "_rescans", sources._Rescans())
    runtime = tmp_path_factory.mktemp("restarted")
    daemon = NullSink.start(runtime)  # sets XDG_RUNTIME_DIR until the end
    try:
        while sources.rescan_devices():  # real PortAudio rescans, until the throttle holds
            pass
        daemon.keepalive.kill()
        daemon.keepalive.wait()
        subprocess.run(["pulseaudio", "--kill"], capture_output=True, timeout=30)
        gone = time.monotonic() + 10  # --kill returns before the daemon has removed its socket (a fresh CI run)
        while not sources.rescan_devices():
            assert time.monotonic() < gone, "the sound server went away: a change too"
            time.sleep(0.05)
        with pytest.raises(AudioError, match=r"PortAudio's device list is \d+ s old: it looks again when a sound "
                                             r"card or the sound server changes, or in \d+ s"):
            sources.find_input_device("no such microphone", rescan=True)
        daemon = NullSink.start(runtime)
        assert sources.rescan_devices(), "the sound server came back: PortAudio must look again"
        with MicrophoneSource("default", sample_rate=RATE) as mic:
            assert capture_after_first_audio(mic, 0.1).size
    finally:
        daemon.stop()
        os.environ["XDG_RUNTIME_DIR"] = session_runtime


STUCK_CLOSE_CHILD = """
import threading, time, sounddevice
from edge.capture import sources
pulse = threading.Lock()

class Stream:  # its close deadlocks inside libpulse, holding what Pa_Terminate then needs
    def close(self, ignore_errors=True):
        pulse.acquire()
        time.sleep(3600)

real = sounddevice._terminate
def terminate():
    with pulse:
        real()
sounddevice._terminate = terminate
source = sources.MicrophoneSource.__new__(sources.MicrophoneSource)
source.name, source._stream = "input device 0 ('pulse')", Stream()
sources.CLOSE_SECONDS = 0.2
source._stop_producer()
print("left behind", sources.stuck_close_seconds() > 0, flush=True)
raise SystemExit(1)
"""


def test_a_process_with_a_stuck_portaudio_close_still_exits(tmp_path):
    """sounddevice terminates PortAudio at exit, which would wait on the hung sound server for
    ever: once a close is left behind, the exit leaves PortAudio to the OS, and the unit can
    restart the service."""
    import subprocess
    import sys

    pytest.importorskip("sounddevice", exc_type=ImportError)
    child = subprocess.run([sys.executable, "-c", STUCK_CLOSE_CHILD], capture_output=True, text=True, timeout=30,
                           cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == 1 and "left behind True" in child.stdout, child.stderr[-2000:]


ALSA_ERROR_CHILD = """
import logging
logging.basicConfig(level=logging.DEBUG, format="LOG %(levelname)s %(message)s")
from edge.capture.sources import MicrophoneSource
from edge.errors import AudioError
try:
    MicrophoneSource("default")
except AudioError as err:
    print("refused:", err, flush=True)
"""


@pytest.mark.capture
def test_alsa_s_own_error_lines_go_to_the_log_not_stderr(null_sink):
    """A capture stream the sound server refuses (here: its default source does not exist, as
    when a USB microphone is unplugged) made ALSA write "ALSA lib pcm_pulse.c:... Unable to create
    stream" and a blank line straight to stderr, with no priority for the journal, on every try to
    reopen it. They are debug lines of the log now; the refusal is still said."""
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", ALSA_ERROR_CHILD], capture_output=True, text=True, timeout=60,
                           cwd=Path(__file__).resolve().parents[2], env={**os.environ, "PULSE_SOURCE": "no-such-source"})
    assert "refused: input device" in child.stdout, (child.stdout, child.stderr[-2000:])
    assert "ALSA lib" not in child.stderr and "\n\n" not in child.stderr, child.stderr[-2000:]
    assert "LOG DEBUG ALSA pcm_pulse.c" in child.stderr and "Unable to create stream" in child.stderr


def test_channels_that_cancel_are_a_status_a_service_s_outputs_see(tmp_path):
    """The warning was a log line only: a JSON consumer, MQTT's problem sensor and the event log saw 0 events
    and nothing else. It is a status (code channels_cancel), said again every 10 minutes as clipping is."""
    from edge.listen import ListenOptions, listen
    from edge.outputs.mqtt import HELD, PROBLEMS
    from tests.edge.test_listen_contracts import Collect

    left = noise(3.0, 16000, amplitude=0.1)
    for invert in (True, False):
        path = tmp_path / f"stereo{invert}.wav"
        sf.write(path, np.stack([left, -left if invert else left], axis=1), 16000, subtype="FLOAT")
        sink = Collect()
        listen(ListenOptions(labels="urban", input=str(path), fast=True), sink=sink)
        said = [s for s in sink.of("status") if s.code == "channels_cancel"]
        assert len(said) == invert, said
        assert not invert or (said[0].level == "warning" and "its 2 channels cancel completely" in said[0].message)
    assert "channels_cancel" in PROBLEMS and "channels_cancel" in HELD  # MQTT's problem, held 15 minutes
