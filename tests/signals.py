"""Synthetic test signals at a given rate: deterministic, float32 mono."""

import numpy as np


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp(f0: float, f1: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    """Linear sweep from f0 to f1 Hz."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds))
    return (amplitude * np.sin(phase)).astype(np.float32)


def noise(seconds: float, rate: int, amplitude: float = 0.1, seed: int = 0) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def coloured_noise(seconds: float, rate: int, dbfs: float, slope: float, seed: int = 0) -> np.ndarray:
    """Noise whose power falls as 1/f**slope (1: pink, 2: brown) above 20 Hz, at `dbfs` RMS."""
    n = int(seconds * rate)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum *= np.where(freqs < 20.0, 0.0, np.maximum(freqs, 20.0) ** (-slope / 2))
    x = np.fft.irfft(spectrum, n)
    return (x * 10 ** (dbfs / 20) / np.sqrt(np.mean(x ** 2))).astype(np.float32)


def hum(seconds: float, rate: int, dbfs: float, mains: float = 50.0) -> np.ndarray:
    """Mains hum: `mains` Hz and its next 4 harmonics (each 1/k as loud), at `dbfs` RMS."""
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * mains * k * t) / k for k in range(1, 6))
    return (x * 10 ** (dbfs / 20) / np.sqrt(np.mean(x ** 2))).astype(np.float32)


def silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.float32)


def synthetic_set(rate: int) -> dict[str, np.ndarray]:
    return {
        "tone_440": tone(440, 2.0, rate),
        "tone_9k": tone(9000, 2.0, rate, amplitude=0.05),
        "chirp": chirp(50, 14000, 3.0, rate),
        "noise": noise(2.0, rate),
        "silence": silence(1.0, rate),
        "tone_in_noise": tone(1000, 2.0, rate) + noise(2.0, rate, amplitude=0.01, seed=1),
    }


def bowed_melody(seconds: float, rate: int, seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    """A violin-like melody: bowed notes of an A-major scale (a sawtooth's harmonics under 7 kHz,
    a 5.5 Hz vibrato growing in, soft attack and release) through a crude body (emphasis near 300
    Hz and 2.8 kHz). YAMNet hears it as "Violin, fiddle" 0.6-0.9; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    notes = []
    while sum(len(n) for n in notes) < int(seconds * rate):
        f, length = float(rng.choice([440, 494, 554, 587, 659, 740, 831, 880])), float(rng.choice([0.4, 0.6, 0.8]))
        t = np.arange(int(length * rate)) / rate
        phase = 2 * np.pi * np.cumsum(f * (1 + 0.006 * np.sin(2 * np.pi * 5.5 * t) * np.clip(t / 0.3, 0, 1))) / rate
        note = sum(np.sin(k * phase) / k for k in range(1, 30) if k * f < 7000)
        notes.append(note * np.clip(t / 0.08, 0, 1) * np.clip((length - t) / 0.1, 0, 1))
    y = np.concatenate(notes)[: int(seconds * rate)]
    f = np.fft.rfftfreq(len(y), 1 / rate)
    body = (1 + 2 * np.exp(-(((f - 300) / 80) ** 2)) + 1.5 * np.exp(-(((f - 2800) / 600) ** 2))) * (f < 7500)
    y = np.fft.irfft(np.fft.rfft(y) * body, len(y))
    return (amplitude * y / np.abs(y).max()).astype(np.float32)
