"""Background laid under labelled clips, the label kept (a recipe's `background.underlay`).

The background clips (train.data.background) alone teach "none of the classes": speech,
noise, hum and room tone score nothing. But no labelled clip ever had a voice beside it, so
the student learnt that speech means "nothing": with espeak-ng speech 25 dB under held-out
UrbanSound8K clips its recall of air conditioners, drills, gun shots and jackhammers fell to
0-16 % (benchmarks/speech_over.py). Real sites have people talking beside the sounds.

`Underlay` wraps the training set: each epoch, a share `p` of the labelled items get one
background clip of the chosen kinds added to their augmented waveform (tiled or cropped at a
random offset), its RMS `below_db` under the clip's loudest 50 ms. The target stays the
clip's; the teacher's scores (train.distill) become the element-wise max of the clip's and
the background's (what YAMNet hears in a mixture of the two, to a first approximation).
Draws come from (seed, epoch, index), apart from the clip's own augmentation's: an item drawn
without a bed is exactly the wrapped set's.
"""

from __future__ import annotations

import math

import numpy as np
from torch.utils.data import Dataset

from train.augment import loudest_50ms_dbfs
from train.config import ConfigError
from train.data.background import BackgroundDataset
from train.data.combined import CombinedDataset

STREAM = 0x0DE7  # a fourth seed word: the underlay's draws never repeat the augmentation's


def lay_under(wave: np.ndarray, bed: np.ndarray, below_db: float, rng: np.random.Generator,
              rate: int) -> np.ndarray:
    """`wave` with `bed` (tiled or cropped at a random offset to its length) added, the bed's RMS
    `below_db` under the loudest 50 ms of `wave`; `wave` unchanged when either is silent."""
    loudest = loudest_50ms_dbfs(wave, rate)
    if loudest == -math.inf or wave.size == 0:
        return wave
    reps = -(-wave.size // max(bed.size, 1)) + 1
    start = int(rng.integers(0, max(bed.size, 1)))
    part = np.tile(bed, reps)[start:start + wave.size].astype(np.float64)
    power = float(np.mean(part ** 2)) if part.size else 0.0
    if power <= 0.0:
        return wave
    scale = 10.0 ** ((loudest - below_db) / 20.0) / math.sqrt(power)
    return (wave + scale * part).astype(np.float32)


class Underlay(Dataset):
    """The training set (a CombinedDataset, or WithTeacher around one) with background laid under
    a share of its labelled items; items as the wrapped set's. `config`: train.recipe.UnderlayConfig."""

    def __init__(self, dataset: Dataset, config, seed: int = 0):
        self.dataset, self.config, self.seed = dataset, config, seed
        self.combined = combined = getattr(dataset, "dataset", dataset)
        sources = combined.sources if isinstance(combined, CombinedDataset) else []
        backgrounds = [i for i, s in enumerate(sources) if isinstance(s, BackgroundDataset)]
        if not backgrounds:
            raise ConfigError("background.underlay needs the recipe's background clips beside its data")
        self.background_at = backgrounds[0]
        self.background = background = combined.sources[self.background_at]
        self.pool = [k for k, (kind, negative) in enumerate(zip(background.kinds, background.negative))
                     if negative and kind in config.kinds]
        if not self.pool:
            raise ConfigError(f"background.underlay.kinds {list(config.kinds)}: the background clips hold none "
                              f"of them (they hold {', '.join(sorted(set(background.kinds)))})")
        self.teacher = getattr(dataset, "teacher", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple:
        s, k = self.combined.locate(i)
        source = self.combined.sources[s]
        training = source.augment is not None and source.augment.training
        if s == self.background_at or not training:
            return self.dataset[i]
        rng = np.random.default_rng([self.seed, source.epoch, i, STREAM])
        if rng.random() >= self.config.p:
            return self.dataset[i]
        b = self.pool[int(rng.integers(len(self.pool)))]
        bed = self.background.waveform(b)
        below = float(rng.uniform(*self.config.below_db))
        rate = source.frontend.sample_rate
        mel, target = source.item(k, under=lambda wave: lay_under(wave, bed, below, rng, rate))[:2]
        item = (mel, self.combined.maps[s][target])
        if self.teacher is None:
            return item
        j = self.combined.starts[self.background_at] + b
        return (*item, np.maximum(self.teacher[i], self.teacher[j]))

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)
