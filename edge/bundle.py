"""The model bundle: the contract between the desktop that trains and the device that listens.

    bundle/
      model.json          this module's `BundleMeta` (below)
      model.onnx          audio encoder + CSCM: `mel` float32 [B, 1, T, F] -> `embedding` [B, C]
      vocabulary.onnx     the vocabulary branch (optional; edge.vocabulary): the window model.onnx
                          reads (or a map it also outputs) -> scores of a fixed vocabulary [B, V]
                          (and features [B, F] for the head), run only for a label set that needs it
      head.npz            the vocabulary's head (optional): the trained labels' logits from those
                          features, mixed with the student's
      familiar.npz        what each trained label's own training clips make the vocabulary say
                          (optional): a sound no label of the set names holds the others back
      text.onnx           the text tower: token ids -> embedding [B, C] (optional)
      tokenizer/          what turns prompts into ids for text.onnx
      labels/<name>.npz   precomputed label embeddings (edge.labels.embeddings)
      engines/            TensorRT plans built on the device, each with a JSON sidecar

`semanticac-train export` writes it (atomically, with `write_bundle_meta`); everything in
`edge` reads it with `read_bundle`, which checks `format_version` and names any missing or
bad field of model.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edge.errors import BundleError, OutdatedBundle, UnreadableBundle
from edge.features import Frontend, WindowGain
from edge.fsutil import atomic_write_text, looked_at, readable_fix, sha256_file
from edge.schema import NUMBER, Fields, is_kind, must_be, read_json

FORMAT_VERSION = 1
META_FILE = "model.json"
BUNDLE_ENV = "SEMANTICAC_BUNDLE"


@dataclass(frozen=True)
class Tower:
    """One ONNX graph of the bundle: its file (relative to the bundle), hash and tensor names."""

    file: str
    sha256: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class BundleMeta:
    """model.json. `model_id` names the trained weights of both towers: it survives re-export
    and precision changes, so label embeddings computed once stay valid."""

    model_id: str
    frontend: Frontend
    clip_seconds: float  # clip length the model was trained on, before tiling to `frontend.frames`
    embedding_dim: int
    logit_scale: float  # the multiplier applied to cosine similarities (not its log)
    audio: Tower
    text: Tower | None  # None: no text tower; labels must come precomputed
    text_encoder: dict  # {"kind": ..., plus what identifies it}
    training: dict = field(default_factory=dict)  # command, data, figures
    license: str = "unspecified"
    format_version: int = FORMAT_VERSION
    # how logits become scores: {"kind": "softmax"} over the label set (the default, and every
    # bundle without the field), or {"kind": "sigmoid", "logit_bias": b}: per-label probabilities
    # sigmoid(logit_scale * cosine + b), so "nothing" is an answer (edge.scoring)
    scoring: dict = field(default_factory=lambda: {"kind": "softmax"})
    # the vocabulary branch (edge.vocabulary): None, or {"graph" (a Tower: the audio graph's
    # trunk output -> vocabulary scores), "labels", "trained", "tau", "novelty_cosine",
    # "veto_below", "veto_power", "veto_cosine", "veto_heard", "veto_reliable", "heard",
    # "ceiling", "head" and "familiar" (None when absent), "source"}
    vocabulary: dict | None = None
    # the automatic gain per window (edge.features.WindowGain), None: none (and every bundle without the field)
    gain: WindowGain | None = None

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["frontend"] = self.frontend.to_dict()
        if self.gain is None:  # absent: a bundle without one stays readable by older readers
            del data["gain"]
        if data["vocabulary"] is None:  # absent: a bundle without one stays readable by older readers
            del data["vocabulary"]
        else:
            # unmeasured or unfitted: absent, as older readers expect
            for name in ("heard", "ceiling", "head", "familiar"):
                if data["vocabulary"].get(name, ()) is None:
                    del data["vocabulary"][name]
            familiar = data["vocabulary"].get("familiar") or {}
            for name in ("explains", "outweighs"):  # off: absent, as readers older than the field expect
                if familiar.get(name, ()) is None:
                    del familiar[name]
        return data


# ---------------------------------------------------------------------------------------------
# Reading and checking model.json


TOWER_FIELDS = ("file", "sha256", "inputs", "outputs")


def _file_and_hash(spec: Fields) -> tuple[str, str]:
    """A bundle file's `file` (relative, inside the bundle) and `sha256` fields."""
    file = spec.text("file", "a file name inside the bundle")
    if os.path.isabs(file) or ".." in Path(file).parts:
        raise spec.fail(f"field 'file' {must_be('a relative path inside the bundle', file)}")
    sha = spec.get("sha256", str, "the file's SHA-256 in hex")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise spec.fail(f"field 'sha256' {must_be('a 64-digit lowercase hex SHA-256', sha)}")
    return file, sha


