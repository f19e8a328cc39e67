"""Scoring: one window's audio embedding -> a probability per label -> top-k, then smoothing.

    z      = logit_scale * cosine(audio, labels) (+ logit_bias)     # [N, C] x [K, C] -> [N, K]
    z      = z / temperature + bias_k                               # the label set's calibration
    scores = softmax(z) over the set     (model.json scoring.kind "softmax", every older bundle)
           | sigmoid(z) per label        (scoring.kind "sigmoid": "nothing" is an answer)

The logits are the model's as trained (the CLIP-style logits of the loss, over the label set
instead of the batch); `logit_scale` is the bundle's multiplier (not its log), `logit_bias`
the bundle's global bias of a sigmoid model. `temperature` (set-level `calibration:` in the
label YAML) and the per-label `bias` come from `semanticac-calibrate scores`; by default 1 and 0.
A softmax always hands the whole mass to some label, even for silence; a sigmoid scores each
label on its own. The [K, C] label matrix is built once per label set (STYLE lesson 3).

A bundle with a vocabulary branch (edge.vocabulary) adds a second opinion: the graph's scores
of a fixed vocabulary of named classes, mapped onto the labels by their text. A label no one
trained is scored by it; a trained label by the student (mixed with the vocabulary's head where
the bundle has one) held back by it; the set's calibration (T, b) applies to both, to a new
label's score as to a logit: sigmoid(logit(p) / T + b). `Scorer(audio, vocabulary=p)` fuses them; without `p`
(an older bundle) the scores are the student's. Events read the same scores, except that with a
head that needs the student's agreement (model.json vocabulary.head.agree) a trained label counts
as nothing in a window where the student alone scores it under that: `Scorer.with_evidence`.
A label set may set its own agreement, for all its labels or one (`agree:`; 0: none), and
`listen --agree` every label's: a site trades false alarms for recall without a new bundle.

Smoothing is a plain mean of the last `windows` score vectors (default 3): the mean of
distributions is still a distribution, it forgets a window exactly `windows` hops later (an
exponential average never quite does), and `reset()` is exact. A duration in seconds becomes
a number of windows once, with `Smoother.over(seconds, hop_seconds)`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from edge.bundle import BundleMeta
from edge.errors import LabelEmbeddingsError
from edge.labels.embeddings import LabelEmbeddings
from edge.vocabulary import Fusion, Vocabulary

DEFAULT_TOP_K = 3
DEFAULT_SMOOTH_WINDOWS = 3  # with overlapping windows a few hops already span the same sound


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax: subtracting the row maximum keeps exp() <= 1 (no overflow)."""
    logits = np.asarray(logits)
    if not np.issubdtype(logits.dtype, np.floating):
        logits = logits.astype(np.float64)
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), p clipped to [1e-12, 1 - 1e-12]: a score of 0 or 1 stays finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    return np.log(p) - np.log1p(-p)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow for large |z|."""
    z = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def top_k(scores: np.ndarray, labels: Sequence[str], k: int = DEFAULT_TOP_K) -> list[tuple[str, float]]:
    """The k best (label, score) pairs, best first; equal scores keep the label set's order."""
    scores = np.asarray(scores)
    if scores.shape != (len(labels),):
        raise ValueError(
            f"top_k: scores of shape {scores.shape} for {len(labels)} labels: "
            f"pass one score per label, shape ({len(labels)},)"
        )
    if k < 1:
        raise ValueError(f"top_k: k={k} must be at least 1")
    order = np.argsort(-scores, kind="stable")[:k]
    return [(labels[i], float(scores[i])) for i in order]


