"""Evaluation: how well a scorer classifies a split, and the report of a checkpoint on a recipe.

    evaluate(scorer, loader)                  Metrics: accuracy, per-class accuracy, confusion
                                              matrix (each epoch's validation uses it too)
    evaluate_checkpoint(checkpoint, recipe)   each dataset's validation split -> metrics.json,
                                              confusion.png and per_class.png (paper Fig. 4)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from edge.fsutil import atomic_write_text
from train.checkpoint import model_from_checkpoint
from train.config import ConfigError, from_dict
from train.data import DatasetError, build_dataset, make_loader, split_clips
from train.plots import confusion_png, per_class_png
from train.recipe import TrainConfig, load_train_config
from train.scorer import ClassScorer, class_label_set

log = logging.getLogger(__name__)


@dataclass
class Metrics:
    accuracy: float
    per_class: list[float | None]  # None for a class absent from the split
    confusion: list[list[int]]  # [true][predicted]
    count: int

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "per_class": self.per_class, "confusion": self.confusion,
                "count": self.count}


@torch.no_grad()
def evaluate(scorer: ClassScorer, loader: DataLoader, device: torch.device,
             classes: list[int] | None = None) -> Metrics:
    """Top-1 over all classes, or over `classes` only (a clip competes with its dataset's own
    classes; the loader's targets then index into `classes`)."""
    scorer.eval()
    k = len(classes) if classes is not None else scorer.num_classes
    confusion = torch.zeros(k, k, dtype=torch.long)
    for mel, targets in loader:
        logits, _, _ = scorer(mel.to(device))
        if classes is not None:
            logits = logits[:, classes]
        predicted = logits.argmax(dim=1).cpu()
        confusion.index_put_((targets, predicted), torch.ones_like(targets), accumulate=True)
    if dist.is_initialized():
        confusion = confusion.to(device)
        dist.all_reduce(confusion)
        confusion = confusion.cpu()
    totals = confusion.sum(dim=1)
    per_class = [float(confusion[i, i] / totals[i]) if totals[i] else None for i in range(k)]
    count = int(totals.sum())
    return Metrics(float(confusion.trace() / max(count, 1)), per_class, confusion.tolist(), count)


@dataclass
class Evaluation:
    dataset: str  # the data kind
    split: str  # test (official folds) or val (a random split)
    metrics: Metrics
    folder: Path  # holds metrics.json, confusion.png and per_class.png
    trained_on: int = 0  # clips of the split the checkpoint trained on: not held out


def trained_files(state: dict) -> set[Path]:
    """The files a checkpoint trained on: its recorded recipe's train splits, read again (no
    audio decoded); empty when it records none or its data cannot be read now (said)."""
    recipe = (state.get("training") or {}).get("recipe")
    if not recipe:
        return set()
    try:
        config = from_dict(TrainConfig, recipe, where="the checkpoint's recipe")
        return {clip.path.resolve() for spec in config.datasets for clip in split_clips(spec, "train")[0]}
    except (ConfigError, DatasetError, OSError) as err:
        log.warning("cannot tell which clips the checkpoint trained on (%s): overlap with them is not checked", err)
        return set()


def evaluate_checkpoint(checkpoint: str | Path, recipe: str | Path, out: str | Path,
                        fold: int | None = None) -> list[Evaluation]:
    """Score `checkpoint` on the validation split of `recipe` (`fold`: that official fold) into
    `out`; a recipe with several datasets scores each against its own label set, into out/<kind>/."""
    config = load_train_config(recipe, fold=fold)
    model, model_config, state = model_from_checkpoint(checkpoint)
    device = next(model.parameters()).device
    several = len(config.datasets) > 1
    trained_on = trained_files(state)
    evaluations = []
    for spec, labels in zip(config.datasets, config.label_specs):
        split = "test" if spec.test_folds else "val"
        dataset = build_dataset(spec, split, model_config.frontend, config.cache_dir)
        trained = state.get("class_names")
        if not model.text_assisted and trained is not None and list(trained) != list(dataset.class_names):
            raise ConfigError(
                f"{checkpoint} is a one-hot model of the classes {list(trained)[:4]}...: its outputs mean nothing "
                f"for {spec.kind}'s {list(dataset.class_names)[:4]}...; evaluate it on the recipe it was trained on"
            )
        scorer = ClassScorer(model, class_label_set(labels, dataset.class_names, spec.kind), frozen_text=False)
        metrics = evaluate(scorer, make_loader(dataset, config.batch_size, shuffle=False), device)
        seen = sum(clip.path.resolve() in trained_on for clip in dataset.clips)
        if seen:
            log.warning("%d of the %d %s %s clips are clips %s trained on: this accuracy is not a held-out one",
                        seen, len(dataset.clips), spec.kind, split, checkpoint)
        folder = Path(out) / spec.kind if several else Path(out)
        names = list(dataset.class_names)
        report = {"checkpoint": str(checkpoint), "dataset": spec.kind, "split": split,
                  "folds": list(spec.test_folds), "val_fraction": spec.val_fraction, "classes": names,
                  "trained_on": seen, **metrics.to_dict()}
        atomic_write_text(folder / "metrics.json", json.dumps(report, indent=2) + "\n")
        title = f"{Path(checkpoint).name} on {spec.kind} {split}" + (f" (fold {fold})" if fold else "")
        confusion_png(metrics.confusion, names, folder / "confusion.png", title)
        per_class_png(metrics.per_class, names, folder / "per_class.png", title)
        evaluations.append(Evaluation(spec.kind, split, metrics, folder, seen))
    return evaluations