def _tower(meta: Fields, name: str) -> Tower:
    spec = meta.nested(name, "a mapping {file, sha256, inputs, outputs}")
    spec.unknown(TOWER_FIELDS)
    file, sha = _file_and_hash(spec)
    return Tower(
        file=file,
        sha256=sha,
        inputs=spec.names("inputs", "a non-empty list of tensor names"),
        outputs=spec.names("outputs", "a non-empty list of tensor names"),
    )


def parse_bundle_meta(data: object) -> BundleMeta:
    """Check model.json's content (a JSON object); BundleError names the first missing or bad field."""
    meta = Fields(data, META_FILE, BundleError)
    version = meta.version(
        FORMAT_VERSION,
        newer_fix="upgrade semanticac-edge (pip install -U semanticac-edge)",
        older_fix="re-export the bundle with `semanticac-train export`",
    )
    meta.unknown(f.name for f in dataclasses.fields(BundleMeta))
    try:
        frontend = Frontend.from_dict(meta.get("frontend", dict, "a mapping of log-mel parameters"))
    except ValueError as err:
        raise meta.fail(str(err)) from None
    model_id = meta.text("model_id", "a non-empty identifier of the trained weights")
    text = None if meta.data.get("text") is None else _tower(meta, "text")
    return BundleMeta(
        model_id=model_id,
        frontend=frontend,
        clip_seconds=float(meta.positive("clip_seconds", "a positive number of seconds")),
        embedding_dim=int(meta.positive("embedding_dim", "a positive integer", kinds=int)),
        logit_scale=float(meta.positive("logit_scale", "a positive multiplier")),
        audio=_tower(meta, "audio"),
        text=text,
        text_encoder=meta.get("text_encoder", dict, "a mapping with at least 'kind'"),
        training=meta.get("training", dict, "a mapping (command, data, figures)", default={}),
        license=meta.get("license", str, "the licence text", default="unspecified"),
        format_version=version,
        scoring=_scoring(meta),
        vocabulary=_vocabulary(meta),
        gain=_gain(meta),
    )


def _gain(meta: Fields) -> WindowGain | None:
    """model.json `gain` (absent or null: None)."""
    data = meta.data.get("gain")
    if data is None:
        return None
    try:
        return WindowGain.from_dict(data)
    except ValueError as err:
        raise meta.fail(
            f"{err}: give ref_dbfs, max_boost_db, max_cut_db, span_hops and max_level_dbfs, or leave 'gain' out"
        ) from None


SCORING_KINDS = ("softmax", "sigmoid")


def _scoring(meta: Fields) -> dict:
    """model.json `scoring`: {"kind": "softmax"} (also when absent) or {"kind": "sigmoid",
    "logit_bias": <finite number>}."""
    spec = meta.nested("scoring", "a mapping with 'kind'", default=None)
    if spec is None:
        return {"kind": "softmax"}
    kind = spec.choice("kind", SCORING_KINDS)
    if kind == "softmax":
        spec.unknown({"kind"}, context="for kind 'softmax'")
        return {"kind": "softmax"}
    spec.unknown({"kind", "logit_bias"}, context="for kind 'sigmoid'")
    bias = spec.get("logit_bias", NUMBER, "a finite number (the global bias of a sigmoid model)")
    if not math.isfinite(bias):
        raise spec.fail(f"field 'logit_bias' {must_be('a finite number', bias)}")
    return {"kind": "sigmoid", "logit_bias": float(bias)}


VOCABULARY_FIELDS = (
    "graph",
    "labels",
    "trained",
    "tau",
    "novelty_cosine",
    "veto_below",
    "veto_power",
    "veto_cosine",
    "veto_heard",
    "veto_reliable",
    "heard",
    "ceiling",
    "source",
    "head",
    "familiar",
)


