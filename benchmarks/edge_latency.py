"""Edge latency for the README: how long one window takes on ONNX Runtime, how far that is
from what this CPU could do at best, and whether `listen` keeps up in real time.

1. Bundles: the paper-size model and the small one, exported with random weights
   (`semanticac-train export --random-init --config paper|small --labels urban`) into a
   temporary folder (the paper-size text.onnx is ~260 MB), unless --paper-bundle/--small-bundle.
2. The floor: FLOPs per window / this CPU's GEMM rate. FLOPs are counted from model.onnx
   itself: every MatMul, Gemm and Conv, 2 FLOPs per multiply-add, with shapes from ONNX
   Runtime's symbolic shape inference at batch 1 (plain onnx.shape_inference cannot follow
   the Swin window reshapes). Where torch is installed, torch.utils.flop_counter counts the
   same architecture as a cross-check. The GEMM rate is numpy float32 matmul of 2048x2048
   on the same cores, measured in this run (the best of several).
3. Per-window latency: ONNX Runtime, batch 1, one real 10 s window (tiled to the model's
   frames as listen tiles it), p50/p99 over --runs after --warmup runs.
4. Real time: `semanticac-edge listen --input <60 s of real clips> --hop 1 --json` with the
   paper-size model, the file played in real time (not --fast), on --cores cores: windows
   emitted vs expected, windows dropped, latency_ms from its JSON lines, and the listen
   process's peak RSS and CPU time (getrusage(RUSAGE_CHILDREN) in a small wrapper process,
   the figure GNU `time -v` prints, without depending on it).

The whole process (and so every child) is pinned to the first --cores CPUs, and ONNX Runtime
and the BLAS get that many threads, so a larger machine measures the 2-core case too.

    .venv/bin/python benchmarks/edge_latency.py [--runs 30] [--cores 2] [--listen-seconds 60]

Audio: clips from $SEMANTICAC_DATA (ESC-50 and UrbanSound8K) concatenated; synthetic noise
and chirps when it is unset (said in the output).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GEMM_N = 2048
# The listen process's peak RSS and CPU time: getrusage(RUSAGE_CHILDREN) in a small wrapper
# process. Not os.wait4 from this process: subprocess starts children with vfork + exec, and
# Linux carries the old address space's high-water mark (this process's: bundles, torch)
# into the child's ru_maxrss. The wrapper is small, so what it reports is listen's own.
RUSAGE_WRAPPER = """
import json, resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    json.dump({"maxrss_kib": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime}, f)
sys.exit(code)
"""
COUNTED_OPS = ("MatMul", "Gemm", "Conv")


def pin_cores(cores: int) -> list[int]:
    """Run this process (and its children) on the first `cores` CPUs, with as many threads.
    Must happen before numpy loads its BLAS, which sizes its thread pool once."""
    available = sorted(os.sched_getaffinity(0))
    chosen = available[:cores]
    os.sched_setaffinity(0, chosen)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(len(chosen))
    return chosen


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def export_bundle(config: str, out: Path) -> float:
    """`semanticac-train export --random-init` into `out`; returns the seconds it took."""
    exe = Path(sys.executable).parent / "semanticac-train"
    cmd = [str(exe if exe.exists() else shutil.which("semanticac-train")), "export", "--random-init", "--config",
           config, "--out", str(out), "--labels", "urban"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"export of the {config} model failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def gemm_rate(n: int = GEMM_N, repeats: int = 5) -> float:
    """numpy float32 n x n matmul, FLOP/s (2 n^3 per product), the best of `repeats`."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: thread pool, page faults
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * n ** 3 / best


