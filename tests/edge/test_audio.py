import numpy as np
import pytest
import soundfile as sf

from edge.capture.audio import read_audio
from edge.errors import AudioError
from tests.signals import tone


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("ext,fmt,subtype", [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_24"),
                                             ("ogg", "OGG", "VORBIS"), ("wav", "WAV", "FLOAT")])
def test_formats_resample_and_mixdown(tmp_path, ext, fmt, subtype):
    rate = 44100
    left, right = tone(1000, 1.0, rate, 0.4), tone(1000, 1.0, rate, 0.2)
    path = tmp_path / f"clip.{ext}"
    sf.write(path, np.stack([left, right], axis=1), rate, format=fmt, subtype=subtype)
    x = read_audio(path, 32000)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(x.size - 32000) <= 1
    assert abs(dominant_hz(x, 32000) - 1000.0) < 2.0
    # mono = mean of the channels: 0.3 amplitude (lossy Vorbis within a few percent)
    assert abs(np.abs(x[1000:-1000]).max() - 0.3) < 0.02


def test_same_rate_is_untouched(tmp_path):
    x = tone(440, 0.5, 32000)
    sf.write(tmp_path / "a.wav", x, 32000, subtype="FLOAT")
    np.testing.assert_array_equal(read_audio(tmp_path / "a.wav", 32000), x)


def test_missing_file():
    with pytest.raises(AudioError, match="cannot read audio file /no/such.wav: no such file$"):
        read_audio("/no/such.wav", 32000)


def test_a_relative_path_not_found_names_where_it_looked(tmp_path, monkeypatch):
    """A service runs in /, not where its config was written: each 'not found' says where it looked."""
    from edge.bundle import read_bundle
    from edge.errors import BundleError, LabelSetError
    from edge.labels.labelset import resolve_label_set

    monkeypatch.chdir(tmp_path)
    looked = rf"\(looked at {tmp_path}/sounds/a.wav: a relative path is read from the folder the command runs in\)"
    with pytest.raises(AudioError, match=looked):
        read_audio("sounds/a.wav", 32000)
    with pytest.raises(LabelSetError, match=rf"\(looked at {tmp_path}/sets/site.yaml: a relative"):
        resolve_label_set("sets/site.yaml")
    with pytest.raises(BundleError, match=rf"is not a folder \(looked at {tmp_path}/bundles/b: a relative"):
        read_bundle("bundles/b")


def test_corrupt_file(tmp_path):
    path = tmp_path / "broken.flac"
    path.write_bytes(b"fLaC" + bytes(range(256)) * 8)
    with pytest.raises(AudioError, match=f"cannot read audio file {path}"):
        read_audio(path, 32000)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioError, match=f"audio file {path} holds no samples"):
        read_audio(path, 32000)


def test_a_file_of_no_bytes_and_a_broken_link_say_what_they_are(tmp_path):
    """A 0-byte file was "not an audio file libsndfile can read", and a link to a file gone was "no such
    file", though the link is there (an input audit)."""
    empty = tmp_path / "nothing.wav"
    empty.touch()
    with pytest.raises(AudioError, match=r"nothing.wav: it is empty \(0 bytes\)"):
        read_audio(empty, 16000)
    link = tmp_path / "latest.wav"
    link.symlink_to(tmp_path / "gone" / "rec.wav")
    with pytest.raises(AudioError, match=f"latest.wav: it is a link to {tmp_path}/gone/rec.wav, which does not exist"):
        read_audio(link, 16000)


def test_non_finite_samples(tmp_path):
    x = tone(440, 1.0, 16000)
    x[8000] = np.nan
    x[9000] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"holds 2 NaN or infinite sample\(s\), the first at 0.500 s"):
        read_audio(path, 32000)


def test_the_dc_blocker_removes_an_offset_and_is_the_same_whatever_the_blocks():
    """A MEMS microphone on I2S adds a constant offset (5 % of full scale reads as -26 dBFS): it goes, what the
    model hears (from 125 Hz) stays, and a stream cut into other blocks (a microphone's, a file's) gives the
    same samples."""
    from edge.features import DcBlocker

    rate = 16000
    rng = np.random.default_rng(0)
    t = np.arange(4 * rate) / rate
    sound = (0.1 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    whole = DcBlocker(rate)(sound + 0.05)
    assert abs(float(whole[rate:].mean())) < 1e-4  # the offset, gone after the first second (and at once: steady)
    assert np.abs(whole[rate:] - sound[rate:]).max() < 0.01  # 440 Hz and the noise pass
    blocker, cuts = DcBlocker(rate), np.sort(rng.choice(sound.size, 40, replace=False))
    blocked = np.concatenate([blocker(part) for part in np.split(sound + 0.05, cuts)])
    assert np.abs(blocked - whole).max() < 1e-6


def test_a_stream_with_an_offset_reads_the_levels_and_scores_of_one_without(tmp_path):
    """The offset read as every window's level: quiet windows at -26 dBFS, so `--min-level` never gated and
    the window gain stopped raising; scores moved with it. The audio itself is as it came (the model's band
    starts at 125 Hz)."""
    from edge.listen import ListenOptions, listen
    from tests.edge.test_listen_contracts import Collect
    from tests.signals import noise

    quiet = noise(6.0, 16000, amplitude=0.003)
    quiet[2 * 16000:3 * 16000] += 0.3 * np.sin(2 * np.pi * 800 * np.arange(16000) / 16000)
    windows = {}
    for name, offset in (("clean", 0.0), ("offset", 0.05)):
        path = tmp_path / f"{name}.wav"
        sf.write(path, quiet + offset, 16000, subtype="FLOAT")
        sink = Collect()
        listen(ListenOptions(labels="urban", input=str(path), fast=True, hop=1.0, window=1.0, top_k=10), sink=sink)
        windows[name] = sink.of("window")
    levels = [(a.level_dbfs, b.level_dbfs) for a, b in zip(windows["clean"], windows["offset"])]
    # the first window holds the step the offset makes as the stream starts (from silence: gone in ~50 ms)
    assert len(levels) == 6 and all(abs(a - b) < 0.1 for a, b in levels[1:]), levels
    assert levels[0][1] < -40, levels
    scores = [(dict(a.top), dict(b.top)) for a, b in zip(windows["clean"], windows["offset"])]
    assert all(abs(a[k] - b[k]) < 0.05 for a, b in scores for k in a), scores