def _vocabulary(meta: Fields) -> dict | None:
    """model.json `vocabulary` (absent: None): the graph that scores a fixed vocabulary of named
    classes from a map the audio graph also outputs, where their names' embeddings lie
    (labels/<labels>.npz), the label sets the student was trained on (labels/<name>.npz each)
    and the fusion's constants."""
    if meta.data.get("vocabulary") is None:
        return None
    spec = meta.nested(
        "vocabulary",
        "a mapping {graph, labels, trained, tau, novelty_cosine, veto_below, veto_power, veto_cosine, veto_heard}",
    )
    if "output" in spec.data and spec.data.get("graph") is None:
        # its export's --vocabulary-shared, as its `source` words it ("the student's first 8 trunk layers")
        shared = re.search(r"first (\d+) trunk layers", str(spec.data.get("source", "")))
        raise OutdatedBundle(
            f"{spec.where}: has 'output': a vocabulary branch inside model.onnx (exported before the vocabulary "
            "had a graph of its own, 2026-12-02); "
            "split it into its own graph with `semanticac-train split-vocabulary --bundle BUNDLE --shared "
            + (f"{shared[1]}`" if shared else "N` (N: its export's --vocabulary-shared)")
        )
    spec.unknown(VOCABULARY_FIELDS)
    graph = _tower(spec, "graph")
    out: dict = {
        "graph": graph,
        "labels": spec.text("labels", "the name of the bundle's labels/<name>.npz of the vocabulary"),
        "trained": list(spec.names("trained", "the bundle's label sets the student was trained on")),
        "source": spec.get("source", str, "what the vocabulary is", default=""),
    }
    # what the audio graph gives it: one of its outputs (a map it shares), or its own input (the window)
    audio_tensors = [*meta.data["audio"].get("outputs", ()), *meta.data["audio"].get("inputs", ())]
    if len(graph.inputs) != 1 or graph.inputs[0] not in audio_tensors:
        allowed = f"one of the audio graph's outputs or inputs {audio_tensors}"
        raise spec.fail(f"field 'graph' inputs {must_be(allowed, list(graph.inputs))}")
    if len(graph.outputs) not in (1, 2):
        allowed = "the vocabulary scores, then optionally the features a head reads"
        raise spec.fail(f"field 'graph' outputs {must_be(allowed, list(graph.outputs))}")
    ranges = {
        "tau": ("a number > 0", 0.0, math.inf),
        "novelty_cosine": ("a cosine in [-1, 1]", -1.0, 1.0),
        "veto_below": ("a probability in (0, 1]", 0.0, 1.0),
        "veto_power": ("a number >= 0", 0.0, math.inf),
        "veto_cosine": ("a cosine in [-1, 1]", -1.0, 1.0),
        "veto_heard": ("a probability in [0, 1]", 0.0, 1.0),
        "veto_reliable": ("a share in [0, 1]", 0.0, 1.0),
    }
    for name, (allowed, low, high) in ranges.items():
        # veto_heard and veto_reliable are newer than the rest (2026-12-02 13:13 and later): absent, the veto
        # applies in every window, as it did then, and every label the vocabulary names is trusted
        newer = name in ("veto_heard", "veto_reliable")
        value = spec.get(name, NUMBER, allowed, **({"default": 0.0} if newer else {}))
        if not (math.isfinite(value) and low <= value <= high) or (name in ("tau", "veto_below") and value == 0):
            raise spec.fail(f"field {name!r} {must_be(allowed, value)}")
        out[name] = float(value)
    out["heard"] = _heard(spec, out["trained"])
    out["ceiling"] = _ceiling(spec)
    out["head"] = _head(spec, graph)
    out["familiar"] = _familiar(spec)
    return out


HEAD_FIELDS = ("file", "sha256", "input", "weight", "agree", "clips", "fit")


