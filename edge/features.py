"""The one log-mel definition: numpy, float32, shared by training, export and the device.

Every parameter lives in `Frontend`, which model.json serialises (its `frontend` field), so
the device computes exactly the features the model was trained on. The defaults are
HTS-AT's: 32 kHz, n_fft 1024, hop 320, 64 Slaney mel bins from 50 to 14000 Hz, a periodic
Hann window, centred frames with reflect padding, power 2 and 10*log10(max(x, 1e-10)).

Two forms compute the same numbers:
- `log_mel(samples, frontend)`: a whole signal at once -> [frames, n_mels].
- `StreamingLogMel`: samples arrive in chunks of any size; `push` returns only the frames
  that became complete, `flush` the last ones (which need the right-hand reflect padding).
  Concatenated, they equal `log_mel` over the whole signal, whatever the chunking.

The mel scale and normalisation are Slaney's, as librosa's defaults. torchaudio defaults
to HTK and no normalisation, a trap: the training-side twin (train.features) takes its
filterbank from here. A second family of settings reproduces YAMNet's features (16 kHz,
magnitude spectrogram, HTK mel triangles built in the mel domain as tf.signal does,
ln(mel + 0.001)), so AudioSet-pretrained YAMNet weights see the input they were trained on.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np


def _fields_of(cls, data: object, what: str) -> tuple[set[str], list[str], list[str]]:
    """(the dataclass's field names, the unknown keys of `data`, its missing fields); `data` must be a mapping."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a mapping of its fields, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    return names, sorted(set(data) - names), sorted(names - set(data))


@dataclass(frozen=True)
class Frontend:
    """Log-mel parameters; serialised as model.json's `frontend`."""

    sample_rate: int = 32000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 14000.0
    window: str = "hann"  # periodic Hann (as torch.hann_window and scipy's fftbins=True)
    center: bool = True
    pad_mode: str = "reflect"
    power: float = 2.0  # 2: power spectrogram (HTS-AT); 1: magnitude (YAMNet)
    mel_scale: str = "slaney"  # "slaney" (librosa) or "htk" (triangles in the mel domain, as tf.signal)
    mel_norm: str = "slaney"  # "slaney" (constant energy per band) or "none"
    log: str = "db"  # "db": 10*log10(max(x, log_floor)); "ln": ln(x + log_floor) (YAMNet's offset)
    log_floor: float = 1e-10
    frames: int = 1001  # model input frames: a 10 s clip at hop 320 and 32 kHz

    @classmethod
    def yamnet(cls) -> Frontend:
        """YAMNet's log-mel (tensorflow/models research/audioset/yamnet/params.py): 16 kHz,
        25 ms window, 10 ms hop, 512-point FFT, magnitude, 64 HTK bands 125-7500 Hz, ln(x + 0.001).
        Frames are centred (YAMNet's are not: a 12.5 ms shift, which fine-tuning absorbs)."""
        return cls(
            sample_rate=16000,
            n_fft=512,
            win_length=400,
            hop_length=160,
            n_mels=64,
            f_min=125.0,
            f_max=7500.0,
            power=1.0,
            mel_scale="htk",
            mel_norm="none",
            log="ln",
            log_floor=0.001,
        )

    @property
    def window_seconds(self) -> float:
        """Length of the model's input window: `frames` centred frames."""
        return (self.frames - 1) * self.hop_length / self.sample_rate

    def __post_init__(self) -> None:
        checks = [
            (self.sample_rate > 0, "sample_rate", "a positive integer (Hz)"),
            (self.n_fft > 0 and self.n_fft % 2 == 0, "n_fft", "a positive even integer"),
            (0 < self.win_length <= self.n_fft, "win_length", f"between 1 and n_fft ({self.n_fft})"),
            (self.hop_length > 0, "hop_length", "a positive integer"),
            (self.n_mels > 0, "n_mels", "a positive integer"),
            (
                0 <= self.f_min < self.f_max <= self.sample_rate / 2,
                "f_min/f_max",
                f"0 <= f_min < f_max <= sample_rate/2 ({self.sample_rate / 2:g})",
            ),
            (self.window == "hann", "window", "'hann'"),
            (self.center is True, "center", "true (frames are centred, as HTS-AT)"),
            (self.pad_mode == "reflect", "pad_mode", "'reflect'"),
            (self.power in (1.0, 2.0), "power", "1.0 (magnitude) or 2.0 (power)"),
            (self.mel_scale in ("slaney", "htk"), "mel_scale", "'slaney' or 'htk'"),
            (self.mel_norm in ("slaney", "none"), "mel_norm", "'slaney' or 'none'"),
            (self.log in ("db", "ln"), "log", "'db' or 'ln'"),
            (self.log_floor > 0, "log_floor", "a positive number"),
            (self.frames > 0, "frames", "a positive integer"),
        ]
        for ok, name, allowed in checks:
            if not ok:
                value = f"{self.f_min}/{self.f_max}" if name == "f_min/f_max" else getattr(self, name)
                raise ValueError(f"frontend {name}={value!r} is not supported: it must be {allowed}")

    @classmethod
    def from_dict(cls, data: dict) -> Frontend:
        """Build from model.json's `frontend`; unknown or missing keys fail, naming them."""
        names, unknown, missing = _fields_of(cls, data, "frontend")
        if unknown or missing:
            parts = [f"unknown {unknown}" if unknown else "", f"missing {missing}" if missing else ""]
            raise ValueError(f"frontend fields: {'; '.join(p for p in parts if p)} (allowed: {sorted(names)})")
        types = {
            "sample_rate": int,
            "n_fft": int,
            "win_length": int,
            "hop_length": int,
            "n_mels": int,
            "frames": int,
            "center": bool,
            "window": str,
            "pad_mode": str,
            "mel_scale": str,
            "mel_norm": str,
            "log": str,
        }
        for name, value in data.items():
            want = types.get(name, float)
            ok = isinstance(value, want) if want is not float else isinstance(value, (int, float))
            if not ok or (want is int and isinstance(value, bool)):
                raise ValueError(f"frontend {name}={value!r} must be of type {want.__name__}")
        fields: dict[str, Any] = {k: (float(v) if types.get(k, float) is float else v) for k, v in data.items()}
        return cls(**fields)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def num_frames(self, num_samples: int) -> int:
        """Frames that `log_mel` yields for a signal of `num_samples` (centred framing)."""
        return 1 + num_samples // self.hop_length

    def seconds_to_samples(self, seconds: float) -> int:
        return int(round(seconds * self.sample_rate))


def _hz_to_mel(hz: np.ndarray | float, scale: str = "slaney") -> np.ndarray:
    """Slaney's auditory toolbox scale (linear below 1 kHz, logarithmic above), or HTK's."""
    hz = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 1127.0 * np.log1p(hz / 700.0)
    f_sp = 200.0 / 3  # Hz per mel on the linear part
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    linear = hz / f_sp
    log = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log, linear)


