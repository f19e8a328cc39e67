"""New labels for sounds neither development set holds: musical instruments, household alarms and
recorded sounds of animals, work and fighting, alone and beside `urban`'s trained labels, as the
device scores them.

    python benchmarks/new_sounds.py [--bundle B] [--outweighs D] [--soundfont SF] [--zip PUBLIC_ZIP]
    # 40-70 s; needs: apt-get install fluidsynth fluid-soundfont-gm
    # --soundfont /usr/share/sounds/sf3/MuseScore_General.sf3: the same scores rendered by other
    # samples (apt-get install musescore-general-soundfont-small)
    # --zip: 0 A.D.'s public.zip (benchmarks/ambience.py says how to get it), for the recorded group

ESC-50 and UrbanSound8K hold no instrument (UrbanSound8K's street_music is any music heard in a
street) and no doorbell, smoke alarm or telephone. So the clips are made here, seeded:
- instruments: 8 clips each of piano, guitar, violin, trumpet, flute, church_organ, saxophone and
  drums, melodies and (piano, guitar, organ) chords rendered by FluidSynth from the sampled
  instruments of Debian's FluidR3 General MIDI soundfont, 16 kHz;
- alarms: 6 clips each of smoke_alarm (a 3 kHz piezo's three-beep pattern), telephone_ringing
  (two-tone rings), doorbell (a ding-dong of struck bars), whistle (a pea whistle's trill),
  bicycle_bell (fast strikes of a bell) and microwave_beep (three beeps), synthesised over a faint
  noise floor at -18..-6 dBFS peak.
They are rendered and synthesised, not recorded in a room: figures for how the fusion ranks a new
label against the trained ones, not a field accuracy. So a third group is recorded sounds (with
--zip, or 0 A.D.'s installed archive): 8 of each of 8 classes (RECORDED; seeded) of the game 0 A.D.'s
sound effects (Debian's 0ad-data, CC BY-SA 3.0): horses, elephants and goats, an axe on a tree, a
hammer on wood, a pick on stone, swords, a man's death cries; 0.3-4 s each (a window is the clip
repeated), recorded for a game and some of them processed (its elephants are roars to YAMNet).
Each group's class names are written as new labels in a label-set YAML
(edge.labels.resolve_label_set) and each clip's first 5 s window is scored by the bundle's graphs in
ONNX Runtime and edge's Scorer (label_phrasing.report): top-1 among the group's labels alone,
beside `urban` and beside `urban` less street_music, per class, and where each class's misses went;
and beside `urban` without the bundle's
vocabulary.familiar.outweighs (where it has one: a new label heard far above what a trained label
the vocabulary cannot hear made it say holds that label back).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from ambience import ARCHIVE, open_archive
from label_phrasing import report, write_set

from edge.bundle import read_bundle
from edge.labels.labelset import resolve_label_set
from edge.vocabulary import Vocabulary

RATE = 16000
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")  # Debian's fluid-soundfont-gm
# General MIDI programs (None: the drum kit, channel 10)
INSTRUMENTS = {"piano": 0, "guitar": 24, "violin": 40, "trumpet": 56, "flute": 73, "church_organ": 19,
               "saxophone": 65, "drums": None}
CHORDS = ("piano", "guitar", "church_organ")  # every other clip of these is chords
DRUMS = (35, 36, 38, 42, 46, 49, 51)  # kick, snare, hi-hats, cymbals
ALARMS = ("smoke_alarm", "telephone_ringing", "doorbell", "whistle", "bicycle_bell", "microwave_beep")
# Recorded sounds of 0 A.D. (ambience.py's archive) that neither development set has a class for: each
# label, the archive's audio/<pattern>.ogg
RECORDED = {
    "horse neighing": r"actor/fauna/animal/horse_\w+",
    "elephant trumpeting": r"actor/fauna/animal/elephant_\w+",
    "goat bleating": r"actor/fauna/death/goat_\d+",
    "chopping wood with an axe": r"resource/lumbering/lumber_tree_\d+",
    "hammering nails": r"resource/construction/con_wood_\d+",
    "pickaxe on stone": r"resource/mining/mine_stone_\d+",
    "swords clashing": r"attack/weapon/swordhit_\w+",
    "man screaming": r"actor/human/death/male_death_\d+",
}


def midi_file(program: int | None, notes: list[tuple[float, float, int, int]]) -> bytes:
    """A one-track Standard MIDI File: `notes` (start s, length s, pitch, velocity) on `program`
    (None: the drum channel), at 960 ticks a second."""
    channel = 9 if program is None else 0
    events = sorted([(round(s * 960), 0x90 | channel, p, v) for s, _, p, v in notes]
                    + [(round((s + d) * 960), 0x80 | channel, p, 0) for s, d, p, _ in notes],
                    key=lambda e: (e[0], e[1] & 0xF0 == 0x90))  # a note's end before the next start at one tick

    def delta(n: int) -> bytes:
        out = [n & 0x7F]
        while n := n >> 7:
            out.append((n & 0x7F) | 0x80)
        return bytes(reversed(out))

    track, now = bytearray(), 0
    if program is not None:
        track += delta(0) + bytes([0xC0 | channel, program])
    for tick, status, pitch, velocity in events:
        track += delta(tick - now) + bytes([status, pitch, velocity])
        now = tick
    track += delta(0) + b"\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def score(name: str, program: int | None, k: int, rng: np.random.Generator) -> list[tuple[float, float, int, int]]:
    """About 4.5 s of notes: a melody in a major scale, chords (CHORDS, odd k), or a drum pattern."""
    notes: list[tuple[float, float, int, int]] = []
    t, base = 0.0, int(rng.integers(48, 72))
    while t < 4.5:
        step = float(rng.choice([0.25, 0.5, 0.75, 1.0]))
        if program is None:
            step = float(rng.choice([0.25, 0.5]))
            for pitch in rng.choice(DRUMS, size=int(rng.integers(1, 3)), replace=False):
                notes.append((t, 0.2, int(pitch), int(rng.integers(70, 120))))
        elif k % 2 and name in CHORDS:
            root = base + int(rng.choice([0, 5, 7, 9]))
            for j, interval in enumerate((0, 4, 7, 12)):
                notes.append((t + j * (0.03 if name == "guitar" else 0.0), step * 1.9, root + interval,
                              int(rng.integers(60, 100))))
            step *= 2
        else:
            notes.append((t, step * 0.95, base + int(rng.choice([0, 2, 4, 5, 7, 9, 11, 12])),
                          int(rng.integers(60, 110))))
        t += step
    return notes


def instruments(folder: Path, soundfont: Path = SOUNDFONT, per_class: int = 8, seed: int = 1) -> list[tuple[Path, str]]:
    rng = np.random.default_rng(seed)
    clips = []
    for name, program in INSTRUMENTS.items():
        for k in range(per_class):
            mid, wav = folder / f"{name}-{k}.mid", folder / f"{name}-{k}.wav"
            mid.write_bytes(midi_file(program, score(name, program, k, rng)))
            subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.7", "-r", str(RATE), "-F", str(wav), str(soundfont),
                            str(mid)], check=True, capture_output=True)
            clips.append((wav, name))
    return clips


def alarms(folder: Path, per_class: int = 6, seed: int = 3) -> list[tuple[Path, str]]:
    rng = np.random.default_rng(seed)

    def time(seconds: float) -> np.ndarray:
        return np.arange(int(seconds * RATE)) / RATE

    def tone(f: float, seconds: float, partials=((1.0, 1.0),), decay: float | None = None) -> np.ndarray:
        x = sum(a * np.sin(2 * np.pi * f * m * time(seconds) + rng.uniform(0, 6)) for m, a in partials)
        return x * (np.exp(-time(seconds) / decay) if decay else 1.0)

    def placed(parts) -> np.ndarray:
        y = np.zeros(5 * RATE)
        for at, x in parts:
            i = int(at * RATE)
            y[i:i + len(x)] += x[:max(0, len(y) - i)]
        return y

    def sound(name: str, k: int) -> np.ndarray:
        if name == "smoke_alarm":
            beep = tone(rng.uniform(2900, 3400), 0.5, ((1, 1), (3, 0.3)))
            return placed([(a, beep) for a in (0.2, 1.2, 2.2, 3.7, 4.5)])
        if name == "telephone_ringing":
            f1, f2 = [(440, 480), (400, 450), (425, 425)][k % 3]
            ring = tone(f1, 1.6) + tone(f2, 1.6)
            if k % 2:  # an electromechanical bell's 20 Hz warble
                ring *= (1 + np.sign(np.sin(2 * np.pi * 20 * time(1.6)))) / 2
            return placed([(0.3, ring), (3.3, ring)])
        if name == "doorbell":
            a, b = [(659, 523), (784, 659), (880, 698)][k % 3]
            bar = ((1, 1), (2.76, 0.4), (5.4, 0.2))
            return placed([(0.3, tone(a, 2.0, bar, 0.6)), (1.0, tone(b, 3.0, bar, 0.9))])
        if name == "whistle":
            s, f = time(1.5), rng.uniform(1800, 3000)
            warble = np.sin(2 * np.pi * 25 * s)
            trill = np.sin(2 * np.pi * f * s + 2.4 * warble) * (1 + 0.5 * warble)
            return placed([(0.2, trill + rng.normal(0, 0.05, len(trill))), (2.5, trill)])
        if name == "bicycle_bell":
            strike = tone(rng.uniform(2500, 4000), 0.4, ((1, 1), (1.52, 0.6), (2.1, 0.4)), 0.15)
            return placed([(start + j * 0.09, strike) for start in (0.3, 2.5) for j in range(8)])
        beep = tone(rng.uniform(1900, 2400), 0.3, ((1, 1), (3, 0.1)))  # microwave_beep
        return placed([(0.5 + j * 0.6, beep) for j in range(3)])

    clips = []
    for name in ALARMS:
        for k in range(per_class):
            x = sound(name, k)
            x = x + rng.normal(0, 10 ** (rng.uniform(-70, -55) / 20), len(x))
            x = x / np.abs(x).max() * 10 ** (rng.uniform(-18, -6) / 20)
            path = folder / f"{name}-{k}.wav"
            sf.write(path, x.astype(np.float32), RATE)
            clips.append((path, name))
    return clips


def recorded(folder: Path, archive: Path, per_class: int = 8, seed: int = 5) -> list[tuple[Path, str]]:
    """`per_class` of each RECORDED class's recordings (seeded), extracted from 0 A.D.'s public.zip."""
    rng = np.random.default_rng(seed)
    with open_archive(archive) as z:
        members = sorted(z.namelist())
        clips = []
        for name, pattern in RECORDED.items():
            found = [m for m in members if re.fullmatch(f"audio/{pattern}\\.ogg", m)]
            if not found:
                raise SystemExit(f"{archive}: no audio/{pattern}.ogg in it: is it 0 A.D.'s mods/public/public.zip?")
            chosen = sorted(rng.choice(len(found), min(per_class, len(found)), replace=False))
            clips += [(Path(z.extract(found[i], folder)), name) for i in chosen]
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="edge/demo_bundle", help="a bundle with a vocabulary branch")
    parser.add_argument("--outweighs", type=float, help="score with this vocabulary.familiar.outweighs instead of "
                        "the bundle's")
    parser.add_argument("--soundfont", type=Path, default=SOUNDFONT, help="the General MIDI soundfont (.sf2/.sf3) "
                        "that renders the instruments")
    parser.add_argument("--zip", type=Path, default=ARCHIVE, help="0 A.D.'s public.zip, for its recorded sounds "
                        f"(ambience.py says how to get it; default: {ARCHIVE}; not there: not measured)")
    args = parser.parse_args()
    from train.vocabulary_trust import first_windows

    if shutil.which("fluidsynth") is None or not args.soundfont.is_file():
        parser.error(f"the instruments are rendered by fluidsynth from {args.soundfont}: "
                     "apt-get install fluidsynth fluid-soundfont-gm (or pass --soundfont)")
    bundle = read_bundle(args.bundle)
    vocabulary = Vocabulary.from_bundle(bundle)
    if vocabulary is None:
        parser.error(f"--bundle {args.bundle} has no vocabulary branch: new labels need one")
    if args.outweighs is not None and (vocabulary.familiar is None or not 0 < args.outweighs <= 20):
        parser.error(f"--outweighs {args.outweighs}: a log-odds margin in (0, 20], for a bundle with "
                     "vocabulary.familiar (model.json)")

    def outweighing(margin: float | None) -> Vocabulary:  # the bundle's vocabulary with this outweighs margin
        return dataclasses.replace(vocabulary, familiar=dataclasses.replace(vocabulary.familiar, outweighs=margin))

    if args.outweighs is not None:
        vocabulary = outweighing(args.outweighs)
    groups = {"instruments": lambda folder: instruments(folder, args.soundfont), "alarms": alarms}
    if args.zip.is_file():
        groups["recorded"] = lambda folder: recorded(folder, args.zip)
    else:
        print(f"no {args.zip}: 0 A.D.'s recorded sounds not measured (benchmarks/ambience.py says how to get it)",
              file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        for title, make in groups.items():
            clips = make(Path(tmp))
            classes = list(dict.fromkeys(name for _, name in clips))
            truth = np.array([classes.index(name) for _, name in clips])
            emb, voc = first_windows(bundle, [path for path, _ in clips], title)
            written = resolve_label_set(str(write_set(Path(tmp), title, classes)))
            print(f"{len(clips)} clips of {len(classes)} {title}, bundle {args.bundle}")
            urban = resolve_label_set("urban").labels
            report(bundle, vocabulary, written, emb, voc, truth, classes, title,
                   {"beside urban": urban, "... less street_music": [x for x in urban if x.name != "street_music"]},
                   below=1.0)
            if vocabulary.familiar is not None and vocabulary.familiar.outweighs is not None:
                # the same without the rule that lets a new label heard far above an unheard trained label's
                # own clips hold it back (model.json vocabulary.familiar.outweighs)
                report(bundle, outweighing(None), written, emb, voc, truth, classes, title,
                       {"... outweighs off": urban}, below=0.0, alone=False)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