class Scorer:
    """Audio embeddings -> a score per label of one label set (see the module docstring)."""

    KINDS = ("softmax", "sigmoid")

    def __init__(
        self,
        label_matrix: np.ndarray,
        labels: Sequence[str],
        logit_scale: float,
        kind: str = "softmax",
        logit_bias: float = 0.0,
        temperature: float = 1.0,
        biases: Sequence[float] | None = None,
        vocabulary: Vocabulary | None = None,
        agree: Sequence[float | None] | None = None,
        calibrate_new: bool = True,
        read_as: Sequence[str] | None = None,
    ):
        label_matrix = np.asarray(label_matrix, dtype=np.float32)
        if label_matrix.ndim != 2 or label_matrix.shape[0] != len(labels) or not len(labels):
            raise ValueError(
                f"Scorer: label matrix of shape {label_matrix.shape} for {len(labels)} labels: "
                "expected [K, C] with one row per label and K >= 1"
            )
        if not (np.isfinite(logit_scale) and logit_scale > 0):
            raise ValueError(
                f"Scorer: logit_scale {logit_scale!r} must be a positive multiplier "
                "(model.json `logit_scale`, not its log)"
            )
        if kind not in self.KINDS:
            raise ValueError(f"Scorer: kind {kind!r} is not one of {self.KINDS}")
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"Scorer: temperature {temperature!r} must be a finite number > 0")
        bias = np.zeros(len(labels)) if biases is None else np.asarray(biases, dtype=np.float64)
        if bias.shape != (len(labels),) or not np.all(np.isfinite(bias)):
            raise ValueError(f"Scorer: {bias.shape} biases for {len(labels)} labels: one finite bias per label")
        if agree is not None and (
            len(agree) != len(labels) or any(a is not None and not 0.0 <= a <= 1.0 for a in agree)
        ):
            raise ValueError(
                f"Scorer: agreements {list(agree)} for {len(labels)} labels: one per label, each a score in "
                "[0, 1] (0: none) or None (the bundle's)"
            )
        self.labels = tuple(labels)
        self.logit_scale, self.kind, self.logit_bias = float(logit_scale), kind, float(logit_bias)
        self.temperature, self.biases = float(temperature), bias
        self.calibrate_new = calibrate_new  # T and b reach the new labels (False: a set calibrated before they did)
        # Rows are unit length already (edge.labels.embeddings); normalising again costs nothing
        # once per label set and makes the dot product a true cosine whatever the source.
        self.matrix_t = np.ascontiguousarray(_unit_rows(label_matrix).T)  # [C, K]
        if vocabulary is not None and kind != "sigmoid":
            raise ValueError("Scorer: a vocabulary fuses per-label (sigmoid) scores, not a softmax over the set")
        # what each label is read as (a label set's `text:`, else its name): it names trained labels
        self.read_as = tuple(read_as or labels)
        fusion = None if vocabulary is None else vocabulary.fusion(label_matrix, self.read_as)
        if fusion is not None and agree is not None:
            fusion = fusion.agreeing(agree)
        # a set of trained labels only, with the student alone: nothing to fuse, window after window
        self.fusion: Fusion | None = None if fusion is None or fusion.identity else fusion

    @classmethod
    def for_bundle(
        cls,
        meta: BundleMeta,
        label_embeddings: LabelEmbeddings,
        label_set=None,
        vocabulary: Vocabulary | None = None,
        agree: float | None = None,
    ) -> Scorer:
        """The scorer of a bundle and one label set's embeddings (checks their width matches);
        `label_set` (edge.labels.labelset.LabelSet, in the embeddings' order) brings its calibration
        and agreement; `vocabulary` the bundle's vocabulary branch (Vocabulary.from_bundle), if it
        has one; `agree` (listen --agree) every label's agreement, over the set's and the bundle's."""
        width = label_embeddings.embeddings.shape[1]
        if width != meta.embedding_dim:
            raise LabelEmbeddingsError(
                f"label embeddings are {width}-wide, the bundle's model.json says embedding_dim "
                f"{meta.embedding_dim}: they come from another model; compute them again with "
                "`semanticac-edge embed-labels`"
            )
        if label_set is not None and tuple(label_set.names) != tuple(label_embeddings.labels):
            raise LabelEmbeddingsError(
                f"label set {label_set.name!r} names {label_set.names[:3]}..., its embeddings "
                f"{list(label_embeddings.labels)[:3]}...: compute them again"
            )
        calibration = (
            {}
            if label_set is None
            else {
                "temperature": label_set.temperature,
                "biases": [label.bias for label in label_set.labels],
                "calibrate_new": label_set.calibrated_new,
            }
        )
        agreement = [agree] * len(label_embeddings.labels) if label_set is None else label_set.agreement(agree)
        matrix = label_embeddings.embeddings
        if vocabulary is not None and label_set is not None:  # a trained label: the text it was trained on
            matrix = vocabulary.as_trained(matrix, label_set.reads)
        return cls(
            matrix,
            label_embeddings.labels,
            meta.logit_scale,
            kind=meta.scoring.get("kind", "softmax"),
            logit_bias=meta.scoring.get("logit_bias", 0.0),
            vocabulary=vocabulary,
            agree=agreement,
            read_as=None if label_set is None else label_set.reads,
            **calibration,
        )

    @property
    def dim(self) -> int:
        return self.matrix_t.shape[0]

    def logits(self, audio: np.ndarray, vocabulary: np.ndarray | None = None) -> np.ndarray:
        """[N, C] (or [C]) audio embeddings -> float64 [N, K] (or [K]) calibrated logits; with the
        vocabulary graph's rows, a trained label's has the head's logits mixed in (a bundle with
        a head) and a new label's is the logit of the vocabulary's score for it, both before the
        calibration (edge.vocabulary): what `semanticac-calibrate scores` fits T and b on."""
        z = self._student(audio)
        if self.fusion is None or vocabulary is None:
            return self._calibrated(z)
        calibrated = self._calibrated(self.fusion.mix(z, vocabulary))
        fused = self.fusion(self.probabilities(calibrated), vocabulary)
        return np.where(self.fusion.novel, self._new_logits(fused), calibrated)

    def _student(self, audio: np.ndarray) -> np.ndarray:
        """The student's own logits, before the set's calibration."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.shape[-1:] != (self.dim,) or audio.ndim not in (1, 2):
            raise ValueError(
                f"Scorer: audio embeddings of shape {audio.shape}: expected [N, {self.dim}] or "
                f"[{self.dim}] (the bundle's embedding_dim)"
            )
        # The model L2-normalises already; an FP16 engine is only close to unit length.
        cosine = (_unit_rows(audio) @ self.matrix_t).astype(np.float64)  # [N, K] in [-1, 1]
        return self.logit_scale * cosine + self.logit_bias

    def _calibrated(self, z: np.ndarray) -> np.ndarray:
        return z / self.temperature + self.biases

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated logits -> scores: softmax over the set, or a sigmoid per label."""
        return softmax(logits) if self.kind == "softmax" else sigmoid(logits)

    def __call__(self, audio: np.ndarray, vocabulary: np.ndarray | None = None) -> np.ndarray:
        """[N, C] audio embeddings -> [N, K] float64 scores in [0, 1]; [C] -> [K]. Softmax rows sum to 1.
        `vocabulary`: the graph's [N, V] vocabulary scores ([V] with [C]), fused when the scorer
        has the bundle's vocabulary (edge.vocabulary)."""
        return self._scores(self._student(audio), vocabulary)

    def with_evidence(self, audio: np.ndarray, vocabulary: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, evidence): the scores as `__call__` gives them (top-1, what a window shows) and
        what the events read: the same array, unless the bundle's head needs the student's agreement
        (model.json vocabulary.head.agree), where a trained label the student alone scores under it
        is 0 (edge.vocabulary: the figures)."""
        z = self._student(audio)
        scores = self._scores(z, vocabulary)
        if self.fusion is None or vocabulary is None or self.fusion.head_agree is None:
            return scores, scores
        return scores, self.fusion.evidence(scores, self._scores(z, vocabulary, mix=False))

    def _scores(self, z: np.ndarray, vocabulary: np.ndarray | None, mix: bool = True) -> np.ndarray:
        """The student's logits `z` -> scores: calibrated, and with the vocabulary's rows the head
        mixed in (unless `mix` is False: the student alone) and the vetoes applied."""
        if self.fusion is None or vocabulary is None:
            return self.probabilities(self._calibrated(z))
        mixed = self.fusion.mix(z, vocabulary) if mix else z
        return self._calibrated_new(self.fusion(self.probabilities(self._calibrated(mixed)), vocabulary))

    def _new_logits(self, fused: np.ndarray) -> np.ndarray:
        """A new label's logit: that of the vocabulary's score p for it, with the set's calibration
        when it reaches new labels, logit(p) / T + b, as the trained labels' logits get it."""
        return self._calibrated(logit(fused)) if self.calibrate_new else logit(fused)

    def _calibrated_new(self, fused: np.ndarray) -> np.ndarray:
        """The fused scores with the new labels' calibrated: sigmoid of `_new_logits`."""
        assert self.fusion is not None
        novel = self.fusion.novel
        if not self.calibrate_new or (self.temperature == 1.0 and not self.biases[novel].any()):
            return fused  # the usual case: no calibration, not even a round trip through the logit
        return np.where(novel, sigmoid(self._new_logits(fused)), fused)