def _mel_to_hz(mel: np.ndarray | float, scale: str = "slaney") -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * np.expm1(mel / 1127.0)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    linear = f_sp * mel
    log = min_log_hz * np.exp(logstep * (mel - min_log_mel))
    return np.where(mel >= min_log_mel, log, linear)


@lru_cache(maxsize=8)
def mel_filterbank(frontend: Frontend) -> np.ndarray:
    """Triangular mel filters, float32 [n_fft//2 + 1, n_mels].

    slaney: librosa's filters (triangles in Hz between mel-spaced edges).
    htk: tf.signal.linear_to_mel_weight_matrix's (triangles in the mel domain, DC bin unused).
    mel_norm slaney scales each filter by 2 / (its bandwidth in Hz): constant energy per band.
    """
    scale = frontend.mel_scale
    fft_hz = np.linspace(0.0, frontend.sample_rate / 2, frontend.n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(frontend.f_min, scale), _hz_to_mel(frontend.f_max, scale), frontend.n_mels + 2)
    edges_hz = _mel_to_hz(mel_pts, scale)  # [n_mels + 2]: lower edge, centre, upper edge of each filter
    if scale == "htk":
        x, edges = _hz_to_mel(fft_hz, scale), mel_pts
    else:
        x, edges = fft_hz, edges_hz
    widths = np.diff(edges)
    ramps = edges[:, None] - x[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))  # [n_mels, n_freqs]
    if scale == "htk":
        weights[:, 0] = 0.0  # tf.signal leaves the DC bin out
    if frontend.mel_norm == "slaney":
        weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    weights = weights.T.astype(np.float32)
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=8)
def analysis_window(frontend: Frontend) -> np.ndarray:
    """Periodic Hann of win_length, zero-padded to n_fft and centred (as torch.stft does)."""
    n = np.arange(frontend.win_length)
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / frontend.win_length)
    left = (frontend.n_fft - frontend.win_length) // 2
    window = np.zeros(frontend.n_fft, dtype=np.float32)
    window[left : left + frontend.win_length] = hann
    window.setflags(write=False)
    return window


