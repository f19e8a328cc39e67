"""Label embeddings: a label set turned into a fixed [K, C] matrix, once per set and model.

File format (`labels/<name>.npz`, plain arrays, no pickled objects):
    labels         str [K]       label names, in the label set's order
    prompts        str [P]       every prompt text, flat
    prompt_label   int64 [P]     which label each prompt belongs to
    embeddings     float32 [K, C] per label: mean of its prompts' normalised embeddings, normalised
                   (float16 where a large fixed vocabulary is stored at half the bytes: read as float32)
    labels_sha256  str []        LabelSet.sha256 (names and prompts only)
    model_id       str []        the bundle's model_id (the text tower that embedded them)
    text_sha256    str []        the SHA-256 of the text graph that computed them (written since
                                 2026-12-06; "" or absent: not recorded, as in the sets `export` ships,
                                 which the full-precision graph computed)

Lookup for `listen --labels X` (`label_embeddings_for`, and `doctor`, `info` through `look_up`):
<bundle>/labels/<name>.npz, then the user cache ($XDG_CACHE_HOME/semanticac-edge/<model_id>/<name>.npz),
each used only when its `model_id` and `labels_sha256` match the bundle and the label set, and
its `text_sha256`, where recorded, the bundle's text.onnx (a cache file without one, computed before
it was recorded, or a set other than the shipped ones that an older edge wrote into the demo bundle,
is computed again where the bundle has a text graph: a text graph rewritten under
the same model_id, `semanticac-train exact-text`, embeds a little differently); else the edge
computes them with text.onnx and caches them. A corrupt or truncated CACHE file is computed
again (with a warning naming it) and rewritten atomically; a corrupt BUNDLE file is an error naming
it and the command that rebuilds it (`semanticac-edge embed-labels --bundle B --labels L`).
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import Bundle, shipped_bundle
from edge.errors import LabelEmbeddingsError, LabelSetError
from edge.fsutil import atomic_path, cache_dir, readable_fix, unwritable_reason
from edge.labels.labelset import LabelSet, label_text, shipped_label_sets

log = logging.getLogger(__name__)
# Embedding a new label set on the device takes a while (seconds per hundred prompts on a
# Jetson's CPU): say so on stderr even without -v. Records of a logger with its own level pass
# to the root handlers whatever the root's level, so these lines show at the CLI's default.
progress = logging.getLogger(f"{__name__}.progress")
progress.setLevel(logging.INFO)

# Each prompt is embedded on its own. The compact text graph quantises its activations with one
# scale per run (DynamicQuantizeLinear over the whole input), so a prompt embedded in a batch moved
# with its neighbours, by up to 0.016 in cosine (a label's blend of vocabulary classes changed when
# an unrelated label joined its set, and it could cross novelty_cosine). Every prompt is padded to
# the context length anyway: batches saved nothing (50 prompts on 2 cores: 0.78 s one at a time,
# 0.80 s in batches of 32), and one at a time is as near the full-precision graph (cosine 0.991).
LARGE_SET = 32  # prompts: embedding more says how far it got
PROGRESS_SECONDS = 1.0  # at most one progress line per second while a large set is embedded
INTO = ("auto", "bundle", "cache")  # where `embed-labels` writes
CACHE_FIX = "set $XDG_CACHE_HOME to a writable folder with room, or pass --into bundle with a bundle you may write"
RENAME = "give the site's set a `name:` of its own in its YAML (e.g. `name: my_site`)"
REDO = "; delete it and compute it again"  # the fix for a damaged file (the cache's: done on the way)
# What a damaged .npz raises inside np.load: a truncated zip, a bad member, a short read.
UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


class CorruptLabelEmbeddings(LabelEmbeddingsError):
    """A label-embeddings file that cannot be read back: truncated, not an .npz, inconsistent."""


def unreadable(path: Path) -> LabelEmbeddingsError:
    """A label-embeddings file (or its folder) this user may not read: not damaged, so never computed
    again over it; its folder's permissions are the fix."""
    return LabelEmbeddingsError(f"label embeddings {path} cannot be read by this user: {readable_fix(path.parent)}")


