"""CLIP's byte-level BPE tokenizer in pure Python (no torch), as OpenAI's `clip/simple_tokenizer.py`.

    text -> ftfy + html.unescape twice -> collapse whitespace -> lower case
         -> split with CLIP's regex -> UTF-8 bytes as printable characters -> BPE merges -> ids
    ids  -> [<|startoftext|>, ..., <|endoftext|>] zero-padded to 77; over-long text is cut and
            its last kept position becomes <|endoftext|> (the text tower pools at that token)

The merges file `bpe_simple_vocab_16e6.txt.gz` ships inside the `open_clip_torch`, `clip` and
`clip-anytorch` packages; `find_clip_vocab()` finds it there without importing them (each of
them needs torch). A bundle carries its own copy in `tokenizer/`, so a device needs none.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

from edge.labels.tokenizers.base import TokenizerError, as_text_list

try:  # both are pure-Python-installable on aarch64; reported when a tokenizer is built
    import ftfy
    import regex
except ImportError as err:  # pragma: no cover - exercised only on a broken install
    # the optional-import idiom: the names stay bound (None); a tokenizer refuses to build first
    ftfy = regex = None  # type: ignore[assignment]
    _IMPORT_ERROR: ImportError | None = err
else:
    _IMPORT_ERROR = None

VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_PACKAGES = {"open_clip": "open_clip_torch", "clip": "clip or clip-anytorch"}  # import name -> pip name
CONTEXT_LENGTH = 77
START, END = "<|startoftext|>", "<|endoftext|>"
N_MERGES = 49152 - 256 - 2  # CLIP's vocab: 256 bytes x2 (mid/end of word) + merges + 2 specials = 49408
# CLIP's word splitter: specials, English contractions, letter runs, single digits, symbol runs.
PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def find_clip_vocab() -> Path:
    """The merges file inside an installed open_clip / clip package, found without importing it."""
    looked = []
    for module in VOCAB_PACKAGES:
        try:
            spec = importlib.util.find_spec(module)  # a top-level name: located, not executed
        except (ImportError, ValueError):  # a broken or half-imported package: look elsewhere
            spec = None
        for folder in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(folder) / VOCAB_NAME
            if candidate.is_file():
                return candidate
            looked.append(str(candidate))
    raise TokenizerError(
        f"CLIP's BPE vocabulary {VOCAB_NAME} was not found"
        f" (looked in the packages {', '.join(VOCAB_PACKAGES)}: {', '.join(looked) or 'none installed'}). "
        "Install a package that ships it without its dependencies: `pip install --no-deps open_clip_torch`, "
        "or pass the file's path (vocab_path=...)."
    )


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """Each of the 256 byte values as a printable character, so BPE never sees whitespace or controls."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    chars = printable + [256 + n for n in range(len(others))]  # the rest moves past 255, in order
    return {byte: chr(c) for byte, c in zip(printable + others, chars)}


def basic_clean(text: str) -> str:
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))  # twice: "&amp;lt;" is "<" too
    return text.strip()


def whitespace_clean(text: str) -> str:
    return regex.sub(r"\s+", " ", text).strip()


class ClipBpeTokenizer:
    """Text -> CLIP token ids, as int64 numpy arrays named like the text ONNX graph's inputs."""

    kind = "clip_bpe"
    input_names = ("input_ids",)

    def __init__(self, vocab_path: str | Path | None = None, context_length: int = CONTEXT_LENGTH):
        if _IMPORT_ERROR is not None:
            raise TokenizerError(
                f"the CLIP tokenizer needs the packages `regex` and `ftfy` ({_IMPORT_ERROR}): pip install regex ftfy"
            )
        if context_length < 2:
            raise TokenizerError(f"context_length={context_length}: it must be >= 2 (start and end tokens)")
        self.vocab_path = Path(vocab_path) if vocab_path is not None else find_clip_vocab()
        self.context_length = context_length
        merges = self._read_merges(self.vocab_path)
        # ids: 256 byte characters, the same ending a word ("</w>"), one per merge, then the specials
        symbols = list(bytes_to_unicode().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [START, END]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.bpe_ranks = {merge: rank for rank, merge in enumerate(merges)}
        self.start_id, self.end_id = self.encoder[START], self.encoder[END]
        self.byte_encoder = bytes_to_unicode()
        self.pattern = regex.compile(PATTERN, regex.IGNORECASE)
        self.cache = {START: START, END: END}

    @staticmethod
    def _read_merges(path: Path) -> list[tuple[str, str]]:
        if not path.is_file():
            raise TokenizerError(f"CLIP vocabulary file {path} does not exist: pass the path of {VOCAB_NAME}")
        try:
            lines = gzip.open(path).read().decode("utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as err:
            raise TokenizerError(f"{path} is not CLIP's gzipped merges file {VOCAB_NAME}: {err}") from err
        merges = [line.split() for line in lines[1 : N_MERGES + 1]]  # line 0 is a version header
        if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
            raise TokenizerError(f"{path} holds {len(merges)} usable merges, CLIP needs {N_MERGES}: wrong file")
        return [(first, second) for first, second in merges]

    def settings(self) -> dict:
        """What `save_tokenizer` writes next to the vocab file to rebuild this tokenizer."""
        return {"context_length": self.context_length}

    def bpe(self, token: str) -> list[str]:
        """Merge one word's characters, lowest-ranked pair first, until no known pair is left."""
        if token in self.cache:
            return self.cache[token].split(" ")
        word = (*token[:-1], token[-1] + "</w>")  # the last character carries the end-of-word mark
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if best not in self.bpe_ranks:
                break
            word = self._merge(word, best)
        self.cache[token] = " ".join(word)
        return list(word)

    @staticmethod
    def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
        merged, i = [], 0
        while i < len(word):
            if i < len(word) - 1 and (word[i], word[i + 1]) == pair:
                merged.append(word[i] + word[i + 1])
                i += 2
            else:
                merged.append(word[i])
                i += 1
        return tuple(merged)

    def encode(self, text: str) -> list[int]:
        """One text -> its BPE ids, without the start/end tokens."""
        text = whitespace_clean(basic_clean(text)).lower()
        ids: list[int] = []
        for word in self.pattern.findall(text):
            chars = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(chars))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text (for logs and tests); padding and the specials are dropped."""
        byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        text = "".join(self.decoder[int(i)] for i in ids if int(i) not in (0, self.start_id, self.end_id))
        raw = bytes(byte_decoder[c] for c in text).decode("utf-8", errors="replace")
        return raw.replace("</w>", " ").strip()

    def encode_batch(self, texts: Iterable[str], context_length: int | None = None) -> np.ndarray:
        """Texts -> int64 [N, context_length]: start, ids, end, zeros; over-long text keeps its end token."""
        length = context_length or self.context_length
        texts = as_text_list(texts)
        out = np.zeros((len(texts), length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.start_id, *self.encode(text), self.end_id][:length]
            ids[-1] = self.end_id  # a no-op unless the text was cut
            out[row, : len(ids)] = ids
        return out

    def __call__(self, texts: Iterable[str]) -> dict[str, np.ndarray]:
        return {"input_ids": self.encode_batch(texts)}

    def __repr__(self) -> str:
        return f"ClipBpeTokenizer(vocab_path='{self.vocab_path}', context_length={self.context_length})"
