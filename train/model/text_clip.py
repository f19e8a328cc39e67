"""CLIP's text tower (the paper's text encoder), then a projection to the joint width C.

    input_ids (B, 77) -> token + positional embedding -> 12 pre-LN residual attention blocks
    (causal mask, QuickGELU MLP) -> ln_final -> the end-of-text token's feature
    -> @ text_projection (512 -> 1024) -> proj: Linear(1024 -> C)          -> (B, C), unnormalised

Parameter names are those of OpenAI's checkpoints (tests check them against the key list
clip_rn50_text_keys.txt in $SEMANTICAC_REFERENCE), so
`train.model.clip_weights.load_clip_text_checkpoint` loads RN50.pt by name; `proj` is ours,
new, and starts random. Exports to ONNX (legacy exporter, opset 17) with input `input_ids`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edge.labels.tokenizers import ClipBpeTokenizer

NEW_PARAMETERS = ("proj.",)  # our projection to C: no CLIP checkpoint has it


def _building_graph() -> bool:
    """True under ONNX export (legacy tracing or dynamo), torch.export and torch.compile:
    there a shape may not depend on the ids' values."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


@dataclass
class ClipTextConfig:
    """The architecture. Defaults are the paper's: CLIP RN50's text tower (63.7 M parameters, 25.3 M
    of them the token table) + 1.05 M for `proj`."""

    vocab_size: int = 49408  # the tokenizer's: 2 x 256 byte symbols + 48894 merges + 2 specials
    context_length: int = 77
    width: int = 512
    layers: int = 12
    heads: int = 8
    clip_dim: int = 1024  # text_projection's output: CLIP RN50's joint width
    embed_dim: int = 1024  # C, the SemanticAC joint width that `proj` maps to
    vocab_path: str | None = None  # the tokenizer's merges file; None finds it in open_clip / clip

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}: pick a divisor")
        if self.context_length < 2:
            raise ValueError(f"context_length {self.context_length} must be >= 2 (start and end tokens)")

    @classmethod
    def small(cls) -> ClipTextConfig:
        """A CPU-sized tower (7.4 M parameters, 6.3 M of them the token table): 4 blocks of width 128.

        Same vocabulary, tokenizer and context, so prompts, export and the edge are unchanged.
        """
        return cls(width=128, layers=4, heads=4, clip_dim=256)


class QuickGELU(nn.Module):
    """CLIP's GELU approximation, x * sigmoid(1.702 x): the pretrained weights expect it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        # sequence-first, as OpenAI's; it also keeps PyTorch's fused inference path (which the
        # ONNX exporter cannot trace) out of the way
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(
            c_fc=nn.Linear(width, width * 4),
            gelu=QuickGELU(),
            c_proj=nn.Linear(width * 4, width),
        ))  # fmt: skip
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # x: (L, B, D)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]  # causal self-attention
        return x + self.mlp(self.ln_2(x))  # position-wise MLP


class Transformer(nn.Module):
    """The stack of blocks, named `resblocks` as in OpenAI's checkpoints."""

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # x: (L, B, D)
        for block in self.resblocks:
            x = block(x, mask)
        return x


class ClipTextTower(nn.Module):
    """input_ids (B, L) int64 -> (B, C). `forward(**tokenizer_output)` works as is."""

    def __init__(self, config: ClipTextConfig | None = None):
        super().__init__()
        self.config = cfg = config or ClipTextConfig()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, cfg.clip_dim))
        self.proj = nn.Linear(cfg.clip_dim, cfg.embed_dim)
        # token i may attend to tokens 0..i only: -inf above the diagonal (not saved: rebuilt)
        mask = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu(1)
        self.register_buffer("attn_mask", mask, persistent=False)
        self.out_dim = cfg.embed_dim
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """OpenAI's initialisation (CLIP.initialize_parameters), for training from scratch."""
        cfg = self.config
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        attn_std, proj_std, fc_std = cfg.width**-0.5, (cfg.width**-0.5) * (2 * cfg.layers) ** -0.5, (2 * cfg.width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=cfg.width**-0.5)

    def make_tokenizer(self) -> ClipBpeTokenizer:
        """The edge tokenizer that produces this tower's `input_ids`."""
        path = Path(self.config.vocab_path) if self.config.vocab_path else None
        return ClipBpeTokenizer(path, context_length=self.config.context_length)

    def forward_features(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, clip_dim): CLIP's own text embedding, before our projection."""
        if not _building_graph():  # eager only: an exported graph keeps the full length
            # cut after the last end-of-text token: causal attention makes the rest irrelevant
            input_ids = input_ids[:, : int(input_ids.argmax(dim=-1).max()) + 1]
        length = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.positional_embedding[:length]  # (B, L, D)
        x = self.transformer(x.transpose(0, 1), self.attn_mask[:length, :length]).transpose(0, 1)  # blocks, (B, L, D)
        x = self.ln_final(x)
        # pool at the end-of-text token, the largest id (49407) in every row, as CLIP does;
        # argmax on float ids: older ONNX Runtime builds and TensorRT have no int64 ArgMax, and
        # every id (< 2**24) is exact in float32
        eot = input_ids.to(torch.float32).argmax(dim=-1)  # (B,)
        x = torch.gather(x, 1, eot[:, None, None].expand(-1, 1, x.shape[-1])).squeeze(1)  # (B, D)
        return x @ self.text_projection  # (B, clip_dim)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.forward_features(input_ids))  # to the joint width: (B, C)
