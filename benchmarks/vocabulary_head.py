"""What a bundle's vocabulary head (train.vocabulary_head, edge.vocabulary) adds to the trained
labels, as the device computes it (the bundle's graphs in ONNX Runtime, edge's Scorer), for a range
of head weights (0: the student alone; 1: the head alone) on the held-out clips of the recipe the
bundle was cross-validated with, and on held-out espeak-ng speech and on silence and noise.

    SEMANTICAC_DATA=../shared/data python benchmarks/vocabulary_head.py --bundle B --recipe demo-distill-cv1

  accuracy      top-1 of each held-out clip (its first window: 5 s, tiled) over its own dataset's
                label set (esc50 / urban)
  +speech       the same with a `speech` label added by YAML (the veto applies)
  recall@thr    the share of those clips whose own label scores at or above its threshold
  speech named  held-out espeak-ng speech among `urban` + `speech`: the share whose top-1 is speech
  quiet max     the highest score any `urban` label reaches on digital silence and on white noise
                at -60..-40 dBFS (trust.py's, 5 s each): what could start an event where nothing sounds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

import numpy as np

WEIGHTS = (0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--recipe", required=True, help="the recipe the bundle was cross-validated with")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    from vocabulary_fusion import DATASET_LABELS, with_speech

    from edge.bundle import read_bundle
    from edge.labels.embeddings import label_embeddings_for
    from edge.labels.labelset import resolve_label_set
    from edge.scoring import Scorer
    from edge.vocabulary import Vocabulary
    from train.data.background import speech_eval_clips
    from train.data.cache import default_cache_dir
    from train.data.datasets import split_clips
    from train.recipe import load_train_config
    from train.vocabulary_trust import first_windows

    bundle = read_bundle(args.bundle)
    vocabulary = Vocabulary.from_bundle(bundle)
    assert vocabulary is not None and vocabulary.head is not None, f"{args.bundle} has no vocabulary head"

    def scores(label_set, weight, emb, voc):
        head = dataclasses.replace(vocabulary.head, weight=weight)
        scorer = Scorer.for_bundle(bundle.meta, label_embeddings_for(bundle, label_set), label_set,
                                   vocabulary=dataclasses.replace(vocabulary, head=head))
        return scorer(emb, voc)

    figures: dict = {w: {} for w in WEIGHTS}
    for spec in load_train_config(args.recipe).datasets:
        split = "val" if spec.val_fraction else "test"
        clips, class_names = split_clips(spec, split)
        emb, voc = first_windows(bundle, [c.path for c in clips], f"{spec.kind} {split}")
        for label_set, key in ((resolve_label_set(DATASET_LABELS[spec.kind]), ""),
                               (with_speech(resolve_label_set(DATASET_LABELS[spec.kind])), " +speech")):
            truth = np.array([label_set.names.index(class_names[c.target]) for c in clips])
            thresholds = np.array([label.threshold for label in label_set.labels])[truth]
            for w in WEIGHTS:
                p = scores(label_set, w, emb, voc)
                figures[w][f"{spec.kind} {split} accuracy{key}"] = float((p.argmax(1) == truth).mean())
                if not key:
                    figures[w][f"{spec.kind} {split} recall@thr"] = float(
                        (p[np.arange(len(truth)), truth] >= thresholds).mean())
    urban = with_speech(resolve_label_set("urban"))
    emb, voc = first_windows(bundle, speech_eval_clips(default_cache_dir() / "background"), "speech")
    for w in WEIGHTS:
        figures[w]["speech named (urban + speech)"] = float(
            (scores(urban, w, emb, voc).argmax(1) == len(urban.labels) - 1).mean())
    with tempfile.TemporaryDirectory() as tmp:
        emb, voc = first_windows(bundle, quiet_clips(Path(tmp), bundle.meta.clip_seconds), "silence and noise")
    for w in WEIGHTS:
        figures[w]["quiet max (urban)"] = float(scores(resolve_label_set("urban"), w, emb, voc).max())
    keys = list(figures[WEIGHTS[0]])
    print(f"{'weight':>6}  " + "  ".join(f"{k[:26]:>26}" for k in keys))
    for w in WEIGHTS:
        print(f"{w:>6.2f}  " + "  ".join(f"{figures[w][k]:>26.3f}" for k in keys))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({f"weight {w}": v for w, v in figures.items()}, f, indent=1)


def quiet_clips(folder: Path, seconds: float) -> list[Path]:
    """trust.py's digital silence and white noise at -60..-40 dBFS, `seconds` each, as WAV files."""
    from trust import quiet_signals, write

    return [write(folder / f"quiet-{i}.wav", x) for i, x in enumerate(quiet_signals(seconds).values())]


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
