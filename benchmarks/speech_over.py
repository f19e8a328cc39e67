"""Speech over an urban sound: do the sound's events survive people talking beside it?

    SEMANTICAC_DATA=../shared/data python benchmarks/speech_over.py \\
        --bundle runs/bundles/lv1 --recipe demo-distill-level-cv1 [--per-class 25] [--db -25 -15]

Each held-out UrbanSound8K clip of the recipe (up to --per-class of each class, its first 5 s) is
mixed with a held-out espeak-ng sentence (train.data.background.speech_eval_clips, seeded) whose
RMS is --db below the clip's, and scored as the device scores a first window (the bundle's graphs
in ONNX Runtime, edge's Scorer, its evidence as the events read it). For `urban` and for `urban` +
a `speech` label added by YAML, per class: recall (the clip's own label at or above its threshold
in the evidence: a window that could start its event) and top-1, without speech and at each level.
Real sites mix sounds; the accuracy benchmarks score one sound a clip.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from vocabulary_fusion import with_speech

from edge.bundle import read_bundle
from edge.capture.audio import read_audio
from edge.labels.embeddings import label_embeddings_for
from edge.labels.labelset import resolve_label_set
from edge.scoring import Scorer
from edge.vocabulary import Vocabulary

RATE, SECONDS = 16000, 5


def fixed(x: np.ndarray) -> np.ndarray:
    x = x[: RATE * SECONDS]
    return np.pad(x, (0, RATE * SECONDS - len(x)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="a bundle with a vocabulary branch")
    parser.add_argument("--recipe", required=True, help="the recipe it was trained by (its UrbanSound8K test fold)")
    parser.add_argument("--per-class", type=int, default=25)
    parser.add_argument("--db", type=float, nargs="+", default=[-25.0, -15.0], help="speech RMS under the clip's")
    args = parser.parse_args()
    from train.data.background import speech_eval_clips
    from train.data.cache import default_cache_dir
    from train.data.datasets import split_clips
    from train.recipe import load_train_config
    from train.vocabulary_trust import first_windows

    bundle = read_bundle(args.bundle)
    vocabulary = Vocabulary.from_bundle(bundle)
    spec = next(s for s in load_train_config(args.recipe).datasets if s.kind == "us8k")
    clips, names = split_clips(spec, "val" if spec.val_fraction else "test")
    chosen: list = []
    for clip in clips:
        if sum(names[c.target] == names[clip.target] for c in chosen) < args.per_class:
            chosen.append(clip)
    truth = [names[c.target] for c in chosen]
    speech = [fixed(read_audio(str(p), RATE)) for p in speech_eval_clips(default_cache_dir() / "background")]
    rng = np.random.default_rng(0)
    pairs = [(fixed(read_audio(str(c.path), RATE)), speech[rng.integers(len(speech))]) for c in chosen]
    sets = {"urban": resolve_label_set("urban"), "urban + speech": with_speech(resolve_label_set("urban"))}
    classes = list(dict.fromkeys(sorted(truth)))
    print(f"{len(chosen)} held-out clips of {len(classes)} classes, bundle {args.bundle}")
    with tempfile.TemporaryDirectory() as tmp:
        for db in (None, *args.db):
            paths = []
            for i, (x, s) in enumerate(pairs):
                y = x if db is None else x + s * (np.sqrt(np.mean(x**2)) / (np.sqrt(np.mean(s**2)) + 1e-9)) * 10 ** (db / 20)
                paths.append(Path(tmp) / f"{i}.wav")
                sf.write(paths[-1], (0.9 * y / (np.abs(y).max() + 1e-9)).astype(np.float32), RATE)
            emb, voc = first_windows(bundle, paths, "mixtures")
            for title, label_set in sets.items():
                scorer = Scorer.for_bundle(bundle.meta, label_embeddings_for(bundle, label_set), label_set,
                                           vocabulary=vocabulary)
                scores, evidence = scorer.with_evidence(emb, voc)
                threshold = {label.name: label.threshold for label in label_set.labels}
                cells = []
                for name in classes:
                    rows, j = [i for i, t in enumerate(truth) if t == name], label_set.names.index(name)
                    recall = np.mean([evidence[i, j] >= threshold[name] for i in rows])
                    top = np.mean([scores[i].argmax() == j for i in rows])
                    cells.append(f"{name} {recall:4.0%}/{top:4.0%}")
                where = "no speech" if db is None else f"speech {db:+.0f} dB"
                print(f"{where:<16} {title:<15} recall/top-1: " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
