"""TensorRT engine builder: ONNX -> plan on the device (`build_engine`), as in NVIDIA's samples.

Precision by TensorRT version (one function, `_network_flags`, plus the FP16 flag):
  8.6, 10.x  FP16 is a builder flag on a weakly typed network (TensorRT picks FP16 kernels).
  11+        weak typing is gone: the network is strongly typed, so FP16 must be in the
             graph itself; we build from an FP16 copy of the ONNX (`fp16_onnx_copy`) whose
             inputs and outputs stay float32.
The plan and its sidecar go into the engine cache (edge.backends.tensorrt.cache).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edge import __version__
from edge.backends.base import TensorSpec, graph_spec, reconcile
from edge.backends.tensorrt.cache import (
    SIDECAR_VERSION,
    DeviceInfo,
    check_precision,
    device_info,
    engine_name,
    sidecar_path,
    writable_engines_dir,
)
from edge.backends.tensorrt.libs import import_tensorrt, tensorrt_version, trt_logger
from edge.bundle import Bundle
from edge.errors import BackendError, BundleError
from edge.fsutil import atomic_path, atomic_write_text, sha256_file

log = logging.getLogger(__name__)

# Kept in FP32 in the FP16 copy: cheap ops whose sums of squares can overflow FP16 (max 65504)
# on real activations: the final L2 normalisation (ReduceL2), LayerNorm (one op at opset 17;
# Pow/Sqrt where an exporter decomposes it). onnxconverter-common's own list (Resize, TopK,
# Range, ...) stays FP32 too. Convolutions and MatMuls, the time that matters, go to FP16.
FP32_OPS = ("ReduceL2", "ReduceSumSquare", "LayerNormalization", "Pow", "Sqrt")


def fp16_onnx_copy(src: str | Path, dst: str | Path) -> Path:
    """Write an FP16 copy of the ONNX graph `src` to `dst`: weights and compute in FP16,
    inputs and outputs still float32 (Casts at the edges), `FP32_OPS` kept in FP32."""
    try:
        import onnx
        from onnxconverter_common import float16
    except ImportError as err:
        raise ImportError(
            'the FP16 copy of the ONNX graph needs onnx and onnxconverter-common: pip install "semanticac-edge[trt]"'
        ) from err
    model = _outputs_only_outputs(_inline_identity_initializers(onnx.load(str(src))))
    block = list(float16.DEFAULT_OP_BLOCK_LIST) + [op for op in FP32_OPS if op not in float16.DEFAULT_OP_BLOCK_LIST]
    with warnings.catch_warnings(record=True) as caught:  # one per constant clamped to FP16's range
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    for warning in caught:
        log.debug("onnxconverter-common: %s", warning.message)
    if caught:
        log.info("FP16 copy: %d constant(s) clamped to FP16's range (-vv lists them)", len(caught))
    with atomic_path(dst) as tmp:
        onnx.save(converted, str(tmp))
    log.info("FP16 copy of %s written to %s", Path(src).name, dst)
    return Path(dst)


def fp16_graph(path: str | Path) -> bool:
    """Whether the ONNX graph at `path` holds FP16 weights already (`export --compact`, the demo bundle's:
    its FP32_OPS between Casts); False without onnx (a [trt] install has it), as for an FP32 graph."""
    try:
        import onnx
    except ImportError:
        return False
    graph = onnx.load(str(path), load_external_data=False).graph
    return any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)


def strongly_typed_build(
    precision: str, version: tuple[int, int], fp16_weights: bool, typed_flag: bool = True
) -> tuple[bool, bool]:
    """(a strongly typed network, an FP16 copy made first) for an engine of `precision` on TensorRT `version`
    from a graph with or without FP16 weights. TensorRT 11 builds strongly typed only (no FP16 flag): an FP32
    graph gets its FP16 copy (onnxconverter-common refuses a graph that is FP16 already). On 10, an FP16 graph
    is built strongly typed too, so the FP32 it keeps (an L2 norm's sum of squares) stays FP32: with the FP16
    flag its types are hints. An FP32 graph on 10 and 8.6 uses the FP16 flag, as does any graph on a 10 whose
    bindings lack NetworkDefinitionCreationFlag.STRONGLY_TYPED (`typed_flag`)."""
    if precision != "fp16":
        return False, False
    if version >= (11, 0):
        return True, not fp16_weights
    return fp16_weights and typed_flag and version >= (10, 0), False


def _inline_identity_initializers(model):
    """Replace each Identity of a weight by a copy of that weight under the Identity's output name.

    torch's exporter deduplicates equal weights (e.g. LayerNorm scales that are all ones) and
    links the copies with Identity nodes; onnxconverter-common converts the weight to FP16 but
    leaves the Identity's declared type at float32, and ONNX Runtime then refuses the graph.
    """
    from onnx import numpy_helper

    weights = {init.name: init for init in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in weights:
            copy = numpy_helper.from_array(numpy_helper.to_array(weights[node.input[0]]), node.output[0])
            model.graph.initializer.append(copy)
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def _outputs_only_outputs(model):
    """Give each graph output that other nodes also read (the audio graph's trunk map, read by
    the student's next layer) an Identity of its own: onnxconverter-common casts a float32
    output back at the graph's edge but leaves its readers inside on the FP16 graph's other
    side of that Cast, and ONNX Runtime then refuses the graph (Conv bound to float and float16)."""
    from onnx import helper

    outputs = {out.name for out in model.graph.output}
    read = {name for node in model.graph.node for name in node.input}
    for name in sorted(outputs & read):
        rename_tensor(model.graph, name, f"{name}_inner")
        model.graph.node.append(helper.make_node("Identity", [f"{name}_inner"], [name]))
    return model


def rename_tensor(graph, old: str, new: str) -> None:
    """Call the tensor `old` `new` wherever a node makes or reads it, and in its shape info
    (the graph's inputs and outputs keep their names)."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for info in graph.value_info:
        if info.name == old:
            info.name = new


def build_engine(
    bundle: Bundle,
    precision: str = "fp16",
    max_batch: int = 8,
    workspace_gib: float = 2.0,
    opt_batch: int = 1,
    out_dir: str | Path | None = None,
) -> Path:
    """Build a TensorRT plan for this device from the bundle's model.onnx; return its path.

    The optimisation profile covers batches 1..max_batch (larger batches run in chunks) and
    is tuned for `opt_batch`: 1, because the listen loop runs one window at a time. The plan
    and its sidecar are written atomically into `out_dir`, else `writable_engines_dir(bundle)`.
    """
    check_precision(precision)
    for name, value, low in (("max_batch", max_batch, 1), ("opt_batch", opt_batch, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise BackendError(f"{name}={value!r} must be a positive integer")
    if opt_batch > max_batch:
        raise BackendError(f"opt_batch={opt_batch} must not exceed max_batch={max_batch}")
    if not workspace_gib > 0:
        raise BackendError(f"workspace_gib={workspace_gib!r} must be a positive number of GiB")
    trt = import_tensorrt()
    device = device_info()
    onnx_path = bundle.audio_path
    digest = sha256_file(onnx_path)
    if digest != bundle.meta.audio.sha256:
        raise BundleError(
            f"bundle {bundle.path}: {onnx_path.name} has SHA-256 {digest[:12]}..., model.json says "
            f"{bundle.meta.audio.sha256[:12]}...: the file is corrupt or was replaced; re-export the "
            "bundle with `semanticac-train export`"
        )
    strongly_typed, copy = strongly_typed_build(
        precision,
        tensorrt_version(trt),
        precision == "fp16" and fp16_graph(onnx_path),
        hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"),
    )
    folder = Path(out_dir) if out_dir is not None else writable_engines_dir(bundle)
    plan_path = folder / engine_name(device, digest, precision)
    log.info(
        "building a %s TensorRT %s engine for %s (compute capability %s) from %s",
        precision,
        trt.__version__,
        device.gpu_name,
        device.compute_capability,
        onnx_path,
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="semanticac-engine-") as tmp:
        source = fp16_onnx_copy(onnx_path, Path(tmp) / "model.fp16.onnx") if copy else onnx_path
        plan, shapes = _build(trt, bundle, source, precision, strongly_typed, max_batch, opt_batch, workspace_gib)
    seconds = time.monotonic() - started
    builder = {
        "max_batch": max_batch,
        "opt_batch": opt_batch,
        "workspace_gib": workspace_gib,
        "strongly_typed": strongly_typed,
        "fp16_onnx_copy": copy,
        "build_seconds": round(seconds, 1),
        "semanticac_edge": __version__,
    }
    save_engine(plan_path, plan, engine_sidecar(bundle, device, precision, plan_path.name, shapes, builder))
    log.info("engine written to %s (%.1f MB, built in %.0f s)", plan_path, plan_path.stat().st_size / 1e6, seconds)
    return plan_path


def engine_sidecar(
    bundle: Bundle,
    device: DeviceInfo,
    precision: str,
    plan_name: str,
    shapes: dict | None = None,
    builder: dict | None = None,
) -> dict:
    """The JSON sidecar of a plan: what it was built for and from, and how (`save_engine`
    adds the plan's own sha256)."""
    return {
        "format_version": SIDECAR_VERSION,
        "plan": plan_name,
        "tensorrt_version": device.tensorrt_version,
        "gpu_name": device.gpu_name,
        "compute_capability": device.compute_capability,
        "multiprocessors": device.multiprocessors,
        "precision": precision,
        "onnx_file": bundle.meta.audio.file,
        "onnx_sha256": bundle.meta.audio.sha256,
        "model_id": bundle.meta.model_id,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **(shapes or {}),
        "builder": builder or {},
    }


def save_engine(plan_path: str | Path, plan, sidecar: dict) -> Path:
    """Write the plan (bytes, or TensorRT's IHostMemory as is), then its sidecar with the plan's
    sha256, each atomically: a plan without a sidecar is never used."""
    plan_path = Path(plan_path)
    with atomic_path(plan_path) as tmp, open(tmp, "wb") as f:
        f.write(plan)
    sidecar = {**sidecar, "plan_sha256": sha256_file(plan_path)}
    atomic_write_text(sidecar_path(plan_path), json.dumps(sidecar, indent=2) + "\n")
    return plan_path


def _network_flags(trt, strongly_typed: bool) -> int:
    """8.x needs EXPLICIT_BATCH for ONNX; 10+ is always explicit batch (the flag is deprecated)."""
    if tensorrt_version(trt) < (10, 0):
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 1 << int(flag) if strongly_typed and flag is not None else 0


def _build(
    trt,
    bundle: Bundle,
    source: Path,
    precision: str,
    strongly_typed: bool,
    max_batch: int,
    opt_batch: int,
    workspace_gib: float,
) -> tuple[object, dict]:
    """Parse, profile, configure, build. Returns the serialised plan (IHostMemory) and the
    sidecar's shapes."""
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, strongly_typed))
    parser = trt.OnnxParser(network, logger)
    parsed = parser.parse_from_file(str(source))
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    for error in errors:
        log.error("TensorRT ONNX parser: %s", error)
    if not parsed:
        first = errors[0] if errors else "no error reported"
        raise BackendError(
            f"TensorRT {trt.__version__} cannot parse {bundle.audio_path} ({len(errors)} parser "
            f"error(s), logged above; the first: {first}): the graph uses an operator or shape this "
            "TensorRT does not support; re-export with opset 17 (`semanticac-train export`) or use "
            "--backend onnxruntime"
        )
    net_in = [network.get_input(i) for i in range(network.num_inputs)]
    net_out = [network.get_output(i) for i in range(network.num_outputs)]
    for kind, tensors in (("input", net_in), ("output", net_out)):
        for t in tensors:
            log.info("network %s %s: shape %s, dtype %s", kind, t.name, tuple(t.shape), t.dtype)

    # The graph must be the one model.json describes (names, ranks, frames and mels).
    spec = graph_spec(bundle, "audio")
    have = [
        [
            TensorSpec(t.name, np.dtype(trt.nptype(t.dtype)), tuple(d if d >= 0 else None for d in t.shape))
            for t in tensors
        ]
        for tensors in (net_in, net_out)
    ]
    reconcile(spec, have[0], have[1], source.name)
    wanted = {t.name: t.shape for t in spec.inputs if t.shape is not None}  # the audio graph's: always a shape

    profile = builder.create_optimization_profile()
    inputs = {}
    for t in net_in:
        low, opt, high = _profile_shapes(t.name, tuple(t.shape), wanted[t.name], opt_batch, max_batch)
        if -1 in tuple(t.shape):
            profile.set_shape(t.name, min=low, opt=opt, max=high)
        inputs[t.name] = {
            "dtype": str(np.dtype(trt.nptype(t.dtype))),
            "min": list(low),
            "opt": list(opt),
            "max": list(high),
        }
    outputs = {t.name: {"dtype": str(np.dtype(trt.nptype(t.dtype))), "shape": list(t.shape)} for t in net_out}

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp16" and not strongly_typed:
        if not getattr(builder, "platform_has_fast_fp16", True):
            log.warning("this GPU has no fast FP16: the FP16 engine may be no faster than FP32")
        config.set_flag(trt.BuilderFlag.FP16)
    tf32 = getattr(trt.BuilderFlag, "TF32", None)  # on by default: an fp32 engine's convolutions in TF32 on Ampere
    if precision == "fp32" and tf32 is not None:
        config.clear_flag(tf32)
    if any(-1 in tuple(t.shape) for t in net_in) and config.add_optimization_profile(profile) < 0:
        raise BackendError(f"TensorRT rejected the optimisation profile {inputs} for {source.name}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(
            f"TensorRT {trt.__version__} failed to build the engine (its log above says why): try a "
            "larger --workspace (GiB), a smaller --max-batch, or --precision fp32"
        )
    return serialized, {"inputs": inputs, "outputs": outputs}


def _profile_shapes(
    name: str, dims: tuple[int, ...], wanted: tuple[int | None, ...], opt_batch: int, max_batch: int
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) for one input: axis 0 is the batch (1, opt_batch, max_batch); other free
    sizes come from model.json's frontend (frames, mels)."""
    if dims[0] >= 0:
        batch = (dims[0],) * 3
    else:
        batch = (1, opt_batch, max_batch)
    rest = []
    for axis, (d, w) in enumerate(zip(dims[1:], wanted[1:]), start=1):
        if d >= 0:
            rest.append(d)
        elif w is not None:
            rest.append(w)
        else:
            raise BackendError(
                f"input {name} has a free size on axis {axis} that model.json does not fix: "
                "export the graph with only the batch axis dynamic"
            )
    low, opt, high = ((b, *rest) for b in batch)
    return low, opt, high