def _frames_to_log_mel(padded: np.ndarray, n_frames: int, frontend: Frontend) -> np.ndarray:
    """Log-mel of `n_frames` frames read from an already padded float32 signal."""
    if n_frames <= 0:
        return np.zeros((0, frontend.n_mels), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(padded, frontend.n_fft)[:: frontend.hop_length][:n_frames]
    spectrum = np.fft.rfft(frames * analysis_window(frontend), axis=-1)  # [T, n_fft//2+1], complex64
    power = spectrum.real**2 + spectrum.imag**2
    if frontend.power == 1.0:
        power = np.sqrt(power)  # magnitude
    mel = power @ mel_filterbank(frontend)  # [T, n_mels]
    if frontend.log == "ln":
        return np.log(mel + np.float32(frontend.log_floor)).astype(np.float32, copy=False)
    return (10.0 * np.log10(np.maximum(mel, frontend.log_floor))).astype(np.float32, copy=False)


def _as_signal(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples of shape [n], got shape {samples.shape}: mix down to mono first")
    return samples.astype(np.float32, copy=False)


def log_mel(samples: np.ndarray, frontend: Frontend = Frontend()) -> np.ndarray:
    """Log-mel of a whole mono signal: float32 [1 + len // hop, n_mels]."""
    x = _as_signal(samples)
    if x.size < 2:
        raise ValueError(f"cannot frame {x.size} sample(s): a signal needs at least 2 samples")
    half = frontend.n_fft // 2
    padded = np.pad(x, half, mode="reflect")
    return _frames_to_log_mel(padded, frontend.num_frames(x.size), frontend)


class StreamingLogMel:
    """Incremental log-mel: `push` chunks of samples, get only the frames that became complete.

    Frame t is centred on sample t*hop and spans padded samples [t*hop, t*hop + n_fft), where
    the padded signal has n_fft//2 reflected samples on each side. The left padding is known
    once n_fft//2 + 1 samples have arrived; the right padding only at `flush()`, which also
    ends the stream. Memory stays bounded: only samples that an unemitted frame or the final
    reflect padding still need are kept.
    """

    def __init__(self, frontend: Frontend = Frontend()):
        self.frontend = frontend
        self.reset()

    def reset(self) -> None:
        """Start a new stream (the next sample is sample 0)."""
        self._pending = np.zeros(0, dtype=np.float32)  # padded-signal samples not yet dropped
        self._pending_start = 0  # padded index of _pending[0]
        # Raw samples held until the left reflect padding is known; None once it is.
        self._head: np.ndarray | None = np.zeros(0, dtype=np.float32)
        self._frames_out = 0
        self._samples_in = 0
        self._ended = False

    @property
    def frames_emitted(self) -> int:
        return self._frames_out

    @property
    def samples_seen(self) -> int:
        return self._samples_in

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add samples; return the newly complete frames, float32 [n_new, n_mels]."""
        if self._ended:
            raise RuntimeError("this stream was flushed: call reset() before pushing a new one")
        x = _as_signal(samples)
        self._samples_in += x.size
        half = self.frontend.n_fft // 2
        if self._head is not None:
            # Still waiting for the n_fft//2 + 1 samples that the left reflect padding mirrors.
            self._head = np.concatenate([self._head, x])
            if self._head.size < half + 1:
                return np.zeros((0, self.frontend.n_mels), dtype=np.float32)
            x = np.concatenate([self._head[half:0:-1], self._head])  # reflect pad + raw samples
            self._head = None
        self._pending = np.concatenate([self._pending, x]) if self._pending.size else x
        return self._emit(self._pending_start + self._pending.size)

    def flush(self) -> np.ndarray:
        """End the stream: the remaining frames, using the right-hand reflect padding."""
        if self._ended:
            raise RuntimeError("this stream was already flushed: call reset() to start a new one")
        self._ended = True
        half = self.frontend.n_fft // 2
        if self._head is not None:  # a stream shorter than the left padding: frame it whole
            if self._head.size < 2:
                return np.zeros((0, self.frontend.n_mels), dtype=np.float32)
            frames = log_mel(self._head, self.frontend)
            self._frames_out += frames.shape[0]
            return frames
        tail = self._pending[-half - 1 : -1][::-1]  # mirror of the last raw samples, edge excluded
        self._pending = np.concatenate([self._pending, tail])
        return self._emit(self._pending_start + self._pending.size)

    def _emit(self, padded_end: int) -> np.ndarray:
        fe = self.frontend
        hop, half = fe.hop_length, fe.n_fft // 2
        first = self._frames_out
        # Frame t is complete when padded samples up to t*hop + n_fft have arrived.
        last_complete = (padded_end - fe.n_fft) // hop  # may be < first: nothing new
        n_new = max(0, last_complete - first + 1)
        offset = first * hop - self._pending_start
        frames = _frames_to_log_mel(self._pending[offset:], n_new, fe)
        self._frames_out += n_new
        # Keep what the next frame needs, and the last n_fft//2 + 1 samples for the right padding.
        keep_from = min(self._frames_out * hop, padded_end - (half + 1))
        drop = max(0, keep_from - self._pending_start)
        if drop:
            self._pending = self._pending[drop:]
            self._pending_start += drop
        return frames


def tile_frames(mel: np.ndarray, frames: int) -> np.ndarray:
    """Repeat log-mel frames [T, F] until there are `frames`, then cut: [frames, F].

    How a clip shorter than the model's window fills it, in training and on the device alike
    (HTS-AT tiles ESC-50's 5 s clips to 10 s the same way, on the waveform). Done on frames so
    the device can tile its incrementally computed window without recomputing it.
    """
    if mel.shape[0] == 0:
        raise ValueError("cannot tile an empty log-mel: a window needs at least one frame")
    if mel.shape[0] >= frames:
        return mel[:frames]
    return np.tile(mel, (-(-frames // mel.shape[0]), 1))[:frames]


@dataclass(frozen=True)
class Windowing:
    """Window and hop in frames of a frontend (converted once from seconds)."""

    window_frames: int
    hop_frames: int
    model_frames: int
    seconds_per_frame: float

    @classmethod
    def from_seconds(cls, frontend: Frontend, window: float, hop: float) -> Windowing:
        per_frame = frontend.hop_length / frontend.sample_rate
        window_frames = round(window / per_frame) + 1  # centred frames of a `window`-second clip
        hop_frames = round(hop / per_frame)
        if hop_frames < 1:
            raise ValueError(f"--hop {hop:g} s is shorter than one frame ({per_frame * 1000:g} ms): use a longer hop")
        if window_frames < 2:
            raise ValueError(f"--window {window:g} s is shorter than two frames: use a longer window")
        if window_frames > frontend.frames:
            raise ValueError(
                f"--window {window:g} s is longer than the model's input "
                f"({frontend.window_seconds:g} s): use at most {frontend.window_seconds:g}"
            )
        return cls(window_frames, hop_frames, frontend.frames, per_frame)

    @property
    def window_seconds(self) -> float:
        return (self.window_frames - 1) * self.seconds_per_frame

    @property
    def hop_seconds(self) -> float:
        return self.hop_frames * self.seconds_per_frame

    @property
    def model_seconds(self) -> float:
        """The model's input window (at least `window_seconds`): listen reads up to this much audio at a time."""
        return (self.model_frames - 1) * self.seconds_per_frame


DC_CUTOFF_HZ = 10.0  # LevelMeter's high-pass: a microphone's constant offset is not read as a level


class FrameQueue:
    """The stream's log-mel frames that a future window still needs, by absolute index."""

    def __init__(self, n_mels: int):
        self.frames = np.zeros((0, n_mels), dtype=np.float32)
        self.start = 0  # absolute index of frames[0]

    @property
    def end(self) -> int:
        return self.start + len(self.frames)

    def append(self, new: np.ndarray) -> None:
        if len(new):
            self.frames = np.concatenate([self.frames, new]) if len(self.frames) else new

    def window(self, first: int, count: int) -> np.ndarray:
        return self.frames[first - self.start : first - self.start + count]

    def forget_before(self, index: int) -> None:
        drop = max(0, min(index, self.end) - self.start)
        if drop:
            self.frames = self.frames[drop:]
            self.start += drop


class DcBlocker:
    """A stream freed of a constant offset: a one-pole high-pass at DC_CUTOFF_HZ, y[n] = x[n] - x[n-1] +
    r y[n-1], the same whatever blocks the stream comes in. The stream starts from silence: an offset
    there is a step that dies away in a few tens of ms."""

    BLOCK = 1024  # samples solved at once in closed form (r^-BLOCK stays far from float64's range)

    def __init__(self, rate: int):
        r = math.exp(-2.0 * math.pi * DC_CUTOFF_HZ / rate)
        j = np.arange(self.BLOCK, dtype=np.float64)
        self._powers = (r ** (j + 1), r**j, r**-j)  # for y_j = r^(j+1) y + r^j sum_{k<=j} r^-k u_k
        self._x = self._y = 0.0  # the last sample in and out: the stream starts from silence

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """float64 samples without the offset, of `x`'s that follow the last call's."""
        x64 = np.asarray(x, dtype=np.float64)
        if not x64.size:
            return x64
        u = np.diff(x64, prepend=self._x)
        out = np.empty_like(u)
        y = self._y
        for i in range(0, u.size, self.BLOCK):
            part = u[i : i + self.BLOCK]
            after, scale, inverse = (p[: part.size] for p in self._powers)
            # the latest terms are the largest, so the sum keeps float64's precision
            out[i : i + part.size] = after * y + scale * np.cumsum(part * inverse)
            y = float(out[i + part.size - 1])
        self._x, self._y = float(x64[-1]), y
        return out


class LevelMeter:
    """The stream's loudness per frame hop (mean square of its `hop_length` samples), by the
    same absolute frame index as the log-mel frames, so a window's level is the mean over its
    frames' hops: `mean_square_dbfs(squares(first, count))`, 20 log10 RMS (a full-scale square
    wave is 0 dBFS, a full-scale sine -3 dBFS, digital silence -inf). Read without a constant
    offset (`sample_rate` given: DcBlocker): some MEMS microphones on I2S add a few percent of full
    scale (5 % reads as -26 dBFS), which every window's level read, so the level gate never closed
    and the window gain stopped raising distant sounds (and moved their scores). The model never
    heard it: its band starts at 125 Hz."""

    def __init__(self, hop_length: int, sample_rate: int | None = None):
        self.hop_length = hop_length
        self.hops = FrameQueue(1)  # [n, 1] mean squares
        self._partial = np.zeros((2, 0), dtype=np.float64)  # the samples of a hop not yet whole: as read, as came
        self._dc = None if sample_rate is None else DcBlocker(sample_rate)

    def push(self, samples: np.ndarray) -> None:
        came = np.asarray(samples, dtype=np.float64)
        read = came if self._dc is None else self._dc(came)
        x = np.concatenate([self._partial, np.stack([read, came])], axis=1)
        whole = x.shape[1] // self.hop_length
        self._partial = x[:, whole * self.hop_length :]
        self.hops.append(self._squares(x[:, : whole * self.hop_length])[:, None])

    def _squares(self, x: np.ndarray) -> np.ndarray:
        """[n] hop mean squares of [2, n x hop_length] samples as read and as came: digital silence stays
        silence (the high-pass's tail after a sound is no level)."""
        read, came = (hop_squares(row, self.hop_length) for row in x)
        return np.where(came == 0.0, 0.0, read)

    def flush(self) -> None:
        """The end of the stream: its last, shorter hop counts too."""
        if self._partial.shape[1]:
            read, came = np.mean(self._partial**2, axis=1)
            self.hops.append(np.array([[0.0 if came == 0.0 else read]]))
            self._partial = self._partial[:, :0]

    def squares(self, first: int, count: int) -> np.ndarray:
        """[count] the mean squares of hops first .. first + count - 1 (at least one)."""
        return self.hops.window(first, max(1, count))[:, 0]

    def forget_before(self, index: int) -> None:
        self.hops.forget_before(index)


def mean_square_dbfs(squares: np.ndarray) -> float:
    """20 log10 RMS of hops with mean squares `squares` (digital silence, or none: -inf)."""
    mean = float(np.mean(squares)) if np.size(squares) else 0.0
    return 10.0 * math.log10(mean) if mean > 0 else -math.inf


def loudest_dbfs(squares: np.ndarray, span_hops: int) -> float:
    """20 log10 RMS of the loudest `span_hops` consecutive hops (all of them when fewer) of hops with
    mean squares `squares` (hop_squares); -inf for digital silence or none."""
    squares = np.asarray(squares, dtype=np.float64)
    span = min(span_hops, len(squares))
    loudest = float(np.convolve(squares, np.full(span, 1.0 / span), "valid").max()) if span else 0.0
    return 10.0 * math.log10(loudest) if loudest > 0 else -math.inf


def hop_squares(samples: np.ndarray, hop_length: int) -> np.ndarray:
    """[n] float64 the mean square of each whole `hop_length` hop of `samples` (LevelMeter's unit:
    hop t lies between the centres of log-mel frames t and t + 1)."""
    x = np.asarray(samples, dtype=np.float64)
    whole = len(x) // hop_length
    return np.mean(x[: whole * hop_length].reshape(whole, hop_length) ** 2, axis=1)


@dataclass(frozen=True)
class WindowGain:
    """An automatic gain per window (model.json `gain`; None: none). Each window's log-mel is
    scaled exactly as if its audio had been, so that the loudest `span_hops` hops of the window
    (50 ms at a 10 ms hop) sit at `ref_dbfs` RMS: raised by at most `max_boost_db`, lowered by at
    most `max_cut_db` (0 by default: never lowered), and never above `max_level_dbfs` on average.
    A model trained on clips at a studio's levels then hears a distant or quietly recorded sound at
    the levels it learnt (the level-equalised demo recipe, CV split 1, student + head: held-out
    ESC-50 40 dB quieter 64.8 -> 92.1 %, UrbanSound8K 45.1 -> 73.7 %: benchmarks/window_gain.py,
    2026-12-05; training at -32..-8 dBFS alone does not reach that far). Lowering loud windows too
    (by up to 20 dB; an earlier recipe) gained 2 points at the clips' own level on ESC-50 (88.8 -> 90.8 %)
    but tripled the false alarms that sounds of never-trained classes start (the zero-shot split's
    45 held-out minutes, `--labels urban`: 2 -> 6 events; README). Digital silence stays silence,
    and the level gate (`listen --min-level`) reads the stream's own level, before the gain."""

    ref_dbfs: float = -20.0
    max_boost_db: float = 30.0
    max_cut_db: float = 0.0
    span_hops: int = 5
    # a raise never lifts the window's mean level (dBFS RMS) above this, so steady quiet noise stays
    # quiet noise (None: no bound). -25, not the -35 of 2026-12-03: the development UrbanSound8K
    # clips are about 10 dB quieter than the peak-normalised ESC-50 ones, so a steady sound held
    # at -35 dBFS (wind, a helicopter, church bells further away) is heard as the urban classes'
    # hum and drone: CV splits 1 and 2, their held-out non-urban streams 20 dB down over a -65
    # dBFS floor, `--labels urban`: 4 and 2 false alarms in 23 min at -35, 1 and 0 at -25
    # (benchmarks/heldout_false_alarms.py --quieter 20; README)
    max_level_dbfs: float | None = -25.0

    def __post_init__(self) -> None:
        checks = [
            (math.isfinite(self.ref_dbfs) and self.ref_dbfs <= 0, "ref_dbfs", "a level in dBFS <= 0 (e.g. -20)"),
            (math.isfinite(self.max_boost_db) and self.max_boost_db >= 0, "max_boost_db", "a finite number >= 0 (dB)"),
            (math.isfinite(self.max_cut_db) and self.max_cut_db >= 0, "max_cut_db", "a finite number >= 0 (dB)"),
            (isinstance(self.span_hops, int) and self.span_hops >= 1, "span_hops", "an integer >= 1 (hops)"),
            (
                self.max_level_dbfs is None or (math.isfinite(self.max_level_dbfs) and self.max_level_dbfs <= 0),
                "max_level_dbfs",
                "a level in dBFS <= 0 (e.g. -35), or null",
            ),
        ]
        for ok, name, allowed in checks:
            if not ok:
                raise ValueError(f"gain {name}={getattr(self, name)!r} is not supported: it must be {allowed}")

    @classmethod
    def from_dict(cls, data: dict) -> WindowGain:
        """From model.json's `gain`; unknown keys fail, naming them; missing ones take the defaults."""
        names, unknown, _ = _fields_of(cls, data, "gain")
        if unknown:
            raise ValueError(f"gain fields: unknown {unknown} (allowed: {sorted(names)})")
        bad = [
            name
            for name, value in data.items()
            if isinstance(value, bool) or not isinstance(value, int if name == "span_hops" else (int, float))
            if not (name == "max_level_dbfs" and value is None)
        ]
        if bad:
            raise ValueError(
                f"gain fields {bad} must be numbers (span_hops an integer), got "
                f"{', '.join(repr(data[name]) for name in bad)}"
            )
        fields: dict[str, Any] = {
            name: value if name == "span_hops" or value is None else float(value) for name, value in data.items()
        }
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """The gain in words (`info`, `semanticac-train window-gain`)."""
        bound = "" if self.max_level_dbfs is None else f" and never above {self.max_level_dbfs:g} dBFS on average"
        cut = f"lowered by at most {self.max_cut_db:g} dB" if self.max_cut_db else "never lowered"
        return (
            f"each window's loudest {self.span_hops} hops brought to {self.ref_dbfs:g} dBFS (raised by at most "
            f"{self.max_boost_db:g} dB{bound}, {cut})"
        )

    def gain_db(self, squares: np.ndarray) -> float:
        """The gain (dB) for a window whose hops have mean squares `squares` (0 for digital silence)."""
        loudest = loudest_dbfs(squares, self.span_hops)
        if loudest == -math.inf:
            return 0.0
        gain = float(np.clip(self.ref_dbfs - loudest, -self.max_cut_db, self.max_boost_db))
        if gain > 0 and self.max_level_dbfs is not None:
            gain = min(gain, max(0.0, self.max_level_dbfs - mean_square_dbfs(squares)))
        return gain

    def apply(self, frames: np.ndarray, squares: np.ndarray, frontend: Frontend) -> np.ndarray:
        """[T, n_mels] a window's log-mel frames as if its audio (hops' mean squares `squares`) had
        been scaled by `gain_db(squares)`."""
        return self.scale(frames, self.gain_db(squares), frontend)

    @staticmethod
    def scale(frames: np.ndarray, gain: float, frontend: Frontend) -> np.ndarray:
        """[T, n_mels] log-mel frames as if their audio had been scaled by `gain` dB: the mel bands
        scale by the amplitude's factor to the frontend's power, so ln(x + floor) is exact; a "db"
        band at the floor (clamped) stays there."""
        if gain == 0.0:
            return frames
        factor = 10.0 ** (gain * frontend.power / 20.0)
        if frontend.log == "ln":
            floor = np.float32(frontend.log_floor)
            mel = np.maximum(np.exp(frames) - floor, 0.0)
            return np.log(mel * np.float32(factor) + floor).astype(np.float32, copy=False)
        floor_db = np.float32(10.0 * math.log10(frontend.log_floor))
        shifted = np.maximum(frames + np.float32(10.0 * math.log10(factor)), floor_db)
        return np.where(frames > floor_db, shifted, frames).astype(np.float32, copy=False)


def clip_window(samples: np.ndarray, frontend: Frontend, seconds: float, gain: WindowGain | None = None) -> np.ndarray:
    """A clip's first window as `listen` feeds it to the model: the log-mel of its first `seconds`
    (all of it when shorter), the window's `gain` (measured on the hops between its first and last
    frame centres, as listen measures a window), tiled to `frontend.frames`."""
    x = np.asarray(samples)[: frontend.seconds_to_samples(seconds)]
    mel = log_mel(x, frontend)
    if gain is not None:
        mel = gain.apply(mel, hop_squares(x, frontend.hop_length)[: len(mel) - 1], frontend)
    return tile_frames(mel, frontend.frames)
