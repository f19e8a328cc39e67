"""What every tokenizer shares: its error and the check of its input."""

from __future__ import annotations

from collections.abc import Iterable

from edge.errors import SemanticACError


class TokenizerError(SemanticACError):
    """A tokenizer that cannot be built: missing or wrong vocabulary, bad config, bad input."""


def as_text_list(texts: Iterable[str]) -> list[str]:
    """A list of str, refusing a bare string (which would tokenize character by character)."""
    if isinstance(texts, str):
        raise TokenizerError(f"texts={texts!r} is one string: pass a list of strings, e.g. [{texts!r}]")
    texts = list(texts)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise TokenizerError(f"texts must all be str, got {type(bad[0]).__name__} {bad[0]!r}")
    return texts
