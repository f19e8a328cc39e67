"""Background audio (train/data/background.py): deterministic, at the levels asked, on disk once,
and loaded as the loop loads any dataset, with no class (target -1)."""

import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from edge.features import Frontend
from train.data.background import (
    BACKGROUND_TARGET,
    EVAL_SENTENCES,
    EVAL_VARIANTS,
    EVAL_VOICES,
    KINDS,
    LEVELS,
    SENTENCES,
    TRAIN_VARIANTS,
    TRAIN_VOICES,
    BackgroundDataset,
    BackgroundError,
    build_background,
    espeak_version,
    level_dbfs,
    make_item,
    plan,
    read_meta,
    speech_eval_clips,
)
from train.data.datasets import collate

NO_SPEECH = {k: 1.0 for k in KINDS if k != "speech"}
FE = Frontend.yamnet()


@pytest.fixture(scope="module")
def espeak():
    """espeak-ng's version; skipped when it is missing (a failure under CI)."""
    version = espeak_version()
    if version is None:
        if os.environ.get("CI") == "true":
            pytest.fail("under CI espeak-ng must be installed: apt-get install -y espeak-ng")
        pytest.skip("espeak-ng is not installed: apt-get install -y espeak-ng (as root, or with sudo)")
    return version


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "speech"])
def test_same_seed_same_samples(kind):
    a, b = make_item(kind, 11), make_item(kind, 11)
    assert a.samples.dtype == np.float32 and a.samples.shape == (5 * 16000,)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert (a.level_dbfs, a.detail, a.contains) == (b.level_dbfs, b.detail, b.contains)
    if kind != "silence":
        assert not np.array_equal(a.samples, make_item(kind, 12).samples)


def test_same_seed_same_speech(espeak):
    a, b = make_item("speech", 5), make_item("speech", 5)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert a.detail == b.detail and "espeak-ng" in a.detail
    voiced = np.abs(a.samples) > 10 ** (a.level_dbfs / 20)  # above its RMS: the voice, not a bed or a pause
    assert voiced.mean() > 0.05
    assert abs(level_dbfs(a.samples) - a.level_dbfs) < 1e-6


@pytest.mark.parametrize("kind, levels", [
    ("white", (-70, -45, -20)), ("pink", (-70, -45, -20)), ("brown", (-70, -45, -20)),
    ("hum", (-70, -25)), ("room_tone", (-70, -30)), ("near_silence", (-96, -72)), ("street", (-50, -15)),
])
def test_levels_as_asked_after_writing_flac(tmp_path, kind, levels):
    for level in levels:
        item = make_item(kind, 3, level=level)
        path = tmp_path / f"{kind}{level}.flac"
        sf.write(path, item.samples, 16000, subtype="PCM_24", format="FLAC")
        read, _ = sf.read(path, dtype="float64")
        assert abs(level_dbfs(read) - level) < 0.5, (kind, level, level_dbfs(read))
        assert np.abs(read).max() < 1.0


def test_drawn_levels_lie_in_their_ranges():
    for p in plan(24, seed=4, weights=NO_SPEECH):
        item = make_item(p.kind, p.seed)
        if p.kind == "silence":
            assert item.level_dbfs == -math.inf and not item.samples.any()
        else:
            low, high = LEVELS[p.kind]
            assert low - 0.01 <= item.level_dbfs <= high + 0.01, (p, item.level_dbfs)


def test_plan_is_prefix_stable_and_follows_the_weights():
    long, short = plan(400, seed=0), plan(50, seed=0)
    assert long[:50] == short
    kinds = [p.kind for p in long]
    assert set(kinds) == set(KINDS) and 0.25 < kinds.count("speech") / 400 < 0.45
    assert plan(50, seed=1) != short
    assert {p.kind for p in plan(40, weights={"white": 1, "hum": 1})} == {"white", "hum"}
    with pytest.raises(BackgroundError, match="kinds"):
        plan(3, weights={"music": 1.0})


def test_folder_dataset_and_items(tmp_path, espeak):
    root = tmp_path / "bg"
    weights = {k: 1.0 for k in KINDS}
    folder = build_background(root, count=10, seed=2, weights=weights, progress=False)
    meta = read_meta(folder)
    assert len(meta) == 10 and (folder / "recipe.json").is_file()
    for row in meta:
        samples, rate = sf.read(row["path"], dtype="float64")
        assert rate == 16000 and samples.shape == (80000,)
        assert abs(level_dbfs(samples) - row["level_dbfs"]) < 0.5 or (row["kind"] == "silence" and not samples.any())
        assert row["kind"] in KINDS and isinstance(row["seed"], int)
    mtimes = [row["path"].stat().st_mtime_ns for row in meta]
    assert build_background(root, count=10, seed=2, weights=weights, progress=False) == folder  # made once
    assert [row["path"].stat().st_mtime_ns for row in meta] == mtimes
    assert build_background(root, count=11, seed=2, weights=weights, progress=False) != folder  # another recipe

    data = BackgroundDataset(root, count=10, frontend=FE, cache=tmp_path / "cache", data_seed=2, weights=weights,
                             progress=False)
    assert data.folder == folder and len(data) == 10 and data.class_names == []
    assert data.targets == [BACKGROUND_TARGET] * 10 and data.kinds == [row["kind"] for row in meta]
    assert data.negative == [row["kind"] != "street" for row in meta]
    mel, target = data[0]
    assert target == -1 and mel.shape == (1, FE.frames, FE.n_mels) and mel.dtype == torch.float32
    mels, targets = collate([data[0], data[1]])
    assert mels.shape == (2, 1, FE.frames, FE.n_mels) and targets.tolist() == [-1, -1]
    assert data.clip_seconds == 5.0


def test_eval_speech_is_held_out(tmp_path, espeak):
    train_sentences = {s for texts in SENTENCES.values() for s in texts}
    assert not train_sentences & {s for texts in EVAL_SENTENCES.values() for s in texts}
    assert not set(TRAIN_VARIANTS) & set(EVAL_VARIANTS)
    assert {v.language for v in EVAL_VOICES if v.texts == "en"}.isdisjoint(v.language for v in TRAIN_VOICES)
    paths = speech_eval_clips(tmp_path, count=3)
    assert len(paths) == 3 and all(p.is_file() for p in paths)
    assert speech_eval_clips(tmp_path, count=3) == paths  # made once
    for p in paths:
        samples, rate = sf.read(p, dtype="float64")
        assert rate == 16000 and len(samples) == 80000 and -36 < level_dbfs(samples) < -19


def test_missing_espeak_names_the_install_command(tmp_path, monkeypatch):
    import train.data.background as background

    monkeypatch.setattr(background, "espeak_version", lambda: None)
    with pytest.raises(BackgroundError, match="apt-get install -y espeak-ng"):
        build_background(tmp_path, count=2, progress=False)
    build_background(tmp_path, count=2, weights=NO_SPEECH, progress=False)  # without speech it still works