def _head(spec: Fields, graph: Tower) -> dict | None:
    """vocabulary.head (absent: None): {file, sha256, input, weight, agree, clips, fit}, a head on
    the features the vocabulary graph also outputs (`input`, not its first output): a linear layer,
    one row per trained label, optionally after one hidden ReLU layer (`file`: edge.vocabulary.Head's
    npz; train.vocabulary_head fits it on `clips` training clips). A trained label's logit is
    (1 - weight) * the student's + weight * the head's; with `agree` (optional, None when absent:
    bundles before 2026-12-05) a window counts towards a trained label's event only where the
    student alone scores it at least that (edge.vocabulary)."""
    head = spec.nested("head", "a mapping {file, sha256, input, weight, clips}", default=None)
    if head is None:
        return None
    head.unknown(HEAD_FIELDS)
    file, sha = _file_and_hash(head)
    features = head.text("input", "the vocabulary graph's output the head reads")
    if features not in graph.outputs[1:]:
        allowed = f"one of the vocabulary graph outputs {list(graph.outputs[1:])}"
        raise head.fail(f"field 'input' {must_be(allowed, features)}")
    weight = head.get("weight", NUMBER, "a number in [0, 1]")
    if not (math.isfinite(weight) and 0 <= weight <= 1):
        raise head.fail(f"field 'weight' {must_be('a number in [0, 1] (0: the student alone)', weight)}")
    agree = head.get("agree", (*NUMBER, type(None)), "a score in [0, 1]", default=None)
    if agree is not None and not (math.isfinite(agree) and 0 <= agree <= 1):
        allowed = "a score in [0, 1] (0 or absent: events need no agreement)"
        raise head.fail(f"field 'agree' {must_be(allowed, agree)}")
    return {
        "file": file,
        "sha256": sha,
        "input": features,
        "weight": float(weight),
        "agree": None if agree is None else float(agree),
        "clips": head.positive("clips", "the number of training clips the head was fitted on (> 0)", int),
        "fit": head.get("fit", dict, "a mapping of what the fit was", default={}),
    }


FAMILIAR_FIELDS = (
    "file",
    "sha256",
    "quantile",
    "clips",
    "margin",
    "relative",
    "outside_cosine",
    "ignore",
    "explains",
    "outweighs",
)


def _familiar(spec: Fields) -> dict | None:
    """vocabulary.familiar (absent: None): {file, sha256, quantile, clips, margin, relative,
    outside_cosine, ignore}, what each trained label's own training clips make the vocabulary say
    (`file`: edge.vocabulary.Familiar's npz, that quantile of each class's score over the label's
    clips; train.vocabulary_trust) and when a class says something else: a class no label of the set
    is near (text cosine < outside_cosine), not in `ignore`, scoring `margin` above that level (with
    `relative`, optional, absent: false, `margin` is that share of the level's headroom to 1); and
    (`explains`, optional: absent, None) how far above what the top trained label's own clips made a
    new label score the new label must score not to be taken for that label's sound; (`outweighs`,
    optional: absent, None) the log-odds above what a trained label's own clips made a new label score
    at which the new label holds back a trained label the vocabulary cannot hear."""
    what = "a mapping {file, sha256, quantile, clips, margin, relative, outside_cosine, ignore, explains, outweighs}"
    familiar = spec.nested("familiar", what, default=None)
    if familiar is None:
        return None
    familiar.unknown(FAMILIAR_FIELDS)
    file, sha = _file_and_hash(familiar)
    out: dict = {"file": file, "sha256": sha}
    ranges = {
        "quantile": ("a quantile in (0, 1]", 0.0, 1.0),
        "margin": ("a probability in (0, 1]", 0.0, 1.0),
        "outside_cosine": ("a cosine in [-1, 1]", -1.0, 1.0),
    }
    for name, (allowed, low, high) in ranges.items():
        value = familiar.get(name, NUMBER, allowed)
        if not (math.isfinite(value) and low <= value <= high) or (name != "outside_cosine" and value == 0):
            raise familiar.fail(f"field {name!r} {must_be(allowed, value)}")
        out[name] = float(value)
    out["relative"] = familiar.get("relative", bool, "true (margin: a share of the headroom) or false", default=False)
    out["clips"] = familiar.positive("clips", "the number of training clips measured (> 0)", int)
    what = "a list of vocabulary class names that never hold a label back"
    ignore = familiar.get("ignore", list, what, default=[])
    if not all(isinstance(name, str) and name for name in ignore):
        raise familiar.fail(f"field 'ignore' {must_be(what, ignore)}")
    out["ignore"] = list(ignore)
    explains = familiar.get("explains", (*NUMBER, type(None)), "a probability margin in [-1, 1]", default=None)
    if explains is not None and not (math.isfinite(explains) and -1 <= explains <= 1):
        raise familiar.fail(f"field 'explains' {must_be('a probability margin in [-1, 1] (absent: off)', explains)}")
    out["explains"] = None if explains is None else float(explains)
    allowed = "a log-odds margin in (0, 20] (absent: off)"
    outweighs = familiar.get("outweighs", (*NUMBER, type(None)), allowed, default=None)
    if outweighs is not None and not (math.isfinite(outweighs) and 0 < outweighs <= 20):
        raise familiar.fail(f"field 'outweighs' {must_be(allowed, outweighs)}")
    out["outweighs"] = None if outweighs is None else float(outweighs)
    return out


