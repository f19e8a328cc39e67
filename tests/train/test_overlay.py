"""A second labelled clip laid over labelled clips, both labels kept (train.data.overlay, a recipe's
`overlay`), and the loss that takes both as present (train.distill.sigmoid_loss)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edge.features import WindowGain, hop_squares, loudest_dbfs
from tests.train.test_loop import recipe  # noqa: F401  (the tiny recipe fixture)
from train.data.overlay import NO_PARTNER, Overlay, lay_over, placed
from train.distill import BACKGROUND, sigmoid_loss
from train.loop import Trainer, prepare
from train.recipe import ConfigError, OverlayConfig, load_train_config

RATE = 16000


def _loudest(x: np.ndarray) -> float:
    return loudest_dbfs(hop_squares(x, RATE // 100), WindowGain.span_hops)


def _burst(length: int, at: int, amplitude: float, hz: float = 440.0) -> np.ndarray:
    wave = np.zeros(length, np.float32)
    t = np.arange(RATE // 5) / RATE
    wave[at:at + t.size] = amplitude * np.sin(2 * np.pi * hz * t)
    return wave


def test_a_shorter_partner_lands_whole_at_a_random_offset_and_a_longer_one_keeps_its_loudest_sample():
    other = np.arange(1, 101, dtype=np.float32)
    starts = set()
    for seed in range(20):
        out = placed(other, 300, np.random.default_rng(seed))
        start = int(np.flatnonzero(out)[0])
        assert np.array_equal(out[start:start + 100], other) and np.count_nonzero(out) == 100
        starts.add(start)
    assert len(starts) > 5
    long = np.zeros(1000, np.float32)
    long[10] = 1.0  # the loudest sample near the start
    for seed in range(20):
        crop = placed(long, 300, np.random.default_rng(seed))
        assert crop.size == 300 and crop.max() == 1.0


def test_the_partner_s_loudest_50_ms_lies_below_db_under_the_clip_s():
    wave = _burst(4 * RATE, RATE, 0.5)
    other = _burst(2 * RATE, RATE // 2, 0.01, hz=1000.0)  # quiet: raised to its place
    for below in (0.0, 6.0):
        mixed = lay_over(wave, other, below, np.random.default_rng(0), RATE)
        assert mixed.shape == wave.shape and mixed.dtype == np.float32
        assert _loudest(mixed - wave) == pytest.approx(_loudest(wave) - below, abs=0.05)


def test_silence_on_either_side_adds_nothing():
    wave = _burst(RATE, 0, 0.5)
    silent = np.zeros(RATE, np.float32)
    assert np.array_equal(lay_over(wave, silent, 3.0, np.random.default_rng(0), RATE), wave)
    assert not lay_over(silent, wave, 3.0, np.random.default_rng(0), RATE).any()


@pytest.mark.parametrize("fields, match", [
    ({"p": 0.0}, "overlay.p=0.0"),
    ({"p": 1.5}, "overlay.p=1.5"),
    ({"below_db": (10.0, 0.0)}, r"below_db=\[10.0, 0.0\]"),
    ({"below_db": (-5.0, 8.0)}, "0 <= low <= high"),
])
def test_overlay_config_names_the_wrong_value(fields, match):
    with pytest.raises(ConfigError, match=match):
        OverlayConfig(**fields)


def test_overlay_needs_sigmoid_scoring(recipe, tmp_path):  # noqa: F811
    path = tmp_path / "bad.yaml"
    path.write_text(f"extends: {recipe}\noverlay: {{p: 0.5}}\n")
    with pytest.raises(ConfigError, match="overlay.*set scoring: sigmoid"):
        load_train_config(path)


def test_the_loss_takes_a_partner_as_present_and_shares_the_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, requires_grad=True)
    bias = torch.tensor(-1.0)
    seen = torch.tensor([True, True, False, True])
    targets = torch.tensor([0, 3, BACKGROUND])
    alone, _ = sigmoid_loss(logits, bias, targets, seen, partners=torch.tensor([NO_PARTNER] * 3))
    plain, _ = sigmoid_loss(logits, bias, targets, seen)
    assert float(alone.detach()) == pytest.approx(float(plain.detach()))  # no partner: the loss as before
    loss, terms = sigmoid_loss(logits, bias, targets, seen, partners=torch.tensor([1, NO_PARTNER, 2]))
    present = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # seen columns 0, 1, 3
    expected_bce = F.binary_cross_entropy_with_logits(logits[:, seen] + bias, present)
    assert terms["bce"] == pytest.approx(float(expected_bce.detach()))  # a background row's partner is ignored
    logp = F.log_softmax(logits[:2].masked_fill(~seen, float("-inf")), dim=1)
    expected_ce = -(0.5 * logp[0, 0] + 0.5 * logp[0, 1] + logp[1, 3]) / 2
    assert terms["ce"] == pytest.approx(float(expected_ce.detach()))
    loss.backward()
    assert torch.isfinite(logits.grad).all() and torch.all(logits.grad[:, 2] == 0)  # zero-shot: never trained


def test_a_recipe_lays_a_clip_of_another_class_over_its_clips_with_both_labels_and_the_teacher(recipe, tmp_path):  # noqa: F811
    path = tmp_path / "over.yaml"
    path.write_text(f"extends: {recipe}\nloss: class_prompt\nscoring: sigmoid\ndistill: {{weight: 1.0, pool: max}}\n"
                    f"background: {{count: 4, root: {tmp_path / 'background'}}}\noverlay: {{p: 1.0}}\nepochs: 1\n")
    config = load_train_config(path)
    run = prepare(config)
    over = run.train_set
    assert isinstance(over, Overlay)
    plain, teacher = over.dataset, over.dataset.teacher
    background = over.starts[1]
    over.set_epoch(0)
    for i in range(len(over)):
        mel, target, row, partner = over[i]
        mel0, target0, row0 = plain[i]
        assert target == target0
        if i >= background:  # background clips get no partner
            assert partner == NO_PARTNER and np.array_equal(mel.numpy(), mel0.numpy())
            continue
        assert partner >= 0 and partner != target  # p 1: every labelled clip has another class over it
        assert not np.allclose(mel.numpy(), mel0.numpy())
        assert np.array_equal(mel.numpy(), over[i][0].numpy())  # the same draw for the same epoch
        partners = [j for j in range(background) if plain[j][1] == partner]
        assert any(np.array_equal(row, np.maximum(row0, teacher[j])) for j in partners)  # the teacher hears both
    augment = over.sources[0].augment
    augment.eval()  # evaluation: no partner, as no other augmentation
    assert over[0][-1] == NO_PARTNER and np.array_equal(over[0][0].numpy(), plain[0][0].numpy())
    augment.train()
    record = Trainer(config, run).train_epoch(0)  # the loop reads the partner column
    assert np.isfinite(record["loss"]) and 0 <= record["train_accuracy"] <= 1
