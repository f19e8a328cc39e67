"""ModelConfig: the schema of configs/model/*.yaml, read by `build_model` and nothing else.

    configs/model/paper.yaml    the paper's SemanticAC (HTS-AT + CSCM + CLIP text, C = 1024)
    configs/model/small.yaml    same code, CPU-sized (small HTS-AT + CSCM + pretrained MiniLM)
    configs/model/yamnet*.yaml  the AudioSet-pretrained YAMNet audio tower, with each head

`audio`, `head` and `text` are a `kind` plus that kind's options; each kind's own dataclass
(HTSATConfig, YAMNetConfig, the head and text-tower configs) checks its options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge.features import Frontend
from train.config import ConfigError, from_dict, read_config_yaml
from train.model.heads import HEAD_KINDS
from train.model.htsat import HTSATConfig
from train.model.yamnet import YAMNetConfig

TEXT_KINDS = ("clip", "minilm")
AUDIO_CONFIGS = {"htsat": HTSATConfig, "yamnet": YAMNetConfig}


@dataclass
class ModelConfig:
    """SemanticAC: audio tower (HTS-AT) -> head (CSCM or a comparison) -> C; text tower -> C."""

    name: str = "semanticac"
    embed_dim: int = 1024  # C, the joint audio-text width (paper: 1024)
    frontend: Frontend = field(default_factory=Frontend)  # the log-mel the audio tower reads
    # kind (htsat: the paper's HTS-AT; yamnet: AudioSet-pretrained YAMNet) + that kind's options
    audio: dict = field(default_factory=lambda: {"kind": "htsat"})
    head: dict = field(default_factory=lambda: {"kind": "cscm"})  # kind + that kind's options
    text: dict = field(default_factory=lambda: {"kind": "clip"})  # kind (clip|minilm) + options
    logit_scale: float = 1 / 0.07  # initial multiplier of the cosine similarities (CLIP's)
    num_classes: int | None = None  # only for the one-hot baseline head

    def __post_init__(self):
        audio = self.audio_config  # checks the kind and its options
        if (audio.num_frames, audio.n_mels) != (self.frontend.frames, self.frontend.n_mels):
            raise ConfigError(f"the audio tower reads {audio.num_frames} frames x {audio.n_mels} mels but the "
                              f"frontend makes {self.frontend.frames} x {self.frontend.n_mels}: make them agree")
        if "kind" not in self.head:
            raise ConfigError(f"head needs a 'kind': {', '.join(HEAD_KINDS)}")
        if self.head["kind"] != "onehot" and self.text.get("kind") not in TEXT_KINDS:
            raise ConfigError(f"text.kind {self.text.get('kind')!r} is not one of {', '.join(TEXT_KINDS)}")

    @property
    def audio_config(self) -> HTSATConfig | YAMNetConfig:
        """The audio tower's own config dataclass, from `audio` (kind defaults to htsat)."""
        kind = self.audio.get("kind", "htsat")
        if kind not in AUDIO_CONFIGS:
            raise ConfigError(f"audio.kind {kind!r} is not one of {', '.join(AUDIO_CONFIGS)}")
        options = {key: value for key, value in self.audio.items() if key != "kind"}
        return from_dict(AUDIO_CONFIGS[kind], options, where=f"audio ({kind})")


def load_model_config(path: str | Path) -> ModelConfig:
    """A model config YAML (configs/model/*.yaml, or a bare name: paper, small, yamnet)."""
    path, data = read_config_yaml(path, "model", "model config")
    return from_dict(ModelConfig, data, where=str(path))
