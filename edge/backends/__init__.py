"""Inference backends behind one small interface (`Backend`), one file per runtime:

    onnxruntime   edge.backends.onnxruntime.OnnxRuntimeBackend   CPU, or CUDA when present   [ort]
    tensorrt      edge.backends.tensorrt.runtime.TensorRTBackend        a plan built on this device [trt]

Importing this package imports neither runtime; a missing one is an ImportError naming the
extra to install. `select_backend` is what the CLI calls for `--backend`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.backends.base import GRAPHS, Backend, GraphSpec, TensorSpec, graph_spec
from edge.backends.onnxruntime import OnnxRuntimeBackend
from edge.backends.tensorrt.runtime import TensorRTBackend
from edge.bundle import Bundle
from edge.errors import BackendError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt")

__all__ = [
    "BACKENDS",
    "Backend",
    "GraphSpec",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "TensorSpec",
    "graph_spec",
    "asked_engine",
    "check_backend",
    "select_backend",
]


def check_backend(bundle: Bundle, choice: str = "auto", precision: str | None = None) -> None:
    """What select_backend would refuse for `choice`, found without opening a graph (check-config, a
    reload): an unknown backend, or tensorrt without TensorRT or without an engine for this GPU and
    bundle (auto falls back to ONNX Runtime, which comes with the package)."""
    known_backend(choice)
    if choice == "tensorrt":
        asked_engine(bundle, precision)


def known_backend(choice: str) -> None:
    if choice not in BACKENDS:
        raise BackendError(f"backend {choice!r} is not one of {list(BACKENDS)}")


def asked_engine(bundle: Bundle, precision: str | None = None) -> Path:
    """The TensorRT engine for this device, GPU and bundle that `--backend tensorrt` runs; ImportError
    naming [trt] without TensorRT, BackendError saying what is missing and how to build it."""
    from edge.backends.tensorrt.cache import device_info, explain_missing_engine, find_engine

    device = device_info()
    plan = find_engine(bundle, precision, device)
    if plan is None:
        raise BackendError(explain_missing_engine(bundle, precision, device))
    return plan


def select_backend(
    bundle: Bundle,
    choice: str = "auto",
    *,
    graph: str = "audio",
    precision: str | None = None,
    threads: int | None = None,
) -> Backend:
    """Open a backend for the bundle's audio graph (or, with graph="text" / "vocabulary", its
    text or vocabulary graph).

    auto: the TensorRT engine built for this device, GPU and bundle when there is one (of
    `precision`, or None: either, fp16 first), else ONNX Runtime; the choice and its reason are
    logged. tensorrt: that engine or an error saying what is missing and how to build it.
    onnxruntime: ONNX Runtime. `threads` is ONNX Runtime's intra-op thread count. The text
    graph always runs on ONNX Runtime: it is run once per label set, and engines are built for
    the audio graph only; so does the vocabulary graph (a small map -> scores step, run only
    for label sets that need it).
    """
    known_backend(choice)
    if graph not in GRAPHS:
        raise BackendError(f"graph {graph!r} is not one of {list(GRAPHS)}")
    if graph == "text":
        if choice == "tensorrt":
            raise BackendError(
                "TensorRT engines are built for the audio graph only; the text graph (label "
                "embeddings, computed once per label set) runs on onnxruntime: use --backend "
                "onnxruntime or auto"
            )
        log.info("backend for the text graph: onnxruntime (engines are built for the audio graph only)")
        return OnnxRuntimeBackend.for_bundle(bundle, "text", threads=threads)
    if graph == "vocabulary":
        log.info("backend for the vocabulary graph: onnxruntime (engines are built for the audio graph only)")
        return OnnxRuntimeBackend.for_bundle(bundle, "vocabulary", threads=threads)
    if choice == "onnxruntime":
        log.info("backend: onnxruntime (asked for)")
        return OnnxRuntimeBackend.for_bundle(bundle, graph, threads=threads)

    from edge.backends.tensorrt.cache import (
        device_info,
        explain_missing_engine,
        find_engine,
        list_engines,
        plan_precision,
    )

    if choice == "tensorrt":
        asked = asked_engine(bundle, precision)
        log.info("backend: tensorrt (asked for), engine %s", asked)
        return TensorRTBackend.for_bundle(bundle, asked, plan_precision(asked))

    try:
        device = device_info()
    except (ImportError, BackendError) as err:
        log.info("backend auto: onnxruntime, because %s", err)
        return OnnxRuntimeBackend.for_bundle(bundle, graph, threads=threads)
    plan = find_engine(bundle, precision, device)
    if plan is None:
        # a GPU with TensorRT and no usable engine: a warning when one was built but no longer fits
        # (a JetPack upgrade, a new bundle), else the service would run on the CPU unnoticed
        stale = any(status.reason for status in list_engines(bundle, device, precision))
        log.log(
            logging.WARNING if stale else logging.INFO,
            "backend auto: onnxruntime, because %s",
            explain_missing_engine(bundle, precision, device).replace("\n", "; "),
        )
        return OnnxRuntimeBackend.for_bundle(bundle, graph, threads=threads)
    try:
        backend = TensorRTBackend.for_bundle(bundle, plan, plan_precision(plan))
    except (ImportError, BackendError) as err:
        log.warning("backend auto: onnxruntime, because the TensorRT engine %s cannot be used: %s", plan, err)
        return OnnxRuntimeBackend.for_bundle(bundle, graph, threads=threads)
    log.info(
        "backend auto: tensorrt, engine %s (built for %s, TensorRT %s)",
        plan.name,
        device.gpu_name,
        device.tensorrt_version,
    )
    return backend