ARRAYS = ("labels", "prompts", "prompt_label", "embeddings", "labels_sha256", "model_id")
PROVENANCE = "text_sha256"  # optional: files written before 2026-12-06 have none


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
    text_sha256: str = ""  # the text graph that computed them ("": not recorded)

    @classmethod
    def from_prompt_embeddings(
        cls, label_set: LabelSet, prompt_embeddings: np.ndarray, model_id: str, text_sha256: str = ""
    ) -> LabelEmbeddings:
        """Average each label's prompt embeddings (after normalising each) and normalise again."""
        prompts, owners = label_set.flat_prompts()
        prompt_embeddings = np.asarray(prompt_embeddings, dtype=np.float32)
        if prompt_embeddings.ndim != 2 or prompt_embeddings.shape[0] != len(prompts):
            raise LabelEmbeddingsError(
                f"expected one embedding per prompt ({len(prompts)} x C), got shape {prompt_embeddings.shape}"
            )
        owner = np.asarray(owners, dtype=np.int64)
        unit = _normalise(prompt_embeddings)
        sums = np.zeros((len(label_set.labels), unit.shape[1]), dtype=np.float32)
        np.add.at(sums, owner, unit)
        return cls(
            labels=tuple(label_set.names),
            prompts=tuple(prompts),
            prompt_label=owner,
            embeddings=_normalise(sums).astype(np.float32),
            labels_sha256=label_set.sha256,
            model_id=model_id,
            text_sha256=text_sha256,
        )

    def save(self, path: str | Path, half: bool = False) -> Path:
        """Write the .npz atomically (a reader never sees half a file), compressed; `half`: the
        embeddings as float16 (a vocabulary of hundreds of names: cosines move by ~1e-3)."""
        path = Path(path)
        arrays: dict[str, Any] = dict(
            labels=np.array(self.labels, dtype=str),
            prompts=np.array(self.prompts, dtype=str),
            prompt_label=self.prompt_label.astype(np.int64),
            embeddings=self.embeddings.astype(np.float16 if half else np.float32),
            labels_sha256=np.array(self.labels_sha256),
            model_id=np.array(self.model_id),
            text_sha256=np.array(self.text_sha256),
        )
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(tmp, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LabelEmbeddings:
        """Read a .npz written by `save`; CorruptLabelEmbeddings (naming the file) when it is damaged."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [name for name in ARRAYS if name not in data.files]
                if missing:
                    raise CorruptLabelEmbeddings(f"label embeddings {path}: missing array(s) {missing}{REDO}")
                arrays = {name: data[name] for name in ARRAYS}
                text_sha256 = str(data[PROVENANCE]) if PROVENANCE in data.files else ""
        except LabelEmbeddingsError:
            raise
        except PermissionError:
            raise unreadable(path) from None
        except UNREADABLE as err:
            # numpy takes a file that is no .npz nor .npy for a pickle, and says how to load one unsafely
            why = "not a .npz file" if "pickle" in str(err) else err or type(err).__name__
            raise CorruptLabelEmbeddings(
                f"cannot read label embeddings {path}: {why}: the file is corrupt or truncated{REDO}"
            ) from None
        emb = arrays["embeddings"]
        k, p = arrays["labels"].shape[0], arrays["prompts"].shape[0]
        if (
            emb.ndim != 2
            or emb.shape[0] != k
            or emb.dtype not in (np.float32, np.float16)
            or arrays["prompt_label"].shape != (p,)
        ):
            raise CorruptLabelEmbeddings(
                f"label embeddings {path}: inconsistent shapes (labels {k}, prompts {p}, "
                f"embeddings {emb.shape} {emb.dtype}, prompt_label "
                f"{arrays['prompt_label'].shape}){REDO}"
            )
        return cls(
            labels=tuple(str(s) for s in arrays["labels"]),
            prompts=tuple(str(s) for s in arrays["prompts"]),
            prompt_label=arrays["prompt_label"].astype(np.int64),
            embeddings=emb.astype(np.float32),
            labels_sha256=str(arrays["labels_sha256"]),
            model_id=str(arrays["model_id"]),
            text_sha256=text_sha256,
        )

    def mismatch(self, label_set: LabelSet, model_id: str, text_sha256: str = "") -> str | None:
        """Why these embeddings cannot serve `label_set` with model `model_id` whose text graph has
        the hash `text_sha256` ("": no text graph to tell by) (None: they can)."""
        if self.model_id != model_id:
            return f"computed by model {self.model_id!r}, the bundle is {model_id!r}"
        if self.labels_sha256 != label_set.sha256:
            return "stale: the label names or prompts changed since they were computed"
        if text_sha256 and self.text_sha256 and self.text_sha256 != text_sha256:
            return (
                f"computed by another text graph (sha256 {self.text_sha256[:12]}..., the bundle's text.onnx is "
                f"{text_sha256[:12]}...)"
            )
        return None


# ---------------------------------------------------------------------------------------------
# Where they are: the bundle, then the user cache


def embed_command(bundle: Bundle, label_set: LabelSet, into: str | None = None) -> str:
    """The edge command that (re)computes `label_set`'s embeddings for `bundle`."""
    spec = label_set.name if label_set.shipped else label_set.source
    extra = f" --into {into}" if into else ""
    return f"semanticac-edge embed-labels --bundle {shlex.quote(str(bundle.path))} --labels {shlex.quote(spec)}{extra}"


def no_text_tower_fix(bundle: Bundle, label_set: LabelSet) -> str:
    """What to do when embeddings are needed and the bundle has no text.onnx to compute them."""
    return (
        f"run `{embed_command(bundle, label_set)}` on a copy of this bundle that has its text.onnx "
        f"(e.g. the export on the desktop), and copy {label_set.name}.npz into {bundle.labels_dir}"
    )


@dataclass(frozen=True)
class Candidate:
    """One place the embeddings of a label set may be: what was found there, or why not."""

    path: Path
    place: str  # "bundle" or "cache"
    embeddings: LabelEmbeddings | None = None  # set when the file reads back
    problem: str | None = None  # why it cannot be used (None with embeddings: usable)
    corrupt: bool = False  # the file is there but damaged

    @property
    def usable(self) -> bool:
        return self.embeddings is not None and self.problem is None


def candidate_paths(bundle: Bundle, label_set: LabelSet) -> list[Path]:
    name = f"{label_set.name}.npz"
    return [bundle.labels_dir / name, cache_dir(bundle.meta.model_id) / name]


def look_up(bundle: Bundle, label_set: LabelSet) -> list[Candidate]:
    """Every place looked at, in lookup order, with what was found there."""
    found = []
    text = bundle.meta.text.sha256 if bundle.meta.text else ""
    for place, path in zip(("bundle", "cache"), candidate_paths(bundle, label_set)):
        try:
            there = path.is_file()
        except PermissionError:  # a folder on the way that this user may not enter
            raise unreadable(path) from None
        if not there:
            found.append(Candidate(path, place, problem="not there"))
            continue
        try:
            emb = LabelEmbeddings.load(path)
        except CorruptLabelEmbeddings as err:
            found.append(Candidate(path, place, problem=str(err), corrupt=True))
            continue
        problem = emb.mismatch(label_set, bundle.meta.model_id, text)
        if problem is None and text and not emb.text_sha256 and not _ships(bundle, place, label_set):
            problem = (
                f"{'cached' if place == 'cache' else 'written into the demo bundle'} before the edge recorded the "
                "text graph that computed it (2026-12-06): perhaps another text graph's"
            )
        found.append(Candidate(path, place, emb, problem))
    return found


def _ships(bundle: Bundle, place: str, label_set: LabelSet) -> bool:
    """Whether a file without the text graph's SHA-256 is the export's (full precision): any in a bundle
    folder, except the package's demo bundle, whose export wrote only the shipped sets (an older
    `embed-labels` wrote a site's into it by default, with the text graph of then), never a cache file."""
    if place == "cache":
        return False
    demo = shipped_bundle()
    return demo is None or bundle.path.resolve() != demo.resolve() or label_set.name in shipped_label_sets()


def corrupt_bundle_file(bundle: Bundle, label_set: LabelSet, candidate: Candidate) -> LabelEmbeddingsError:
    """The error for a damaged <bundle>/labels/<name>.npz: the file, what is wrong, the fix."""
    return CorruptLabelEmbeddings(
        f"the bundle's label embeddings {candidate.path} are damaged ({candidate.problem}): rebuild them with "
        f"`{embed_command(bundle, label_set, into='bundle')}`"  # there: the damaged file is read first
        + ("" if bundle.meta.text else f"; {no_text_tower_fix(bundle, label_set)}")
    )


def _usable(bundle: Bundle, label_set: LabelSet, found: list[Candidate]) -> LabelEmbeddings | None:
    """The first usable embeddings; a damaged bundle file is an error, never skipped silently."""
    for candidate in found:
        if candidate.usable:
            return candidate.embeddings
        if candidate.corrupt and candidate.place == "bundle":
            raise corrupt_bundle_file(bundle, label_set, candidate)
    return None


def _not_found(bundle: Bundle, label_set: LabelSet, found: list[Candidate]) -> LabelEmbeddingsError:
    reasons = "; ".join(f"{c.problem}" if c.corrupt else f"{c.path}: {c.problem}" for c in found)
    return LabelEmbeddingsError(
        f"no usable embeddings for label set {label_set.name!r} ({label_set.source}): "
        f"{reasons}; compute them with `{embed_command(bundle, label_set)}`"
    )


def find_label_embeddings(bundle: Bundle, label_set: LabelSet) -> LabelEmbeddings:
    """The first matching embeddings for `label_set` in the bundle, then the user cache.

    LabelEmbeddingsError lists every place looked at, why each was refused, and the fix.
    """
    found = look_up(bundle, label_set)
    embeddings = _usable(bundle, label_set, found)
    if embeddings is None:
        raise _not_found(bundle, label_set, found)
    return embeddings


# ---------------------------------------------------------------------------------------------
# Computing them on the device: tokenizer + text.onnx


def token_counts(tokenizer, prompts: list[str]) -> list[int]:
    """Tokens of each prompt as the text tower sees it: its pieces plus the start and end tokens."""
    return [len(tokenizer.encode(prompt)) + 2 for prompt in prompts]


def check_prompt_lengths(label_set: LabelSet, tokenizer) -> None:
    """LabelSetError naming every prompt longer than the text tower's context (it would be cut,
    and two long prompts that differ only at the end would become the same embedding)."""
    prompts, owner = label_set.flat_prompts()
    limit = tokenizer.context_length
    over = [
        (label_set.labels[i].name, p, n)
        for p, i, n in zip(prompts, owner, token_counts(tokenizer, prompts))
        if n > limit
    ]
    if over:
        listing = "; ".join(f"label {name!r}: prompt {prompt!r} is {n} tokens" for name, prompt, n in over)
        raise LabelSetError(
            f"label set {label_set.name!r} ({label_set.source}): {listing}; the text tower reads at "
            f"most {limit} tokens (the rest would be cut silently): shorten the prompt(s)"
        )


def reading_notes(label_set: LabelSet, tokenizer) -> list[tuple[str, str]]:
    """Warnings for label names the text tower cannot read as written: it reads English, so a name
    in another script, with characters it does not know ([UNK]: an emoji), or with accents over a
    word it can only cut into fragments (`Türklingel` -> turk ##ling ##el, scored as Turkey) means
    little to it; and two names it reads the same always score alike."""
    import unicodedata

    notes: list[tuple[str, str]] = []
    seen: dict[tuple[int, ...], str] = {}
    for label in label_set.labels:
        text = label_text(label.reads)
        ids = tuple(tokenizer.encode(text))
        pieces = [tokenizer.decode([i]) for i in ids]
        read = " ".join(pieces)
        twin = seen.setdefault(ids, label.name)
        latin = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
        # letters only: a typographic apostrophe or dash (baby’s cry) is no other script
        other_script = sum(c.isalpha() for c in latin) < sum(c.isalpha() for c in text)
        cut = len(pieces) >= 3 * len(text.split())  # every word cut into fragments, on average
        if twin != label.name:
            notes.append(
                (
                    "warning",
                    f"labels {twin!r} and {label.name!r} read the same to the text tower ({read!r}): they will "
                    "always score alike; name each sound in English words",
                )
            )
        elif "[UNK]" in pieces or other_script or (not text.isascii() and cut):
            unknown = " ([UNK]: characters it does not know)" if "[UNK]" in pieces else ""
            notes.append(
                (
                    "warning",
                    f"label {label.name!r}: the bundle's text tower reads English and reads this as {read!r}{unknown}, "
                    "so it may be scored as an unrelated sound; give it `text:` in English words (the name stays what "
                    "events and Home Assistant show: - {name: Türklingel, text: doorbell})",
                )
            )
    return notes


class Stopped(Exception):
    """A stop asked for (`stop` set: SIGTERM, Ctrl-C) while a label set was being embedded: nothing is cached."""


def compute_label_embeddings(
    bundle: Bundle, label_set: LabelSet, threads: int | None = None, stop: threading.Event | None = None
) -> LabelEmbeddings:
    """Tokenize every prompt of `label_set` and embed it with the bundle's text graph.

    Says on stderr what it embeds, with a progress line per second for sets of several batches.
    `stop` set between two prompts raises Stopped: a large set takes many seconds on a small CPU
    (360 prompts: 15 s here), and a service's stop must not wait for it (systemd kills it after
    TimeoutStopSec=).
    """
    from edge.backends import select_backend
    from edge.labels.tokenizers import load_tokenizer

    if bundle.meta.text is None:
        raise LabelEmbeddingsError(
            f"bundle {bundle.path} has no text tower (text.onnx), so label set "
            f"{label_set.name!r} cannot be embedded on this device: "
            f"{no_text_tower_fix(bundle, label_set)}"
        )
    tokenizer = load_tokenizer(bundle.tokenizer_dir)
    check_prompt_lengths(label_set, tokenizer)
    prompts, _ = label_set.flat_prompts()
    progress.info(
        "embedding %d labels (%d prompts) of label set %r with %s...",
        len(label_set.labels),
        len(prompts),
        label_set.name,
        bundle.meta.text.file,
    )
    started = last = time.monotonic()
    parts = []
    with select_backend(bundle, "onnxruntime", graph="text", threads=threads) as backend:
        output = backend.output_names[0]
        for done, prompt in enumerate(prompts, 1):
            if stop is not None and stop.is_set():
                progress.info(
                    "stopped while embedding label set %r (%d of %d prompts): nothing cached, the next start "
                    "embeds it again",
                    label_set.name,
                    done - 1,
                    len(prompts),
                )
                raise Stopped(label_set.name)
            parts.append(backend.run(tokenizer([prompt]))[output])
            now = time.monotonic()
            if len(prompts) > LARGE_SET and (now - last >= PROGRESS_SECONDS or done == len(prompts)):
                progress.info("embedded %d/%d prompts (%.1f s)", done, len(prompts), now - started)
                last = now
    return LabelEmbeddings.from_prompt_embeddings(
        label_set, np.concatenate(parts), bundle.meta.model_id, bundle.meta.text.sha256
    )


def label_embeddings_for(
    bundle: Bundle, label_set: LabelSet, threads: int | None = None, stop: threading.Event | None = None
) -> LabelEmbeddings:
    """Matching embeddings from the bundle or the cache; else computed here and cached (`stop`: as
    compute_label_embeddings).

    A damaged cache file is computed again (a warning names it) and rewritten atomically;
    a damaged bundle file is a LabelEmbeddingsError naming the command that rebuilds it.
    """
    found = look_up(bundle, label_set)
    embeddings = _usable(bundle, label_set, found)
    if embeddings is not None:
        return embeddings
    if bundle.meta.text is None:
        raise LabelEmbeddingsError(
            f"{_not_found(bundle, label_set, found)} (this bundle has no text.onnx to "
            f"compute them on the device: {no_text_tower_fix(bundle, label_set)})"
        )
    for candidate in found:
        if candidate.corrupt:
            problem = (candidate.problem or "").removesuffix(REDO)  # what the warning says it does
            log.warning("%s: computing label set %r again and rewriting the file", problem, label_set.name)
        else:
            log.info("label set %r: %s: %s", label_set.name, candidate.path, candidate.problem)
    embeddings = compute_label_embeddings(bundle, label_set, threads, stop)
    target = cache_dir(bundle.meta.model_id) / f"{label_set.name}.npz"
    try:
        embeddings.save(target)
        log.info("cached label embeddings in %s", target)
    except OSError as err:  # a read-only home: use them now, compute again next time
        log.warning("could not cache label embeddings in %s (%s): they will be computed at each start", target, err)
    return embeddings


# ---------------------------------------------------------------------------------------------
# `embed-labels`: precompute sets into the bundle (or the cache)


@dataclass(frozen=True)
class Embedded:
    """One label set written by `embed_label_sets`."""

    label_set: LabelSet
    embeddings: LabelEmbeddings
    path: Path
    place: str  # "bundle" or "cache"
    kept: bool = False  # the bundle already held the set as its export wrote it: not computed again

    def describe(self) -> str:
        what = (
            f"{self.label_set.name}: {len(self.embeddings.labels)} labels ({len(self.embeddings.prompts)} prompts, "
            f"{self.embeddings.embeddings.shape[1]}-d)"
        )
        if self.kept:
            return f"{what}: {self.path} already holds them as the export computed them (full precision): kept"
        return f"{what} -> {self.path} ({self.place})"


def target_dir(bundle: Bundle, into: str = "auto") -> tuple[Path, str]:
    """Where `embed-labels` writes: the bundle's labels/ (auto: when writable), else the cache.
    The demo bundle installed with the package is never written with auto: a pip upgrade or
    uninstall would take the site's sets with it (or leave them behind)."""
    if into not in INTO:
        raise LabelEmbeddingsError(f"--into {into!r} is not one of {list(INTO)}")
    shipped = shipped_bundle()
    if into == "cache" or (into == "auto" and shipped is not None and bundle.path.resolve() == shipped.resolve()):
        return cache_dir(bundle.meta.model_id), "cache"
    problem = unwritable_reason(bundle.labels_dir)
    if problem is None:
        return bundle.labels_dir, "bundle"
    if into == "bundle":
        raise LabelEmbeddingsError(
            f"cannot write into the bundle: {problem}; make it writable, or pass --into cache "
            "(the user cache of this machine)"
        )
    log.info("the bundle's labels/ cannot be written (%s): writing to the user cache", problem)
    return cache_dir(bundle.meta.model_id), "cache"


def bundle_owned_clash(bundle: Bundle, label_set: LabelSet) -> str | None:
    """Why `label_set` must not be written over <bundle>/labels/<name>.npz (None: it may): the
    bundle's vocabulary reads that file (its classes, or a set the student was trained on: how it
    tells trained labels from new ones), and the set embeds other names or prompts."""
    vocabulary = bundle.meta.vocabulary
    if vocabulary is None:
        return None
    own = "its classes" if label_set.name == vocabulary["labels"] else None
    if own is None and label_set.name in vocabulary.get("trained", ()):
        own = "the labels its student was trained on"
    path = bundle.labels_dir / f"{label_set.name}.npz"
    if own is None or not path.is_file():
        return None
    try:
        shipped = LabelEmbeddings.load(path)
    except LabelEmbeddingsError:
        return None  # damaged: the command that repairs it writes the bundle's own set here
    if shipped.labels_sha256 == label_set.sha256:
        return None
    return (
        f"{path} is the bundle's own: its vocabulary reads it for {own}, and label set {label_set.name!r} "
        f"({label_set.source}) embeds other names or prompts"
    )


def _exported(bundle: Bundle, label_set: LabelSet) -> LabelEmbeddings | None:
    """The bundle's own file of `label_set` where its export wrote it (no text graph recorded: the
    full-precision one, before --compact) and it still matches the set; None otherwise."""
    candidate = look_up(bundle, label_set)[0]
    if candidate.usable and candidate.embeddings is not None and not candidate.embeddings.text_sha256:
        return candidate.embeddings
    return None


def embed_label_sets(bundle: Bundle, specs, into: str = "auto", threads: int | None = None) -> list[Embedded]:
    """Compute each label set (NAME or PATH) with the bundle's text tower and write its .npz
    atomically into the bundle's labels/ or the user cache (`into`: auto, bundle, cache).

    Never over a file the bundle's vocabulary reads (`bundle_owned_clash`: a site's copy of
    urban.yaml that kept `name: urban`): --into bundle refuses, auto writes that set to the cache.
    A set the bundle already holds as its export wrote it (the shipped `urban`, `esc50`) is kept,
    not computed again by a compact bundle's int8 text graph (`Embedded.kept`)."""
    from edge.labels.labelset import resolve_label_set

    folder, place = target_dir(bundle, into)
    label_sets = [resolve_label_set(spec) for spec in specs]  # every YAML checked before any work
    sources: dict[str, str] = {}
    for label_set in label_sets:
        if label_set.name in sources:
            raise LabelSetError(
                f"label sets {sources[label_set.name]} and {label_set.source} are both named {label_set.name!r}: "
                "each is stored as <name>.npz, so one would replace the other; give one another `name:`"
            )
        sources[label_set.name] = label_set.source
    targets = []
    for label_set in label_sets:
        clash = bundle_owned_clash(bundle, label_set) if place == "bundle" else None
        if clash and into == "bundle":
            raise LabelSetError(f"cannot write label set {label_set.name!r} into the bundle: {clash}; {RENAME}")
        if clash:
            log.warning("%s: writing it to the user cache instead (%s)", clash, RENAME)
            targets.append((label_set, cache_dir(bundle.meta.model_id), "cache"))
        else:
            targets.append((label_set, folder, place))
    # the bundle's own copy is what listen reads first: a cache copy of it would only replace a site's
    # set of that name there (computed again at its next start), and by the int8 text graph
    exported = {label_set.name: _exported(bundle, label_set) for label_set, _, _ in targets}
    for label_set, target, where in targets:
        problem = None if exported[label_set.name] is not None else unwritable_reason(target)
        if problem is not None:
            raise LabelEmbeddingsError(
                f"cannot write label set {label_set.name!r} to {target}: {problem}; "
                + (CACHE_FIX if where == "cache" else "make it writable, or pass --into cache")
            )
    written = []
    for label_set, target, where in targets:
        kept = exported[label_set.name]
        if kept is not None:  # the text graph on the device is int8 (--compact): it would do worse
            written.append(Embedded(label_set, kept, bundle.labels_dir / f"{label_set.name}.npz", "bundle", True))
            continue
        embeddings = compute_label_embeddings(bundle, label_set, threads)
        try:
            path = embeddings.save(target / f"{label_set.name}.npz")
        except OSError as err:
            raise LabelEmbeddingsError(
                f"cannot write label set {label_set.name!r} to {target}: {err.strerror or err}; "
                + (CACHE_FIX if where == "cache" else "free space there, or pass --into cache")
            ) from None
        written.append(Embedded(label_set, embeddings, path, where))
    return written
