"""Metrics of a scorer on a split (train/evaluation.py): accuracy, per class, confusion matrix."""

import pytest
import torch
from torch import nn

from train.evaluation import evaluate

# each row: the logits of one clip over 3 classes; argmax -> predictions 0, 1, 0, 2, 0
LOGITS = torch.tensor([[5.0, 0, 0], [0, 5, 0], [5, 0, 1], [0, 0, 5], [2, 1, 0]])


class FixedScorer(nn.Module):
    """A ClassScorer stand-in: the 'mel' it is given is its logits."""

    num_classes = 3

    def forward(self, mel):
        return mel, None, None


def batches(targets, size=2):
    return [(LOGITS[i:i + size], torch.tensor(targets[i:i + size])) for i in range(0, len(LOGITS), size)]


def test_accuracy_per_class_and_confusion():
    metrics = evaluate(FixedScorer(), batches([0, 1, 2, 2, 1]), torch.device("cpu"))
    assert metrics.count == 5 and metrics.accuracy == pytest.approx(3 / 5)
    assert metrics.confusion == [[1, 0, 0], [1, 1, 0], [1, 0, 1]]  # [true][predicted]
    assert metrics.per_class == [1.0, 0.5, 0.5]


def test_a_class_absent_from_the_split_has_no_accuracy():
    metrics = evaluate(FixedScorer(), batches([0, 1, 0, 1, 0]), torch.device("cpu"))
    assert metrics.per_class == [1.0, 0.5, None] and len(metrics.confusion) == 3


def test_scoring_among_some_classes_only():
    """classes=[0, 2]: clip 1 (logits favour class 1) competes among 0 and 2 only; targets index [0, 2]."""
    metrics = evaluate(FixedScorer(), batches([0, 0, 1, 1, 0]), torch.device("cpu"), classes=[0, 2])
    assert metrics.confusion == [[3, 0], [1, 1]] and metrics.accuracy == pytest.approx(4 / 5)