class Smoother:
    """Mean of the last `windows` score vectors; fewer while the stream is younger than that."""

    def __init__(self, windows: int = DEFAULT_SMOOTH_WINDOWS):
        if int(windows) != windows or windows < 1:
            raise ValueError(f"Smoother: windows={windows!r} must be a whole number >= 1 (1: no smoothing)")
        self.windows = int(windows)
        self._recent: deque[np.ndarray] = deque(maxlen=self.windows)

    @classmethod
    def over(cls, seconds: float, hop_seconds: float) -> Smoother:
        """Smooth over about `seconds` of stream time at one window per `hop_seconds` (at least one)."""
        if not hop_seconds > 0 or not seconds >= 0:
            raise ValueError(f"Smoother.over: seconds={seconds!r} must be >= 0 and hop_seconds={hop_seconds!r} > 0")
        return cls(max(1, round(seconds / hop_seconds)))

    def update(self, scores: np.ndarray) -> np.ndarray:
        """Add one window's [K] scores and return the smoothed [K] scores."""
        scores = np.asarray(scores, dtype=np.float64)
        if self._recent and scores.shape != self._recent[0].shape:
            raise ValueError(
                f"Smoother: scores of shape {scores.shape} after {self._recent[0].shape}: "
                "the label set changed mid-stream; call reset() first"
            )
        self._recent.append(scores.copy())
        return np.mean(self._recent, axis=0)

    def reset(self) -> None:
        self._recent.clear()
