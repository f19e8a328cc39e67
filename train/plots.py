"""Figures of an evaluation: the confusion matrix and per-class accuracy bars (paper Fig. 4)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a training server
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from edge.fsutil import atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def confusion_png(confusion: list[list[int]], class_names: list[str], path: str | Path, title: str) -> Path:
    matrix = np.asarray(confusion, dtype=float)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)  # each true class sums to 1
    size = max(6.0, 0.22 * len(class_names) + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, Path(path))


def per_class_png(per_class: list[float | None], class_names: list[str], path: str | Path, title: str) -> Path:
    values = [np.nan if v is None else 100 * v for v in per_class]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(class_names) + 2), 4))
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    return _save(fig, Path(path))
