"""Background laid under labelled clips, the label kept (train.data.underlay, a recipe's
`background.underlay`)."""

import math

import numpy as np
import pytest

from edge.features import WindowGain, hop_squares, loudest_dbfs
from train.data.background import plan
from train.data.underlay import Underlay, lay_under
from train.loop import prepare
from train.recipe import UNDERLAY_KINDS, ConfigError, UnderlayConfig, load_train_config
from tests.train.test_loop import recipe  # noqa: F401  (the tiny recipe fixture)

RATE = 16000


def _db(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(np.square(x, dtype=np.float64))))


def test_the_bed_lies_below_db_under_the_loudest_50_ms_and_is_tiled_from_a_random_offset():
    t = np.arange(5 * RATE) / RATE
    wave = np.zeros(t.size, np.float32)
    wave[RATE:RATE + RATE // 5] = 0.5 * np.sin(2 * np.pi * 440 * t[:RATE // 5])  # a 0.2 s burst in 5 s
    loudest = loudest_dbfs(hop_squares(wave, RATE // 100), WindowGain.span_hops)
    bed = np.random.default_rng(0).standard_normal(RATE // 2).astype(np.float32)  # 0.5 s: tiled 10 times
    mixed = lay_under(wave, bed, 20.0, np.random.default_rng(1), RATE)
    added = mixed - wave
    assert mixed.shape == wave.shape and mixed.dtype == np.float32
    assert _db(added) == pytest.approx(loudest - 20.0, abs=0.05)  # under the burst, not under the mean
    assert np.allclose(added[: RATE // 2], added[RATE // 2: RATE], atol=1e-6)  # the bed repeats
    other = lay_under(wave, bed, 20.0, np.random.default_rng(2), RATE) - wave
    assert not np.allclose(other, added)  # another offset
    assert _db(lay_under(wave, bed, 8.0, np.random.default_rng(1), RATE) - wave) == pytest.approx(loudest - 8.0, abs=0.05)


def test_silence_stays_silent_and_a_silent_bed_adds_nothing():
    silent = np.zeros(RATE, np.float32)
    bed = np.ones(RATE, np.float32)
    assert not lay_under(silent, bed, 10.0, np.random.default_rng(0), RATE).any()
    wave = np.random.default_rng(0).standard_normal(RATE).astype(np.float32)
    assert np.array_equal(lay_under(wave, np.zeros(RATE, np.float32), 10.0, np.random.default_rng(0), RATE), wave)


@pytest.mark.parametrize("fields, match", [
    ({"p": 0.0}, "underlay.p=0.0"),
    ({"p": 1.5}, "underlay.p=1.5"),
    ({"below_db": (30.0, 8.0)}, r"below_db=\[30.0, 8.0\]"),
    ({"below_db": (-5.0, 8.0)}, "0 <= low <= high"),
    ({"kinds": ("street",)}, "'street'.*silence adds nothing"),
    ({"kinds": ()}, "must be one of"),
])
def test_underlay_config_names_the_wrong_value(fields, match):
    with pytest.raises(ConfigError, match=match):
        UnderlayConfig(**fields)


def test_a_recipe_lays_background_under_every_labelled_clip_and_keeps_label_and_teacher(recipe, tmp_path):  # noqa: F811
    path = tmp_path / "under.yaml"
    path.write_text(f"extends: {recipe}\nloss: class_prompt\nscoring: sigmoid\ndistill: {{weight: 1.0, pool: max}}\n"
                    f"background: {{count: 12, root: {tmp_path / 'background'}, underlay: {{p: 1.0}}}}\nepochs: 1\n")
    run = prepare(load_train_config(path))
    under = run.train_set
    assert isinstance(under, Underlay) and under.pool
    plain, teacher = under.dataset, under.dataset.teacher
    background = under.combined.starts[under.background_at]
    pool_rows = teacher[[background + b for b in under.pool]]
    under.set_epoch(0)
    for i in range(len(under)):
        mel, target, row = under[i]
        mel0, target0, row0 = plain[i]
        assert target == target0
        if i >= background:  # background items are left as they are
            assert np.array_equal(mel.numpy(), mel0.numpy()) and np.array_equal(row, row0)
            continue
        assert not np.allclose(mel.numpy(), mel0.numpy())  # p 1: every labelled clip has a bed under it
        assert np.array_equal(mel.numpy(), under[i][0].numpy())  # the same draw for the same epoch
        assert any(np.array_equal(row, np.maximum(row0, bed)) for bed in pool_rows)  # the teacher hears both
    augment = under.combined.sources[0].augment
    augment.eval()  # evaluation: no bed, as no other augmentation
    assert np.array_equal(under[0][0].numpy(), plain[0][0].numpy())
    augment.train()


def test_underlay_names_kinds_the_background_clips_lack(recipe, tmp_path):  # noqa: F811
    planned = {p.kind for p in plan(2, 0)}
    missing = next(kind for kind in UNDERLAY_KINDS if kind not in planned)
    path = tmp_path / "under.yaml"
    path.write_text(f"extends: {recipe}\nloss: class_prompt\nscoring: sigmoid\n"
                    f"background: {{count: 2, root: {tmp_path / 'background'}, underlay: {{kinds: [{missing}]}}}}\n")
    with pytest.raises(ConfigError, match=rf"kinds \['{missing}'\]: the background clips hold none.*they hold"):
        prepare(load_train_config(path))
