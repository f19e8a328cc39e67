"""Audio files in: decode (WAV, FLAC, Ogg via libsndfile), mix down to mono, resample.

Resampling is soxr's band-limited resampler (the same library streams microphone audio),
so a file and a live stream of the same sound give the same samples at the model rate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edge.errors import AudioError

SOXR_QUALITY = "HQ"  # soxr's high quality: ~-144 dB aliasing, linear phase


def to_mono(samples: np.ndarray) -> np.ndarray:
    """[n] or [n, channels] -> float32 [n], the mean of the channels."""
    samples = np.asarray(samples, dtype=np.float32)
    return samples if samples.ndim == 1 else samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling of mono float32 samples (a copy-free no-op at equal rates)."""
    if from_rate == to_rate:
        return samples
    return soxr.resample(samples, from_rate, to_rate, quality=SOXR_QUALITY).astype(np.float32, copy=False)


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode an audio file into mono float32 samples at `sample_rate`.

    Raises AudioError, naming the file, when it cannot be read, holds no samples or holds
    NaN/infinite samples.
    """
    path = Path(path)
    try:
        samples, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        reason = "no such file" if not path.exists() else str(err).strip() or type(err).__name__
        raise AudioError(
            f"cannot read audio file {path}: {reason} "
            "(readable formats: WAV, FLAC, Ogg/Vorbis and whatever else libsndfile decodes)"
        ) from None
    if samples.shape[0] == 0:
        raise AudioError(f"audio file {path} holds no samples: record or pick a non-empty file")
    bad = ~np.isfinite(samples)
    if bad.any():
        first = int(np.argmax(bad.any(axis=1)))
        raise AudioError(
            f"audio file {path} holds {int(bad.sum())} NaN or infinite sample(s), the first at "
            f"{first / file_rate:.3f} s: the file is corrupt; re-export it"
        )
    return resample(to_mono(samples), int(file_rate), sample_rate)
