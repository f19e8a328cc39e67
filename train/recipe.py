"""Training recipes: what `semanticac-train fit --config configs/train/X.yaml` runs.

A recipe names a model config, a dataset split and the optimisation. `$VARS` in paths are
expanded from the environment (e.g. root: $SEMANTICAC_DATA/esc50); relative paths are read
from the recipe file's folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from train.augment import AugmentConfig
from train.config import ConfigError, from_dict, read_config_yaml
from train.data import DataSpec

LOSSES = ("semantic", "class_prompt")
OPTIMIZERS = ("sgd", "adamw")


@dataclass
class OptimConfig:
    name: str = "sgd"  # paper: SGD
    lr: float = 8e-5  # paper: 8e-5
    momentum: float = 0.9
    weight_decay: float = 5e-4  # paper: 5e-4 (never on the logit scale, biases or norms)
    gamma: float = 0.96  # ExponentialLR factor per epoch (paper: 0.96)
    warmup_epochs: int = 0  # linear warm-up of the learning rate
    # an exponential moving average of the weights (parameters and BatchNorm statistics), this
    # decay per step: the averaged weights are validated and saved (best.pt, last.pt: what export
    # reads), the raw ones train on. None: the raw weights, as trained
    ema: float | None = None

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"optim.name {self.name!r} is not one of {', '.join(OPTIMIZERS)}")
        if not self.lr > 0 or not 0 < self.gamma <= 1:
            raise ConfigError(f"optim.lr={self.lr} must be > 0 and optim.gamma={self.gamma} in (0, 1]")
        if self.ema is not None and not 0.5 <= self.ema < 1:
            raise ConfigError(f"optim.ema={self.ema} must be a decay per step in [0.5, 1) (0.995 averages about "
                              "the last 200 steps), or left out for the raw weights")


SCORINGS = ("softmax", "sigmoid")
TEACHER_POOLS = ("mean", "max")


@dataclass
class DistillConfig:
    """Learn from the AudioSet teacher (train.teacher: the original YAMNet, 521 named classes):
    the student's sigmoid scores against the text of those 521 names match the teacher's."""

    weight: float = 1.0  # of the teacher's BCE term beside the supervised terms
    pool: str = "max"  # the teacher's per-clip score: max or mean over its 0.96 s patches
    cache_dir: str | None = None  # default <train cache>/teacher

    def __post_init__(self):
        if not self.weight > 0 or self.pool not in TEACHER_POOLS:
            raise ConfigError(f"distill.weight={self.weight} must be > 0 and distill.pool={self.pool!r} one of "
                              f"{', '.join(TEACHER_POOLS)}")


UNDERLAY_KINDS = ("speech", "white", "pink", "brown", "hum", "room_tone")  # background kinds free of classes


@dataclass
class UnderlayConfig:
    """Background clips laid under labelled clips, the label kept (train.data.underlay): a dog
    barks while people talk, a drill runs over a room's hum. Without it the student only ever
    hears speech alone, as "none of the classes", and loses a sound that has a voice beside it."""

    p: float = 0.5  # the share of labelled items (each epoch) that get one
    # the background's RMS this many dB under the clip's loudest 50 ms (as augment.level_dbfs measures)
    below_db: tuple[float, float] = (8.0, 30.0)
    kinds: tuple[str, ...] = UNDERLAY_KINDS  # which background kinds (train.data.background.KINDS)

    def __post_init__(self):
        if not 0.0 < self.p <= 1.0:
            raise ConfigError(f"background.underlay.p={self.p} must be a probability in (0, 1] "
                              "(leave underlay out for none)")
        if len(self.below_db) != 2 or not 0.0 <= self.below_db[0] <= self.below_db[1]:
            raise ConfigError(f"background.underlay.below_db={list(self.below_db)} must be [low, high] in dB "
                              "with 0 <= low <= high")
        wrong = [k for k in self.kinds if k not in UNDERLAY_KINDS]
        if wrong or not self.kinds:
            raise ConfigError(f"background.underlay.kinds {list(self.kinds)}: each must be one of "
                              f"{', '.join(UNDERLAY_KINDS)} (silence adds nothing; streets hold class sounds)")


@dataclass
class OverlayConfig:
    """A second labelled clip laid over labelled clips, both labels kept (train.data.overlay): a
    siren over a barking dog. Without it every clip holds one sound, and the student learns that
    a clip is one class: the second of two sounds at once scores nothing."""

    p: float = 0.5  # the share of labelled items (each epoch) that get a partner
    # the partner's loudest 50 ms this many dB under the item's (augment.level_dbfs measures it so)
    below_db: tuple[float, float] = (0.0, 10.0)

    def __post_init__(self):
        if not 0.0 < self.p <= 1.0:
            raise ConfigError(f"overlay.p={self.p} must be a probability in (0, 1] (leave overlay out for none)")
        if len(self.below_db) != 2 or not 0.0 <= self.below_db[0] <= self.below_db[1]:
            raise ConfigError(f"overlay.below_db={list(self.below_db)} must be [low, high] in dB "
                              "with 0 <= low <= high")


@dataclass
class BackgroundConfig:
    """Unlabelled background clips (train.data.background: speech, silence, noise, hum, room
    tone, synthesised streets) that train "none of the classes" (and the teacher's view)."""

    count: int = 400
    root: str | None = None  # default <train cache>/background
    seed: int = 0
    underlay: UnderlayConfig | None = None  # also lay them under labelled clips (label kept)

    def __post_init__(self):
        if self.count < 1:
            raise ConfigError(f"background.count={self.count} must be >= 1 (leave background out for none)")


@dataclass
class TrainConfig:
    model: str = "small"  # a model config: name (configs/model/<name>.yaml) or path
    # one dataset, or a list trained together (class names merged: the label space is text)
    data: DataSpec | tuple[DataSpec, ...] = field(default_factory=lambda: DataSpec("esc50", "$SEMANTICAC_DATA/esc50"))
    # label set(s) whose prompts name the classes (one per dataset); default "an audio clip of {class}"
    labels: str | tuple[str, ...] | None = None
    epochs: int = 10
    batch_size: int = 16  # paper: 16
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: str = "semantic"  # semantic: paper Eq. 3 over the batch; class_prompt: CE against all classes
    freeze_audio: bool = False  # train only the head (and text projection) on a pretrained tower
    # YAMNet only: keep its first N trunk layers (1..14) as pretrained; the exported graph then
    # adds the vocabulary branch (YAMNet's own layers N+1..14 and AudioSet head on the shared
    # prefix: train.export), 521 AudioSet scores per window for labels no one trained
    freeze_audio_layers: int | None = None
    freeze_text: bool = True  # keep the pretrained text tower; its projection to C still learns
    seed: int = 0
    amp: bool = True  # mixed precision on a GPU (ignored on the CPU)
    num_workers: int = 0
    cache_dir: str | None = None  # default $SEMANTICAC_TRAIN_CACHE or ~/.cache/semanticac-train
    pretrained_audio: str | None = None
    pretrained_text: str | None = None
    license: str = "unspecified"
    # how the exported bundle scores: softmax over a label set, or sigmoid per label (then the
    # loss adds one-vs-rest BCE terms with a learnt global logit bias: "nothing" is an answer)
    scoring: str = "softmax"
    distill: DistillConfig | None = None  # needs scoring: sigmoid
    background: BackgroundConfig | None = None
    overlay: OverlayConfig | None = None  # two labelled sounds at once, both labels kept (needs sigmoid)

    @property
    def datasets(self) -> tuple[DataSpec, ...]:
        return self.data if isinstance(self.data, tuple) else (self.data,)

    @property
    def label_specs(self) -> tuple[str | None, ...]:
        if self.labels is None or isinstance(self.labels, str):
            return (self.labels,) * len(self.datasets)
        return self.labels

    def __post_init__(self):
        if len(self.label_specs) != len(self.datasets):
            raise ConfigError(f"labels names {len(self.label_specs)} label set(s) for {len(self.datasets)} "
                              "dataset(s): give one per dataset, in the same order")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        if self.scoring not in SCORINGS:
            raise ConfigError(f"scoring {self.scoring!r} is not one of {', '.join(SCORINGS)}")
        if (self.distill or self.background) and self.scoring != "sigmoid":
            raise ConfigError("distill and background train per-label sigmoid scores: set scoring: sigmoid")
        if self.overlay is not None and self.scoring != "sigmoid":
            raise ConfigError("overlay trains two labels present at once, which per-label sigmoid scores can "
                              "say and a softmax over the set cannot: set scoring: sigmoid")
        if self.scoring == "sigmoid" and self.loss != "class_prompt":
            raise ConfigError(f"scoring: sigmoid trains with loss: class_prompt (got {self.loss!r})")
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(f"epochs={self.epochs} must be >= 1 and batch_size={self.batch_size} >= 2")
        if self.freeze_audio_layers is not None and not 1 <= self.freeze_audio_layers <= 14:
            raise ConfigError(f"freeze_audio_layers={self.freeze_audio_layers} must be a YAMNet trunk layer, 1..14 "
                              "(leave it out to fine-tune every layer)")


def _expand(value: str, base: Path, what: str) -> str:
    missing = [name for name in re.findall(r"\$\{?(\w+)\}?", value) if name not in os.environ]
    if missing:
        raise ConfigError(f"{what}: {value!r} uses ${missing[0]}, which is not set: export it "
                          f"(e.g. SEMANTICAC_DATA=/path/to/data) or write the path out")
    path = Path(os.path.expanduser(os.path.expandvars(value)))
    return str(path if path.is_absolute() else base / path)


def load_train_config(path: str | Path, fold: int | None = None, epochs: int | None = None) -> TrainConfig:
    """A recipe YAML (configs/train/*.yaml, or a bare name: esc50-cpu, demo-cpu, ...).

    `fold`: validate on that official fold and train on the others (a one-dataset recipe only);
    `epochs`: replaces the recipe's.
    """
    path, data = read_config_yaml(path, "train", "training recipe")
    if isinstance(data, dict) and isinstance(data.get("data"), (dict, list)):
        for spec in data["data"] if isinstance(data["data"], list) else [data["data"]]:
            if isinstance(spec, dict) and "root" in spec:
                spec["root"] = _expand(str(spec["root"]), path.parent, f"{path} data.root")
    config = from_dict(TrainConfig, data, where=str(path))
    if isinstance(config.data, tuple) and len(config.data) == 1:  # `data: [{...}]`: one dataset, as `data: {...}`
        config.data = config.data[0]
    if not (isinstance(data, dict) and "data" in data):  # the default dataset: its root as a written one is read
        config.data = replace(config.data, root=_expand(str(config.data.root), path.parent, f"{path} data.root"))
    if fold is not None:
        if len(config.datasets) > 1:
            raise ConfigError(f"{path}: --fold needs a recipe with one dataset (folds are per dataset), "
                              f"this one has {len(config.datasets)}")
        config.data = replace(config.data, test_folds=(fold,), val_fraction=0.0)
    if epochs is not None:
        config.epochs = epochs
    return config
