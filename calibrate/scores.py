"""Score calibration on labelled clips: a temperature per label set and a bias per label.

The device scores a window as (edge.scoring.Scorer)

    z = logit_scale * cosine (+ the bundle's logit_bias for a sigmoid model)    # raw logits
    scores = softmax(z / T + b)  or  sigmoid(z / T + b)                         # T, b: the label set's

(with a vocabulary branch, a new label's z is the logit of the vocabulary's score for it:
edge.scoring.Scorer.logits)

`fit_calibration` finds T (one per label set) and b_k (one per label) that minimise the
negative log-likelihood of the clips' labels: the multiclass NLL for a softmax bundle, the
one-vs-rest binary cross-entropy (summed over labels) for a sigmoid one. The problem is
convex in (a = 1/T, b), since the logits are linear in them, so a plain L-BFGS (written
out below; no scipy) reaches the optimum in a few dozen steps. A small L2 penalty keeps the
biases near 0 where a label has few clips (and makes the softmax's biases, otherwise free to
shift together, unique); a label with no clip keeps bias 0. A weaker one keeps T finite on
clips the model separates perfectly (TEMPERATURE_L2). A temperature alone never changes
a clip's top-1 label; biases may.

Clips are scored as `listen` scores a clip of the bundle's clip length: its first window of
`clip_seconds` as the model's input (edge.features.clip_window: the log-mel, the bundle's
window gain, tiled), one embedding from the bundle's backend; scores come from
edge's Scorer itself, so the figures before and after are what the device will compute.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibrate.errors import CalibrationError
from calibrate.inputs import LabelledClip
from calibrate.progress import Progress
from edge.bundle import Bundle
from edge.capture.audio import read_audio
from edge.errors import AudioError
from edge.features import clip_window
from edge.labels.embeddings import LabelEmbeddings
from edge.labels.labelset import LabelSet
from edge.scoring import Scorer, sigmoid, softmax
from edge.vocabulary import Vocabulary

log = logging.getLogger(__name__)

ECE_BINS = 15
# The biases' L2 penalty (per label, on the mean NLL: 0.01 makes a bias of 1 cost 0.005 nats per
# clip) is chosen from BIAS_L2_CHOICES by the NLL of clips held out (CV_FOLDS folds, a recording's
# clips on one side): few clips of a label, or clips unlike the rest of the site's, make its bias
# learn them and not the label, which held-out clips show. Fewer than CV_FOLDS recordings: DEFAULT.
BIAS_L2_CHOICES = (0.001, 0.01, 0.1, 1.0)
DEFAULT_BIAS_L2 = 0.01
CV_FOLDS = 5
BATCH = 8
# Clips the model separates perfectly push T towards 0 without end (the NLL keeps falling as the
# scores approach 0/1). A weak prior on a = 1/T, (TEMPERATURE_L2 / 2) (a - 1)^2, stops it there
# (two classes with a logit gap of 5: T ~ 0.45) and moves a real fit by ~1e-4; T is also kept in
# [1/20, 20], beyond which scores are saturated or flat whatever the clips.
TEMPERATURE_L2 = 1e-4
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


@dataclass
class ClipSet:
    """Labelled clips as the model sees them: embeddings [N, C], label indices [N], and the
    vocabulary branch's scores [N, V] when the bundle has one (edge.vocabulary)."""

    embeddings: np.ndarray
    targets: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    vocabulary: np.ndarray | None = None
    recordings: list[str] = field(default_factory=list)  # each clip's recording (its path when unknown)


