"""SemanticAC: two towers and a similarity, as in the paper's Fig. 2.

    log-mel [B, 1, T, F] -> HTS-AT -> map (B, D, 8, 8) -> head (CSCM) -> A (B, C) -> L2 norm
    prompts "an audio clip of {label}" -> tokenizer -> text tower -> T (K, C)  -> L2 norm
    logits = logit_scale * A @ T.T                              (cosine similarity, Eq. 2)

The one-hot baseline of Table 3 has no text tower: its head classifies the pooled tokens
directly, and `forward` returns those class logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.config import from_dict
from train.model.config import ModelConfig
from train.model.heads import build_head
from train.model.htsat import HTSATConfig, build_htsat
from train.model.loss import LogitScale
from train.model.text_clip import ClipTextConfig, ClipTextTower
from train.model.text_minilm import MiniLMTextConfig, MiniLMTextTower
from train.model.yamnet import build_yamnet

TEXT_TOWERS = {"clip": (ClipTextConfig, ClipTextTower), "minilm": (MiniLMTextConfig, MiniLMTextTower)}


class SemanticAC(nn.Module):
    def __init__(self, audio: nn.Module, head: nn.Module, text: nn.Module | None, logit_scale: float):
        super().__init__()
        self.audio = audio
        self.head = head
        self.text = text
        self.logit_scale = LogitScale(init=logit_scale)

    @property
    def text_assisted(self) -> bool:
        return self.text is not None

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, 1, T, F] -> unit-length audio embeddings [B, C]."""
        return F.normalize(self.head(self.audio(mel)), dim=-1)

    def encode_text(self, **tokens: torch.Tensor) -> torch.Tensor:
        """Tokenizer output (input_ids [+ attention_mask], [K, L]) -> unit-length [K, C]."""
        return F.normalize(self.text(**tokens), dim=-1)

    def forward(self, mel: torch.Tensor, **tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, K] of each clip against each prompt (the one-hot baseline: its classes)."""
        if not self.text_assisted:
            return self.head(self.audio(mel))
        return self.logit_scale() * self.encode_audio(mel) @ self.encode_text(**tokens).T


def build_text_tower(text: dict, embed_dim: int) -> nn.Module:
    """The text tower `text['kind']` with that kind's options, projecting to `embed_dim`."""
    options = {key: value for key, value in text.items() if key != "kind"}
    config_cls, tower_cls = TEXT_TOWERS[text["kind"]]
    return tower_cls(from_dict(config_cls, {**options, "embed_dim": embed_dim}, where="text"))


def build_model(config: ModelConfig) -> SemanticAC:
    """SemanticAC as `config` describes it: fresh weights, except the pretrained towers that
    ship with their package (MiniLM text; YAMNet audio with `pretrained: true`)."""
    audio_config = config.audio_config
    audio = build_htsat(audio_config) if isinstance(audio_config, HTSATConfig) else build_yamnet(audio_config)
    head_options = {key: value for key, value in config.head.items() if key != "kind"}
    head = build_head(config.head["kind"], audio_config.num_features, config.embed_dim, config.num_classes,
                      **head_options)
    text = None if config.head["kind"] == "onehot" else build_text_tower(config.text, config.embed_dim)
    return SemanticAC(audio, head, text, config.logit_scale)
