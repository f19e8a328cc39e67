"""TensorRT engine cache: plans built on this device, found again by what they were built for,
refused (with the command that rebuilds them) when that has changed.

A plan only runs on the GPU model and TensorRT version that built it, so its name and its
JSON sidecar record both, and the hash of the ONNX it came from:

    <bundle>/engines/model.<gpu-slug>.trt<version>.<onnx sha256[:12]>.<precision>.plan
                                                                    ... .json  (sidecar)

(or $XDG_CACHE_HOME/semanticac-edge/<model_id>/engines/ when the bundle is read-only).
The plan is TensorRT's own bytes, no header: `trtexec --loadEngine` reads it as is.
Building is edge.backends.tensorrt.builder; running, edge.backends.tensorrt.runtime.
"""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from edge.backends.tensorrt.libs import import_pycuda, import_tensorrt
from edge.bundle import Bundle
from edge.errors import BackendError
from edge.fsutil import cache_dir, sha256_file, unwritable_reason
from edge.schema import Fields, read_json

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")

SIDECAR_VERSION = 1

TEXT = (str, "text")
SIDECAR_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "format_version": (int, "an integer"),
    "plan": TEXT,
    "tensorrt_version": TEXT,
    "gpu_name": TEXT,
    "compute_capability": TEXT,
    "precision": TEXT,
    "onnx_sha256": TEXT,
    "model_id": TEXT,
}


@dataclass(frozen=True)
class DeviceInfo:
    """What a plan is tied to: the GPU model (name, compute capability and multiprocessor count)
    and TensorRT. Every Jetson Orin module is "Orin", 8.7: the count tells an AGX (16) from a
    Nano (8) or NX (8 or 16 with its memory); 0: not known."""

    gpu_name: str
    compute_capability: str  # "8.7" (Jetson Orin)
    tensorrt_version: str
    multiprocessors: int = 0


@dataclass(frozen=True)
class EngineStatus:
    """One plan found beside the bundle or in the cache; `reason` is None when it fits."""

    plan: Path
    sidecar: dict | None
    reason: str | None


def gpu_identity(index: int = 0) -> tuple[str, str, int]:
    """(GPU name, compute capability "major.minor", multiprocessor count) of CUDA device `index`.

    TensorRT's Python API does not expose them; pycuda (the [trt] extra) does, and cuda-python
    where pycuda is absent. BackendError when there is no usable GPU.
    """
    try:
        cuda = import_pycuda()
    except ImportError as pycuda_missing:
        return _gpu_identity_cuda_python(index, pycuda_missing)
    try:
        cuda.init()
        device = cuda.Device(index)
        major, minor = device.compute_capability()
        multiprocessors = device.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)
        return device.name(), f"{major}.{minor}", int(multiprocessors)
    except cuda.Error as err:
        raise BackendError(
            f"no usable CUDA GPU ({err}): TensorRT engines need one; use --backend onnxruntime"
        ) from None


def _gpu_identity_cuda_python(index: int, pycuda_missing: ImportError) -> tuple[str, str, int]:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise pycuda_missing from None
    err, props = cudart.cudaGetDeviceProperties(index)
    if err != cudart.cudaError_t.cudaSuccess:
        raise BackendError(f"no usable CUDA GPU ({err}): TensorRT engines need one; use --backend onnxruntime")
    name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
    return name, f"{props.major}.{props.minor}", int(props.multiProcessorCount)


def device_info() -> DeviceInfo:
    """This machine's GPU and TensorRT. ImportError without TensorRT (or pycuda/cuda-python)."""
    trt = import_tensorrt()
    name, capability, multiprocessors = gpu_identity()
    return DeviceInfo(name, capability, trt.__version__, multiprocessors)


def slug(text: str) -> str:
    """ "NVIDIA GeForce RTX 4090" -> "nvidia-geforce-rtx-4090": safe in a file name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def engine_name(device: DeviceInfo, onnx_sha256: str, precision: str) -> str:
    """model.<gpu>[-<N>sm].trt<version>.<onnx sha256>.<precision>.plan: one name per GPU model
    (two Orin modules that share a bundle folder keep their own plans)."""
    gpu = slug(device.gpu_name) + (f"-{device.multiprocessors}sm" if device.multiprocessors else "")
    return f"model.{gpu}.trt{device.tensorrt_version}.{onnx_sha256[:12]}.{precision}.plan"


def sidecar_path(plan: str | Path) -> Path:
    return Path(plan).with_suffix(".json")


def rebuild_command(bundle: Bundle, precision: str = "fp16") -> str:
    return f"semanticac-edge build-engine --bundle {shlex.quote(str(bundle.path))} --precision {precision}"


def engine_dirs(bundle: Bundle) -> list[Path]:
    """Where engines live, in lookup order: beside the bundle, then the user cache."""
    return [bundle.engines_dir, cache_dir(bundle.meta.model_id) / "engines"]


def writable_engines_dir(bundle: Bundle) -> Path:
    """The first folder of `engine_dirs` that can be written (a read-only bundle: the cache)."""
    reasons = []
    for folder in engine_dirs(bundle):
        problem = unwritable_reason(folder)
        if problem is None:
            return folder
        log.info("cannot write engines to %s", problem)
        reasons.append(problem)
    raise BackendError(
        "nowhere to write the engine: "
        + "; ".join(reasons)
        + ": make the bundle writable, or set $XDG_CACHE_HOME to a writable folder"
    )


def read_sidecar(plan: str | Path) -> dict:
    """The plan's JSON sidecar; BackendError naming the file when it is unreadable or no object."""
    path = sidecar_path(plan)
    return Fields(read_json(path, BackendError, what="the engine sidecar"), f"engine sidecar {path}", BackendError).data


