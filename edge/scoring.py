"""Scoring: one window's audio embedding -> a probability per label -> top-k, then smoothing.

    scores = softmax(logit_scale * cosine(audio, labels))      # [N, C] x [K, C] -> [N, K]

exactly as the model was trained (the CLIP-style logits of the loss, over the label set
instead of the batch). The [K, C] label matrix is built once per label set (STYLE lesson 3);
`logit_scale` is the bundle's model.json multiplier (not its log).

Smoothing is a plain mean of the last `windows` score vectors (default 3): the mean of
distributions is still a distribution, it forgets a window exactly `windows` hops later (an
exponential average never quite does), and `reset()` is exact. A duration in seconds becomes
a number of windows once, with `Smoother.over(seconds, hop_seconds)`.
"""

from __future__ import annotations

from collections import deque
from typing import Sequence

import numpy as np

from edge.bundle import BundleMeta
from edge.errors import LabelEmbeddingsError
from edge.labels.embeddings import LabelEmbeddings

DEFAULT_TOP_K = 3
DEFAULT_SMOOTH_WINDOWS = 3  # with overlapping windows a few hops already span the same sound


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax: subtracting the row maximum keeps exp() <= 1 (no overflow)."""
    logits = np.asarray(logits)
    if not np.issubdtype(logits.dtype, np.floating):
        logits = logits.astype(np.float64)
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def top_k(scores: np.ndarray, labels: Sequence[str], k: int = DEFAULT_TOP_K) -> list[tuple[str, float]]:
    """The k best (label, score) pairs, best first; equal scores keep the label set's order."""
    scores = np.asarray(scores)
    if scores.shape != (len(labels),):
        raise ValueError(f"top_k: scores of shape {scores.shape} for {len(labels)} labels: "
                         f"pass one score per label, shape ({len(labels)},)")
    if k < 1:
        raise ValueError(f"top_k: k={k} must be at least 1")
    order = np.argsort(-scores, kind="stable")[:k]
    return [(labels[i], float(scores[i])) for i in order]


class Scorer:
    """Audio embeddings -> probabilities over one label set: softmax(logit_scale * cosine)."""

    def __init__(self, label_matrix: np.ndarray, labels: Sequence[str], logit_scale: float):
        label_matrix = np.asarray(label_matrix, dtype=np.float32)
        if label_matrix.ndim != 2 or label_matrix.shape[0] != len(labels) or not len(labels):
            raise ValueError(f"Scorer: label matrix of shape {label_matrix.shape} for {len(labels)} labels: "
                             "expected [K, C] with one row per label and K >= 1")
        if not (np.isfinite(logit_scale) and logit_scale > 0):
            raise ValueError(f"Scorer: logit_scale {logit_scale!r} must be a positive multiplier "
                             "(model.json `logit_scale`, not its log)")
        self.labels = tuple(labels)
        self.logit_scale = float(logit_scale)
        # Rows are unit length already (edge.labels.embeddings); normalising again costs nothing
        # once per label set and makes the dot product a true cosine whatever the source.
        self.matrix_t = np.ascontiguousarray(_unit_rows(label_matrix).T)  # [C, K]

    @classmethod
    def for_bundle(cls, meta: BundleMeta, label_embeddings: LabelEmbeddings) -> "Scorer":
        """The scorer of a bundle and one label set's embeddings (checks their width matches)."""
        width = label_embeddings.embeddings.shape[1]
        if width != meta.embedding_dim:
            raise LabelEmbeddingsError(
                f"label embeddings are {width}-wide, the bundle's model.json says embedding_dim "
                f"{meta.embedding_dim}: they come from another model; compute them again with "
                "`semanticac-edge embed-labels`")
        return cls(label_embeddings.embeddings, label_embeddings.labels, meta.logit_scale)

    @property
    def dim(self) -> int:
        return self.matrix_t.shape[0]

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """[N, C] audio embeddings -> [N, K] float64 probabilities (each row sums to 1); [C] -> [K]."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.shape[-1:] != (self.dim,) or audio.ndim not in (1, 2):
            raise ValueError(f"Scorer: audio embeddings of shape {audio.shape}: expected [N, {self.dim}] or "
                             f"[{self.dim}] (the bundle's embedding_dim)")
        # The model L2-normalises already; an FP16 engine is only close to unit length.
        cosine = _unit_rows(audio) @ self.matrix_t  # [N, K] in [-1, 1]
        return softmax(self.logit_scale * cosine.astype(np.float64))


class Smoother:
    """Mean of the last `windows` score vectors; fewer while the stream is younger than that."""

    def __init__(self, windows: int = DEFAULT_SMOOTH_WINDOWS):
        if int(windows) != windows or windows < 1:
            raise ValueError(f"Smoother: windows={windows!r} must be a whole number >= 1 (1: no smoothing)")
        self.windows = int(windows)
        self._recent: deque[np.ndarray] = deque(maxlen=self.windows)

    @classmethod
    def over(cls, seconds: float, hop_seconds: float) -> "Smoother":
        """Smooth over about `seconds` of stream time at one window per `hop_seconds` (at least one)."""
        if not hop_seconds > 0 or not seconds >= 0:
            raise ValueError(f"Smoother.over: seconds={seconds!r} must be >= 0 and hop_seconds={hop_seconds!r} > 0")
        return cls(max(1, round(seconds / hop_seconds)))

    def update(self, scores: np.ndarray) -> np.ndarray:
        """Add one window's [K] scores and return the smoothed [K] scores."""
        scores = np.asarray(scores, dtype=np.float64)
        if self._recent and scores.shape != self._recent[0].shape:
            raise ValueError(f"Smoother: scores of shape {scores.shape} after {self._recent[0].shape}: "
                             "the label set changed mid-stream; call reset() first")
        self._recent.append(scores.copy())
        return np.mean(self._recent, axis=0)

    def reset(self) -> None:
        self._recent.clear()
