"""New labels as a user phrases them: does the wording of a label added by YAML change what it wins?

    SEMANTICAC_DATA=../shared/data python benchmarks/label_phrasing.py \\
        --bundle runs/bundles/dzs --recipe demo-distill-zeroshot

The recipe's never-trained ESC-50 classes (its `holdout`) are written as new labels in label-set
YAML files, as a site would write them, three ways: ESC-50's own class names (`frog`), and two
paraphrases a person might type instead (`frogs_croaking`, `a_frog`; underscores are read as
spaces, so the label's text is "an audio clip of frogs croaking"); plus the class name with the
first paraphrase as an extra prompt (`prompts:`, averaged). Each file is read by the product's own
loader (edge.labels.resolve_label_set) and scored as the device scores it (the bundle's graphs in
ONNX Runtime, edge's Scorer, each held-out clip's first 5 s window, tiled when shorter). Printed:
top-1 of the classes' held-out clips among the new labels alone, and beside `urban`'s trained
labels, overall and per class, and where a class named less than half the time went (and what
the vocabulary hears on its clips, on average). A class without paraphrases is an error naming it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from edge.bundle import read_bundle
from edge.labels.embeddings import label_embeddings_for
from edge.labels.labelset import resolve_label_set
from edge.scoring import Scorer
from edge.vocabulary import Vocabulary

# ESC-50 class -> two phrasings a person might write for it (label names: letters, digits, _ . -)
PARAPHRASES = {
    "frog": ("frogs_croaking", "a_frog"),
    "crow": ("a_crow_cawing", "crows"),
    "chirping_birds": ("birdsong", "birds_singing"),
    "thunderstorm": ("thunder", "a_storm_with_thunder_and_rain"),
    "coughing": ("a_person_coughing", "cough"),
    "drinking_sipping": ("someone_slurping_a_drink", "sipping"),
    "can_opening": ("opening_a_soda_can", "a_can_of_beer_being_opened"),
    "glass_breaking": ("glass_shattering", "a_window_smashed"),
    "pig": ("a_pig_oinking", "pigs_grunting"),
    "hand_saw": ("sawing_wood_with_a_handsaw", "handsaw"),
    "engine": ("a_motor_running", "engine_noise"),
    "insects": ("buzzing_insects", "a_fly_buzzing"),
    "crackling_fire": ("a_fire_crackling", "campfire"),
    "pouring_water": ("water_being_poured", "filling_a_glass_with_water"),
    "clapping": ("hands_clapping", "applause"),
    "brushing_teeth": ("someone_brushing_their_teeth", "toothbrush"),
    "keyboard_typing": ("typing_on_a_keyboard", "computer_keyboard"),
    "clock_alarm": ("an_alarm_clock_ringing", "alarm_clock"),
    "siren": ("an_ambulance_siren", "police_siren"),
    "airplane": ("a_plane_flying_over", "jet_aircraft"),
}
WORDINGS = ("class names", "paraphrase 1", "paraphrase 2", "class name + paraphrase 1 as a prompt")


def label_entries(classes: list[str], wording: int) -> list:
    """The YAML `labels:` entries for the classes in one wording."""
    if wording == 0:
        return list(classes)
    if wording == 3:
        return [{"name": c, "prompts": [f"an audio clip of {PARAPHRASES[c][0].replace('_', ' ')}"]} for c in classes]
    return [PARAPHRASES[c][wording - 1] for c in classes]


def write_set(folder: Path, name: str, entries: list) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "prompt": "an audio clip of {label}", "threshold": 0.5,
                                    "labels": entries}, sort_keys=False), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="a bundle with a vocabulary branch, trained by --recipe")
    parser.add_argument("--recipe", required=True, help="a recipe that holds ESC-50 classes out (data: holdout)")
    args = parser.parse_args()
    from train.data.datasets import split_clips
    from train.recipe import load_train_config
    from train.vocabulary_trust import first_windows

    bundle = read_bundle(args.bundle)
    vocabulary = Vocabulary.from_bundle(bundle)
    if vocabulary is None:
        parser.error(f"--bundle {args.bundle} has no vocabulary branch: new labels need one")
    spec = next((s for s in load_train_config(args.recipe).datasets if s.kind == "esc50" and s.holdout), None)
    if spec is None:
        parser.error(f"--recipe {args.recipe} holds no ESC-50 class out: use a zero-shot recipe")
    classes = list(spec.holdout)
    missing = [c for c in classes if c not in PARAPHRASES]
    if missing:
        parser.error(f"no paraphrases for {missing}: add them to PARAPHRASES")
    clips, class_names = split_clips(spec, "heldout")
    truth = np.array([classes.index(class_names[c.target]) for c in clips])
    emb, voc = first_windows(bundle, [c.path for c in clips])
    print(f"{len(clips)} held-out clips of {len(classes)} never-trained classes ({args.recipe}), bundle {args.bundle}")
    with tempfile.TemporaryDirectory() as tmp:
        for wording, title in enumerate(WORDINGS):
            path = write_set(Path(tmp), f"new{wording}", label_entries(classes, wording))
            report(bundle, vocabulary, resolve_label_set(str(path)), emb, voc, truth, classes, title)


def report(bundle, vocabulary, written, emb, voc, truth, classes: list[str], title: str, beside=None,
           below: float = 0.5, alone: bool = True) -> None:
    """Print the top-1 of clips of `classes` (truth: an index into them) among the new labels of
    `written` (one per class, in their order) alone (unless not `alone`) and beside each of `beside`
    {title: trained labels} (default: `urban`'s): overall, per class, and for a class named less than
    `below` of the time, where the rest went and what the vocabulary hears."""
    beside = {"beside urban": resolve_label_set("urban").labels} if beside is None else beside
    sets = ((k, (*written.labels, *v)) for k, v in beside.items())
    for where, labels in ((("alone", written.labels),) if alone else ()) + tuple(sets):
        label_set = dataclasses.replace(written, labels=tuple(labels))
        p = Scorer.for_bundle(bundle.meta, label_embeddings_for(bundle, label_set), label_set,
                              vocabulary=vocabulary)(emb, voc)
        top = p.argmax(1)
        shares = [np.mean(top[truth == k] == k) for k in range(len(classes))]
        per = "  ".join(f"{c} {share:.0%}" for c, share in zip(classes, shares))
        right = int((top == truth).sum())
        print(f"{title:<40} {where:<13} {right:>4}/{len(truth)} {right / len(truth):6.1%}   {per}", flush=True)
        for k, (c, share) in enumerate(zip(classes, shares)):
            if share < below:
                wrong = Counter(label_set.names[j] for j in top[(truth == k) & (top != k)])
                heard = voc[truth == k, :len(vocabulary.names)].mean(axis=0)
                print(f"{'':<55}{c} named: " + ", ".join(f"{n} {m}" for n, m in wrong.most_common(3))
                      + "; the vocabulary hears (mean): "
                      + ", ".join(f"{vocabulary.names[j]} {heard[j]:.2f}" for j in np.argsort(-heard)[:4]))


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
