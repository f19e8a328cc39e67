"""The vocabulary branch: scores for labels no one trained, and a check on the ones trained.

A bundle whose model.json has `vocabulary` has a second audio graph (vocabulary.onnx): from the
window the audio graph takes (or a trunk map it also outputs), the probability of each class of a
fixed vocabulary of named sounds for each window (the demo bundle: YAMNet itself, its 14 layers
and AudioSet head, 521 classes, on the window's 0.96 s patches as it was trained; earlier
bundles: YAMNet's layers 9-14 on the first 8 trunk layers it shared with the student). It costs
2.4-3.5 times the audio graph (the earlier kind: a third), so it runs only for a label set that
needs it (`Scorer.fusion` is not None: one with a new label, or any set with a trained label when
the bundle has a head or an intruder measurement, below); otherwise a set of trained labels costs
what the student costs and scores what the student scores. Its class names' text embeddings ship in
the bundle (labels/<vocabulary.labels>.npz), as do those of the labels the student was trained
on (labels/<name>.npz for each of `vocabulary.trained`).

For one label set, once (STYLE lesson 3):

    S       = labels' embeddings @ vocabulary names' embeddings.T           [K, V] cosines
    W       = softmax(S / tau) per label                                     which names a label means
    novel_k = max cosine of label k to every trained label < novelty_cosine  a label no one trained
    named_k = max_j S_kj >= veto_cosine                                      a label the vocabulary
                                                                             has a name for
    trusted_k = heard[nearest trained label] >= veto_reliable                the vocabulary hears
                                                                             its sound: the share
                                                                             of that label's own
                                                                             training clips it
                                                                             scores >= veto_below
                                                                             (model.json
                                                                             vocabulary.heard)

per window, given the student's per-label score s [K] and the vocabulary's p [V]:

    v       = W @ p                                         the vocabulary's score of each label
    n       = W @ min(1, p / ceiling)                       the same, each class's probability
                                                            divided by the most the training audio
                                                            made the vocabulary say it (model.json
                                                            vocabulary.ceiling; 1 without it)
    score_k = n_k                                   for a novel label (its text was never trained:
                                                    the student's score of it is a guess)
            = s_k * min(1, v_k / veto_below) ** veto_power
                                                    for a trained label the vocabulary names and is
                                                    trusted on (its silence about a sound it never
                                                    hears, say UrbanSound8K's jackhammers, means
                                                    nothing), in a window where a new label of the
                                                    set scores (n) at least veto_heard: the student,
                                                    held back where the vocabulary hears the new
                                                    label and not this one (a student calls every
                                                    sound one it learnt, and a new label's sound
                                                    most of all)
            = s_k * min(1, v_k / veto_below) ** veto_power
                                                    for any trained label, in a window where an
                                                    intruder of its scores p_j >= level_kj (below)
            = s_k                                   for any other trained label

and where an intruder holds back the trained label the student scores highest in the window (t),
every trained label is held back at least as far (score_k <= s_k * min(1, v_t / veto_below) **
veto_power): the window's top-1 stands (among the trained labels; a new label that outweighs one,
below, may change it). The vocabulary misnames sounds it does not know (ESC-50's
water drops as Wood block); that costs the window its event, not its top-1 (ESC-50 CV 89.8 % with
a label-by-label hold-back, 90.8 % this way, as without the veto).

An intruder (model.json vocabulary.familiar, familiar.npz; optional): a student calls every sound
one it learnt, most of all a sound no training clip held (frogs heard as dog barks, birds as an
air conditioner), while the vocabulary names that sound, confidently. So each class j is an
implicit new label of every set that has no label near it (text cosine < familiar.outside_cosine,
and not in familiar.ignore: Silence, a quiet patch beside the sound), and for trained label k

    level_kj = familiar_j(t_k) + familiar.margin                       inf for a class near a label
             = f + familiar.margin * (1 - f), f = familiar_j(t_k)      with familiar.relative

familiar_j(t) being what the nearest trained label's own training clips made class j say (a high
quantile of its scores over them; train.vocabulary_trust): Vehicle on jackhammers, Speech on
children playing, Animal on dog barks are familiar and hold nothing back (with a relative margin,
nothing short of near certainty: Speech on children playing 0.97, its level 0.99). A relative
margin (the demo bundle's since 2026-12-04) takes a share of the headroom above the familiar
level, not a fixed step: 0.6 above a class the label's clips made say 0.37 (Bird, on the air
conditioners of the zero-shot split) is out of reach, and chirping birds heard as an air
conditioner went unchecked; 0.7 of the headroom there is 0.81, and 0.7 above a class they never
made it say. The untrusted labels are held back too (the vocabulary's silence about them says
nothing, but a sound it names that their clips never made it say does).

A new label a trained label's own sound explains (model.json vocabulary.familiar.explains, a
margin; absent: off): children playing make the vocabulary say Speech, so beside `urban`'s
children_playing, `speech` heard no more than their clips made it say is not evidence of speech.
For trained label t and new label k of a set

    e_tk = W_k @ familiar(t) + familiar.explains         -inf where t's clips were not measured

and in a window, the veto beside a new label holds t back only where some new label heard (n_k >=
veto_heard) scores above e_tk (the vocabulary's "speech and no children" is what children sound
like to it), and a new label scoring no more than e_tk of the trained label the window scores
highest (t, after the vetoes) is held back: score_k = n_k * (1 - score_t), below score_t wherever
score_t >= 0.5. Held-out UrbanSound8K beside `speech` (CV split 1, first windows) 60.8 -> 66.0 %;
the zero-shot split's new labels beside urban as before (75.9 %), among all 50 73.4 -> 71.9 %;
speech still named on every held-out espeak-ng and real recording.

A new label that outweighs a trained label the vocabulary cannot hear (model.json
vocabulary.familiar.outweighs, a log-odds margin; absent: off). Neither veto can hold back a
trained label the vocabulary never hears by name (untrusted: street_music, whose text is a blend of
Music, Song and Background music, scores 0.17 on any music), so beside `urban` the student's
street_music (0.6-0.97 on any music) took every rendered violin, organ and saxophone. With r_tk =
W_k @ familiar(t), what trained label t's own clips made new label k score (as `explains` reads it),
and d the margin, for an untrusted trained label t that has training clips (familiar.npz) and a
new label k of a set (r_tk against the ceiling where the bundle has one; r_tk >= SATURATED: never;
veto_power 0 does not switch this off)

    o_tk    = max(veto_heard, r_tk e^d / (1 - r_tk + r_tk e^d))       the odds of r_tk, times e^d
    score_t = score_t * min(1, min over new k with n_k >= o_tk of (1 - n_k) ** 2)      after the vetoes

a violin heard at 0.9 beside street music whose clips made it say Violin 0.05 (level 0.74 with d =
4) holds street_music back to a hundredth, while speech at 0.95 beside the same street music (its clips:
Speech 0.80, level 0.995) holds nothing back: a voice over music is still street music. It reads
one sound at a time: speech at 0.6 or more over a jackhammer (whose clips made it say Speech 0.03)
holds the jackhammer back as well, as the intruder veto already does with `urban` alone.
benchmarks/new_sounds.py: rendered instruments beside urban 39.1 -> 60.9 %; the zero-shot split's
10 new labels beside urban 76.2 -> 76.6 %; the held-out clips with `speech` added as they were
(train.vocabulary_trust's FAMILIAR says how d = 4 was chosen). The hold-back is (1 - n_k) ** 2
since 2026-12-08, (1 - n_k) before: on the demo bundle instruments beside urban 51.6 -> 56.2 %
(church organ, saxophone), the rest as it was (a cube: the same; CV split 1's bundles name the same
clips either way). Trusted labels are left to the vetoes: outweighed too, a siren
with a voice over it 25 dB down gave way to `speech` (its recall 76 -> 20 %, speech_over.py).

So a label added by YAML ("speech", "frog") is scored by a head trained on 521 named classes,
and a set of trained labels only is scored as before, but for the intruder veto. The ceiling
(optional; the demo bundle has none: with YAMNet on patches it costs more than it gains) puts a new label on the
student's footing: AudioSet's rarer classes rarely reach high probabilities (a frog's clip may
score "Frog" 0.2 and "Animal" 0.6), while a student trained to 1 on its labels scores the sound
nearest one it learnt at 0.6-0.9; against what the vocabulary reached on the training audio, a
class that no training sound made it say counts for more (train.vocabulary_trust measures it).

The head (optional, model.json vocabulary.head, head.npz; train.vocabulary_head fits it): on the
features the vocabulary graph also outputs (YAMNet's embedding, mean and max over the patches), a
linear layer, one row per trained label, optionally after one hidden ReLU layer (the demo bundle's
since 2026-12-03: its weights int8 per unit on the standardised features, in head.npz as
`hidden_*` and `feature_mean` / `feature_scale`), fitted on the student's own training clips.
Frozen YAMNet features name the trained labels about as well as the fine-tuned student and err on
other clips, so for every trained label of a set (not a novel one), before the set's calibration:

    h = features                                   (no hidden layer)
    h = relu(features @ hidden_weights.T + hidden_bias)   (standardisation and int8 steps folded in)
    z_k = (1 - weight) * z_student_k + weight * (h @ head_weights[t_k] + head_bias[t_k])

t_k being the trained label nearest label k. With a head every set runs the vocabulary graph
(the student's cost plus the graph's); `Vocabulary.scores` then gives [N, V + T]: the V
vocabulary probabilities, then the head's T logits.

Agreement (model.json vocabulary.head.agree; the demo bundle's 0.5 since 2026-12-05; absent: no
such check). YAMNet names some sounds confidently and wrongly (a cow as Siren 1.00, a vacuum
cleaner as a fire engine's siren 0.93), and the head on its features follows it: beside an unsure
student (0.20-0.48) its yes started every false alarm of CV split 3's held-out stream. So what the
events read (Scorer.with_evidence; the listener smooths it and its detector reads it, and
`semanticac-calibrate` replays it) is, for a trained label,

    evidence_k = score_k      where the student alone (through the same vetoes) scores it >= agree
               = 0            elsewhere: the mix may name the window, not start or hold an event

while the scores a window shows, and so its top-1, stay the mix's: the head adds accuracy where the
two disagree (benchmarks/event_fusion.py, README, Accuracy: the figures). A label set's `agree:`
(the set's, or a label's) and `listen --agree` replace the bundle's (`Fusion.agreeing`; 0: none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge.errors import BundleError
from edge.fsutil import sha256_file
from edge.labels.labelset import label_key

# A new label whose text is no nearer than this (cosine) to every name of the vocabulary has no name
# there: it is scored as a blend of sounds the text is vaguely like, and seldom wins when its sound
# plays. Measured (`info --labels`) on the shipped bundle's text space: can_opening 0.40, "someone
# slurping a drink" 0.39, drinking_sipping 0.49, leaf_blower 0.44 (a blend of Wind instrument, Hair
# dryer and Wind), coffee_grinder 0.48; doorbell, smoke_alarm, hair_dryer 0.91-0.99, microwave_beep
# 0.71. On the zero-shot split's bundle (benchmarks/label_phrasing.py: its 10 never-trained classes
# under their own names and two paraphrases each) the labels under 0.5 were the cans and slurping,
# named on 0-19 % of their clips (YAMNet hears a can opening as a cap gun), and "a window smashed"
# (0.46), named on 88-100 % (Shatter), while drinking_sipping (0.58 there, named on 9 %) passed: a
# warning, not a verdict. `info` and `listen` say so.
WEAKLY_NAMED_COSINE = 0.5
# A new label this near a trained label's text is most likely a rewording of it ("door knock" for
# door_wood_knock: 0.89, "gunshot" for gun_shot: 0.84, "police siren" for siren: 0.84; unrelated
# sounds stay under 0.8: "cat meowing" 0.79 to cat, "thunder" 0.75 to thunderstorm): the start
# names the trained label, which the model was trained to hear.
NEAR_TRAINED_COSINE = 0.8
# A new label a trained label's own clips made the vocabulary score this much is that label's own sound:
# it outweighs nothing (familiar.outweighs).
SATURATED = 0.999
WEAK_NAME_ADVICE = (
    "no name of the vocabulary is near its text ({nearest}): it is scored as a blend of sounds the text is "
    "vaguely like and may not win when its sound plays; play a recording of the sound through `listen --input FILE "
    "--heard 5` to see what the vocabulary hears in it, use those words (`prompts:`), and where it is still not "
    "named it needs training clips"
)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def familiar_step(spec: dict) -> str:
    """How far above its familiar level a class must score to hold a label back, in words: model.json
    vocabulary.familiar's margin, a step or (relative) a share of the headroom to 1."""
    return f"{spec['margin']:g} of the headroom" if spec.get("relative") else f"{spec['margin']:g}"


