"""Unlabelled background audio: speech, silence, noise, hum, room tone and street scenes.

Clips of none of the 58 trained classes (or, for the street scenes, of a few of them, see
below) that the AudioSet teacher (train/teacher.py) scores and the student learns from
through distillation only: they carry NO class label. Without them the student never hears
silence, speech or plain noise, and names them with a trained class ("car_horn" for silence).

Kinds (KINDS; default shares in DEFAULT_WEIGHTS, drawn per item):

    speech        espeak-ng sentences (en, en-us, en-gb-x-rp, de, fr, es, it, pt, nl; several
                  voice variants, speeds 120-210 wpm, pitches 25-75), one after another with
                  pauses, sometimes over a quiet noise bed (SNR 15-45 dB) or band-limited like a
                  telephone (300-3400 Hz); -45..-18 dBFS
    silence       digital silence (level -inf)
    near_silence  white or low-passed noise at -96..-72 dBFS (a quiet input, dither)
    white, pink, brown   coloured noise at -70..-20 dBFS
    hum           mains hum: 50 or 60 Hz and harmonics (odd ones stronger), a faint noise floor,
                  sometimes a slow beat; -70..-25 dBFS
    room_tone     noise low-passed at 150-2000 Hz (an air handler, a room), maybe faint hum;
                  -70..-30 dBFS
    street        5 s of edge/tools/demo.py's synthesised street scene (pink-noise street, siren,
                  car horn, jackhammer, gun shots, dog, idling engine; one of 8 seeded scenes, a
                  random window) over an extra noise bed (SNR 0-30 dB); -50..-15 dBFS. Its
                  `contains` column names the demo's sounds inside the window (urban labels):
                  these items are NOT free of trained classes; mask them out of anything that
                  treats background as "none of the classes" (BackgroundDataset.negative).

Levels are RMS dBFS of the whole 5 s item, 20 log10 RMS (as edge.features: a full-scale square
is 0 dBFS, a sine -3 dBFS). An item's level is drawn in its kind's range and then lowered,
if need be, so that its peak stays under PEAK_LIMIT; meta.csv holds the level measured on
the samples written (24-bit FLAC: exact to far better than 0.01 dB, even at -96 dBFS).

Determinism: item i of (seed, weights) draws its kind and its own seed from
default_rng([seed, i]), and everything else from default_rng(its seed): the same recipe gives
the same samples (espeak-ng runs as a fresh process per sentence; its output is deterministic
for one espeak-ng version, which is part of the recipe), and a longer list starts with the
shorter one. `make_item(kind, seed)` regenerates one item alone (meta.csv's seed column).

On disk: `<root>/background-<16 hex of the recipe>/` (written once, atomically: a folder
appears whole or not at all) holding `audio/<index>-<kind>.flac`, `meta.csv` (filename, kind,
level_dbfs, seed, contains, detail) and `recipe.json`. The recipe is count, seed, weights,
rate, seconds, FORMAT and the espeak-ng version; another recipe is another folder.

The training item: BackgroundDataset is a ClipDataset (same decode, waveform cache,
augmentation, tiling and log-mel), whose every target is BACKGROUND_TARGET = -1: a loss must
mask it (cross-entropy's ignore_index=-1) and CombinedDataset must pass it through unmapped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from edge.capture.audio import resample
from edge.errors import SemanticACError
from edge.features import Frontend
from edge.fsutil import atomic_directory, atomic_write_text
from train.data.datasets import Clip, ClipDataset

log = logging.getLogger(__name__)

FORMAT = 1  # bump when a generator changes what it makes: every recipe then gets a new folder
BACKGROUND_TARGET = -1  # the target of every background item: no class
DEFAULT_COUNT = 400  # about 1/8 of the 3387 labelled development clips
DEFAULT_SECONDS = 5.0  # the clip length of the demo recipes
DEFAULT_RATE = 16000
PEAK_LIMIT = 0.89  # -1 dBFS: an item is made quieter rather than clipped
SUBTYPE = "PCM_24"  # FLAC: near-silence at -96 dBFS keeps its level (16 bits: 1 LSB is -90 dBFS)
KINDS = ("speech", "silence", "near_silence", "white", "pink", "brown", "hum", "room_tone", "street")
DEFAULT_WEIGHTS = {"speech": 0.35, "silence": 0.04, "near_silence": 0.06, "white": 0.08, "pink": 0.09,
                   "brown": 0.08, "hum": 0.08, "room_tone": 0.08, "street": 0.14}
LEVELS = {"speech": (-45.0, -18.0), "near_silence": (-96.0, -72.0), "white": (-70.0, -20.0),
          "pink": (-70.0, -20.0), "brown": (-70.0, -20.0), "hum": (-70.0, -25.0), "room_tone": (-70.0, -30.0),
          "street": (-50.0, -15.0)}
ESPEAK = "espeak-ng"
ESPEAK_INSTALL = "apt-get install -y espeak-ng"  # Debian/Ubuntu; as root, or with sudo


class BackgroundError(SemanticACError, RuntimeError):
    """Background audio that cannot be made: espeak-ng missing or failing, a bad recipe."""


# ---------------------------------------------------------------------------------------------
# levels


def level_dbfs(x: np.ndarray) -> float:
    """20 log10 RMS (full-scale square 0 dBFS, sine -3 dBFS); digital silence -inf."""
    rms = math.sqrt(float(np.mean(np.square(np.asarray(x, np.float64))))) if np.size(x) else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def _at_level(x: np.ndarray, level: float) -> np.ndarray:
    """`x` scaled to RMS `level` dBFS, or lower if its peak would pass PEAK_LIMIT."""
    x = np.asarray(x, np.float64)
    current = level_dbfs(x)
    if not math.isfinite(current):
        return x.astype(np.float32)
    gain = 10.0 ** ((level - current) / 20.0)
    peak = float(np.abs(x).max()) * gain
    if peak > PEAK_LIMIT:
        gain *= PEAK_LIMIT / peak
    return (x * gain).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# noises (unit RMS, float64)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    x = x - x.mean()
    return x / max(math.sqrt(float(np.mean(x * x))), 1e-30)


def _shaped(n: int, rate: int, rng: np.random.Generator, exponent: float, low: float = 20.0) -> np.ndarray:
    """Gaussian noise with power ~ 1/f^exponent above `low` Hz (0: white, 1: pink, 2: brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum *= np.maximum(freqs, low) ** (-exponent / 2.0)
    spectrum[freqs < low] = 0
    return _unit(np.fft.irfft(spectrum, n=n))


def white_noise(n, rate, rng):
    return _unit(rng.standard_normal(n))


def pink_noise(n, rate, rng):
    return _shaped(n, rate, rng, 1.0)


def brown_noise(n, rate, rng):
    return _shaped(n, rate, rng, 2.0)


NOISES = {"white": white_noise, "pink": pink_noise, "brown": brown_noise}


def _lowpass(x: np.ndarray, rate: int, cutoff: float, order: int = 4) -> np.ndarray:
    """A smooth (Butterworth-shaped) low-pass in the frequency domain, whole signal at once."""
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1.0 / rate)
    spectrum /= np.sqrt(1.0 + (freqs / cutoff) ** (2 * order))
    return np.fft.irfft(spectrum, n=x.size)


