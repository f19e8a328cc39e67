"""The backend interface: one small base class; one file per runtime, heavy imports inside it.

A backend runs one graph of the bundle by tensor name, so the same backends serve both:

    model.onnx        run({"mel": float32 [B, 1, T, F]})   -> {"embedding": float32 [B, C]}
                                                            (+ the trunk map the vocabulary graph reads)
    vocabulary.onnx   run({"trunk": that map})             -> {"vocabulary": float32 [B, V]}
    text.onnx         run({"input_ids": int64 [B, L], ...}) -> {"embedding": float32 [B, C]}

(`embed(mel)` is the audio shorthand; a tokenizer's output dict feeds `run` as is.)

The base class does what every runtime needs the same way: it checks the inputs against the
graph's own tensor specs (names, dtype kind, rank, fixed sizes), splits a batch larger than
`max_batch` into chunks and concatenates the results. A runtime implements `_run` on one chunk.

When a backend opens a graph it reconciles what the graph declares with what the bundle's
model.json promises (`GraphSpec`), so a model.onnx that does not belong to its model.json
fails at start-up, naming the file, the difference and the fix, not mid-stream.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from edge.bundle import Bundle
from edge.errors import BackendError


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, as a container, a cpuset, systemd's
    CPUAffinity= or taskset sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


GRAPHS = ("audio", "text", "vocabulary")
REEXPORT = "re-export the bundle with `semanticac-train export`"

_B = TypeVar("_B", bound="Backend")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, dtype, shape with None for a size the graph leaves free (a
    shape of None: any rank, the graph's own: the map between the audio and vocabulary graphs)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None

    def describe(self) -> str:
        if self.shape is None:
            return f"{self.name} {np.dtype(self.dtype).name} [any shape]"
        dims = ["B" if i == 0 and d is None else "?" if d is None else str(d) for i, d in enumerate(self.shape)]
        return f"{self.name} {np.dtype(self.dtype).name} [{', '.join(dims)}]"


@dataclass(frozen=True)
class GraphSpec:
    """What model.json promises about one graph. dtypes are checked by kind (float, int)."""

    graph: str  # one of GRAPHS
    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def graph_spec(bundle: Bundle, graph: str = "audio") -> GraphSpec:
    """The audio graph: one float32 input [B, 1, frames, n_mels]; the text graph: integer ids
    [B, L] per input name; both give float32 [B, embedding_dim] outputs (the audio graph of a
    bundle with a vocabulary also a map, of the graph's own shape); the vocabulary graph: that map,
    or the audio graph's input, -> float32 [B, V]."""
    meta = bundle.meta
    c = meta.embedding_dim
    branch = None if meta.vocabulary is None else meta.vocabulary["graph"]
    if graph == "audio":
        if len(meta.audio.inputs) != 1:
            raise BackendError(
                f"bundle {bundle.path}: model.json audio.inputs is {list(meta.audio.inputs)}; the audio "
                f"graph takes exactly one input (the log-mel): {REEXPORT}"
            )
        f = meta.frontend
        inputs: tuple[TensorSpec, ...] = (
            TensorSpec(meta.audio.inputs[0], np.dtype(np.float32), (None, 1, f.frames, f.n_mels)),
        )
        # the first output is the embedding; any other is a map (a vocabulary graph may read it), of its own shape
        outputs = tuple(
            TensorSpec(name, np.dtype(np.float32), (None, c) if i == 0 else None)
            for i, name in enumerate(meta.audio.outputs)
        )
        return GraphSpec("audio", bundle.audio_path, inputs, outputs)
    if graph == "vocabulary":
        if branch is None or bundle.vocabulary_path is None:
            raise BackendError(f"bundle {bundle.path} has no vocabulary graph (model.json has no vocabulary)")
        inputs = tuple(TensorSpec(name, np.dtype(np.float32), None) for name in branch.inputs)
        outputs = tuple(TensorSpec(name, np.dtype(np.float32), (None, None)) for name in branch.outputs)
        return GraphSpec("vocabulary", bundle.vocabulary_path, inputs, outputs)
    if graph == "text":
        if meta.text is None or bundle.text_path is None:
            raise BackendError(
                f"bundle {bundle.path} has no text graph (model.json text is null): label embeddings "
                "must come precomputed; compute them with `semanticac-edge embed-labels`"
            )
        inputs = tuple(TensorSpec(name, np.dtype(np.int64), (None, None)) for name in meta.text.inputs)
        outputs = tuple(TensorSpec(name, np.dtype(np.float32), (None, c)) for name in meta.text.outputs)
        return GraphSpec("text", bundle.text_path, inputs, outputs)
    raise BackendError(f"graph {graph!r} is not one of {list(GRAPHS)}")


def reconcile(
    spec: GraphSpec, inputs: list[TensorSpec], outputs: list[TensorSpec], what: str, fix: str = REEXPORT
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Check a graph's own tensors (`inputs`, `outputs`) against `spec` and merge the two.

    The merged spec keeps the graph's dtype (what its runtime needs) and every size fixed by
    either side. `what` names the file in messages ("model.onnx", "engine X.plan").
    """
    graph_in = {t.name: t for t in inputs}
    if set(graph_in) != {t.name for t in spec.inputs}:
        raise BackendError(
            f"{what} takes inputs {sorted(graph_in)}, but model.json says "
            f"{sorted(t.name for t in spec.inputs)}: the two do not belong together; {fix}"
        )
    graph_out = {t.name: t for t in outputs}
    missing = [t.name for t in spec.outputs if t.name not in graph_out]
    if missing:
        raise BackendError(
            f"{what} has no output(s) {missing} (it gives {sorted(graph_out)}), but model.json "
            f"names them: the two do not belong together; {fix}"
        )
    merged = []
    for want, have in [(t, graph_in[t.name]) for t in spec.inputs] + [(t, graph_out[t.name]) for t in spec.outputs]:
        problem = _mismatch(want, have)
        if problem:
            raise BackendError(
                f"{what}: {have.name} is {have.describe().split(' ', 1)[1]}, model.json and its "
                f"frontend expect {want.describe().split(' ', 1)[1]} ({problem}); {fix}"
            )
        if want.shape is None or have.shape is None:
            shape = have.shape
        else:
            shape = tuple(w if w is not None else h for w, h in zip(want.shape, have.shape))
        merged.append(TensorSpec(have.name, np.dtype(have.dtype), shape))
    n = len(spec.inputs)
    return tuple(merged[:n]), tuple(merged[n:])


def _mismatch(want: TensorSpec, have: TensorSpec) -> str | None:
    if np.dtype(want.dtype).kind != np.dtype(have.dtype).kind:
        kind = "floating point" if np.dtype(want.dtype).kind == "f" else "integer"
        return f"dtype {np.dtype(have.dtype).name}, not {kind}"
    if want.shape is None or have.shape is None:
        return None
    if len(want.shape) != len(have.shape):
        return f"rank {len(have.shape)}, not {len(want.shape)}"
    for axis, (w, h) in enumerate(zip(want.shape, have.shape)):
        if w is not None and h is not None and w != h:
            return f"axis {axis} is {h}, not {w}"
    return None


def static_batch(specs: tuple[TensorSpec, ...]) -> int | None:
    """A graph exported with a fixed batch size runs that many at a time (None: any)."""
    sizes = {t.shape[0] for t in specs if t.shape and t.shape[0] is not None}
    return min(sizes) if sizes else None


class Backend(ABC):
    """Runs one graph by tensor name. Subclasses set `name` and implement `_run` and `close`."""

    name = "backend"

    def __init__(
        self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], max_batch: int | None, source: Path
    ) -> None:
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.max_batch = max_batch  # None: any batch size in one call
        self.source = Path(source)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named inputs -> named outputs (numpy, owned by the caller). Batches above
        `max_batch` run in chunks; the results are the same as one call."""
        arrays = self._checked(inputs)
        batch = next(iter(arrays.values())).shape[0]
        step = self.max_batch or batch
        if batch <= step and static_batch(self.inputs) in (None, batch):
            return self._run(arrays)
        parts = [self._run_padded({k: v[i : i + step] for k, v in arrays.items()}) for i in range(0, batch, step)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def _run_padded(self, chunk: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A graph exported with a fixed batch gets exactly that many: the last item repeated."""
        fixed, n = static_batch(self.inputs), next(iter(chunk.values())).shape[0]
        if fixed is None or n == fixed:
            return self._run(chunk)
        padded = {k: np.concatenate([v, np.repeat(v[-1:], fixed - n, axis=0)]) for k, v in chunk.items()}
        return {name: value[:n] for name, value in self._run(padded).items()}

    def embed(self, mel: np.ndarray) -> np.ndarray:
        """The audio graph's shorthand: mel float32 [B, 1, T, F] -> embedding float32 [B, C]."""
        if len(self.inputs) != 1:
            raise BackendError(
                f"{self.source.name} takes {len(self.inputs)} inputs {list(self.input_names)}: "
                "embed() is for the audio graph; call run() with every input"
            )
        return self.run({self.inputs[0].name: mel})[self.outputs[0].name]

    @abstractmethod
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One chunk (batch <= max_batch), inputs already checked and in the graph's dtypes."""

    def close(self) -> None:  # noqa: B027 (not abstract: a backend without resources keeps this no-op)
        """Release the runtime's resources; the backend cannot run afterwards."""

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        ins = ", ".join(t.describe() for t in self.inputs)
        outs = ", ".join(t.describe() for t in self.outputs)
        return f"<{type(self).__name__} {self.source.name}: {ins} -> {outs}, max_batch={self.max_batch}>"

    def _checked(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        where = f"{self.name} backend ({self.source.name})"
        if set(inputs) != set(self.input_names):
            raise BackendError(
                f"{where} takes inputs {list(self.input_names)}, got {sorted(inputs)}: pass exactly these names"
            )
        arrays, batch = {}, None
        for spec in self.inputs:
            x = np.asarray(inputs[spec.name])
            if spec.shape is not None and (
                x.ndim != len(spec.shape) or any(d is not None and d != n for d, n in zip(spec.shape[1:], x.shape[1:]))
            ):
                raise BackendError(
                    f"{where}: input {spec.name} must be {spec.describe().split(' ', 1)[1]}, got shape {list(x.shape)}"
                )
            if not np.can_cast(x.dtype, spec.dtype, casting="same_kind"):
                raise BackendError(
                    f"{where}: input {spec.name} must be {np.dtype(spec.dtype).name}, got {x.dtype.name}"
                )
            if batch is None:
                batch = x.shape[0]
            elif x.shape[0] != batch:
                raise BackendError(
                    f"{where}: inputs disagree on the batch size "
                    f"({ {k: v.shape[0] for k, v in arrays.items()} } and {spec.name}: {x.shape[0]})"
                )
            arrays[spec.name] = np.ascontiguousarray(x, dtype=spec.dtype)
        if not batch:
            raise BackendError(f"{where}: empty batch (batch size 0); pass at least one item")
        return arrays
