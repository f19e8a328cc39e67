"""The training-side log-mel (torchaudio) against the one definition (edge.features, numpy)."""

import csv

import numpy as np
import pytest
import torch
import torchaudio

from edge.capture.audio import read_audio
from edge.features import Frontend, log_mel, mel_filterbank
from tests.signals import synthetic_set
from train.features import LogMel

FE = Frontend()
TOL_DB = 1e-2  # on cells within RANGE_DB of the clip's maximum
RANGE_DB = 80.0
DB_PER_NEPER = 10 / np.log(10)  # the "ln" frontends' unit, in dB


def assert_parity(samples: np.ndarray, name: str, fe: Frontend = FE) -> None:
    unit = DB_PER_NEPER if fe.log == "ln" else 1.0
    ref = log_mel(samples, fe) * unit
    got = LogMel(fe)(torch.from_numpy(samples)[None])[0].numpy() * unit
    assert got.shape == ref.shape, name
    live = ref > ref.max() - RANGE_DB
    if fe.log == "ln":
        # ln(x + offset) is steep where x is near the offset, and there float32 FFT leakage from
        # the loudest bins (~1e-7 of them) moves it: compare where x is 10x the offset or more.
        live &= log_mel(samples, fe) > np.log(11 * fe.log_floor)
        live |= not live.any()  # silence: then every cell must agree
    worst = float(np.abs(got - ref)[live].max())
    assert worst <= TOL_DB, f"{name}: max |torch - numpy| = {worst:.4f} dB on cells within {RANGE_DB:g} dB"


@pytest.mark.parametrize("fe", [FE, Frontend.yamnet()], ids=["htsat", "yamnet"])
@pytest.mark.parametrize("name", list(synthetic_set(FE.sample_rate)))
def test_parity_synthetic(name, fe):
    assert_parity(synthetic_set(fe.sample_rate)[name], name, fe)


def test_slaney_filterbank_matches_torchaudio():
    """edge's filters are the one definition; torchaudio's Slaney filters are an independent oracle."""
    oracle = torchaudio.functional.melscale_fbanks(
        n_freqs=FE.n_fft // 2 + 1, f_min=FE.f_min, f_max=FE.f_max, n_mels=FE.n_mels,
        sample_rate=FE.sample_rate, norm="slaney", mel_scale="slaney").numpy()
    np.testing.assert_allclose(mel_filterbank(FE), oracle, atol=1e-7)


def test_batch_matches_single():
    x = synthetic_set(FE.sample_rate)
    batch = torch.from_numpy(np.stack([x["tone_440"], x["noise"]]))
    out = LogMel(FE)(batch)
    assert out.shape == (2, FE.num_frames(batch.shape[1]), FE.n_mels)
    np.testing.assert_allclose(out[1].numpy(), LogMel(FE)(batch[1:])[0].numpy(), atol=1e-5)


@pytest.mark.data
def test_parity_real_clips(data_dir):
    """A dozen real clips of both development sets, decoded and resampled by edge.capture.audio."""
    esc = [row["filename"] for row in csv.DictReader(open(data_dir / "esc50/meta.csv"))][::160]
    us8k = [(row["fold"], row["slice_file_name"]) for row in csv.DictReader(open(data_dir / "us8k/meta.csv"))][::300]
    paths = [data_dir / "esc50/audio" / f for f in esc] + [data_dir / f"us8k/audio/fold{k}" / f for k, f in us8k]
    assert len(paths) >= 12
    for path in paths:
        assert_parity(read_audio(path, FE.sample_rate), path.name)
    for path in paths[::4]:
        assert_parity(read_audio(path, 16000), path.name, Frontend.yamnet())