def embed_clips(
    bundle: Bundle,
    label_set: LabelSet,
    clips: Sequence[LabelledClip],
    backend,
    vocabulary: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
) -> ClipSet:
    """One embedding per clip (its first window of the bundle's clip length), and with
    `vocabulary` (the audio graph's outputs -> the vocabulary graph's scores) the vocabulary's
    scores; unreadable clips are skipped with a warning and listed; CalibrationError when none
    is left."""
    frontend = bundle.meta.frontend
    index = {name: i for i, name in enumerate(label_set.names)}
    rows: list[np.ndarray] = []
    vocabulary_rows: list[np.ndarray] = []
    targets: list[int] = []
    paths: list[Path] = []
    recordings: list[str] = []
    skipped: list[tuple[Path, str]] = []
    batch: list[tuple[np.ndarray, int, LabelledClip]] = []

    def run() -> None:
        if batch:
            feed = {backend.input_names[0]: np.stack([mel for mel, _, _ in batch])[:, None]}
            outputs = backend.run(feed)
            rows.append(outputs[backend.output_names[0]])
            if vocabulary is not None:
                vocabulary_rows.append(vocabulary({**feed, **outputs}))
            targets.extend(t for _, t, _ in batch)
            paths.extend(clip.path for _, _, clip in batch)
            recordings.extend(clip.recording or str(clip.path) for _, _, clip in batch)
            batch.clear()

    with Progress(len(clips), "embedding clips") as bar:
        for clip in clips:
            try:
                mel = clip_window(
                    read_audio(clip.path, frontend.sample_rate), frontend, bundle.meta.clip_seconds, bundle.meta.gain
                )
            except AudioError as err:
                log.warning("skipped %s: %s", clip.path, err)
                skipped.append((clip.path, str(err)))
            else:
                batch.append((mel, -1 if clip.label is None else index[clip.label], clip))
                if len(batch) == BATCH:
                    run()
            bar.update()
        run()
    if not rows:
        raise CalibrationError(
            f"none of the {len(clips)} clip(s) could be read (first: {skipped[0][0]}: "
            f"{skipped[0][1]}): check the paths in --data"
        )
    if skipped:
        log.warning("%d of %d clip(s) skipped as unreadable", len(skipped), len(clips))
    heard = np.concatenate(vocabulary_rows).astype(np.float32) if vocabulary_rows else None
    embeddings = np.concatenate(rows).astype(np.float32)
    return ClipSet(embeddings, np.asarray(targets, dtype=np.int64), paths, skipped, heard, recordings)


# ---------------------------------------------------------------------------------------------
# Objective and optimiser


def objective(
    z: np.ndarray, y: np.ndarray, kind: str, a: float, b: np.ndarray, bias_l2: float
) -> tuple[float, float, np.ndarray]:
    """Mean NLL of logits a*z + b, + bias_l2/2 |b|^2 + TEMPERATURE_L2/2 (a - 1)^2, and its gradient
    in a and in b."""
    n, k = z.shape
    zc = a * z + b
    if kind == "softmax":
        p = softmax(zc)
        top = zc.max(axis=1)
        lse = top + np.log(np.exp(zc - top[:, None]).sum(axis=1))
        nll = float(np.mean(lse - zc[np.arange(n), y]))
        grad = p
        grad[np.arange(n), y] -= 1.0
    else:
        onehot = _onehot(y, k)
        nll = float(np.mean(np.sum(np.logaddexp(0.0, zc) - onehot * zc, axis=1)))
        grad = sigmoid(zc) - onehot
    grad /= n
    prior = 0.5 * bias_l2 * float(b @ b) + 0.5 * TEMPERATURE_L2 * (a - 1.0) ** 2
    return (nll + prior, float(np.sum(grad * z)) + TEMPERATURE_L2 * (a - 1.0), grad.sum(axis=0) + bias_l2 * b)


def _onehot(y: np.ndarray, k: int) -> np.ndarray:
    """[N, K] targets of labels y [N]; a row of -1 (none of the labels) is all 0."""
    onehot = np.zeros((len(y), k))
    mine = np.flatnonzero(y >= 0)
    onehot[mine, y[mine]] = 1.0
    return onehot


def lbfgs(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    feasible: Callable[[np.ndarray], bool],
    max_iter: int = 500,
    memory: int = 10,
    tol: float = 1e-8,
) -> tuple[np.ndarray, int]:
    """Minimise a smooth convex `fun` (value, gradient) from `x0`: L-BFGS (two-loop recursion)
    with a backtracking (Armijo) line search that also keeps x `feasible`. Returns (x, steps)."""
    x = np.asarray(x0, dtype=np.float64).copy()
    f, g = fun(x)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for step in range(max_iter):
        if np.max(np.abs(g)) < tol:
            return x, step
        q, alphas = g.copy(), []
        for s, y in reversed(list(zip(s_hist, y_hist))):
            rho = 1.0 / (y @ s)
            alpha = rho * (s @ q)
            q -= alpha * y
            alphas.append((rho, alpha))
        # initial inverse Hessian: the last pair's scale, or a first step of length <= 1
        if s_hist:
            q *= (s_hist[-1] @ y_hist[-1]) / (y_hist[-1] @ y_hist[-1])
        else:
            q /= max(1.0, float(np.linalg.norm(g)))
        for (s, y), (rho, alpha) in zip(zip(s_hist, y_hist), reversed(alphas)):
            q += s * (alpha - rho * (y @ q))
        d = -q
        if g @ d >= 0:  # not a descent direction: forget the curvature pairs
            d, s_hist, y_hist = -g, [], []
        t = 1.0
        while True:
            x_new = x + t * d
            if feasible(x_new):
                f_new, g_new = fun(x_new)
                if f_new <= f + 1e-4 * t * (g @ d):
                    break
            t *= 0.5
            if t < 1e-14:
                return x, step
        s, y = x_new - x, g_new - g
        if s @ y > 1e-12:
            s_hist, y_hist = (s_hist + [s])[-memory:], (y_hist + [y])[-memory:]
        done = abs(f - f_new) <= 1e-12 * max(1.0, abs(f))
        x, f, g = x_new, f_new, g_new
        if done:
            return x, step + 1
    return x, max_iter


