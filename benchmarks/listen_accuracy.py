"""Accuracy through the product path: `semanticac-edge listen --labels L --input CLIP --fast --json`
on every clip of a split, the clip's answer being the most frequent top-1 over its windows.

    python benchmarks/listen_accuracy.py --bundle B --labels esc50 --config demo-cpu-cv1 --dataset esc50
    python benchmarks/listen_accuracy.py --labels esc50 --root $SEMANTICAC_DATA/esc50 --dataset esc50 --split all

This is how the held-out ESC-50 originals are scored (the training issue's Target), so it runs
the `listen` command itself (in-process, via click's test runner: the same code, the bundle
and the ONNX Runtime session loaded anew for every clip, as a user's command line would).
A tie between labels that are top-1 equally often goes to the larger summed top-1 score.
Clips: a recipe's split of one of its datasets (--config, --dataset, --split val|test|train),
or every clip of a dataset folder (--root, --split all). Labels must name the dataset's
classes (esc50 for ESC-50, urban for UrbanSound8K).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

from click.testing import CliRunner

from edge.cli import main as edge_main
from edge.labels.labelset import resolve_label_set
from train.data import DataSpec, split_clips
from train.data.datasets import read_catalogue
from train.recipe import load_train_config


def clip_answer(json_lines: str) -> tuple[str | None, int]:
    """(most frequent top-1 label, number of windows) of one `listen --json` output."""
    counts, scores = Counter(), defaultdict(float)
    for line in json_lines.splitlines():
        record = json.loads(line)
        if record["type"] == "window" and record["top"]:
            best = record["top"][0]
            counts[best["label"]] += 1
            scores[best["label"]] += best["score"]
    if not counts:
        return None, 0
    label = max(counts, key=lambda name: (counts[name], scores[name]))
    return label, sum(counts.values())


def choose_clips(args) -> list:
    if args.config:
        recipe = load_train_config(args.config)
        specs = [spec for spec in recipe.datasets if spec.kind == args.dataset]
        if not specs:
            raise SystemExit(f"{args.config} has no {args.dataset} dataset: it has "
                             f"{', '.join(spec.kind for spec in recipe.datasets)}")
        clips, names = split_clips(specs[0], args.split)
    else:
        if args.split != "all":
            raise SystemExit("--root reads a whole dataset: use --split all (or --config for a recipe's split)")
        clips, names = read_catalogue(DataSpec(args.dataset, args.root))
    return [(clip.path, names[clip.target]) for clip in clips][:args.limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=None, help="Bundle folder (default: as listen resolves it).")
    parser.add_argument("--labels", required=True, help="Label set naming the dataset's classes: esc50 or urban.")
    parser.add_argument("--dataset", required=True, choices=["esc50", "us8k", "csv"])
    parser.add_argument("--config", default=None, help="A training recipe whose split to score.")
    parser.add_argument("--root", default=None, help="A dataset folder to score whole (with --split all).")
    parser.add_argument("--split", default="val", choices=["train", "val", "test", "all"])
    parser.add_argument("--limit", type=int, default=None, help="Score only the first N clips.")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads.")
    parser.add_argument("--out", default=None, help="Write per-clip answers and the figures as JSON here.")
    args = parser.parse_args()
    if bool(args.config) == bool(args.root):
        raise SystemExit("give --config RECIPE (a split of it) or --root FOLDER (with --split all)")

    label_names = set(resolve_label_set(args.labels).names)
    clips = choose_clips(args)
    missing = sorted({name for _, name in clips} - label_names)
    if missing:
        raise SystemExit(f"label set {args.labels} does not name the classes {missing[:5]}: use the dataset's own set")
    command = ["listen", "--labels", args.labels, "--fast", "--json"]
    command += ["--bundle", args.bundle] if args.bundle else []
    command += ["--threads", str(args.threads)] if args.threads else []
    runner, rows, started = CliRunner(), [], time.perf_counter()
    per_class = defaultdict(lambda: [0, 0])
    for i, (path, truth) in enumerate(clips, 1):
        result = runner.invoke(edge_main, [*command, "--input", str(path)])
        if result.exit_code != 0:
            raise SystemExit(f"listen failed on {path}: {result.output.strip()}")
        answer, windows = clip_answer(result.stdout)
        rows.append({"clip": Path(path).name, "truth": truth, "answer": answer, "windows": windows})
        per_class[truth][0] += answer == truth
        per_class[truth][1] += 1
        if i % 50 == 0 or i == len(clips):
            correct = sum(r["answer"] == r["truth"] for r in rows)
            print(f"{i}/{len(clips)} clips: accuracy {correct / i:.4f} ({time.perf_counter() - started:.0f} s)",
                  flush=True)
    accuracy = sum(r["answer"] == r["truth"] for r in rows) / max(len(rows), 1)
    worst = sorted(per_class.items(), key=lambda item: item[1][0] / item[1][1])[:5]
    print(f"accuracy through listen: {accuracy:.4f} on {len(rows)} clips "
          f"({args.dataset} {args.split}, labels {args.labels})")
    print("weakest classes: " + ", ".join(f"{name} {ok}/{n}" for name, (ok, n) in worst))
    if args.out:
        Path(args.out).write_text(json.dumps({"accuracy": accuracy, "clips": len(rows), "dataset": args.dataset,
                                              "split": args.split, "labels": args.labels, "config": args.config,
                                              "bundle": args.bundle, "answers": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
