"""Audio files in: decode (WAV, FLAC, Ogg via libsndfile), mix down to mono, resample.

Resampling is soxr's band-limited resampler (the same library streams microphone audio),
so a file and a live stream of the same sound give the same samples at the model rate.

Damaged files: whatever decodes is used. A file cut short (its header promises more, an Ogg
stream without its last page, a decode error part-way) gives the audio before the damage and
a warning saying how much; only a file of which nothing decodes is an AudioError. A file that
cannot be opened says why: missing, a directory, permission denied, or not audio at all.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edge.errors import AudioError
from edge.fsutil import looked_at

log = logging.getLogger(__name__)

SOXR_QUALITY = "HQ"  # soxr's high quality: ~-144 dB aliasing, linear phase
DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, OSError)
DECODE_BLOCK = 4096  # frames per read: a decode error loses at most the block it happens in
# What libsndfile's log (SoundFile.extra_info) says about a file cut short: a WAV data chunk
# shorter than its header's size ("data : 96000 (should be 47978)"), an Ogg stream whose last
# page lacks the end-of-stream flag.
TRUNCATION_SIGNS = ("(should be", "lacks an end-of-stream bit")
# The sizes a WAV header holds where its writer could not go back to fill them in (a recorder writing
# to a pipe, or one stopped before it finished): "unknown length", not a file cut short. libsndfile
# reads such a file to its end; from a pipe its frame count is a guess.
UNFINISHED_SIZE = re.compile(r"^\s*data\s*:\s*(?:4294967295|2147483647|2147479552)\b")  # sox: 0x7ffff000
SIZE_LINE = re.compile(r"^\s*(?:RIFF|data)\s*:")
EMPTY_DATA = re.compile(r"^\s*data\s*:\s*0\s*$", re.MULTILINE)


CLIP_LEVEL = 0.999
CLIP_RUN = 8  # a clipped peak is flat at full scale for a while; one full-scale sample is fine
CANCEL_RATIO = 0.01  # a mix 20 dB under its channels: they cancel (one of them inverted)
CANCEL_FILE_SECONDS = 0.1  # a file's audible frames (channels above -60 dBFS) this long at least: its mix is judged


def full_scale_runs(x: np.ndarray, carried: int = 0) -> np.ndarray:
    """run[i]: how many samples up to i are at full scale in a row, a run `carried` from before x
    going on (so a count over chunks does not depend on their boundaries). Clipping: run >= CLIP_RUN."""
    position = np.arange(1, x.size + 1)
    last_quiet = np.maximum.accumulate(np.where(np.abs(x) >= CLIP_LEVEL, 0, position))
    return position - last_quiet + np.where(last_quiet == 0, carried, 0)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """[n] or [n, channels] -> float32 [n], the mean of the channels."""
    samples = np.asarray(samples, dtype=np.float32)
    return samples if samples.ndim == 1 else samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling of mono float32 samples (a copy-free no-op at equal rates)."""
    if from_rate == to_rate:
        return samples
    return soxr.resample(samples, from_rate, to_rate, quality=SOXR_QUALITY).astype(np.float32, copy=False)


def sf_name(path: str | Path) -> str | bytes:
    """The name libsndfile opens `path` by: its bytes where it is no UTF-8 (a name from an old Windows or
    FAT copy, cafe in Latin-1: soundfile would encode the str Python made of it, and fail with a traceback)."""
    try:
        str(path).encode("utf-8")
        return str(path)
    except UnicodeEncodeError:
        return os.fsencode(path)


def open_audio(path: str | Path) -> sf.SoundFile:
    """Open an audio file for decoding; AudioError saying what `path` is when it cannot be read."""
    path = Path(path)
    prefix = f"cannot read audio file {path}"
    if not path.exists():
        if path.is_symlink():  # exists() follows it
            raise AudioError(f"{prefix}: it is a link to {os.readlink(path)}, which does not exist")
        raise AudioError(f"{prefix}: no such file{looked_at(path)}")
    if path.is_dir():
        raise AudioError(f"{prefix}: it is a directory: pass an audio file")
    try:
        open(path, "rb").close()  # libsndfile's own message for this is "System error"
    except PermissionError:
        raise AudioError(f"{prefix}: permission denied: make it readable by this user (chmod a+r)") from None
    except OSError as err:
        raise AudioError(f"{prefix}: {err.strerror or err}") from None
    if path.is_file() and path.stat().st_size == 0:  # libsndfile: "not an audio file"
        raise AudioError(f"{prefix}: it is empty (0 bytes): a recording that never began, or a failed copy")
    try:
        audio = sf.SoundFile(sf_name(path))
    except DECODE_ERRORS as err:
        detail = str(err).strip() or type(err).__name__
        raise AudioError(
            f"{prefix}: it is not an audio file libsndfile can read ({detail}; formats: "
            f"{', '.join(sorted(sf.available_formats()))})"
        ) from None
    if audio.frames == 0:
        info = getattr(audio, "extra_info", "") or ""
        audio.close()
        size = path.stat().st_size
        if EMPTY_DATA.search(info) and size > 1024:
            raise AudioError(
                f"audio file {path}: its header says it holds no samples, yet the file has {size} "
                "bytes: a recording that was never finished (the recorder stopped before writing its sizes); "
                "repair the header: sox --ignore-length IN.wav OUT.wav"
            )
        raise AudioError(f"audio file {path} holds no samples: record or pick a non-empty file")
    return audio


