import dataclasses

import numpy as np
import pytest

from edge.capture.audio import read_audio
from edge.features import Frontend, StreamingLogMel, log_mel, mel_filterbank
from tests.signals import chirp, noise, synthetic_set, tone

FE = Frontend()
# Streaming and batch run the same float32 arithmetic; only BLAS may block the mel matmul
# differently for different frame counts, which moves the last bits.
STREAM_TOL_DB = 1e-4


def stream(samples: np.ndarray, chunk: int | list[int], frontend: Frontend = FE) -> np.ndarray:
    """Push `samples` in chunks of `chunk` (or cycling through a list of sizes), then flush."""
    sizes = chunk if isinstance(chunk, list) else [chunk]
    s, out, i, k = StreamingLogMel(frontend), [], 0, 0
    while i < samples.size:
        n = sizes[k % len(sizes)]
        out.append(s.push(samples[i:i + n]))
        i, k = i + n, k + 1
    out.append(s.flush())
    return np.concatenate(out)


def test_frame_count_and_dtype():
    x = noise(10.0, FE.sample_rate)
    mel = log_mel(x)
    assert mel.shape == (FE.frames, FE.n_mels) == (1001, 64)
    assert mel.dtype == np.float32


def test_filterbank_is_slaney():
    fb = mel_filterbank(FE)
    assert fb.shape == (513, 64)
    # Slaney normalisation: each triangle has area-normalised height 2 / (upper - lower edge)
    # so its peak shrinks as bands widen above 1 kHz; HTK unnormalised filters peak at 1.
    peaks = fb.max(axis=0)
    assert peaks[0] > peaks[-1] * 5
    assert np.all(fb >= 0) and np.all(fb[:2].sum(axis=0) < fb.max())  # 50 Hz floor: DC barely used


def test_htk_filterbank_is_tf_signal_style():
    fe = Frontend.yamnet()
    fb = mel_filterbank(fe)
    assert fb.shape == (257, 64)
    assert np.all(fb[0] == 0)  # the DC bin is left out, as tf.signal does
    hz = np.linspace(0, 8000, 257)
    assert np.all(fb[(hz < 125) | (hz > 7500)] == 0)  # nothing outside 125-7500 Hz
    # unnormalised triangles in the mel domain: peak 1 at the centre, which a bin may miss
    assert fb.max() <= 1.0 and fb.max(axis=0).min() > 0.5
    # neighbouring triangles cross-fade: inside the band, weights of a bin sum to 1
    inside = (hz > 400) & (hz < 7000)
    np.testing.assert_allclose(fb[inside].sum(axis=1), 1.0, atol=1e-5)


def test_yamnet_frontend_units():
    fe = Frontend.yamnet()
    assert fe.window_seconds == pytest.approx(10.0) and FE.window_seconds == pytest.approx(10.0)
    silence = log_mel(np.zeros(16000, np.float32), fe)
    np.testing.assert_allclose(silence, np.log(0.001), rtol=1e-6)  # ln(0 + offset)
    loud = log_mel(tone(1000, 1.0, 16000, amplitude=0.5), fe)
    assert loud.max() > 2.0  # magnitude spectrum of a 0.5 tone: far above the offset


@pytest.mark.parametrize("chunk", [1, 97, 4096])
def test_streaming_equals_batch_yamnet_frontend(chunk):
    fe = Frontend.yamnet()
    x = chirp(125, 7500, 0.5 if chunk == 1 else 2.0, fe.sample_rate) + noise(2.0, fe.sample_rate, 0.01)[:8000 if chunk == 1 else 32000]
    np.testing.assert_allclose(stream(x, chunk, fe), log_mel(x, fe), atol=STREAM_TOL_DB, rtol=0)


def test_tone_lands_in_its_band():
    for freq in (300.0, 1000.0, 5000.0):
        mel = log_mel(tone(freq, 1.0, FE.sample_rate))
        fb = mel_filterbank(FE)
        bin_hz = np.linspace(0, FE.sample_rate / 2, 513)
        expected = int(np.argmax(fb[np.argmin(np.abs(bin_hz - freq))]))
        assert int(np.argmax(mel[50])) == expected


# float32 log10 of the floor is not exact: numpy 2.x gives 10*log10(1e-10) = -100.00001, older
# releases -100.0. 1e-4 dB is ~13 float32 steps at -100 dB, far below any signal's difference.
FLOOR_TOL_DB = 1e-4


