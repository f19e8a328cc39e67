"""Does each window's automatic gain (edge.features.WindowGain, model.json `gain`) help on audio
the model never heard, at its own level and quieter? A recipe's CV split, as the device scores a
clip's first window (edge.features.clip_window):

    SEMANTICAC_DATA=../shared/data python benchmarks/window_gain.py \\
        --bundle runs/bundles/cv1 --recipe demo-distill-cv1 [--cache runs/window-gain]

- the student: the split's own bundle (--bundle, `semanticac-train export` of the split's run;
  no vocabulary needed);
- the head: fitted here on the split's training and background clips as `vocabulary-head` fits
  it (YAMNet's features of each clip from --vocabulary's graph, YAMNet itself, the same for every
  split; 2 augmented copies and 2 placed in a window; train.vocabulary_head.fit_mlp), on windows
  without the gain as `vocabulary-head` fits it, or with --fit-gain on windows with it;
- the held-out clips (the recipe's val/test split) at their own level and 20 and 40 dB quieter,
  each without the gain and with --gain's (default: WindowGain's defaults): top-1 over the
  dataset's label set and the share whose own label reaches its threshold, for the student
  alone, the head alone and the two mixed as the device mixes them (weight 0.5).

The training clips' features take ~20 min on 2 cores, the held-out clips' ~15 min; both are
cached in --cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

LEVELS_DB = (0.0, -20.0, -40.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="the split's own bundle (its student)")
    parser.add_argument("--recipe", required=True, help="the recipe the bundle was cross-validated with")
    parser.add_argument("--vocabulary", default="edge/demo_bundle", help="a bundle whose vocabulary graph is YAMNet")
    parser.add_argument("--gain", default=None, help='the gain to measure, as JSON (default: WindowGain())')
    parser.add_argument("--cache", default="runs/window-gain", help="where the training clips' features are kept")
    parser.add_argument("--fit-gain", action="store_true", help="fit the head on windows with the gain")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()

    from vocabulary_fusion import DATASET_LABELS

    from edge.backends import select_backend
    from edge.bundle import read_bundle
    from edge.capture.audio import read_audio
    from edge.features import WindowGain, clip_window
    from edge.labels.embeddings import label_embeddings_for
    from edge.labels.labelset import resolve_label_set
    from edge.scoring import Scorer
    from edge.vocabulary import Head
    from train.data.datasets import split_clips
    from train.progress import bar
    from train.recipe import load_train_config
    from train.vocabulary_head import HEAD, fit_mlp, head_clips, head_input, head_targets, window_features

    gain = WindowGain() if args.gain is None else WindowGain.from_dict(json.loads(args.gain))
    student = read_bundle(args.bundle)
    vocabulary = read_bundle(args.vocabulary)
    vocabulary = dataclasses.replace(vocabulary, meta=dataclasses.replace(vocabulary.meta, gain=gain))
    config = load_train_config(args.recipe)

    # the head, fitted on the split's training and background clips (as train.vocabulary_head.fit_head)
    todo, background, contexts = head_clips(config)
    held = []
    for spec in config.datasets:
        clips, names = split_clips(spec, "val" if spec.val_fraction else "test")
        held += [(spec.kind, names[clip.target], clip.path) for clip in clips]
    gain_key = hashlib.sha1(json.dumps(gain.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    cache = Path(args.cache) / f"{args.recipe}-train{f'-gain-{gain_key}' if args.fit_gain else ''}.npy"
    if cache.exists():
        features = np.load(cache)
    else:
        features = window_features(vocabulary, [path for _, path in todo] + background, HEAD["copies"],
                                   what="training clips", placed=HEAD["placed"], contexts=contexts,
                                   window_gain=args.fit_gain)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, features)
    sets = {name: list(resolve_label_set(name).names) for name in DATASET_LABELS.values()}
    head_names = [f"{name}/{label}" for name, labels in sets.items() for label in labels]
    targets = head_targets([name for name, _ in todo], len(background), 1 + HEAD["copies"] + HEAD["placed"],
                           [label for labels in sets.values() for label in labels])
    assert len(targets) == len(features), "the cached features are of other clips: remove the cache"
    head = Head.from_arrays(fit_mlp(features, targets, HEAD["hidden"]), head_input(vocabulary), 1.0)

    # the held-out clips' first windows, at each level, without and with the gain
    variants = [(db, g) for db in LEVELS_DB for g in (None, gain)]
    fe = student.meta.frontend
    cache = Path(args.cache) / f"{args.recipe}-held-{student.meta.model_id}-{gain_key}.npz"
    if cache.exists():
        with np.load(cache) as stored:
            embeddings, heard = stored["embeddings"], stored["heard"]
    else:
        embeddings, heard = [], []
        with select_backend(student, "onnxruntime") as audio, select_backend(vocabulary, graph="vocabulary") as graph:
            name = vocabulary.meta.vocabulary["graph"].inputs[0]
            for _, _, path in bar(held, desc="held-out clips", unit="clip"):
                x = read_audio(str(path), fe.sample_rate)
                mels = np.stack([clip_window(x * np.float32(10 ** (db / 20)), fe, student.meta.clip_seconds, g)
                                 for db, g in variants])[:, None]
                embeddings.append(audio.run({audio.input_names[0]: mels})[audio.output_names[0]])
                heard.append(graph.run({name: mels})[head_input(vocabulary)])
        embeddings, heard = np.stack(embeddings), np.stack(heard)  # [N, variants, ...]
        np.savez(cache, embeddings=embeddings, heard=heard)

    figures = {}
    kinds = np.array([kind for kind, _, _ in held])
    for kind, set_name in DATASET_LABELS.items():
        mine = kinds == kind
        if not mine.any():
            continue
        label_set = resolve_label_set(set_name)
        scorer = Scorer.for_bundle(student.meta, label_embeddings_for(student, label_set), label_set)
        truth = np.array([label_set.names.index(c) for k, c, _ in held if k == kind])
        thresholds = np.array([label.threshold for label in label_set.labels])[truth]
        columns = [head_names.index(f"{set_name}/{label}") for label in label_set.names]
        for v, (db, g) in enumerate(variants):
            p = np.clip(scorer(embeddings[mine, v], None), 1e-7, 1 - 1e-7)
            logits = {"student": np.log(p / (1 - p)), "head": head.logits(heard[mine, v])[:, columns]}
            logits["mixed"] = (1 - HEAD["weight"]) * logits["student"] + HEAD["weight"] * logits["head"]
            for who, z in logits.items():
                own = 1 / (1 + np.exp(-z[np.arange(len(truth)), truth]))
                figures[f"{kind} {db:g} dB {'gain' if g else 'plain'} {who}"] = {
                    "top1": round(float((z.argmax(1) == truth).mean()), 4),
                    "recall@thr": round(float((own >= thresholds).mean()), 4), "clips": int(len(truth))}
    print(f"{'clips, level, gain, scores':<40} {'top-1':>7} {'recall@thr':>10}")
    for key, value in figures.items():
        print(f"{key:<40} {value['top1']:>7.3f} {value['recall@thr']:>10.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"gain": gain.to_dict(), "figures": figures}, indent=1))


if __name__ == "__main__":
    main()
