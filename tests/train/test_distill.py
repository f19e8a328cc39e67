"""Per-label sigmoid training with background clips and the AudioSet teacher (train.distill)."""

import pytest
import torch
import torch.nn.functional as F

from train.checkpoint import load_checkpoint
from train.distill import BACKGROUND, LOGIT_BIAS_INIT, UNKNOWN, sigmoid_loss, vocabulary_label_set
from train.loop import Trainer, prepare
from train.recipe import ConfigError, load_train_config
from tests.train.test_loop import recipe  # noqa: F401  (the tiny recipe fixture)


def test_sigmoid_loss_terms():
    torch.manual_seed(0)
    logits, vocab = torch.randn(4, 3, requires_grad=True), torch.randn(4, 5)
    bias = torch.tensor(-1.0, requires_grad=True)
    targets = torch.tensor([0, 2, BACKGROUND, UNKNOWN])
    seen = torch.tensor([True, False, True])  # class 1 is zero-shot
    teacher = torch.rand(4, 5)
    loss, terms = sigmoid_loss(logits, bias, targets, seen, vocab, teacher, weight=0.5)
    masked = logits[:2].masked_fill(~seen, float("-inf"))
    assert terms["ce"] == pytest.approx(float(F.cross_entropy(masked, targets[:2]).detach()))
    onehot = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # seen columns of rows 0-2; row 3 unknown
    expected_bce = F.binary_cross_entropy_with_logits(logits[:3][:, seen] + bias, onehot)
    assert terms["bce"] == pytest.approx(float(expected_bce.detach()))
    assert terms["teacher"] == pytest.approx(0.5 * float(F.binary_cross_entropy_with_logits(vocab + bias, teacher).detach()))
    loss.backward()
    assert torch.all(logits.grad[:, 1] == 0)  # a zero-shot class never trains
    assert torch.all(logits.grad[3] == 0)  # an unknown clip trains only against the teacher
    assert bias.grad != 0


def test_the_vocabulary_uses_the_recipe_prompt():
    vocab = vocabulary_label_set(["Speech", "Child speech, kid speaking"], "a recording of {label}")
    assert [label.prompts for label in vocab.labels] == [("a recording of speech",),
                                                        ("a recording of child speech, kid speaking",)]


def test_distill_needs_sigmoid_scoring(tmp_path, recipe):  # noqa: F811
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {recipe}\ndistill: {{weight: 1.0}}\n")
    with pytest.raises(ConfigError, match="scoring: sigmoid"):
        load_train_config(bad)


def test_fit_with_teacher_and_background_learns_and_resumes_the_bias(recipe, tmp_path):  # noqa: F811
    path = tmp_path / "distill.yaml"
    path.write_text(f"extends: {recipe}\nloss: class_prompt\nscoring: sigmoid\ndistill: {{weight: 1.0, pool: max}}\n"
                    f"background: {{count: 4, root: {tmp_path / 'background'}}}\nepochs: 1\n")
    config = load_train_config(path)
    run = prepare(config)
    assert len(run.train_set) == 8 + 4  # 8 clips of folds 1-2 and the 4 background clips
    trainer = Trainer(config, run)
    record = trainer.train_epoch(0)
    assert torch.isfinite(torch.tensor(record["loss"])) and 0 <= record["train_accuracy"] <= 1
    trainer.history.append({"epoch": 1, **record})
    trainer.save(tmp_path / "run", 0, record["train_accuracy"], {"command": "test"})
    state = load_checkpoint(tmp_path / "run/last.pt")
    assert state["scoring"]["kind"] == "sigmoid" and state["scoring"]["logit_bias"] != LOGIT_BIAS_INIT  # it learnt
    # --resume restores the bias with the weights
    run.scorer.logit_bias.data.fill_(LOGIT_BIAS_INIT)
    trainer.resume(tmp_path / "run/last.pt")
    assert run.scorer.scoring_spec() == state["scoring"]
