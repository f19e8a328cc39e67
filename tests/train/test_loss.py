"""Losses: Eq. 3 with same-class masking, class-prompt CE, one-hot CE, the logit scale."""

import math

import pytest
import torch
import torch.nn.functional as F

from train.loop import loss_of
from train.model.loss import LogitScale, OneHotLoss, SemanticLoss, mask_same_class


def _unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape), dim=-1)


def _eq3(audio, text, scale):
    """The paper's Eq. 3 written out: every off-diagonal pair is a negative."""
    logits = scale * audio @ text.T
    target = torch.arange(len(audio))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def test_aligned_pairs_cost_less_than_shuffled():
    torch.manual_seed(0)
    text = _unit(8, 32)
    audio = F.normalize(text + 0.3 * torch.randn(8, 32), dim=-1)
    classes = torch.arange(8)
    loss = SemanticLoss()
    aligned = loss(audio, text, classes, LogitScale()())
    shuffled = loss(audio, text.roll(1, dims=0), classes, LogitScale()())  # each clip with another's text
    assert aligned < shuffled


def test_distinct_classes_give_eq3_exactly():
    torch.manual_seed(0)
    audio, text = _unit(6, 16), _unit(6, 16)
    expected = _eq3(audio, text, 20.0)
    torch.testing.assert_close(SemanticLoss()(audio, text, torch.arange(6), 20.0), expected)
    torch.testing.assert_close(SemanticLoss()(audio, text, None, 20.0), expected)


def test_same_class_pairs_are_not_penalised():
    # Classes [0, 0, 1, 2]: both class-0 clips have the same audio and the same text
    # embedding, the three classes are orthogonal, and audio = text. That is a perfect
    # model, so its loss must be the minimum, 0 (up to exp(-scale) terms), and nothing
    # may push the two class-0 clips apart (zero gradient).
    classes = torch.tensor([0, 0, 1, 2])
    text = torch.eye(4)[classes].requires_grad_()
    audio = torch.eye(4)[classes].requires_grad_()
    loss = SemanticLoss()(audio, text, classes, 100.0)
    loss.backward()
    assert loss < 1e-6
    assert audio.grad.abs().max() < 1e-6 and text.grad.abs().max() < 1e-6
    # Without the mask (Eq. 3 as printed) the class-0 clips are each other's negatives:
    # their rows and columns put only half their mass on the target, log 2 each for 4 of 8 CEs.
    torch.testing.assert_close(SemanticLoss()(audio, text, None, 100.0), torch.tensor(math.log(2) / 2))


def test_masked_row_is_cross_entropy_without_the_same_class_columns():
    torch.manual_seed(0)
    classes = torch.tensor([0, 0, 1, 2, 1])
    audio, text = _unit(5, 16), _unit(5, 16)
    logits = 10.0 * audio @ text.T
    rows = F.cross_entropy(mask_same_class(logits, classes), torch.arange(5), reduction="none")
    # Clip 0 by hand: its class-0 partner (column 1) is gone, its positive is column 0.
    torch.testing.assert_close(rows[0], -torch.log_softmax(logits[0, [0, 2, 3, 4]], 0)[0])
    # Clip 2 (class 1) loses column 4; class 0's two columns both stay negatives.
    torch.testing.assert_close(rows[2], -torch.log_softmax(logits[2, [0, 1, 2, 3]], 0)[2])


def test_a_same_class_clip_leaves_the_audio_to_text_term_unchanged():
    # Clip 3 is another class-0 clip: same text (its label's prompt), different audio.
    torch.manual_seed(0)
    text3, audio = _unit(3, 16), _unit(4, 16)
    text4 = torch.cat([text3, text3[:1]])

    def rows(audio, text, classes):
        logits = mask_same_class(10.0 * audio @ text.T, torch.tensor(classes))
        return F.cross_entropy(logits, torch.arange(len(classes)), reduction="none")

    torch.testing.assert_close(rows(audio, text4, [0, 1, 2, 0])[0], rows(audio[:3], text3, [0, 1, 2])[0])


def test_class_prompt_loss_scores_against_every_class():
    """The recipes' `class_prompt` loss: each clip against ALL classes, same-class clips included."""
    torch.manual_seed(0)
    audio, class_text, targets = _unit(5, 16), _unit(50, 16), torch.tensor([3, 0, 49, 3, 7])
    logits = 10.0 * audio @ class_text.T
    expected = -torch.log_softmax(logits, 1)[torch.arange(5), targets].mean()
    torch.testing.assert_close(loss_of("class_prompt", logits, audio, class_text, targets, 10.0), expected)


def test_mask_keeps_the_diagonal_and_removes_same_class_pairs_only():
    masked = mask_same_class(torch.zeros(4, 4), torch.tensor([3, 1, 3, 3]))
    removed = torch.isinf(masked)
    assert removed.sum() == 6  # the ordered pairs among clips 0, 2, 3
    assert not removed.diagonal().any() and not removed[1].any() and not removed[:, 1].any()


def test_loss_is_symmetric_and_gradients_are_finite():
    torch.manual_seed(0)
    classes = torch.tensor([4, 1, 4, 2, 1, 4])
    audio, text = _unit(6, 16).requires_grad_(), _unit(6, 16).requires_grad_()
    loss = SemanticLoss()(audio, text, classes, 14.3)
    torch.testing.assert_close(loss, SemanticLoss()(text, audio, classes, 14.3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(audio.grad).all() and torch.isfinite(text.grad).all()


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(4, 8\) and \(3, 8\)"):
        SemanticLoss()(_unit(4, 8), _unit(3, 8), torch.arange(4), 1.0)
    with pytest.raises(ValueError, match=r"class_ids must be \(B,\) = \(4,\); got \(3,\)"):
        SemanticLoss()(_unit(4, 8), _unit(4, 8), torch.arange(3), 1.0)


def test_one_hot_loss_is_cross_entropy():
    logits, targets = torch.randn(5, 50), torch.randint(0, 50, (5,))
    torch.testing.assert_close(OneHotLoss()(logits, targets), F.cross_entropy(logits, targets))


def test_logit_scale_starts_at_clip_value_and_is_clamped():
    scale = LogitScale()
    torch.testing.assert_close(scale(), torch.tensor(1 / 0.07))
    torch.testing.assert_close(scale.value(), scale())
    with torch.no_grad():
        scale.log_scale.fill_(10.0)  # e^10 would be 22026
    torch.testing.assert_close(scale(), torch.tensor(100.0))
    scale.clamp_()
    torch.testing.assert_close(scale.log_scale.detach(), torch.tensor(math.log(100.0)))
    with torch.no_grad():
        scale.log_scale.fill_(-2.0)
    torch.testing.assert_close(scale(), torch.tensor(1.0))


def test_gradient_reaches_the_logit_scale():
    torch.manual_seed(0)
    audio, text, classes = _unit(8, 16), _unit(8, 16), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    scale = LogitScale()
    SemanticLoss()(audio, text, classes, scale()).backward()
    assert scale.log_scale.grad is not None and scale.log_scale.grad != 0
    # On the bound (where clamp_() leaves it) the gradient still flows, so it can come back down.
    scale.log_scale.grad = None
    with torch.no_grad():
        scale.log_scale.fill_(math.log(100.0))
    SemanticLoss()(audio, text, classes, scale()).backward()
    assert scale.log_scale.grad != 0
