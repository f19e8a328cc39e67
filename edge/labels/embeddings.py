"""Label embeddings: a label set turned into a fixed [K, C] matrix, once per set and model.

File format (`labels/<name>.npz`, plain arrays, no pickled objects):
    labels         str [K]       label names, in the label set's order
    prompts        str [P]       every prompt text, flat
    prompt_label   int64 [P]     which label each prompt belongs to
    embeddings     float32 [K, C] per label: mean of its prompts' normalised embeddings, normalised
    labels_sha256  str []        LabelSet.sha256 (names and prompts only)
    model_id       str []        the bundle's model_id (the text tower that embedded them)

Lookup for `listen --labels X`: <bundle>/labels/<name>.npz, then the user cache
($XDG_CACHE_HOME/semanticac-edge/<model_id>/<name>.npz), each used only when its
`model_id` and `labels_sha256` match the bundle and the label set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.bundle import Bundle
from edge.errors import LabelEmbeddingsError
from edge.fsutil import atomic_path, cache_dir
from edge.labels.labelset import LabelSet

log = logging.getLogger(__name__)

PROMPT_BATCH = 32
ARRAYS = ("labels", "prompts", "prompt_label", "embeddings", "labels_sha256", "model_id")


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


@dataclass(frozen=True)
class LabelEmbeddings:
    labels: tuple[str, ...]
    prompts: tuple[str, ...]
    prompt_label: np.ndarray  # int64 [P]
    embeddings: np.ndarray  # float32 [K, C], rows of unit length
    labels_sha256: str
    model_id: str

    @classmethod
    def from_prompt_embeddings(cls, label_set: LabelSet, prompt_embeddings: np.ndarray,
                               model_id: str) -> "LabelEmbeddings":
        """Average each label's prompt embeddings (after normalising each) and normalise again."""
        prompts, owner = label_set.flat_prompts()
        prompt_embeddings = np.asarray(prompt_embeddings, dtype=np.float32)
        if prompt_embeddings.ndim != 2 or prompt_embeddings.shape[0] != len(prompts):
            raise LabelEmbeddingsError(f"expected one embedding per prompt ({len(prompts)} x C), "
                                       f"got shape {prompt_embeddings.shape}")
        owner = np.asarray(owner, dtype=np.int64)
        unit = _normalise(prompt_embeddings)
        sums = np.zeros((len(label_set.labels), unit.shape[1]), dtype=np.float32)
        np.add.at(sums, owner, unit)
        return cls(labels=tuple(label_set.names), prompts=tuple(prompts), prompt_label=owner,
                   embeddings=_normalise(sums).astype(np.float32), labels_sha256=label_set.sha256,
                   model_id=model_id)

    def save(self, path: str | Path) -> Path:
        """Write the .npz atomically (a reader never sees half a file)."""
        path = Path(path)
        arrays = dict(labels=np.array(self.labels, dtype=str), prompts=np.array(self.prompts, dtype=str),
                      prompt_label=self.prompt_label.astype(np.int64),
                      embeddings=self.embeddings.astype(np.float32),
                      labels_sha256=np.array(self.labels_sha256), model_id=np.array(self.model_id))
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LabelEmbeddings":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [name for name in ARRAYS if name not in data.files]
                if missing:
                    raise LabelEmbeddingsError(f"label embeddings {path}: missing array(s) {missing}")
                arrays = {name: data[name] for name in ARRAYS}
        except LabelEmbeddingsError:
            raise
        except (OSError, ValueError, EOFError) as err:
            raise LabelEmbeddingsError(f"cannot read label embeddings {path}: {err}; delete it and "
                                       "compute it again") from None
        emb = arrays["embeddings"]
        k, p = arrays["labels"].shape[0], arrays["prompts"].shape[0]
        if emb.ndim != 2 or emb.shape[0] != k or emb.dtype != np.float32 or arrays["prompt_label"].shape != (p,):
            raise LabelEmbeddingsError(f"label embeddings {path}: inconsistent shapes (labels {k}, prompts {p}, "
                                       f"embeddings {emb.shape} {emb.dtype}, prompt_label "
                                       f"{arrays['prompt_label'].shape}); delete it and compute it again")
        return cls(labels=tuple(str(s) for s in arrays["labels"]), prompts=tuple(str(s) for s in arrays["prompts"]),
                   prompt_label=arrays["prompt_label"].astype(np.int64), embeddings=emb,
                   labels_sha256=str(arrays["labels_sha256"]), model_id=str(arrays["model_id"]))

    def mismatch(self, label_set: LabelSet, model_id: str) -> str | None:
        """Why these embeddings cannot serve `label_set` with model `model_id` (None: they can)."""
        if self.model_id != model_id:
            return f"computed by model {self.model_id!r}, the bundle is {model_id!r}"
        if self.labels_sha256 != label_set.sha256:
            return "stale: the label names or prompts changed since they were computed"
        return None




def candidate_paths(bundle: Bundle, label_set: LabelSet) -> list[Path]:
    name = f"{label_set.name}.npz"
    return [bundle.labels_dir / name, cache_dir(bundle.meta.model_id) / name]


def find_label_embeddings(bundle: Bundle, label_set: LabelSet) -> LabelEmbeddings:
    """The first matching embeddings for `label_set` in the bundle, then the user cache.

    LabelEmbeddingsError lists every place looked at, why each was refused, and the fix.
    """
    reasons = []
    for path in candidate_paths(bundle, label_set):
        if not path.is_file():
            reasons.append(f"{path}: not there")
            continue
        try:
            found = LabelEmbeddings.load(path)
        except LabelEmbeddingsError as err:
            reasons.append(str(err))
            continue
        why = found.mismatch(label_set, bundle.meta.model_id)
        if why is None:
            return found
        reasons.append(f"{path}: {why}")
    raise LabelEmbeddingsError(
        f"no usable embeddings for label set {label_set.name!r} ({label_set.source}): " + "; ".join(reasons)
        + f"; compute them with `semanticac-train embed-labels --bundle {bundle.path} --labels {label_set.source}`"
    )



def compute_label_embeddings(bundle: Bundle, label_set: LabelSet, threads: int | None = None) -> LabelEmbeddings:
    """Tokenize every prompt of `label_set` and embed it with the bundle's text graph."""
    from edge.backends import select_backend
    from edge.labels.tokenizers import load_tokenizer

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