CEILING_FIELDS = ("quantile", "floor", "clips", "scores")


def _ceiling(spec: Fields) -> dict | None:
    """vocabulary.ceiling (absent: None): {quantile, floor, clips, scores {class name: score}},
    what each vocabulary class scored on the training audio (that quantile of `clips` clips' first
    windows, no lower than floor; train.vocabulary_trust). A new label is scored against it."""
    ceiling = spec.nested("ceiling", "a mapping {quantile, floor, clips, scores}", default=None)
    if ceiling is None:
        return None
    ceiling.unknown(CEILING_FIELDS)
    out: dict = {}
    for name, allowed in (("quantile", "a quantile in (0, 1]"), ("floor", "a probability in (0, 1]")):
        value = ceiling.get(name, NUMBER, allowed)
        if not (math.isfinite(value) and 0 < value <= 1):
            raise ceiling.fail(f"field {name!r} {must_be(allowed, value)}")
        out[name] = float(value)
    out["clips"] = ceiling.positive("clips", "the number of training clips measured (> 0)", int)
    what = f"a mapping {{vocabulary class: score in [floor {out['floor']:g}, 1]}}"
    scores = ceiling.get("scores", dict, what)
    bad = {
        name: v
        for name, v in scores.items()
        if not (is_kind(v, NUMBER) and math.isfinite(v) and out["floor"] <= v <= 1)
    }
    if not scores or bad:
        raise ceiling.fail(f"field 'scores' {must_be(what, dict(list(bad.items())[:3]) if bad else scores)}")
    out["scores"] = {str(name): float(v) for name, v in scores.items()}
    return out


def _heard(spec: Fields, trained: list[str]) -> dict[str, dict[str, float]] | None:
    """vocabulary.heard (absent: None): {trained set: {label: share}}, the share of each trained
    label's own training clips whose vocabulary score reaches veto_below (train.vocabulary_trust)."""
    what = "a mapping {trained label set: {label: share of its training clips the vocabulary hears}}"
    heard = spec.get("heard", dict, what, default=None)
    if heard is None:
        return None
    out = {}
    for name, shares in heard.items():
        if name not in trained:
            raise spec.fail(f"field 'heard' names label set {name!r}, which is not one of 'trained' {trained}")
        if not isinstance(shares, dict) or not all(
            is_kind(v, NUMBER) and math.isfinite(v) and 0 <= v <= 1 for v in shares.values()
        ):
            raise spec.fail(f"field 'heard' {name!r} {must_be('a mapping {label: share in [0, 1]}', shares)}")
        out[name] = {str(label): float(v) for label, v in shares.items()}
    return out


@dataclass(frozen=True)
class Bundle:
    path: Path
    meta: BundleMeta

    @property
    def audio_path(self) -> Path:
        return self.path / self.meta.audio.file

    @property
    def text_path(self) -> Path | None:
        return None if self.meta.text is None else self.path / self.meta.text.file

    @property
    def vocabulary_path(self) -> Path | None:
        return None if self.meta.vocabulary is None else self.path / self.meta.vocabulary["graph"].file

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / "tokenizer"

    @property
    def labels_dir(self) -> Path:
        return self.path / "labels"

    @property
    def engines_dir(self) -> Path:
        return self.path / "engines"

    def verify(self) -> None:
        """Check that each ONNX file is there and matches the SHA-256 in model.json."""
        towers = [("audio", self.meta.audio)] + ([("text", self.meta.text)] if self.meta.text else [])
        if self.meta.vocabulary is not None:
            towers.append(("vocabulary", self.meta.vocabulary["graph"]))
            if self.meta.vocabulary["head"] is not None:
                head = self.meta.vocabulary["head"]
                towers.append(("vocabulary head", Tower(head["file"], head["sha256"], (), ())))
        for name, tower in towers:
            path = self.path / tower.file
            if not path.is_file():
                raise BundleError(f"bundle {self.path}: the {name} graph {tower.file} is missing")
            try:
                digest = sha256_file(path)
            except PermissionError:
                raise UnreadableBundle(
                    f"bundle {self.path}: the {name} graph {tower.file} cannot be read by this user: "
                    f"{readable_fix(self.path)}"
                ) from None
            except OSError as err:
                raise BundleError(
                    f"bundle {self.path}: the {name} graph {tower.file} cannot be read ({err.strerror or err}): copy "
                    "the bundle again"
                ) from None
            if digest != tower.sha256:
                raise BundleError(
                    f"bundle {self.path}: {tower.file} has SHA-256 {digest[:12]}..., "
                    f"model.json says {tower.sha256[:12]}...: the file is corrupt or was "
                    "replaced; re-export the bundle with `semanticac-train export`"
                )


