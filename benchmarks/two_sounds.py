"""Two sounds at once: does each still start its event when another plays beside it?

    SEMANTICAC_DATA=../shared/data python benchmarks/two_sounds.py [--bundle B] [--fold F] [--pairs 2] [--db 0] \
        [--turns S] [--json OUT]
    # about 5 min on 2 cores with the defaults
    # a CV split's bundle on the UrbanSound8K fold it held out, e.g. runs/bundles/lv1 --fold 2

A street has a siren over idling engines, children over a drill. Each urban class is paired with
every other: --pairs random pairs per two classes of UrbanSound8K development clips (foreground,
salience 1, at least 4 s: gun_shot has one, and is left out; their first 4 s at -25 dBFS RMS, the
second --db below the first), each mix 1 s after the last and followed by 10 s of silence, all in
one stream, through the product's own pipeline (benchmarks/trust.py's run: edge.listen, `--labels
urban`, default thresholds and listen settings). The same clips alone, in streams of their own, are
the baseline. A sound is named when an event of its label starts from its onset to 3 s after it ends.

Printed, per class: named alone, named in a mix (of those named alone), and overall: mixes with
both named, one, none. With --windows, before the events: each mix's window as the device scores it
(the mix, then 1 s of silence: one 5 s window; the student alone, student + head as shipped, the head
alone): how often each label reaches its threshold, both do (the scores, and what the events read:
the agreement's evidence), both are the top 2, and the mean of the weaker of the two scores.

With --turns S the two sounds take turns instead (a siren's wails with barks between them): S
seconds of the first, S of the second, and so on through both clips' 4 s (an 8 s mix, each sound
there half the time); each sound's baseline is then its own turns with silence in the other's.

The shipped bundle trained on these very clips, each alone: a bundle's recall here is an upper
bound on unseen recordings. A CV split's bundle on the fold it held out (--fold) is the honest
measure.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import random
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from trust import RATE, run, write

from edge.capture.audio import read_audio

SECONDS = 4.0
LEVEL_DBFS = -25.0
GAP_S = 10.0
LATE_S = 3.0  # an event may start this long after its sound ended (smoothing, min_duration)
MIN_CLIPS = 5  # a class with fewer such clips is left out (gun_shot: one clip of 4 s or more)


def clips_by_class(data: Path, fold: int | None = None) -> dict[str, list[Path]]:
    """Each class's foreground clips of at least SECONDS (a class with fewer than MIN_CLIPS left out),
    of one fold if given."""
    rows = csv.DictReader(open(data / "us8k" / "meta.csv", newline=""))
    found: dict[str, list[Path]] = {}
    for row in rows:
        path = data / "us8k" / "audio" / f"fold{row['fold']}" / row["slice_file_name"]
        if fold is not None and row["fold"] != str(fold):
            continue
        if row["salience"] == "1" and float(row["end"]) - float(row["start"]) >= SECONDS and path.exists():
            found.setdefault(row["class"], []).append(path)
    return {label: paths for label, paths in found.items() if len(paths) >= MIN_CLIPS}


def first_seconds(path: Path) -> np.ndarray:
    x = read_audio(path, RATE)[: round(SECONDS * RATE)]
    return x * np.float32(10 ** (LEVEL_DBFS / 20) / max(float(np.sqrt(np.mean(x**2))), 1e-9))


def in_turns(first: np.ndarray, second: np.ndarray, seconds: float) -> np.ndarray:
    """`seconds` of `first`, then of `second`, and so on until both are used up (--turns)."""
    step = max(1, round(seconds * RATE))
    turns = [
        part
        for i in range(0, max(first.size, second.size), step)
        for part in (first[i : i + step], second[i : i + step])
    ]
    return np.concatenate(turns)


def named(bundle: str | None, items: list[np.ndarray], labels: list[set[str]], path: Path) -> list[set[str]]:
    """The labels of `labels[i]` whose event starts while item i plays (or LATE_S after), all in one stream."""
    gap = np.zeros(round(GAP_S * RATE), np.float32)
    parts, spans, at = [np.zeros(RATE, np.float32)], [], 1.0
    for x in items:
        spans.append((at, at + x.size / RATE + LATE_S))
        parts += [x, gap]
        at += (x.size + gap.size) / RATE
    record = run(bundle, "urban", write(path, np.concatenate(parts)))
    return [{label for t, label in record.start_times if a <= t < b} & wanted for (a, b), wanted in zip(spans, labels)]


def window_figures(bundle_path: str | None, mixes: list[tuple], items: list[np.ndarray]) -> None:
    """Print, per head weight, what each mix's first window scores (--windows; the module docstring)."""
    import dataclasses

    from edge.bundle import resolve_bundle
    from edge.labels.embeddings import label_embeddings_for
    from edge.labels.labelset import resolve_label_set
    from edge.scoring import Scorer
    from edge.vocabulary import Vocabulary
    from train.vocabulary_trust import first_windows

    bundle = resolve_bundle(bundle_path)
    vocabulary = Vocabulary.from_bundle(bundle)
    urban = resolve_label_set("urban")
    thresholds = np.array([label.threshold for label in urban.labels])
    a = np.array([urban.names.index(first) for first, *_ in mixes])
    b = np.array([urban.names.index(second) for _, second, *_ in mixes])
    rows = np.arange(len(mixes))
    with tempfile.TemporaryDirectory() as tmp:
        silence = np.zeros(RATE, np.float32)
        paths = [write(Path(tmp) / f"mix{i}.wav", np.concatenate([x, silence])) for i, x in enumerate(items)]
        embeddings, scores = first_windows(bundle, paths, "mixes")
    weights = (0.0, vocabulary.head.weight, 1.0) if vocabulary is not None and vocabulary.head is not None else (None,)
    for weight in weights:
        if weight is None:
            scorer = Scorer.for_bundle(bundle.meta, label_embeddings_for(bundle, urban), urban, vocabulary)
        else:
            head = dataclasses.replace(vocabulary.head, weight=weight)
            scorer = Scorer.for_bundle(
                bundle.meta,
                label_embeddings_for(bundle, urban),
                urban,
                vocabulary=dataclasses.replace(vocabulary, head=head),
            )
        p, evidence = scorer.with_evidence(embeddings, scores)
        top2 = np.argsort(-p, axis=1)[:, :2]
        paired = np.mean([a[i] in top2[i] and b[i] in top2[i] for i in rows])
        for what, s in (("scores", p), ("evidence", evidence)):
            first, second = s[rows, a] >= thresholds[a], s[rows, b] >= thresholds[b]
            print(
                f"head weight {'-' if weight is None else f'{weight:.2f}'} {what:8s}: first at its threshold "
                f"{first.mean():.0%}, second {second.mean():.0%}, both {np.mean(first & second):.0%}, neither "
                f"{np.mean(~first & ~second):.0%}; both the top 2 {paired:.0%}; the weaker of the two scores "
                f"{np.minimum(s[rows, a], s[rows, b]).mean():.2f} on average"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=None)
    parser.add_argument("--data", default=os.environ.get("SEMANTICAC_DATA", "../shared/data"))
    parser.add_argument("--fold", type=int, default=None, help="clips of this UrbanSound8K fold only (default: all)")
    parser.add_argument("--pairs", type=int, default=2, help="mixes per two classes")
    parser.add_argument("--db", type=float, default=0.0, help="the second sound this far below the first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--windows", action="store_true", help="also each mix's window as the device scores it")
    parser.add_argument(
        "--turns", type=float, default=0.0, help="the sounds take turns of this many seconds (0: at once)"
    )
    args = parser.parse_args()
    by_class = clips_by_class(Path(args.data), args.fold)
    rng = random.Random(args.seed)
    mixes = [
        (a, b, rng.choice(by_class[a]), rng.choice(by_class[b]))
        for a, b in itertools.combinations(sorted(by_class), 2)
        for _ in range(args.pairs)
    ]
    quieter = np.float32(10 ** (-args.db / 20))
    with tempfile.TemporaryDirectory() as tmp:
        firsts = [first_seconds(pa) for _, _, pa, _ in mixes]
        seconds = [first_seconds(pb) * quieter for _, _, _, pb in mixes]
        if args.turns > 0:  # each alone keeps its turns, with silence in the other's
            both = [in_turns(x, y, args.turns) for x, y in zip(firsts, seconds)]
            firsts, seconds = (
                [in_turns(x, np.zeros_like(y), args.turns) for x, y in zip(firsts, seconds)],
                [in_turns(np.zeros_like(x), y, args.turns) for x, y in zip(firsts, seconds)],
            )
        else:
            both = [x + y for x, y in zip(firsts, seconds)]
        if args.windows:
            window_figures(args.bundle, mixes, both)
        alone_a = named(args.bundle, firsts, [{a} for a, *_ in mixes], Path(tmp) / "a.wav")
        alone_b = named(args.bundle, seconds, [{b} for _, b, *_ in mixes], Path(tmp) / "b.wav")
        mixed = named(args.bundle, both, [{a, b} for a, b, *_ in mixes], Path(tmp) / "m.wav")
    alone, kept, both = Counter(), Counter(), Counter()
    per_class = Counter()
    for (a, b, *_), na, nb, nm in zip(mixes, alone_a, alone_b, mixed):
        for label, heard in ((a, na), (b, nb)):
            per_class[label] += 1
            if heard:
                alone[label] += 1
                kept[label] += label in nm
        both[len(nm)] += 1
    table = {
        label: {"sounds": per_class[label], "named_alone": alone[label], "named_in_mix": kept[label]}
        for label in sorted(per_class)
    }
    where = f" of fold {args.fold}" if args.fold is not None else ""
    how = f"taking turns of {args.turns:g} s" if args.turns > 0 else "at once"
    print(
        f"{len(mixes)} mixes of two urban sounds{where}, {how} (the second {args.db:g} dB below the first), "
        "--labels urban"
    )
    print(f"{'class':18s} {'sounds':>6s} {'alone':>6s} {'in a mix':>9s}")
    for label, row in table.items():
        share = row["named_in_mix"] / row["named_alone"] if row["named_alone"] else float("nan")
        print(f"{label:18s} {row['sounds']:6d} {row['named_alone']:6d} {row['named_in_mix']:6d} ({share:.0%})")
    total_alone, total_kept = sum(alone.values()), sum(kept.values())
    print(
        f"named alone {total_alone}/{2 * len(mixes)}; of those, named in the mix {total_kept} "
        f"({total_kept / max(total_alone, 1):.0%}); mixes with both named {both[2]}, one {both[1]}, none {both[0]}"
    )
    if args.json:
        result = {
            "mixes": len(mixes),
            "fold": args.fold,
            "db": args.db,
            "turns": args.turns,
            "per_class": table,
            "both": both[2],
            "one": both[1],
            "none": both[0],
            "named_alone": total_alone,
            "named_in_mix": total_kept,
        }
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
