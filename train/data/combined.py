"""Several datasets trained as one: their class names merged into one label space.

The label space is text, so one model can learn ESC-50 and UrbanSound8K together: a class
name that both use (siren, car_horn) is one class; the others are added in order. Each
source keeps its own class list for evaluation, where a clip competes only with the classes
of its own dataset, as `listen --labels esc50` would score it.
"""

from __future__ import annotations

from bisect import bisect_right

import torch
from torch.utils.data import Dataset

from train.data.datasets import ClipDataset


class CombinedDataset(Dataset):
    """Items of every source in turn, targets renumbered into the merged `class_names`."""

    def __init__(self, sources: list[ClipDataset], names: list[str]):
        self.sources = sources
        self.names = names  # one per source, e.g. its data kind
        self.class_names: list[str] = []
        for source in sources:  # a source without classes (background clips) adds none
            self.class_names += [c for c in source.class_names if c not in self.class_names]
        index = {name: i for i, name in enumerate(self.class_names)}
        self.maps = [[index[c] for c in source.class_names] for source in sources]
        self.starts = [0]
        for source in sources:
            self.starts.append(self.starts[-1] + len(source))

    def __len__(self) -> int:
        return self.starts[-1]

    def locate(self, i: int) -> tuple[int, int]:
        s = bisect_right(self.starts, i) - 1
        return s, i - self.starts[s]

    def __getitem__(self, i: int) -> tuple:
        """(mel, target in the merged label space, *whatever else the source's items carry);
        a negative target (a background clip: no class) stays as it is."""
        s, j = self.locate(i)
        mel, target, *rest = self.sources[s][j]
        return (mel, self.maps[s][target] if target >= 0 else target, *rest)

    def set_epoch(self, epoch: int) -> None:
        for source in self.sources:
            source.set_epoch(epoch)

    @property
    def clip_seconds(self) -> float:
        return max(source.clip_seconds for source in self.sources)

    @property
    def skipped(self) -> list:
        return [item for source in self.sources for item in source.skipped]

    def source_classes(self, s: int) -> list[int]:
        """Indices (into class_names) of source s's own classes."""
        return self.maps[s]
