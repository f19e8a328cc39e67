"""Two sounds in one window, scored one time column at a time: what the trained student can tell
apart before any retraining.

    SEMANTICAC_DATA=../shared/data python benchmarks/time_columns.py \
        --checkpoint runs/demo-distill-level-cv1/best.pt --bundle runs/bundles/lv1 --fold 2
    # CV split 1's student on the UrbanSound8K fold it held out: about 1 min on 2 cores

The student scores a window with one audio vector, the mean of its CSCM map (train.model.cscm) over
time and frequency, against each label's text: sigmoid(scale * cosine + bias). Two sounds in one
window then get one vector between them (benchmarks/two_sounds.py: one of them, or neither, starts
its event). `CSCM.columns` gives one vector per row of the map instead (16 rows of 0.31 s for a 5 s
window, whose mean is the pooled vector); each is scored the same way and a label's score is their
max (`max`), or the max over 1 s patches, the means of 3 neighbouring rows (`patch`).

A max is higher than a mean, so each pooling gets its own threshold: the one at which the held-out
fold's clean clips (each clip's first window, as the device feeds it: the bundle's frontend and
window gain) reach a wrong label as often as the pooled scores do at 0.5 (not the shipped
thresholds, not the head: the student alone); with --wrong RATE, at that rate, the pooled scores
too, so that two students compare at one rate. Printed for each pooling at that threshold:
- clean clips: top-1, the true label at the threshold (recall), a wrong label at it;
- two sounds at once (two_sounds.py's mixes: foreground clips of two classes, their first 4 s each
  at -25 dBFS RMS, added, then 1 s of silence: one 5 s window): both labels at the threshold, at
  least one, a third label;
- two sounds in turns (the first 2 s of one clip, then the first 2 s of the other, then 1 s of
  silence): the same.

With --fused, the same mixes' windows as the device would score them with the bundle's fusion (its
vocabulary head mixed in, the vetoes, the agreement; each label at its threshold in `urban`), the
student's logit as exported (pooled) against the higher of it and the rows' max shifted down by the
logit of the `max` threshold above (so that row scores read on the pooled scale), with the head at
its weight and at 0: whether the head, fitted on the whole window, keeps what the rows find.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import random
import tempfile
from pathlib import Path

import numpy as np
from trust import write
from two_sounds import RATE, clips_by_class, first_seconds

from edge.bundle import resolve_bundle
from edge.capture.audio import read_audio
from edge.labels.embeddings import label_embeddings_for
from edge.labels.labelset import resolve_label_set

PATCH_ROWS = 3  # 3 rows of 0.31 s: about YAMNet's 0.96 s patch


def poolings(model, bundle, windows: list[np.ndarray], embeddings: np.ndarray) -> dict[str, np.ndarray]:
    """Each pooling's [N, K] sigmoid scores of the windows (the module docstring)."""
    import torch

    scale, bias = bundle.meta.logit_scale, bundle.meta.scoring["logit_bias"]
    texts = torch.from_numpy(embeddings)

    def scored(vectors: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(scale * torch.nn.functional.normalize(vectors, dim=-1) @ texts.T + bias).numpy()

    out: dict[str, list[np.ndarray]] = {"pooled": [], "max": [], "patch": []}
    with torch.no_grad():
        for start in range(0, len(windows), 32):
            trunk = model.audio(torch.from_numpy(np.stack(windows[start : start + 32]))[:, None])
            columns = model.head.columns(trunk)  # B, rows, C
            out["pooled"].append(scored(model.head(trunk)))
            out["max"].append(scored(columns).max(1))
            out["patch"].append(scored(columns.unfold(1, PATCH_ROWS, 1).mean(-1)).max(1))
    return {kind: np.concatenate(parts) for kind, parts in out.items()}


def fused_figures(
    bundle,
    urban,
    mixes: dict[str, list[np.ndarray]],
    row_scores: dict[str, np.ndarray],
    pairs: np.ndarray,
    threshold: float,
) -> None:
    """--fused (the module docstring): `mixes` the audio of each kind of mix, `row_scores` their scores
    by max over rows (poolings' `max`), `threshold` that pooling's."""
    import dataclasses

    from edge.scoring import Scorer, logit
    from edge.vocabulary import Vocabulary
    from train.vocabulary_trust import first_windows

    vocabulary = Vocabulary.from_bundle(bundle)
    if vocabulary is None or vocabulary.head is None:
        raise SystemExit(f"--fused: bundle {bundle.path} has no vocabulary head to fuse with")
    embeddings = label_embeddings_for(bundle, urban)
    thresholds = np.array([label.threshold for label in urban.labels])
    shift = float(logit(np.array(threshold)))
    rows = np.arange(len(pairs))
    for name, audio in mixes.items():
        with tempfile.TemporaryDirectory() as tmp:
            paths = [write(Path(tmp) / f"mix{i}.wav", x) for i, x in enumerate(audio)]
            vectors, vocabulary_rows = first_windows(bundle, paths, name)
        row_logits = logit(row_scores[name].astype(np.float64)) - shift  # the sigmoid's own logits, shifted
        for weight in (vocabulary.head.weight, 0.0):
            head = dataclasses.replace(vocabulary.head, weight=weight)
            scorer = Scorer.for_bundle(bundle.meta, embeddings, urban, dataclasses.replace(vocabulary, head=head))
            pooled = scorer._student(vectors)
            for kind, logits in (("pooled", pooled), ("max over rows", np.maximum(pooled, row_logits))):
                scores = scorer._scores(logits, vocabulary_rows)
                first = scores[rows, pairs[:, 0]] >= thresholds[pairs[:, 0]]
                second = scores[rows, pairs[:, 1]] >= thresholds[pairs[:, 1]]
                print(
                    f"fused, {name}, head weight {weight:g}, student {kind}: both at their thresholds "
                    f"{np.mean(first & second):.0%}, one or both {np.mean(first | second):.0%}"
                )


def wrong_rate(scores: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    """The share of clips where a label other than the true one reaches `threshold`."""
    over = scores >= threshold
    over[np.arange(len(truth)), truth] = False
    return float(over.any(1).mean())


def matched_threshold(scores: np.ndarray, truth: np.ndarray, target: float) -> float:
    grid = np.linspace(0.3, 0.999, 700)
    return float(grid[np.argmin([abs(wrong_rate(scores, truth, t) - target) for t in grid])])


def pair_figures(scores: np.ndarray, pairs: np.ndarray, threshold: float) -> str:
    rows = np.arange(len(pairs))
    first, second = scores[rows, pairs[:, 0]] >= threshold, scores[rows, pairs[:, 1]] >= threshold
    others = (scores >= threshold).copy()
    others[rows, pairs[:, 0]] = others[rows, pairs[:, 1]] = False
    both, either = np.mean(first & second), np.mean(first | second)
    return f"both {both:4.0%}, one or both {either:4.0%}, a third {others.any(1).mean():4.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="the student's checkpoint (semanticac-train fit)")
    parser.add_argument("--bundle", required=True, help="its exported bundle (frontend, gain, label texts)")
    parser.add_argument("--data", default=os.environ.get("SEMANTICAC_DATA", "../shared/data"))
    parser.add_argument("--fold", type=int, required=True, help="the UrbanSound8K fold the student never trained on")
    parser.add_argument("--pairs", type=int, default=2, help="mixes per two classes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fused", action="store_true", help="also the mixes through the bundle's fusion")
    parser.add_argument(
        "--wrong",
        type=float,
        default=None,
        help="read every pooling at this share of clean clips with a wrong label at the threshold "
        "(default: the pooled scores' at 0.5): two students compared at one rate",
    )
    args = parser.parse_args()

    import torch

    from train.checkpoint import model_from_checkpoint
    from train.vocabulary_trust import window_of

    torch.set_num_threads(os.cpu_count() or 1)
    bundle = resolve_bundle(args.bundle)
    model, _, _ = model_from_checkpoint(args.checkpoint)
    urban = resolve_label_set("urban")
    embeddings = label_embeddings_for(bundle, urban).embeddings
    data = Path(args.data)

    clean, truth = [], []
    for row in csv.DictReader(open(data / "us8k" / "meta.csv", newline="")):
        if row["fold"] == str(args.fold):
            path = data / "us8k" / "audio" / f"fold{row['fold']}" / row["slice_file_name"]
            clean.append(window_of(read_audio(str(path), RATE), bundle))
            truth.append(urban.names.index(row["class"]))
    truth = np.array(truth)

    by_class = clips_by_class(data, args.fold)
    rng = random.Random(args.seed)
    chosen = [
        (a, b, rng.choice(by_class[a]), rng.choice(by_class[b]))
        for a, b in itertools.combinations(sorted(by_class), 2)
        for _ in range(args.pairs)
    ]
    pairs = np.array([(urban.names.index(a), urban.names.index(b)) for a, b, *_ in chosen])
    silence = np.zeros(RATE, np.float32)
    mixes: dict[str, list[np.ndarray]] = {"at once": [], "in turns": []}
    for _, _, pa, pb in chosen:
        xa, xb = first_seconds(pa), first_seconds(pb)
        mixes["at once"].append(np.concatenate([xa + xb, silence]))
        mixes["in turns"].append(np.concatenate([xa[: 2 * RATE], xb[: 2 * RATE], silence]))

    sets = {"clean": clean, **{name: [window_of(x, bundle) for x in audio] for name, audio in mixes.items()}}
    pooled = {name: poolings(model, bundle, windows, embeddings) for name, windows in sets.items()}
    target = wrong_rate(pooled["clean"]["pooled"], truth, 0.5) if args.wrong is None else args.wrong
    print(
        f"UrbanSound8K fold {args.fold}: {len(truth)} clean clips; {len(pairs)} mixes of "
        f"{len(by_class)} classes ({', '.join(sorted(by_class))}); the student alone"
    )
    thresholds = {}
    for kind in ("pooled", "max", "patch"):
        scores = pooled["clean"][kind]
        at_half = kind == "pooled" and args.wrong is None
        threshold = thresholds[kind] = 0.5 if at_half else matched_threshold(scores, truth, target)
        recall = np.mean(scores[np.arange(len(truth)), truth] >= threshold)
        print(
            f"{kind:6s} threshold {threshold:.3f} | clean: top-1 {np.mean(scores.argmax(1) == truth):.1%}, "
            f"recall {recall:.1%}, a wrong label {wrong_rate(scores, truth, threshold):.1%} | "
            f"at once: {pair_figures(pooled['at once'][kind], pairs, threshold)} | "
            f"in turns: {pair_figures(pooled['in turns'][kind], pairs, threshold)}"
        )
    if args.fused:
        fused_figures(bundle, urban, mixes, {name: pooled[name]["max"] for name in mixes}, pairs, thresholds["max"])


if __name__ == "__main__":
    main()
