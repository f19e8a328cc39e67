"""`semanticac-edge demo`: listen on a machine with nothing but the package.

With a microphone the demo is `listen` on it. Without one (no PortAudio, no capture device)
it listens to a demo scene instead, a WAV file made once and kept in the user cache
(`$XDG_CACHE_HOME/semanticac-edge/demo/`, named by a hash of its recipe):

- real clips, when `$SEMANTICAC_DATA/us8k/meta.csv` is there: the first clip (by file name,
  salience 1 preferred) of six urban classes in UrbanSound8K's fold 2, in REAL_CLASSES order,
  with 1.5 s of quiet noise between them;
- else a scene synthesised here (numpy, seeded): quiet pink noise throughout, and a siren,
  a car horn, a jackhammer, gun shots, a dog and an idling engine with 1-3 s of background
  between them (SYNTH_SCENE).

Either way one list of `Segment`s is both what is written into the audio and what the demo
tells the user it is. `listen` itself never falls back to a file: a field install without
a microphone must fail loudly.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shlex
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import soundfile as sf

from edge.errors import AudioError
from edge.schema import NUMBER, Fields, read_json

log = logging.getLogger(__name__)

DATA_ENV = "SEMANTICAC_DATA"
SCENE_RATE = 32000  # the HTS-AT model rate; a 16 kHz model's FileSource resamples it
PEAK = 0.7  # the synthesised scene's peak (-3 dBFS): loud enough, far from clipping
FULL_SCALE_MARGIN = 0.95  # a real scene louder than this is scaled down to it
BACKGROUND_RMS = 0.004  # quiet pink noise (-48 dBFS): a calm street far away
SEED = 20240611


# ---------------------------------------------------------------------------------------------
# The scene description: one list for the audio and for the log


@dataclass(frozen=True)
class Segment:
    """One sound of a scene, [start, end) seconds into it."""

    start: float
    end: float
    label: str  # the urban label it stands for
    what: str  # what it is, for people: "synthesised siren (wail 600-1500 Hz)"

    def describe(self) -> str:
        return f"{self.start:.1f}-{self.end:.1f} s  {self.what}"


# ---------------------------------------------------------------------------------------------
# Is there a microphone?


def has_input_device() -> tuple[bool, str]:
    """Whether PortAudio sees a capture device, and why (for the log)."""
    try:
        from edge.capture.sources import list_input_devices

        devices = list_input_devices(rescan=True)
    except ImportError as err:  # sounddevice or the PortAudio library is missing
        return False, str(err)
    except Exception as err:  # sounddevice.PortAudioError: PortAudio cannot enumerate its host APIs
        return False, f"PortAudio cannot list devices ({type(err).__name__}: {err})"
    if not devices:
        return False, "PortAudio sees no capture device"
    default = next((d for d in devices if d.is_default), devices[0])
    return True, f"input device {default.index} {default.name!r} ({len(devices)} in all)"


# ---------------------------------------------------------------------------------------------
# Synthesised sounds: f(seconds, rate, rng) -> float32 samples, peak about 1


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / max(float(np.abs(x).max()), 1e-12)).astype(np.float32)


def _fade(x: np.ndarray, rate: int, seconds: float = 0.02) -> np.ndarray:
    """Raised-cosine fade in and out: no clicks at the edges."""
    n = min(int(seconds * rate), x.size // 2)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / max(n, 1))
    x = x.copy()
    x[:n] *= ramp
    x[x.size - n :] *= ramp[::-1]
    return x


def _band(x: np.ndarray, rate: int, low: float, high: float) -> np.ndarray:
    """Brick-wall band-pass in the frequency domain (whole signal at once: fine offline)."""
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1.0 / rate)
    spectrum[(freqs < low) | (freqs > high)] = 0
    return np.fft.irfft(spectrum, n=x.size)


def pink_noise(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with a 1/f power spectrum (-3 dB per octave) above 20 Hz, unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum *= 1.0 / np.sqrt(np.maximum(freqs, 20.0))
    spectrum[freqs < 20.0] = 0
    x = np.fft.irfft(spectrum, n=n)
    return (x / max(float(np.sqrt(np.mean(x**2))), 1e-12)).astype(np.float32)


def _harmonic(freq: np.ndarray, rate: int, amplitudes) -> np.ndarray:
    """A tone following the instantaneous frequency `freq` (Hz, per sample), with harmonics."""
    phase = 2 * np.pi * np.cumsum(freq) / rate
    return sum(a * np.sin((k + 1) * phase) for k, a in enumerate(amplitudes))


SIREN_BAND = (600.0, 1500.0)  # Hz, the fundamental's sweep
SIREN_CYCLE = 4.0  # seconds per rise and fall: an American "wail"


def siren(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Electronic wail: a square-ish tone (odd harmonics) rising and falling over SIREN_BAND."""
    t = np.arange(int(seconds * rate)) / rate
    low, high = SIREN_BAND
    freq = low + (high - low) * (0.5 - 0.5 * np.cos(2 * np.pi * t / SIREN_CYCLE))
    tone = _harmonic(freq, rate, [1.0, 0.0, 0.33, 0.0, 0.2, 0.0, 0.14])
    return _fade(_normalise(tone), rate, 0.3)


