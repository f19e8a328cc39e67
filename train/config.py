"""Config schema: dataclasses hold the fields, commented YAML files hold the values.

Only builders read configs. `from_dict` fills a dataclass from plain data (YAML, a
checkpoint) and fails on an unknown key or a wrong type, naming the key and the file.

    configs/model/paper.yaml   the paper's SemanticAC (HTS-AT + CSCM + CLIP text, C = 1024)
    configs/model/small.yaml   same code, CPU-sized (small HTS-AT + CSCM + pretrained MiniLM)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from edge.features import Frontend
from train.model.htsat import HTSATConfig
from train.model.yamnet import YAMNetConfig

TEXT_KINDS = ("clip", "minilm")
AUDIO_CONFIGS = {"htsat": HTSATConfig, "yamnet": YAMNetConfig}


class ConfigError(ValueError):
    """A config file or mapping that does not fit its schema."""


def _check(value, hint, where: str):
    """`value` converted to the type `hint`, or ConfigError naming `where`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        inner = args[0] if args else typing.Any
        return tuple(_check(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if hint is typing.Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def from_dict(cls, data, where: str = "config"):
    """An instance of dataclass `cls` from a mapping; unknown keys and wrong types fail."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [key for key in data if key not in names]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(names)}")
    values = {key: _check(value, hints[key], f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def to_dict(config) -> dict:
    """Plain data (lists, not tuples) that from_dict reads back and YAML/JSON can hold."""
    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


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
            raise ConfigError(f"the audio tower reads {audio.num_frames} frames x {audio.n_mels} mels "
                              f"but the frontend makes {self.frontend.frames} x {self.frontend.n_mels}: make them agree")
        if "kind" not in self.head:
            raise ConfigError("head needs a 'kind': cscm, seq_transf, seq_lstm, mean or onehot")
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


def read_config_yaml(path: str | Path, folder: str, what: str, chain: tuple[Path, ...] = ()) -> tuple[Path, dict]:
    """(path, mapping) of a config YAML; a bare name looks in the shipped configs/<folder>/.

    `extends: BASE` (a name, or a file beside this one) starts from BASE's mapping and puts this
    file's keys over it: a mapping over a mapping merges key by key (optim, augment, frontend,
    ...) unless it names another `kind` (a new head's options replace the old head's); anything
    else replaces (a `data` list is replaced whole).
    """
    path = Path(path)
    if not path.is_file() and len(path.parts) == 1:
        shipped = Path(str(resources.files("edge.configs") / folder / path.with_suffix(".yaml").name))
        path = shipped if shipped.is_file() else path
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict) or "extends" not in data:
        return path, data or {}
    if path.resolve() in chain:
        raise ConfigError(f"{path}: extends {data['extends']!r} makes a loop: "
                          f"{' -> '.join(str(p) for p in chain + (path,))}")
    base = Path(str(data.pop("extends")))
    beside = path.parent / base.with_suffix(".yaml")
    _, merged = read_config_yaml(beside if beside.is_file() else base, folder, what, chain + (path.resolve(),))
    for key, value in data.items():
        old = merged.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and value.get("kind", old.get("kind")) == old.get("kind"):
            value = {**old, **value}
        merged[key] = value
    return path, merged


def load_model_config(path: str | Path) -> ModelConfig:
    """A model config YAML (configs/model/*.yaml, or a bare name: paper, small, yamnet)."""
    path, data = read_config_yaml(path, "model", "model config")
    return from_dict(ModelConfig, data, where=str(path))
