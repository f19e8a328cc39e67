"""Cost of the log-mel frontend per second of audio, on real recordings.

At a hop of 1 s the listen loop needs the latest 10 s window every second. Two ways:
  incremental  StreamingLogMel computes only the hop's new frames (what edge does)
  recompute    log_mel over the whole 10 s window at every hop
and, for reference, the training twin (train.features: torch.stft) recomputing the same window on the CPU.

    python benchmarks/frontend.py [--seconds 120] [--repeats 3]

Audio: clips from $SEMANTICAC_DATA (ESC-50 and UrbanSound8K, resampled to 32 kHz)
concatenated; synthetic noise + chirps when the variable is unset (said in the output).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from edge.capture.audio import read_audio
from edge.features import Frontend, StreamingLogMel, log_mel


def real_audio(seconds: float, fe: Frontend) -> tuple[np.ndarray, str]:
    data = os.environ.get("SEMANTICAC_DATA")
    if not data or not Path(data).is_dir():
        rng = np.random.default_rng(0)
        n = int(seconds * fe.sample_rate)
        t = np.arange(n) / fe.sample_rate
        x = 0.1 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * (100 + 200 * (t % 5)) * t)
        return x.astype(np.float32), "synthetic (SEMANTICAC_DATA unset)"
    paths = sorted(Path(data, "esc50/audio").glob("*.flac"))[::40] + sorted(Path(data, "us8k/audio/fold1").glob("*.ogg"))[::40]
    parts, total = [], 0
    for path in paths:
        parts.append(read_audio(path, fe.sample_rate))
        total += parts[-1].size
        if total >= seconds * fe.sample_rate:
            break
    return np.concatenate(parts)[: int(seconds * fe.sample_rate)], f"{len(parts)} real clips from {data}"


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="audio length to process")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the fastest counts")
    parser.add_argument("--window", type=float, default=10.0, help="window length (s)")
    parser.add_argument("--hop", type=float, default=1.0, help="hop between windows (s)")
    args = parser.parse_args()

    fe = Frontend()
    audio, source = real_audio(args.seconds, fe)
    seconds = audio.size / fe.sample_rate
    hop, window = fe.seconds_to_samples(args.hop), fe.seconds_to_samples(args.window)
    hops = [audio[i:i + hop] for i in range(0, audio.size - hop + 1, hop)]
    ends = range(window, audio.size + 1, hop)  # a full window is ready at each of these

    def incremental():
        stream = StreamingLogMel(fe)
        for block in hops:
            stream.push(block)

    def recompute():
        for end in ends:
            log_mel(audio[end - window:end], fe)

    results = {"incremental (edge, numpy)": best_of(args.repeats, incremental) / seconds,
               "recompute window (numpy)": best_of(args.repeats, recompute) / (len(ends) * args.hop)}
    try:
        import torch

        from train.features import LogMel

        torch_mel, wave = LogMel(fe), torch.from_numpy(audio)

        def torch_recompute():
            with torch.inference_mode():
                for end in ends:
                    torch_mel(wave[None, end - window:end])

        results[f"recompute window (torch CPU, {torch.get_num_threads()} threads)"] = (
            best_of(args.repeats, torch_recompute) / (len(ends) * args.hop))
    except ImportError:
        print("torch not installed: its line is skipped (pip install .[train])")

    base = results["incremental (edge, numpy)"]
    print(f"frontend cost per second of audio: {seconds:.0f} s of audio ({source}); window {args.window:g} s, "
          f"hop {args.hop:g} s; {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"{'method':<48} {'ms per s of audio':>18} {'x incremental':>14}")
    for name, cost in results.items():
        print(f"{name:<48} {cost * 1e3:>18.3f} {cost / base:>14.1f}")


if __name__ == "__main__":
    main()