def _bandpass(x: np.ndarray, rate: int, low: float, high: float) -> np.ndarray:
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1.0 / rate)
    spectrum /= np.sqrt(1.0 + (freqs / high) ** 8) * np.sqrt(1.0 + (low / np.maximum(freqs, 1e-3)) ** 8)
    return np.fft.irfft(spectrum, n=x.size)


def _fade(x: np.ndarray, rate: int, seconds: float = 0.01) -> np.ndarray:
    n = min(int(seconds * rate), x.size // 2)
    if n:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)
        x = x.copy()
        x[:n] *= ramp
        x[x.size - n:] *= ramp[::-1]
    return x


def hum(n: int, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    mains = float(rng.choice([50.0, 60.0]))
    t = np.arange(n) / rate
    harmonics = int(rng.integers(3, 13))
    out = np.zeros(n)
    for k in range(1, harmonics + 1):
        if k * mains >= rate / 2:
            break
        amplitude = rng.uniform(0.3, 1.0) * (1.0 if k % 2 else rng.uniform(0.1, 0.6)) / k ** rng.uniform(0.3, 1.2)
        freq = k * mains * (1 + rng.uniform(-0.002, 0.002))
        out += amplitude * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.3:  # a slow beat, as two transformers slightly apart
        out *= 1.0 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t)
    floor_db = rng.uniform(-40.0, -20.0)
    out = _unit(out) + 10 ** (floor_db / 20) * pink_noise(n, rate, rng)
    return out, f"{mains:.0f} Hz, {harmonics} harmonics, noise floor {floor_db:.0f} dB"


