"""ONNX Runtime backend: runs model.onnx or text.onnx on the CPU, or on CUDA where the
installed onnxruntime has the CUDA provider (onnxruntime-gpu, or NVIDIA's Jetson wheel).

TensorRT's own execution provider is never picked: it would build an engine silently at
every start; this project builds engines explicitly (`semanticac-edge build-engine`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from edge.backends.base import (
    REEXPORT,
    Backend,
    GraphSpec,
    TensorSpec,
    graph_spec,
    reconcile,
    static_batch,
    usable_cores,
)
from edge.bundle import Bundle
from edge.errors import BackendError
from edge.fsutil import readable_fix

log = logging.getLogger(__name__)

INSTALL = 'pip install "onnxruntime>=1.17" (a dependency of semanticac-edge: reinstall it)'
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")  # first available wins, CPU always last
ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


# how ONNX Runtime and the C++ runtime say an allocation failed (a process under ulimit -v / prlimit --as, or a
# board whose memory is taken): "The file is corrupt" and "not installed" had sent a person after the bundle
OUT_OF_MEMORY = ("bad_alloc", "Failed to allocate memory", "cannot allocate memory", "Cannot allocate memory")
MEMORY_FIX = (
    "this process may not use enough memory (about 350 MB of address space for the demo bundle): raise its limit "
    "(ulimit -v, prlimit --as, the unit's MemoryMax=) or free memory on the board"
)


def import_onnxruntime():
    try:
        import onnxruntime
    except MemoryError:
        raise ImportError(f"ONNX Runtime cannot be loaded: out of memory: {MEMORY_FIX}") from None
    except ImportError as err:
        if any(word in str(err) for word in OUT_OF_MEMORY):  # a shared library that could not be mapped
            raise ImportError(f"ONNX Runtime cannot be loaded: out of memory ({err}): {MEMORY_FIX}") from None
        raise ImportError(f"ONNX Runtime is not installed (the onnxruntime backend needs it): {INSTALL}") from err
    return onnxruntime


SPINNING_ENV = "SEMANTICAC_ORT_SPINNING"  # "1": ONNX Runtime's threads spin between runs (its own default)


def choose_providers(available: list[str], requested: list[str] | None = None) -> list[str]:
    """The execution providers to ask for, in order: `requested` (each must be available),
    else CUDA when present, then CPU."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise BackendError(
                f"ONNX Runtime provider(s) {missing} are not available in this onnxruntime "
                f"(available: {available}); install onnxruntime-gpu for CUDA, or leave providers unset"
            )
        return list(requested)
    return [p for p in PREFERRED_PROVIDERS if p in available]


def _tensor_spec(arg, path: Path) -> TensorSpec:
    """An onnxruntime NodeArg -> TensorSpec (symbolic or unknown sizes become None)."""
    if arg.type not in ORT_DTYPES:
        raise BackendError(
            f"{path.name}: tensor {arg.name} has type {arg.type}, which this backend does not "
            f"handle (allowed: {sorted(ORT_DTYPES)}); {REEXPORT}"
        )
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in (arg.shape or []))
    return TensorSpec(arg.name, np.dtype(ORT_DTYPES[arg.type]), shape)


class OnnxRuntimeBackend(Backend):
    """One onnxruntime.InferenceSession.

    `threads`: intra-op threads (None: onnxruntime's default, one per core, or one per core this
    process may use where its affinity allows fewer). On a device that
    also captures audio, leave a core free. `max_batch`: split larger batches (bounds memory).
    `spec`: what model.json promises (see `for_bundle`); the graph must match it. Its threads
    sleep between runs (ONNX Runtime's default spins them): $SEMANTICAC_ORT_SPINNING=1 lets them spin.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        *,
        spec: GraphSpec | None = None,
        threads: int | None = None,
        providers: list[str] | None = None,
        max_batch: int | None = None,
    ) -> None:
        ort = import_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise BackendError(f"ONNX graph {path} is missing: point --bundle at a complete bundle, or {REEXPORT}")
        if not os.access(path, os.R_OK):  # ONNX Runtime's words for it: "system error number 13"
            raise BackendError(f"ONNX graph {path} cannot be read by this user: {readable_fix(path.parent)}")
        try:  # its constructor takes a str path only as UTF-8 (bytes are a model): it said "corrupt" of one
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            raise BackendError(
                f"ONNX graph {os.fsencode(path)!r}: its path is not UTF-8 (a name from an old Windows or FAT copy), "
                "which ONNX Runtime cannot open: rename the folders on the way with UTF-8 names"
            ) from None
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise BackendError(f"threads={threads!r} must be a positive integer (or None for a thread per core)")
        if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
            raise BackendError(f"max_batch={max_batch!r} must be a positive integer (or None: no limit)")
        options = ort.SessionOptions()
        if threads is None and usable_cores() < (os.cpu_count() or 1):
            # ONNX Runtime's default counts the machine's cores, not the ones this process may use: a
            # thread per core it may not run on would only wait its turn
            threads = usable_cores()
        if threads is not None:
            options.intra_op_num_threads = threads
        # ONNX Runtime's threads spin after each run, waiting for the next: a live stream runs one window
        # a hop, so they spun for nothing (benchmarks/ort_spinning.py: about twice the CPU, and slower
        # on 2 cores, where the spinning took the core the loop needed)
        spinning = os.environ.get(SPINNING_ENV, "0") == "1"
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        available = ort.get_available_providers()
        chosen = choose_providers(available, providers)
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        except Exception as err:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if isinstance(err, MemoryError) or any(word in str(err) for word in OUT_OF_MEMORY):
                raise BackendError(f"cannot load ONNX graph {path}: out of memory ({reason}): {MEMORY_FIX}") from None
            raise BackendError(
                f"cannot load ONNX graph {path}: {reason}. The file is corrupt, truncated or not "
                "an ONNX graph: check it with `semanticac-edge info --verify` and "
                f"{REEXPORT}"
            ) from None
        log.info(
            "onnxruntime %s: %s on %s (available: %s), intra-op threads: %s",
            ort.__version__,
            path.name,
            session.get_providers(),
            available,
            threads or "default",
        )
        have_in = [_tensor_spec(a, path) for a in session.get_inputs()]
        have_out = [_tensor_spec(a, path) for a in session.get_outputs()]
        if spec is not None:
            inputs, outputs = reconcile(spec, have_in, have_out, path.name)
        else:
            inputs, outputs = tuple(have_in), tuple(have_out)
        fixed = static_batch(inputs)
        if fixed is not None:
            log.info("%s was exported with a fixed batch of %d: larger batches run in chunks", path.name, fixed)
            max_batch = min(max_batch or fixed, fixed)
        super().__init__(inputs, outputs, max_batch, path)
        self.session = session
        self.providers = tuple(session.get_providers())

    @classmethod
    def for_bundle(cls, bundle: Bundle, graph: str = "audio", **kwargs) -> OnnxRuntimeBackend:
        """Open the bundle's audio (model.onnx) or text (text.onnx) graph, checked against model.json."""
        spec = graph_spec(bundle, graph)
        return cls(spec.path, spec=spec, **kwargs)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.session is None:
            raise BackendError(f"the onnxruntime backend for {self.source.name} is closed")
        try:
            values = self.session.run(list(self.output_names), inputs)
        except Exception as err:  # onnxruntime's own exception types
            raise BackendError(f"onnxruntime failed on {self.source.name}: {str(err).strip()}") from None
        return dict(zip(self.output_names, values))

    def close(self) -> None:
        self.session = None
