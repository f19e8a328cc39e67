"""Scores a user can trust, through the product's own pipeline (edge.listen.listen, the code of
`semanticac-edge listen`): what it says about nothing, about a label added by YAML, and how
often it raises a false alarm on real audio that holds none of the set's sounds.

    SEMANTICAC_DATA=../shared/data python benchmarks/trust.py [--bundle B] [--json OUT]

Figures (each with the bundle's default thresholds and the listen defaults: 5 s windows for
the demo bundle, hop 1 s, smoothing 3, min duration 1 s, no hold; `--hold 30` as a service):
  silence_and_noise   events started by 20 s of digital silence and of white noise at -60,
                      -50 and -40 dBFS (RMS), with every shipped label set, and with `urban` +
                      the 8 new labels below
  speech_named        held-out espeak-ng speech (train.data.background.speech_eval_clips: sentences
                      and voices training never uses) through `urban` + a `speech` label added by
                      YAML: the share of clips whose most frequent top-1 is `speech` (each clip
                      alone), and, with the clips in one stream 10 s apart, the share during which
                      a `speech` event starts (and the other labels' events there)
  real_speech_named   the same on real recorded speech: the 14 recordings of Debian's
                      pocketsphinx-testdata (read English, spelled letters, digits; 1-7 s each;
                      `make setup` installs it), when /usr/share/pocketsphinx/test/data is there
  false_alarms        the development ESC-50 clips of the 46 classes that are not urban sounds
                      (all but dog, siren, car_horn, engine) joined into one continuous stream,
                      `--labels urban`: events per hour, by label
  new_label_false_alarms
                      the same stream through `urban` + 8 labels added by YAML that name sounds
                      no development set holds (NEW_LABELS: doorbell, smoke alarm, ...): events
                      per hour, by label (the new labels' own false alarms, and the urban labels'
                      beside them). The student trained on these very clips (a vocabulary.ceiling
                      too, where a bundle has one): for audio it never heard, see
                      heldout_false_alarms.py --new-labels
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from edge.capture.audio import read_audio
from edge.labels.labelset import resolve_label_set
from edge.listen import ListenOptions, listen
from edge.outputs.sinks import Sink

RATE = 16000
REAL_SPEECH = Path("/usr/share/pocketsphinx/test/data")  # Debian's pocketsphinx-testdata
URBAN_IN_ESC50 = ("dog", "siren", "car_horn", "engine")  # ESC-50 classes that are urban sounds
NOISE_LEVELS_DBFS = (-60.0, -50.0, -40.0)
FLOOR_DBFS = -65.0  # quiet_floor: a quiet room through a consumer microphone
SPEECH_GAP_S = 10.0  # silence after each speech clip in the speech stream
# labels a site might add whose sounds no development set (ESC-50, UrbanSound8K) holds
NEW_LABELS = ("doorbell", "smoke alarm", "motorcycle", "whistle", "guitar", "telephone ringing", "bicycle bell",
              "baby laughter")
class Record(Sink):
    """Keeps windows' top-1, end times and gating, and the events."""

    def __init__(self):
        super().__init__()
        self.top1: list[str] = []
        self.t: list[float] = []
        self.gated: list[bool] = []
        self.starts: list[str] = []
        self.start_times: list[tuple[float, str]] = []

    def window(self, result) -> None:
        self.t.append(result.t)
        self.gated.append(result.gated)
        if result.top:
            self.top1.append(result.top[0][0])

    def event(self, event) -> None:
        if event.kind == "start":
            self.starts.append(event.label)
            self.start_times.append((event.t, event.label))

    def status(self, status) -> None:
        pass


HOLD = [0.0]  # --hold: every run's listen.hold (a service's default is 30 s)


def run(bundle: str | None, labels: str, path: Path, record: Record | None = None) -> Record:
    record = record if record is not None else Record()
    listen(ListenOptions(labels=labels, bundle=bundle, input=str(path), fast=True, hold=HOLD[0]), sink=record)
    return record


def write(path: Path, samples: np.ndarray) -> Path:
    sf.write(path, samples.astype(np.float32), RATE, subtype="FLOAT")
    return path