def check_engine(sidecar: dict, device: DeviceInfo, bundle: Bundle, precision: str | None = None) -> str | None:
    """Why the engine described by `sidecar` cannot run here with this bundle (None: it can).

    Names every difference (ONNX hash, GPU, compute capability, TensorRT version, precision)
    and ends with the command that rebuilds it.
    """
    precision = precision or sidecar.get("precision") or "fp16"
    fix = f"rebuild it with `{rebuild_command(bundle, precision)}`"
    problems = Fields(sidecar, "engine sidecar", BackendError).problems(SIDECAR_FIELDS)
    if problems:
        return f"its sidecar is not one this build-engine writes ({'; '.join(problems)}); {fix}"
    if sidecar["format_version"] != SIDECAR_VERSION:
        return (
            f"its sidecar has format_version {sidecar['format_version']!r}, this reader knows {SIDECAR_VERSION}; {fix}"
        )
    differences = []
    if sidecar["onnx_sha256"] != bundle.meta.audio.sha256:
        differences.append(
            f"built from another model.onnx (sha256 {str(sidecar['onnx_sha256'])[:12]}, "
            f"the bundle's is {bundle.meta.audio.sha256[:12]})"
        )
    if sidecar["gpu_name"] != device.gpu_name:
        differences.append(f"built for GPU {sidecar['gpu_name']!r}, this device has {device.gpu_name!r}")
    if sidecar["compute_capability"] != device.compute_capability:
        differences.append(
            f"built for compute capability {sidecar['compute_capability']}, this GPU has {device.compute_capability}"
        )
    built_on = sidecar.get("multiprocessors") or 0  # a plan built before it was recorded: not known
    if built_on and device.multiprocessors and built_on != device.multiprocessors:
        differences.append(
            f"built on a GPU with {built_on} multiprocessors, this one has {device.multiprocessors} "
            "(another module of the same family)"
        )
    if sidecar["tensorrt_version"] != device.tensorrt_version:
        differences.append(
            f"built with TensorRT {sidecar['tensorrt_version']}, this device has {device.tensorrt_version}"
        )
    if sidecar["precision"] != precision:
        differences.append(f"built in {sidecar['precision']}, {precision} was asked for")
    return "; ".join(differences) + f": {fix}" if differences else None


def list_engines(bundle: Bundle, device: DeviceInfo, precision: str | None = None) -> list[EngineStatus]:
    """Every plan beside the bundle and in the cache (of `precision`, if given), with the
    reason each cannot be used here (None: it can). For `doctor` and the refusal messages."""
    found = []
    for folder in engine_dirs(bundle):
        pattern = f"model.*.{precision}.plan" if precision else "model.*.plan"
        for plan in sorted(folder.glob(pattern)) if folder.is_dir() else []:
            try:
                sidecar = read_sidecar(plan)
            except BackendError as err:
                found.append(
                    EngineStatus(plan, None, f"{err}; rebuild it with `{rebuild_command(bundle, precision or 'fp16')}`")
                )
                continue
            reason = check_engine(sidecar, device, bundle, precision)
            if reason is None and sidecar.get("plan_sha256"):
                try:
                    digest = sha256_file(plan)
                except OSError as err:  # not readable by this user (a service's own uid)
                    reason = f"cannot read the plan ({err.strerror or err}): make it readable, or rebuild it"
                else:
                    if digest != sidecar["plan_sha256"]:
                        reason = (
                            f"the plan file does not match its sidecar's sha256 (corrupt or replaced); rebuild it "
                            f"with `{rebuild_command(bundle, sidecar['precision'])}`"
                        )
            found.append(EngineStatus(plan, sidecar, reason))
    return found


def find_engine(bundle: Bundle, precision: str | None = None, device: DeviceInfo | None = None) -> Path | None:
    """The plan built for this device, TensorRT and bundle, or None (each refusal is logged).
    `precision` None: whichever was built, fp16 first (build-engine --precision fp32 for a model
    whose fp16 numerics are off must then be used, not passed over).

    Without `device` it asks this machine (`device_info`): ImportError without TensorRT.
    """
    if precision is not None:
        check_precision(precision)
    device = device or device_info()
    usable = []
    for status in list_engines(bundle, device, precision):
        if status.reason is None:
            usable.append(status.plan)
        else:
            log.info("engine %s not used: %s", status.plan, status.reason)
    rank = {name: i for i, name in enumerate(PRECISIONS)}
    return min(usable, key=lambda plan: rank.get(plan_precision(plan), len(rank)), default=None)


def plan_precision(plan: str | Path) -> str:
    """The precision a plan's name says it was built in (engine_name's last part)."""
    return Path(plan).stem.rsplit(".", 1)[-1]


def explain_missing_engine(bundle: Bundle, precision: str | None, device: DeviceInfo) -> str:
    """The message for "no engine fits": where we looked, what was refused and why, the fix."""
    refused = [f"  {s.plan.name}: {s.reason}" for s in list_engines(bundle, device, precision) if s.reason]
    where = " or ".join(str(d) for d in engine_dirs(bundle))
    lines = [
        f"no {precision + ' ' if precision else ''}TensorRT engine for this device ({device.gpu_name}, compute "
        f"capability {device.compute_capability}, TensorRT {device.tensorrt_version}) in {where}"
    ]
    lines += refused
    lines.append(f"build one with `{rebuild_command(bundle, precision or 'fp16')}`")
    return "\n".join(lines)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise BackendError(f"precision {precision!r} is not supported (allowed: {list(PRECISIONS)})")
