"""How a bundle's vocabulary branch is fused (edge.vocabulary), figure by figure, as the device
computes it (the bundle's graphs in ONNX Runtime, edge's Scorer), for a range of veto powers,
with and without the trust guard (model.json vocabulary.heard; a bundle without it trusts every
label) and the ceiling new labels are scored against (vocabulary.ceiling).

    SEMANTICAC_DATA=../shared/data python benchmarks/vocabulary_fusion.py \\
        --bundle B --recipe demo-distill-cv1 [--zeroshot-bundle Z --zeroshot-recipe esc50-zeroshot-distill]

For each veto power a, trust r and ceiling (in a window where a new label of the set scores >=
veto_heard, a trained label the vocabulary has a name for, and hears in at least a share r of its
own training clips, scores student * min(1, v / veto_below) ** a; a = 0: the student alone; r = 0:
every named label; new labels always come from the vocabulary, against the bundle's
vocabulary.ceiling or, "off", none; intruders: the bundle's vocabulary.familiar (a class no label
of the set is near, well above what a trained label's own clips made the vocabulary say, holds
it back: edge.vocabulary) or, "off", none, and with them (rows 6 and 7) a new label a trained
label's own sound explains (vocabulary.familiar.explains) as the bundle has it or off, and (the
last row, the shipped configuration) a new label heard far above what a trained label the
vocabulary cannot hear made it say outweighing that label (vocabulary.familiar.outweighs: --outweighs,
else the bundle's, else train.vocabulary_trust's default where its model.json predates it); the
trust shares, the ceiling and the familiar scores are the bundle's, recorded by
`semanticac-train vocabulary-trust`):
  accuracy     top-1 of each held-out clip of the recipe (its first window: 5 s, tiled), over its
               own dataset's label set (esc50 / urban) + a `speech` label added by YAML (so the
               veto applies: the trained labels beside a new one)
  recall@thr   the share of those clips whose own label scores at or above its threshold (0.5 by
               default) in that set: a window that could start the right event
  speech       held-out espeak-ng speech (train.data.background.speech_eval_clips) among `urban`
               + `speech`: the share whose top-1 is speech
  gzsl         with --zeroshot-bundle: the recipe's 10 held-out ESC-50 classes (never trained)
               scored among all 50, and the 40 trained ones' held-out clips; the 10 among
               themselves only (a set of new labels), and among themselves + `urban`'s 10
               trained labels (new labels beside a trained set)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import numpy as np

from edge.bundle import read_bundle
from edge.labels.embeddings import label_embeddings_for
from edge.labels.labelset import Label, LabelSet, resolve_label_set
from edge.scoring import Scorer
from edge.vocabulary import Vocabulary
from train.vocabulary_trust import FAMILIAR, first_windows

# (veto power, veto_reliable, ceiling: the bundle's vocabulary.ceiling, or none, intruders: the
# bundle's vocabulary.familiar, or none, explains: its familiar.explains, or none, outweighs: its
# familiar.outweighs, or none)
VARIANTS = ((0.0, 0.0, False, False, False, False), (0.3, 0.3, False, False, False, False),
            (0.0, 0.0, True, False, False, False), (0.3, 0.3, True, False, False, False),
            (1.0, 0.3, True, False, False, False), (0.3, 0.3, True, True, False, False),
            (0.3, 0.3, True, True, True, False), (0.3, 0.3, True, True, True, True))
DATASET_LABELS = {"esc50": "esc50", "us8k": "urban"}


def scores(bundle, vocabulary, label_set, variant, emb, voc, margin: float | None = None) -> np.ndarray:
    """`margin`: the outweighs margin of the last row (None: the bundle's, else vocabulary_trust's)."""
    power, trust, ceiling, intruders, explains, outweighs = variant
    familiar = vocabulary.familiar
    if familiar is not None:
        if margin is None:
            margin = familiar.outweighs if familiar.outweighs is not None else FAMILIAR["outweighs"]
        familiar = dataclasses.replace(familiar, explains=familiar.explains if explains else None,
                                       outweighs=margin if outweighs else None)
    fused = dataclasses.replace(vocabulary, veto_power=power, veto_reliable=trust,
                                ceiling=vocabulary.ceiling if ceiling else None,
                                familiar=familiar if intruders else None)
    embeddings = label_embeddings_for(bundle, label_set)
    return Scorer.for_bundle(bundle.meta, embeddings, label_set, vocabulary=fused)(emb, voc)


def with_speech(label_set: LabelSet) -> LabelSet:
    speech = Label("speech", (label_set.prompt.format(label="speech"),), 0.5)
    return dataclasses.replace(label_set, name=f"{label_set.name}+speech", labels=(*label_set.labels, speech))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--recipe", required=True, help="the recipe the bundle was cross-validated with")
    parser.add_argument("--zeroshot-bundle")
    parser.add_argument("--zeroshot-recipe", default="esc50-zeroshot-vocab")
    parser.add_argument("--outweighs", type=float, help="the last row's vocabulary.familiar.outweighs (default: "
                        "the bundle's, or train.vocabulary_trust's where its model.json has none)")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    if args.outweighs is not None and not 0 < args.outweighs <= 20:
        parser.error(f"--outweighs {args.outweighs}: a log-odds margin in (0, 20], as model.json allows")
    from train.data.background import speech_eval_clips
    from train.data.cache import default_cache_dir
    from train.data.datasets import split_clips
    from train.recipe import load_train_config

    figures: dict = {a: {} for a in VARIANTS}
    bundle = read_bundle(args.bundle)
    vocabulary = Vocabulary.from_bundle(bundle)
    assert vocabulary is not None, f"{args.bundle} has no vocabulary branch"
    for spec in load_train_config(args.recipe).datasets:
        split = "val" if spec.val_fraction else "test"
        clips, class_names = split_clips(spec, split)
        label_set = with_speech(resolve_label_set(DATASET_LABELS[spec.kind]))
        truth = np.array([label_set.names.index(class_names[c.target]) for c in clips])
        emb, voc = first_windows(bundle, [c.path for c in clips])
        thresholds = np.array([label.threshold for label in label_set.labels])[truth]
        for a in VARIANTS:
            p = scores(bundle, vocabulary, label_set, a, emb, voc, args.outweighs)
            figures[a][f"{spec.kind} {split} accuracy"] = float((p.argmax(1) == truth).mean())
            figures[a][f"{spec.kind} {split} recall@thr"] = float(
                (p[np.arange(len(truth)), truth] >= thresholds).mean()
            )
    speech = speech_eval_clips(default_cache_dir() / "background")
    urban = with_speech(resolve_label_set("urban"))
    emb, voc = first_windows(bundle, speech)
    for a in VARIANTS:
        top = scores(bundle, vocabulary, urban, a, emb, voc, args.outweighs).argmax(1)
        figures[a]["speech named (urban + speech)"] = float((top == len(urban.labels) - 1).mean())
    if args.zeroshot_bundle:
        zs = read_bundle(args.zeroshot_bundle)
        zs_vocabulary = Vocabulary.from_bundle(zs)
        spec = load_train_config(args.zeroshot_recipe).datasets[0]
        esc = resolve_label_set("esc50")
        for split, key in (
            ("val", "gzsl seen (trained classes, held-out clips)"),
            ("heldout", "gzsl unseen (never trained) among all 50"),
        ):
            clips, class_names = split_clips(spec, split)
            truth = np.array([esc.names.index(class_names[c.target]) for c in clips])
            emb, voc = first_windows(zs, [c.path for c in clips])
            for a in VARIANTS:
                top = scores(zs, zs_vocabulary, esc, a, emb, voc, args.outweighs).argmax(1)
                figures[a][key] = float((top == truth).mean())
        clips, class_names = split_clips(spec, "heldout")
        new = [label for label in esc.labels if label.name in spec.holdout]
        emb, voc = first_windows(zs, [c.path for c in clips])
        for name, labels in (
            ("new labels alone", new),
            ("new labels + urban", [*new, *resolve_label_set("urban").labels]),
        ):
            label_set = dataclasses.replace(esc, name=f"esc50-{len(labels)}", labels=tuple(labels))
            truth = np.array([label_set.names.index(class_names[c.target]) for c in clips])
            for a in VARIANTS:
                p = scores(zs, zs_vocabulary, label_set, a, emb, voc, args.outweighs)
                figures[a][f"gzsl unseen among {name}"] = float((p.argmax(1) == truth).mean())
    keys = list(figures[VARIANTS[0]])
    print(f"{'power, trust, ceiling, intruders, explains, outweighs':>52}  " + "  ".join(f"{k[:28]:>28}" for k in keys))
    for a in VARIANTS:
        print(f"{a[0]:>8.1f} {a[1]:>5.1f} {'on' if a[2] else 'off':>6} {'on' if a[3] else 'off':>10} "
              f"{'on' if a[4] else 'off':>9} {'on' if a[5] else 'off':>9}  "
              + "  ".join(f"{figures[a][k]:>28.3f}" for k in keys))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({f"power {a[0]} trust {a[1]} ceiling {'on' if a[2] else 'off'} intruders "
                       f"{'on' if a[3] else 'off'} explains {'on' if a[4] else 'off'} outweighs "
                       f"{'on' if a[5] else 'off'}": v for a, v in figures.items()}, f, indent=1)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
