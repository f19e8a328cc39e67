import math

import numpy as np
import pytest

from edge.bundle import read_bundle
from edge.errors import LabelEmbeddingsError
from edge.labels.embeddings import LabelEmbeddings
from edge.labels.labelset import parse_label_set
from edge.scoring import Scorer, Smoother, softmax, top_k
from tests.bundles import make_bundle

S = 1 / math.sqrt(2)
LABELS = ("dog", "cat", "both")
MATRIX = np.array([[1, 0], [0, 1], [S, S]], dtype=np.float32)  # unit rows


def hand_softmax(logits):
    exps = [math.exp(x) for x in logits]
    return [e / sum(exps) for e in exps]


def test_softmax_matches_a_hand_computation_and_survives_huge_logits():
    assert softmax(np.array([1.0, 2.0, 3.0])) == pytest.approx(hand_softmax([1, 2, 3]), rel=1e-12)
    big = softmax(np.array([[1000.0, 1001.0], [-1000.0, -1001.0]], dtype=np.float32))
    assert np.isfinite(big).all() and big.dtype == np.float32
    assert big[0] == pytest.approx(hand_softmax([0, 1]), rel=1e-6)
    assert big[1] == pytest.approx(hand_softmax([1, 0]), rel=1e-6)


def test_scores_are_softmax_of_logit_scale_times_cosine():
    scorer = Scorer(MATRIX, LABELS, logit_scale=10.0)  # a multiplier: exp(10 * cos), not exp(e^10 * cos)
    scores = scorer(np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
    assert scores.shape == (2, 3)
    assert scores[0] == pytest.approx(hand_softmax([10 * 1, 10 * 0, 10 * S]), rel=1e-6)
    assert scores[1] == pytest.approx(hand_softmax([10 * 0, 10 * 1, 10 * S]), rel=1e-6)
    assert scores.sum(axis=1) == pytest.approx([1.0, 1.0])
    # one embedding [C] -> [K]; cosine ignores the length (an FP16 engine is only close to unit)
    assert scorer(np.array([3.0, 0.0])) == pytest.approx(scores[0], rel=1e-6)


def test_scorer_rejects_a_wrong_width_and_a_bad_scale():
    scorer = Scorer(MATRIX, LABELS, logit_scale=10.0)
    with pytest.raises(ValueError, match=r"shape \(1, 3\): expected \[N, 2\]"):
        scorer(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="logit_scale -1.0 must be a positive multiplier"):
        Scorer(MATRIX, LABELS, logit_scale=-1.0)
    with pytest.raises(ValueError, match="for 2 labels"):
        Scorer(MATRIX, LABELS[:2], logit_scale=1.0)


def test_scorer_for_bundle_uses_its_logit_scale_and_checks_the_width(tmp_path):
    meta = read_bundle(make_bundle(tmp_path / "b")).meta  # embedding_dim 8, logit_scale 50
    label_set = parse_label_set("name: t\nlabels: [dog, cat]\n")
    rng = np.random.default_rng(0)
    good = LabelEmbeddings.from_prompt_embeddings(label_set, rng.normal(size=(2, 8)), meta.model_id)
    scorer = Scorer.for_bundle(meta, good)
    audio = good.embeddings[1]
    cos = good.embeddings @ audio
    assert scorer.labels == ("dog", "cat")
    assert scorer(audio) == pytest.approx(hand_softmax(50.0 * cos), rel=1e-5)
    wide = LabelEmbeddings.from_prompt_embeddings(label_set, rng.normal(size=(2, 16)), meta.model_id)
    with pytest.raises(LabelEmbeddingsError, match="16-wide.*embedding_dim 8.*embed-labels"):
        Scorer.for_bundle(meta, wide)


def test_top_k_is_best_first_and_ties_keep_the_label_order():
    scores = np.array([0.1, 0.4, 0.2, 0.4, 0.0])
    names = ["a", "b", "c", "d", "e"]
    assert top_k(scores, names, k=3) == [("b", 0.4), ("d", 0.4), ("c", 0.2)]
    assert [label for label, _ in top_k(scores, names, k=10)] == ["b", "d", "c", "a", "e"]
    assert top_k(scores, names, k=1) == [("b", 0.4)]
    with pytest.raises(ValueError, match="k=0 must be at least 1"):
        top_k(scores, names, k=0)
    with pytest.raises(ValueError, match="one score per label"):
        top_k(scores, names[:3])


def test_smoother_is_the_mean_of_the_last_windows():
    smoother = Smoother(3)
    a, b, c, d = (np.array(x, dtype=float) for x in ([1, 0], [0, 1], [1, 0], [0.5, 0.5]))
    assert smoother.update(a) == pytest.approx([1, 0])  # young stream: the mean of what there is
    assert smoother.update(b) == pytest.approx([0.5, 0.5])
    assert smoother.update(c) == pytest.approx([2 / 3, 1 / 3])
    assert smoother.update(d) == pytest.approx([0.5, 0.5])  # `a` forgotten exactly 3 windows later
    smoother.reset()
    assert smoother.update(b) == pytest.approx([0, 1])
    assert Smoother(1).update(d) == pytest.approx(d)


def test_smoother_in_seconds_and_bad_sizes():
    assert Smoother.over(1.5, hop_seconds=0.5).windows == 3
    assert Smoother.over(0.0, hop_seconds=0.5).windows == 1
    assert Smoother.over(2.0, hop_seconds=1.0).windows == 2
    with pytest.raises(ValueError, match="windows=0"):
        Smoother(0)
    with pytest.raises(ValueError, match="hop_seconds=0"):
        Smoother.over(1.0, hop_seconds=0)
    smoother = Smoother(2)
    smoother.update(np.ones(3) / 3)
    with pytest.raises(ValueError, match="label set changed"):
        smoother.update(np.ones(4) / 4)
