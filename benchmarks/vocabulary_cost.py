"""What the vocabulary branch costs per window, and what it costs a set that does not use it.

    python benchmarks/vocabulary_cost.py [--bundle edge/demo_bundle] [--threads 2] [--rounds 3]

From a bundle with a vocabulary graph, three audio graphs are timed in ONNX Runtime (one 5 s
window at batch 1, as `semanticac-edge bench` times it: p50 over `--seconds` of runs after
warm-up), in alternating rounds so that a busy machine weighs on each alike:
  student      model.onnx cut back to the embedding alone (onnx.utils.Extractor): the graph a
               bundle without the branch runs, the cost before there was a vocabulary
  shipped      model.onnx as shipped (embedding + the trunk map): what a set of trained labels runs
  one graph    model.onnx and vocabulary.onnx merged into one graph with both outputs: the
               layout before vocabulary.onnx, where every set paid for the branch (only for a
               vocabulary graph that reads a map of model.onnx's)
and the vocabulary graph alone (what a set with a new label adds to `shipped`: from the trunk map,
or from the window itself for YAMNet on the window's patches). Ratios are to `student` in the
same round.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    import onnx
    import onnx.compose
    import onnx.utils
    import onnxruntime as ort

    from edge.bundle import read_bundle
    from edge.features import log_mel, tile_frames
    from edge.tools.bench import bench_signal, time_runs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(Path(__file__).parents[1] / "edge" / "demo_bundle"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    bundle = read_bundle(args.bundle)
    spec = bundle.meta.vocabulary
    assert spec is not None and bundle.vocabulary_path is not None, f"{args.bundle} has no vocabulary graph"
    trunk, = spec["graph"].inputs  # a map of model.onnx's, or its input (the window)
    embedding = bundle.meta.audio.outputs[0]
    reads_window = trunk in bundle.meta.audio.inputs
    fe = bundle.meta.frontend
    mel = tile_frames(log_mel(bench_signal(fe.seconds_to_samples(bundle.meta.clip_seconds), fe.sample_rate), fe),
                      fe.frames)[None, None]
    audio = onnx.load(str(bundle.audio_path))
    branch = onnx.compose.add_prefix(onnx.load(str(bundle.vocabulary_path)), "branch/")
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {
            "student": onnx.utils.Extractor(audio).extract_model([bundle.meta.audio.inputs[0]], [embedding]),
            "shipped": audio,
        }
        if not reads_window:
            graphs["one graph"] = onnx.compose.merge_models(
                audio, branch, io_map=[(trunk, f"branch/{trunk}")],
                outputs=[embedding, f"branch/{spec['graph'].outputs[0]}"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        sessions = {}
        for name, graph in graphs.items():
            path = Path(tmp) / f"{name.replace(' ', '_')}.onnx"
            onnx.save(graph, str(path))
            sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        vocabulary = ort.InferenceSession(str(bundle.vocabulary_path), options, providers=["CPUExecutionProvider"])
        feed = {bundle.meta.audio.inputs[0]: mel}
        trunk_value = mel if reads_window else sessions["shipped"].run([trunk], feed)[0]
        print(f"{args.bundle}: one {bundle.meta.clip_seconds:g} s window, batch 1, ONNX Runtime CPU, "
              f"{args.threads} thread(s), {os.cpu_count()} cores; p50 ms over {args.seconds:g} s per graph per round")
        print(f"{'round':>5}  " + "  ".join(f"{name:>17}" for name in [*sessions, "vocabulary alone"]))
        for round_ in range(1, args.rounds + 1):
            p50 = {name: float(np.median(time_runs(lambda s=session: s.run(None, feed), args.seconds))) * 1e3
                   for name, session in sessions.items()}
            p50["vocabulary alone"] = float(np.median(
                time_runs(lambda: vocabulary.run(None, {trunk: trunk_value}), args.seconds))) * 1e3
            base = p50["student"]
            print(f"{round_:>5}  " + "  ".join(f"{value:>8.2f} ({value / base:4.2f}x)" for value in p50.values()))


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
