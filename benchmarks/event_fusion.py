"""Which voter starts an event: the student and the vocabulary head, window by window, on held-out
audio, and the event logic replayed for other ways of combining them.

    SEMANTICAC_DATA=../shared/data python benchmarks/event_fusion.py \\
        --bundle runs/bundles/cv3 --recipe demo-distill-cv3 [--quieter 20]

A bundle with a head scores each trained label with the mean of two logits, the student's and the
head's, and since 2026-12-05 (model.json vocabulary.head.agree) counts a window towards a label's
event only where the student alone scores it at least 0.5 (edge.vocabulary). This runs the
recipe's held-out non-urban ESC-50 clips as one stream through `listen --labels urban`
(edge.listen, as benchmarks/heldout_false_alarms.py, with the same stream), records what the
graphs give for every window, and for each event the pipeline started prints the student's, the
head's and the fused score of its label in the window that started it, and what the vocabulary
heard there. Then it replays the same windows through the device's
smoothing and event logic (edge.scoring.Smoother, edge.events.EventDetector, listen's defaults,
the label set's thresholds) for each way of combining them, and scores the recipe's held-out clips
(first windows, as benchmarks/vocabulary_head.py) under each:

  shipped            the bundle as it is (the replay must start the pipeline's events: checked)
  mean of the logits the head always mixed in (the bundles before agree)
  student alone      the head's weight 0
  head lowers only   min(mean, student): the head can hold a label back, never raise it
  student at 0.5     the mean, but for events a window's label counts only where the student alone
                     scores it at least 0.5 (the scores shown, and so top-1, are the mean's): the
                     demo bundle's since 2026-12-05 (model.json vocabulary.head.agree)
  head alone         the head's weight 1

Printed per variant: the stream's events (per hour, and their labels); held-out top-1 and the
share of held-out clips whose own label reaches its threshold (recall@thr), ESC-50 (over `esc50`)
and UrbanSound8K (over `urban`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
from trust import URBAN_IN_ESC50, Record, stream_false_alarms

from edge.bundle import read_bundle
from edge.events import EventDetector
from edge.labels.embeddings import label_embeddings_for
from edge.labels.labelset import resolve_label_set
from edge.listen import ListenOptions
from edge.scoring import Scorer, Smoother
from edge.vocabulary import Vocabulary

AGREE = 0.5  # "student at 0.5": model.json vocabulary.head.agree of the demo bundle
DATASET_LABELS = {"esc50": "esc50", "us8k": "urban"}


def record_stream(bundle_path: str, paths: list[Path], quieter: float, tmp: Path) -> tuple[dict, Record, dict]:
    """The stream through `listen --labels urban` (trust.stream_false_alarms: its figures), its
    windows, and the audio graph's embeddings and the vocabulary graph's rows of every window, as the
    pipeline's Scorer was given them."""
    given: dict[str, list] = {"emb": [], "voc": []}
    scored = Scorer.with_evidence

    def recording(self, audio, vocabulary=None):
        given["emb"].append(np.array(audio))
        given["voc"].append(np.array(vocabulary))
        return scored(self, audio, vocabulary)

    windows = Record()
    with mock.patch.object(Scorer, "with_evidence", recording):
        figures = stream_false_alarms(bundle_path, "urban", paths, tmp / "stream.wav", quieter, windows)
    return {"emb": np.concatenate(given["emb"]), "voc": np.concatenate(given["voc"])}, windows, figures


