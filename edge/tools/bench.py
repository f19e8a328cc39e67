"""`semanticac-edge bench`: how fast this device runs a bundle, in the listen loop's terms.

For each backend (ONNX Runtime always; TensorRT when an engine built for this GPU exists):
  per-window latency  one window (batch 1, tiled to the model's frames, as the loop tiles it)
                      through `backend.embed`; p50 and p99 over the runs of `seconds` of
                      timing, after warm-up runs that are not counted
  real-time factor    processing time per hop / hop, processing = p50 window latency +
                      the frontend's cost per hop (`rtf`; `rtf_p99` with the p99 latency);
                      below 1 the loop keeps up. Where the vocabulary graph runs on every
                      window of the label set (`--labels`: a label no one trained, or the
                      bundle's head: edge.vocabulary), its latency (ONNX Runtime, timed on its
                      own) is added to the window's: p50 to p50, p99 to p99 (an upper bound)
  smallest hop        the shortest hop that still keeps up with the p99 latency: hop h (a
                      whole number of frames of f seconds) keeps up when h >= L99 + c * h/f,
                      c being the incremental frontend's cost per hop of 1 frame, so
                      h = ceil(L99 / (f - c) / f) frames (None: the frontend alone is too slow)
and, once, the frontend per hop: incremental StreamingLogMel (what listen does: only the
hop's new frames) against recomputing log_mel over the whole window at every hop; the whole
listen pipeline on a file read as fast as it runs; a live run (`live_seconds` of audio at 48 kHz
stereo, as a USB microphone delivers it, paced by the wall clock as a microphone is, resampled
and mixed down as listen does): the CPU the process used (every thread) from its first window to
the end, per second, as % of one core, which is what a live stream costs, loading aside (rtf is a
window's latency per hop, not that); and the peak RSS of this process (resource.getrusage
ru_maxrss: everything loaded so far).

The audio is synthetic (noise and a chirp, seeded): speed does not depend on what is heard.

`run_bench` returns one dict, which `--json` prints as is. Its keys:
    schema (1), bundle, model_id, window_s, hop_s, frame_s, window_frames, hop_frames,
    model_frames, threads (null: the runtime's default), cpu_count (the cores this process may use), seconds,
    frontend {incremental_ms_per_hop, recompute_ms_per_hop, recompute_over_incremental, hops_timed},
    backends {name: {device, runs, warmup, p50_ms, p99_ms, mean_ms, min_ms, max_ms (the audio graph
                     alone), rtf, rtf_p99, keeps_up, min_hop_s (the window: with the vocabulary
                     graph where it runs), peak_rss_mib}},
    skipped {name: why it was not timed}, min_hop_method,
    vocabulary {runs, p50_ms, p99_ms, in_window, labels}: the vocabulary graph alone (null without
    one), and whether it runs on every window of the set `labels` (then rtf and the rest count it),
    pipeline {audio_s, wall_s, x_realtime, windows, labels} (null with pipeline_seconds 0),
    live {audio_s, input_rate, channels, measured_s, cpu_percent, windows, dropped, labels} (null with
    live_seconds 0), peak_rss_mib
"""

from __future__ import annotations

import io
import logging
import math
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf

from edge.backends.base import usable_cores
from edge.bundle import Bundle, resolve_bundle
from edge.errors import BackendError, OptionError
from edge.features import StreamingLogMel, Windowing, log_mel, tile_frames
from edge.labels.labelset import resolve_label_set
from edge.listen import ListenOptions, listen, scorer_for
from edge.outputs.sinks import Sink

log = logging.getLogger(__name__)

