"""Figures over several runs of one recipe.

    cross_validate(recipe)      k-fold cross-validation: one `fit` per official fold of 30+ clips
                                (validated on it, trained on the others), then mean +- std and the
                                accuracy over all their clips -> cv.json
    validation_figures(runs)    the held-out accuracies of runs with clips held out (each one's last
                                epoch) and their mean, as `export --validation-run` writes them
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from edge.fsutil import atomic_write_text
from train.checkpoint import load_checkpoint
from train.config import ConfigError
from train.data import read_catalogue
from train.data.datasets import first_per_class
from train.loop import fit
from train.recipe import TrainConfig, load_train_config

log = logging.getLogger(__name__)


MIN_FOLD_CLIPS = 30  # a held-out fold smaller than this says little (one clip: 3 points) and is left out


def fold_sizes(config: TrainConfig) -> dict[int, int]:
    """Every official fold of a one-dataset recipe's data, and how many clips it holds out (as its
    test split: the recipe's max_per_class applies)."""
    if len(config.datasets) > 1:
        raise ConfigError("cv needs a recipe with one dataset (folds are per dataset)")
    clips, _ = read_catalogue(config.data)
    by_fold: dict[int, list] = {}
    for clip in clips:
        if clip.fold is not None:
            by_fold.setdefault(clip.fold, []).append(clip)
    cap = config.data.max_per_class
    return {k: len(first_per_class(members, cap) if cap else members) for k, members in sorted(by_fold.items())}


def _sizes(sizes: dict[int, int], folds: Sequence[int]) -> str:
    return ", ".join(f"{k} ({sizes[k]} clips)" for k in folds)


def cross_validate(recipe: str | Path, folds: Sequence[int] | None = None, out: str | Path | None = None,
                   epochs: int | None = None, on_fold: Callable[[dict], None] | None = None) -> tuple[dict, Path]:
    """(summary, path of cv.json): `recipe` trained once per fold of `folds` (default: every
    official fold of MIN_FOLD_CLIPS clips or more), each run in out/fold<K>/ (resumed when it is there already); a fold's
    accuracy is its last epoch's on the held-out fold (`best_epoch_accuracy`, the best over the
    epochs, is chosen on that fold: optimistic); `on_fold` sees each fold's result as it ends."""
    config = load_train_config(recipe, epochs=epochs)
    sizes = fold_sizes(config)
    small = [k for k, n in sizes.items() if n < MIN_FOLD_CLIPS]
    chosen = list(folds) if folds else [k for k in sizes if k not in small]
    if folds:  # checked before any training: a fold that is not there failed after the others had trained
        twice = sorted({k for k in chosen if chosen.count(k) > 1})
        if twice:
            raise ConfigError(f"--folds names fold {', '.join(map(str, twice))} twice: each fold is held out once")
        missing = [k for k in chosen if k not in sizes]
        if missing:
            raise ConfigError(
                f"--folds {','.join(map(str, chosen))}: fold {', '.join(map(str, missing))} is not in the data "
                f"(its folds: {', '.join(map(str, sizes)) or 'none'})"
            )
    if len(chosen) < 2:
        if folds:
            raise ConfigError(f"cross-validation needs at least 2 folds; --folds gave {chosen}")
        development = " (the development copies know few folds: ESC-50's 44 clips, UrbanSound8K's 1 and 2 whole)"
        raise ConfigError(
            f"cross-validation needs at least 2 folds of {MIN_FOLD_CLIPS}+ clips; the data's folds: "
            f"{_sizes(sizes, sizes) or 'none'}{development if config.data.kind in ('esc50', 'us8k') else ''}; "
            "use a random split with `fit`, or name folds with --folds"
        )
    if small and not folds:
        log.warning("folds %s are left out of the cross-validation: under %d clips, their accuracy would say little "
                    "and weigh as much as a whole fold's (name them with --folds to hold them out anyway; they train "
                    "in every run)", _sizes(sizes, small), MIN_FOLD_CLIPS)
    elif named_small := [k for k in chosen if k in small]:
        log.warning("--folds %s: under %d clips each: their accuracy says little, and the mean weighs it as much as a "
                    "whole fold's (the pooled figure weighs each clip once)", _sizes(sizes, named_small),
                    MIN_FOLD_CLIPS)
    out = Path(out or Path("runs") / f"{Path(recipe).stem}-cv")
    results = []
    for fold in chosen:
        # resume: a cv stopped part-way goes on where it stopped (a finished fold is read back)
        run = out / f"fold{fold}"
        # (a stop between best.pt and last.pt of the first epoch leaves best.pt alone: resumed too)
        begun = (run / "last.pt").is_file() or (run / "best.pt").is_file()
        result = fit(load_train_config(recipe, fold=fold, epochs=epochs), run, resume=begun,
                     command=f"cv fold {fold}")
        # the last epoch's accuracy on the held-out fold: the best epoch would be chosen on the test fold itself
        last = result["history"][-1]
        held_out = last["test_accuracy"] if "test_accuracy" in last else last["val_accuracy"]  # a fold run before
        results.append({"fold": fold, "clips": sizes[fold], "accuracy": held_out,
                        "best_epoch_accuracy": result["best"], "history": result["history"]})
        if on_fold is not None:
            on_fold(results[-1])
    accuracies = [r["accuracy"] for r in results]
    pooled = sum(r["accuracy"] * r["clips"] for r in results) / sum(r["clips"] for r in results)
    summary = {"config": str(recipe), "folds": results, "mean": statistics.mean(accuracies),
               "std": statistics.stdev(accuracies), "pooled": pooled}
    atomic_write_text(out / "cv.json", json.dumps(summary, indent=2) + "\n")
    return summary, out / "cv.json"


