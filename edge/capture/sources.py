"""Audio sources of the listen loop: a microphone, an audio file, raw PCM on stdin.

All three work the same way, so the whole loop runs in tests with a file or stdin:

    producer                                   consumer: Source.read(max_samples, timeout)
    PortAudio callback | file thread | stdin    RingBuffer -> mean of channels -> clipping count
      frames at the input's rate and channels    -> soxr.ResampleStream -> float32 mono, model rate
      -> RingBuffer.write (copy only)

Only the producer knows about blocks; the consumer reads whatever is in the ring, and soxr's
streaming resampler gives the same samples however its input is chunked (checked: bit-equal
to the one-shot soxr.resample that edge.capture.audio.read_audio uses, same length). So the
concatenation of everything `read` returns does not depend on the capture block size.

End of stream: `read` returns None once a file or stdin is exhausted and everything has been
delivered (then `end_reason` says why; `stop()` also ends the stream). Failures raise AudioError:
a corrupt file, a lost device, a device that delivers nothing for `stall_seconds`.

A lost microphone, as PortAudio sees it through ALSA's PulseAudio plugin (measured): when its
PulseAudio source goes away (module unloaded, USB device unplugged) or the daemon dies, the
stream ends, and `read` raises AudioError; when another source is left, PulseAudio moves the
stream there instead, and PortAudio reports nothing (edge.listen watches for the silence an
idle source gives). To open it again, `MicrophoneSource(..., rescan=True)`: PortAudio lists
its devices only when it initialises.

Live vs. not: the microphone and a real-time file overwrite the oldest audio when the consumer
falls behind (counted in `overflows`); a `fast` file and stdin wait for room instead, since
nothing is lost by making them wait (a pipe passes the wait on to its writer).
"""

from __future__ import annotations

import atexit
import ctypes
import inspect
import logging
import math
import os
import re
import select
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import soxr

from edge.capture.audio import (
    CLIP_RUN,
    SOXR_QUALITY,
    Decoder,
    audible_power,
    cancel_warning,
    full_scale_runs,
    to_mono,
    too_short_warning,
)
from edge.capture.ring import RingBuffer
from edge.errors import AudioError, detached

log = logging.getLogger(__name__)

MODEL_RATE = 32000  # Frontend's default sample rate
POLL_SECONDS = 0.005  # waits poll the ring: the audio callback never signals anyone
CLIP_LOG_SECONDS = 5.0
# A file's sample above this is beyond full scale: no integer format decodes above 1, and a lossy
# codec's overshoot on loud material stays well under it (KLettres' Ogg recordings: up to 1.56)
BEYOND_FULL_SCALE = 2.0
NONFINITE_LOG_SECONDS = 1.0
STDIN_POLL_SECONDS = 0.1  # how often a reader waiting on stdin looks for a stop request
CLOSE_SECONDS = 2.0  # how long stop() waits for PortAudio to close a device
_left_behind: list[tuple[threading.Thread, float]] = []  # closes that did not finish, since when (monotonic)
# Each rescan (Pa_Terminate + Pa_Initialize) leaks ~12 KiB inside PortAudio/ALSA (measured: 161 ->
# 195 MiB over 2857 tries for a microphone left unplugged, ~50 MiB a day at a 30 s backoff). The
# first RESCAN_FREELY ones go ahead (a sound server restarting, a device coming back within
# minutes); after them, a rescan waits for the machine's sound cards to change (a USB microphone
# plugged in) or its sound server's socket (PulseAudio or PipeWire started again: its audio came
# back up to 10 minutes late, 2026-12-07), or RESCAN_EVERY seconds since the last one.
RESCAN_FREELY = 10
RESCAN_EVERY = 600.0


@dataclass
class _Rescans:
    count: int = 0  # rescans done
    at: float = -math.inf  # time.monotonic() of the last one
    cards: str | None = None  # sound_cards() then
    held: bool = False  # the last one asked for waited (the device list is the one from `at`)

    def note(self) -> str:
        """Where the device list is an old one, a note saying so and when it is looked at again."""
        if not self.held:
            return ""
        age = time.monotonic() - self.at
        return rescan_note(age, max(0.0, RESCAN_EVERY - age))


def rescan_note(age: float, left: float) -> str:
    """The note a device error carries while PortAudio's device list is `age` s old (a rescan waits)."""
    return (
        f" (PortAudio's device list is {age:.0f} s old: it looks again when a sound card or the sound server "
        f"changes, or in {left:.0f} s)"
    )


_rescans = _Rescans()
# The most a source may carry: its ring holds buffer_seconds of it (5 s at the most: 123 MB).
# A rate or channel count beyond them is a typo or a corrupt header, not audio.
MAX_INPUT_RATE = 768_000
MAX_CHANNELS = 128  # a 48 kHz recorder's most
MAX_SAMPLES_PER_SECOND = MAX_INPUT_RATE * 8  # rate x channels: 48 kHz x 128
_band_said: set[int] = set()  # input rates below the model's already warned of (once a process: a folder of them)
CANCEL_CHECK_SECONDS = 1.0  # of audible input (channels above -60 dBFS) before the mix is judged
STDIN_FORMATS = {"s16le": ("<i2", 2.0**-15), "s32le": ("<i4", 2.0**-31), "f32le": ("<f4", 1.0)}


