"""Heads: the audio encoder's map (B, D, 8, 8) -> an audio embedding (B, C) or class logits.

The rows of the paper's Table 3 (ESC-50 fold 4), one module each, chosen by `build_head`:

    kind          module            Table 3 row                      output
    'cscm'        CSCM              SemanticAC + CSCM (ours, 98.0)   (B, C) embedding
    'seq_transf'  SeqTransf         SemanticAC + SeqTransf (97.5)    (B, C) embedding
    'seq_lstm'    SeqLSTM           SemanticAC + SeqLSTM (97.25)     (B, C) embedding
    'mean'        MeanPoolHead      SemanticAC* (text, no module)    (B, C) embedding
    'onehot'      LinearClassifier  Baseline (no text, 94.2)         (B, K) logits

Every head takes the same input, the map (B, D, h, w); token n of the encoder is row
n // w, column n % w, so heads that want the token sequence take `map.flatten(2)` back.
Embeddings are not normalised: the top model does that. Every head exports to ONNX
(legacy exporter, opset 17, dynamic batch).
"""

import typing
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from train.model.cscm import CSCM, CSCMConfig

HEAD_KINDS = ("cscm", "seq_transf", "seq_lstm", "mean", "onehot")


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B, h*w, D), token n = row n // w, column n % w (the encoder's order)."""
    return x.flatten(2).transpose(1, 2)


@dataclass
class SeqTransfConfig:
    """CLIP4Clip's seqTransf: 4 layers as CLIP4Clip's `cross_num_hidden_layers`.

    heads: None means in_dim // 64 (64-wide heads as CLIP and ViT: 12 for D = 768).
    num_tokens: length of the learned positional embedding: the 8x8 map's 64 tokens.
    """

    layers: int = 4
    heads: int | None = None
    mlp_ratio: float = 4.0
    num_tokens: int = 64


@dataclass
class SeqLSTMConfig:
    """CLIP4Clip's seqLSTM: one unidirectional LSTM layer as CLIP4Clip."""

    layers: int = 1


@dataclass
class NoOptions:
    """For heads without options ('mean', 'onehot')."""


class SeqTransf(nn.Module):
    """CLIP4Clip seqTransf: tokens + learned positions -> transformer -> + tokens -> mean -> (B, C).

    CLIP4Clip initialises its 4 layers from CLIP's text transformer; there is no such
    checkpoint at this width, so they start random (PyTorch defaults, pre-norm, GELU).
    The residual keeps the pretrained encoder's tokens reachable from the first step.
    """

    def __init__(
        self,
        in_dim: int,
        embed_dim: int = 1024,
        layers: int = 4,
        heads: int | None = None,
        mlp_ratio: float = 4.0,
        num_tokens: int = 64,
    ):
        super().__init__()
        heads = heads or max(1, in_dim // 64)
        if in_dim % heads:
            raise ValueError(f"SeqTransf: heads={heads} must divide in_dim={in_dim}; pick a divisor")
        self.pos_embed = nn.Parameter(torch.randn(1, num_tokens, in_dim) * 0.02)  # CLIP4Clip's init std
        # No dropout as CLIP4Clip; batch_first for the (B, N, D) layout; pre-norm as CLIP.
        layer = nn.TransformerEncoderLayer(
            in_dim, heads, int(in_dim * mlp_ratio), dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )
        # enable_nested_tensor=False: there is no padding mask, and nested tensors do not export.
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.proj = nn.Linear(in_dim, embed_dim)
        self.out_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, D, h, w)
        tokens = map_to_tokens(x)  # the encoder's tokens: (B, N, D)
        h = self.transformer(tokens + self.pos_embed)  # tokens attend to each other: (B, N, D)
        h = h + tokens  # residual to the encoder's tokens, as CLIP4Clip
        return self.proj(h.mean(1))  # mean pool (nothing to mask) and project: (B, C)


class SeqLSTM(nn.Module):
    """CLIP4Clip seqLSTM: LSTM over the tokens -> + tokens -> mean -> (B, C).

    CLIP4Clip's sequence is video frames in time; here it is the 8x8 map read row by row,
    the encoder's own token order.
    """

    def __init__(self, in_dim: int, embed_dim: int = 1024, layers: int = 1):
        super().__init__()
        # Hidden size = in_dim so that the residual needs no projection (as CLIP4Clip).
        self.lstm = nn.LSTM(in_dim, in_dim, num_layers=layers, batch_first=True)
        self.proj = nn.Linear(in_dim, embed_dim)
        self.out_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, D, h, w)
        tokens = map_to_tokens(x)  # the encoder's tokens: (B, N, D)
        h, _ = self.lstm(tokens)  # read in order, zero initial state: (B, N, D)
        h = h + tokens  # residual to the encoder's tokens, as CLIP4Clip
        return self.proj(h.mean(1))  # mean pool and project: (B, C)


class MeanPoolHead(nn.Module):
    """SemanticAC* (text assistance, no similarity module): mean of the tokens -> Linear -> (B, C)."""

    def __init__(self, in_dim: int, embed_dim: int = 1024):
        super().__init__()
        self.proj = nn.Linear(in_dim, embed_dim)
        self.out_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, D, h, w)
        return self.proj(x.mean((2, 3)))  # mean over the tokens, project: (B, C)


class LinearClassifier(nn.Module):
    """The one-hot baseline (no text): mean of the tokens -> Linear -> class logits (B, K)."""

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, num_classes)
        self.out_dim = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, D, h, w)
        return self.fc(x.mean((2, 3)))  # mean over the tokens, classify: (B, K)


_CONFIGS = {
    "cscm": CSCMConfig,
    "seq_transf": SeqTransfConfig,
    "seq_lstm": SeqLSTMConfig,
    "mean": NoOptions,
    "onehot": NoOptions,
}


def _config(kind: str, cfg: dict):
    """The kind's config dataclass from `cfg`; an unknown key or a wrong type names itself."""
    cls = _CONFIGS[kind]
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    for key, value in cfg.items():
        if key not in valid:
            raise ValueError(
                f"unknown option {key!r} for head kind {kind!r}; valid options: {valid or 'none'}"
            )
        allowed = typing.get_args(hints[key]) or (hints[key],)
        if float in allowed:
            allowed += (int,)  # 4 is a fine mlp_ratio
        if isinstance(value, bool) or not isinstance(value, allowed):
            names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            raise TypeError(f"head option {key!r} for kind {kind!r} must be {names}, got {value!r}")
    return cls(**cfg)


def build_head(
    kind: str, in_dim: int, embed_dim: int = 1024, num_classes: int | None = None, **cfg
) -> nn.Module:
    """The head `kind` on a map of `in_dim` channels; `cfg` holds the kind's config fields.

    `embed_dim` (C) is the joint embedding width of the text-assisted heads; the one-hot
    baseline ignores it and needs `num_classes` instead.
    """
    if kind not in _CONFIGS:
        raise ValueError(f"unknown head kind {kind!r}; valid kinds: {', '.join(HEAD_KINDS)}")
    options = asdict(_config(kind, cfg))
    if kind == "cscm":
        return CSCM(in_dim, embed_dim, **options)
    if kind == "seq_transf":
        return SeqTransf(in_dim, embed_dim, **options)
    if kind == "seq_lstm":
        return SeqLSTM(in_dim, embed_dim, **options)
    if kind == "mean":
        return MeanPoolHead(in_dim, embed_dim)
    if num_classes is None:
        raise ValueError("head kind 'onehot' needs num_classes (the number of labels it classifies)")
    return LinearClassifier(in_dim, num_classes)
