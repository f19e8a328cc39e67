"""The automatic gain per window (edge.features.WindowGain, model.json `gain`): each window's
log-mel as if its audio had been scaled so that its loudest span sits at a reference level,
the same in `listen`'s stream and in a clip's first window (clip_window)."""

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import soundfile as sf

from edge.bundle import BundleError, parse_bundle_meta, read_bundle, write_bundle_meta
from edge.features import Frontend, WindowGain, clip_window, hop_squares, log_mel, tile_frames
from edge.listen import ListenOptions, listen
from tests.collect import Collect
from tests.signals import chirp, noise, tone

YAMNET = Frontend.yamnet()  # ln(mel + 0.001) of magnitudes
HTSAT = Frontend()  # 10 log10(max(power mel, 1e-10))


def scene(rate: int, seconds: float = 5.0) -> np.ndarray:
    """A sweep over quiet noise, then a tone: a window with a loud part and a quiet one."""
    half = seconds / 2
    return np.concatenate([chirp(200, 5000, half, rate, 0.3) + noise(half, rate, 0.003, seed=1),
                           tone(880, half, rate, 0.05)])


def dbfs(x: np.ndarray) -> float:
    return 20 * math.log10(math.sqrt(float(np.mean(np.asarray(x, np.float64) ** 2))))


@pytest.mark.parametrize("frontend", [YAMNET, HTSAT], ids=["ln", "db"])
@pytest.mark.parametrize("level", [-50.0, -30.0, -5.0])
def test_the_gain_gives_the_log_mel_of_the_scaled_audio(frontend, level):
    x = scene(frontend.sample_rate)
    x = x * np.float32(10 ** ((level - dbfs(x)) / 20))  # the whole window at `level` dBFS RMS
    gain = WindowGain(max_level_dbfs=None, max_cut_db=20.0)
    seconds = frontend.window_seconds
    squares = hop_squares(x, frontend.hop_length)[: frontend.frames - 1]
    db = gain.gain_db(squares)
    # the loudest 5 hops of the sweep are a few dB above the window's RMS; the gain brings them to -20
    loudest = 10 * math.log10(np.convolve(squares, np.full(5, 0.2), "valid").max())
    assert db == pytest.approx(np.clip(-20.0 - loudest, -20.0, 30.0), abs=1e-6) and db != 0.0
    want = tile_frames(log_mel(x * np.float32(10 ** (db / 20)), frontend), frontend.frames)
    got = clip_window(x, frontend, seconds, gain)
    if frontend.log == "ln":
        np.testing.assert_allclose(got, want, atol=2e-3)
    else:  # a band at the clamp floor stays there; every other band moves by exactly the gain
        floor = 10 * math.log10(frontend.log_floor)
        above = (want > floor + 1) & (got > floor + 1)
        assert above.mean() > 0.3  # (the bands above the sweep hold only its faint noise)
        np.testing.assert_allclose(got[above], want[above], atol=2e-3)


def test_a_window_sounds_the_same_at_any_level_within_the_gain():
    x = scene(16000)
    plain = [clip_window(x * np.float32(10 ** (db / 20)), YAMNET, 5.0) for db in (0.0, -15.0, -35.0)]
    gain = WindowGain(max_level_dbfs=None, max_cut_db=20.0)
    gained = [clip_window(x * np.float32(10 ** (db / 20)), YAMNET, 5.0, gain) for db in (0.0, -15.0, -35.0)]
    assert np.abs(plain[0] - plain[2]).max() > 1.0  # without the gain, -35 dB is another input
    for other in gained[1:]:
        np.testing.assert_allclose(other, gained[0], atol=2e-3)


def test_the_gain_is_bounded_and_leaves_silence_alone():
    gain = WindowGain(ref_dbfs=-20.0, max_boost_db=30.0, max_cut_db=10.0, max_level_dbfs=None)
    rate, hop = YAMNET.sample_rate, YAMNET.hop_length
    faint = noise(2.0, rate, amplitude=10 ** (-80 / 20), seed=2)  # -80 dBFS: raised by 30 dB only
    assert gain.gain_db(hop_squares(faint, hop)) == pytest.approx(30.0)
    loud = np.sign(tone(300, 2.0, rate, 1.0)) * np.float32(0.9)  # a square wave at -0.9 dBFS: lowered by 10 only
    assert gain.gain_db(hop_squares(loud, hop)) == pytest.approx(-10.0)
    just = noise(2.0, rate, amplitude=10 ** (-35 / 20), seed=3)
    assert gain.gain_db(hop_squares(just, hop)) == pytest.approx(15.0, abs=0.5)  # white noise's 50 ms: its RMS
    quiet = np.zeros(5 * rate, np.float32)
    frames = log_mel(quiet, YAMNET)
    assert gain.gain_db(hop_squares(quiet, hop)) == 0.0
    assert gain.apply(frames, hop_squares(quiet, hop), YAMNET) is frames  # digital silence stays silence