class _Every:
    """True at most once per `seconds`: rate-limits repeated warnings."""

    def __init__(self, seconds: float):
        self.seconds, self._next = seconds, 0.0

    def __call__(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.seconds
        return True


class Source:
    """Float32 mono audio at `sample_rate`, read in chunks by one consumer.

    Counters: `samples_delivered` (model-rate samples returned by `read`), `overflows` (input
    frames lost because the consumer fell behind the ring), `clipped_samples` (input samples
    that are the CLIP_RUN-th or later of a run at |x| >= CLIP_LEVEL). `cancelling`: the warning,
    once a source of several channels has found them cancelling in its mono mix (else None).
    """

    # what to do of clipping: a recording is clipped as it is; a microphone's gain can be lowered
    clipping_fix = "the recording is clipped as it is (record it again with less gain); clipped audio scores lower"
    # where float samples can go beyond full scale (a file, f32le on stdin): what they are, and what to do
    beyond_cause = ""
    beyond_fix = ""

    def __init__(
        self, name: str, input_rate: int, channels: int, sample_rate: int, buffer_seconds: float, block: int = 1
    ):
        if sample_rate <= 0:
            raise AudioError(f"model sample rate must be a positive integer (Hz), got {sample_rate}")
        if input_rate > MAX_INPUT_RATE or channels > MAX_CHANNELS or input_rate * channels > MAX_SAMPLES_PER_SECOND:
            raise AudioError(
                f"{name}: {input_rate} Hz x {channels} channel(s) is beyond what listen reads (at most "
                f"{MAX_INPUT_RATE} Hz, {MAX_CHANNELS} channels, {MAX_SAMPLES_PER_SECOND} samples a second): a corrupt "
                "header, or the wrong rate or channels given; resample or mix it down first (sox, ffmpeg)"
            )
        self.name = name
        self.input_rate = input_rate
        self.channels = channels
        self.sample_rate = sample_rate
        self.samples_delivered = 0
        self.clipped_samples = 0
        self.cancelling: str | None = None  # what is wrong, once its channels are found to cancel in the mix
        self.end_reason: str | None = None
        self._ring = RingBuffer(max(round(buffer_seconds * input_rate), block, 1), channels)
        self._resampler = (
            soxr.ResampleStream(input_rate, sample_rate, 1, dtype="float32", quality=SOXR_QUALITY)
            if input_rate != sample_rate
            else None
        )
        self._pending = np.zeros(0, dtype=np.float32)  # resampled, not yet delivered
        self._started = self._flushed = False
        self._ended = threading.Event()  # the producer has written its last frame
        self._stopping = threading.Event()
        self._error: Exception | None = None  # set by the producer, raised by `read`
        self._thread: threading.Thread | None = None
        self._clip_run = self._clipped_unlogged = 0
        self._clip_log = _Every(CLIP_LOG_SECONDS)
        self._beyond_said = False
        self._cancel = [0.0, 0.0, 0] if channels > 1 else None  # channels' and mix's energy, frames: until judged
        if channels > 1:
            log.info("%s: mixing %d channels down to mono", name, channels)
        if input_rate < sample_rate and input_rate in _band_said:  # calibrate reads a folder of them
            log.info("%s: %d Hz audio, below the model's %d Hz (said above)", name, input_rate, sample_rate)
        elif input_rate < sample_rate:  # band-limited: 8 kHz (a telephone's) had lost events without a word
            _band_said.add(input_rate)
            log.warning(
                "%s: %d Hz audio carries sound up to %d Hz, and the model listens at %d Hz (up to %d Hz): what lies "
                "above (a siren's harmonics, birds, breaking glass) reaches it weaker or not at all; record at %d Hz "
                "or more if you can",
                name,
                input_rate,
                input_rate // 2,
                sample_rate,
                sample_rate // 2,
                sample_rate,
            )
        elif self._resampler is not None:
            log.info("%s: resampling %d Hz to %d Hz", name, input_rate, sample_rate)

    @property
    def overflows(self) -> int:
        return self._ring.dropped

    def start(self) -> Source:
        if not self._started:
            self._started = True
            self._start_producer()
        return self

    def stop(self) -> None:
        """Stop the producer; `read` then delivers what is buffered and returns None."""
        self._stopping.set()
        self._stop_producer()
        self.end_reason = self.end_reason or "stopped"
        self._ended.set()

    def __enter__(self) -> Source:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def read(self, max_samples: int, timeout: float = 0.5) -> np.ndarray | None:
        """Up to `max_samples` new samples; empty if none came within `timeout` s; None at the end.

        A producer's failure (AudioError) is raised once everything it delivered before it has
        been returned, so the audio before a decode error or a lost device is still scored."""
        if max_samples <= 0:
            raise ValueError(f"max_samples must be positive, got {max_samples}")
        if not self._started:
            raise RuntimeError(f"{self.name}: call start() (or use `with`) before read()")
        deadline = time.monotonic() + timeout
        while True:
            ended = self._ended.is_set()  # first: a producer sets _error, then _ended
            got_frames = self._fill(max_samples, ended)
            if self._pending.size:
                out, self._pending = self._pending[:max_samples], self._pending[max_samples:]
                self.samples_delivered += out.size
                return out
            if self._flushed:  # everything before a failure is delivered first, then it is raised
                if self._error is not None:
                    raise self._error
                return None
            if not got_frames:
                self._check_alive()
                if time.monotonic() >= deadline:
                    return np.zeros(0, dtype=np.float32)
                time.sleep(POLL_SECONDS)

    def _fill(self, max_samples: int, ended: bool) -> bool:
        """Resample enough input for `max_samples` into _pending; False if the ring was empty."""
        wanted = math.ceil((max_samples - self._pending.size) * self.input_rate / self.sample_rate)
        if wanted <= 0:
            return True
        frames = self._ring.read(wanted)
        if len(frames):
            self._pending = np.concatenate([self._pending, self._to_model_rate(frames)])
            return True
        if ended and not self._flushed:  # `ended` was read before the ring: nothing more will come
            self._pending = np.concatenate([self._pending, self._flush()])
            self._flushed = True
        return False

    # The producer side, overridden by each source. The default runs `_produce` in a thread.
    def _start_producer(self) -> None:
        self._thread = threading.Thread(target=self._run_producer, name=self.name, daemon=True)
        self._thread.start()

    def _stop_producer(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=1.0)  # a stdin read may block for good: the thread is a daemon

    def _run_producer(self) -> None:
        try:
            self._produce()
        except Exception as err:  # handed to the consumer, raised by `read`
            self._error = detached(err)  # its traceback's frames hold this source
        finally:
            self._ended.set()

    def _produce(self) -> None:
        raise NotImplementedError

    def _put_waiting(self, block: np.ndarray) -> bool:
        """Write without dropping: wait for room. False when stopped meanwhile."""
        while self._ring.free() < len(block):
            if self._stopping.wait(POLL_SECONDS):
                return False
        self._ring.write(block)
        return True

    def _check_alive(self) -> None:
        """Called while no audio arrives; a live source raises AudioError when it has died."""

    # The consumer side, the same for every source.
    def _to_model_rate(self, frames: np.ndarray) -> np.ndarray:
        mono = to_mono(frames)  # the mean of the channels, as read_audio does it
        self._count_clipping(mono)
        if self._cancel is not None:
            self._check_cancelling(frames, mono)
        return mono if self._resampler is None else self._resampler.resample_chunk(mono)

    def _flush(self) -> np.ndarray:
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)

    def _check_cancelling(self, frames: np.ndarray, mono: np.ndarray) -> None:
        """Once per source, after CANCEL_CHECK_SECONDS of audible input: a warning where the mono mix
        is far quieter than its channels (they cancel: a balanced microphone on an unbalanced input,
        a channel wired inverted). Its sounds would be scored as near silence, and nothing said why."""
        assert self._cancel is not None
        if not frames.size:
            return
        for k, value in enumerate(audible_power(frames, mono)):
            self._cancel[k] += value
        if self._cancel[2] < CANCEL_CHECK_SECONDS * self.input_rate:
            return
        channels, mix, _ = self._cancel
        self._cancel = None
        self.cancelling = cancel_warning(self.name, self.channels, channels, mix)
        if self.cancelling is not None:  # debug: listen's `channels_cancel` status says it (every 10 min)
            log.debug("%s", self.cancelling)

    def _count_clipping(self, x: np.ndarray) -> None:
        run = full_scale_runs(x, self._clip_run)
        self._clip_run = int(run[-1])
        clipped = int(np.count_nonzero(run >= CLIP_RUN))
        self.clipped_samples += clipped
        self._clipped_unlogged += clipped
        if self._clipped_unlogged and self._clip_log():  # debug: listen's `clipping` status says it (every 10 min)
            log.debug(
                "%s: clipping: %d sample(s) at full scale (%d+ in a row) since the last report; %s",
                self.name,
                self._clipped_unlogged,
                CLIP_RUN,
                self.clipping_fix,
            )
            self._clipped_unlogged = 0

    def _check_beyond_full_scale(self, block: np.ndarray, frames: int) -> None:
        """Once per source: a warning where a float sample goes beyond full scale (`beyond_cause`),
        which the model hears louder than any microphone delivers; from then on the clipping status
        says so, and `beyond_fix`, instead of calling those samples clipped."""
        if self._beyond_said or not block.size or max(float(block.max()), -float(block.min())) <= BEYOND_FULL_SCALE:
            return  # every block of a sound file
        magnitude = np.abs(block).max(axis=1)
        beyond = np.flatnonzero(magnitude > BEYOND_FULL_SCALE)
        self._beyond_said = True
        at, peak = (frames + int(beyond[0])) / self.input_rate, float(magnitude[beyond].max())
        log.warning(
            "%s goes beyond full scale at %.3f s (%.1f times it there: %s); it is scored as it is, louder than "
            "any microphone delivers: %s",
            self.name,
            at,
            peak,
            self.beyond_cause,
            self.beyond_fix,
        )
        self.clipping_fix = (
            f"they are beyond it, not clipped ({peak:.1f} times full scale at {at:.3f} s: {self.beyond_cause}), "
            f"and the model hears them louder than any microphone delivers: {self.beyond_fix}"
        )


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    channels: int
    default_rate: float
    is_default: bool


