"""Label embeddings computed on the device, with the bundle's tokenizer and text.onnx.

This is what makes a new label a YAML edit: when neither the bundle nor the user cache holds
embeddings that match the label set (edge.label_embeddings), they are computed here, without
torch, and cached for the next start.
"""

from __future__ import annotations

import logging

import numpy as np

from edge.bundle import Bundle
from edge.errors import LabelEmbeddingsError
from edge.label_embeddings import LabelEmbeddings, cache_dir, find_label_embeddings
from edge.labels import LabelSet

log = logging.getLogger(__name__)

PROMPT_BATCH = 32


def compute_label_embeddings(bundle: Bundle, label_set: LabelSet, threads: int | None = None) -> LabelEmbeddings:
    """Tokenize every prompt of `label_set` and embed it with the bundle's text graph."""
    from edge.backends import select_backend
    from edge.tokenizers import load_tokenizer

    if bundle.meta.text is None:
        raise LabelEmbeddingsError(
            f"bundle {bundle.path} has no text tower (text.onnx), so label set {label_set.name!r} cannot be embedded "
            f"on this device: run `semanticac-train embed-labels --bundle {bundle.path} --labels {label_set.source}` "
            "where the training stack is installed, and copy the .npz into the bundle's labels/ folder")
    tokenizer = load_tokenizer(bundle.tokenizer_dir)
    prompts, _ = label_set.flat_prompts()
    with select_backend(bundle, "onnxruntime", graph="text", threads=threads) as backend:
        output = backend.output_names[0]
        parts = [backend.run(tokenizer(prompts[i:i + PROMPT_BATCH]))[output] for i in range(0, len(prompts), PROMPT_BATCH)]
    return LabelEmbeddings.from_prompt_embeddings(label_set, np.concatenate(parts), bundle.meta.model_id)


def label_embeddings_for(bundle: Bundle, label_set: LabelSet, threads: int | None = None) -> LabelEmbeddings:
    """Matching embeddings from the bundle or the cache; else computed here and cached."""
    try:
        return find_label_embeddings(bundle, label_set)
    except LabelEmbeddingsError as err:
        if bundle.meta.text is None:
            raise LabelEmbeddingsError(f"{err} (this bundle has no text.onnx to compute them on the device)") from None
        log.info("label set %r: %s", label_set.name, err)
    log.info("embedding %d prompts of label set %r with %s", len(label_set.flat_prompts()[0]), label_set.name,
             bundle.meta.text.file)
    embeddings = compute_label_embeddings(bundle, label_set, threads)
    target = cache_dir(bundle.meta.model_id) / f"{label_set.name}.npz"
    try:
        embeddings.save(target)
        log.info("cached label embeddings in %s", target)
    except OSError as err:  # a read-only home: use them now, compute again next time
        log.warning("could not cache label embeddings in %s (%s): they will be computed at each start", target, err)
    return embeddings
