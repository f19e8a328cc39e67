"""False alarms of `--labels urban` on audio a model never heard, against audio it trained on:
how optimistic thresholds fitted on training audio are. Needs a bundle of a recipe that holds
clips out (demo-distill-cv1: 20 % of ESC-50 and UrbanSound8K fold 2; demo-distill-zeroshot: those
and every clip of 10 ESC-50 classes).

    SEMANTICAC_DATA=../shared/data python benchmarks/heldout_false_alarms.py \\
        --bundle runs/bundles/cv1 --recipe demo-distill-cv1 [--labels urban | --new-labels] [--quieter DB] \\
        [--out runs/facv]

Through the listen pipeline (edge.listen, as benchmarks/trust.py): the recipe's held-out ESC-50
clips of the 46 non-urban classes joined into one stream, and two streams of as many of its
training clips (seeded sample): events per hour, by label; with --quieter 20, each 20 dB down
over a microphone's floor at -65 dBFS (the same sounds further away, which the window gain raises). --new-labels: through `urban` + the 8
labels added by YAML of benchmarks/trust.py (NEW_LABELS: sounds no development set holds), so the
new labels' false alarms on audio beyond what their ceiling was measured on. With --out it also writes what
`semanticac-calibrate thresholds` needs to fit on the held-out audio: OUT/bg/ (links to the
held-out non-urban clips) and OUT/positives.csv (30 held-out UrbanSound8K clips per class, seeded).
With a zero-shot recipe it also writes OUT/new-labels/: what the thresholds of labels added by YAML
need, its never-trained classes standing in for them: urban_new.yaml (`urban` + those classes as
labels, default threshold), positives.csv (every clip of them) and bg/ (links to the held-out
non-urban clips of the classes it trained on):

    semanticac-calibrate thresholds --bundle B --labels OUT/new-labels/urban_new.yaml \
        --background OUT/new-labels/bg --join --only-raise --false-alarms-per-hour 1 \
        --positives OUT/new-labels/positives.csv --plot new.png --out new.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from collections import Counter
from pathlib import Path

from trust import NEW_LABELS, URBAN_IN_ESC50, stream_false_alarms, urban_with

POSITIVES_PER_CLASS = 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="A bundle of --recipe (trained without its held-out clips).")
    parser.add_argument("--recipe", required=True, help="The recipe that bundle was trained with.")
    parser.add_argument("--labels", default="urban")
    parser.add_argument("--new-labels", action="store_true", help="urban + trust.NEW_LABELS instead of --labels")
    parser.add_argument("--held-out-only", action="store_true", help="skip the two streams of training clips")
    parser.add_argument("--quieter", type=float, default=0.0, metavar="DB",
                        help="play each stream DB dB down over a microphone's floor (trust.quiet_floor): "
                             "the same sounds further away")
    parser.add_argument("--out", help="Write OUT/bg/ and OUT/positives.csv for semanticac-calibrate thresholds.")
    args = parser.parse_args()
    from train.data.datasets import split_clips
    from train.recipe import load_train_config

    specs = {spec.kind: spec for spec in load_train_config(args.recipe).datasets}
    held, names = split_clips(specs["esc50"], "val")
    never = split_clips(specs["esc50"], "heldout")[0] if specs["esc50"].holdout else []
    held += never  # a zero-shot recipe's never-trained classes are held out too
    trained, _ = split_clips(specs["esc50"], "train")
    held = [c for c in held if names[c.target] not in URBAN_IN_ESC50]
    trained = [c for c in trained if names[c.target] not in URBAN_IN_ESC50]
    random.Random(0).shuffle(trained)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        labels = str(urban_with(Path(tmp) / "urban_new.yaml", NEW_LABELS)) if args.new_labels else args.labels
        streams = [("held out", held), ("trained on, sample 1", trained[: len(held)]),
                   ("trained on, sample 2", trained[len(held): 2 * len(held)])]
        for name, clips in streams[: 1 if args.held_out_only else 3]:
            paths = sorted(Path(clip.path) for clip in clips)
            figures[name] = stream_false_alarms(args.bundle, labels, paths, Path(tmp) / "stream.wav", args.quieter)
            print(f"{name}: {figures[name]}", flush=True)
    if args.out:
        out = Path(args.out)
        link_clips(out / "bg", held)
        test, classes = split_clips(specs["us8k"], "test")
        random.Random(0).shuffle(test)
        count: Counter = Counter()
        rows = ["path,label"]
        for clip in test:
            if count[classes[clip.target]] < POSITIVES_PER_CLASS:
                count[classes[clip.target]] += 1
                rows.append(f"{clip.path},{classes[clip.target]}")
        (out / "positives.csv").write_text("\n".join(rows) + "\n")
        print(f"wrote {out / 'bg'} ({len(held)} links) and {out / 'positives.csv'} ({len(rows) - 1} clips)")
        if never:
            write_new_labels(out / "new-labels", held, never, names)
    print(json.dumps(figures, indent=1))


def link_clips(folder: Path, clips) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        link = folder / Path(clip.path).name
        link.unlink(missing_ok=True)
        link.symlink_to(Path(clip.path).resolve())


def write_new_labels(out: Path, held, never, names) -> None:
    """OUT/new-labels/: a zero-shot recipe's never-trained classes as labels added to `urban` by YAML."""
    new = sorted({names[clip.target] for clip in never})
    link_clips(out / "bg", [clip for clip in held if names[clip.target] not in new])
    (out / "positives.csv").write_text("path,label\n" + "".join(f"{c.path},{names[c.target]}\n" for c in never))
    urban_with(out / "urban_new.yaml", tuple(new))
    print(f"wrote {out}: urban_new.yaml (urban + {', '.join(new)}), positives.csv ({len(never)} clips), "
          f"bg/ ({len(held) - len(never)} links)")


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
