"""TensorRT backend: runs a plan that `edge.backends.tensorrt.builder.build_engine` built on this device.

The named-tensor API of TensorRT 10 (JetPack 6), also present in 8.6:
    engine.num_io_tensors / get_tensor_name / get_tensor_mode / get_tensor_dtype /
    get_tensor_shape / get_tensor_profile_shape, context.set_input_shape /
    set_tensor_address / get_tensor_shape / execute_async_v3.
Buffers are pycuda allocations: page-locked host memory and device memory sized once for
the optimisation profile's largest shapes, bound once; a batch above the profile's maximum
is split by the base class. Every CUDA call runs with the device's primary context pushed
on the calling thread, so a backend opened on one thread can run on another (the listen
loop's worker); a lock keeps the single execution context to one call at a time.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edge.backends.base import Backend, GraphSpec, TensorSpec, graph_spec, reconcile
from edge.backends.tensorrt.libs import import_pycuda, import_tensorrt, trt_logger
from edge.bundle import Bundle
from edge.errors import BackendError

log = logging.getLogger(__name__)


class _Buffer:
    """Page-locked host memory and device memory for one tensor at its largest shape."""

    def __init__(self, cuda, size: int, dtype: np.dtype) -> None:
        self.host = cuda.pagelocked_empty(max(size, 1), dtype)  # flat; viewed per call at the real shape
        self.device = cuda.mem_alloc(self.host.nbytes)

    def free(self) -> None:
        self.device.free()
        self.host.base.free()  # the HostAllocation behind the array: free it while the context is current


class TensorRTBackend(Backend):
    """One deserialised engine with one execution context and one CUDA stream.

    `spec`: what model.json promises about the graph the engine was built from (checked
    here); `fix`: the command that rebuilds the engine, quoted by every refusal.
    """

    name = "tensorrt"

    def __init__(
        self,
        plan: str | Path,
        *,
        spec: GraphSpec | None = None,
        fix: str = "rebuild it with `semanticac-edge build-engine --bundle BUNDLE`",
        device: int = 0,
    ) -> None:
        trt = import_tensorrt()
        cuda = import_pycuda()
        plan = Path(plan)
        if not plan.is_file():
            raise BackendError(f"TensorRT engine {plan} is missing: {fix}")
        try:
            cuda.init()
            gpu = cuda.Device(device)
            self.gpu_name = gpu.name()
            ctx = gpu.retain_primary_context()
        except cuda.Error as err:
            raise BackendError(
                f"no usable CUDA GPU for the TensorRT backend ({err}): use --backend onnxruntime"
            ) from None
        self._cuda, self._ctx, self._lock = cuda, ctx, threading.Lock()
        self._buffers: dict[str, _Buffer] = {}
        # TensorRT and pycuda objects (untyped), set by _open
        self._context: Any = None
        self._engine: Any = None
        self._runtime: Any = None
        self._stream: Any = None
        ctx.push()
        try:
            inputs, outputs, max_batch = self._open(trt, plan, spec, fix)
        except BaseException as err:
            self._free()
            cuda.Context.pop()
            ctx.detach()
            self._ctx = None
            if isinstance(err, cuda.Error):  # pinned or device memory, a stream: auto falls back on BackendError
                raise BackendError(
                    f"CUDA failed while opening {plan.name} ({err}): out of GPU memory? close other GPU programs, "
                    "rebuild with a smaller --max-batch, or use --backend onnxruntime"
                ) from None
            raise
        cuda.Context.pop()
        super().__init__(inputs, outputs, max_batch, plan)
        self.tensorrt_version = trt.__version__
        log.info(
            "TensorRT %s on %s: %s, %s, batches of up to %d",
            trt.__version__,
            self.gpu_name,
            plan.name,
            ", ".join(t.describe() for t in inputs + outputs),
            max_batch,
        )

    @classmethod
    def for_bundle(cls, bundle: Bundle, plan: str | Path, precision: str = "fp16") -> TensorRTBackend:
        """Open an engine built from the bundle's model.onnx (see edge.backends.tensorrt.cache.find_engine)."""
        from edge.backends.tensorrt.cache import rebuild_command

        fix = f"rebuild it with `{rebuild_command(bundle, precision)}`"
        return cls(plan, spec=graph_spec(bundle, "audio"), fix=fix)

    def _open(self, trt, plan: Path, spec: GraphSpec | None, fix: str):
        self._runtime = trt.Runtime(trt_logger(trt))
        self._engine = engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if engine is None:
            raise BackendError(
                f"TensorRT {trt.__version__} cannot load the engine {plan} (its log above says why): "
                f"it is corrupt, or was built by another TensorRT version or for another GPU; {fix}"
            )
        self._context = context = engine.create_execution_context()
        if context is None:
            raise BackendError(f"TensorRT cannot create an execution context for {plan.name} (out of GPU memory?)")
        self._stream = self._cuda.Stream()

        have_in, have_out, self._limits = [], [], {}
        for name in [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]:
            dims = tuple(engine.get_tensor_shape(name))
            try:
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            except TypeError:
                raise BackendError(
                    f"{plan.name}: tensor {name} has type {engine.get_tensor_dtype(name)}, which has "
                    f"no numpy equivalent; {fix}"
                ) from None
            tensor = TensorSpec(name, dtype, tuple(d if d >= 0 else None for d in dims))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                have_in.append(tensor)
                if -1 in dims:  # dynamic: the bounds of optimisation profile 0 (min, opt, max)
                    low, _, high = engine.get_tensor_profile_shape(name, 0)
                    self._limits[name] = (tuple(low), tuple(high))
                else:
                    self._limits[name] = (dims, dims)
            else:
                have_out.append(tensor)
        if spec is not None:
            inputs, outputs = reconcile(spec, have_in, have_out, f"engine {plan.name}", fix)
        else:
            inputs, outputs = tuple(have_in), tuple(have_out)
        self._all_outputs = [t.name for t in have_out]  # every output needs an address, used or not

        # Size every buffer at the profile's largest shapes and bind it once.
        for name, (_, high) in self._limits.items():
            if not context.set_input_shape(name, high):
                raise BackendError(
                    f"{plan.name}: TensorRT refused the profile's own maximum shape {high} for {name}; {fix}"
                )
        dtypes = {t.name: t.dtype for t in have_in + have_out}
        for name in list(self._limits) + self._all_outputs:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(
                    f"{plan.name}: output {name} has a data-dependent shape {shape}, which this "
                    f"backend does not support; {fix}"
                )
            self._buffers[name] = buffer = _Buffer(self._cuda, int(np.prod(shape)), dtypes[name])
            if not context.set_tensor_address(name, int(buffer.device)):
                raise BackendError(f"{plan.name}: TensorRT refused the device address for {name}; {fix}")
        max_batch = min(high[0] for _, high in self._limits.values())
        return inputs, outputs, max_batch

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._ctx is None:
            raise BackendError(f"the TensorRT backend for {self.source.name} is closed")
        cuda, context, stream = self._cuda, self._context, self._stream
        for name, x in inputs.items():
            low, high = self._limits[name]
            if any(not lo <= n <= hi for lo, n, hi in zip(low, x.shape, high)):
                raise BackendError(
                    f"{self.source.name}: input {name} of shape {list(x.shape)} is outside the "
                    f"engine's profile ({list(low)} to {list(high)}); rebuild the engine for it"
                )
        with self._lock:
            if self._ctx is None:  # closed by another thread since the check above
                raise BackendError(f"the TensorRT backend for {self.source.name} is closed")
            self._ctx.push()
            try:
                for name, x in inputs.items():
                    if not context.set_input_shape(name, x.shape):
                        raise BackendError(
                            f"{self.source.name}: TensorRT refused input {name} of shape {list(x.shape)}"
                        )
                    view = self._buffers[name].host[: x.size].reshape(x.shape)
                    np.copyto(view, x)
                    cuda.memcpy_htod_async(self._buffers[name].device, view, stream)
                if not context.execute_async_v3(stream.handle):
                    raise BackendError(f"TensorRT failed to run {self.source.name} (its log above says why)")
                results = {}
                for name in self.output_names:
                    shape = tuple(context.get_tensor_shape(name))
                    view = self._buffers[name].host[: int(np.prod(shape))].reshape(shape)
                    cuda.memcpy_dtoh_async(view, self._buffers[name].device, stream)
                    results[name] = view
                stream.synchronize()
                return {name: view.copy() for name, view in results.items()}  # the buffers are reused
            except cuda.Error as err:  # a copy or the run failed on the GPU: listen ends its events and exits 1
                raise BackendError(f"CUDA failed running {self.source.name}: {err}") from None
            finally:
                cuda.Context.pop()

    def _free(self) -> None:
        """Release TensorRT objects and buffers; the context must be current."""
        self._context = self._engine = self._runtime = None  # execution context before engine before runtime
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers = {}
        self._stream = None

    def close(self) -> None:
        if getattr(self, "_ctx", None) is None:
            return
        with self._lock:
            if self._ctx is None:  # closed by another thread meanwhile
                return
            self._ctx.push()
            try:
                self._free()
            finally:
                self._cuda.Context.pop()
                self._ctx.detach()
                self._ctx = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: pycuda may already be gone
            pass
