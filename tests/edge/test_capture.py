"""Real capture: PortAudio (sounddevice) records what is played into a PulseAudio null sink.

This checks the capture stack the listen loop stands on: the device opens, audio arrives at
the device rate, soxr's streaming resampler brings it to the model rate, and the log-mel of
what was heard puts a played tone in its mel band.
"""

import numpy as np
import pytest
import soundfile as sf
import soxr

from edge.features import Frontend, StreamingLogMel, mel_filterbank
from tests.signals import tone

pytestmark = pytest.mark.capture


def test_tone_played_into_the_sink_is_recorded(null_sink, tmp_path):
    import sounddevice as sd  # after the fixture: PortAudio must see its XDG_RUNTIME_DIR

    rate, freq = 48000, 1000.0
    path = tmp_path / "tone.wav"
    sf.write(path, tone(freq, 3.0, rate, amplitude=0.5), rate)
    player = null_sink.play(path)
    try:
        recorded = sd.rec(int(1.5 * rate), samplerate=rate, channels=1, dtype="float32", blocking=True)[:, 0]
    finally:
        player.wait(timeout=30)
    assert np.abs(recorded).max() > 0.2, "nothing was captured from the null sink's monitor"
    spectrum = np.abs(np.fft.rfft(recorded * np.hanning(recorded.size)))
    assert abs(np.fft.rfftfreq(recorded.size, 1 / rate)[np.argmax(spectrum)] - freq) < 2.0

    # 48 kHz capture -> 32 kHz model rate in blocks, as the microphone source will do it.
    fe = Frontend()
    resampler = soxr.ResampleStream(rate, fe.sample_rate, 1, dtype="float32")
    mel = StreamingLogMel(fe)
    frames = [mel.push(resampler.resample_chunk(block)) for block in np.array_split(recorded, 37)]
    frames.append(mel.push(resampler.resample_chunk(np.zeros(0, np.float32), last=True)))
    frames = np.concatenate(frames + [mel.flush()])
    loud = frames[frames.max(axis=1) > frames.max() - 20]
    assert loud.shape[0] > 50
    bin_hz = np.linspace(0, fe.sample_rate / 2, fe.n_fft // 2 + 1)
    tone_band = int(np.argmax(mel_filterbank(fe)[np.argmin(np.abs(bin_hz - freq))]))
    assert np.bincount(np.argmax(loud, axis=1)).argmax() == tone_band
