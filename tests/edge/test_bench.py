"""`semanticac-edge bench` on a real exported bundle: sane numbers and the documented JSON."""

import importlib.util
import json
import math
import shutil

import pytest
from click.testing import CliRunner

import edge.cli
from edge.listen import ListenOptions
from edge.tools.bench import run_bench, smallest_hop

TOP_KEYS = {"schema", "bundle", "model_id", "window_s", "hop_s", "frame_s", "window_frames", "hop_frames",
            "model_frames", "threads", "cpu_count", "seconds", "frontend", "backends", "skipped",
            "min_hop_method", "vocabulary", "pipeline", "live", "peak_rss_mib"}
FRONTEND_KEYS = {"incremental_ms_per_hop", "recompute_ms_per_hop", "recompute_over_incremental", "hops_timed"}
BACKEND_KEYS = {"device", "runs", "warmup", "p50_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "rtf", "rtf_p99",
                "keeps_up", "min_hop_s", "peak_rss_mib"}


@pytest.mark.slow  # times the backend and 4 s of live pacing: ~6 s on 2 cores
def test_short_run_gives_sane_numbers(demo_bundle):
    options = ListenOptions(labels="urban", bundle=str(demo_bundle.path), window=2.0, hop=0.5, threads=1)
    result = run_bench(options, ["onnxruntime"], seconds=0.3, pipeline_seconds=6.0, live_seconds=4.0)
    ort = result["backends"]["onnxruntime"]
    assert ort["runs"] >= 5
    assert 0 < ort["min_ms"] <= ort["p50_ms"] <= ort["p99_ms"] <= ort["max_ms"]
    assert ort["rtf"] > 0 and ort["rtf_p99"] >= ort["rtf"]
    assert ort["keeps_up"] == (ort["rtf_p99"] <= 1.0)
    fe = result["frontend"]
    assert fe["incremental_ms_per_hop"] > 0 and fe["recompute_ms_per_hop"] > 0
    # rtf is (p50 + frontend per hop) / hop, as documented; the window's p50 counts the vocabulary
    # graph, which the shipped bundle's head runs on every window of any set
    voc = result["vocabulary"]
    assert voc["in_window"] and voc["labels"] == "urban" and voc["p50_ms"] > 0
    window50 = ort["p50_ms"] + voc["p50_ms"]
    assert math.isclose(ort["rtf"], (window50 + fe["incremental_ms_per_hop"]) / 1e3 / result["hop_s"])
    # the smallest hop lies on the frame grid and covers the window's p99 latency
    frames = ort["min_hop_s"] / result["frame_s"]
    assert abs(frames - round(frames)) < 1e-6 and ort["min_hop_s"] * 1e3 >= ort["p99_ms"] + voc["p99_ms"]
    assert result["window_frames"] == 201 and result["hop_frames"] == 50 and result["window_s"] == 2.0
    assert result["peak_rss_mib"] > 0
    # the whole listen pipeline ran on 6 s of audio: windows ending at 2.0, 2.5, ..., 6.0 s
    pipe = result["pipeline"]
    assert pipe["windows"] == 9 and pipe["audio_s"] == 6.0 and pipe["x_realtime"] == pytest.approx(6.0 / pipe["wall_s"])
    # live: 4 s paced as a microphone delivers it, windows ending at 2.0, ..., 4.0 s; its CPU from the
    # first window to the end (what a live stream costs), within what the process's cores can give
    live = result["live"]
    assert live["windows"] == 5 and live["dropped"] == 0 and (live["input_rate"], live["channels"]) == (48000, 2)
    # the 2 s after the first window, paced, not read as fast as it goes (a fraction of a second); less where the
    # first window came late (a loaded machine: the audio that waited meanwhile is read at once)
    assert 0.5 < live["measured_s"] < 3.5
    assert 0 < live["cpu_percent"] < 100 * result["cpu_count"]


def test_smallest_hop_is_the_first_that_keeps_up():
    frame, latency, per_frame = 0.01, 0.5, 0.0002
    hop = smallest_hop(latency, per_frame, frame)
    frames = round(hop / frame)
    assert frames * frame >= latency + per_frame * frames  # keeps up
    assert (frames - 1) * frame < latency + per_frame * (frames - 1)  # one frame less does not
    assert smallest_hop(latency, frame, frame) is None  # the frontend alone is not real time
    assert smallest_hop(1e-6, 0.0, frame) == frame  # never below one frame