def _alsa_to_log() -> None:
    """ALSA's own error lines ("ALSA lib pcm_pulse.c:758:(pulse_prepare) PulseAudio: Unable to
    create stream: No such entity", then a blank line) go to this log at debug level instead of
    straight to stderr, where the journal filed them with no priority: each try to reopen a lost
    microphone wrote two. Once, before PortAudio starts (its start scans ALSA's devices); nothing
    where there is no ALSA. (PortAudio's own "Expression ... failed" lines have no such hook.)"""
    global _alsa_handler
    if _alsa_handler is not None or not sys.platform.startswith("linux"):
        return
    try:
        asound = ctypes.CDLL("libasound.so.2")
    except OSError:
        return
    # ALSA's handler is variadic (file, line, function, err, fmt, ...): the named arguments are
    # passed alike on x86-64 and AArch64, so the format is logged unformatted
    handler_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p)

    def handler(file: bytes | None, line: int, function: bytes | None, err: int, fmt: bytes | None) -> None:
        try:
            text = (fmt or b"").decode(errors="replace").strip()
            reason = f" ({os.strerror(-err)})" if err < 0 else ""
            log.debug(
                "ALSA %s:%d (%s): %s%s",
                (file or b"?").decode(errors="replace"),
                line,
                (function or b"?").decode(errors="replace"),
                text,
                reason,
            )
        except Exception:  # noqa: BLE001 - an exception must not cross into C
            pass

    _alsa_handler = handler_type(handler)
    asound.snd_lib_error_set_handler(_alsa_handler)


