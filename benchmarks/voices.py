"""Real recorded voices in many languages, through the product's own pipeline (benchmarks/trust.py's
speech_named and stream_false_alarms: edge.listen, default thresholds, 5 s windows, hop 1 s): is
people talking named `speech` when a set has it, and nothing when it has not?

The voices: KDE's KTuberling (words, 22 languages) and KLettres (letters and syllables, 19
languages), Debian's ktuberling-data and klettres-data (GPL-2+): people recorded saying one word at
a time, 29 languages in all; no training clip holds any of them. Each utterance joins 4-7
recordings of one language with pauses of 0.15-0.4 s between them (a person naming things),
seeded; a recording two folders share is used once (KTuberling's sr@latin and the like hold sr's
own). 175 utterances, 24.3 min.

    apt-get download ktuberling-data klettres-data      # 86 MB; or install them (the default --root)
    for deb in ktuberling-data_*.deb klettres-data_*.deb; do dpkg-deb -x "$deb" .; done
    python benchmarks/voices.py --root usr/share [--bundle B] [--quieter DB] [--json OUT]   # 20 min on 2 cores

Figures, at the recordings' own level, --quieter dB down (20 by default; 0: not measured) over a
microphone's floor (trust.quiet_floor, as a voice across a room), and as a telephone carries them
(8 kHz, 300-3400 Hz, 16-bit; --no-telephone: not measured):
  named         `urban` + a `speech` label added by YAML: the share of utterances whose most frequent
                top-1 is `speech`, each alone, by source; the utterances missed, with their answer
  speech_event  the utterances in one stream, 10 s of silence after each: the share during which a
                `speech` event starts, and any other label's events there
  false_alarms  the utterances joined without gaps (24 min of talk), through `urban` and through
                `urban` + trust.py's 8 new labels (no `speech`): events, per hour, by label
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from ambience import group_false_alarms, report
from trust import RATE, farther, speech_named, write

from edge.capture.audio import read_audio

ROOT = Path("/usr/share")
# source: the folders under --root that hold one language's recordings each (the language is the
# folder named by `language`, a part of the path counted from its end)
SOURCES = {"ktuberling": ("ktuberling/sounds/*/", -1), "klettres syllables": ("klettres/*/syllab/", -2),
           "klettres letters": ("klettres/*/alpha/", -2)}
PACKAGES = {"ktuberling": "ktuberling-data", "klettres syllables": "klettres-data", "klettres letters": "klettres-data"}
PER_LANGUAGE = {"ktuberling": 4, "klettres syllables": 4, "klettres letters": 2}
MIN_RECORDINGS = 10  # a folder with fewer is no language's set (KTuberling's id/ holds a theme file)
WORDS = (4, 7)
PAUSE_S = (0.15, 0.4)
TELEPHONE_RATE, TELEPHONE_HZ = 8000, (300, 3400)


def utterances(root: Path, folder: Path, seed: int = 0) -> dict[str, list[Path]]:
    """Per source, the utterances written into `folder` (16 kHz float WAV, `<source>-<language>-<i>.wav`)."""
    rng = random.Random(seed)
    found: dict[str, list[Path]] = {}
    heard: set[str] = set()  # KTuberling's sr@latin, sr@ijekavian, ... hold sr's very recordings
    for source, (pattern, part) in SOURCES.items():
        found[source] = []
        for language_dir in sorted(root.glob(pattern)):
            recordings = []
            for path in sorted([*language_dir.glob("*.ogg"), *language_dir.glob("*.wav")]):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest not in heard:
                    heard.add(digest)
                    recordings.append(path)
            if len(recordings) < MIN_RECORDINGS:
                continue
            rng.shuffle(recordings)
            language = language_dir.parts[part]
            for i in range(PER_LANGUAGE[source]):
                words = recordings[i * WORDS[1]:(i + 1) * WORDS[1]][: rng.randint(*WORDS)]
                if len(words) < WORDS[0]:
                    break
                parts = []
                for word in words:
                    parts += [read_audio(word, RATE), np.zeros(round(rng.uniform(*PAUSE_S) * RATE), np.float32)]
                name = f"{source.replace(' ', '_')}-{language}-{i}.wav"
                found[source].append(write(folder / name, np.concatenate(parts)))
        if not found[source]:  # `make setup` installs ktuberling-data alone
            print(f"{root}: no {pattern}*.ogg (apt install {PACKAGES[source]}): {source} not measured", file=sys.stderr)
            del found[source]
    if not found:
        raise SystemExit(f"{root}: no recordings of KTuberling's or KLettres': pass the folder that holds "
                         f"ktuberling/ and klettres/ (see {__file__}'s header)")
    return found


def remade(groups: dict[str, list[Path]], folder: Path, remake) -> dict[str, list[Path]]:
    """Every utterance made anew into `folder` under its name: remake(utterance, its index in its
    source, the path to write)."""
    folder.mkdir(exist_ok=True)
    out: dict[str, list[Path]] = {}
    for source, clips in groups.items():
        out[source] = []
        for i, clip in enumerate(clips):
            remake(clip, i, folder / clip.name)
            out[source].append(folder / clip.name)
    return out


def quieter(groups: dict[str, list[Path]], folder: Path, db: float) -> dict[str, list[Path]]:
    """Every utterance `db` dB down over a microphone's floor (trust.farther)."""
    return remade(groups, folder, lambda clip, i, path: write(path, farther(read_audio(clip, RATE), db, seed=i)))


