"""Two labelled sounds at once, both labels kept (a recipe's `overlay`).

Every training clip holds one sound, so the student learnt that a clip is one class: a siren
over a barking dog gave siren 1.00 and dog_bark 0.00, and of 144 development sounds mixed in
pairs at the same level only 32 % of those named alone were still named in the mix
(benchmarks/two_sounds.py). A street has a siren over idling engines, children over a drill.

`Overlay` wraps the training set: each epoch, a share `p` of the labelled items get a second
labelled clip of the same dataset and another class added to their augmented waveform (the
partner as decoded, at a random offset; cropped around its loudest sample when longer), its
loudest 50 ms `below_db` under the item's (augment.loudest_50ms_dbfs). Items gain a last
column: the partner's class in the merged label space, or NO_PARTNER. The supervised terms
then take both classes as present (train.distill.sigmoid_loss), and the teacher's scores
become the element-wise max of the two clips' (as train.data.underlay does for a bed). An
item drawn with a partner is not also given a background bed. Draws come from (seed, epoch,
index, STREAM): an item drawn without a partner is exactly the wrapped set's.
"""

from __future__ import annotations

import math

import numpy as np
from torch.utils.data import Dataset

from train.augment import loudest_50ms_dbfs
from train.data.background import BackgroundDataset
from train.data.combined import CombinedDataset
from train.data.datasets import ClipDataset

NO_PARTNER = -1  # the last column of an item drawn alone
STREAM = 0x0A11  # a fourth seed word: the overlay's draws never repeat the augmentation's or underlay's


def placed(other: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """`other` in `length` samples: at a random offset among zeros when shorter, else a random
    crop of that length that keeps its loudest sample."""
    if other.size <= length:
        out = np.zeros(length, dtype=np.float32)
        start = int(rng.integers(0, length - other.size + 1))
        out[start:start + other.size] = other
        return out
    peak = int(np.argmax(np.abs(other)))
    start = int(rng.integers(max(0, peak - length + 1), min(peak, other.size - length) + 1))
    return np.asarray(other[start:start + length], dtype=np.float32)


def lay_over(wave: np.ndarray, other: np.ndarray, below_db: float, rng: np.random.Generator,
             rate: int) -> np.ndarray:
    """`wave` with `other` placed in it (`placed`), the loudest 50 ms of the placed part
    `below_db` under the loudest 50 ms of `wave`; `wave` unchanged when either is silent."""
    loudest = loudest_50ms_dbfs(wave, rate)
    part = placed(other, wave.size, rng)
    theirs = loudest_50ms_dbfs(part, rate)
    if loudest == -math.inf or theirs == -math.inf:
        return wave
    scale = 10.0 ** ((loudest - below_db - theirs) / 20.0)
    return (wave + scale * part).astype(np.float32)


class Overlay(Dataset):
    """The training set (a CombinedDataset or ClipDataset, bare or wrapped by train.distill.WithTeacher
    and/or train.data.underlay.Underlay) with a second labelled clip laid over a share of its
    labelled items; items as the wrapped set's plus the partner's class (NO_PARTNER: none).
    `config`: train.recipe.OverlayConfig."""

    def __init__(self, dataset: Dataset, config, seed: int = 0):
        self.dataset, self.config, self.seed = dataset, config, seed
        inner = dataset
        while not isinstance(inner, (CombinedDataset, ClipDataset)) and hasattr(inner, "dataset"):
            inner = inner.dataset  # WithTeacher, Underlay
        self.combined = inner
        several = isinstance(inner, CombinedDataset)
        self.sources = inner.sources if several else [inner]
        self.starts = inner.starts if several else [0]
        self.maps = inner.maps if several else [list(range(len(inner.class_names)))]
        # per source: its labelled items by class, to draw a partner of another class
        self.by_class: list[dict[int, list[int]]] = []
        for source in self.sources:
            classes: dict[int, list[int]] = {}
            if not isinstance(source, BackgroundDataset):
                for k, target in enumerate(source.targets):
                    if target >= 0:
                        classes.setdefault(target, []).append(k)
            self.by_class.append(classes)
        self.teacher = getattr(dataset, "teacher", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple:
        s, k = self.combined.locate(i) if isinstance(self.combined, CombinedDataset) else (0, i)
        source, classes = self.sources[s], self.by_class[s]
        training = source.augment is not None and source.augment.training
        target = source.clips[k].target if classes else -1
        if target < 0 or len(classes) < 2 or not training:
            return (*self.dataset[i], NO_PARTNER)
        rng = np.random.default_rng([self.seed, source.epoch, i, STREAM])
        if rng.random() >= self.config.p:
            return (*self.dataset[i], NO_PARTNER)
        others = [c for c in classes if c != target]
        partner_class = others[int(rng.integers(len(others)))]
        members = classes[partner_class]
        j = members[int(rng.integers(len(members)))]
        other = source.waveform(j)
        below = float(rng.uniform(*self.config.below_db))
        rate = source.frontend.sample_rate
        mel, _ = source.item(k, under=lambda wave: lay_over(wave, other, below, rng, rate))[:2]
        item = (mel, self.maps[s][target])
        if self.teacher is not None:
            item = (*item, np.maximum(self.teacher[i], self.teacher[self.starts[s] + j]))
        return (*item, self.maps[s][partner_class])

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)
