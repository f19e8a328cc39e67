"""Augmentations: shapes, seeding, measured noise SNR, eval mode, low-pass, time scale, SpecAugment."""

import numpy as np
import pytest

from edge.features import Frontend, log_mel, mel_filterbank
from tests.signals import noise, tone
from train.augment import (
    Augment,
    AugmentConfig,
    low_pass,
    pad_crop,
    spec_augment,
    time_scale,
)

RATE = 32000
CLIP = (tone(440, 5.0, RATE) + noise(5.0, RATE, amplitude=0.05, seed=2)).astype(np.float32)
ALL_ON = AugmentConfig(noise_p=1.0, lowpass_p=1.0)


def rng(seed):
    return np.random.default_rng(seed)


def snr_db(clean, noisy):
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean).astype(np.float64) ** 2))


def test_shapes_are_kept():
    aug = Augment(ALL_ON)
    for seed in range(6):
        assert aug.waveform(CLIP, rng(seed)).shape == CLIP.shape  # back to the clip's length
        assert aug.waveform(CLIP, rng(seed), length=100000).shape == (100000,)  # a random crop
    mel = log_mel(CLIP)
    assert aug.spectrogram(mel, rng(0)).shape == mel.shape


def test_same_seed_same_result():
    aug = Augment(ALL_ON)
    np.testing.assert_array_equal(aug.waveform(CLIP, rng(5)), aug.waveform(CLIP, rng(5)))
    assert not np.array_equal(aug.waveform(CLIP, rng(5)), aug.waveform(CLIP, rng(6)))
    mel = log_mel(CLIP)
    np.testing.assert_array_equal(aug.spectrogram(mel, rng(5)), aug.spectrogram(mel, rng(5)))
    assert not np.array_equal(aug.spectrogram(mel, rng(5)), aug.spectrogram(mel, rng(6)))


def test_noise_snr_lies_in_the_drawn_range():
    only_noise = dict(time_scale_max=1.0, pad_crop=False, noise_p=1.0, time_masks=0, freq_masks=0)
    measured = [snr_db(CLIP, Augment(AugmentConfig(**only_noise)).waveform(CLIP, rng(s))) for s in range(30)]
    assert 10.0 - 0.1 <= min(measured) and max(measured) <= 120.0 + 0.1
    assert max(measured) - min(measured) > 40  # the SNR is drawn, not fixed
    fixed = Augment(AugmentConfig(**only_noise, noise_snr_db=(25.0, 25.0)))
    assert snr_db(CLIP, fixed.waveform(CLIP, rng(0))) == pytest.approx(25.0, abs=0.1)
    rare = Augment(AugmentConfig(**{**only_noise, "noise_p": 0.25}))
    noisy = sum(not np.array_equal(rare.waveform(CLIP, rng(s)), CLIP) for s in range(200))
    assert 30 <= noisy <= 70  # p 0.25 of 200


def test_gain_scales_the_clip_by_a_drawn_level():
    only_gain = dict(time_scale_max=1.0, pad_crop=False, noise_p=0.0, time_masks=0, freq_masks=0, gain_p=1.0)
    fixed = Augment(AugmentConfig(**only_gain, gain_db=(-6.0, -6.0)))
    np.testing.assert_allclose(fixed.waveform(CLIP, rng(0)), CLIP * 10 ** (-6 / 20), rtol=1e-6)
    drawn = Augment(AugmentConfig(**only_gain, gain_db=(-20.0, 0.0)))
    levels = [20 * np.log10(np.abs(drawn.waveform(CLIP, rng(s))).max() / np.abs(CLIP).max()) for s in range(30)]
    assert -20.0 - 1e-4 <= min(levels) and max(levels) <= 1e-4 and max(levels) - min(levels) > 10
    assert Augment(AugmentConfig(**{**only_gain, "gain_p": 0.0})).waveform(CLIP, rng(0)) is CLIP
    assert Augment(AugmentConfig(**only_gain)).changes_waveform