HORN_TONES = (400.0, 500.0)  # Hz: the usual two-tone car horn, a major third apart
HORN_PATTERN = ((0.0, 1.3), (1.6, 2.0), (2.3, 3.8))  # honks, seconds from the segment start


def car_horn(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Two harmonic-rich tones, slightly detuned, honked in HORN_PATTERN."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    tone = sum(
        (
            _harmonic(np.full(n, f * (1 + 0.003 * i)), rate, [1.0 / k for k in range(1, 13)])
            for i, f in enumerate(HORN_TONES)
        ),
        np.zeros(n),
    )
    tone = np.tanh(1.5 * _normalise(tone))  # the horn's membrane clips: brighter, buzzier
    gate = np.zeros(n)
    for start, end in HORN_PATTERN:
        inside = (t >= start) & (t < min(end, seconds))
        gate[inside] = _fade(np.ones(int(inside.sum())), rate, 0.02)
    return _normalise(tone * gate)


JACKHAMMER_RATE = 12.0  # blows per second


def jackhammer(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Rapid blows: a short burst of band-passed noise and a faint metallic ring at each, ~12 per second."""
    n = int(seconds * rate)
    out = np.zeros(n)
    blow = int(0.06 * rate)
    decay = np.exp(-np.arange(blow) / (0.012 * rate))
    t_blow = np.arange(blow) / rate
    ring = np.sin(2 * np.pi * 1800 * t_blow) + 0.6 * np.sin(2 * np.pi * 2900 * t_blow)
    period = 1.0 / JACKHAMMER_RATE
    at = 0.0
    while at < seconds - 0.05:
        i = int(at * rate)
        burst = (rng.standard_normal(blow) + 0.2 * ring) * decay
        out[i : i + blow] += burst[: n - i]
        at += period * rng.uniform(0.9, 1.1)
    out = _band(out, rate, 80.0, 5000.0)
    return _fade(_normalise(out), rate)


GUN_SHOTS = (0.1, 1.4, 2.2)  # seconds from the segment start


def _at_times(seconds: float, rate: int, times: tuple[float, ...], length: float, make) -> np.ndarray:
    """`seconds` of audio holding make(t) (t: the sound's own time axis, at most `length` s) at each of `times`."""
    n = int(seconds * rate)
    out = np.zeros(n)
    for at in times:
        i = int(at * rate)
        m = min(int(length * rate), n - i)
        out[i : i + m] += make(np.arange(m) / rate)
    return out


def gun_shots(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Shots at GUN_SHOTS: a sharp broadband crack, a low boom and a decaying echo."""

    def shot(t):
        crack = rng.standard_normal(t.size) * np.exp(-t / 0.012)
        boom = _band(rng.standard_normal(t.size), rate, 40.0, 400.0) * 4 * np.exp(-t / 0.06)
        echo = _band(rng.standard_normal(t.size), rate, 100.0, 3000.0) * 0.3 * np.exp(-t / 0.25)
        return crack + boom + echo

    return _normalise(_at_times(seconds, rate, GUN_SHOTS, 1.0, shot))


DOG_BARKS = (0.1, 0.5, 1.5, 1.9, 2.9)  # seconds from the segment start


def dog_barks(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Barks at DOG_BARKS: short harmonic yaps, pitch falling from ~700 to ~400 Hz, a rough onset."""
    amps = [1.0, 0.8, 0.9, 0.5, 0.4, 0.25, 0.15, 0.1]  # energy around 1-2 kHz: the open mouth

    def bark(t):
        voice = _harmonic(700.0 - 300.0 * t / 0.22, rate, amps)
        envelope = (1 - np.exp(-t / 0.005)) * np.exp(-t / 0.07)
        return (voice + 0.6 * rng.standard_normal(t.size) * np.exp(-t / 0.02)) * envelope

    return _normalise(_at_times(seconds, rate, DOG_BARKS, 0.22, bark))


ENGINE_FIRING = 26.0  # Hz: a four-cylinder idling at ~780 rpm fires twice per turn


def engine_idling(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A low, steady rumble: a pulse train at the firing rate, low-passed, with jitter and noise."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    freq = ENGINE_FIRING * (1 + 0.02 * np.sin(2 * np.pi * 0.7 * t))
    phase = np.cumsum(freq) / rate
    pulses = np.exp(-((phase % 1.0) / 0.08)) * (1 + 0.2 * rng.standard_normal(n))
    rumble = _band(pulses, rate, 20.0, 1500.0) + 0.15 * _band(rng.standard_normal(n), rate, 50.0, 2000.0)
    return _fade(_normalise(rumble), rate, 0.3)


@dataclass(frozen=True)
class Sound:
    """One entry of a synthesised scene's recipe."""

    label: str  # an urban label (configs/labels/urban.yaml)
    what: str
    seconds: float
    make: Callable[[float, int, np.random.Generator], np.ndarray]
    level: float = 1.0  # relative to the scene's loudest sound
    gap_before: float = 2.0  # seconds of background before it


# The synthesised scene. Each sound lasts at least a 5 s window where it can, so a window
# holds it alone; the quiet stretches between them show what the model says of background.
SYNTH_LEAD = 1.0  # background before the first sound
SYNTH_TAIL = 1.5  # and after the last
SYNTH_SCENE = (
    Sound("siren", f"synthesised siren (wail {SIREN_BAND[0]:.0f}-{SIREN_BAND[1]:.0f} Hz)", 6.0, siren),
    Sound(
        "car_horn",
        f"synthesised car horn (two tones, {HORN_TONES[0]:.0f}/{HORN_TONES[1]:.0f} Hz, {len(HORN_PATTERN)} honks)",
        4.0,
        car_horn,
        gap_before=2.0,
    ),
    Sound("jackhammer", f"synthesised jackhammer ({JACKHAMMER_RATE:.0f} blows/s)", 5.0, jackhammer, gap_before=1.5),
    # 2.5 s of background on each side: with 2, the windows that hold the shots held the jackhammer
    # or the barks too, and no three in a row scored gun_shot over its threshold (0.79)
    Sound("gun_shot", f"synthesised gun shots ({len(GUN_SHOTS)})", 3.0, gun_shots, gap_before=2.5),
    Sound("dog_bark", f"synthesised dog barks ({len(DOG_BARKS)})", 3.2, dog_barks, gap_before=2.5),
    Sound(
        "engine_idling",
        f"synthesised idling engine ({ENGINE_FIRING:.0f} Hz firing)",
        4.0,
        engine_idling,
        level=0.6,
        gap_before=1.5,
    ),
)


def synth_segments(scene=SYNTH_SCENE) -> tuple[list[Segment], float]:
    """Where each sound of the recipe goes, and the scene's length in seconds."""
    segments, at = [], SYNTH_LEAD
    for i, sound in enumerate(scene):
        if i:
            at += sound.gap_before
        segments.append(Segment(round(at, 3), round(at + sound.seconds, 3), sound.label, sound.what))
        at += sound.seconds
    return segments, round(at + SYNTH_TAIL, 3)


def synthesise_scene(rate: int = SCENE_RATE, scene=SYNTH_SCENE, seed: int = SEED) -> tuple[np.ndarray, list[Segment]]:
    """The synthesised scene: float32 mono at `rate`, peak PEAK, and its segments."""
    segments, seconds = synth_segments(scene)
    rng = np.random.default_rng(seed)
    out = BACKGROUND_RMS * pink_noise(round(seconds * rate), rate, rng)
    loud = np.zeros_like(out)
    for sound, seg in zip(scene, segments):
        samples = sound.level * sound.make(sound.seconds, rate, rng)
        start = round(seg.start * rate)
        loud[start : start + samples.size] += samples[: loud.size - start]
    # The sounds to PEAK; the background stays where it is (it is quiet: the sum stays below 1).
    out += PEAK * loud / max(float(np.abs(loud).max()), 1e-12)
    return out.astype(np.float32), segments


# ---------------------------------------------------------------------------------------------
# Real clips: UrbanSound8K


REAL_FOLD = "2"
REAL_CLASSES = ("siren", "dog_bark", "car_horn", "jackhammer", "street_music", "children_playing")
REAL_GAP = 1.5  # seconds of quiet noise between clips, and after the last


@dataclass(frozen=True)
class Clip:
    path: Path  # the audio file
    name: str  # "fold2/102871-8-0-0.ogg"
    label: str


def choose_clips(data: Path, classes=REAL_CLASSES, fold: str = REAL_FOLD) -> list[Clip]:
    """The first clip of each class in `fold` by file name, salience 1 (foreground) first.

    Raises AudioError naming what is missing: the CSV, a column, a class or a file.
    """
    meta = data / "us8k" / "meta.csv"
    try:
        with open(meta, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise AudioError(f"cannot read {meta}: {err}") from None
    needed = {"slice_file_name", "fold", "class", "salience"}
    if rows and not needed <= set(rows[0]):
        raise AudioError(f"{meta} lacks column(s) {sorted(needed - set(rows[0]))}: is it UrbanSound8K's metadata CSV?")
    clips = []
    for label in classes:
        found = sorted(
            (r for r in rows if r["fold"] == fold and r["class"] == label),
            key=lambda r: (r["salience"] != "1", r["slice_file_name"]),
        )
        if not found:
            raise AudioError(f"{meta} lists no {label!r} clip in fold {fold}")
        name = f"fold{fold}/{found[0]['slice_file_name']}"
        path = data / "us8k" / "audio" / name
        if not path.is_file():
            raise AudioError(f"{path} ({label}) is listed in {meta} but missing")
        clips.append(Clip(path, name, label))
    return clips


def real_scene(clips: list[Clip], rate: int = SCENE_RATE, seed: int = SEED) -> tuple[np.ndarray, list[Segment]]:
    """The clips in order, REAL_GAP seconds of quiet pink noise between them and after the last."""
    from edge.capture.audio import read_audio

    rng = np.random.default_rng(seed)
    gap = round(REAL_GAP * rate)
    parts, segments, at = [], [], 0
    for i, clip in enumerate(clips):
        if i:
            parts.append(BACKGROUND_RMS * pink_noise(gap, rate, rng))
            at += gap
        samples = read_audio(clip.path, rate)
        parts.append(samples)
        segments.append(
            Segment(
                at / rate,
                (at + samples.size) / rate,
                clip.label,  # exact: sample = start * rate
                f"UrbanSound8K {clip.name} ({clip.label})",
            )
        )
        at += samples.size
    parts.append(BACKGROUND_RMS * pink_noise(gap, rate, rng))  # a tail: windows that end after the last clip
    out = np.concatenate(parts)
    peak = float(np.abs(out).max())
    if peak > FULL_SCALE_MARGIN:  # the recordings as they are, unless a 16-bit file would clip them
        out *= FULL_SCALE_MARGIN / peak
    return out.astype(np.float32), segments


# ---------------------------------------------------------------------------------------------
# The cached scene file


def demo_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/semanticac-edge/demo`: the user cache the label embeddings use."""
    from edge.fsutil import cache_dir

    return cache_dir("demo")  # "demo" is a folder name here, not a model id


def _recipe_key(recipe: dict) -> str:
    """A hash of what makes the scene: its inputs and this module's code (a change rebuilds it)."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def read_scene_sidecar(path: Path) -> list[Segment]:
    """The segments of a cached scene's JSON sidecar; AudioError naming the file and the field."""
    scene = Fields(read_json(path, AudioError, what="the demo scene sidecar"), f"demo scene sidecar {path}", AudioError)
    scene.unknown(("rate", "segments"))
    scene.positive("rate", "the scene's sample rate in Hz", kinds=int)
    segments = []
    for i, item in enumerate(scene.get("segments", list, "a list of {start, end, label, what}")):
        segment = Fields(item, f"demo scene sidecar {path} segments[{i}]", AudioError)
        segment.unknown(f.name for f in fields(Segment))
        segments.append(
            Segment(
                start=float(segment.get("start", NUMBER, "seconds into the scene")),
                end=float(segment.get("end", NUMBER, "seconds into the scene")),
                label=segment.text("label", "an urban label"),
                what=segment.text("what", "a description of the sound"),
            )
        )
    return segments


def _cached(wav: Path, sidecar: Path) -> tuple[Path, list[Segment]] | None:
    if not (wav.is_file() and sidecar.is_file()):
        return None
    from edge.capture.audio import Decoder

    try:
        segments = read_scene_sidecar(sidecar)
        decoder = Decoder(wav)  # libsndfile's header notes say where a file was cut short
        decoder.close()
        seconds, scene = decoder.file.frames / decoder.rate, max((s.end for s in segments), default=0.0)
        damage = decoder.damage or (f"{seconds:.3f} s, its scene {scene:.3f} s" if seconds < scene else None)
        if damage is not None:
            raise AudioError(f"cut short: {damage}")
    except (AudioError, OSError, RuntimeError) as err:
        log.info("demo scene %s is unreadable (%s): making it again", wav, err)
        return None
    log.info("demo scene from the cache: %s", wav)
    return wav, segments


def _write(samples: np.ndarray, rate: int, segments: list[Segment], wav: Path, sidecar: Path) -> None:
    from edge.fsutil import atomic_path, atomic_write_text

    # The sidecar first, the audio last: a scene is only used when both are there.
    atomic_write_text(sidecar, json.dumps({"rate": rate, "segments": [asdict(s) for s in segments]}, indent=1))
    with atomic_path(wav, suffix=".wav") as tmp:
        sf.write(str(tmp), samples, rate, subtype="PCM_16", format="WAV")
    log.info("wrote demo scene %s", wav)
    kind = wav.stem.split("-")[0]
    for old in wav.parent.glob(f"{kind}-*"):  # scenes of an older recipe: never used again
        if old.stem != wav.stem and old.suffix in (".wav", ".json"):
            old.unlink(missing_ok=True)


def demo_audio(
    data: str | Path | None = None, cache: str | Path | None = None, rate: int = SCENE_RATE
) -> tuple[Path, list[Segment]]:
    """The demo scene WAV and its segments: real UrbanSound8K clips from `data` (default
    `$SEMANTICAC_DATA`) when its us8k/meta.csv is there, else the synthesised scene.

    Made once into `cache` (default demo_cache_dir()), reused while its recipe is unchanged.
    Missing or unreadable real data falls back to the synthesised scene with a warning.
    """
    cache = Path(cache) if cache is not None else demo_cache_dir()
    data = data if data is not None else os.environ.get(DATA_ENV) or None
    try:
        return _demo_audio(data, cache, rate)
    except OSError as err:  # a read-only home, a full disk: the demo still runs
        fallback = Path(tempfile.gettempdir()) / f"semanticac-edge-demo-{os.getuid()}"
        log.warning("cannot write the demo scene into %s (%s): using %s", cache, err, fallback)
        return _demo_audio(data, fallback, rate)


def _demo_audio(data: str | Path | None, cache: Path, rate: int) -> tuple[Path, list[Segment]]:
    if data is None:
        log.info(
            "$%s is not set: the demo scene is synthesised (set it to a folder holding us8k/ for one of real "
            "UrbanSound8K clips: README, Data)",
            DATA_ENV,
        )
    elif not (Path(data) / "us8k" / "meta.csv").is_file():
        log.info("no %s: the demo scene is synthesised", Path(data) / "us8k" / "meta.csv")
    else:
        try:
            return _real_demo_audio(Path(data), cache, rate)
        except AudioError as err:
            log.warning("cannot make the demo scene from real clips (%s): using the synthesised scene", err)
    return _synth_demo_audio(cache, rate)


def _synth_demo_audio(cache: Path, rate: int) -> tuple[Path, list[Segment]]:
    recipe = {
        "rate": rate,
        "seed": SEED,
        "scene": [(s.label, s.what, s.seconds, s.make.__name__, s.level, s.gap_before) for s in SYNTH_SCENE],
    }
    return _scene_file(cache, "synth", recipe, lambda: synthesise_scene(rate), rate)


def _real_demo_audio(data: Path, cache: Path, rate: int) -> tuple[Path, list[Segment]]:
    clips = choose_clips(data)
    recipe = {
        "rate": rate,
        "seed": SEED,
        "gap": REAL_GAP,
        "clips": [(c.name, c.label, c.path.stat().st_size, c.path.stat().st_mtime_ns) for c in clips],
    }
    return _scene_file(cache, "us8k", recipe, lambda: real_scene(clips, rate), rate)


def _scene_file(cache: Path, kind: str, recipe: dict, make, rate: int) -> tuple[Path, list[Segment]]:
    """The cached scene of `recipe` (`cache`/<kind>-<hash>.wav + .json), made by `make()` when absent."""
    key = _recipe_key({"kind": kind, **recipe})
    wav, sidecar = cache / f"{kind}-{key}.wav", cache / f"{kind}-{key}.json"
    found = _cached(wav, sidecar)
    if found:
        return found
    samples, segments = make()
    _write(samples, rate, segments, wav, sidecar)
    return wav, segments


# ---------------------------------------------------------------------------------------------
# What the demo listens to

INPUT_KINDS = ("auto", "microphone", "file")


@dataclass(frozen=True)
class Scene:
    """The demo scene file the demo listens to, and its sounds."""

    path: Path
    segments: list[Segment]


def program() -> str:
    """How to type `semanticac-edge` here: its name when it is on PATH, else its path (`make demo`
    runs it from .venv-edge/bin, which a user's shell does not have on PATH)."""
    import shutil
    import sys

    if shutil.which("semanticac-edge"):
        return "semanticac-edge"
    beside = Path(sys.executable).parent / "semanticac-edge"
    return str(beside) if beside.is_file() else "semanticac-edge"


def equivalent_command(labels_spec: str, bundle: str | None, path: Path | None, fast: bool) -> str:
    """The `semanticac-edge listen` command line that does what the demo does."""
    args = [program(), "listen", "--labels", labels_spec]
    if bundle:
        args += ["--bundle", str(bundle)]
    if path is not None:
        args += ["--input", str(path)] + (["--fast"] if fast else [])
    return shlex.join(args)


def choose_demo_input(
    kind: str = "auto", labels_spec: str = "urban", bundle: str | None = None, fast: bool = False
) -> Scene | None:
    """What the demo listens to: None for the default microphone, else the demo scene.

    `kind` "auto" asks PortAudio for a capture device; "microphone" and "file" force one
    (tests, and a user who wants the scene with a microphone plugged in). Logs what it chose,
    the scene's segments and the equivalent `listen` command.
    """
    if kind not in INPUT_KINDS:
        raise ValueError(f"demo input kind {kind!r} is not one of {', '.join(INPUT_KINDS)}")
    why = f"--input-kind {kind}"
    if kind == "auto":
        found, why = has_input_device()
        kind = "microphone" if found else "file"
    if kind == "microphone":
        log.info(
            "microphone (%s): listening to it until Ctrl-C, the same as: %s",
            why,
            equivalent_command(labels_spec, bundle, None, False),
        )
        if fast:
            log.info("--fast applies to the demo scene file only: ignored with a microphone")
        return None
    log.info(
        "no microphone (%s): listening to a demo scene instead (with one plugged in: `%s devices`, then "
        "`%s`, with --device N for another than the default)",
        why,
        program(),
        equivalent_command(labels_spec, bundle, None, False),
    )
    path, segments = demo_audio()
    seconds = sf.info(str(path)).duration
    log.info(
        "listening to the demo scene %s (%.1f s in real time; ends with it%s):",
        path,
        seconds,
        "" if fast else "; --fast reads it at once",
    )
    for segment in segments:
        log.info("  %s", segment.describe())
    log.info("the same as: %s", equivalent_command(labels_spec, bundle, path, fast))
    return Scene(path, segments)


def scene_summary(segments: Sequence[Segment], started: Mapping[str, int], options) -> list[str]:
    """What the demo says at the end: which of the scene's sounds started an event of their label,
    and why a sound can show in the windows without one (`options`: the listen options)."""
    labels = list(dict.fromkeys(s.label for s in segments))
    heard = [label for label in labels if started.get(label)]
    missed = [label for label in labels if not started.get(label)]
    lines = [
        "events started for the scene's sounds: "
        + (", ".join(heard) or "none")
        + (f"; none for {', '.join(missed)}" if missed else "")
    ]
    if missed:
        lines.append(
            f"an event starts when a label's score, averaged over {options.smooth} windows, stays at or above its "
            f"threshold for {options.min_duration:g} s: a sound shorter than that, or under its label's threshold "
            f"(`semanticac-edge labels {options.labels}` lists them), shows in the windows without an event"
        )
    return lines