@dataclass
class Calibration:
    temperature: float
    biases: np.ndarray  # [K]; 0 for labels without clips (or without --bias)
    steps: int
    at_bound: bool = False  # T reached MIN_TEMPERATURE or MAX_TEMPERATURE


def fit_calibration(
    z: np.ndarray,
    y: np.ndarray,
    kind: str,
    fit_bias: bool = True,
    bias_l2: float = DEFAULT_BIAS_L2,
    warn: bool = True,
) -> Calibration:
    """T and b minimising the NLL of raw logits z [N, K] (T = 1, b = 0) for labels y [N] (-1: none
    of the labels, a sigmoid bundle's negative); `warn`: say when T reaches its bound."""
    z = np.asarray(z, dtype=np.float64)
    k = z.shape[1]
    free = np.zeros(k, dtype=bool)
    if fit_bias:
        free[np.unique(y[y >= 0])] = True  # a label with no clip has no evidence for its bias

    def unpack(x: np.ndarray) -> tuple[float, np.ndarray]:
        b = np.zeros(k)
        b[free] = x[1:]
        return float(x[0]), b

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = unpack(x)
        value, grad_a, grad_b = objective(z, y, kind, a, b, bias_l2)
        return value, np.concatenate([[grad_a], grad_b[free]])

    x, steps = lbfgs(
        fun,
        np.concatenate([[1.0], np.zeros(int(free.sum()))]),
        feasible=lambda x: 1.0 / MAX_TEMPERATURE <= x[0] <= 1.0 / MIN_TEMPERATURE,
    )
    a, b = unpack(x)
    temperature = 1.0 / a
    at_bound = temperature < MIN_TEMPERATURE * 1.01 or temperature > MAX_TEMPERATURE * 0.99
    if at_bound and warn:
        log.warning(
            "the temperature reached its bound (%.3g; allowed %g to %g): the clips are %s; use more "
            "clips, and clips the model finds hard",
            temperature,
            MIN_TEMPERATURE,
            MAX_TEMPERATURE,
            "all separated perfectly" if temperature < 1 else "close to random for the model",
        )
    return Calibration(temperature, b, steps, at_bound)


def calibrated_probs(z: np.ndarray, kind: str, cal: Calibration) -> np.ndarray:
    """The scores of raw logits z [N, K] under calibration `cal` (what edge's Scorer computes)."""
    zc = np.asarray(z, dtype=np.float64) / cal.temperature + cal.biases
    return softmax(zc) if kind == "softmax" else sigmoid(zc)