def test_json_has_the_documented_keys(demo_bundle):
    result = CliRunner().invoke(edge.cli.main, ["bench", "--bundle", str(demo_bundle.path), "--seconds", "0.2",
                                                "--threads", "1", "--pipeline-seconds", "0", "--live-seconds", "0",
                                                "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == TOP_KEYS
    assert set(data["frontend"]) == FRONTEND_KEYS
    assert "onnxruntime" in data["backends"]
    for timings in data["backends"].values():
        assert set(timings) == BACKEND_KEYS
    # By default TensorRT is timed when it can be, else skipped with the reason.
    assert ("tensorrt" in data["backends"]) != ("tensorrt" in data["skipped"])
    assert data["window_s"] == demo_bundle.meta.clip_seconds and data["hop_s"] == 1.0
    # the shipped bundle's vocabulary graph is timed on its own (it runs only for sets with new labels)
    assert set(data["vocabulary"]) == {"runs", "p50_ms", "p99_ms", "in_window", "labels"}
    assert data["vocabulary"]["p50_ms"] > 0


@pytest.mark.slow  # times the backend and the whole pipeline: ~6 s of CPU on 2 cores
def test_table_output(demo_bundle):
    result = CliRunner().invoke(edge.cli.main, ["bench", "--bundle", str(demo_bundle.path), "--seconds", "0.2",
                                                "--backend", "onnxruntime", "--hop", "0.25", "--pipeline-seconds", "6",
                                                "--live-seconds", "7"])
    assert result.exit_code == 0, result.output
    assert "whole listen pipeline (--labels urban, a file read as fast as it runs, model loading included): 6 s" \
        in result.stdout
    assert "it runs on every window of --labels urban, so rtf, keeps up and min hop above count it" in result.stdout
    assert "p50 ms" in result.stdout and "onnxruntime" in result.stdout and "min hop" in result.stdout
    assert "hop 0.25 s (25 frames" in result.stdout
    assert "tensorrt" not in result.stdout  # only the backend asked for
    assert "live (--labels urban, 7 s at 48000 Hz x 2 channels, paced as a microphone): CPU " in result.stdout
    assert "% of one core over the " in result.stdout and "0 dropped: what a live stream costs" in result.stdout


@pytest.mark.parametrize("args,said", [
    # a live run's CPU counts from its first window on: 0.5 s measured nothing, and 5.5 s (0.45 s after the
    # first window) gave twice the steady figure; a pipeline run of 1e-05 s failed on a file of no samples
    # after all the timing, naming a temporary file
    (["--live-seconds", "0.5"], "--live-seconds 0.5 is too short: that run needs a window and 2 s after it (7 s)"),
    (["--live-seconds", "5.5"], "use at least 7, or 0 to skip it"),
    (["--pipeline-seconds", "1e-05"], "--pipeline-seconds 1e-05 is too short: that run needs a window of audio (5 s)"),
])
def test_a_run_too_short_to_measure_is_refused_before_any_timing(demo_bundle, args, said):
    result = CliRunner().invoke(edge.cli.main, ["bench", "--bundle", str(demo_bundle.path), *args])
    assert result.exit_code == 2 and said in result.output and "Traceback" not in result.output, result.output


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_asking_for_tensorrt_without_it_is_a_one_line_error(demo_bundle):
    result = CliRunner().invoke(edge.cli.main, ["bench", "--bundle", str(demo_bundle.path), "--backend", "tensorrt"])
    assert result.exit_code == 1
    assert "TensorRT is not installed" in result.output and "Traceback" not in result.output


def test_a_hop_shorter_than_a_frame_is_a_usage_error(demo_bundle):
    result = CliRunner().invoke(edge.cli.main, ["bench", "--bundle", str(demo_bundle.path), "--hop", "0.001"])
    assert result.exit_code == 2 and "shorter than one frame" in result.output
    result = CliRunner().invoke(edge.cli.main, ["bench", "--bundle", str(demo_bundle.path), "--hop", "nan"])
    assert result.exit_code == 2 and "--hop nan is not allowed" in result.output


def test_a_wrong_labels_fails_before_any_timing(demo_bundle, monkeypatch):
    import edge.tools.bench as bench

    monkeypatch.setattr(bench, "time_frontend", lambda *a: pytest.fail("timed before the label set was read"))
    result = CliRunner().invoke(edge.cli.main, ["bench", "--bundle", str(demo_bundle.path), "--labels", "nosuch"])
    assert result.exit_code == 1 and "nosuch" in result.output and "Traceback" not in result.output, result.output


def test_a_set_that_does_not_run_the_vocabulary_graph_is_not_charged_for_it(demo_bundle, tmp_path):
    # the demo bundle without its head and intruder measurement: trained labels alone run the audio
    # graph only, a label no one trained runs the vocabulary graph too
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle.path, bundle)
    meta = json.loads((bundle / "model.json").read_text())
    for key in ("head", "familiar"):
        del meta["vocabulary"][key]
    (bundle / "model.json").write_text(json.dumps(meta))
    new = tmp_path / "new.yaml"
    new.write_text("name: new\nlabels: [dog_bark, doorbell]\n")
    for labels, runs in (("urban", False), (str(new), True)):
        options = ListenOptions(labels=labels, bundle=str(bundle), hop=0.5, threads=1)
        result = run_bench(options, ["onnxruntime"], seconds=0.2, pipeline_seconds=0, live_seconds=0)
        ort, voc, fe = result["backends"]["onnxruntime"], result["vocabulary"], result["frontend"]
        assert voc["in_window"] is runs and voc["labels"] == ("urban" if labels == "urban" else "new")
        window50 = ort["p50_ms"] + (voc["p50_ms"] if runs else 0.0)
        assert math.isclose(ort["rtf"], (window50 + fe["incremental_ms_per_hop"]) / 1e3 / result["hop_s"])
        assert result["pipeline"] is None and result["live"] is None


@pytest.mark.parametrize("args,said", [
    (["--seconds", "nan"], "'--seconds': nan is not allowed"),
    (["--seconds", "inf"], "'--seconds': inf is not allowed"),  # timed forever
    (["--pipeline-seconds", "inf"], "'--pipeline-seconds': inf is not allowed"),
    (["--pipeline-seconds", "1e12"], "'--pipeline-seconds': 1000000000000.0 is not allowed"),  # PiB of audio
    (["--pipeline-seconds", "nan"], "'--pipeline-seconds': nan is not allowed"),  # silently no pipeline run
    (["--live-seconds", "-1"], "'--live-seconds': -1.0 is not allowed"),
    (["--live-seconds", "inf"], "'--live-seconds': inf is not allowed"),  # a live run for ever
])
def test_bench_s_numbers_must_be_finite_and_in_range(demo_bundle, args, said):
    result = CliRunner().invoke(edge.cli.main, ["bench", "--bundle", str(demo_bundle.path), *args])
    assert result.exit_code == 2 and said in result.output and "Traceback" not in result.output, result.output
    assert "3600" in result.output