_alsa_handler: Any = None  # kept referenced: ALSA calls it for the life of the process


def _sounddevice():
    _alsa_to_log()
    try:
        import sounddevice
    except ImportError as err:
        raise ImportError(
            f"the microphone needs sounddevice, a dependency of semanticac-edge ({err}): pip install sounddevice"
        ) from None
    except OSError as err:  # sounddevice imports, but PortAudio's library is missing
        raise ImportError(
            f"the microphone needs the PortAudio library ({err}): apt-get install libportaudio2"
        ) from None
    return sounddevice


def stuck_close_seconds() -> float:
    """How long the oldest PortAudio close still running has been stuck (0: none is). One that
    never returns (seen once: a deadlock inside libpulse after the sound server hung) stops
    every later rescan for the life of the process."""
    _left_behind[:] = [(closer, since) for closer, since in _left_behind if closer.is_alive()]
    return time.monotonic() - min(since for _, since in _left_behind) if _left_behind else 0.0


def sound_cards() -> str:
    """What the kernel says of the sound cards (/proc/asound/cards and /dev/snd's entries), and the
    sound servers' sockets (inode and time: a server started again makes its socket anew): it
    changes when a device is plugged in or out, or a sound server starts or stops; "" where there
    is none of these."""
    parts = []
    try:
        parts.append(Path("/proc/asound/cards").read_text())
    except OSError:
        pass
    try:
        parts.append(" ".join(sorted(os.listdir("/dev/snd"))))
    except OSError:
        pass
    for socket in sound_server_sockets():
        try:
            made = socket.stat()
        except OSError:
            continue
        parts.append(f"{socket} {made.st_ino} {made.st_mtime_ns}")
    return "\n".join(parts)


def sound_server_sockets() -> list[Path]:
    """Where PulseAudio (or PipeWire's pulse server) and PipeWire listen: $PULSE_SERVER's unix paths
    (its servers are separated by spaces, each `[{machine id}]unix:PATH`, a PATH, or a tcp one, left
    out), <$XDG_RUNTIME_DIR>/pulse/native and pipewire-0, and the system-wide daemon's /run/pulse/native."""
    found = []
    for server in os.environ.get("PULSE_SERVER", "").split():
        server = re.sub(r"^\{[^}]*\}", "", server).removeprefix("unix:")
        if server.startswith("/"):
            found.append(Path(server))
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        found += [Path(runtime, "pulse", "native"), Path(runtime, "pipewire-0")]
    return found + [Path("/run/pulse/native")]