def test_everything_is_off_in_eval_mode():
    aug = Augment(ALL_ON).eval()
    assert aug.waveform(CLIP, rng(0)) is CLIP and not aug.changes_waveform
    mel = log_mel(CLIP)
    assert aug.spectrogram(mel, rng(0)) is mel
    assert aug.train().changes_waveform
    assert not Augment(AugmentConfig(time_scale_max=1.0, pad_crop=False, noise_p=0.0)).changes_waveform


def test_low_pass_removes_energy_above_the_cutoff():
    fe = Frontend()
    white = noise(5.0, RATE, amplitude=0.3, seed=4)
    cutoff = 6000.0
    before, after = log_mel(white, fe).mean(axis=0), log_mel(low_pass(white, cutoff, RATE), fe).mean(axis=0)
    weights = mel_filterbank(fe)  # [n_freqs, n_mels]: where each band listens
    fft_hz = np.linspace(0, fe.sample_rate / 2, weights.shape[0])
    lowest = np.array([fft_hz[np.flatnonzero(weights[:, b])[0]] for b in range(fe.n_mels)])
    highest = np.array([fft_hz[np.flatnonzero(weights[:, b])[-1]] for b in range(fe.n_mels)])
    above = lowest > cutoff * 1.1  # bands that start above the cutoff (and the window's leakage)
    below = highest < cutoff * 0.9  # bands that end in the passband
    assert above.sum() > 5 and below.sum() > 30
    assert np.all(before[above] - after[above] > 50.0), (before - after)[above]
    np.testing.assert_allclose(after[below], before[below], atol=0.1)
    # Through Augment: a real clip band-limited to 5 kHz.
    aug = Augment(AugmentConfig(time_scale_max=1.0, pad_crop=False, noise_p=0.0, lowpass_p=1.0,
                                lowpass_hz=(5000.0, 5000.0)))
    spectrum = np.abs(np.fft.rfft(aug.waveform(white, rng(0)))) ** 2
    freqs = np.fft.rfftfreq(white.size, 1 / RATE)
    assert spectrum[freqs > 5000].sum() < 1e-9 * spectrum.sum()


def test_time_scale_changes_speed_and_pitch():
    clip = tone(1000, 1.0, RATE)
    slower = time_scale(clip, 1.25, RATE)
    assert slower.size == pytest.approx(1.25 * clip.size, abs=2)
    peak = np.fft.rfftfreq(slower.size, 1 / RATE)[np.argmax(np.abs(np.fft.rfft(slower)))]
    assert peak == pytest.approx(800.0, abs=2.0)  # 1000 Hz played 1.25x slower
    factors = [Augment(AugmentConfig(pad_crop=False)).waveform(clip, rng(s)).size / clip.size for s in range(40)]
    assert 1 / 1.5 - 0.01 <= min(factors) < 0.8 and 1.3 < max(factors) <= 1.5 + 0.01


def test_pad_crop():
    x = np.arange(1, 1001, dtype=np.float32)
    crop = pad_crop(x, 300, rng(0))
    start = int(crop[0]) - 1
    np.testing.assert_array_equal(crop, x[start:start + 300])
    padded = pad_crop(x, 1500, rng(1))
    nonzero = np.flatnonzero(padded)
    assert padded.size == 1500 and nonzero.size == 1000
    np.testing.assert_array_equal(padded[nonzero[0]:nonzero[0] + 1000], x)
    assert {int(np.flatnonzero(pad_crop(x, 1500, rng(s)))[0]) for s in range(10)} != {0}  # random offsets


def test_spec_augment_masks_with_band_means():
    mel = log_mel(CLIP)
    out = spec_augment(mel, rng(3), time_masks=2, time_mask_frames=64, freq_masks=2, freq_mask_bins=8)
    changed = out != mel
    masked_frames = np.flatnonzero(changed.all(axis=1))
    assert 0 < masked_frames.size <= 2 * 63
    np.testing.assert_allclose(out[masked_frames], np.broadcast_to(mel.mean(axis=0), out[masked_frames].shape))
    assert np.flatnonzero(changed.all(axis=0)).size <= 2 * 7
    assert np.array_equal(spec_augment(mel, rng(3), 0, 64, 0, 8), mel)