def folds_by_recording(recordings: Sequence[str], y: np.ndarray, folds: int = CV_FOLDS) -> np.ndarray | None:
    """A fold index per clip, every recording's clips in one fold, each label's recordings dealt
    round the folds (largest first, into the fold with the fewest of that label's clips, then the
    fewest clips), so every fold holds some of each label that has enough recordings and no fold
    is empty; None when there are fewer than `folds` recordings."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(recordings):
        groups.setdefault(name, []).append(i)
    if len(groups) < folds:
        return None
    by_label: dict[int, list[list[int]]] = {}
    for members in groups.values():
        label = int(np.bincount(y[members] + 1).argmax()) - 1  # the recording's most common label (-1: none)
        by_label.setdefault(label, []).append(members)
    fold = np.zeros(len(y), dtype=np.int64)
    size = np.zeros(folds, dtype=np.int64)
    for label in sorted(by_label):
        mine = np.zeros(folds, dtype=np.int64)  # this label's clips in each fold
        for members in sorted(by_label[label], key=lambda m: (-len(m), m[0])):
            target = int(np.lexsort((size, mine))[0])  # the fold with fewest of this label, then fewest in all
            fold[members] = target
            size[target] += len(members)
            mine[target] += len(members)
    return fold


Score = Callable[[Calibration, np.ndarray], np.ndarray]  # (calibration, clip mask) -> those clips' scores


def held_out_probs(
    z: np.ndarray,
    y: np.ndarray,
    kind: str,
    fold: np.ndarray,
    fit_bias: bool,
    bias_l2: float,
    score: Score | None = None,
) -> np.ndarray:
    """Each clip's scores under a calibration fitted on the other folds' clips; `score`: how a
    calibration scores clips (the device's Scorer, vetoes included; default: `calibrated_probs`)."""
    probs = np.zeros_like(z, dtype=np.float64)
    for f in np.unique(fold):
        held = fold == f
        cal = fit_calibration(z[~held], y[~held], kind, fit_bias=fit_bias, bias_l2=bias_l2, warn=False)
        probs[held] = calibrated_probs(z[held], kind, cal) if score is None else score(cal, held)
    return probs


def choose_bias_l2(
    z: np.ndarray,
    y: np.ndarray,
    kind: str,
    fold: np.ndarray,
    fit_bias: bool,
    choices: Sequence[float],
    score: Score | None = None,
) -> tuple[float, dict[float, float], np.ndarray]:
    """Of `choices`, the bias penalty whose held-out scores have the lowest NLL: (penalty, the
    held-out NLL of each, the chosen one's held-out scores)."""
    held = {l2: held_out_probs(z, y, kind, fold, fit_bias, l2, score) for l2 in choices}
    cv_nll = {l2: nll(probs, y, kind) for l2, probs in held.items()}
    best = min(cv_nll, key=lambda l2: cv_nll[l2])
    return best, cv_nll, held[best]


# ---------------------------------------------------------------------------------------------
# Figures


@dataclass
class Reliability:
    """Top-1 confidence vs accuracy in ECE_BINS equal-width bins."""

    confidence: np.ndarray  # [bins] mean top-1 score (nan: empty bin)
    accuracy: np.ndarray  # [bins]
    count: np.ndarray  # [bins]

    @property
    def ece(self) -> float:
        filled = self.count > 0
        weights = self.count[filled] / self.count.sum()
        return float(np.sum(weights * np.abs(self.accuracy[filled] - self.confidence[filled])))


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)  # (i/bins, (i+1)/bins], 0 in the first
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, conf, minlength=bins) / count
        accuracy = np.bincount(which, correct.astype(float), minlength=bins) / count
    return Reliability(confidence, accuracy, count)


def nll(probs: np.ndarray, y: np.ndarray, kind: str) -> float:
    """Mean negative log-likelihood of the labels under scores `probs` (softmax or sigmoid)."""
    tiny = 1e-300
    n = len(y)
    if kind == "softmax":
        return float(-np.mean(np.log(np.maximum(probs[np.arange(n), y], tiny))))
    onehot = _onehot(y, probs.shape[1])
    return float(
        -np.mean(
            np.sum(
                onehot * np.log(np.maximum(probs, tiny)) + (1 - onehot) * np.log(np.maximum(1 - probs, tiny)), axis=1
            )
        )
    )


@dataclass
class Metrics:
    nll: float
    ece: float
    accuracy: float
    reliability: Reliability


def metrics(probs: np.ndarray, y: np.ndarray, kind: str) -> Metrics:
    """NLL on every clip; ECE and top-1 accuracy on the clips of the set's labels (a clip of none
    of them has no right top-1)."""
    mine = y >= 0
    rel = reliability(probs[mine], y[mine])
    return Metrics(nll(probs, y, kind), rel.ece, float(np.mean(probs[mine].argmax(axis=1) == y[mine])), rel)


def calibrated(label_set: LabelSet, temperature: float, biases: Sequence[float] | np.ndarray) -> LabelSet:
    """`label_set` with calibration T and per-label biases (names, prompts, thresholds kept)."""
    labels = tuple(dataclasses.replace(label, bias=float(b)) for label, b in zip(label_set.labels, biases))
    # fitted on the new labels' vocabulary scores too (edge.scoring.Scorer.logits): they get it
    return dataclasses.replace(label_set, labels=labels, temperature=float(temperature), calibrated_new=True)


@dataclass
class ScoreReport:
    label_set: LabelSet  # calibrated
    calibration: Calibration
    before: Metrics
    after: Metrics
    clips: int
    per_label: np.ndarray  # clips per label [K]
    kind: str
    skipped: list[tuple[Path, str]]
    negatives: int = 0  # clips of none of the set's labels
    held_out: Metrics | None = None  # each clip scored by a calibration fitted without its recording
    bias_l2: float = DEFAULT_BIAS_L2  # the penalty the calibration was fitted with
    cv_nll: dict[float, float] = field(default_factory=dict)  # held-out NLL per penalty tried
    folds: int = 0  # 0: too few recordings to hold any out


MIN_CLIPS = 8  # fewer labelled clips are refused: a temperature fitted on them says nothing


