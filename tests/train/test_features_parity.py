"""The training-side log-mel (torchaudio) against the one definition (edge.features, numpy)."""

import csv

import numpy as np
import pytest
import torch

from edge.audio import read_audio
from edge.features import Frontend, log_mel
from tests.signals import synthetic_set
from train.features import LogMel

FE = Frontend()
TOL_DB = 1e-2  # on cells within RANGE_DB of the clip's maximum
RANGE_DB = 80.0


def assert_parity(samples: np.ndarray, name: str) -> None:
    ref = log_mel(samples, FE)
    got = LogMel(FE)(torch.from_numpy(samples)[None])[0].numpy()
    assert got.shape == ref.shape, name
    live = ref > ref.max() - RANGE_DB
    worst = float(np.abs(got - ref)[live].max())
    assert worst <= TOL_DB, f"{name}: max |torchaudio - numpy| = {worst:.4f} dB on cells within {RANGE_DB:g} dB"


@pytest.mark.parametrize("name", list(synthetic_set(FE.sample_rate)))
def test_parity_synthetic(name):
    assert_parity(synthetic_set(FE.sample_rate)[name], name)


def test_batch_matches_single():
    x = synthetic_set(FE.sample_rate)
    batch = torch.from_numpy(np.stack([x["tone_440"], x["noise"]]))
    out = LogMel(FE)(batch)
    assert out.shape == (2, FE.num_frames(batch.shape[1]), FE.n_mels)
    np.testing.assert_allclose(out[1].numpy(), LogMel(FE)(batch[1:])[0].numpy(), atol=1e-5)


@pytest.mark.data
def test_parity_real_clips(data_dir):
    """A dozen real clips of both development sets, decoded and resampled by edge.audio."""
    esc = [row["filename"] for row in csv.DictReader(open(data_dir / "esc50/meta.csv"))][::160]
    us8k = [(row["fold"], row["slice_file_name"]) for row in csv.DictReader(open(data_dir / "us8k/meta.csv"))][::300]
    paths = [data_dir / "esc50/audio" / f for f in esc] + [data_dir / f"us8k/audio/fold{k}" / f for k, f in us8k]
    assert len(paths) >= 12
    for path in paths:
        assert_parity(read_audio(path, FE.sample_rate), path.name)
