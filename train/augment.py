"""Training augmentations: waveform (time scale, pad/crop, gain, noise, low-pass) and SpecAugment.

The paper's recipe is AudioCLIP's: time scale x1.5^U(-1,1), random pad/crop, noise at a
random SNR of 10-120 dB with p 0.25. SpecAugment (time and frequency masks, HTS-AT's widths),
a random gain (the development ESC-50 copies are gain-normalised, microphones and the
originals are not, and a log-mel moves with the level) and a random low-pass for the
bandwidth gap are added, each with its own switch.

Everything is seeded by the numpy Generator passed in (ClipDataset seeds one per item from
(seed, epoch, index)), and everything is off in eval mode: `Augment.eval()` makes both
stages the identity, as `nn.Module.eval()` does for dropout.

The bandwidth gap, and why the low-pass is off by default: the development ESC-50 copies are
16 kHz (nothing above 8 kHz) while the test originals and live microphones are full band.
  - Random low-pass of training audio (`lowpass_p`, cutoffs U(4, 14) kHz): the model learns
    that where the spectrum ends is not a class cue (useful when sources of different
    bandwidths are mixed: US8K's 22.05 kHz copies beside ESC-50's 16 kHz, cheap and bright
    microphones) and keeps the pretrained 50-14000 Hz frontend. It cannot show the model
    what content above its training audio's band looks like, and cutoffs under 8 kHz also
    remove real content of the 16 kHz copies.
  - A frontend that stops at 8 kHz (f_max 8000): train and test see the same band by
    construction, but 8-14 kHz information is thrown away for all audio, and the mel axis
    moves under the AudioSet checkpoint (bn0 and the patch embedding learnt 50-14000 Hz
    bins), so fine-tuning starts further from the pretrained model.
  - Band-limiting the live audio to the training band at inference: exact match, keeps the
    pretrained frontend, but the edge would need a low-pass step (a frontend field).
Chosen: the second. The shipped YAMNet model reads 16 kHz audio through a 125-7500 Hz frontend,
so development copies, originals and microphones are heard through the same band (and that
band is what YAMNet was pretrained on). `lowpass_p` stays 0; it remains for HTS-AT recipes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import soxr

from edge.features import WindowGain, hop_squares, loudest_dbfs


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentations; each has a switch (p = 0, scale 1, 0 masks, False)."""

    time_scale_max: float = 1.5  # speed factor x time_scale_max^U(-1,1) (AudioCLIP); 1 = off
    pad_crop: bool = True  # random crop / zero-pad (random offset) back to the clip's length
    noise_p: float = 0.25  # white noise at a random SNR (AudioCLIP: p 0.25, 10-120 dB)
    noise_snr_db: tuple[float, float] = (10.0, 120.0)
    gain_p: float = 0.0  # scale the clip by a gain drawn uniformly in gain_db (dB)
    gain_db: tuple[float, float] = (-20.0, 0.0)
    # instead of gain_db: bring the clip's loudest 50 ms to a level drawn uniformly in level_dbfs
    # (dBFS RMS, raised by at most LEVEL_MAX_BOOST_DB), so that every dataset spans the same levels
    # (the development UrbanSound8K clips are about 10 dB quieter than the peak-normalised ESC-50
    # ones: a level a model could learn as a class cue); None: the relative gain_db
    level_dbfs: tuple[float, float] | None = None
    # a recording chain's floor under the whole clip: noise of a colour drawn from FLOOR_COLOURS, its RMS
    # drawn in floor_below_db under the clip's loudest 50 ms (the development ESC-50 copy is 8-bit at its
    # peak, so its quiet parts are exact zeros or quantisation steps where originals and microphones
    # have a floor); 0: off, and the draws of every other stage stay as they were
    floor_p: float = 0.0
    floor_below_db: tuple[float, float] = (40.0, 75.0)
    lowpass_p: float = 0.0  # random low-pass for the bandwidth gap (see the module docstring)
    lowpass_hz: tuple[float, float] = (4000.0, 14000.0)  # cutoff drawn uniformly in this range
    time_masks: int = 2  # SpecAugment as HTS-AT: 2 time stripes narrower than 64 frames,
    time_mask_frames: int = 64
    freq_masks: int = 2  # and 2 frequency stripes narrower than 8 mel bins
    freq_mask_bins: int = 8

    def __post_init__(self):
        checks = [
            (self.time_scale_max >= 1.0, "time_scale_max", "1 (off) or more"),
            (0.0 <= self.noise_p <= 1.0, "noise_p", "a probability in [0, 1]"),
            (0.0 <= self.lowpass_p <= 1.0, "lowpass_p", "a probability in [0, 1]"),
            (0.0 <= self.floor_p <= 1.0, "floor_p", "a probability in [0, 1]"),
            (len(self.floor_below_db) == 2 and 0 <= self.floor_below_db[0] <= self.floor_below_db[1],
             "floor_below_db", "[low, high] in dB under the clip's loudest 50 ms with 0 <= low <= high"),
            (0.0 <= self.gain_p <= 1.0, "gain_p", "a probability in [0, 1]"),
            (len(self.gain_db) == 2 and self.gain_db[0] <= self.gain_db[1], "gain_db",
             "[low, high] in dB with low <= high"),
            (self.level_dbfs is None or (len(self.level_dbfs) == 2 and self.level_dbfs[0] <= self.level_dbfs[1] <= 0),
             "level_dbfs", "[low, high] in dBFS with low <= high <= 0, or null"),
            (len(self.noise_snr_db) == 2 and self.noise_snr_db[0] <= self.noise_snr_db[1],
             "noise_snr_db", "[low, high] in dB with low <= high"),
            (len(self.lowpass_hz) == 2 and 0 < self.lowpass_hz[0] <= self.lowpass_hz[1],
             "lowpass_hz", "[low, high] in Hz with 0 < low <= high"),
            (self.time_masks >= 0 and self.freq_masks >= 0, "time_masks/freq_masks", "0 (off) or more"),
            (self.time_mask_frames >= 1 and self.freq_mask_bins >= 1, "time_mask_frames/freq_mask_bins",
             "1 or more (a stripe is narrower than this)"),
        ]
        for ok, name, allowed in checks:
            if not ok:
                value = getattr(self, name, None) if "/" not in name else [getattr(self, n) for n in name.split("/")]
                raise ValueError(f"augment {name}={value!r} is not allowed: it must be {allowed}")