def read_bundle(path: str | Path, verify: bool = False, named_by: str = "--bundle") -> Bundle:
    """Read and check a bundle folder; with `verify`, also hash its ONNX files. `named_by`: what
    gave the path (an option, or the environment variable), named in the error for a wrong one."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        what = (
            f"has no {META_FILE}" if path.is_dir() else "is not a folder" + ("" if path.exists() else looked_at(path))
        )
        origin = "" if named_by == "--bundle" else f" (from {named_by})"
        raise BundleError(
            f"bundle {path}{origin} {what}: point {named_by} at a folder written by `semanticac-train export`"
        )
    data = read_json(meta_path, BundleError, "copy the bundle again, or re-export it with `semanticac-train export`")
    try:
        meta = parse_bundle_meta(data)
    except BundleError as err:  # the same kind (an outdated bundle stays one), named by its folder
        named = str(err).replace("--bundle BUNDLE", f"--bundle {shlex.quote(str(path))}")
        raise type(err)(f"bundle {path}: {named}") from None
    bundle = Bundle(path=path, meta=meta)
    if verify:
        bundle.verify()
    elif not bundle.audio_path.is_file():
        raise BundleError(f"bundle {path}: the audio graph {meta.audio.file} is missing")
    return bundle


def write_bundle_meta(folder: str | Path, meta: BundleMeta) -> Path:
    """Write model.json atomically (checked by the same parser that reads it)."""
    data = meta.to_dict()
    parse_bundle_meta(json.loads(json.dumps(data)))  # never write what we could not read back
    target = Path(folder) / META_FILE
    atomic_write_text(target, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return target


def tower_spec(folder: str | Path, file: str, inputs, outputs) -> Tower:
    """The `Tower` entry of a graph already written into the bundle folder."""
    return Tower(file=file, sha256=sha256_file(Path(folder) / file), inputs=tuple(inputs), outputs=tuple(outputs))


# ---------------------------------------------------------------------------------------------
# Which bundle: --bundle, else $SEMANTICAC_BUNDLE, else the demo bundle shipped with the package.


def shipped_bundle() -> Path | None:
    folder = Path(str(resources.files("edge") / "demo_bundle"))
    return folder if (folder / META_FILE).is_file() else None


def resolve_bundle(option: str | Path | None = None) -> Bundle:
    return resolve_bundle_origin(option)[0]


def resolve_bundle_origin(option: str | Path | None = None) -> tuple[Bundle, str]:
    """The bundle and where it came from, in words: --bundle, $SEMANTICAC_BUNDLE, or the demo
    bundle shipped with the package (named with its licence: it is trained on CC BY-NC data)."""
    if option:
        return read_bundle(option), f"--bundle {option}"
    if os.environ.get(BUNDLE_ENV):
        path = os.environ[BUNDLE_ENV]
        return read_bundle(path, named_by=f"${BUNDLE_ENV}"), f"${BUNDLE_ENV} = {path}"
    demo = shipped_bundle()
    if demo is None:
        raise BundleError(
            f"no model bundle: --bundle was not given, ${BUNDLE_ENV} is not set, and this installation "
            "ships no demo bundle yet. Export one with `semanticac-train export --checkpoint RUN/best.pt "
            "--out BUNDLE`, then pass --bundle BUNDLE"
        )
    bundle = read_bundle(demo)
    return bundle, (
        f"the demo bundle shipped with semanticac-edge ({demo}); licence: {bundle.meta.license}; "
        "pass --bundle or set $SEMANTICAC_BUNDLE to use your own model"
    )