def telephone(groups: dict[str, list[Path]], folder: Path) -> dict[str, list[Path]]:
    """Every utterance as a telephone carries it: 8 kHz, 300-3400 Hz (4th-order Butterworth), 16-bit."""
    from scipy.signal import butter, sosfilt

    band = butter(4, TELEPHONE_HZ, "bandpass", fs=TELEPHONE_RATE, output="sos")

    def remake(clip: Path, i: int, path: Path) -> None:
        x = np.clip(sosfilt(band, read_audio(clip, TELEPHONE_RATE)), -1.0, 1.0)
        sf.write(path, x, TELEPHONE_RATE, subtype="PCM_16")

    return remade(groups, folder, remake)


def named_by_source(bundle: str | None, tmp: Path, groups: dict[str, list[Path]]) -> dict:
    """trust.speech_named over every utterance, and its share named by source."""
    found = speech_named(bundle, tmp, [clip for paths in groups.values() for clip in paths])
    found["by_source"] = {source: 1 - sum(clip.name in found["missed"] for clip in paths) / len(paths)
                          for source, paths in groups.items()}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help=f"the folder holding ktuberling/ and klettres/ "
                        f"(default: {ROOT}, where the packages install)")
    parser.add_argument("--bundle", default=None, help="Default: $SEMANTICAC_BUNDLE, else the shipped demo bundle.")
    parser.add_argument("--quieter", type=float, default=20.0, metavar="DB",
                        help="also measure the utterances DB dB down over a microphone's floor (0: do not)")
    parser.add_argument("--no-telephone", dest="telephone", action="store_false",
                        help="do not measure the utterances band-limited as a telephone carries them")
    parser.add_argument("--json", dest="json_out", help="Also write the figures to this file.")
    args = parser.parse_args()
    # KLettres' Malayalam and Arabic recordings end without Ogg's end-of-stream bit: edge reads all
    # that decodes and warns of each; here that is some 50 lines saying the same
    logging.getLogger("edge.capture.audio").setLevel(logging.ERROR)
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "utterances").mkdir()
        groups = utterances(args.root, tmp / "utterances")
        clips = [clip for paths in groups.values() for clip in paths]
        levels = {"as recorded": groups}
        if args.quieter:
            levels[f"{args.quieter:g} dB down"] = quieter(groups, tmp / "quieter", args.quieter)
        if args.telephone:
            levels["telephone band"] = telephone(groups, tmp / "telephone")
        for level, by_source in levels.items():
            found = named_by_source(args.bundle, tmp, by_source)
            figures[f"speech named, {level}"] = found
            print(f"{level}: {len(clips)} utterances named speech {found['named_speech']:.1%} "
                  f"{ {s: round(v, 3) for s, v in found['by_source'].items()} }, a speech event during "
                  f"{found['speech_event']:.1%} (other events: {found['other_heard_in']}); missed: {found['missed']}",
                  flush=True)
        figures.update(group_false_alarms(args.bundle, {"talk": clips}, tmp))
    report(figures, args.json_out)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
