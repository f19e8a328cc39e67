"""Does the recording chain move held-out answers? The held-out originals the issue measures differ
from the development copies: ESC-50's are 44.1 kHz 16-bit (the copy: 16 kHz, 8-bit, gain-
normalised), UrbanSound8K's are at their own rates (the copy: 22.05 kHz Ogg Vorbis). Each held-out
clip of a recipe's CV split is scored as the device scores it (the split's bundle's graphs in ONNX
Runtime, edge's Scorer, the first 5 s window, tiled when shorter) as it is and changed:

    SEMANTICAC_DATA=../shared/data python benchmarks/recording_chain.py \\
        --bundle runs/bundles/lv1 --recipe demo-distill-level-cv1      # 15 min on 2 cores

  44.1 kHz, 48 kHz   resampled (scipy's polyphase filter) and written as 16-bit WAV: the frontend
                     resamples them back to the model's rate
  floor -60, -50 dB  white noise added at that RMS below the clip's peak: a floor the 8-bit copy
                     does not have (its quiet parts are quantisation steps or exact zeros)
  8-bit              quantised to 8 bits at the clip's peak, as the ESC-50 copy was made

Printed: top-1 over the dataset's label set (esc50 / urban) and the share of clips whose answer
changed, with the head mixed in as the bundle ships it; `--head-weights 0 0.5 1` prints them for each
of those head weights instead (0: the student alone, 1: the head alone), to tell which part moves.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from edge.bundle import read_bundle
from edge.labels.embeddings import label_embeddings_for
from edge.labels.labelset import resolve_label_set
from edge.scoring import Scorer
from edge.vocabulary import Vocabulary


def variants(x: np.ndarray, rate: int, rng: np.random.Generator):
    """(name, samples, rate) of each change of one clip (float64 samples), itself first."""
    peak = float(np.abs(x).max()) or 1.0
    yield "as it is", x, rate
    for to in (44100, 48000):
        g = gcd(rate, to)
        yield f"{to / 1000:g} kHz", resample_poly(x, to // g, rate // g), to
    for db in (-60, -50):
        yield f"floor {db} dB", x + rng.normal(0.0, peak * 10 ** (db / 20), x.shape), rate
    yield "8-bit", np.round(x / peak * 127) / 127 * peak, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="the split's own bundle")
    parser.add_argument("--recipe", required=True, help="the recipe the bundle was cross-validated with")
    parser.add_argument("--head-weights", type=float, nargs="+", metavar="W",
                        help="score with each of these head weights (0: the student alone; 1: the head alone) "
                             "instead of the bundle's own")
    args = parser.parse_args()
    from vocabulary_fusion import DATASET_LABELS

    from train.data.datasets import split_clips
    from train.recipe import load_train_config
    from train.vocabulary_trust import first_windows

    bundle = read_bundle(args.bundle)
    vocabulary = Vocabulary.from_bundle(bundle)
    if args.head_weights and (vocabulary is None or vocabulary.head is None):
        parser.error(f"--head-weights: {args.bundle} has no vocabulary head (semanticac-train vocabulary-head)")
    weights = args.head_weights or [None]
    rng = np.random.default_rng(0)
    for spec in load_train_config(args.recipe).datasets:
        if spec.kind not in DATASET_LABELS:
            parser.error(f"--recipe {args.recipe}: its {spec.kind} data has no shipped label set to score it by "
                         f"(this benchmark reads {' and '.join(DATASET_LABELS)})")
        clips, names = split_clips(spec, "val" if spec.val_fraction else "test")
        label_set = resolve_label_set(DATASET_LABELS[spec.kind])
        truth = np.array([label_set.names.index(names[clip.target]) for clip in clips])
        scorers = {
            weight: Scorer.for_bundle(
                bundle.meta, label_embeddings_for(bundle, label_set), label_set,
                vocabulary=vocabulary if weight is None
                else dataclasses.replace(vocabulary, head=dataclasses.replace(vocabulary.head, weight=weight)))
            for weight in weights
        }
        with tempfile.TemporaryDirectory() as tmp:
            paths: dict[str, list[Path]] = {}
            for i, clip in enumerate(clips):
                x, rate = sf.read(clip.path, dtype="float64", always_2d=True)
                for name, y, to in variants(x.mean(axis=1), rate, rng):
                    path = Path(tmp) / f"{i}-{len(paths.get(name, ()))}-{name.replace(' ', '_')}.wav"
                    sf.write(path, np.clip(y, -1.0, 1.0), to, subtype="PCM_16")
                    paths.setdefault(name, []).append(path)
            first: dict = {}
            for name, files in paths.items():
                windows = first_windows(bundle, files, f"{spec.kind} {name}")
                for weight, scorer in scorers.items():
                    top = scorer(*windows).argmax(axis=1)
                    first.setdefault(weight, top)
                    what = name if weight is None else f"head weight {weight:g}, {name}"
                    print(f"{spec.kind} held out ({len(clips)} clips), {what:<{13 if weight is None else 31}} top-1 "
                          f"{np.mean(top == truth):6.1%}   answers changed {np.mean(top != first[weight]):5.1%}",
                          flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