def variant_scores(scorer: Scorer, emb: np.ndarray, voc: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Variant -> (the scores shown: top-1, the scores events read)."""
    mean, student, head = (changed(scorer, emb, voc, head_weight=weight)[0] for weight in (None, 0.0, 1.0))
    lowered = np.minimum(mean, student)  # the mix at most the student's (monotone calibration and vetoes)
    return {"shipped": scorer.with_evidence(emb, voc), "mean of the logits": (mean, mean),
            "student alone": (student, student), "head lowers only": (lowered, lowered),
            f"student at {AGREE:g}": changed(scorer, emb, voc, head_agree=AGREE), "head alone": (head, head)}


def changed(scorer: Scorer, emb: np.ndarray, voc: np.ndarray, head_weight: float | None = None,
            head_agree: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores shown, scores events read) with the head's weight set to `head_weight` (None: the
    bundle's) and events needing the student alone at `head_agree` (None: no agreement)."""
    shipped = scorer.fusion
    weight = shipped.head_weight if head_weight is None else head_weight
    scorer.fusion = dataclasses.replace(shipped, head_weight=weight, head_agree=head_agree)
    try:
        return scorer.with_evidence(emb, voc)
    finally:
        scorer.fusion = shipped


def replay(label_set, scores: np.ndarray, windows: Record) -> list[str]:
    """The labels of the events the pipeline's smoothing and event logic start on these scores."""
    defaults = ListenOptions(labels=label_set.name)
    detector = EventDetector.from_label_set(label_set, release_ratio=defaults.release,
                                            min_duration=defaults.min_duration)
    smoother = Smoother(defaults.smooth)
    return [event.label for t, row, gated in zip(windows.t, scores, windows.gated)
            for event in detector.update(t, smoother.update(np.zeros_like(row) if gated else row))
            if event.kind == "start"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="a bundle with a head, trained by --recipe")
    parser.add_argument("--recipe", required=True, help="the recipe that holds its clips out")
    parser.add_argument("--quieter", type=float, default=0.0, metavar="DB",
                        help="the stream DB dB down over a microphone's floor (as heldout_false_alarms.py)")
    args = parser.parse_args()
    from train.data.datasets import split_clips
    from train.recipe import load_train_config
    from train.vocabulary_trust import first_windows

    bundle = read_bundle(args.bundle)
    vocabulary = Vocabulary.from_bundle(bundle)
    if vocabulary is None or vocabulary.head is None:
        parser.error(f"--bundle {args.bundle} has no vocabulary head: nothing to compare")
    specs = {spec.kind: spec for spec in load_train_config(args.recipe).datasets}
    held, names = split_clips(specs["esc50"], "val")
    held += split_clips(specs["esc50"], "heldout")[0] if specs["esc50"].holdout else []
    paths = sorted(Path(c.path) for c in held if names[c.target] not in URBAN_IN_ESC50)
    urban = resolve_label_set("urban")
    with tempfile.TemporaryDirectory() as tmp:
        graphs, windows, figures = record_stream(args.bundle, paths, args.quieter, Path(tmp))
    hours = figures["hours"]
    scorer = Scorer.for_bundle(bundle.meta, label_embeddings_for(bundle, urban), urban, vocabulary=vocabulary)
    variants = variant_scores(scorer, graphs["emb"], graphs["voc"])
    print(f"{len(paths)} held-out non-urban clips, {hours * 60:.0f} min"
          + (f", {args.quieter:g} dB down" if args.quieter else "") + f": {len(windows.start_times)} events")
    fused, student, head = (variants[name][0] for name in ("shipped", "student alone", "head alone"))
    row = np.asarray(graphs["voc"])[:, : len(vocabulary.names)]
    ends = np.array(windows.t)
    for started in figures["heard_in"]:
        t, label, clip = started["t"], started["label"], started["clip"]
        i, k = int(np.argmin(np.abs(ends - t))), urban.names.index(label)
        heard = ", ".join(f"{vocabulary.names[j]} {row[i, j]:.2f}" for j in np.argsort(-row[i])[:3])
        print(f"  t {t:7.1f}  {label:<16} fused {fused[i, k]:.2f}  student {student[i, k]:.2f}  "
              f"head {head[i, k]:.2f}  in {clip}; the vocabulary hears {heard}")
    held_out = {}
    for kind, spec in specs.items():
        clips, classes = split_clips(spec, "val" if spec.val_fraction else "test")
        label_set = resolve_label_set(DATASET_LABELS[kind])
        emb, voc = first_windows(bundle, [c.path for c in clips], f"{kind} held out")
        set_scorer = Scorer.for_bundle(bundle.meta, label_embeddings_for(bundle, label_set), label_set,
                                       vocabulary=vocabulary)
        truth = np.array([label_set.names.index(classes[c.target]) for c in clips])
        thresholds = np.array([label.threshold for label in label_set.labels])[truth]
        held_out[kind] = (variant_scores(set_scorer, emb, voc), truth, thresholds)
    print(f"{'variant':<18} {'events':>6} {'per hour':>8}  {'ESC-50 top-1 / recall@thr':>26}  "
          f"{'UrbanSound8K top-1 / recall@thr':>32}  labels")
    for name, (_, events) in variants.items():
        started = replay(urban, events, windows)
        if name == "shipped" and started != windows.starts:
            raise SystemExit(f"the replay started {started}, the pipeline {windows.starts}: they must agree")
        cells = []
        for kind in ("esc50", "us8k"):
            by_variant, truth, thresholds = held_out[kind]
            shown, scored = by_variant[name]
            cells.append(f"{np.mean(shown.argmax(1) == truth):.1%} / "
                         f"{np.mean(scored[np.arange(len(truth)), truth] >= thresholds):.1%}")
        print(f"{name:<18} {len(started):>6} {len(started) / hours:>8.1f}  {cells[0]:>26}  {cells[1]:>32}  "
              f"{', '.join(started)}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