def rescan_devices(force: bool = False) -> bool:
    """Make PortAudio list the devices again: it reads them once, when it initialises, so a
    device plugged in (or a sound server started) later is unseen until then. Only call it
    while this process has no stream open (skipped, with a warning, while a close hangs).
    After RESCAN_FREELY rescans, one goes ahead only when the sound cards changed or
    RESCAN_EVERY seconds passed (each leaks a little memory in PortAudio), unless `force`d.
    Whether it rescanned."""
    sd = _sounddevice()
    if stuck_close_seconds() > 0:
        log.warning("PortAudio is still closing a stream (the sound server hangs): not rescanning devices")
        return False
    cards = sound_cards()
    now = time.monotonic()
    waited = cards == _rescans.cards and now - _rescans.at < RESCAN_EVERY
    _rescans.held = not force and _rescans.count >= RESCAN_FREELY and waited
    if _rescans.held:
        return False
    sd._terminate()  # sounddevice's own pair for exactly this (documented in its FAQ)
    sd._initialize()
    _rescans.count, _rescans.at, _rescans.cards = _rescans.count + 1, now, cards
    return True


def list_input_devices(rescan: bool = False) -> list[InputDevice]:
    """The capture devices PortAudio sees, default one flagged (`rescan`: look again first)."""
    sd = _sounddevice()
    if rescan:
        rescan_devices()
    try:
        default = sd.query_devices(kind="input")["index"]
    except sd.PortAudioError:
        default = None
    return [
        InputDevice(
            d["index"], d["name"], d["max_input_channels"], float(d["default_samplerate"]), d["index"] == default
        )
        for d in sd.query_devices()
        if d["max_input_channels"] > 0
    ]


def _match_device(device: int | str | None, devices: list[InputDevice]) -> list[InputDevice]:
    """The devices `device` names: an index, (part of) a name (case-insensitive), or None: the default."""
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device)
    if device is None:
        return [d for d in devices if d.is_default]
    if isinstance(device, int):
        return [d for d in devices if d.index == device]
    key = device.lower()
    return [d for d in devices if d.name.lower() == key] or [d for d in devices if key in d.name.lower()]


def find_input_device(device: int | str | None = None, rescan: bool = False) -> InputDevice:
    """An input device by index, by (part of) its name (case-insensitive), or the default one.
    PortAudio looks again first with `rescan`, else when none matches (a device plugged in
    after it started)."""
    devices = list_input_devices(rescan=rescan)
    matches = _match_device(device, devices)
    if not matches and not rescan:
        devices = list_input_devices(rescan=True)
        matches = _match_device(device, devices)
    if len(matches) == 1:
        return matches[0]
    listing = "; ".join(f"{d.index}: {d.name!r}" for d in devices)
    if not matches:
        wanted = "no default input device" if device is None else f"no input device {device!r}"
        if not devices:
            raise AudioError(
                f"{wanted}: PortAudio finds no capture device{_rescans.note()}; connect a microphone (check "
                "with `semanticac-edge devices`), or listen to a file (--input FILE; a service: audio.input)"
            )
        raise AudioError(
            f"{wanted}; input devices are {listing}{_rescans.note()}: name one with --device (a service: "
            "audio.device), by part of its name or its index"
        )
    raise AudioError(
        f"input device name {device!r} is ambiguous, it matches "
        f"{'; '.join(f'{d.index}: {d.name!r}' for d in matches)}: give more of the name (or listen's --device "
        "with the index)"
    )


def weakly(method: Any) -> Any:
    """`method`, called through a weak reference to its object (None once that is freed). For a
    callable that something the object holds keeps (a sounddevice stream is a reference cycle of
    its own: its C callback holds it; a read wrapped on the instance): holding the object back
    would make a cycle that only a full collection frees, which a process this steady seldom runs,
    and a source holds its ring (1.7 MiB at 44.1 kHz stereo)."""
    if not inspect.ismethod(method):  # a plain function (a read already wrapped): it holds no object
        return method
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        bound = ref()
        return None if bound is None else bound(*args)  # None: a left-behind stream's late callback

    return call