def fit_scores(
    bundle: Bundle,
    label_set: LabelSet,
    label_embeddings: LabelEmbeddings,
    clipset: ClipSet,
    fit_bias: bool = True,
    bias_l2: float | None = None,
) -> ScoreReport:
    """Fit T and b on `clipset`; before = the label set's own calibration, after = the fit,
    both scored by edge's Scorer as `listen` builds it (with the bundle's vocabulary branch:
    T and b act on a trained label's logits (the student's, its head's mixed in) and on the logit
    of a new label's vocabulary score, and the figures are the scores the device reports).
    held_out = each clip scored by a fit on the other folds' recordings (CV_FOLDS), which is what
    a calibration does for clips it was not fitted on; `bias_l2` None: the penalty whose held-out
    NLL is lowest (BIAS_L2_CHOICES)."""
    if bias_l2 is not None and not (math.isfinite(bias_l2) and bias_l2 >= 0):
        raise CalibrationError(f"--bias-l2 {bias_l2!r} is not allowed: use a finite number >= 0")
    vocabulary = Vocabulary.from_bundle(bundle) if clipset.vocabulary is not None else None
    # T = 1, b = 0: the model's own logits (the vocabulary head's mixed in, where the bundle has one)
    # (the set's labels, for what names a trained label: it is scored with its trained text, as listen scores it)
    raw = Scorer.for_bundle(
        bundle.meta, label_embeddings, calibrated(label_set, 1.0, np.zeros(len(label_set.labels))), vocabulary
    )
    kind = raw.kind
    y = clipset.targets
    negatives = int(np.sum(y < 0))
    if len(y) < MIN_CLIPS:
        raise CalibrationError(
            f"{len(y)} clip(s) cannot fit a calibration worth writing (from 1 clip the temperature had come out "
            f"0.14: every score pushed to 0 or 1): give at least {MIN_CLIPS}, better 20 or more of each label"
        )
    if negatives == len(y):
        raise CalibrationError(
            f"all {len(y)} clip(s) are of none of the set's labels: add clips of its labels (the negatives "
            "only say how unsure to be)"
        )
    if negatives and kind == "softmax":
        raise CalibrationError(
            f"{negatives} clip(s) of none of the set's labels: this bundle's scores are a softmax over the set "
            "(every clip is one of its labels), so they cannot be fitted; leave them out"
        )
    if not negatives and kind == "sigmoid" and fit_bias:
        log.warning(
            "every clip is one of the set's labels: their biases learn how sure to be of a sound that is there, "
            "and rise, so other sounds start more false alarms; add clips of the site's other sounds labelled "
            "'none' (or --others-are-none with a dataset), or pass --no-bias"
        )
    z = raw.logits(clipset.embeddings, clipset.vocabulary)
    fold = folds_by_recording(clipset.recordings or [str(p) for p in clipset.paths], y)
    fixed = DEFAULT_BIAS_L2 if bias_l2 is None else bias_l2
    choices = BIAS_L2_CHOICES if bias_l2 is None and fit_bias else (fixed,)
    bias_l2 = fixed  # unless clips can be held out to choose it
    held_out: Metrics | None = None
    cv_nll: dict[float, float] = {}

    def device_scores(cal: Calibration, held: np.ndarray) -> np.ndarray:
        site = calibrated(label_set, cal.temperature, cal.biases)
        heard = None if clipset.vocabulary is None else clipset.vocabulary[held]
        return Scorer.for_bundle(bundle.meta, label_embeddings, site, vocabulary)(clipset.embeddings[held], heard)

    if fold is not None:
        bias_l2, cv_nll, probs = choose_bias_l2(z, y, kind, fold, fit_bias, choices, device_scores)
        held_out = metrics(probs, y, kind)
    fit = fit_calibration(z, y, kind, fit_bias=fit_bias, bias_l2=bias_l2)
    site = calibrated(label_set, fit.temperature, fit.biases)
    before = Scorer.for_bundle(bundle.meta, label_embeddings, label_set, vocabulary)(
        clipset.embeddings, clipset.vocabulary
    )
    after = Scorer.for_bundle(bundle.meta, label_embeddings, site, vocabulary)(clipset.embeddings, clipset.vocabulary)
    return ScoreReport(
        site,
        fit,
        metrics(before, y, kind),
        metrics(after, y, kind),
        len(y),
        np.bincount(y[y >= 0], minlength=len(label_set.labels)),
        kind,
        clipset.skipped,
        negatives,
        held_out,
        bias_l2,
        cv_nll,
        0 if fold is None else len(np.unique(fold)),
    )
