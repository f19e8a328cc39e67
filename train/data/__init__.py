"""Training data: catalogues and splits of ESC-50, UrbanSound8K and users' CSVs (datasets.py),
the on-disk cache of decoded waveforms and log-mels (cache.py), and several datasets trained
as one (combined.py)."""

from train.data.cache import FeatureCache, default_cache_dir
from train.data.datasets import (
    ESC50_CLASSES,
    US8K_CLASSES,
    Clip,
    ClipDataset,
    DatasetError,
    DataSpec,
    build_dataset,
    check_held_out,
    collate,
    holdout_classes,
    make_loader,
    model_samples,
    random_split,
    read_catalogue,
    read_csv,
    read_esc50,
    read_us8k,
    select_folds,
    split_clips,
)

__all__ = [
    "ESC50_CLASSES", "US8K_CLASSES", "Clip", "ClipDataset", "DataSpec", "DatasetError", "FeatureCache",
    "build_dataset", "check_held_out", "collate", "default_cache_dir", "holdout_classes", "make_loader", "model_samples",
    "random_split", "read_catalogue", "read_csv", "read_esc50", "read_us8k", "select_folds", "split_clips",
]