SCHEMA = 1
BENCH_BACKENDS = ("onnxruntime", "tensorrt")
WARMUP_RUNS = 3  # first runs pay for allocation and kernel selection
MIN_RUNS = 5  # even when one run is longer than `seconds`
MAX_RUNS = 100_000
FRONTEND_SECONDS = 10.0  # audio timed for the frontend (at least MIN_HOPS hops)
MIN_HOPS, MAX_HOPS = 20, 1000
PIPELINE_SECONDS = 30.0  # audio through the whole pipeline (model loading included in its time)
LIVE_SECONDS = 20.0  # audio of the live run (paced in real time: this many seconds of bench's time)
LIVE_RATE, LIVE_CHANNELS = 48000, 2  # what a USB microphone delivers
# the live run's shortest span measured (s): in a shorter one its first and last windows weigh (the
# demo bundle here: 9.8 % of a core over 1 s, 11.4-12.1 % over 2-15 s)
LIVE_SPAN_LEAST = 2.0
MIN_HOP_METHOD = (
    "smallest whole number of frames h with h >= p99 window latency + incremental frontend cost "
    "of h's frames: h = ceil(p99 / (frame - frontend cost per frame)) frames"
)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def bench_signal(samples: int, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Seeded noise plus a repeating chirp, float32 mono: audio that is not silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / sample_rate
    chirp = np.sin(2 * np.pi * (200.0 + 400.0 * (t % 2.0)) * t)
    return (0.05 * rng.standard_normal(samples) + 0.2 * chirp).astype(np.float32)


def time_frontend(bundle: Bundle, windowing: Windowing) -> dict:
    """Median cost per hop of the incremental frontend and of recomputing the whole window."""
    fe = bundle.meta.frontend
    hop = windowing.hop_frames * fe.hop_length
    window = (windowing.window_frames - 1) * fe.hop_length
    hops = min(MAX_HOPS, max(MIN_HOPS, math.ceil(FRONTEND_SECONDS / windowing.hop_seconds)))
    audio = bench_signal(window + hops * hop, fe.sample_rate)

    stream = StreamingLogMel(fe)
    stream.push(audio[:window])  # a full window in: from here on, each hop is what listen pays
    incremental = []
    for i in range(hops):
        block = audio[window + i * hop : window + (i + 1) * hop]
        started = time.perf_counter()
        stream.push(block)
        incremental.append(time.perf_counter() - started)
    recompute = []
    for i in range(hops):
        end = window + (i + 1) * hop
        started = time.perf_counter()
        log_mel(audio[end - window : end], fe)
        recompute.append(time.perf_counter() - started)
    inc, rec = float(np.median(incremental)), float(np.median(recompute))
    return {
        "incremental_ms_per_hop": inc * 1e3,
        "recompute_ms_per_hop": rec * 1e3,
        "recompute_over_incremental": rec / inc if inc > 0 else None,
        "hops_timed": hops,
    }


def time_backend(backend, frames: np.ndarray, model_frames: int, seconds: float) -> list[float]:
    """Latencies (s) of one window through `backend` (tiling included), after warm-up."""
    return time_runs(lambda: backend.embed(tile_frames(frames, model_frames)[None, None]), seconds)


def time_runs(run: Callable[[], object], seconds: float) -> list[float]:
    """Latencies (s) of `run()` for about `seconds` (at least MIN_RUNS), after warm-up runs."""

    def one() -> float:
        started = time.perf_counter()
        run()
        return time.perf_counter() - started

    for _ in range(WARMUP_RUNS):
        one()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(latencies) < MIN_RUNS or (time.perf_counter() < deadline and len(latencies) < MAX_RUNS):
        latencies.append(one())
    return latencies


def smallest_hop(latency: float, frontend_per_frame: float, frame: float) -> float | None:
    """The shortest hop (s, on the frame grid) whose duration covers one window's latency plus
    the frontend's cost for the hop's own frames. None: the frontend alone is slower than real time."""
    if frontend_per_frame >= frame:
        return None
    return max(1, math.ceil(latency / (frame - frontend_per_frame) - 1e-9)) * frame


def open_backend(bundle: Bundle, name: str, threads: int | None):
    """One backend for the bundle's audio graph (edge.backends.select_backend's errors)."""
    from edge.backends import select_backend

    if name not in BENCH_BACKENDS:
        raise BackendError(f"backend {name!r} cannot be timed (allowed: {list(BENCH_BACKENDS)})")
    return select_backend(bundle, name, threads=threads)


def run_bench(
    options: ListenOptions,
    backends: Sequence[str] | None = None,
    seconds: float = 10.0,
    pipeline_seconds: float = PIPELINE_SECONDS,
    live_seconds: float = LIVE_SECONDS,
) -> dict:
    """Time the bundle of `options` on this device (see the module docstring for what and the keys).

    `options`: the listen pipeline's options (bundle, window, hop, threads, labels: bench times
    what `listen` would run); `backends`: names from BENCH_BACKENDS (None: onnxruntime, and
    tensorrt when an engine exists); `seconds` of timing per backend. BackendError /
    ImportError for a backend asked for by name that cannot run here.
    """
    if not seconds > 0:
        raise ValueError(f"seconds={seconds!r} must be positive (seconds of timing per backend)")
    bundle = resolve_bundle(options.bundle)
    label_set = resolve_label_set(options.labels)  # a wrong --labels fails before any timing
    threads = options.threads
    fe = bundle.meta.frontend
    windowing = options.windowing(bundle)
    least_runs(windowing, pipeline_seconds, live_seconds)  # before minutes of timing
    f = windowing.seconds_per_frame
    frontend = time_frontend(bundle, windowing)
    per_frame = frontend["incremental_ms_per_hop"] / 1e3 / windowing.hop_frames
    frames = log_mel(bench_signal((windowing.window_frames - 1) * fe.hop_length, fe.sample_rate), fe)
    results, skipped = {}, {}
    for name in dict.fromkeys(backends or BENCH_BACKENDS):  # one at a time: one model in memory
        try:
            backend = open_backend(bundle, name, threads)
        except (ImportError, BackendError) as err:
            if backends:  # asked for by name: say why it cannot run here
                raise
            skipped[name] = str(err).replace("\n", "; ")
            log.info("bench: %s skipped: %s", name, skipped[name])
            continue
        with backend:
            log.info("bench: timing %s for %g s", name, seconds)
            lat = np.array(time_backend(backend, frames, windowing.model_frames, seconds))
            device = (
                ", ".join(backend.providers) if hasattr(backend, "providers") else getattr(backend, "gpu_name", name)
            )
        results[name] = {
            "device": device,
            "runs": int(lat.size),
            "warmup": WARMUP_RUNS,
            "p50_ms": float(np.percentile(lat, 50)) * 1e3,
            "p99_ms": float(np.percentile(lat, 99)) * 1e3,
            "mean_ms": float(lat.mean()) * 1e3,
            "min_ms": float(lat.min()) * 1e3,
            "max_ms": float(lat.max()) * 1e3,
            "peak_rss_mib": peak_rss_mib(),
        }
    vocabulary = time_vocabulary(bundle, frames, windowing.model_frames, threads, seconds)
    if vocabulary is not None:
        vocabulary.update(in_window=scorer_for(bundle, label_set, threads)[1] is not None, labels=label_set.name)
    added = vocabulary if vocabulary and vocabulary["in_window"] else {"p50_ms": 0.0, "p99_ms": 0.0}
    per_hop = frontend["incremental_ms_per_hop"] / 1e3
    for r in results.values():  # the window: the audio graph, and the vocabulary graph where it runs
        window50 = (float(r["p50_ms"]) + added["p50_ms"]) / 1e3
        window99 = (float(r["p99_ms"]) + added["p99_ms"]) / 1e3
        r.update(
            rtf=(window50 + per_hop) / windowing.hop_seconds,
            rtf_p99=(window99 + per_hop) / windowing.hop_seconds,
            keeps_up=window99 + per_hop <= windowing.hop_seconds,
            min_hop_s=smallest_hop(window99, per_frame, f),
        )
    return {
        "schema": SCHEMA,
        "bundle": str(bundle.path),
        "model_id": bundle.meta.model_id,
        "window_s": windowing.window_seconds,
        "hop_s": windowing.hop_seconds,
        "frame_s": f,
        "window_frames": windowing.window_frames,
        "hop_frames": windowing.hop_frames,
        "model_frames": windowing.model_frames,
        "threads": threads,
        "cpu_count": usable_cores(),  # the cores this process may use (taskset, a cgroup), as the backends count
        "seconds": seconds,
        "frontend": frontend,
        "backends": results,
        "skipped": skipped,
        "min_hop_method": MIN_HOP_METHOD,
        "vocabulary": vocabulary,
        "pipeline": time_pipeline(options, bundle, pipeline_seconds) if pipeline_seconds > 0 else None,
        "live": time_live(options, bundle, live_seconds) if live_seconds > 0 else None,
        "peak_rss_mib": peak_rss_mib(),
    }


def least_runs(windowing: Windowing, pipeline_seconds: float, live_seconds: float) -> None:
    """OptionError for a pipeline or live run too short to measure: the pipeline needs a window of audio,
    the live run a window and LIVE_SPAN_LEAST s after it (its CPU counts from the first window on)."""
    window = windowing.window_seconds
    for name, value, least, needs in (
        ("pipeline_seconds", pipeline_seconds, window, f"a window of audio ({window:g} s)"),
        (
            "live_seconds",
            live_seconds,
            window + LIVE_SPAN_LEAST,
            f"a window and {LIVE_SPAN_LEAST:g} s after it ({window + LIVE_SPAN_LEAST:g} s): its CPU counts from "
            "the first window on",
        ),
    ):
        if 0 < value < least:
            flag = "--" + name.replace("_", "-")
            raise OptionError(
                f"{flag} {value:g} is too short: that run needs {needs}; use at least {least:g}, or 0 to skip it",
                option=name,
            )


def time_vocabulary(bundle: Bundle, frames: np.ndarray, model_frames: int, threads: int | None, seconds: float):
    """The vocabulary graph's own latency per window on ONNX Runtime (what it adds to the audio
    graph's where it runs: edge.vocabulary), or None for a bundle without one."""
    from edge.backends import select_backend

    if bundle.meta.vocabulary is None:
        return None
    with select_backend(bundle, "onnxruntime", threads=threads) as audio:
        window = {audio.input_names[0]: tile_frames(frames, model_frames)[None, None]}
        outputs = {**window, **audio.run(window)}
    with select_backend(bundle, graph="vocabulary", threads=threads) as graph:
        feed = {name: outputs[name] for name in graph.input_names}
        lat = np.array(time_runs(lambda: graph.run(feed), seconds))
    return {
        "runs": int(lat.size),
        "p50_ms": float(np.percentile(lat, 50)) * 1e3,
        "p99_ms": float(np.percentile(lat, 99)) * 1e3,
    }


class _Count(Sink):
    """A sink that only counts: the pipeline's cost without a terminal's."""

    def __init__(self):
        super().__init__(stream=io.StringIO())
        self.records = 0
        self.first: tuple[float, float] | None = None  # (wall, process CPU) seconds at the first window

    def window(self, result) -> None:
        if self.first is None:
            self.first = (time.perf_counter(), time.process_time())
        self.records += 1

    def event(self, event) -> None:
        self.records += 1

    def status(self, status) -> None:
        self.records += 1


def time_pipeline(options: ListenOptions, bundle: Bundle, audio_seconds: float) -> dict:
    """The whole listen pipeline (edge.listen.listen: file source, resampling, frontend, model,
    scores, events) on `audio_seconds` of the bench signal, read as fast as it runs."""
    fe = bundle.meta.frontend
    with tempfile.TemporaryDirectory(prefix="semanticac-bench-") as tmp:
        wav = Path(tmp) / "bench.wav"
        sf.write(
            wav, bench_signal(fe.seconds_to_samples(audio_seconds), fe.sample_rate), fe.sample_rate, subtype="FLOAT"
        )
        start = time.perf_counter()
        summary = listen(replace(options, bundle=str(bundle.path), input=str(wav), fast=True), sink=_Count())
        wall = time.perf_counter() - start
    return {
        "audio_s": audio_seconds,
        "wall_s": wall,
        "x_realtime": audio_seconds / wall,
        "windows": summary.windows,
        "labels": options.labels,
    }


def time_live(options: ListenOptions, bundle: Bundle, audio_seconds: float) -> dict:
    """The whole listen pipeline live: `audio_seconds` of the bench signal at 48 kHz stereo, paced by
    the wall clock as a microphone delivers it; the process's CPU (every thread: time.process_time)
    from the first window to the end, per second of that span, as % of one core (loading the model,
    before the first window, does not count)."""
    with tempfile.TemporaryDirectory(prefix="semanticac-bench-") as tmp:
        wav = Path(tmp) / "live.wav"
        mono = bench_signal(round(audio_seconds * LIVE_RATE), LIVE_RATE)
        sf.write(wav, np.repeat(mono[:, None], LIVE_CHANNELS, axis=1), LIVE_RATE, subtype="PCM_16")
        sink = _Count()
        summary = listen(replace(options, bundle=str(bundle.path), input=str(wav), fast=False), sink=sink)
        end = (time.perf_counter(), time.process_time())
    measured = end[0] - sink.first[0] if sink.first else 0.0
    return {
        "audio_s": audio_seconds,
        "input_rate": LIVE_RATE,
        "channels": LIVE_CHANNELS,
        "measured_s": measured,
        "cpu_percent": 100 * (end[1] - sink.first[1]) / measured if sink.first and measured > 0 else None,
        "windows": summary.windows,
        "dropped": summary.dropped,
        "labels": options.labels,
    }


def format_bench(result: dict) -> str:
    """The readable table `semanticac-edge bench` prints."""
    fe = result["frontend"]
    lines = [
        f"bundle {result['bundle']} ({result['model_id']})",
        f"window {result['window_s']:g} s ({result['window_frames']} frames, tiled to {result['model_frames']}), "
        f"hop {result['hop_s']:g} s ({result['hop_frames']} frames of {result['frame_s'] * 1e3:g} ms); "
        f"{result['cpu_count']} core{'s' if result['cpu_count'] != 1 else ''}, "
        f"threads {result['threads'] or 'default'}; {result['seconds']:g} s of timing "
        "per backend",
        f"frontend per hop: incremental {fe['incremental_ms_per_hop']:.2f} ms, recompute the window "
        f"{fe['recompute_ms_per_hop']:.2f} ms ({fe['recompute_over_incremental']:.1f}x incremental; "
        f"median of {fe['hops_timed']} hops)",
        "",
        f"{'backend':<12} {'runs':>5} {'p50 ms':>9} {'p99 ms':>9} {'rtf':>7} {'rtf p99':>8} {'keeps up':>9} "
        f"{'min hop s':>10}  device",
    ]
    for name, r in result["backends"].items():
        min_hop = f"{r['min_hop_s']:.2f}" if r["min_hop_s"] is not None else "none"
        lines.append(
            f"{name:<12} {r['runs']:>5} {r['p50_ms']:>9.1f} {r['p99_ms']:>9.1f} {r['rtf']:>7.3f} "
            f"{r['rtf_p99']:>8.3f} {'yes' if r['keeps_up'] else 'NO':>9} {min_hop:>10}  {r['device']}"
        )
    for name, why in result["skipped"].items():
        lines.append(f"{name:<12} skipped: {why}")
    voc = result.get("vocabulary")
    if voc:
        lines.append(
            f"vocabulary graph (onnxruntime): p50 {voc['p50_ms']:.1f} ms, p99 {voc['p99_ms']:.1f} ms over "
            f"{voc['runs']} runs; "
            + (
                f"it runs on every window of --labels {voc['labels']}, so rtf, keeps up and min hop above count it"
                if voc["in_window"]
                else f"--labels {voc['labels']} does not run it (no label no one trained, no head), nor do "
                "the figures above"
            )
        )
    pipe = result.get("pipeline")
    if pipe:
        lines += [
            "",
            f"whole listen pipeline (--labels {pipe['labels']}, a file read as fast as it runs, model "
            f"loading included): {pipe['audio_s']:g} s of audio in {pipe['wall_s']:.2f} s, "
            f"{pipe['x_realtime']:.1f}x real time, {pipe['windows']} windows",
        ]
    live = result.get("live")
    if live:
        cpu = "n/a (no window)" if live["cpu_percent"] is None else f"{live['cpu_percent']:.1f} % of one core"
        lines += [
            f"live (--labels {live['labels']}, {live['audio_s']:g} s at {live['input_rate']} Hz x {live['channels']} "
            f"channels, paced as a microphone): CPU {cpu} over the {live['measured_s']:.1f} s from the first "
            f"window, {live['windows']} windows, {live['dropped']} dropped: what a live stream costs",
        ]
    lines += [
        "",
        "rtf: (window latency + frontend per hop) / hop, p50 (rtf) or p99 (rtf p99); below 1 keeps up",
        f"min hop: {result['min_hop_method']}",
        f"peak RSS of this process: {result['peak_rss_mib']:.0f} MiB",
    ]
    return "\n".join(lines)
