"""train.vocabulary_head: its copies of a clip placed in a window, as a stream has a short sound,
and its fits (a hidden layer or one logistic regression per label) as the device computes them."""

import numpy as np
import pytest

from edge.vocabulary import Head
from train.vocabulary_head import (
    HEAD,
    PLACED,
    fit_logistic,
    fit_mlp,
    head_overlay,
    head_partners,
    head_targets,
    head_underlay,
    placed_copy,
    under_copy,
    underlay_beds,
)

RATE = 16000
WINDOW = 5 * RATE


def test_a_placed_copy_is_part_of_the_clip_inside_a_window_of_something_else():
    context = np.full(RATE, 0.004, dtype=np.float32)  # a constant: plain to tell from silence and white noise
    clip = np.ones(2 * RATE, dtype=np.float32)  # after the copy's gain (>= -20 dB) it stands out above 0.06
    rng = np.random.default_rng(0)
    lengths, starts, around = [], set(), set()
    for _ in range(60):
        window = placed_copy(clip, WINDOW, rng, [context])
        assert window.shape == (WINDOW,) and window.dtype == np.float32
        loud = np.flatnonzero(np.abs(window) > 0.06)
        lengths.append((loud[-1] - loud[0] + 1) / clip.size)
        starts.add(int(loud[0]) * 5 // WINDOW)
        rest = np.concatenate([window[: loud[0]], window[loud[-1] + 1 :]])
        assert np.abs(rest).max(initial=0) < 0.06
        around.add("silence" if not rest.any() else "context" if np.ptp(rest) < 1e-6 else "noise")
    low, high = PLACED["keep"]
    assert low - 0.01 <= min(lengths) and max(lengths) <= high + 0.01 and max(lengths) - min(lengths) > 0.3
    assert len(starts) >= 3  # anywhere in the window
    assert around == {"silence", "context", "noise"}


def test_the_hidden_layer_learns_what_no_linear_head_can_and_the_device_computes_it_from_int8_steps():
    """Label 0 sounds where features 0 and 1 agree in sign (XOR-like: no hyperplane splits it),
    label 1 where feature 2 is high; the features sit far from 0 with unequal scales, as YAMNet's do."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((800, 4)).astype(np.float32)
    targets = np.stack([x[:, 0] * x[:, 1] > 0, x[:, 2] > 0.5], axis=1).astype(np.float32)
    features = x * np.array([3.0, 0.2, 1.0, 5.0], np.float32) + np.array([10.0, -4.0, 0.0, 2.0], np.float32)
    arrays = fit_mlp(features, targets, hidden=32)
    assert arrays["hidden_weights"].dtype == np.int8 and arrays["hidden_weights"].shape == (32, 4)
    assert np.abs(arrays["hidden_weights"]).max(axis=1).min() == 127  # each unit uses its whole int8 range
    mlp = Head.from_arrays(arrays, "features", 0.5).logits(features) > 0
    weights, bias = fit_logistic(features, targets, l2=1e-3)
    linear = (features @ weights.T + bias) > 0
    mlp_right, linear_right = (mlp == targets).mean(axis=0), (linear == targets).mean(axis=0)
    assert mlp_right[0] > 0.8 and linear_right[0] < 0.65  # only the hidden layer learns the XOR-like label
    assert mlp_right[1] > 0.95 and linear_right[1] > 0.95  # both learn the linear one


def test_a_head_is_fitted_on_windows_without_the_bundles_gain(demo_bundle, tmp_path):
    """The device gains each window before the graph; the head learns a range of levels from its
    copies instead (measured better on quiet clips: train.vocabulary_head), unless asked."""
    import dataclasses

    import soundfile as sf

    from edge.features import WindowGain
    from train.vocabulary_head import window_features

    t = np.arange(3 * RATE) / RATE
    quiet = tmp_path / "quiet.wav"  # a tone 40 dB below the gain's reference: raised by 30 dB
    sf.write(quiet, (0.001 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32), RATE)
    gained = dataclasses.replace(demo_bundle, meta=dataclasses.replace(demo_bundle.meta, gain=WindowGain()))
    plain = dataclasses.replace(demo_bundle, meta=dataclasses.replace(demo_bundle.meta, gain=None))
    as_is = window_features(plain, [quiet])
    np.testing.assert_array_equal(window_features(gained, [quiet]), as_is)
    assert np.abs(window_features(gained, [quiet], window_gain=True) - as_is).max() > 0.1


def test_an_under_copy_lays_a_background_clip_under_the_clip_as_the_student_s_training_does():
    """A 440 Hz tone with a 3 kHz tone as the background clip: whatever the copy's gain and noise,
    the background sits the drawn dB under the clip (a steady tone: its loudest 50 ms is its RMS)."""
    t = np.arange(2 * RATE) / RATE
    clip = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    bed = (0.01 * np.sin(2 * np.pi * 3000 * t[: RATE // 2])).astype(np.float32)  # shorter: tiled
    rng = np.random.default_rng(0)
    for below in (8.0, 20.0, 30.0):
        copy = under_copy(clip, [bed], (below, below), rng, RATE)
        spectrum = np.abs(np.fft.rfft(copy)) ** 2
        at = lambda hz: spectrum[round(hz * copy.size / RATE)]  # noqa: E731  (exact bins: whole periods)
        assert copy.shape == clip.shape and 10 * np.log10(at(3000) / at(440)) == pytest.approx(-below, abs=0.5)


def test_underlay_beds_are_the_recipe_s_background_clips_of_its_kinds(tmp_path, monkeypatch):
    import train.data.background as background
    from train.data.background import read_meta
    from train.recipe import BackgroundConfig, TrainConfig, UnderlayConfig

    monkeypatch.setattr(background, "DEFAULT_WEIGHTS", {"hum": 1.0, "white": 1.0, "silence": 1.0})  # small, fast
    root = tmp_path / "bg"
    plain = TrainConfig(scoring="sigmoid", loss="class_prompt", background=BackgroundConfig(count=8, root=str(root)))
    assert underlay_beds(plain)[0] == []
    laid = TrainConfig(scoring="sigmoid", loss="class_prompt", background=BackgroundConfig(
        count=8, root=str(root), underlay=UnderlayConfig(kinds=("hum",), below_db=(10.0, 12.0))))
    beds, below = underlay_beds(laid)
    rows = read_meta(next(root.glob("background-*")))
    assert below == (10.0, 12.0)
    assert beds and sorted(beds) == sorted(row["path"] for row in rows if row["kind"] == "hum")


def test_a_head_lays_background_under_copies_as_its_options_or_its_recipe_say(tmp_path, monkeypatch):
    """`vocabulary-head --under/--under-kinds/--under-db` over the recipe's background.underlay: a
    recipe without one lays none unless asked; kinds or levels alone ask for HEAD["under"] copies,
    the rest from the recipe; --under 0 lays none; asked kinds come from the recipe's own background
    clips, and a kind it lacks is named."""
    import train.data.background as background
    from train.config import ConfigError
    from train.data.background import read_meta
    from train.recipe import BackgroundConfig, TrainConfig, UnderlayConfig

    monkeypatch.setattr(background, "DEFAULT_WEIGHTS", {"hum": 1.0, "white": 1.0, "silence": 1.0})  # small, fast
    root = tmp_path / "bg"
    plain = TrainConfig(scoring="sigmoid", loss="class_prompt", background=BackgroundConfig(count=8, root=str(root)))
    laid = TrainConfig(scoring="sigmoid", loss="class_prompt", background=BackgroundConfig(
        count=8, root=str(root), underlay=UnderlayConfig(kinds=("hum",), below_db=(10.0, 12.0))))
    assert head_underlay(plain) == (0, None)
    under, underlay = head_underlay(plain, kinds=("white",))
    assert under == HEAD["under"] and underlay.kinds == ("white",) and underlay.below_db == UnderlayConfig().below_db
    under, underlay = head_underlay(laid, below_db=(15.0, 35.0))
    assert under == HEAD["under"] and underlay.kinds == ("hum",) and underlay.below_db == (15.0, 35.0)
    assert head_underlay(laid, under=0) == (0, None) and head_underlay(laid, under=3)[0] == 3
    beds, below = underlay_beds(plain, head_underlay(plain, kinds=("white",))[1])
    rows = read_meta(next(root.glob("background-*")))
    assert below == UnderlayConfig().below_db
    assert beds and sorted(beds) == sorted(row["path"] for row in rows if row["kind"] == "white")
    with pytest.raises(ConfigError, match=r"hold none of kinds speech.*name other kinds"):
        underlay_beds(plain, head_underlay(plain, kinds=("speech",))[1])


def test_copies_with_another_clip_over_them_are_of_both_labels_and_the_partner_is_of_another_class():
    todo = [("dog", "d1"), ("dog", "d2"), ("siren", "s1"), ("drill", "r1")]
    paths, classes = head_partners(todo, len(todo) + 2, over=3)  # 2 background clips: any class over them
    assert len(paths) == len(classes) == 6 and all(len(row) == 3 for row in classes)
    for (own, _), row, where in zip(todo, classes, paths):
        assert own not in row
        assert all(path in {p for name, p in todo if name == c} for path, c in zip(where, row))
    assert head_partners(todo, 6, over=3) == (paths, classes)  # seeded
    labels = ["dog", "siren", "drill"]
    # each clip: itself, one copy, then its 3 copies with another clip over them
    targets = head_targets([c for c, _ in todo], 2, 1 + 1 + 3, labels, classes)
    assert targets.shape == (6 * 5, 3)
    for i, own in enumerate([c for c, _ in todo] + ["", ""]):
        rows = targets[i * 5:(i + 1) * 5]
        mine = np.array([label == own for label in labels], np.float32)
        np.testing.assert_array_equal(rows[:2], np.tile(mine, (2, 1)))  # itself and its plain copy: its label alone
        for k, partner in enumerate(classes[i]):
            expected = np.maximum(mine, np.array([label == partner for label in labels], np.float32))
            np.testing.assert_array_equal(rows[2 + k], expected)
    np.testing.assert_array_equal(head_targets(["dog"], 0, 2, labels), [[1, 0, 0], [1, 0, 0]])
    from train.config import ConfigError

    with pytest.raises(ConfigError, match=r"two classes at least, and these are of 1: lay none \(--over 0\)"):
        head_partners([("dog", "d1"), ("dog", "d2")], 3, over=1)  # had drawn forever


def test_a_head_lays_clips_over_copies_where_its_recipe_does_unless_told():
    from train.recipe import OverlayConfig, TrainConfig

    plain = TrainConfig(scoring="sigmoid", loss="class_prompt")
    over = TrainConfig(scoring="sigmoid", loss="class_prompt", overlay=OverlayConfig(below_db=(2.0, 4.0)))
    assert head_overlay(plain) == (0, OverlayConfig().below_db)
    assert head_overlay(over) == (HEAD["over"], (2.0, 4.0))
    assert head_overlay(over, 0)[0] == 0 and head_overlay(plain, 1) == (1, OverlayConfig().below_db)
