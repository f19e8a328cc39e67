"""The listen loop on real audio: offline equivalence, block-size invariance, the CLI."""

import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import edge.cli
from edge.backends import select_backend
from edge.capture.audio import read_audio
from edge.capture.sources import FileSource
from edge.events import EventDetector
from edge.features import Windowing, hop_squares, log_mel, tile_frames
from edge.labels.embeddings import find_label_embeddings
from edge.labels.labelset import resolve_label_set
from edge.listen import Listener
from edge.scoring import Scorer, Smoother
from tests.collect import Collect

TOL = 1e-4  # scores: streaming frames equal batch frames to float32 rounding



def listen(bundle, path, window=2.0, hop=0.5, block=1024, k=10):
    label_set = resolve_label_set("urban")
    scorer = Scorer.for_bundle(bundle.meta, find_label_embeddings(bundle, label_set))
    sink = Collect()
    with select_backend(bundle, "onnxruntime") as backend:
        listener = Listener(bundle, backend, scorer, EventDetector.from_label_set(label_set), Smoother(3), sink,
                            Windowing.from_seconds(bundle.meta.frontend, window, hop), k=k)
        summary = listener.run(FileSource(path, sample_rate=bundle.meta.frontend.sample_rate, fast=True, block=block))
    return sink, summary, scorer


@pytest.fixture(scope="module")
def clip(data_dir):
    return data_dir / "us8k/audio/fold1/7383-3-0-0.ogg"


def as_scores(result, labels):
    scores = dict(result.top)
    return np.array([scores[label] for label in labels])


def test_windows_equal_offline_computation(demo_bundle, clip):
    sink, summary, scorer = listen(demo_bundle, clip)
    fe = demo_bundle.meta.frontend
    samples = read_audio(clip, fe.sample_rate)
    mel = log_mel(samples, fe)  # the whole recording at once
    squares = hop_squares(samples, fe.hop_length)  # and its hops' levels, for the bundle's window gain
    w = Windowing.from_seconds(fe, 2.0, 0.5)
    expected_windows = (len(mel) - w.window_frames) // w.hop_frames + 1
    assert summary.windows == len(sink.windows) == expected_windows >= 4
    with select_backend(demo_bundle, "onnxruntime") as backend:
        for k, result in enumerate(sink.windows):
            frames = mel[k * w.hop_frames: k * w.hop_frames + w.window_frames]
            if demo_bundle.meta.gain is not None:
                hops = squares[k * w.hop_frames: k * w.hop_frames + w.window_frames - 1]
                frames = demo_bundle.meta.gain.apply(frames, hops, fe)
                assert result.gain_db == pytest.approx(demo_bundle.meta.gain.gain_db(hops))  # what it reports
            offline = scorer(backend.embed(tile_frames(frames, fe.frames)[None, None]))[0]
            assert result.t == pytest.approx(k * 0.5 + 2.0)
            np.testing.assert_allclose(as_scores(result, scorer.labels), offline, atol=TOL)
    assert summary.dropped == 0 and "end of audio file" in summary.end_reason


def test_results_do_not_depend_on_block_size(demo_bundle, clip):
    runs = [listen(demo_bundle, clip, block=block)[0] for block in (256, 1000, 4096, 1021)]
    base = runs[0].windows
    for sink in runs[1:]:
        assert [r.t for r in sink.windows] == [r.t for r in base]
        for a, b in zip(sink.windows, base):
            assert [label for label, _ in a.top] == [label for label, _ in b.top]
            np.testing.assert_allclose([s for _, s in a.top], [s for _, s in b.top], atol=TOL)


def test_short_file_gives_one_tiled_window(demo_bundle, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "short.wav"
    sf.write(path, 0.1 * rng.standard_normal(8000).astype(np.float32), 16000)  # 0.5 s
    sink, summary, _ = listen(demo_bundle, path, window=2.0, hop=0.5)
    assert summary.windows == 1 and sink.windows[0].t == pytest.approx(0.5)


def test_silence_is_reported(demo_bundle, tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000 * 14, np.float32), 16000)
    sink, summary, _ = listen(demo_bundle, path, window=2.0, hop=1.0)
    assert any("digital silence" in s.message for s in sink.statuses)
    assert summary.windows == 13