@pytest.mark.parametrize("field, value, message", [
    ("noise_p", 1.5, "noise_p=1.5 is not allowed: it must be a probability"),
    ("time_scale_max", 0.5, "time_scale_max=0.5 is not allowed: it must be 1 \\(off\\) or more"),
    ("lowpass_hz", (8000.0, 4000.0), "lowpass_hz=\\(8000.0, 4000.0\\) is not allowed"),
    ("gain_p", -0.1, "gain_p=-0.1 is not allowed: it must be a probability"),
    ("gain_db", (0.0, -10.0), "gain_db=\\(0.0, -10.0\\) is not allowed"),
])
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**{field: value})


def test_level_brings_every_clip_to_a_drawn_level_whatever_its_own():
    """level_dbfs: a quiet clip and a loud one both end with their loudest 50 ms in the range (the
    device's window gain measures the same span); digital silence stays silence."""
    from edge.features import hop_squares, loudest_dbfs

    only_level = dict(time_scale_max=1.0, pad_crop=False, noise_p=0.0, time_masks=0, freq_masks=0, gain_p=1.0,
                      level_dbfs=(-30.0, -10.0))
    augment = Augment(AugmentConfig(**only_level), sample_rate=16000)
    t = np.arange(16000 * 2) / 16000
    loud = (0.9 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    quiet = (loud * 10 ** (-50 / 20)).astype(np.float32)
    for clip in (loud, quiet):
        levels = [loudest_dbfs(hop_squares(augment.waveform(clip, rng(s)), 160), 5) for s in range(20)]
        assert -30.0 - 0.01 <= min(levels) and max(levels) <= -10.0 + 0.01 and max(levels) - min(levels) > 8
    silence = np.zeros(16000, np.float32)
    assert not augment.waveform(silence, rng(0)).any()
    with pytest.raises(ValueError, match="level_dbfs"):
        AugmentConfig(level_dbfs=(-10.0, -30.0))


def test_a_floor_lies_under_the_whole_clip_at_a_drawn_depth_and_colour():
    """floor_p: noise under the whole clip, its RMS drawn in floor_below_db under the clip's loudest
    50 ms, white, pink or brown (the development ESC-50 copy's quiet parts are exact zeros where
    microphones have a floor); digital silence stays silence."""
    from train.augment import FLOOR_COLOURS, loudest_50ms_dbfs

    only_floor = dict(time_scale_max=1.0, pad_crop=False, noise_p=0.0, time_masks=0, freq_masks=0, floor_p=1.0)
    augment = Augment(AugmentConfig(**only_floor, floor_below_db=(40.0, 70.0)), sample_rate=16000)
    burst = np.zeros(16000 * 4, np.float32)
    burst[8000:9600] = tone(1000, 0.1, 16000) * 0.5  # a 0.1 s sound in 4 s of digital zeros
    loudest = loudest_50ms_dbfs(burst, 16000)
    frequencies = np.fft.rfftfreq(burst.size - 10000, 1 / 16000)
    low, high = (frequencies > 100) & (frequencies < 200), (frequencies > 3000) & (frequencies < 6000)
    depths, tilts = [], {}
    for s in range(40):
        floor = augment.waveform(burst, rng(s)) - burst
        assert np.abs(floor[:8000]).max() > 0  # before the sound as well
        depths.append(loudest - 10 * np.log10(np.mean(floor.astype(np.float64) ** 2)))
        power = np.abs(np.fft.rfft(floor[10000:])) ** 2  # after the sound: the floor alone
        tilts.setdefault(round(10 * np.log10(power[low].mean() / power[high].mean()) / 15), []).append(s)
    assert 40.0 - 0.01 <= min(depths) and max(depths) <= 70.0 + 0.01 and max(depths) - min(depths) > 15
    # the colours drawn: power per band falling with frequency as f^0, f^-1, f^-2 (150 Hz against 4.5 kHz:
    # 0, 15, 30 dB), each of them several times
    assert sorted(tilts) == [0, 1, 2] == list(range(len(FLOOR_COLOURS))) and min(map(len, tilts.values())) >= 5
    assert not augment.waveform(np.zeros(16000, np.float32), rng(0)).any()
    assert Augment(AugmentConfig(**only_floor)).changes_waveform
    with pytest.raises(ValueError, match="floor_below_db"):
        AugmentConfig(floor_below_db=(60.0, 40.0))