class Decoder:
    """An open audio file read block by block, that keeps what decoded before any damage.

    After `blocks` is exhausted, `damage` says why the file ended early (None: it did not) and
    `decoded` how many frames came out; `warning()` is the message to log for a damaged file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file = open_audio(self.path)
        self.rate, self.channels = self.file.samplerate, self.file.channels
        self.decoded = 0
        lines = (getattr(self.file, "extra_info", "") or "").splitlines()
        self.unfinished = any(UNFINISHED_SIZE.match(line) for line in lines)  # its length is read, not promised
        signs = [  # an unfinished header's RIFF size is whatever its writer put there
            line.strip()
            for line in lines
            if any(s in line for s in TRUNCATION_SIGNS) and not (self.unfinished and SIZE_LINE.match(line))
        ]
        self.damage: str | None = f"libsndfile: {'; '.join(signs)}" if signs else None

    def blocks(self, frames: int) -> Iterator[np.ndarray]:
        """float32 [n, channels] blocks until the end of the file or the first decode error."""
        while True:
            try:
                block = self.file.read(frames, dtype="float32", always_2d=True)
            except DECODE_ERRORS as err:
                if self.decoded == 0:
                    raise AudioError(
                        f"cannot decode audio file {self.path}: {err}: the file is corrupt; re-export it"
                    ) from None
                self.damage = f"libsndfile: {str(err).strip() or type(err).__name__}"
                return
            if not len(block):
                if self.damage is None and 0 < self.decoded < self.file.frames and not self.unfinished:
                    self.damage = f"its header promises {self.file.frames / self.rate:.3f} s"
                return
            self.decoded += len(block)
            yield block

    @property
    def seconds(self) -> float:
        return self.decoded / self.rate

    def warning(self) -> str | None:
        if self.damage is None:
            return None
        return (
            f"audio file {self.path} is truncated or corrupt after {self.seconds:.3f} s ({self.damage}): "
            f"scored the first {self.seconds:.3f} s"
        )

    def close(self) -> None:
        self.file.close()


def too_short_warning(path: str | Path, seconds: float, frame_seconds: float) -> str:
    return (
        f"audio file {path} is shorter than one frame ({seconds * 1e3:.0f} ms < frame "
        f"{frame_seconds * 1e3:.0f} ms): padded with silence and scored"
    )


def audible_power(frames: np.ndarray, mono: np.ndarray) -> tuple[float, float, int]:
    """Over the frames whose channels are audible (mean power above -60 dBFS): the sum of their mean power
    over channels, the sum of their mono mix's power, and their count (what cancel_warning judges)."""
    power = np.mean(np.square(frames), axis=1)
    audible = power > 1e-6
    return float(power[audible].sum()), float(np.square(mono[audible]).sum()), int(audible.sum())


def cancel_warning(name: str, count: int, channels: float, mix: float) -> str | None:
    """The warning for `count` channels whose mono mix (their mean) has `mix` of the power they hold
    (`channels`, audible_power's sums), where it is far quieter than they are: they cancel (a balanced
    microphone on an unbalanced input, a channel wired or exported inverted). Its sounds would be scored
    as near silence, and nothing said why. None where they do not."""
    if not mix < CANCEL_RATIO * channels:
        return None
    under = (
        "completely" if mix <= 1e-12 * channels else f"(the mix is {10 * np.log10(channels / mix):.0f} dB under them)"
    )
    return (
        f"{name}: its {count} channels cancel {under} when mixed to mono: one is inverted (a balanced microphone "
        "on an unbalanced input, a miswired channel?) and the model hears near silence; invert or leave out one "
        "channel (sox ... remix 1,2i; ffmpeg -af 'pan=mono|c0=c0')"
    )


def read_audio(path: str | Path, sample_rate: int, frame_seconds: float | None = None) -> np.ndarray:
    """Decode an audio file into mono float32 samples at `sample_rate`.

    A damaged file gives what decoded before the damage, with a warning; one shorter than
    `frame_seconds` (one analysis frame) is padded with silence to it, with a warning.
    Raises AudioError, naming the file, when it cannot be read, holds no samples or holds
    NaN/infinite samples.
    """
    return decode_audio(path, sample_rate, frame_seconds)[0]


def decode_audio(path: str | Path, sample_rate: int, frame_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """`read_audio`, and the file's clipped samples counted as a Source counts them (runs flat at
    full scale in its own mono mix, before resampling blurs them)."""
    decoder = Decoder(path)
    try:
        blocks = list(decoder.blocks(DECODE_BLOCK))
    finally:
        decoder.close()
    if not blocks:
        raise AudioError(f"audio file {path} holds no samples: record or pick a non-empty file")
    samples = np.concatenate(blocks)
    file_rate = decoder.rate
    if decoder.warning():
        log.warning("%s", decoder.warning())
    bad = ~np.isfinite(samples)
    if bad.any():
        first = int(np.argmax(bad.any(axis=1)))
        raise AudioError(
            f"audio file {path} holds {int(bad.sum())} NaN or infinite sample(s), the first at "
            f"{first / file_rate:.3f} s: the file is corrupt; re-export it"
        )
    mono = to_mono(samples)
    if samples.ndim == 2 and samples.shape[1] > 1:  # as a Source judges its first second of sound
        channels, mix, audible = audible_power(samples, mono)
        warning = cancel_warning(f"audio file {path}", samples.shape[1], channels, mix)
        if warning is not None and audible >= CANCEL_FILE_SECONDS * file_rate:
            log.warning("%s", warning)
    clipped = int(np.count_nonzero(full_scale_runs(mono) >= CLIP_RUN))
    out = resample(mono, int(file_rate), sample_rate)
    if frame_seconds and out.size < round(frame_seconds * sample_rate):
        log.warning("%s", too_short_warning(path, decoder.seconds, frame_seconds))
        out = np.pad(out, (0, round(frame_seconds * sample_rate) - out.size))
    return out, clipped