def _timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def onnx_flops(path: Path) -> dict[str, int]:
    """FLOPs per op type (MatMul, Gemm, Conv) of one batch-1 run of an ONNX graph."""
    import numpy as np
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(path))
    for graph_input in model.graph.input:  # batch 1: every shape below becomes a number
        dim = graph_input.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = 1
    model = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    shapes = {vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
              for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    shapes.update({init.name: list(init.dims) for init in model.graph.initializer})
    flops = dict.fromkeys(COUNTED_OPS, 0)
    for node in model.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        a, w, y = (shapes.get(name) for name in (node.input[0], node.input[1], node.output[0]))
        if any(s is None or None in s for s in (a, w, y)):
            raise SystemExit(f"{path.name}: shape of {node.op_type} {node.name} unknown after inference: "
                             f"{a} x {w} -> {y}")
        if node.op_type == "Conv":  # weight [C_out, C_in / groups, kh, kw]: one MAC per weight per output pixel
            macs = int(np.prod(y)) * int(np.prod(w[1:]))
        elif node.op_type == "Gemm":
            trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
            macs = int(np.prod(y)) * (a[0] if trans_a else a[1])
        else:  # MatMul, broadcast batch dims included in the output
            macs = int(np.prod(y)) * a[-1]
        flops[node.op_type] += 2 * macs
    return flops


def torch_flops(config: str, frames: int, n_mels: int) -> float | None:
    """torch.utils.flop_counter's count for the same architecture (None without torch)."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from train.export import AudioEmbedding
        from train.model.config import load_model_config
        from train.model.semanticac import build_model
    except ImportError:
        return None
    graph = AudioEmbedding(build_model(load_model_config(config)).eval())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        graph(torch.zeros(1, 1, frames, n_mels))
    return float(counter.get_total_flops())


def real_audio(seconds: float, sample_rate: int):
    """`seconds` of concatenated real clips at `sample_rate` (float32), and where they came from."""
    import numpy as np

    from edge.capture.audio import read_audio

    data = os.environ.get("SEMANTICAC_DATA")
    n = int(seconds * sample_rate)
    if not data or not Path(data).is_dir():
        rng = np.random.default_rng(0)
        t = np.arange(n) / sample_rate
        x = 0.1 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * (100 + 200 * (t % 5)) * t)
        return x.astype(np.float32), "synthetic noise and chirps (SEMANTICAC_DATA unset)"
    esc50 = sorted(Path(data, "esc50/audio").glob("*.flac"))[::37]
    us8k = sorted(Path(data, "us8k/audio/fold1").glob("*.ogg"))[::37]
    paths = [p for pair in zip(esc50, us8k) for p in pair]  # one clip of each, in turn
    parts, total = [], 0
    for path in paths:
        parts.append(read_audio(path, sample_rate))
        total += parts[-1].size
        if total >= n:
            break
    return np.concatenate(parts)[:n], f"{len(parts)} real clips from {data}"


def window_latency(bundle_path: Path, audio, runs: int, warmup: int, threads: int) -> dict:
    """ONNX Runtime, batch 1: seconds per window, p50/p99 over `runs` after `warmup`."""
    import numpy as np

    from edge.backends import OnnxRuntimeBackend
    from edge.bundle import read_bundle
    from edge.features import log_mel, tile_frames

    bundle = read_bundle(bundle_path, verify=True)
    fe = bundle.meta.frontend
    window = log_mel(audio[: fe.seconds_to_samples(bundle.meta.clip_seconds)], fe)
    started = time.perf_counter()
    backend = OnnxRuntimeBackend.for_bundle(bundle, threads=threads)
    load = time.perf_counter() - started
    with backend:
        def one():
            backend.embed(tile_frames(window, fe.frames)[None, None])

        for _ in range(warmup):
            one()
        times = np.array([_timed(one) for _ in range(runs)])
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)),
            "mean": float(times.mean()), "min": float(times.min()), "runs": runs, "load": load,
            "frames": fe.frames, "n_mels": fe.n_mels, "clip_seconds": bundle.meta.clip_seconds}


def listen_real_time(bundle_path: Path, wav: Path, hop: float, threads: int) -> dict:
    """Run `semanticac-edge listen` on `wav` in real time; its JSON lines and its rusage."""
    import numpy as np

    exe = Path(sys.executable).parent / "semanticac-edge"
    cmd = [str(exe if exe.exists() else shutil.which("semanticac-edge")), "listen", "--bundle", str(bundle_path),
           "--labels", "urban", "--input", str(wav), "--hop", str(hop), "--json", "--threads", str(threads)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("w+", suffix=".json") as usage_file:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", RUSAGE_WRAPPER, usage_file.name, *cmd], stdout=out, stderr=err)
        wall = time.perf_counter() - started
        out.seek(0), err.seek(0)
        lines, stderr = out.read().splitlines(), err.read()
        usage = json.loads(Path(usage_file.name).read_text() or "{}")
    if done.returncode != 0:
        raise SystemExit(f"listen failed ({done.returncode}):\n{stderr[-3000:]}")
    records = [json.loads(line) for line in lines if line.strip()]
    windows = [r for r in records if r["type"] == "window"]
    latency = np.array([r["latency_ms"] for r in windows], dtype=float)
    warnings = [r["message"] for r in records if r["type"] == "status" and r["level"] == "warning"]
    return {"windows": len(windows), "dropped": max((r["dropped"] for r in windows), default=0),
            "latency_p50": float(np.percentile(latency, 50)) if latency.size else math.nan,
            "latency_p99": float(np.percentile(latency, 99)) if latency.size else math.nan,
            "latency_max": float(latency.max()) if latency.size else math.nan,
            "peak_rss_mib": usage["maxrss_kib"] / 1024, "cpu_s": usage["cpu_s"], "wall_s": wall,
            "warnings": warnings, "last_t": windows[-1]["t"] if windows else math.nan}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="timed windows per model (after warm-up)")
    parser.add_argument("--small-runs", type=int, default=200, help="timed windows for the small model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed windows first")
    parser.add_argument("--cores", type=int, default=2, help="CPUs to run on (and threads)")
    parser.add_argument("--listen-seconds", type=float, default=60.0, help="length of the real-time listen test")
    parser.add_argument("--hop", type=float, default=1.0, help="hop of the real-time listen test (s)")
    parser.add_argument("--paper-bundle", type=Path, help="reuse this paper-size bundle instead of exporting one")
    parser.add_argument("--small-bundle", type=Path, help="reuse this small bundle instead of exporting one")
    parser.add_argument("--skip-listen", action="store_true", help="leave out the real-time listen test")
    args = parser.parse_args()

    cores = pin_cores(args.cores)
    import numpy as np
    import onnxruntime
    import soundfile as sf

    threads = len(cores)
    load = os.getloadavg()
    print(f"edge latency: {cpu_name()}, running on CPUs {cores} of {os.cpu_count()} ({threads} threads); "
          f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}; load average at start "
          f"{load[0]:.2f} (other work on these cores slows every figure below)")

    with tempfile.TemporaryDirectory(prefix="edge-latency-") as tmp:
        bundles = {}
        for config, given in (("paper", args.paper_bundle), ("small", args.small_bundle)):
            if given:
                bundles[config] = given
                print(f"{config} bundle: {given} (given)")
            else:
                bundles[config] = Path(tmp) / config
                took = export_bundle(config, bundles[config])
                size = sum(f.stat().st_size for f in bundles[config].rglob("*") if f.is_file()) / 1e6
                print(f"{config} bundle: exported with random weights in {took:.0f} s ({size:.0f} MB)")

        audio, source = real_audio(max(args.listen_seconds, 10.0), 32000)
        # The GEMM rate is measured next to each model's latency: the best figure is the floor's
        # rate (on a shared machine, the least disturbed one).
        rates, lats = [], {}
        for config in ("paper", "small"):
            rates.append(gemm_rate())
            lats[config] = window_latency(bundles[config], audio, args.runs if config == "paper" else args.small_runs,
                                          args.warmup, threads)
        rates.append(gemm_rate())
        rate = max(rates)
        print(f"\nGEMM rate: numpy float32 {GEMM_N}x{GEMM_N} matmul on {threads} threads: {rate / 1e9:.1f} GFLOP/s "
              f"(best of 5, measured before, between and after the latency runs: "
              f"{', '.join(f'{r / 1e9:.1f}' for r in rates)})")

        results = {}
        for config in ("paper", "small"):
            flops = onnx_flops(bundles[config] / "model.onnx")
            results[config] = lat = lats[config]
            lat["flops"] = total = sum(flops.values())
            lat["torch_flops"] = torch_flops(config, lat["frames"], lat["n_mels"])
            parts = ", ".join(f"{op} {f / 1e9:.3f}" for op, f in flops.items() if f)
            check = ("" if lat["torch_flops"] is None else
                     f"; torch FlopCounterMode on the same architecture: {lat['torch_flops'] / 1e9:.3f} GFLOP "
                     f"(x{lat['torch_flops'] / total:.4f})")
            print(f"\n{config} model: {total / 1e9:.3f} GFLOP per window ({parts}; 2 FLOPs per multiply-add, "
                  f"from model.onnx){check}")
            floor = total / rate
            print(f"  ONNX Runtime, batch 1, {lat['runs']} runs after {args.warmup} warm-up "
                  f"(session load {lat['load']:.1f} s): p50 {lat['p50'] * 1e3:.1f} ms, p99 {lat['p99'] * 1e3:.1f} ms, "
                  f"mean {lat['mean'] * 1e3:.1f} ms, min {lat['min'] * 1e3:.1f} ms")
            print(f"  floor (FLOPs / GEMM rate): {floor * 1e3:.1f} ms; p50 is {lat['p50'] / floor:.1f}x the floor, "
                  f"{total / lat['p50'] / 1e9:.1f} GFLOP/s achieved = {total / lat['p50'] / rate:.0%} of the GEMM rate; "
                  f"the fastest run is {lat['min'] / floor:.1f}x the floor")
        paper, small = results["paper"], results["small"]
        print(f"\npaper / small: {paper['flops'] / small['flops']:.0f}x the FLOPs, "
              f"{paper['p50'] / small['p50']:.0f}x the p50 latency")
        print(f"the issue's 'about 12 GFLOP per paper-size window': measured {paper['flops'] / 1e9:.2f} GFLOP "
              f"({paper['flops'] / 2e9:.2f} G multiply-adds)")

        if args.skip_listen:
            return
        wav = Path(tmp) / "listen.wav"
        clip = audio[: int(args.listen_seconds * 32000)]
        sf.write(wav, clip, 32000, subtype="PCM_16")
        window = paper["clip_seconds"]
        expected = int(math.floor((clip.size / 32000 - window) / args.hop + 1e-9)) + 1
        print(f"\nreal time: semanticac-edge listen --input <{clip.size / 32000:.0f} s WAV, {source}> --hop {args.hop:g} "
              f"--json --threads {threads}, paper-size model, window {window:g} s, on {threads} cores")
        run = listen_real_time(bundles["paper"], wav, args.hop, threads)
        keeps_up = run["dropped"] == 0 and run["latency_p99"] < args.hop * 1e3
        print(f"  windows: {run['windows']} emitted, {expected} expected, {run['dropped']} dropped "
              f"(last window ends at t={run['last_t']:.2f} s)")
        print(f"  latency_ms (inference per window, from its JSON): p50 {run['latency_p50']:.0f}, "
              f"p99 {run['latency_p99']:.0f}, max {run['latency_max']:.0f}; p99 / hop = "
              f"{run['latency_p99'] / (args.hop * 1e3):.2f}")
        print(f"  listen process: wall {run['wall_s']:.1f} s for {clip.size / 32000:.0f} s of audio, CPU "
              f"{run['cpu_s']:.1f} s ({run['cpu_s'] / run['wall_s']:.2f} cores busy on average), peak RSS "
              f"{run['peak_rss_mib']:.0f} MiB")
        for message in run["warnings"][:5]:
            print(f"  warning from listen: {message}")
        print(f"  keeps up at hop {args.hop:g} s on {threads} cores: {'yes' if keeps_up else 'NO'} "
              "(no window dropped and p99 latency below the hop)")
        print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
