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
from edge.schema import Fields, read_json

Tokenizer = ClipBpeTokenizer | WordPieceTokenizer
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
# kind -> (class, the settings config.json may carry with their types)
KINDS: dict[str, tuple[type, dict[str, type]]] = {
    "clip_bpe": (ClipBpeTokenizer, {"context_length": int}),
    "wordpiece": (WordPieceTokenizer, {"context_length": int, "lowercase": bool}),
}
COMMON_KEYS = {"format_version": int, "kind": str, "vocab": str, "vocab_sha256": str}
REEXPORT = "re-export the bundle with `semanticac-train export`"


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
    cls, settings = _check_config(read_json(path, TokenizerError, REEXPORT), path)
    vocab = path.parent / settings.pop("vocab")
    if not vocab.is_file():
        raise TokenizerError(f"{path} names the vocabulary {vocab.name!r}, but {vocab} does not exist: {REEXPORT}")
    expected = settings.pop("vocab_sha256", None)
    if expected is not None and sha256_file(vocab) != expected:
        raise TokenizerError(f"{vocab} does not match the sha256 in {path}: the file was changed; {REEXPORT}")
    return cls(vocab, **settings)


def _check_config(config: object, path: Path) -> tuple[type, dict]:
    """The tokenizer class and its settings (plus `vocab`, `vocab_sha256`); every missing,
    unknown or mistyped key is an error naming it (edge.schema)."""
    fields = Fields(config, str(path), TokenizerError, fix=REEXPORT)
    fields.version(FORMAT_VERSION, newer_fix="upgrade semanticac-edge", older_fix=REEXPORT)
    kind = fields.choice("kind", sorted(KINDS))
    cls, settings = KINDS[kind]
    allowed = {**COMMON_KEYS, **settings}
    fields.unknown(allowed, context=f"for kind {kind!r}")
    checked = {key: fields.get(key, allowed[key], f"of type {allowed[key].__name__}") for key in fields.data}
    fields.text("vocab", f"the vocabulary file's name in {path.parent}")
    return cls, {key: value for key, value in checked.items() if key in settings or key in ("vocab", "vocab_sha256")}


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