def _checked_file(bundle, spec: dict, what: str, fix: str) -> Path:
    """The bundle file model.json's `spec` ({file, sha256, ...}) names; BundleError naming it and
    `fix` when it is missing or its SHA-256 is not the recorded one."""
    path = Path(bundle.path) / spec["file"]
    if not path.is_file() or sha256_file(path) != spec["sha256"]:
        state = "is missing" if not path.is_file() else "does not match model.json's SHA-256"
        raise BundleError(f"bundle {bundle.path}: {what} {path} {state}: {fix}")
    return path


@dataclass(frozen=True)
class Head:
    """The vocabulary's head: the trained labels' logits from the vocabulary graph's features."""

    input: str  # the vocabulary graph's output it reads
    weights: np.ndarray  # float32 [T, H]: the output layer (H = F without a hidden layer)
    bias: np.ndarray  # float32 [T]
    weight: float  # its share of a trained label's logit (the student's: 1 - weight)
    hidden: tuple[np.ndarray, np.ndarray] | None = None  # float32 ([H, F], [H]) on the raw features; None: linear
    agree: float | None = None  # an event needs the student alone to score the label this much; None: not

    @classmethod
    def load(cls, bundle, spec: dict, labels: list[str]) -> Head:
        """The head model.json `vocabulary.head` describes, for the trained labels `labels`
        ("set/label", in the order of vocabulary.trained); BundleError naming the file and the fix
        when it is missing, damaged or made for other labels."""
        fix = f"fit it again: `semanticac-train vocabulary-head --bundle {bundle.path} --config RECIPE`"
        path = _checked_file(bundle, spec, "the vocabulary head", fix)
        with np.load(path, allow_pickle=False) as data:
            head = cls.from_arrays(data, spec["input"], spec["weight"], f"{path}: ", fix, agree=spec.get("agree"))
            found, model_id = [str(x) for x in data["labels"]], str(data["model_id"])
        width = head.weights.shape[-1] if head.hidden is None else head.hidden[0].shape[0]
        if (
            model_id != bundle.meta.model_id
            or found != labels
            or head.weights.ndim != 2
            or head.weights.shape != (len(labels), width)
            or head.bias.shape != (len(labels),)
        ):
            raise BundleError(
                f"bundle {bundle.path}: the vocabulary head {path} was fitted for model {model_id!r} and "
                f"{len(found)} labels ({found[:2]}...), weights {head.weights.shape}"
                f"{'' if head.hidden is None else f' after {len(head.hidden[1])} hidden units'}, not this bundle's "
                f"{bundle.meta.model_id!r} and its {len(labels)} trained labels: {fix}"
            )
        return head

    @classmethod
    def from_arrays(
        cls, data, input: str, weight: float, where: str = "", fix: str = "", agree: float | None = None
    ) -> Head:
        """The head of head.npz's arrays `data` (a mapping: weights, bias, and the hidden layer's
        when it has one), its int8 hidden weights folded onto the raw features."""
        hidden = _hidden_layer(data, where, fix) if "hidden_weights" in data else None
        return cls(
            input=input,
            weights=data["weights"].astype(np.float32),
            bias=data["bias"].astype(np.float32),
            weight=weight,
            hidden=hidden,
            agree=agree,
        )

    def logits(self, features: np.ndarray) -> np.ndarray:
        """[N, F] features -> [N, T] trained labels' logits."""
        h = np.asarray(features, dtype=np.float32)
        if self.hidden is not None:
            h = np.maximum(h @ self.hidden[0].T + self.hidden[1], 0.0)
        return h @ self.weights.T + self.bias