def test_cli_json_lines(demo_bundle, clip):
    result = CliRunner().invoke(edge.cli.main, ["listen", "--bundle", str(demo_bundle.path), "--labels", "urban",
                                                "--input", str(clip), "--fast", "--json", "--hop", "1"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(line["schema"] == 1 and {"type", "t", "utc"} <= set(line) for line in lines)
    windows = [line for line in lines if line["type"] == "window"]
    assert len(windows) >= 1 and len(windows[0]["top"]) == 3 and windows[0]["dropped"] == 0
    assert lines[0]["type"] == "status" and lines[-1]["type"] == "status"


def test_an_event_held_open_says_so_in_each_window_until_its_end(demo_bundle, clip, tmp_path):
    """A service holds an event 30 s after its sound stops: `tail` showed it active all that time, as if
    the dog still barked. Each window of the hold now names it and when it fell quiet, the end's own time."""
    path = tmp_path / "bark_then_silence.wav"
    rate = demo_bundle.meta.frontend.sample_rate
    sf.write(path, np.concatenate([read_audio(clip, rate), np.zeros(rate * 12, np.float32)]), rate)
    result = CliRunner().invoke(edge.cli.main, ["listen", "--bundle", str(demo_bundle.path), "--labels", "urban",
                                                "--input", str(path), "--fast", "--json", "--hop", "1", "--hold", "5"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    [start] = [line for line in lines if line["type"] == "start"]
    [end_at] = [i for i, line in enumerate(lines) if line["type"] == "end"]
    end = lines[end_at]
    windows = [(i, line) for i, line in enumerate(lines) if line["type"] == "window"]
    holding = [line["t"] for i, line in windows if "holding" in line]
    # from the window where the score fell (the end's date) to the last one before the end is said, 5 s on
    assert holding == [end["t"] + s for s in range(5)], holding
    assert all(line["holding"] == [{"event_id": start["event_id"], "label": start["label"], "since": end["t"]}]
               for _, line in windows if "holding" in line)
    assert all("holding" not in line for i, line in windows if i > end_at or line["t"] < end["t"])


@pytest.mark.parametrize("args,message", [
    (["--labels", "nope"], "label set 'nope' not found"),
    (["--labels", "urban", "--window", "30"], "longer than the model's input"),
    (["--labels", "urban", "--hop", "0.001"], "shorter than one frame"),
    (["--labels", "urban", "--input", "-"], "needs --rate"),
    (["--labels", "urban", "--input", "/no/such.wav"], "cannot read audio file /no/such.wav"),
])
def test_cli_errors_are_one_line(demo_bundle, args, message):
    result = CliRunner().invoke(edge.cli.main, ["listen", "--bundle", str(demo_bundle.path), *args])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_new_label_is_embedded_on_the_device(demo_bundle, tmp_path, monkeypatch, clip):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    labels = tmp_path / "site.yaml"
    labels.write_text("name: site\nlabels:\n  - dog_bark\n  - name: kettle\n    prompts: [a kettle whistling]\n")
    result = CliRunner().invoke(edge.cli.main, ["listen", "--bundle", str(demo_bundle.path), "--labels", str(labels),
                                                "--input", str(clip), "--fast", "--json"])
    assert result.exit_code == 0, result.output
    cached = tmp_path / "cache/semanticac-edge" / demo_bundle.meta.model_id / "site.npz"
    assert cached.is_file()
    top = [json.loads(line) for line in result.stdout.splitlines() if '"window"' in line][0]["top"]
    assert {t["label"] for t in top} == {"dog_bark", "kettle"}


def test_a_label_shown_over_its_threshold_in_one_window_alone_says_why_no_event(demo_bundle, clip, tmp_path):
    """Windows show each window's own score; events read the mean of the last 3. A bark in one
    window between silent ones shows 0.8 and averages under the threshold: the end says so."""
    rate = demo_bundle.meta.frontend.sample_rate
    audio = read_audio(clip, rate)[: 5 * rate]
    quiet = np.zeros(5 * rate, dtype=np.float32)
    sf.write(tmp_path / "one.wav", np.concatenate([quiet, audio, np.zeros(5 * rate - audio.size), quiet]), rate)
    result = CliRunner().invoke(edge.cli.main, ["listen", "--bundle", str(demo_bundle.path), "--labels", "urban",
                                                "--input", str(tmp_path / "one.wav"), "--fast", "--json", "--hop", "5"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert max(t["score"] for r in records if r["type"] == "window" for t in r["top"] if t["label"] == "dog_bark") > 0.5
    said = [r["message"] for r in records if r["type"] == "status" and r["message"].startswith("no event, though")]
    assert len(said) == 1 and said[0].startswith("no event, though dog_bark 0.") and "in a window (averaged, at most 0." in said[0]
    assert "averaged over 3 windows (--smooth; a service: listen.smooth)" in said[0]
    # held back by the student's agreement, not by the averaging: said as such
    result = CliRunner().invoke(edge.cli.main, ["listen", "--bundle", str(demo_bundle.path), "--labels", "urban",
                                                "--input", str(tmp_path / "one.wav"), "--fast", "--json", "--hop", "5",
                                                "--smooth", "1", "--agree", "0.999"])
    said = [json.loads(line)["message"] for line in result.stdout.splitlines() if '"no event, though' in line]
    assert len(said) == 1 and "the student alone did not agree there" in said[0], said


def test_a_clip_whose_label_reached_its_threshold_without_an_event_says_why(demo_bundle, clip, tmp_path):
    """One 4 s dog bark clip is one window: dog_bark tops it far above its threshold, yet no event
    can last --min-duration; the run's last lines say so instead of a bare "0 events"."""
    result = CliRunner().invoke(edge.cli.main, ["listen", "--bundle", str(demo_bundle.path), "--labels", "urban",
                                                "--input", str(clip), "--fast", "--json"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert not [r for r in records if r["type"] in ("start", "end")]
    said = [r["message"] for r in records if r["type"] == "status" and r["message"].startswith("no event, though")]
    assert len(said) == 1 and "dog_bark 0.8" in said[0] and "(threshold 0.5)" in said[0] and "(--min-duration; a service: listen.min_duration)" in said[0]
    assert "1 window was heard; a clip alone is one window" in said[0]
    # the barking going on for 12 s starts the event, and says nothing of the kind
    audio = read_audio(clip, demo_bundle.meta.frontend.sample_rate)
    sf.write(tmp_path / "stream.wav", np.concatenate([audio] * 3), demo_bundle.meta.frontend.sample_rate)
    result = CliRunner().invoke(edge.cli.main, ["listen", "--bundle", str(demo_bundle.path), "--labels", "urban",
                                                "--input", str(tmp_path / "stream.wav"), "--fast", "--json"])
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in records if r["type"] == "start"] == ["dog_bark"]
    assert not any(r["type"] == "status" and r["message"].startswith("no event") for r in records)