def room_tone(n: int, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    cutoff = float(np.exp(rng.uniform(np.log(150.0), np.log(2000.0))))
    base = pink_noise(n, rate, rng) if rng.random() < 0.6 else white_noise(n, rate, rng)
    out = _unit(_lowpass(base, rate, cutoff))
    detail = f"low-passed at {cutoff:.0f} Hz"
    if rng.random() < 0.3:
        buzz, _ = hum(n, rate, rng)
        out = out + 10 ** (rng.uniform(-30.0, -12.0) / 20) * buzz
        detail += " + faint hum"
    return out, detail


def near_silence(n: int, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if rng.random() < 0.5:
        return white_noise(n, rate, rng), "white"
    cutoff = float(rng.uniform(500.0, 4000.0))
    return _unit(_lowpass(pink_noise(n, rate, rng), rate, cutoff)), f"pink low-passed at {cutoff:.0f} Hz"


# ---------------------------------------------------------------------------------------------
# speech: espeak-ng


@dataclass(frozen=True)
class Voice:
    language: str  # espeak-ng's voice name (-v), e.g. en-us
    texts: str  # which sentence list it reads (SENTENCES key)


TRAIN_VOICES = (Voice("en", "en"), Voice("en-us", "en"), Voice("en-gb-x-rp", "en"), Voice("de", "de"),
                Voice("fr-fr", "fr"), Voice("es", "es"), Voice("it", "it"), Voice("pt", "pt"), Voice("nl", "nl"))
TRAIN_VARIANTS = ("", "m1", "m2", "m3", "m5", "m6", "f1", "f2", "f4", "klatt", "klatt3", "croak")
# evaluation: other accents and other variants than training ever uses
EVAL_VOICES = (Voice("en-gb-scotland", "en"), Voice("en-029", "en"), Voice("en-us-nyc", "en"),
               Voice("de", "de"), Voice("fr-fr", "fr"), Voice("es", "es"))
EVAL_VARIANTS = ("m4", "m7", "f3", "f5", "klatt2", "klatt4")

SENTENCES = {
    "en": (
        "The quick brown fox jumps over the lazy dog.",
        "Could you please call me back when you get this message?",
        "The meeting has been moved to three o'clock on Thursday.",
        "I think we should leave before the traffic gets any worse.",
        "Turn left at the next corner and keep going for two blocks.",
        "Do you know where I left my keys this morning?",
        "The weather forecast says it will rain all weekend.",
        "We are going to need a bigger table for the party.",
        "She said she would be here in about ten minutes.",
        "Please remember to switch off the lights when you leave.",
        "The train to the city centre departs from platform four.",
        "Can I have a coffee with milk and no sugar, please?",
        "He has been working on that project for almost a year.",
        "Let me know if you need any help with the shopping.",
        "The children are playing in the garden after school.",
        "It is much colder today than it was yesterday.",
        "I will send you the documents by the end of the day.",
        "Our flight was delayed by more than two hours.",
        "Would you like to come over for dinner on Saturday?",
        "The library closes at eight in the evening.",
        "Hello, this is a test of the public address system.",
        "Attention please, the store will close in fifteen minutes.",
        "My phone battery is almost empty, can I borrow a charger?",
        "We watched a really interesting documentary last night.",
        "The bus was so full that we decided to walk home.",
        "Everyone agreed that the new design looks much better.",
        "There is a small cafe just around the corner from here.",
        "I have no idea what time the concert is supposed to start.",
        "Good morning, and welcome to the weekly team update.",
        "Numbers one, two, three, four, five, six, seven, eight.",
        "If the printer jams again, just open the side panel.",
        "They moved to a new apartment near the river last spring.",
        "Don't forget to water the plants while I'm away.",
        "The results of the survey will be published next month.",
        "Excuse me, do you know how to get to the station?",
        "I'm sorry, I didn't quite catch what you just said.",
    ),
    "de": (
        "Guten Morgen, wie geht es Ihnen heute?",
        "Der Zug nach Berlin hat leider zwanzig Minuten Verspätung.",
        "Können Sie mir bitte sagen, wo der Bahnhof ist?",
        "Wir treffen uns morgen um drei Uhr im Café.",
        "Das Wetter soll am Wochenende schön werden.",
        "Ich habe meinen Schlüssel zu Hause vergessen.",
        "Die Kinder spielen nach der Schule im Park.",
        "Bitte schalten Sie das Licht aus, wenn Sie gehen.",
    ),
    "fr": (
        "Bonjour, je voudrais réserver une table pour deux personnes.",
        "Le train pour Lyon partira avec quinze minutes de retard.",
        "Est-ce que vous savez où se trouve la pharmacie?",
        "Il fait très beau aujourd'hui, allons nous promener.",
        "Nous avons rendez-vous demain à neuf heures.",
        "Je n'ai pas bien compris, pouvez-vous répéter?",
        "Les enfants jouent dans la cour de l'école.",
        "N'oubliez pas de fermer la porte en partant.",
    ),
    "es": (
        "Buenos días, ¿cómo está usted?",
        "El autobús llega cada diez minutos a esta parada.",
        "¿Podría decirme dónde está la estación de tren?",
        "Mañana vamos a comer con mis padres.",
        "Hace mucho calor esta tarde en la ciudad.",
        "No encuentro mis gafas por ninguna parte.",
        "La reunión empieza a las cuatro en punto.",
        "Por favor, apague las luces antes de salir.",
    ),
    "it": (
        "Buongiorno, vorrei un caffè e un cornetto, per favore.",
        "Il treno per Roma parte dal binario tre.",
        "Scusi, sa dov'è la fermata dell'autobus?",
        "Domani pioverà tutto il giorno.",
        "Ci vediamo stasera alle otto davanti al cinema.",
    ),
    "pt": (
        "Bom dia, tudo bem com você?",
        "O próximo comboio parte às dez e meia.",
        "Pode dizer-me onde fica a farmácia mais próxima?",
        "Amanhã vamos à praia com os nossos amigos.",
        "Esqueci-me do guarda-chuva em casa.",
    ),
    "nl": (
        "Goedemorgen, hoe gaat het met u?",
        "De trein naar Amsterdam vertrekt over vijf minuten.",
        "Weet u waar het station is?",
        "Morgen gaan we fietsen als het mooi weer is.",
        "Vergeet niet de deur op slot te doen.",
    ),
}
# held out: never spoken in training
EVAL_SENTENCES = {
    "en": (
        "The hotel receptionist handed me the wrong room key.",
        "Somebody parked a blue van right in front of the garage.",
        "Tomorrow's lecture on astronomy has been cancelled.",
        "My grandmother still writes letters with a fountain pen.",
        "Can you believe how expensive the tickets were this year?",
        "The museum offers free entry on the first Sunday of each month.",
        "I usually jog along the canal before breakfast.",
        "Please hold the line, your call is important to us.",
        "The soup needs a little more salt and pepper.",
        "We missed the last ferry and had to stay overnight.",
        "Your package will be delivered between nine and noon.",
        "The volunteers cleaned up the beach on Sunday morning.",
        "Honestly, I think the sequel was better than the original.",
        "Mind the gap between the train and the platform edge.",
    ),
    "de": ("Die Bibliothek bleibt am Montag wegen Renovierung geschlossen.",
           "Mein Bruder repariert gerade sein altes Fahrrad."),
    "fr": ("La boulangerie du coin vend le meilleur pain de la ville.",
           "Mon voisin joue du piano tous les soirs."),
    "es": ("El museo abre sus puertas a las diez de la mañana.",
           "Mi hermana estudia medicina en la universidad."),
}


@lru_cache(maxsize=1)
def espeak_version() -> str | None:
    """espeak-ng's version line, or None when it is not installed."""
    exe = shutil.which(ESPEAK)
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return " ".join(out.split()[:5]) or "espeak-ng (unknown version)"


def require_espeak() -> str:
    version = espeak_version()
    if version is None:
        raise BackgroundError(f"{ESPEAK} is not installed, and background speech is made with it: install it "
                              f"(`{ESPEAK_INSTALL}`, as root or with sudo), or leave speech out of the weights")
    return version


def espeak(text: str, voice: str, variant: str, speed: int, pitch: int, rate: int) -> np.ndarray:
    """One utterance by espeak-ng (a fresh process: deterministic), float32 mono at `rate`."""
    require_espeak()
    name = f"{voice}+{variant}" if variant else voice
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = [ESPEAK, "-v", name, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as err:
            raise BackgroundError(f"{' '.join(cmd[:-1])} failed: {err}") from None
        if done.returncode != 0 or not wav.is_file():
            raise BackgroundError(f"{' '.join(cmd[:-1])} failed (exit {done.returncode}): {done.stderr.strip()}")
        samples, file_rate = sf.read(str(wav), dtype="float32", always_2d=True)
    return resample(np.ascontiguousarray(samples.mean(axis=1)), int(file_rate), rate)


def _speech_track(n: int, rate: int, rng: np.random.Generator, voices: Sequence[Voice],
                  variants: Sequence[str], sentences: dict) -> tuple[np.ndarray, str]:
    """Sentences of one voice, pauses between them, until `n` samples are filled."""
    voice = voices[int(rng.integers(len(voices)))]
    variant = variants[int(rng.integers(len(variants)))]
    speed, pitch = int(rng.integers(120, 211)), int(rng.integers(25, 76))
    texts = sentences[voice.texts]
    order = rng.permutation(len(texts))
    out = np.zeros(n)
    at = int(rng.uniform(0.0, 0.6) * rate)
    spoken = []
    for k in range(len(order)):
        if at >= n:
            break
        text = texts[int(order[k])]
        utterance = espeak(text, voice.language, variant, speed, pitch, rate)
        m = min(utterance.size, n - at)
        out[at:at + m] = utterance[:m]
        spoken.append(text)
        at += utterance.size + int(rng.uniform(0.15, 0.8) * rate)
    name = f"{voice.language}+{variant}" if variant else voice.language
    return out, f"espeak-ng {name} -s {speed} -p {pitch}: " + " | ".join(spoken)


def speech(n: int, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    out, detail = _speech_track(n, rate, rng, TRAIN_VOICES, TRAIN_VARIANTS, SENTENCES)
    out = _unit(out)
    if rng.random() < 0.15:
        out = _unit(_bandpass(out, rate, 300.0, 3400.0))
        detail = "telephone band; " + detail
    if rng.random() < 0.6:
        snr = rng.uniform(15.0, 45.0)
        bed, what = ((pink_noise(n, rate, rng), "pink") if rng.random() < 0.5 else (room_tone(n, rate, rng)[0], "room"))
        out = out + 10 ** (-snr / 20) * bed
        detail = f"{what} bed at SNR {snr:.0f} dB; " + detail
    return out, detail


# ---------------------------------------------------------------------------------------------
# street scenes: edge/tools/demo.py's synthesiser

SCENE_SEEDS = 8  # distinct synthesised scenes to cut windows from
MIN_OVERLAP = 0.3  # seconds of a demo sound inside the window for `contains` to name it


@lru_cache(maxsize=SCENE_SEEDS)
def _scene(rate: int, seed: int):
    from edge.tools.demo import synthesise_scene

    return synthesise_scene(rate=rate, seed=seed)


def street(n: int, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str, list[str]]:
    from edge.tools.demo import SEED

    scene_seed = SEED + int(rng.integers(SCENE_SEEDS))
    samples, segments = _scene(rate, scene_seed)
    start = int(rng.integers(0, max(samples.size - n, 0) + 1))
    window = np.zeros(n)
    part = samples[start:start + n]
    window[:part.size] = part
    t0, t1 = start / rate, (start + n) / rate
    contains = [s.label for s in segments if min(s.end, t1) - max(s.start, t0) >= MIN_OVERLAP]
    snr = rng.uniform(0.0, 30.0)
    bed = brown_noise(n, rate, rng) if rng.random() < 0.5 else pink_noise(n, rate, rng)
    out = _unit(window) + 10 ** (-snr / 20) * bed
    return out, f"demo scene seed {scene_seed} from {t0:.2f} s, bed SNR {snr:.0f} dB", contains


# ---------------------------------------------------------------------------------------------
# items


@dataclass(frozen=True)
class Item:
    """One background clip and what it is."""

    kind: str
    seed: int
    samples: np.ndarray = field(repr=False)
    level_dbfs: float  # measured on `samples`
    detail: str = ""
    contains: tuple[str, ...] = ()  # urban labels audible in it (street only)


def make_item(kind: str, seed: int, rate: int = DEFAULT_RATE, seconds: float = DEFAULT_SECONDS,
              level: float | None = None) -> Item:
    """One background item, all of it from default_rng(seed); `level` (dBFS) overrides the drawn one."""
    if kind not in KINDS:
        raise BackgroundError(f"background kind {kind!r} is not one of {', '.join(KINDS)}")
    n = round(seconds * rate)
    rng = np.random.default_rng(seed)
    drawn = float(rng.uniform(*LEVELS[kind])) if kind in LEVELS else -math.inf
    level = drawn if level is None else float(level)
    contains: list[str] = []
    if kind == "silence":
        x, detail = np.zeros(n), "digital silence"
    elif kind == "near_silence":
        x, detail = near_silence(n, rate, rng)
    elif kind in NOISES:
        x, detail = NOISES[kind](n, rate, rng), kind
    elif kind == "hum":
        x, detail = hum(n, rate, rng)
    elif kind == "room_tone":
        x, detail = room_tone(n, rate, rng)
    elif kind == "speech":
        x, detail = speech(n, rate, rng)
    else:
        x, detail, contains = street(n, rate, rng)
    x = _fade(x, rate) if kind in ("speech", "street") else x
    samples = _at_level(x, level) if kind != "silence" else np.zeros(n, np.float32)
    return Item(kind, int(seed), samples, level_dbfs(samples), detail, tuple(contains))


@dataclass(frozen=True)
class Planned:
    index: int
    kind: str
    seed: int


def _weights(weights: dict | None) -> dict[str, float]:
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    unknown = sorted(set(weights) - set(KINDS))
    if unknown or not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise BackgroundError(f"background weights {weights} must give kinds of {', '.join(KINDS)} "
                              "non-negative shares, not all zero")
    total = sum(weights.values())
    return {k: weights[k] / total for k in KINDS if weights.get(k, 0) > 0}


def plan(count: int, seed: int = 0, weights: dict | None = None) -> list[Planned]:
    """Kind and seed of items 0..count-1: item i from default_rng([seed, i]) alone (prefix-stable)."""
    shares = _weights(weights)
    kinds, p = list(shares), np.array(list(shares.values()))
    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        kind = kinds[int(rng.choice(len(kinds), p=p))]
        out.append(Planned(i, kind, int(rng.integers(2 ** 31))))
    return out


# ---------------------------------------------------------------------------------------------
# the cache folder

META_COLUMNS = ("filename", "kind", "level_dbfs", "seed", "contains", "detail")


def recipe(count: int, seed: int = 0, weights: dict | None = None, rate: int = DEFAULT_RATE,
           seconds: float = DEFAULT_SECONDS) -> dict:
    shares = _weights(weights)
    return {"format": FORMAT, "count": int(count), "seed": int(seed), "weights": shares, "rate": int(rate),
            "seconds": float(seconds), "espeak": espeak_version() if "speech" in shares else None,
            "subtype": SUBTYPE}


def _write_items(folder: Path, planned: Sequence[Planned], rate: int, seconds: float, progress: bool) -> None:
    from train.progress import bar

    (folder / "audio").mkdir()
    rows = []
    for p in bar(planned, desc="background audio", unit="clip", disable=not progress):
        item = make_item(p.kind, p.seed, rate, seconds)
        name = f"{p.index:05d}-{p.kind}.flac"
        sf.write(str(folder / "audio" / name), item.samples, rate, subtype=SUBTYPE, format="FLAC")
        rows.append({"filename": name, "kind": item.kind, "level_dbfs": f"{item.level_dbfs:.3f}", "seed": item.seed,
                     "contains": " ".join(item.contains), "detail": item.detail})
    with open(folder / "meta.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=META_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def build_background(root: str | Path, count: int = DEFAULT_COUNT, seed: int = 0, weights: dict | None = None,
                     rate: int = DEFAULT_RATE, seconds: float = DEFAULT_SECONDS, progress: bool = True) -> Path:
    """The folder holding this recipe's items, made (once, atomically) under `root` when missing.

    Raises BackgroundError when the recipe needs speech and espeak-ng is not installed.
    """
    if count < 1:
        raise BackgroundError(f"count={count!r} must be a positive number of background clips")
    if rate <= 0 or seconds <= 0:
        raise BackgroundError(f"rate={rate!r} and seconds={seconds!r} must be positive")
    spec = recipe(count, seed, weights, rate, seconds)
    if "speech" in spec["weights"]:
        require_espeak()
    text = json.dumps(spec, sort_keys=True, indent=1)
    folder = Path(root).expanduser() / f"background-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    if (folder / "meta.csv").is_file() and (folder / "recipe.json").is_file():
        return folder
    log.info("making %d background clips into %s", count, folder)
    with atomic_directory(folder) as tmp:
        _write_items(tmp, plan(count, seed, spec["weights"]), rate, seconds, progress)
        atomic_write_text(tmp / "recipe.json", text + "\n")
    return folder


def read_meta(folder: str | Path) -> list[dict]:
    """meta.csv's rows (level_dbfs float, seed int, contains a list)."""
    folder = Path(folder)
    with open(folder / "meta.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["level_dbfs"] = float(row["level_dbfs"])
        row["seed"] = int(row["seed"])
        row["contains"] = row["contains"].split()
        row["path"] = folder / "audio" / row["filename"]
    return rows


# ---------------------------------------------------------------------------------------------
# the dataset


class BackgroundDataset(ClipDataset):
    """A ClipDataset over one recipe's background clips (made when missing), every target -1.

    Items are exactly ClipDataset's: (log-mel [1, frames, n_mels], BACKGROUND_TARGET); decode,
    waveform cache, augmentation, tiling are ClipDataset's. `seed` seeds augmentation, as for
    ClipDataset; `data_seed` the clips themselves. Clips are made at the frontend's sample rate.
    Extra attributes: `folder`, `meta` (meta.csv's rows, one per clip), `kinds`, `negative`
    (bool per clip: no trained-class sound inside; False for street clips).
    """

    def __init__(self, root: str | Path, count: int = DEFAULT_COUNT, frontend: Frontend | None = None,
                 cache=None, augment=None, seed: int = 0, data_seed: int = 0, weights: dict | None = None,
                 progress: bool = True):
        frontend = frontend or Frontend()
        self.folder = build_background(root, count, data_seed, weights, frontend.sample_rate, progress=progress)
        rows = read_meta(self.folder)
        clips = [Clip(row["path"], BACKGROUND_TARGET, None, row["kind"]) for row in rows]
        super().__init__(clips, [], frontend, cache, augment, seed)
        by_path = {row["path"]: row for row in rows}
        self.meta = [by_path[c.path] for c in self.clips]
        self.kinds = [row["kind"] for row in self.meta]
        self.negative = [not row["contains"] and row["kind"] != "street" for row in self.meta]


# ---------------------------------------------------------------------------------------------
# evaluation: held-out speech


def speech_eval_clips(folder: str | Path, count: int = 20, rate: int = DEFAULT_RATE,
                      seconds: float = DEFAULT_SECONDS, seed: int = 0) -> list[Path]:
    """`count` speech clips for the "urban + speech names speech" check: held-out sentences
    (EVAL_SENTENCES, never in training) by held-out voices (EVAL_VOICES accents, EVAL_VARIANTS,
    none of which training uses), clean, -35..-20 dBFS. Made once into
    `<folder>/speech-eval-<recipe>/` (with meta.csv: filename, voice, level_dbfs, text); the
    paths of its WAV files (16-bit)."""
    version = require_espeak()
    spec = {"format": FORMAT, "count": count, "rate": rate, "seconds": seconds, "seed": seed, "espeak": version}
    text = json.dumps(spec, sort_keys=True)
    out = Path(folder).expanduser() / f"speech-eval-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    names = [f"{i:03d}-speech.wav" for i in range(count)]
    if not (out / "meta.csv").is_file():
        n = round(seconds * rate)
        with atomic_directory(out) as tmp:
            rows = []
            for i, name in enumerate(names):
                rng = np.random.default_rng([seed, i, 1])
                x, detail = _speech_track(n, rate, rng, EVAL_VOICES, EVAL_VARIANTS, EVAL_SENTENCES)
                samples = _at_level(_fade(_unit(x), rate), float(rng.uniform(-35.0, -20.0)))
                sf.write(str(tmp / name), samples, rate, subtype="PCM_16", format="WAV")
                voice, _, spoken = detail.partition(": ")
                rows.append({"filename": name, "voice": voice.removeprefix("espeak-ng "),
                             "level_dbfs": f"{level_dbfs(samples):.2f}", "text": spoken})
            with open(tmp / "meta.csv", "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=("filename", "voice", "level_dbfs", "text"))
                writer.writeheader()
                writer.writerows(rows)
            atomic_write_text(tmp / "recipe.json", text + "\n")
    return [out / name for name in names]