class MicrophoneSource(Source):
    """A PortAudio capture device. The callback only copies into the ring.

    `device`: index, part of a name, or None for the default input. `device_rate`: capture rate
    (default: the device's own default rate, else the first of model rate, 48000, 44100, 16000
    it accepts). `channels`: default 1 for a mono device, else 2, mixed down. `block`: frames
    per callback (0: PortAudio chooses). A device that delivers nothing for `stall_seconds`
    (the first audio may take ~2 s through PulseAudio) or whose stream ends raises AudioError.
    `rescan`: PortAudio looks for devices again first (reopening a lost one).
    """

    clipping_fix = (
        "lower its input gain (alsamixer, pavucontrol) or move it back from the sound; clipped audio scores lower"
    )

    def __init__(
        self,
        device: int | str | None = None,
        *,
        sample_rate: int = MODEL_RATE,
        device_rate: int | None = None,
        channels: int | None = None,
        block: int = 0,
        buffer_seconds: float = 5.0,
        stall_seconds: float = 5.0,
        rescan: bool = False,
    ):
        self.device = find_input_device(device, rescan=rescan)
        channels = channels or min(2, self.device.channels)
        name = f"input device {self.device.index} ({self.device.name!r})"
        rate = self._pick_rate(name, channels, device_rate, sample_rate)
        super().__init__(name, rate, channels, sample_rate, buffer_seconds, block)
        self.block = block
        self.stall_seconds = stall_seconds
        self.xruns = 0  # callbacks that PortAudio flagged with an input overflow (lost before the ring)
        self._stream: Any = None  # a sounddevice.InputStream while capturing (sounddevice is untyped)
        self._last_written, self._last_arrival = 0, 0.0

    def _pick_rate(self, name: str, channels: int, device_rate: int | None, sample_rate: int) -> int:
        sd = _sounddevice()
        if device_rate is not None and device_rate <= 0:
            raise AudioError(f"device rate must be a positive integer (Hz), got {device_rate}")
        rates = (
            [device_rate]
            if device_rate
            else list(dict.fromkeys([int(self.device.default_rate), sample_rate, 48000, 44100, 16000]))
        )
        for rate in rates:
            try:
                sd.check_input_settings(self.device.index, channels=channels, dtype="float32", samplerate=rate)
                return rate
            except (sd.PortAudioError, ValueError) as err:
                reason = str(err)
        raise AudioError(
            f"{name} cannot capture {channels} channel(s) at {' or '.join(map(str, rates))} Hz "
            f"({reason}): the device is gone or busy, or cannot record; check it with `semanticac-edge devices`, "
            "or pick another"
        )

    def _start_producer(self) -> None:
        sd = _sounddevice()
        try:
            self._stream = sd.InputStream(
                device=self.device.index,
                samplerate=self.input_rate,
                channels=self.channels,
                dtype="float32",
                blocksize=self.block,
                callback=weakly(self._callback),
                finished_callback=weakly(self._finished),
            )
            self._stream.start()
        except sd.PortAudioError as err:
            if self._stream is not None:  # opened, not started: close it (a rescan needs none open)
                self._stream.close(ignore_errors=True)
                self._stream = None
            raise AudioError(
                f"cannot open {self.name} at {self.input_rate} Hz, {self.channels} channel(s): "
                f"{err}: is another program holding it?"
            ) from None
        self._last_arrival = time.monotonic()
        _rescans.count = 0  # a device works again: its next loss gets its free rescans too
        log.info("%s: capturing at %d Hz, %d channel(s)", self.name, self.input_rate, self.channels)

    def _callback(self, indata, frames, time_info, status) -> None:
        # PortAudio's thread: copy and count, nothing else (no allocation, no waiting, no logging).
        self._ring.write(indata)
        if status.input_overflow:
            self.xruns += 1

    def _finished(self) -> None:
        # PortAudio calls this when the stream ends: by stop(), or because the device went away.
        if not self._stopping.is_set():
            self._error = AudioError(
                f"{self.name} stopped delivering audio (device unplugged or sound server stopped): check the device"
            )
        self._ended.set()

    def _stop_producer(self) -> None:
        if self._stream is None:
            return
        # A hung sound server blocks Pa_CloseStream for good: close in a thread, wait a while.
        closer = threading.Thread(target=self._stream.close, kwargs={"ignore_errors": True}, daemon=True)
        closer.start()
        closer.join(CLOSE_SECONDS)
        if closer.is_alive():
            _left_behind.append((closer, time.monotonic()))
            # sounddevice terminates PortAudio at exit, which would wait on the same hung server
            # for ever: this process leaves it to the OS, so an exit (the unit restarts it) is one
            exit_handler = getattr(_sounddevice(), "_exit_handler", None)
            if exit_handler is not None:
                atexit.unregister(exit_handler)
            log.warning(
                "%s did not close within %g s (the sound server is not responding): left behind",
                self.name,
                CLOSE_SECONDS,
            )
        self._stream = None

    def _check_alive(self) -> None:
        now, written = time.monotonic(), self._ring.written
        if written != self._last_written:
            self._last_written, self._last_arrival = written, now
        elif now - self._last_arrival > self.stall_seconds:
            raise AudioError(
                f"{self.name} delivered no audio for {self.stall_seconds:g} s: the device is stuck or gone; check it"
            )