@pytest.mark.parametrize("frontend", [FE, Frontend.yamnet()], ids=["db", "ln"])
def test_silence_is_the_log_floor(frontend):
    mel = log_mel(np.zeros(frontend.sample_rate, np.float32), frontend)
    floor = 10 * np.log10(frontend.log_floor) if frontend.log == "db" else np.log(frontend.log_floor)
    np.testing.assert_allclose(mel, floor, rtol=0, atol=FLOOR_TOL_DB)


@pytest.mark.parametrize("chunk", [1, 2, 7, 97, 320, 1009, 4096, [1, 513, 2, 700]])
def test_streaming_equals_batch_synthetic(chunk):
    seconds = 0.4 if chunk in (1, 2) else 3.0  # one-sample pushes are slow in Python
    x = chirp(50, 14000, seconds, FE.sample_rate) + noise(seconds, FE.sample_rate, 0.01)
    x = x[: x.size - 13]  # a length that is not a multiple of the hop
    ref = log_mel(x)
    got = stream(x, chunk)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=STREAM_TOL_DB, rtol=0)


@pytest.mark.parametrize("n", [2, 5, 512, 513, 514, 1023, 1024, 1025])
def test_streaming_short_signals(n):
    x = noise(1.0, FE.sample_rate)[:n]
    np.testing.assert_allclose(stream(x, 3), log_mel(x), atol=STREAM_TOL_DB, rtol=0)


def test_streaming_emits_only_complete_frames():
    s = StreamingLogMel(FE)
    assert s.push(np.zeros(FE.n_fft // 2, np.float32)).shape[0] == 0  # left padding not known yet
    assert s.push(np.zeros(1, np.float32)).shape[0] == 1  # frame 0 spans padded [0, n_fft)
    # Frame t is centred on sample t*hop and needs raw samples up to t*hop + n_fft//2.
    assert s.push(np.zeros(FE.hop_length - 2, np.float32)).shape[0] == 0
    assert s.push(np.zeros(1, np.float32)).shape[0] == 1
    n = s.samples_seen
    assert s.frames_emitted + s.flush().shape[0] == FE.num_frames(n)
    with pytest.raises(RuntimeError, match="reset"):
        s.push(np.zeros(10, np.float32))
    s.reset()
    assert s.push(np.zeros(FE.n_fft, np.float32)).shape[0] == 2


def test_streaming_memory_is_bounded():
    s = StreamingLogMel(FE)
    for _ in range(200):
        s.push(noise(0.1, FE.sample_rate))
    assert s._pending.size <= FE.n_fft + FE.hop_length


@pytest.mark.data
def test_streaming_equals_batch_real_audio(data_dir):
    files = [data_dir / "esc50/audio/1-187207-A-20.flac", next((data_dir / "us8k/audio/fold1").glob("*.ogg"))]
    for path in files:
        x = read_audio(path, FE.sample_rate)
        ref = log_mel(x)
        for chunk in (1, 127, 1000, 4096, x.size):
            if chunk == 1:
                part = x[: FE.sample_rate // 2]
                np.testing.assert_allclose(stream(part, 1), log_mel(part), atol=STREAM_TOL_DB, rtol=0)
            else:
                np.testing.assert_allclose(stream(x, chunk), ref, atol=STREAM_TOL_DB, rtol=0)


def test_frontend_round_trip_and_errors():
    assert Frontend.from_dict(FE.to_dict()) == FE
    data = FE.to_dict()
    with pytest.raises(ValueError, match="missing \\['hop_length'\\]"):
        Frontend.from_dict({k: v for k, v in data.items() if k != "hop_length"})
    with pytest.raises(ValueError, match="unknown \\['hop'\\]"):
        Frontend.from_dict({**data, "hop": 3})
    with pytest.raises(ValueError, match="n_mels='64' must be of type int"):
        Frontend.from_dict({**data, "n_mels": "64"})
    with pytest.raises(ValueError, match="mel_scale='mel' is not supported: it must be 'slaney' or 'htk'"):
        dataclasses.replace(FE, mel_scale="mel")
    with pytest.raises(ValueError, match="power=3.0 is not supported"):
        dataclasses.replace(FE, power=3.0)
    with pytest.raises(ValueError, match="f_min/f_max"):
        dataclasses.replace(FE, f_max=20000.0)


def test_bad_signal_shapes():
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((100, 2), np.float32))
    with pytest.raises(ValueError, match="at least 2 samples"):
        log_mel(np.zeros(1, np.float32))


def test_synthetic_signals_are_finite():
    for name, x in synthetic_set(FE.sample_rate).items():
        assert np.isfinite(log_mel(x)).all(), name