# ------------------------------------------------------------------ waveform functions

def time_scale(x: np.ndarray, factor: float, rate: int) -> np.ndarray:
    """Play `factor` times slower (longer and lower; < 1: faster, higher): len * factor samples.

    Band-limited (soxr), where AudioCLIP interpolates linearly (which aliases when speeding up).
    """
    if factor == 1.0:
        return x
    y = soxr.resample(x, rate, rate * factor, quality="HQ").astype(np.float32, copy=False)
    return y if y.size else x  # a clip of a sample or two: leave it as it is


def pad_crop(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random `length`-sample window of a longer clip, or a shorter one zero-padded at a random offset."""
    if x.size > length:
        start = int(rng.integers(0, x.size - length + 1))
        return x[start:start + length]
    if x.size < length:
        out = np.zeros(length, dtype=np.float32)
        start = int(rng.integers(0, length - x.size + 1))
        out[start:start + x.size] = x
        return out
    return x


LEVEL_MAX_BOOST_DB = 40.0  # level_dbfs raises a clip by at most this (quiet noise stays quiet-ish)


def loudest_50ms_dbfs(x: np.ndarray, rate: int) -> float:
    """dBFS RMS of the loudest 50 ms of `x`, as the device's window gain measures it
    (edge.features.WindowGain: 5 hops of 10 ms); -inf for digital silence."""
    return loudest_dbfs(hop_squares(x, rate // 100), WindowGain.span_hops)


def to_level_db(x: np.ndarray, dbfs: float, rate: int) -> float:
    """The gain (dB) that brings the loudest 50 ms of `x` (loudest_50ms_dbfs) to `dbfs` RMS, raising
    by at most LEVEL_MAX_BOOST_DB; 0 for digital silence."""
    loudest = loudest_50ms_dbfs(x, rate)
    return 0.0 if loudest == -math.inf else min(dbfs - loudest, LEVEL_MAX_BOOST_DB)


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise `snr_db` below the clip's mean power (silence stays silent)."""
    power = float(np.mean(np.square(x, dtype=np.float64)))
    scale = np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return (x + scale * rng.standard_normal(x.size)).astype(np.float32)


FLOOR_COLOURS = ("white", "pink", "brown")  # train.data.background.NOISES


def add_floor(x: np.ndarray, below_db: float, colour: str, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A floor under the whole clip: the background clips' noise of `colour` (train.data.background.NOISES)
    laid under it as underlay lays a bed (train.data.underlay.lay_under): its RMS `below_db` under the
    loudest 50 ms of `x`; digital silence stays silent."""
    from train.data.background import NOISES
    from train.data.underlay import lay_under  # it reads this module's level: imported here, not at the top

    return lay_under(x, NOISES[colour](x.size, rate, rng), below_db, rng, rate)


def low_pass(x: np.ndarray, cutoff_hz: float, rate: int, transition: float = 0.1) -> np.ndarray:
    """Remove everything above `cutoff_hz`: a zero-phase FFT filter, flat up to
    (1 - transition) * cutoff and a raised-cosine roll-off to zero at the cutoff.

    The filter is circular over the clip, which the tiling that follows repeats anyway.
    """
    if cutoff_hz >= rate / 2:
        return x
    freqs = np.fft.rfftfreq(x.size, 1.0 / rate)
    ramp = np.clip((cutoff_hz - freqs) / (transition * cutoff_hz), 0.0, 1.0)  # 1 in the passband, 0 above
    gain = 0.5 - 0.5 * np.cos(np.pi * ramp)
    return np.fft.irfft(np.fft.rfft(x) * gain, n=x.size).astype(np.float32)


# --------------------------------------------------------------- spectrogram function

def spec_augment(mel: np.ndarray, rng: np.random.Generator, time_masks: int, time_mask_frames: int,
                 freq_masks: int, freq_mask_bins: int) -> np.ndarray:
    """SpecAugment on a log-mel [T, F]: stripes of width U{0..max-1} at random places.

    HTS-AT masks after bn0 with zeros, i.e. with each band's mean; masking happens here,
    before bn0, so masked cells take their band's mean over the clip instead.
    """
    mel = np.array(mel, dtype=np.float32)  # a copy: cached arrays stay untouched
    fill = mel.mean(axis=0, keepdims=True)  # [1, F]
    n_frames, n_bins = mel.shape
    for _ in range(time_masks):
        width = int(rng.integers(0, min(time_mask_frames, n_frames + 1)))
        start = int(rng.integers(0, n_frames - width + 1))
        mel[start:start + width] = fill
    for _ in range(freq_masks):
        width = int(rng.integers(0, min(freq_mask_bins, n_bins + 1)))
        start = int(rng.integers(0, n_bins - width + 1))
        mel[:, start:start + width] = fill[:, start:start + width]
    return mel


# ------------------------------------------------------------------------------ Augment

class Augment:
    """The configured augmentations; `train()` / `eval()` switch them on and off (on at start)."""

    def __init__(self, config: AugmentConfig = AugmentConfig(), sample_rate: int = 32000):
        self.config = config
        self.sample_rate = sample_rate
        self.training = True

    def train(self, mode: bool = True) -> "Augment":
        self.training = mode
        return self

    def eval(self) -> "Augment":
        return self.train(False)

    @property
    def changes_waveform(self) -> bool:
        """Whether a waveform stage is on (else a dataset may serve cached log-mels)."""
        c = self.config
        return self.training and (c.time_scale_max > 1.0 or c.pad_crop or c.gain_p > 0 or c.noise_p > 0
                                  or c.floor_p > 0 or c.lowpass_p > 0)

    def waveform(self, x: np.ndarray, rng: np.random.Generator, length: int | None = None) -> np.ndarray:
        """Time scale -> pad/crop to `length` (default: the clip's) -> gain -> noise -> floor -> low-pass.

        The low-pass comes last so that it band-limits the added noise too, as a real
        recording chain would.
        """
        if not self.training:
            return x
        c = self.config
        length = x.size if length is None else length
        x = time_scale(x, float(c.time_scale_max ** rng.uniform(-1.0, 1.0)), self.sample_rate)
        if c.pad_crop:
            x = pad_crop(x, length, rng)
        if rng.random() < c.gain_p:
            db = (rng.uniform(*c.gain_db) if c.level_dbfs is None
                  else to_level_db(x, float(rng.uniform(*c.level_dbfs)), self.sample_rate))
            x = (x * np.float32(10.0 ** (db / 20.0))).astype(np.float32, copy=False)
        if rng.random() < c.noise_p:
            x = add_noise(x, float(rng.uniform(*c.noise_snr_db)), rng)
        if c.floor_p > 0 and rng.random() < c.floor_p:  # drawn only when on: other recipes' items stay the same
            colour = FLOOR_COLOURS[int(rng.integers(len(FLOOR_COLOURS)))]
            x = add_floor(x, float(rng.uniform(*c.floor_below_db)), colour, self.sample_rate, rng)
        if rng.random() < c.lowpass_p:
            x = low_pass(x, float(rng.uniform(*c.lowpass_hz)), self.sample_rate)
        return x

    def spectrogram(self, mel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """SpecAugment on a log-mel [T, F] (the identity in eval mode)."""
        if not self.training:
            return mel
        c = self.config
        return spec_augment(mel, rng, c.time_masks, c.time_mask_frames, c.freq_masks, c.freq_mask_bins)
