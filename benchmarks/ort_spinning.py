"""ONNX Runtime's threads sleeping between runs (the product) against spinning (ONNX Runtime's
own default, $SEMANTICAC_ORT_SPINNING=1), through `semanticac-edge listen` in the same run.

    SEMANTICAC_DATA=../shared/data .venv/bin/python benchmarks/ort_spinning.py [--seconds 60] [--repeats 2]

Audio: UrbanSound8K development clips ($SEMANTICAC_DATA/us8k, seeded shuffle), joined and
written at 48 kHz stereo, as a USB microphone delivers them (so resampling and the mixdown
count); without the data, edge.tools.bench's synthetic signal. Each variant runs, alternating,
--repeats times:
  live   `listen --labels urban --input WAV --json` in real time (a file paced as a microphone):
         the CPU time of the command (getrusage of the child: every thread) less that of a run
         on 0.1 s of audio (loading the model and the set), per second of audio, as % of one
         core: what a live microphone costs
  fast   the same with --fast (a file read as fast as it goes): wall seconds and x real time
Medians over the repeats, and the ratios spinning / sleeping.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.capture.audio import read_audio  # noqa: E402
from edge.tools.bench import bench_signal  # noqa: E402

RATE = 48000
VARIANTS = {"sleeping (product)": "0", "spinning (ONNX Runtime's default)": "1"}


def make_audio(seconds: float, path: Path) -> str:
    """`seconds` of real clips (or the synthetic signal) as 48 kHz stereo 16-bit WAV; what it holds."""
    data = Path(os.environ.get("SEMANTICAC_DATA", ROOT.parent / "shared" / "data")) / "us8k"
    clips = sorted(p for p in data.rglob("*") if p.suffix in (".flac", ".ogg", ".wav")) if data.is_dir() else []
    need = int(seconds * RATE)
    if clips:
        random.Random(0).shuffle(clips)
        parts, have = [], 0
        for clip in clips:
            audio = read_audio(clip, RATE)
            parts.append(audio)
            have += audio.size
            if have >= need:
                break
        mono, what = np.concatenate(parts)[:need], f"UrbanSound8K clips from {data}"
    else:
        mono, what = bench_signal(need, RATE), "the synthetic bench signal (no $SEMANTICAC_DATA/us8k)"
    sf.write(path, np.stack([mono, 0.9 * mono], axis=1), RATE, subtype="PCM_16")
    return what


def timed(args: list[str], spinning: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one `semanticac-edge` command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from edge.cli import main; main()", *args],
        check=True, stdout=subprocess.DEVNULL, env={**os.environ, "SEMANTICAC_ORT_SPINNING": spinning}, cwd=ROOT,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per run")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    listen = ["listen", "--labels", "urban", "--json", "--input"]
    figures: dict[str, dict[str, list[float]]] = {v: {"live": [], "fast_wall": [], "load": []} for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="ort-spinning-") as tmp:
        wav, short = Path(tmp) / "audio.wav", Path(tmp) / "short.wav"
        what = make_audio(args.seconds, wav)
        sf.write(short, np.zeros((RATE // 10, 2), np.float32), RATE, subtype="PCM_16")
        print(f"{args.seconds:g} s of {what}, 48 kHz stereo; {len(os.sched_getaffinity(0))} usable cores", flush=True)
        for repeat in range(args.repeats):
            for variant, spinning in VARIANTS.items():
                _, load = timed([*listen, str(short), "--fast"], spinning)
                _, live = timed([*listen, str(wav)], spinning)
                fast_wall, _ = timed([*listen, str(wav), "--fast"], spinning)
                f = figures[variant]
                f["load"].append(load)
                f["live"].append(100 * (live - load) / args.seconds)
                f["fast_wall"].append(fast_wall)
                print(f"  {repeat + 1}: {variant}: live {f['live'][-1]:.1f} % of a core, fast {fast_wall:.2f} s "
                      f"(loading {load:.2f} CPU-s)", flush=True)
    print(f"\n{'':36} {'live: % of one core':>20} {'fast: wall s':>13} {'x real time':>12}")
    med = {v: {k: statistics.median(x) for k, x in f.items()} for v, f in figures.items()}
    for variant, m in med.items():
        print(f"{variant:36} {m['live']:20.1f} {m['fast_wall']:13.2f} {args.seconds / m['fast_wall']:12.1f}")
    sleeping, spinning = med.values()
    print(f"spinning / sleeping: live CPU {spinning['live'] / sleeping['live']:.2f}x, "
          f"fast wall {spinning['fast_wall'] / sleeping['fast_wall']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