class FileSource(Source):
    """An audio file played as if captured: `block` frames at a time through the ring.

    Real time (default): blocks arrive at wall-clock pace and a slow consumer loses the oldest
    audio, like a microphone. `fast=True`: blocks arrive as fast as the consumer reads, nothing
    dropped. Channels are mixed down and NaN/inf samples raise AudioError, as in read_audio.
    A file cut short or damaged part-way delivers what decodes, then raises AudioError saying where
    (listen scores what came before, then reports the failure: the file was not heard to its end);
    one shorter than `frame_seconds` is padded with silence to it.
    """

    beyond_cause = "a float file above 0 dBFS, or a broken encode"
    beyond_fix = "scale it down (e.g. sox --norm=-1 IN OUT)"

    def __init__(
        self,
        path: str | Path,
        *,
        sample_rate: int = MODEL_RATE,
        fast: bool = False,
        block: int = 1024,
        buffer_seconds: float = 5.0,
        frame_seconds: float | None = None,
    ):
        if block <= 0:
            raise ValueError(f"block must be a positive number of frames, got {block}")
        self.path = Path(path)
        self._decoder = Decoder(self.path)  # AudioError saying what the path is when it cannot be read
        super().__init__(
            f"audio file {self.path}", self._decoder.rate, self._decoder.channels, sample_rate, buffer_seconds, block
        )
        self.fast, self.block = fast, block
        self.frame_seconds = frame_seconds  # one analysis frame: a shorter file is padded to it, with a warning
        self._padded = False

    def _stop_producer(self) -> None:
        super()._stop_producer()
        self._decoder.close()

    def _produce(self) -> None:
        t0, frames = time.monotonic(), 0
        blocks = self._decoder.blocks(self.block)
        while not self._stopping.is_set():
            block = next(blocks, None)
            if block is None:  # the end, or a damaged file's last decodable block
                block = self._end_of_file(frames)
                if block is None:
                    return
            bad = ~np.isfinite(block)
            if bad.any():
                good = int(np.argmax(bad.any(axis=1)))
                if self.fast:  # the samples before the bad one are delivered (and scored) first
                    self._put_waiting(block[:good])
                else:
                    self._ring.write(block[:good])
                first = frames + good
                raise AudioError(
                    f"audio file {self.path} holds NaN or infinite samples, the first at "
                    f"{first / self.input_rate:.3f} s: the file is corrupt; re-export it"
                )
            self._check_beyond_full_scale(block, frames)
            frames += len(block)
            if self.fast:
                if not self._put_waiting(block):
                    return
            else:  # the block is "captured" when its last frame has played
                if self._stopping.wait(max(0.0, t0 + frames / self.input_rate - time.monotonic())):
                    return
                self._ring.write(block)

    def _end_of_file(self, frames: int) -> np.ndarray | None:
        """At the end of what decodes: the silence that pads a file shorter than one frame (once),
        else None with `end_reason` set; AudioError where the file was cut short or damaged."""
        short = 0 if self.frame_seconds is None else math.ceil(self.frame_seconds * self.input_rate) - frames
        if short > 0 and not self._padded:
            assert self.frame_seconds is not None  # short is 0 without frame_seconds
            self._padded = True
            log.warning("%s", too_short_warning(self.path, frames / self.input_rate, self.frame_seconds))
            return np.zeros((short, self.channels), dtype=np.float32)
        damaged = self._decoder.warning()
        if damaged:
            raise AudioError(f"{damaged}, and no more: the file is cut short or damaged; copy or export it again")
        self.end_reason = f"end of {self.name}"
        return None


# What a container on stdin starts with: --input - reads raw PCM, so its bytes would be heard as samples.
CONTAINERS = {
    b"RIFF": "a WAV header",
    b"RF64": "a WAV header",
    b"fLaC": "a FLAC stream",
    b"OggS": "an Ogg stream",
    b"ID3\x02": "an MP3 stream",
    b"ID3\x03": "an MP3 stream",
    b"ID3\x04": "an MP3 stream",
    b"FORM": "an AIFF file (big-endian)",
    b".snd": "an AU file (big-endian)",
    b"caff": "a CAF file",
}


def check_raw(head: bytes) -> None:
    """The first bytes read from stdin: a WAV header (a few samples of noise, then the audio: a
    warning) or a compressed stream (nothing but noise: an AudioError) is not raw PCM."""
    what = CONTAINERS.get(head[:4])
    if what is None:
        return
    fix = "send raw PCM (arecord -t raw ..., ffmpeg ... -f s16le -), or give the file itself as --input FILE"
    if what == "a WAV header":
        log.warning(
            "stdin starts with %s: --input - reads raw PCM, so its 44 or more bytes are heard as samples "
            "and its rate and format are not read (--rate, --format, --channels are); %s",
            what,
            fix,
        )
        return
    raise AudioError(f"stdin holds {what}, not raw PCM: it would be heard as noise; {fix}")