def _differing(ours: dict, theirs: dict, prefix: str = "") -> list[str]:
    """The dotted keys both recipes set, to different values (a key one of them lacks is a key added to
    the recipes since the other ran: `background.underlay` on 2026-12-06, its default what ran before)."""
    keys = []
    for key in sorted(set(ours) & set(theirs)):
        a, b = ours[key], theirs[key]
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _differing(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def validation_figures(runs: Sequence[str | Path], recipe: dict | None = None) -> dict:
    """The held-out figures of `runs` (each one's last epoch, as the shipped model is its
    recipe's last epoch) and their mean per dataset. ConfigError for a run that stopped before its
    last epoch, or (`recipe`: the exported checkpoint's) that trained another recipe than `recipe`
    beyond its data split: model.json calls them the same recipe's figures."""
    figures = []
    for run in runs:
        state = load_checkpoint(Path(run) / "last.pt")
        if not state.get("history"):
            raise ConfigError(f"--validation-run {run}: its last.pt has no finished epoch")
        last, theirs = state["history"][-1], (state.get("training") or {}).get("recipe") or {}
        if isinstance(theirs.get("epochs"), int) and last["epoch"] < theirs["epochs"]:
            raise ConfigError(
                f"--validation-run {run} stopped after {last['epoch']} of its {theirs['epochs']} epochs: its "
                "figures are not its recipe's last epoch; finish it (fit --resume) or leave it out"
            )
        differ = _differing(recipe or {}, {key: value for key, value in theirs.items() if key != "data"})
        if differ:
            raise ConfigError(
                f"--validation-run {run} trained another recipe than the checkpoint ({', '.join(differ)} differ, "
                "beyond the data split): model.json would call its figures the same recipe's; give runs of the "
                "checkpoint's recipe with clips held out (as demo-distill-level-cv1 is demo-distill's)"
            )
        figures.append({"run": Path(run).name, "command": state.get("training", {}).get("command", ""),
                        "data": state.get("training", {}).get("data", []), "epochs": last["epoch"],
                        **{k: round(v, 4) for k, v in last.items() if k.startswith("val_accuracy_")}})
    keys = sorted({k for f in figures for k in f if k.startswith("val_accuracy_")})
    mean = {k: round(statistics.mean(f[k] for f in figures if k in f), 4) for k in keys}
    return {"what": "accuracy of the same recipe on held-out clips, last epoch, through the training loop",
            "runs": figures, "mean": mean}