def test_a_raise_never_lifts_a_window_above_its_mean_level_bound():
    """Steady noise is raised only up to the bound; a short loud sound in quiet is raised to the
    reference, its window's mean level staying below the bound."""
    gain = WindowGain(ref_dbfs=-20.0, max_boost_db=30.0, max_level_dbfs=-35.0)
    rate, hop = YAMNET.sample_rate, YAMNET.hop_length
    for level in (-60.0, -50.0, -40.0):  # white noise: the mean is the loudest 50 ms, so it ends at -35
        steady = noise(5.0, rate, amplitude=10 ** (level / 20), seed=4)
        assert gain.gain_db(hop_squares(steady, hop)) == pytest.approx(-35.0 - level, abs=0.3)
    assert gain.gain_db(hop_squares(noise(5.0, rate, amplitude=10 ** (-30 / 20), seed=4), hop)) == 0.0
    click = np.zeros(5 * rate, np.float32)
    click[rate : rate + rate // 10] = tone(1000, 0.1, rate, amplitude=10 ** (-40 / 20) * math.sqrt(2))  # -40 dBFS
    raised = gain.gain_db(hop_squares(click, hop))
    assert raised == pytest.approx(20.0, abs=0.3)  # to -20 dBFS; its window's mean: -57 -> -37 dBFS, under the bound
    loud = noise(5.0, rate, amplitude=0.3, seed=4)  # by default a window is never lowered
    assert gain.gain_db(hop_squares(loud, hop)) == 0.0
    assert gain.describe().endswith("never above -35 dBFS on average, never lowered)")


@pytest.mark.parametrize(
    "field, fix",
    [
        ({"ref_dbfs": 3}, "ref_dbfs=3.0 is not supported: it must be a level in dBFS <= 0"),
        ({"max_boost_db": -1}, "max_boost_db=-1.0 is not supported"),
        ({"max_cut_db": "lots"}, "must be numbers"),
        ({"span_hops": 0}, "span_hops=0 is not supported: it must be an integer >= 1"),
        ({"span_hops": 2.5}, "must be numbers (span_hops an integer)"),
        ({"boost": 10}, "unknown ['boost']"),
    ],
)
def test_model_json_gain_is_checked(demo_bundle, field, fix):
    data = json.loads(json.dumps(demo_bundle.meta.to_dict()))
    data["gain"] = {**WindowGain().to_dict(), **field}
    with pytest.raises(BundleError) as err:
        parse_bundle_meta(data)
    assert fix in str(err.value) and "or leave 'gain' out" in str(err.value)


def test_model_json_gain_round_trips_and_stays_absent_when_none(demo_bundle):
    data = json.loads(json.dumps(demo_bundle.meta.to_dict()))
    data.pop("gain", None)
    meta = parse_bundle_meta(data)
    assert meta.gain is None and "gain" not in meta.to_dict()
    data["gain"] = {"ref_dbfs": -25}  # missing fields take the defaults
    meta = parse_bundle_meta(json.loads(json.dumps(data)))
    assert meta.gain == WindowGain(ref_dbfs=-25.0)
    assert parse_bundle_meta(json.loads(json.dumps(meta.to_dict()))).gain == meta.gain


@pytest.fixture(scope="module")
def bundles(demo_bundle, tmp_path_factory):
    """Copies of the demo bundle without and with a gain (no bound on the mean level: the windows
    of a quiet stream are raised as far as those of a loud one)."""
    out = {}
    for name, gain in (("plain", None), ("gain", WindowGain(max_level_dbfs=None, max_cut_db=20.0))):
        folder = tmp_path_factory.mktemp(name) / "bundle"
        shutil.copytree(demo_bundle.path, folder)
        write_bundle_meta(folder, dataclasses.replace(read_bundle(folder).meta, gain=gain))
        out[name] = str(folder)
    return out


def top_scores(bundle: str, samples: np.ndarray, path) -> list[tuple[str, float]]:
    sf.write(path, samples, 16000, subtype="FLOAT")
    sink = Collect()
    listen(ListenOptions(labels="urban", bundle=bundle, input=str(path), fast=True, hop=1.0), sink=sink)
    return [(w.top[0][0], w.top[0][1]) for w in sink.of("window")]


@pytest.mark.slow  # two bundles over the same stream through listen: ~6 s on 2 cores
def test_listen_gives_each_window_the_bundles_gain(bundles, tmp_path):
    """The same stream 20 dB quieter (a distant sound) is heard as it is near with the gain, window
    by window (`listen` measures each window's hops in the stream, incrementally): every window's
    gain stays within its bounds (near: -7 to +9 dB, far: +13 to +29)."""
    x = np.concatenate([scene(16000, 8.0), noise(4.0, 16000, 0.05, seed=5)])
    near, far = x, x * np.float32(10 ** (-20 / 20))
    with_gain = top_scores(bundles["gain"], near, tmp_path / "near.wav"), top_scores(bundles["gain"], far, tmp_path / "far.wav")
    assert len(with_gain[0]) == len(with_gain[1]) >= 8
    for (label, score), (other, other_score) in zip(*with_gain):
        assert label == other and other_score == pytest.approx(score, abs=2e-3)
    plain = top_scores(bundles["plain"], near, tmp_path / "near.wav"), top_scores(bundles["plain"], far, tmp_path / "far.wav")
    assert max(abs(a[1] - b[1]) for a, b in zip(*plain)) > 0.02  # without it, 20 dB quieter is heard otherwise
