"""Tokenizers for the text towers: prompts -> the int64 arrays that `text.onnx` takes.

The device embeds new labels itself, so the tokenizers live here, in pure Python (no torch).
A bundle's `tokenizer/` folder holds the vocabulary file and a small `config.json`:

    {"format_version": 1, "kind": "clip_bpe",              # or "wordpiece"
     "vocab": "bpe_simple_vocab_16e6.txt.gz",              # a file in the same folder
     "vocab_sha256": "...", "context_length": 77}          # + the kind's own settings

`save_tokenizer(folder, tokenizer)` writes it (export does), `load_tokenizer(folder)` reads it
back. Every tokenizer is called on a list of texts and returns a dict of int64 arrays keyed by
the text graph's input names: `input_ids` [N, L] (+ `attention_mask` [N, L] for wordpiece).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edge.fsutil import atomic_write_text, sha256_file
from edge.labels.tokenizers.base import TokenizerError
from edge.labels.tokenizers.clip_bpe import ClipBpeTokenizer, find_clip_vocab
from edge.labels.tokenizers.wordpiece import WordPieceTokenizer

Tokenizer = ClipBpeTokenizer | WordPieceTokenizer
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
# kind -> (class, the settings config.json may carry with their types)
KINDS: dict[str, tuple[type, dict[str, type]]] = {
    "clip_bpe": (ClipBpeTokenizer, {"context_length": int}),
    "wordpiece": (WordPieceTokenizer, {"context_length": int, "lowercase": bool}),
}
COMMON_KEYS = {"format_version": int, "kind": str, "vocab": str, "vocab_sha256": str}


def save_tokenizer(directory: str | Path, tokenizer: Tokenizer) -> Path:
    """Copy the tokenizer's vocabulary into `directory` and describe it in config.json."""
    directory = Path(directory)
    if tokenizer.kind not in KINDS:
        raise TokenizerError(f"cannot save a tokenizer of kind {tokenizer.kind!r}: valid kinds are {sorted(KINDS)}")
    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / tokenizer.vocab_path.name
    if not (vocab.exists() and vocab.samefile(tokenizer.vocab_path)):
        shutil.copyfile(tokenizer.vocab_path, vocab)
    config = {
        "format_version": FORMAT_VERSION,
        "kind": tokenizer.kind,
        "vocab": vocab.name,
        "vocab_sha256": sha256_file(vocab),
        **tokenizer.settings(),
    }
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return directory


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """The tokenizer described by `directory/config.json` (a bundle's `tokenizer/` folder)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise TokenizerError(
            f"no tokenizer config at {path}: point at a bundle's tokenizer/ folder, "
            "or write one with edge.labels.tokenizers.save_tokenizer (semanticac-train export does)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TokenizerError(f"{path} is not valid JSON ({err}): re-export the bundle") from err
    cls, settings = _check_config(config, path)
    vocab = path.parent / config["vocab"]
    if not vocab.is_file():
        raise TokenizerError(f"{path} names the vocabulary {config['vocab']!r}, but {vocab} does not exist: re-export the bundle")
    if "vocab_sha256" in config and sha256_file(vocab) != config["vocab_sha256"]:
        raise TokenizerError(f"{vocab} does not match the sha256 in {path}: the file was changed; re-export the bundle")
    return cls(vocab, **settings)


def _check_config(config: object, path: Path) -> tuple[type, dict]:
    """The tokenizer class and its settings; every missing, unknown or mistyped key is an error."""
    if not isinstance(config, dict):
        raise TokenizerError(f"{path} must hold a JSON object, got {type(config).__name__}")
    if config.get("format_version") != FORMAT_VERSION:
        raise TokenizerError(
            f"{path}: format_version={config.get('format_version')!r}, this version reads {FORMAT_VERSION}: "
            "re-export the bundle with a matching semanticac-train"
        )
    kind = config.get("kind")
    if kind not in KINDS:
        raise TokenizerError(f"{path}: kind={kind!r} is unknown; valid kinds are {sorted(KINDS)}")
    cls, settings = KINDS[kind]
    allowed = {**COMMON_KEYS, **settings}
    for key, value in config.items():
        if key not in allowed:
            raise TokenizerError(f"{path}: unknown key {key!r} for kind {kind!r}; allowed keys are {sorted(allowed)}")
        if not isinstance(value, allowed[key]) or (allowed[key] is int and isinstance(value, bool)):
            raise TokenizerError(f"{path}: {key}={value!r} must be of type {allowed[key].__name__}")
    if "vocab" not in config:
        raise TokenizerError(f"{path}: the key 'vocab' (the vocabulary file's name in {path.parent}) is missing")
    return cls, {key: config[key] for key in settings if key in config}


__all__ = [
    "ClipBpeTokenizer",
    "KINDS",
    "Tokenizer",
    "TokenizerError",
    "WordPieceTokenizer",
    "find_clip_vocab",
    "load_tokenizer",
    "save_tokenizer",
]