HIDDEN_ARRAYS = ("hidden_weights", "hidden_step", "hidden_bias", "feature_mean", "feature_scale")


def _hidden_layer(data, where: str, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """head.npz's hidden layer, folded onto the raw features: int8 weights [H, F] with a step per
    unit [H], on features standardised by feature_mean / feature_scale [F], and a bias [H]."""
    missing = [name for name in HIDDEN_ARRAYS if name not in data]
    if missing:
        raise BundleError(f"{where}the vocabulary head's hidden layer lacks {', '.join(missing)}: {fix}")
    q, step, bias, mean, scale = (np.asarray(data[name]) for name in HIDDEN_ARRAYS)
    units, width = q.shape if q.ndim == 2 else (-1, -1)
    if q.dtype != np.int8 or {step.shape, bias.shape} != {(units,)} or {mean.shape, scale.shape} != {(width,)}:
        raise BundleError(
            f"{where}the vocabulary head's hidden layer does not fit together: weights {q.dtype} {q.shape} "
            f"(int8 [H, F]), step {step.shape} and bias {bias.shape} ([H]), feature mean {mean.shape} and "
            f"scale {scale.shape} ([F]): {fix}"
        )
    weights = q.astype(np.float32) * step.astype(np.float32)[:, None] / scale.astype(np.float32)[None, :]
    return weights, bias.astype(np.float32) - weights @ mean.astype(np.float32)


@dataclass(frozen=True)
class Familiar:
    """What each trained label's own training clips make the vocabulary say (model.json
    vocabulary.familiar, familiar.npz; train.vocabulary_trust measures it), and when a window's
    class says something else."""

    # float32 [T, V]: that quantile of each class's score over the label's clips (1: no clips); the
    # file stores it as uint8 times `scale`
    scores: np.ndarray
    margin: float  # a class this far above its familiar level holds the label back
    outside_cosine: float  # ... if no label of the set is this near it (text cosine)
    ignore: np.ndarray  # bool [V]: classes that never do (Silence: a quiet patch beside the sound)
    # a new label this far above what a trained label's own clips made it score is not that label's sound; None: off
    explains: float | None = None
    relative: bool = False  # margin: that share of the headroom above the familiar level (level + margin * (1 - level))
    # a new label heard at e ** outweighs times the odds a trained label's own clips made it score outweighs that
    # label, where the vocabulary cannot hear the label itself; None: off
    outweighs: float | None = None

    @classmethod
    def load(cls, bundle, spec: dict, labels: list[str], names: tuple[str, ...]) -> Familiar:
        """The measurement model.json `vocabulary.familiar` describes, for the trained labels
        `labels` ("set/label", in the order of vocabulary.trained) and the vocabulary's class
        `names`; BundleError naming the file and the fix when it is missing, damaged or made for
        other labels or classes."""
        fix = f"measure it again: `semanticac-train vocabulary-trust --bundle {bundle.path} --config RECIPE`"
        path = _checked_file(bundle, spec, "the vocabulary's familiar scores", fix)
        with np.load(path, allow_pickle=False) as data:
            scores = data["scores"].astype(np.float32) * np.float32(data["scale"])
            found, classes = [str(x) for x in data["labels"]], tuple(str(x) for x in data["classes"])
            model_id = str(data["model_id"])
        shape = (len(labels), len(names))
        if model_id != bundle.meta.model_id or found != labels or classes != names or scores.shape != shape:
            raise BundleError(
                f"bundle {bundle.path}: the vocabulary's familiar scores {path} were measured for model {model_id!r}, "
                f"{len(found)} trained labels and {len(classes)} classes, scores {scores.shape}, not this bundle's "
                f"{bundle.meta.model_id!r}, its {len(labels)} trained labels and {len(names)} classes: {fix}"
            )
        unknown = sorted(set(spec["ignore"]) - set(names))
        if unknown:
            raise BundleError(
                f"bundle {bundle.path}: model.json vocabulary.familiar.ignore names {unknown}, which are not "
                f"classes of the vocabulary (e.g. {names[0]!r}): use its class names"
            )
        return cls(
            scores=scores,
            margin=spec["margin"],
            outside_cosine=spec["outside_cosine"],
            ignore=np.isin(np.array(names), spec["ignore"]),
            explains=spec.get("explains"),
            relative=spec.get("relative", False),
            outweighs=spec.get("outweighs"),
        )


@dataclass(frozen=True)
class Vocabulary:
    """A bundle's vocabulary branch: its class names and their embeddings, the trained labels'
    embeddings, and the fusion's constants (model.json `vocabulary`)."""

    input: str  # what of the audio graph's the vocabulary graph reads: its trunk map, or its input (the window)
    output: str  # the vocabulary graph's output: [N, V] scores
    names: tuple[str, ...]
    embeddings: np.ndarray  # float32 [V, C], unit rows
    trained: np.ndarray  # float32 [T, C], unit rows: every label the student was trained on
    tau: float
    novelty_cosine: float
    veto_below: float
    veto_power: float
    veto_cosine: float
    veto_heard: float
    heard: np.ndarray  # float32 [T]: each trained label's share of its training clips the vocabulary hears
    veto_reliable: float  # the veto holds back a trained label whose share is at least this
    ceiling: np.ndarray | None = None  # float32 [V] in (0, 1]: each class's most on the training audio (None: none)
    source: str = ""  # what the vocabulary is (model.json vocabulary.source)
    head: Head | None = None  # the trained labels' head on the graph's features (None: none)
    familiar: Familiar | None = None  # what each trained label's clips make it say (None: no intruder veto)
    trained_names: tuple[str, ...] = ()  # [T] each trained label's name as its set writes it
    trained_prompts: tuple[tuple[str, ...], ...] = ()  # [T] the texts each was trained on (its set's prompts)

    @classmethod
    def from_bundle(cls, bundle) -> Vocabulary | None:
        """The bundle's vocabulary (None when its model.json has none); BundleError naming the file
        when one of its embedding files is missing or damaged."""
        from edge.labels.embeddings import LabelEmbeddings, LabelEmbeddingsError

        spec = bundle.meta.vocabulary
        if spec is None:
            return None

        def load(name: str, fix: str):
            path = Path(bundle.path) / "labels" / f"{name}.npz"
            try:
                found = LabelEmbeddings.load(path)
            except (FileNotFoundError, LabelEmbeddingsError) as err:
                raise BundleError(
                    f"bundle {bundle.path}: model.json vocabulary needs {path}, which cannot be read ({err}): {fix}"
                ) from None
            if found.model_id != bundle.meta.model_id:
                raise BundleError(
                    f"bundle {bundle.path}: {path} was computed by model {found.model_id!r}, not this bundle's "
                    f"{bundle.meta.model_id!r}: re-export the bundle with `semanticac-train export`"
                )
            return found

        vocabulary = load(spec["labels"], "re-export the bundle with `semanticac-train export`")
        # a trained set is one of the shipped label sets: embedding it again restores it
        again = "compute it again: `semanticac-edge embed-labels --bundle {} --labels {}`"
        trained_sets = [(name, load(name, again.format(bundle.path, name))) for name in spec["trained"]]
        trained = np.concatenate([found.embeddings for _, found in trained_sets])
        # no measurement (older bundles): every trained label counts as heard; a label the
        # measurement left out had no training clip to hear
        shares = spec.get("heard")
        heard = np.array(
            [
                1.0 if shares is None else shares.get(name, {}).get(label, 0.0)
                for name, found in trained_sets
                for label in found.labels
            ],
            dtype=np.float32,
        )
        names = vocabulary.labels
        ceiling = None
        if spec.get("ceiling") is not None:
            reached = spec["ceiling"]["scores"]
            unknown, missing = sorted(set(reached) - set(names)), [n for n in names if n not in reached]
            if unknown or missing:
                raise BundleError(
                    f"bundle {bundle.path}: model.json vocabulary.ceiling does not match labels/{spec['labels']}.npz "
                    f"(names it lacks: {missing[:3]}, names it does not have: {unknown[:3]}): measure it again with "
                    f"`semanticac-train vocabulary-trust --bundle {bundle.path} --config RECIPE`"
                )
            ceiling = np.array([reached[n] for n in names], dtype=np.float32)
        trained_labels = [f"{name}/{label}" for name, found in trained_sets for label in found.labels]
        head = None if spec.get("head") is None else Head.load(bundle, spec["head"], trained_labels)
        familiar = (
            None if spec.get("familiar") is None else Familiar.load(bundle, spec["familiar"], trained_labels, names)
        )
        return cls(
            input=spec["graph"].inputs[0],
            output=spec["graph"].outputs[0],
            names=vocabulary.labels,
            embeddings=_unit(vocabulary.embeddings.astype(np.float32)),
            trained=_unit(trained.astype(np.float32)),
            tau=spec["tau"],
            novelty_cosine=spec["novelty_cosine"],
            veto_below=spec["veto_below"],
            veto_power=spec["veto_power"],
            veto_cosine=spec["veto_cosine"],
            veto_heard=spec["veto_heard"],
            heard=heard,
            veto_reliable=spec["veto_reliable"],
            ceiling=ceiling,
            source=spec.get("source", ""),
            head=head,
            familiar=familiar,
            trained_names=tuple(label for _, found in trained_sets for label in found.labels),
            trained_prompts=tuple(
                tuple(prompt for prompt, owner in zip(found.prompts, found.prompt_label) if owner == i)
                for _, found in trained_sets
                for i in range(len(found.labels))
            ),
        )

    def scores(self, graph, audio) -> np.ndarray:
        """[N, V] vocabulary scores ([N, V + T] with a head: then its T logits): the vocabulary
        graph's backend (`select_backend(bundle, graph="vocabulary")`) run on what the audio graph
        took and gave (`audio`: its inputs and outputs by name; the graph reads one of them,
        model.json vocabulary.graph.inputs)."""
        out = graph.run({self.input: audio[self.input]})
        if self.head is None:
            return out[self.output]
        return np.concatenate([out[self.output], self.head.logits(out[self.head.input])], axis=-1)

    def _trained_match(self, labels: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cosine [K, T] of unit label rows to the trained labels, each label's trained label or
        nearest one [K], which labels are new [K]): new when under novelty_cosine from every
        trained text, unless named as a trained label."""
        to_trained = labels @ self.trained.T  # [K, T]
        nearest = to_trained.argmax(axis=1)  # [K]: each label's nearest trained label
        novel = to_trained.max(axis=1) < self.novelty_cosine
        for k, t in self._named(labels, names).items():
            novel[k], nearest[k] = False, t
        return to_trained, nearest, novel

    def _named(self, labels: np.ndarray, names: Sequence[str]) -> dict[int, int]:
        """{label k: trained label t} for each label named as a trained one (names compared as label
        sets compare them); of two trained labels of one name (a sound in two trained sets), the
        one whose text is nearer the label's unit row."""
        keys = [label_key(name) for name in self.trained_names]
        named = {}
        for k, name in enumerate(names):
            same = [t for t, key in enumerate(keys) if key == label_key(name)]
            if same:
                named[k] = max(same, key=lambda t: float(labels[k] @ self.trained[t]))
        return named

    def as_trained(self, label_matrix: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """A label set's [K, C] embeddings with each label named as a trained one given that label's
        own embedding: the text the model was trained on (its shipped set's, written at export), not the
        set's `prompt:` template, its `prompts:` or the device's int8 text graph's reading of them. The
        student was trained on that text: a site's "the sound of {label}" moved drilling from 0.68 to
        0.55 on a held-out clip, an extra phrasing by 0.03, under thresholds fitted on the trained text."""
        labels = _unit(np.asarray(label_matrix, dtype=np.float32))
        for k, t in self._named(labels, names).items():
            labels[k] = self.trained[t]
        return labels

    def own_text_notes(
        self,
        label_matrix: np.ndarray,
        names: Sequence[str],
        prompts: Sequence[Sequence[str]],
        read_as: Sequence[str] | None = None,
    ) -> list[tuple[str, str]]:
        """One (level, message) naming the labels named as trained ones (`read_as`, else `names`)
        whose prompts are not those they were trained on: they are not read (as_trained)."""
        labels = _unit(np.asarray(label_matrix, dtype=np.float32))
        differ = [
            (names[k], self.trained_prompts[t][0], prompts[k][0])
            for k, t in self._named(labels, names if read_as is None else read_as).items()
            if self.trained_prompts and tuple(prompts[k]) != self.trained_prompts[t]
        ]
        if not differ:
            return []
        name, trained, own = differ[0]
        which = (
            f"label {name!r} is a trained label"
            if len(differ) == 1
            else f"labels {', '.join(repr(d[0]) for d in differ)} are trained labels"
        )
        return [
            (
                "info",
                f"{which}: scored with the text the model was trained on ({trained!r}), not the set's "
                f"({own!r}{', ...' if len(differ) > 1 else ''}: its `prompt:` or `prompts:`); to have your wording "
                "read, give a label another name: it is then a new label",
            )
        ]

    def kin_notes(
        self, label_matrix: np.ndarray, names: Sequence[str], read_as: Sequence[str] | None = None
    ) -> list[tuple[str, str]]:
        """(level, message) for labels that are, or nearly are, a trained label twice over or
        under another name: two labels of the set that are one trained label (one sound starts an
        event of each), a new label near a trained label of the set (the same), and a new label
        near a trained label the set does not have (NEAR_TRAINED_COSINE: its trained name would
        be scored by the model trained on that sound)."""
        if not self.trained_names:
            return []
        unit = _unit(np.asarray(label_matrix, dtype=np.float32))
        to_trained, nearest, novel = self._trained_match(unit, names if read_as is None else read_as)
        notes: list[tuple[str, str]] = []
        trained_in_set: dict[int, str] = {}  # trained label -> the first label of the set that is it
        for i in np.flatnonzero(~novel):
            trained_in_set.setdefault(int(nearest[i]), names[int(i)])
        for k, name in enumerate(names):
            t = int(nearest[k])
            own, cosine = self.trained_names[t], float(to_trained[k, t])
            other = trained_in_set.get(t)
            if not novel[k] and other is not None and other != name:
                notes.append(
                    (
                        "warning",
                        f"labels {other!r} and {name!r} are both the trained label {own!r}: one sound starts an "
                        "event of each; keep one",
                    )
                )
            elif novel[k] and cosine >= NEAR_TRAINED_COSINE:
                if other is not None:
                    notes.append(
                        (
                            "warning",
                            f"label {name!r} is new, but its text is near {other!r} of this set (cosine {cosine:.2f}): "
                            "one sound may start an event of each",
                        )
                    )
                else:
                    notes.append(
                        (
                            "info",
                            f"label {name!r} is new, but its text is near the trained label {own!r} (cosine "
                            f"{cosine:.2f}): name it {own} (or keep its name and add `text: {own}`) to be scored by "
                            "the model trained on that sound",
                        )
                    )
        return notes

    def fusion(self, label_matrix: np.ndarray, names: Sequence[str] = ()) -> Fusion:
        """The fusion for one label set's [K, C] embeddings (computed once per set). A label named
        as a trained one (`names`, compared as label sets compare names) is that trained label
        whatever its prompts: a site's own template (`prompt:`) or extra phrasings move its text
        away from the trained text, and it must not become a new label for that."""
        labels = _unit(np.asarray(label_matrix, dtype=np.float32))
        if labels.shape[1] != self.embeddings.shape[1]:
            raise ValueError(
                f"Vocabulary: label embeddings {labels.shape[1]}-wide, the vocabulary's "
                f"{self.embeddings.shape[1]}-wide: they come from another model"
            )
        cos = (labels @ self.embeddings.T).astype(np.float64)  # [K, V]
        w = np.exp((cos - cos.max(axis=1, keepdims=True)) / self.tau)
        weights = w / w.sum(axis=1, keepdims=True)  # [K, V]: W
        to_trained, nearest, novel = self._trained_match(labels, names)
        named = cos.max(axis=1) >= self.veto_cosine
        trusted = self.heard[nearest] >= self.veto_reliable
        head = self.head is not None and self.head.weight > 0 and not novel.all()
        intruder = explains = outweigh = None
        if self.familiar is not None:
            # what each label's nearest trained label's own clips made the vocabulary say
            measured = self.familiar.scores[nearest].astype(np.float64)  # [K, V]
            if self.veto_power > 0:
                # a class no label of the set is near, scoring well above what a label's own clips made it say
                foreign = (cos.max(axis=0) < self.familiar.outside_cosine) & ~self.familiar.ignore  # [V]
                step = self.familiar.margin * ((1.0 - measured) if self.familiar.relative else 1.0)
                levels = measured + step  # a label without clips was recorded as 1: never within reach
                reachable = (levels <= 1.0) & (measured < 1.0)
                levels = np.where(foreign[None, :] & ~novel[:, None] & reachable, levels, np.inf)  # [K, V]
                intruder = levels if np.isfinite(levels).any() else None
            margins = self.familiar.explains is not None or self.familiar.outweighs is not None
            if margins and novel.any() and not novel.all():
                # what each trained label's own clips make each new label score (a label without clips: nothing)
                clips = ~(measured >= 1.0).all(axis=1)  # a label without clips was recorded as 1 everywhere
                if self.ceiling is not None:
                    measured = np.minimum(1.0, measured / self.ceiling)
                reached = measured @ weights.T  # [K, K]: row t, column k
                pairs = (~novel & clips)[:, None] & novel[None, :]  # trained t (measured), new k
                if self.familiar.explains is not None:
                    explains = np.where(pairs, reached + self.familiar.explains, -np.inf)
                if self.familiar.outweighs is not None:
                    # where the vocabulary cannot hear t itself, k heard at e ** outweighs times the odds t's clips
                    # made it score k (and at least heard: veto_heard); a sound they always made it say, nothing
                    r = np.minimum(reached, SATURATED)
                    odds = r / (1.0 - r) * np.exp(self.familiar.outweighs)
                    over = np.maximum(odds / (1.0 + odds), self.veto_heard)
                    outweigh = np.where(pairs & ~trusted[:, None] & (reached < SATURATED), over, np.inf)
                    outweigh = outweigh if np.isfinite(outweigh).any() else None
        return Fusion(
            mapping_t=np.ascontiguousarray(weights.T),
            novel=novel,
            veto=np.where(novel.any() & named & trusted & ~novel, self.veto_power, 0.0),
            veto_below=self.veto_below,
            veto_heard=self.veto_heard,
            ceiling=None if self.ceiling is None else self.ceiling.astype(np.float64),
            head_rows=np.where(novel, -1, nearest) if head else None,
            head_weight=self.head.weight if head and self.head is not None else 0.0,
            head_agree=self.head.agree if head and self.head is not None else None,
            head_size=0 if self.head is None else len(self.head.bias),
            intruder=intruder,
            intruder_power=self.veto_power,
            explains=explains,
            outweigh=outweigh,
            closeness=cos.max(axis=1),
        )


@dataclass(frozen=True)
class Fusion:
    """One label set's mapping from vocabulary scores to label scores, and which labels are new."""

    mapping_t: np.ndarray  # float64 [V, K]: column k is label k's weights over the vocabulary
    novel: np.ndarray  # bool [K]
    veto: np.ndarray  # float64 [K]: each trained label's veto power (0: the student alone)
    veto_below: float
    veto_heard: float  # the veto applies in a window where a new label scores at least this
    ceiling: np.ndarray | None  # float64 [V]: what each class reached on the training audio (None: none)
    head_rows: np.ndarray | None = None  # int [K]: each trained label's row of the head (-1: novel); None: no head
    head_weight: float = 0.0
    # events need the student alone to score a trained label this much (one score, or one per label); None: not
    head_agree: float | np.ndarray | None = None
    head_size: int = 0  # T: the head's logits after the V scores in a vocabulary row (0: the bundle has no head)
    intruder: np.ndarray | None = None  # float64 [K, V]: label k is held back where class j reaches this (inf: never)
    intruder_power: float = 0.0
    explains: np.ndarray | None = None  # float64 [K, K]: trained t's own sound explains new label k up to this
    outweigh: np.ndarray | None = None  # float64 [K, K]: new label k scoring this holds trained t back (inf: never)
    closeness: np.ndarray | None = None  # float64 [K]: each label's highest text cosine to a vocabulary name

    @property
    def size(self) -> int:
        """V, the vocabulary's classes."""
        return self.mapping_t.shape[0]

    @property
    def identity(self) -> bool:
        """No new label, no intruder class and no head: the fusion changes nothing."""
        return not self.novel.any() and self.head_rows is None and self.intruder is None

    def mix(self, student_logits: np.ndarray, vocabulary_scores: np.ndarray) -> np.ndarray:
        """[N, K] student logits and [N, V + T] vocabulary rows -> [N, K] logits, the head's mixed
        into each trained label's (unchanged without a head)."""
        if self.head_rows is None:
            return student_logits
        head = self._row(vocabulary_scores)[..., self.size :][..., np.maximum(self.head_rows, 0)]
        mixed = (1.0 - self.head_weight) * student_logits + self.head_weight * head
        return np.where(self.head_rows >= 0, mixed, student_logits)

    def agreeing(self, agree: Sequence[float | None]) -> Fusion:
        """This fusion with each label's agreement (a label set's `agree:`, listen --agree): a score
        in [0, 1] (0: none), None for the bundle's (head_agree as it is). Without a head, or with
        every label's None: unchanged."""
        if self.head_rows is None:
            return self
        if len(agree) != len(self.head_rows):
            raise ValueError(f"Fusion.agreeing: {len(agree)} agreements for {len(self.head_rows)} labels")
        if all(a is None for a in agree):
            return self
        bundle = np.broadcast_to(np.asarray(0.0 if self.head_agree is None else self.head_agree, float), (len(agree),))
        values = np.array([bundle[k] if a is None else a for k, a in enumerate(agree)], dtype=np.float64)
        return replace(self, head_agree=values if (values > 0).any() else None)

    def evidence(self, scores: np.ndarray, student: np.ndarray) -> np.ndarray:
        """[N, K] scores (the head mixed in) and [N, K] the student's alone (each through the vetoes)
        -> [N, K] what the events read: the scores, but 0 for a trained label the student alone
        scores under head_agree (the scores themselves where the set has no head or no agreement)."""
        if self.head_rows is None or self.head_agree is None:
            return scores
        return np.where((self.head_rows >= 0) & (student < self.head_agree), 0.0, scores)

    def meanings(self, labels: tuple[str, ...], names: tuple[str, ...], k: int = 3) -> dict[str, str]:
        """What each new label is scored as: label -> "95% Frog (ceiling 0.12), 3% Croak, ..." (its
        `k` heaviest vocabulary classes and their weights in the blend that scores it, with the
        ceiling of those the training audio left below 0.9), for the labels no one trained, in the
        set's order."""

        def named(j: int, weight: float) -> str:
            low = f" (ceiling {self.ceiling[j]:.2f})" if self.ceiling is not None and self.ceiling[j] < 0.9 else ""
            return f"{weight:.0%} {names[j]}{low}"  # a weight, not a score

        out = {}
        for i in np.flatnonzero(self.novel):
            weights = self.mapping_t[:, i]
            out[labels[i]] = ", ".join(named(j, weights[j]) for j in np.argsort(-weights)[:k])
        return out

    def weakly_named(self, labels: tuple[str, ...], names: tuple[str, ...]) -> dict[str, str]:
        """The new labels no vocabulary name is near (WEAKLY_NAMED_COSINE), in the set's order:
        label -> "the nearest, 'Tap', at cosine 0.42"."""
        if self.closeness is None:
            return {}
        nearest = self.mapping_t.argmax(axis=0)  # a label's heaviest vocabulary weight is on its nearest name
        return {
            labels[k]: f"the nearest, {names[nearest[k]]!r}, at cosine {self.closeness[k]:.2f}"
            for k in np.flatnonzero(self.novel & (self.closeness < WEAKLY_NAMED_COSINE))
        }

    def explained(self, labels: tuple[str, ...]) -> dict[str, list[str]]:
        """New label -> the trained labels of the set whose own sound explains it where it is heard
        (their clips made the vocabulary score it at least veto_heard), in the set's order; {} when off."""
        if self.explains is None:
            return {}
        explaining = self.explains >= self.veto_heard  # [K, K]
        return {
            labels[k]: [labels[t] for t in np.flatnonzero(explaining[:, k])]
            for k in np.flatnonzero(self.novel)
            if explaining[:, k].any()
        }

    def outweighed(self, labels: tuple[str, ...]) -> list[str]:
        """The trained labels of the set a new label holds back where the vocabulary hears it far
        above what their own clips made it (familiar.outweighs: labels the vocabulary cannot hear
        itself), in the set's order; [] when off."""
        if self.outweigh is None:
            return []
        return [labels[t] for t in np.flatnonzero(np.isfinite(self.outweigh).any(axis=1))]

    def vetoed(self, labels: tuple[str, ...]) -> list[str]:
        """The trained labels the veto may hold back beside a new label, in the set's order."""
        return [label for label, power in zip(labels, self.veto) if power > 0]

    def intruders(self, names: tuple[str, ...]) -> list[str]:
        """The vocabulary classes that can hold back a trained label of the set, in its order."""
        if self.intruder is None:
            return []
        return [names[j] for j in np.flatnonzero(np.isfinite(self.intruder).any(axis=0))]

    def _row(self, vocabulary_scores: np.ndarray) -> np.ndarray:
        row = np.asarray(vocabulary_scores, dtype=np.float64)
        if row.shape[-1] != self.size + self.head_size:
            what = f"{self.size} scores" + (f" + {self.head_size} head logits" if self.head_size else "")
            width = self.size + self.head_size
            raise ValueError(f"vocabulary rows of shape {row.shape}: expected [N, {width}] ({what})")
        return row

    def _probabilities(self, vocabulary_scores: np.ndarray) -> np.ndarray:
        return np.clip(self._row(vocabulary_scores)[..., : self.size], 0.0, 1.0)

    def label_scores(self, vocabulary_scores: np.ndarray) -> np.ndarray:
        """[N, V] vocabulary probabilities -> [N, K] the vocabulary's score of each label (v: what
        the veto reads)."""
        return self._probabilities(vocabulary_scores) @ self.mapping_t

    def new_label_scores(self, vocabulary_scores: np.ndarray) -> np.ndarray:
        """[N, V] vocabulary probabilities -> [N, K] each label's score were it new (n: each class
        against its ceiling; v without one)."""
        return self._new(self._probabilities(vocabulary_scores))

    def _new(self, p: np.ndarray) -> np.ndarray:
        return (p if self.ceiling is None else np.minimum(1.0, p / self.ceiling)) @ self.mapping_t

    def __call__(self, student: np.ndarray, vocabulary_scores: np.ndarray) -> np.ndarray:
        """[N, K] student scores and [N, V] vocabulary probabilities -> [N, K] fused scores."""
        p = self._probabilities(vocabulary_scores)
        v = p @ self.mapping_t
        new = v if self.ceiling is None else self._new(p)  # the same without a ceiling: one product per window
        student = np.clip(student, 0.0, 1.0)
        audible = self.novel & (new >= self.veto_heard)  # [N, K]: the new labels heard
        if self.explains is None:
            heard = audible.any(axis=-1, keepdims=True)  # [N, 1]
        else:
            # beside a new label its own sound makes the vocabulary say as much, a trained label is not held back
            heard = (audible[..., None, :] & (new[..., None, :] > self.explains)).any(axis=-1)  # [N, K]
        power = np.where(heard, self.veto, 0.0)  # [N, K]
        if self.intruder is not None:
            intruded = (p[..., None, :] >= self.intruder).any(axis=-1)  # [N, K]
            power = np.where(intruded, self.intruder_power, power)
        factor = np.minimum(1.0, v / self.veto_below) ** power
        if self.intruder is not None:
            # the top trained label held back holds every trained label back at least as far: its top-1 stands
            top = np.where(self.novel, -np.inf, student).argmax(axis=-1)[..., None]  # [N, 1]
            window = np.where(np.take_along_axis(intruded, top, axis=-1), np.take_along_axis(factor, top, axis=-1), 1.0)
            factor = np.minimum(factor, window)
        if self.outweigh is not None:
            # a new label heard far above what an unheard trained label's own sound makes it score outweighs it
            over = new[..., None, :] >= self.outweigh  # [N, K (trained), K (new)]
            factor = factor * np.square(np.where(over, 1.0 - new[..., None, :], 1.0).min(axis=-1))  # min, then squared
        trained = student * factor
        if self.explains is not None:
            # a new label heard no more than the top trained label's own sound makes it: likely that sound
            top = np.where(self.novel, -np.inf, trained).argmax(axis=-1)[..., None]  # [N, 1]
            s_top = np.take_along_axis(trained, top, axis=-1)
            held = new <= np.take(self.explains, top[..., 0], axis=0)
            new = np.where(held, new * (1.0 - s_top), new)
        return np.where(self.novel, new, trained)
