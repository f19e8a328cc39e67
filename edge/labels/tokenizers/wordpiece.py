"""BERT's uncased WordPiece tokenizer in pure Python (no torch), for all-MiniLM-L6-v2.

    text -> drop control characters, whitespace -> " ", spaces around CJK ideographs
         -> strip accents (NFD, drop combining marks) and lower case, character by character
         -> split on whitespace and around every punctuation character
         -> each word: greedy longest match against the vocabulary, "##" marking a continuation;
            a word with no full match (or over 100 characters) becomes [UNK]
    ids  -> [CLS] ... [SEP], cut to fit, [PAD]=0 to `context_length`; attention_mask 1 on real tokens

It follows the `tokenizers` BertNormalizer/BertPreTokenizer/WordPiece that the model ships in
tokenizer.json (sentence-transformers uses that fast tokenizer), so the ids are the same.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edge.labels.tokenizers.base import TokenizerError, as_text_list

CONTEXT_LENGTH = 128  # what the model's tokenizer.json pads and truncates to
MAX_CHARS_PER_WORD = 100  # longer "words" are [UNK] outright, as in BERT
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
# CJK Unified Ideographs blocks (not Hangul, Hiragana or Katakana, which BERT keeps as words)
CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # fmt: skip


def read_vocab(path: str | Path) -> dict[str, int]:
    """vocab.txt (one token per line, id = line number) or a tokenizer.json's WordPiece vocab."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(
            f"WordPiece vocabulary {path} does not exist: pass the model's vocab.txt or tokenizer.json"
        )
    if path.suffix == ".json":
        model = json.loads(path.read_text(encoding="utf-8")).get("model", {})
        if model.get("type") != "WordPiece":
            raise TokenizerError(
                f"{path} holds a {model.get('type')!r} model, not 'WordPiece': pass a BERT tokenizer.json"
            )
        return dict(model["vocab"])
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the trailing newline is not a token
    return {token: i for i, token in enumerate(lines)}


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) in ("Zs", "Zl", "Zp")


def _is_punctuation(ch: str) -> bool:
    # every ASCII non-alphanumeric symbol counts ("$", "^", "`" are not Unicode P*), then P*
    if ch.isascii() and ch.isprintable() and not ch.isalnum() and ch != " ":
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


class WordPieceTokenizer:
    """Text -> BERT ids and attention mask, as int64 numpy arrays named like the ONNX inputs."""

    kind = "wordpiece"
    input_names = ("input_ids", "attention_mask")

    def __init__(self, vocab_path: str | Path, context_length: int = CONTEXT_LENGTH, lowercase: bool = True):
        if context_length < 2:
            raise TokenizerError(f"context_length={context_length}: it must be >= 2 ([CLS] and [SEP])")
        self.vocab_path = Path(vocab_path)
        self.context_length = context_length
        self.lowercase = lowercase  # uncased BERT: also strips accents
        self.vocab = read_vocab(self.vocab_path)
        missing = [token for token in SPECIALS if token not in self.vocab]
        if missing:
            raise TokenizerError(f"{self.vocab_path} lacks the special tokens {missing}: it is not a BERT vocabulary")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id = (self.vocab[t] for t in SPECIALS)

    def settings(self) -> dict:
        """What `save_tokenizer` writes next to the vocab file to rebuild this tokenizer."""
        return {"context_length": self.context_length, "lowercase": self.lowercase}

    def normalize(self, text: str) -> str:
        """Clean, isolate CJK ideographs, then (uncased) strip accents and lower-case."""
        out = []
        for ch in text:
            if ch in ("\x00", "\ufffd") or _is_control(ch):
                continue
            out.append(" " if _is_whitespace(ch) else f" {ch} " if _is_cjk(ch) else ch)
        text = "".join(out)
        if self.lowercase:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
            text = "".join(c.lower() for c in text)  # per character, as the Rust normalizer does
        return text

    @staticmethod
    def split_words(text: str) -> list[str]:
        """Whitespace-separated words, each punctuation character a word of its own."""
        words = []
        for chunk in text.split():
            start = 0
            for i, ch in enumerate(chunk):
                if _is_punctuation(ch):
                    words += [chunk[start:i], ch] if i > start else [ch]
                    start = i + 1
            if start < len(chunk):
                words.append(chunk[start:])
        return words

    def wordpiece(self, word: str) -> list[int]:
        """Greedy longest-match pieces of one word; any unmatched rest makes the whole word [UNK]."""
        if len(word) > MAX_CHARS_PER_WORD:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    start = end
                    break
            else:
                return [self.unk_id]
        return ids

    def encode(self, text: str) -> list[int]:
        """One text -> its WordPiece ids, without [CLS]/[SEP]."""
        return [i for word in self.split_words(self.normalize(text)) for i in self.wordpiece(word)]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text (for logs and tests); specials dropped, "##" pieces glued back."""
        tokens = {i: t for t, i in self.vocab.items()}
        specials = {self.pad_id, self.cls_id, self.sep_id}
        return " ".join(tokens[int(i)] for i in ids if int(i) not in specials).replace(" ##", "")

    def encode_batch(self, texts: Iterable[str], context_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Texts -> (input_ids, attention_mask), int64 [N, context_length], right-padded with [PAD]."""
        length = context_length or self.context_length
        texts = as_text_list(texts)
        ids = np.full((len(texts), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self.cls_id, *self.encode(text)[: length - 2], self.sep_id]  # cut before the specials
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return ids, mask

    def __call__(self, texts: Iterable[str]) -> dict[str, np.ndarray]:
        input_ids, attention_mask = self.encode_batch(texts)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def __repr__(self) -> str:
        return f"WordPieceTokenizer(vocab_path='{self.vocab_path}', context_length={self.context_length})"