class StdinSource(Source):
    """Raw interleaved PCM from a byte stream (default: stdin) at `rate` Hz.

    `format`: s16le, s32le or f32le. NaN/inf floats are replaced by 0 and counted in
    `nonfinite_samples`, with a warning at most once a second: a live stream should not die of
    a few bad values, but they must not reach the model (one NaN spoils a whole window).
    When the consumer falls behind, reading waits: the pipe passes the wait on to its writer.
    """

    beyond_cause = "f32le's full scale is 1.0"
    beyond_fix = "have the sender scale its float samples into -1..1 (sox --norm=-1, ffmpeg -af volume=...)"

    def __init__(
        self,
        rate: int,
        *,
        format: str = "s16le",
        channels: int = 1,
        sample_rate: int = MODEL_RATE,
        block: int = 1024,
        buffer_seconds: float = 5.0,
        stream: BinaryIO | None = None,
    ):
        if not isinstance(rate, int) or rate <= 0:
            raise AudioError(
                f"stdin sample rate must be a positive integer (Hz), got {rate!r}: "
                "pass the rate the raw audio was recorded at, e.g. 16000"
            )
        if format not in STDIN_FORMATS:
            raise AudioError(
                f"stdin sample format {format!r} is not supported; use one of "
                f"{', '.join(STDIN_FORMATS)} (little-endian)"
            )
        if channels <= 0 or block <= 0:
            raise AudioError(f"stdin channels and block must be positive, got {channels} and {block}")
        super().__init__("stdin", rate, channels, sample_rate, buffer_seconds, block)
        self.format, self.block = format, block
        self.nonfinite_samples = 0
        self.frames_read = 0  # whole frames read (a frame or two may resample to no sample yet)
        self._stream, self._fd = (stream, None) if stream is not None else _stdin()
        self._nonfinite_log = _Every(NONFINITE_LOG_SECONDS)
        self._nonfinite_unlogged = 0

    def _produce(self) -> None:
        dtype, scale = STDIN_FORMATS[self.format]
        frame_bytes = np.dtype(dtype).itemsize * self.channels
        rest, frames = b"", 0
        head: bytes | None = b""  # the first bytes, until check_raw has 4 of them
        while not self._stopping.is_set():
            try:
                data = self._read(self.block * frame_bytes)
            except OSError as err:
                raise AudioError(f"cannot read raw audio from stdin: {err}") from None
            if data is None:  # stopped while waiting for data
                return
            if not data:
                break
            if head is not None:
                head += data[:4]
                if len(head) >= 4:
                    check_raw(head)
                    head = None
            data = rest + data
            whole = len(data) - len(data) % frame_bytes
            rest = data[whole:]
            block = np.frombuffer(data[:whole], dtype=dtype).astype(np.float32).reshape(-1, self.channels)
            if scale != 1.0:
                block *= np.float32(scale)
            self._replace_nonfinite(block)
            if scale == 1.0:  # float samples can go beyond full scale
                self._check_beyond_full_scale(block, frames)
            frames += len(block)
            self.frames_read = frames
            if block.size and not self._put_waiting(block):
                return
        if rest:
            log.warning("stdin ended inside a frame: dropped %d trailing byte(s)", len(rest))
        self.end_reason = "stdin closed"

    def _read(self, size: int) -> bytes | None:
        """Up to `size` bytes (b"" at the end of the stream; None once stopped).

        Real stdin is read from its file descriptor, waiting in select() with a timeout: never
        inside the buffered reader, whose lock a thread blocked in read() would hold at exit
        (Python then aborts with "_enter_buffered_busy" when SIGINT/SIGTERM stop an idle pipe)."""
        if self._fd is None:
            return self._stream.read(size)
        while not self._stopping.is_set():
            ready, _, _ = select.select([self._fd], [], [], STDIN_POLL_SECONDS)
            if ready:
                return os.read(self._fd, size)
        return None

    def _replace_nonfinite(self, block: np.ndarray) -> None:
        bad = ~np.isfinite(block)
        count = int(np.count_nonzero(bad))
        if not count:
            return
        block[bad] = 0.0
        self.nonfinite_samples += count
        self._nonfinite_unlogged += count
        if self._nonfinite_log():
            log.warning(
                "stdin: replaced %d NaN or infinite sample(s) by 0 (%d so far): the sender writes corrupt %s data",
                self._nonfinite_unlogged,
                self.nonfinite_samples,
                self.format,
            )
            self._nonfinite_unlogged = 0


def _stdin() -> tuple[BinaryIO, int | None]:
    """The process's stdin as (stream, file descriptor); the descriptor is None when stdin is
    not a real file (a test's in-memory stream). AudioError when stdin is closed (`<&-`)."""
    if sys.stdin is None:
        raise AudioError(
            "stdin is closed: there is no raw audio to read; pipe audio into it, e.g. "
            "`arecord -t raw -f S16_LE -r 16000 -c 1 | semanticac-edge listen --labels urban --input - "
            "--rate 16000`, or use --input FILE"
        )
    try:
        return sys.stdin.buffer, sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        # without .buffer, stdin is already a binary stream (a test's in-memory one)
        return getattr(sys.stdin, "buffer", cast(BinaryIO, sys.stdin)), None
