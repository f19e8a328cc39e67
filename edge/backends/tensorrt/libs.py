"""The two libraries TensorRT work needs, imported only when used, with errors that say where
each comes from: tensorrt (JetPack) and pycuda (the [trt] extra)."""

from __future__ import annotations

INSTALL = 'pip install "semanticac-edge[trt]"'
MIN_VERSION = (8, 6)  # the named-tensor API and execute_async_v3
_LOGGER: list = []  # the one trt.Logger: TensorRT keeps a single logger pointer, which must outlive its objects


def import_tensorrt():
    """`tensorrt`, or a one-line ImportError saying where it comes from."""
    try:
        import tensorrt
    except ImportError as err:
        raise ImportError(
            "TensorRT is not installed: it comes with JetPack (make the venv with "
            f"--system-site-packages to see it), then {INSTALL}{_cause(err, 'tensorrt')}"
        ) from err
    if tensorrt_version(tensorrt) < MIN_VERSION:
        raise ImportError(
            f"TensorRT {tensorrt.__version__} is too old: this backend needs TensorRT >= "
            f"{MIN_VERSION[0]}.{MIN_VERSION[1]} (JetPack 6.0 ships 8.6, JetPack 6.1 and later 10.x)"
        )
    return tensorrt


def _cause(err: ImportError, package: str) -> str:
    """ "" where `package` itself is missing; else Python's words, in brackets: a package that is there but
    cannot load (libnvinfer or libcuda not found: a container without the NVIDIA runtime) has another fix."""
    missing = isinstance(err, ModuleNotFoundError) and (err.name or "").split(".")[0] == package
    return "" if missing else f" (import {package}: {err})"


def trt_logger(trt):
    """The process's one trt.Logger (warnings and errors), for every Builder and Runtime."""
    if not _LOGGER:
        _LOGGER.append(trt.Logger(trt.Logger.WARNING))
    return _LOGGER[0]


def tensorrt_version(trt) -> tuple[int, int]:
    major, minor = (trt.__version__.split(".") + ["0"])[:2]
    return int(major), int(minor)


def import_pycuda():
    try:
        import pycuda.driver as cuda
    except ImportError as err:
        raise ImportError(
            f"pycuda is not installed (the TensorRT backend needs it): {INSTALL} (it compiles against CUDA: on "
            "JetPack put nvcc on the PATH first, export PATH=/usr/local/cuda/bin:$PATH; a container needs the "
            f"NVIDIA runtime for libcuda){_cause(err, 'pycuda')}"
        ) from err
    return cuda