def quiet_signals(seconds: float = 20.0) -> dict[str, np.ndarray]:
    """Digital silence, and white noise at each of NOISE_LEVELS_DBFS, `seconds` long at RATE."""
    rng = np.random.default_rng(0)
    n = round(seconds * RATE)
    signals = {"digital silence": np.zeros(n)}
    for level in NOISE_LEVELS_DBFS:
        signals[f"white noise {level:g} dBFS"] = rng.standard_normal(n) * 10 ** (level / 20)
    return signals


def quiet_floor(samples: int, dbfs: float = FLOOR_DBFS, seed: int = 0) -> np.ndarray:
    """A microphone's floor: brown noise (integrated white, its drift below 10 Hz taken out) at
    `dbfs` RMS, float32."""
    x = np.cumsum(np.random.default_rng(seed).standard_normal(samples))
    x -= np.convolve(x, np.ones(RATE // 10) / (RATE // 10), "same")
    return (x * 10 ** (dbfs / 20) / x.std()).astype(np.float32)


def farther(samples: np.ndarray, db: float, seed: int = 0) -> np.ndarray:
    """`samples` `db` dB down over a microphone's floor (quiet_floor): the same sound further away."""
    return samples * np.float32(10 ** (-db / 20)) + quiet_floor(samples.size, seed=seed)


def silence_and_noise(bundle: str | None, tmp: Path) -> dict:
    signals = quiet_signals()
    sets = {"urban": "urban", "esc50": "esc50", "urban + new labels": str(urban_with(tmp / "new.yaml", NEW_LABELS))}
    out = {}
    for name, samples in signals.items():
        path = write(tmp / "signal.wav", samples)
        out[name] = {label_set: len(run(bundle, labels, path).starts) for label_set, labels in sets.items()}
    return out


def urban_with(path: Path, new: tuple[str, ...]) -> Path:
    """A label-set YAML at `path`: `urban`'s labels (with its thresholds) and the `new` ones."""
    urban = resolve_label_set("urban")
    names = "\n".join(f"  - {{name: {label.name}, threshold: {label.threshold}}}" for label in urban.labels)
    added = "\n".join(f"  - {name}" for name in new)
    path.write_text(f"name: {path.stem}\nlabels:\n{names}\n{added}\n")
    return path


def speech_set(tmp: Path) -> Path:
    return urban_with(tmp / "urban_speech.yaml", ("speech",))


def real_speech_clips(tmp: Path, root: Path = REAL_SPEECH) -> list[Path]:
    """The real speech recordings of pocketsphinx-testdata as WAV files: its .wav as they are,
    its .raw (16 kHz, 16-bit little-endian mono, as pocketsphinx's own tests read them) written out."""
    clips = sorted(root.glob("*/*.wav"))
    for raw in sorted([*root.glob("*.raw"), *root.glob("*/*.raw")]):
        samples = np.fromfile(raw, dtype="<i2").astype(np.float32) / 32768.0
        clips.append(write(tmp / f"{raw.stem}.wav", samples))
    return clips


def speech_named(bundle: str | None, tmp: Path, clips: list[Path]) -> dict:
    """`clips` of speech through `urban` + `speech`: each alone (its most frequent top-1; `missed`:
    the clips it is not `speech` for, by file name, with their answer), then all in one stream (the
    speech events; `other_heard_in`: each other label's event, with the clip it starts in)."""
    labels = str(speech_set(tmp))
    named = 0
    answers = Counter()
    missed = {}
    for wav in clips:
        record = run(bundle, labels, wav)
        answer = Counter(record.top1).most_common(1)[0][0] if record.top1 else None
        answers[answer] += 1
        named += answer == "speech"
        if answer != "speech":
            missed[Path(wav).name] = answer
    # events: one clip alone is a single 5 s window, which cannot last --min-duration; so the
    # clips play one after another in one stream, each followed by SPEECH_GAP_S of silence
    gap = np.zeros(int(SPEECH_GAP_S * RATE), np.float32)
    spans, parts, at = [], [], 0.0
    for wav in clips:
        x = read_audio(wav, RATE)
        spans.append((at, at + x.size / RATE + SPEECH_GAP_S))
        parts += [x, gap]
        at = spans[-1][1]
    record = run(bundle, labels, write(tmp / "speech_stream.wav", np.concatenate(parts)))
    started = [{label for t, label in record.start_times if a <= t < b} for a, b in spans]
    others = [(label, Path(wav).name) for s, wav in zip(started, clips) for label in sorted(s) if label != "speech"]
    return {"clips": len(clips), "named_speech": named / len(clips),
            "speech_event": sum("speech" in s for s in started) / len(clips),
            "other_events": dict(Counter(label for label, _ in others)),
            "other_heard_in": [{"label": label, "clip": name} for label, name in others],
            "answers": dict(answers.most_common()), "missed": missed}


def non_urban_clips(data: Path) -> list[Path]:
    rows = list(csv.DictReader(open(data / "esc50" / "meta.csv", newline="")))
    clips = sorted(data / "esc50" / "audio" / row["filename"] for row in rows
                   if row["category"] not in URBAN_IN_ESC50)
    if not clips[0].exists():  # the development copy keeps its audio beside meta.csv
        clips = sorted(data / "esc50" / row["filename"] for row in rows if row["category"] not in URBAN_IN_ESC50)
    return clips


def stream_false_alarms(bundle: str | None, labels: str, clips: list[Path], path: Path,
                        quieter_db: float = 0.0, record: Record | None = None) -> dict:
    """`clips` joined into one stream (written to `path`) through `labels`: the events it starts,
    each with the clip playing at its start, the end of its first window (`heard_in`: what to hear).
    `quieter_db` > 0: the stream `quieter_db` dB down, over a microphone's floor (quiet_floor), as
    the same sounds further away. `record`: a Record to fill with its windows too."""
    parts = [read_audio(clip, RATE) for clip in clips]
    stream = np.concatenate(parts)
    if quieter_db:
        stream = farther(stream, quieter_db)
    ends = np.cumsum([part.size for part in parts]) / RATE
    record = run(bundle, labels, write(path, stream), record)
    hours = stream.size / RATE / 3600
    playing = [min(int(np.searchsorted(ends, t, "right")), len(clips) - 1) for t, _ in record.start_times]
    heard_in = [{"t": round(t, 1), "label": label, "clip": Path(clips[i]).name}
                for (t, label), i in zip(record.start_times, playing)]
    return {"clips": len(clips), "hours": hours, "quieter_db": quieter_db, "events": len(record.starts),
            "per_hour": len(record.starts) / hours, "by_label": dict(Counter(record.starts).most_common()),
            "heard_in": heard_in}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=None, help="Default: $SEMANTICAC_BUNDLE, else the shipped demo bundle.")
    parser.add_argument("--data", default=os.environ.get("SEMANTICAC_DATA"), help="Default: $SEMANTICAC_DATA.")
    parser.add_argument("--json", dest="json_out", default=None, help="Also write the figures to this file.")
    parser.add_argument("--speech-clips", type=int, default=20, help="Held-out espeak-ng clips to name.")
    parser.add_argument("--hold", type=float, default=0.0,
                        help="listen's --hold for every run (30: a service's default): events of a label less than "
                             "this apart are one, in the false-alarm streams and the speech stream alike")
    args = parser.parse_args()
    HOLD[0] = args.hold
    start = time.perf_counter()
    from train.data.background import speech_eval_clips

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        figures = {"silence_and_noise": silence_and_noise(args.bundle, tmp),
                   "speech_named": speech_named(args.bundle, tmp,
                                                speech_eval_clips(tmp / "speech", count=args.speech_clips))}
        if REAL_SPEECH.is_dir():
            figures["real_speech_named"] = speech_named(args.bundle, tmp, real_speech_clips(tmp))
        else:
            print(f"no {REAL_SPEECH} (apt install pocketsphinx-testdata): real speech not measured", file=sys.stderr)
        if args.data:
            clips = non_urban_clips(Path(args.data))
            figures["false_alarms"] = stream_false_alarms(args.bundle, "urban", clips, tmp / "non_urban_esc50.wav")
            figures["new_label_false_alarms"] = stream_false_alarms(
                args.bundle, str(urban_with(tmp / "urban_new.yaml", NEW_LABELS)), clips, tmp / "non_urban_esc50.wav")
        else:
            print("no $SEMANTICAC_DATA: false alarms not measured", file=sys.stderr)
    figures["seconds"] = time.perf_counter() - start
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
