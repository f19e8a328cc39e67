#!/usr/bin/env python3
"""GPU check of the TensorRT path: build an engine from a bundle with edge.backends.tensorrt.builder, run it with
the TensorRT backend, compare with ONNX Runtime on the CPU, time it.

    python benchmarks/gpu_check_trt.py --bundle BUNDLE [--precision fp16] [--max-batch 8] [--iters 200]

Run from the repository root (or with semanticac-edge installed). Needs an NVIDIA GPU,
TensorRT, pycuda and onnxruntime (onnxconverter-common too on TensorRT >= 11). Anywhere else
it prints one line saying what is missing and exits 0. Exit status 1: the engine disagrees
with ONNX Runtime (cosine below the threshold) or something failed.
The engine goes to a temporary folder (--out-dir to keep it); the bundle is not written.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path


def missing_prerequisite() -> str | None:
    """One line naming what this machine lacks for the check, or None."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT not installed (it comes with JetPack, or NVIDIA's pip index)"
    try:
        import pycuda.driver as cuda
    except ImportError:
        return 'pycuda not installed (pip install "semanticac-edge[trt]")'
    try:
        cuda.init()
        if cuda.Device.count() < 1:
            return "no CUDA GPU"
    except cuda.Error as err:
        return f"no usable CUDA GPU: {err}"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return 'onnxruntime not installed (pip install "semanticac-edge[ort]")'
    return None


def percentile_ms(seconds: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(seconds) * 1e3, q))


def time_calls(fn, x, iters: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="bundle folder (model.json + model.onnx)")
    parser.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--workspace-gib", type=float, default=2.0)
    parser.add_argument("--iters", type=int, default=200, help="timed calls per measurement")
    parser.add_argument("--out-dir", default=None, help="keep the engine here (default: a temporary folder)")
    parser.add_argument("--min-cosine", type=float, default=None,
                        help="pass threshold (default 0.999 for fp16, 0.99999 for fp32)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    reason = missing_prerequisite()
    if reason:
        print(f"gpu_check_trt: skipped: {reason}")
        return 0
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # run from the repository root without installing

    import numpy as np
    import tensorrt as trt

    from edge.backends import OnnxRuntimeBackend, TensorRTBackend
    from edge.backends.tensorrt.builder import build_engine
    from edge.backends.tensorrt.cache import device_info, engine_dirs, find_engine, read_sidecar
    from edge.bundle import read_bundle

    threshold = args.min_cosine or (0.999 if args.precision == "fp16" else 0.99999)
    bundle = read_bundle(args.bundle, verify=True)
    device = device_info()
    print(f"device: {device.gpu_name} (compute capability {device.compute_capability}), "
          f"TensorRT {trt.__version__}, bundle {bundle.path} ({bundle.meta.model_id})")

    with tempfile.TemporaryDirectory(prefix="gpu-check-trt-") as tmp:
        out_dir = args.out_dir or tmp
        start = time.monotonic()
        plan = build_engine(bundle, precision=args.precision, max_batch=args.max_batch,
                            workspace_gib=args.workspace_gib, out_dir=out_dir)
        build_s = time.monotonic() - start
        sidecar = read_sidecar(plan)
        print(f"built {plan.name} in {build_s:.1f} s: {plan.stat().st_size / 1e6:.1f} MB, "
              f"strongly typed: {sidecar['builder']['strongly_typed']}, inputs {sidecar['inputs']}")
        # find_engine looks beside the bundle and in the cache: check it when the plan went there.
        if any(Path(out_dir).resolve() == d.resolve() for d in engine_dirs(bundle)):
            found = find_engine(bundle, args.precision, device)
            print(f"find_engine: {'ok' if found == plan else f'FAIL (returned {found})'}")

        frames, mels = bundle.meta.frontend.frames, bundle.meta.frontend.n_mels
        rng = np.random.default_rng(0)
        # Log-mel-like values (dB): around -40 with a spread of 20.
        batches = {1: None, args.max_batch: None, args.max_batch + 3: None}
        for b in batches:
            batches[b] = (rng.normal(-40.0, 20.0, size=(b, 1, frames, mels))).astype(np.float32)

        reference = OnnxRuntimeBackend.for_bundle(bundle, providers=["CPUExecutionProvider"])
        ok = True
        with TensorRTBackend.for_bundle(bundle, plan, args.precision) as engine:
            print(f"TensorRT backend: max_batch {engine.max_batch}, {engine!r}")
            for b, mel in batches.items():
                got, want = engine.embed(mel), reference.embed(mel)
                cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
                worst = float(cosine.min())
                max_abs = float(np.abs(got - want).max())
                verdict = "ok" if worst >= threshold and np.isfinite(got).all() else "FAIL"
                ok &= verdict == "ok"
                print(f"batch {b:3d}{' (split)' if b > engine.max_batch else '':8s}: cosine min {worst:.6f}, "
                      f"max abs {max_abs:.2e} vs ONNX Runtime CPU -> {verdict} (threshold {threshold})")

            for b in (1, args.max_batch):
                times = time_calls(engine.embed, batches[b], args.iters)
                print(f"TensorRT {args.precision} batch {b}: p50 {percentile_ms(times, 50):.2f} ms, "
                      f"p99 {percentile_ms(times, 99):.2f} ms over {args.iters} calls "
                      f"({b / percentile_ms(times, 50) * 1e3:.0f} windows/s at p50)")
        cpu_iters = max(5, min(20, args.iters // 10))
        times = time_calls(reference.embed, batches[1], cpu_iters, warmup=2)
        print(f"ONNX Runtime CPU batch 1: p50 {percentile_ms(times, 50):.2f} ms, "
              f"p99 {percentile_ms(times, 99):.2f} ms over {cpu_iters} calls")
    print("gpu_check_trt: PASS" if ok else "gpu_check_trt: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as err:  # a one-line failure, with the type, for the log
        print(f"gpu_check_trt: FAIL: {type(err).__name__}: {err}")
        raise
