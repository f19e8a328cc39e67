"""`semanticac-calibrate scores`: temperature and biases that lower the NLL, in edge's own formula."""

from __future__ import annotations

import csv
import logging
import re

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import calibrate.cli
from calibrate.errors import CalibrationError
from calibrate.inputs import read_clip_csv, read_dataset, resolve_labels
from calibrate.scores import calibrated, fit_calibration, metrics, objective, reliability
from edge.bundle import read_bundle, shipped_bundle
from edge.labels.embeddings import label_embeddings_for
from edge.labels.labelset import load_label_set, resolve_label_set
from edge.scoring import Scorer, sigmoid, softmax
from tests.calibrate.conftest import HAVE_MATPLOTLIB, RATE, scene



def synthetic_logits(n: int, k: int, temperature: float, seed: int = 0):
    """Raw logits and labels drawn from softmax(z / temperature): the true calibration is known."""
    rng = np.random.default_rng(seed)
    z = 15.0 * rng.uniform(-0.3, 0.6, size=(n, k))
    p = softmax(z / temperature)
    y = np.array([rng.choice(k, p=row) for row in p])
    return z, y


# ---------------------------------------------------------------------------------------------
# the fit


def test_temperature_is_recovered_and_the_nll_falls():
    z, y = synthetic_logits(3000, 6, temperature=2.5)
    fit = fit_calibration(z, y, "softmax", fit_bias=False)
    assert fit.temperature == pytest.approx(2.5, rel=0.1)
    assert np.all(fit.biases == 0)
    before, after = metrics(softmax(z), y, "softmax"), metrics(softmax(z / fit.temperature), y, "softmax")
    assert after.nll < before.nll and after.ece < before.ece
    assert after.accuracy == before.accuracy  # a temperature alone never changes the top-1 label


def test_biases_correct_a_shifted_label_and_absent_labels_keep_zero():
    z, y = synthetic_logits(3000, 5, temperature=1.0, seed=1)
    shifted = z.copy()
    shifted[:, 2] += 3.0  # the model over-scores label 2
    y = np.where(y == 4, 0, y)  # no clip of label 4
    fit = fit_calibration(shifted, y, "softmax", bias_l2=0.0)
    assert fit.biases[4] == 0.0
    assert fit.biases[2] < fit.biases[[0, 1, 3]].min() - 1.0
    cal = softmax(shifted / fit.temperature + fit.biases)
    assert metrics(cal, y, "softmax").nll < metrics(softmax(shifted), y, "softmax").nll


def test_sigmoid_fit_lowers_the_binary_cross_entropy():
    z, y = synthetic_logits(800, 4, temperature=1.0, seed=2)
    fit = fit_calibration(z - 5.0, y, "sigmoid")
    before = metrics(sigmoid(z - 5.0), y, "sigmoid").nll
    after = metrics(sigmoid((z - 5.0) / fit.temperature + fit.biases), y, "sigmoid").nll
    assert after < before


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_objective_gradient_matches_finite_differences(kind):
    z, y = synthetic_logits(50, 4, temperature=1.0, seed=3)
    a, b, eps = 0.7, np.array([0.1, -0.2, 0.3, 0.0]), 1e-6
    _, grad_a, grad_b = objective(z, y, kind, a, b, bias_l2=0.05)
    f = lambda a_, b_: objective(z, y, kind, a_, b_, bias_l2=0.05)[0]  # noqa: E731
    assert grad_a == pytest.approx((f(a + eps, b) - f(a - eps, b)) / (2 * eps), rel=1e-4)
    for i in range(4):
        step = np.eye(4)[i] * eps
        assert grad_b[i] == pytest.approx((f(a, b + step) - f(a, b - step)) / (2 * eps), rel=1e-4, abs=1e-8)


def test_separable_clips_give_a_finite_temperature():
    z = np.array([[5.0, 0.0], [0.0, 5.0]] * 20)
    y = np.array([0, 1] * 20)
    fit = fit_calibration(z, y, "softmax", fit_bias=False)
    assert not fit.at_bound and 0.3 < fit.temperature < 0.6  # the weak prior on 1/T stops it


def test_folds_keep_a_recordings_clips_together_and_deal_each_label_round():
    from calibrate.scores import folds_by_recording

    recordings = [f"r{i // 4}" for i in range(80)]  # 20 recordings of 4 clips
    y = np.array([(i // 4) % 2 for i in range(80)])  # recordings alternate between two labels
    fold = folds_by_recording(recordings, y, folds=5)
    for r in set(recordings):
        assert len({fold[i] for i, name in enumerate(recordings) if name == r}) == 1, r
    for label in (0, 1):
        assert set(fold[y == label]) == set(range(5))  # 10 recordings of each label over 5 folds
    assert folds_by_recording(["a", "a", "b", "c", "d"], np.zeros(5, dtype=int), folds=5) is None
    six = folds_by_recording([f"r{i}" for i in range(6)], np.array([0, 0, 0, 5, 5, 5]), folds=5)
    assert set(six) == set(range(5))  # two labels of 3 recordings each: no fold left empty


def test_dataset_clips_are_grouped_by_source_recording(tmp_path):
    from calibrate.inputs import recording_of

    assert recording_of("1-100032-A-0.wav") == recording_of("2-100032-B-0.wav") == "esc50:100032"
    assert recording_of("100032-3-0-0.ogg") == recording_of("100032-3-0-7.wav") == "us8k:100032"
    assert recording_of("unk-00-dog-seg01.flac") == recording_of("unk-00-dog-seg07.flac") == "unk-00-dog"
    assert recording_of("5-9032-A-0.wav") != recording_of("5-9033-A-0.wav")
    assert recording_of("kitchen/tap.wav") is None
    assert recording_of("2024-05-17-0830.wav") is None  # a date is no UrbanSound8K name
    (tmp_path / "c.csv").write_text("path,label,recording\n100032-3-0-0.ogg,dog_bark,\n1.wav,siren,take 1\n")
    assert [c.recording for c in read_clip_csv(tmp_path / "c.csv")] == ["us8k:100032", "take 1"]


def _softmax_clips(true_bias: float, n: int, seed: int):
    """n clips of 6 labels drawn from softmax(z / 2 + b), b = (true_bias, 0, ...), one recording each."""
    rng = np.random.default_rng(seed)
    z = 15.0 * rng.uniform(-0.3, 0.6, size=(n, 6))
    p = softmax(z / 2.0 + np.array([true_bias, 0, 0, 0, 0, 0]))
    y = np.array([rng.choice(6, p=row) for row in p])
    return z, y, [f"r{i}" for i in range(n)]


def test_the_bias_penalty_is_chosen_on_held_out_clips():
    """Biases with nothing to learn (all 0 in truth) and few clips: the held-out NLL picks a strong
    penalty and beats the weakest; a large real bias with many clips: a weak penalty keeps it."""
    from calibrate.scores import BIAS_L2_CHOICES, choose_bias_l2, folds_by_recording, held_out_probs, nll

    z, y, recordings = _softmax_clips(true_bias=0.0, n=40, seed=3)
    fold = folds_by_recording(recordings, y)
    best, cv_nll, probs = choose_bias_l2(z, y, "softmax", fold, True, BIAS_L2_CHOICES)
    assert best >= 0.1 and cv_nll[best] < cv_nll[0.001], cv_nll
    assert nll(probs, y, "softmax") == pytest.approx(cv_nll[best])
    np.testing.assert_allclose(probs, held_out_probs(z, y, "softmax", fold, True, best))
    z, y, recordings = _softmax_clips(true_bias=3.0, n=2000, seed=4)
    best, cv_nll, _ = choose_bias_l2(z, y, "softmax", folds_by_recording(recordings, y), True, BIAS_L2_CHOICES)
    assert best <= 0.01, cv_nll


def test_ece_of_known_bins():
    probs = np.array([[0.9, 0.1]] * 10 + [[0.3, 0.7]] * 10)
    y = np.array([0] * 5 + [1] * 5 + [1] * 10)
    rel = reliability(probs, y)
    assert rel.count.sum() == 20 and rel.count[13] == 10 and rel.count[10] == 10  # 0.9 and 0.7
    assert rel.ece == pytest.approx(0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.7))


def test_the_fit_is_edges_scoring_formula(demo_bundle):
    """One formula: the logits fitted (z / T + b on the raw logits) are what edge's Scorer computes
    for a label set carrying that calibration, as listen builds it."""
    urban = resolve_label_set("urban")
    embeddings = label_embeddings_for(demo_bundle, urban)
    audio = np.random.default_rng(0).standard_normal((5, demo_bundle.meta.embedding_dim)).astype(np.float32)
    raw = Scorer.for_bundle(demo_bundle.meta, embeddings).logits(audio)
    biases = np.linspace(-0.5, 0.5, len(urban.labels))
    site = calibrated(urban, 1.7, biases)
    scorer = Scorer.for_bundle(demo_bundle.meta, embeddings, site)
    np.testing.assert_allclose(scorer.logits(audio), raw / 1.7 + biases, rtol=1e-12, atol=1e-12)
    squash = softmax if demo_bundle.meta.scoring["kind"] == "softmax" else sigmoid
    np.testing.assert_allclose(scorer(audio), squash(raw / 1.7 + biases), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# the command


@pytest.fixture(scope="module")
def labelled_csv(tmp_path_factory):
    """Eight synthetic clips of four urban labels (edge.tools.demo's sounds in pink noise)."""
    from edge.tools.demo import car_horn, gun_shots, jackhammer, siren

    folder = tmp_path_factory.mktemp("labelled")
    rows = [["path", "label"]]
    for i, (label, make) in enumerate([("siren", siren), ("car_horn", car_horn), ("jackhammer", jackhammer),
                                       ("gun_shot", gun_shots)] * 2):
        name = f"{label}-{i}.wav"
        sf.write(folder / name, scene(5, [(0, make, 5, 0.2 + 0.1 * (i // 4))], seed=10 + i), RATE)
        rows.append([name, label])
    with open(folder / "clips.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return folder / "clips.csv"


def figures(output: str) -> dict[str, tuple[float, float, float]]:
    """{before|after: (NLL, ECE, top-1 %)} from the command's table."""
    out = {}
    for line in output.splitlines():
        parts = line.split()
        if parts[:2] == ["held", "out"]:
            parts = ["held out", *parts[2:]]
        if parts and parts[0] in ("before", "after", "held out"):
            out[parts[0]] = (float(parts[1]), float(parts[2]), float(parts[3].rstrip("%")))
    return out


def test_scores_command_writes_temperature_and_biases(labelled_csv, tmp_path):
    out, plot = tmp_path / "site.yaml", tmp_path / "reliability.pdf"  # written as its name says
    result = CliRunner().invoke(calibrate.cli.main, [
        "scores", "--labels", "urban", "--data", str(labelled_csv), "--out", str(out), "--threads", "1",
        *(["--plot", str(plot)] if HAVE_MATPLOTLIB else [])])
    assert result.exit_code == 0, result.output
    fig = figures(result.stdout)
    assert fig["after"][0] <= fig["before"][0] + 1e-9  # the NLL never rises
    assert "held out" in fig and fig["held out"][0] >= fig["after"][0] - 1e-9  # 8 recordings: 5 folds
    assert re.search(r"^bias L2 penalty (\S+), the lowest held-out NLL of 0.001: ", result.stdout, re.M)
    assert "; held out by recording: NLL" in out.read_text()
    site, urban = load_label_set(out), resolve_label_set("urban")
    assert site.sha256 == urban.sha256 and site.names == urban.names
    assert site.temperature != 1.0
    biased = {label.name for label in site.labels if label.bias != 0.0}
    assert biased and biased <= {"siren", "car_horn", "jackhammer", "gun_shot"}  # labels without clips keep 0
    assert [label.threshold for label in site.labels] == [label.threshold for label in urban.labels]
    assert "calibration:" in out.read_text() and out.read_text().startswith("# Label set 'urban'")
    assert "# Command: semanticac-calibrate scores --labels urban --data" in out.read_text()  # not one letter each
    assert "no clip says which recording it was cut from, so each was held out alone" in result.stdout
    assert re.search(r"^siren +2 +\S+  \(under 5 clips: a guess\)$", result.stdout, re.M)  # 2 clips each
    assert re.search(r"^dog_bark +0 +\+0\.000  \(no clip: bias 0\)$", result.stdout, re.M)
    assert not HAVE_MATPLOTLIB or plot.read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("column", ["recording", "group"])  # group: as training's CSV calls it
def test_clips_of_too_few_recordings_are_not_held_out(labelled_csv, tmp_path, column):
    """A `recording` column groups clips: 2 recordings cannot make 5 folds, so nothing is held
    out, the penalty is the default, and the output says the figures are the fitted clips'."""
    rows = list(csv.reader(open(labelled_csv)))
    grouped = tmp_path / "grouped.csv"
    with open(grouped, "w", newline="") as f:
        csv.writer(f).writerows([rows[0] + [column]] + [
            [str(labelled_csv.parent / path), label, f"take{i % 2}"] for i, (path, label) in enumerate(rows[1:])])
    result = CliRunner().invoke(calibrate.cli.main, [
        "scores", "--labels", "urban", "--data", str(grouped), "--out", str(tmp_path / "g.yaml"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "held out" not in figures(result.stdout) and "bias L2 penalty" not in result.stdout
    assert "too few recordings to hold any out" in result.stdout


def test_too_few_clips_are_refused_before_a_calibration_is_written(labelled_csv, tmp_path):
    """From 1 clip the temperature had come out 0.14 (every score pushed to 0 or 1), and was written."""
    rows = list(csv.reader(open(labelled_csv)))
    few = tmp_path / "few.csv"
    with open(few, "w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [[str(labelled_csv.parent / p), label] for p, label in rows[1:4]])
    out = tmp_path / "few.yaml"
    result = CliRunner().invoke(calibrate.cli.main, [
        "scores", "--labels", "urban", "--data", str(few), "--out", str(out), "--threads", "1"])
    assert result.exit_code != 0 and "3 clip(s) cannot fit a calibration worth writing" in result.output
    assert "give at least 8" in result.output and not out.exists()


def test_temperature_alone_keeps_the_top1(labelled_csv, tmp_path):
    result = CliRunner().invoke(calibrate.cli.main, [
        "scores", "--labels", "urban", "--data", str(labelled_csv), "--out", str(tmp_path / "t.yaml"), "--no-bias",
        "--threads", "1"])
    assert result.exit_code == 0, result.output
    fig = figures(result.stdout)
    assert fig["after"][2] == fig["before"][2] and fig["after"][0] <= fig["before"][0] + 1e-9
    assert all(label.bias == 0.0 for label in load_label_set(tmp_path / "t.yaml").labels)


def three_per_class(data_dir) -> dict[str, list]:
    """The first three UrbanSound8K fold-2 clips of each class."""
    chosen: dict[str, list] = {}
    for clip in read_dataset(f"us8k:{data_dir / 'us8k'}:2"):
        if len(chosen.setdefault(clip.label, [])) < 3:
            chosen[clip.label].append(clip)
    return chosen


def test_scores_on_real_clips(data_dir, tmp_path):
    """Three UrbanSound8K fold-2 clips per class through the command: NLL and ECE do not rise."""
    chosen = three_per_class(data_dir)
    csv_path = tmp_path / "real.csv"
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([["path", "label"]] + [[str(c.path), c.label] for group in chosen.values()
                                                        for c in group])
    out = tmp_path / "site.yaml"
    fitted = tmp_path / "fitted.yaml"  # a set whose thresholds were fitted: a new calibration voids that
    fitted.write_text("name: urban\nfitted_for: {hop: 1}\nlabels: " + str(resolve_label_set("urban").names) + "\n")
    result = CliRunner().invoke(calibrate.cli.main, [
        "scores", "--labels", str(fitted), "--data", str(csv_path), "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("30 clip(s)")
    fig = figures(result.stdout)
    assert fig["after"][0] <= fig["before"][0] + 1e-9
    site = load_label_set(out)
    assert site.temperature > 0 and site.calibrated_new and site.fitted_for is None
    assert site.fitted_model == read_bundle(shipped_bundle()).meta.model_id  # the bundle it was fitted on
    # a bundle that trained on every development UrbanSound8K clip (as the shipped one did, where
    # the data was then): these are its training clips, and it is said
    from tests.bundles import bundle_copy, trained_bundle

    def trained_here(meta):
        meta["training"]["data"] = [{"kind": "us8k", "root": str(data_dir / "us8k"), "test_folds": [],
                                     "val_fraction": 0.0}]

    copy = bundle_copy(trained_bundle(), tmp_path / "bundle", trained_here)
    result = CliRunner().invoke(calibrate.cli.main, [
        "scores", "--bundle", str(copy), "--labels", "urban", "--data", str(csv_path), "--out", str(out),
        "--threads", "1"])
    assert result.exit_code == 0 and f"warning: 30 of the 30 clips are of {data_dir / 'us8k'}" in \
        result.stderr, result.output


def test_clips_a_bundle_trained_on_are_said_by_its_training_csv(labelled_csv, tmp_path):
    """A training CSV's own files only, not every clip beside it; every training source counted (the
    first that held some was said alone: 2 of 8 where 5 of the 8 were training clips)."""
    from tests.bundles import bundle_copy, trained_bundle

    rows = list(csv.reader(open(labelled_csv)))
    training, more = labelled_csv.parent / "training.csv", labelled_csv.parent / "more.csv"
    for path, part in ((training, rows[1:3]), (more, rows[3:6])):
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([["file", "label"], *part])
    copy = bundle_copy(trained_bundle(), tmp_path / "bundle", lambda meta: meta["training"].update(
        data=[{"kind": "csv", "root": str(path), "test_folds": [], "val_fraction": 0.0} for path in (training, more)]))
    result = CliRunner().invoke(calibrate.cli.main, [
        "scores", "--bundle", str(copy), "--labels", "urban", "--data", str(labelled_csv),
        "--out", str(tmp_path / "x.yaml"), "--threads", "1"])
    assert result.exit_code == 0 and f"warning: 5 of the 8 clips are of {training} and {more}" in result.stderr, \
        result.output
    # a CSV with test folds: its other folds' rows trained (it had been skipped whole: 36 of 48 clips unsaid)
    folded = labelled_csv.parent / "folded.csv"
    with open(folded, "w", newline="") as f:
        # `02` is fold 2 as training reads it: held out, not a training clip
        csv.writer(f).writerows([["file", "label", "fold"], *([*row[:2], fold] for row, fold in zip(
            rows[1:5], ["1", "01", "2", "02"]))])
    copy = bundle_copy(trained_bundle(), tmp_path / "folded", lambda meta: meta["training"].update(
        data=[{"kind": "csv", "root": str(folded), "test_folds": [2], "val_fraction": 0.0}]))
    result = CliRunner().invoke(calibrate.cli.main, [
        "scores", "--bundle", str(copy), "--labels", "urban", "--data", str(labelled_csv),
        "--out", str(tmp_path / "y.yaml"), "--threads", "1"])
    assert result.exit_code == 0 and f"warning: 2 of the 8 clips are of {folded}" in result.stderr, result.output


def test_a_site_s_wording_of_trained_labels_fits_the_calibration_the_plain_set_fits(labelled_csv, tmp_path):
    """listen scores a label named as a trained one with its trained text (edge.vocabulary.as_trained),
    whatever the set's template: the fit must read the same logits, or its T and biases are fitted on
    scores the device never gives."""
    worded = tmp_path / "worded.yaml"
    worded.write_text("name: worded\nprompt: 'sound: {label}'\nlabels: [siren, car_horn, jackhammer, gun_shot]\n")
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\nlabels: [siren, car_horn, jackhammer, gun_shot]\n")
    fitted = {}
    for labels in (worded, plain):
        out = tmp_path / f"{labels.stem}-site.yaml"
        result = CliRunner().invoke(calibrate.cli.main, ["scores", "--labels", str(labels), "--data",
                                                         str(labelled_csv), "--out", str(out), "--threads", "1"])
        assert result.exit_code == 0, result.output
        site = load_label_set(out)
        fitted[labels.stem] = (site.temperature, [label.bias for label in site.labels], figures(result.stdout))
    assert fitted["worded"][0] == pytest.approx(fitted["plain"][0], rel=1e-6)
    assert fitted["worded"][1] == pytest.approx(fitted["plain"][1], abs=1e-6)
    assert fitted["worded"][2] == fitted["plain"][2]  # before, after, held out: the same figures


def test_labels_the_model_mostly_disagrees_with_are_doubted_aloud(labelled_csv, tmp_path):
    """30 real clips of ten classes all labelled dog_bark fitted dog_bark's bias +9 and reported the
    fit a big improvement; then silence showed dog_bark 0.999. A label column the model's top-1 mostly
    disagrees with before calibration is now said, with the bias it bought; right labels are not."""
    rows = list(csv.reader(labelled_csv.open()))[1:]
    said = {}
    for name, label_of in (("right", lambda label: label), ("all_one", lambda label: "dog_bark")):
        path = labelled_csv.parent / f"{name}.csv"
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([["path", "label"], *[[clip, label_of(label)] for clip, label in rows * 2]])
        result = CliRunner().invoke(calibrate.cli.main, ["scores", "--labels", "urban", "--data", str(path), "--out",
                                                         str(tmp_path / f"{name}.yaml"), "--threads", "1"])
        assert result.exit_code == 0, result.output
        said[name] = [line for line in result.output.splitlines() if "top-1 agrees with" in line]
    assert said["right"] == []
    assert len(said["all_one"]) == 1 and "agrees with 0% of the clips' labels" in said["all_one"][0]
    assert "(dog_bark's bias +" in said["all_one"][0], said


def test_an_output_over_another_output_or_an_input_is_refused_before_any_work(labelled_csv, tmp_path):
    """--plot over --out would leave a PNG where the label set should be (and say `wrote` twice);
    --out over the --data CSV would replace the clips' list with YAML. Refused at once, nothing
    written; --out over the --labels file itself stays allowed (a set fitted again in place)."""
    before = labelled_csv.read_bytes()
    runner = CliRunner()
    site = tmp_path / "site.yaml"
    figure = tmp_path / "site.svg"
    for extra, said in (([ "--out", str(figure), "--plot", str(figure)], f"--plot {figure} is the --out file"),
                        (["--out", str(site), "--plot", str(site)], "ends in .yaml: the figure is written as"),
                        (["--out", str(labelled_csv)], f"--out {labelled_csv} is also given as --data"),
                        # a .jpg (or no ending) got PNG bytes under that name
                        (["--out", str(site), "--plot", str(tmp_path / "r.jpg")],
                         "ends in .jpg: the figure is written as .png, .pdf, .svg by its name's ending; name it e.g. "
                         "r.png")):
        result = runner.invoke(calibrate.cli.main, ["scores", "--labels", "urban", "--data", str(labelled_csv), *extra])
        assert result.exit_code == 2 and said in result.output and "Traceback" not in result.output, result.output
    assert labelled_csv.read_bytes() == before and not site.exists() and not figure.exists()


def test_dataset_specs(data_dir, caplog):
    esc = read_dataset(f"esc50:{data_dir / 'esc50'}")
    assert len(esc) == 1600 and esc[0].path.is_file()
    assert resolve_labels(esc, resolve_label_set("esc50"), "--data") == esc  # ESC-50's categories are the set's names
    fold1 = read_dataset(f"us8k:{data_dir / 'us8k'}:1")
    assert len(fold1) == 873 and all("/fold1/" in str(c.path) for c in fold1)
    with pytest.raises(CalibrationError, match="not in label set 'urban'.*--others-are-none"):
        resolve_labels(esc, resolve_label_set("urban"), "--data")
    # the site's other sounds: ESC-50's siren and car horn are the urban set's, the rest none of them
    with caplog.at_level(logging.INFO, logger="calibrate.inputs"):
        others = resolve_labels(esc, resolve_label_set("urban"), "--data", others_are_none=True)
    assert {c.label for c in others} == {None, "siren", "car_horn"}
    assert sum(c.label == "siren" for c in others) == 32
    # which categories became negatives is said; those that share a word with a label are warned of
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]  # said without -v
    assert warnings[0].startswith("--data: 48 categories taken as none of the set's labels: airplane, breathing")
    warned = warnings[1]
    assert "dog (dog_bark)" in warned and "engine (engine_idling)" in warned


def test_labels_are_matched_as_the_set_matches_them_and_none_is_a_negative(tmp_path):
    from calibrate.inputs import LabelledClip

    urban = resolve_label_set("urban")
    clips = [LabelledClip(tmp_path / f"{i}.wav", label, f"x.csv:{i + 2}")
             for i, label in enumerate(["Car horn", "dog_bark", "None", "street music"])]
    assert [c.label for c in resolve_labels(clips, urban, "--data")] == ["car_horn", "dog_bark", None, "street_music"]
    with pytest.raises(CalibrationError, match=r"\['sirens'\] are not in label set 'urban' \(first at x.csv:9\); "
                                               r"did you mean 'siren'\?.*write 'none' for a clip of none of them"):
        resolve_labels([*clips, LabelledClip(tmp_path / "s.wav", "sirens", "x.csv:9")], urban, "--data")
    csv_path = tmp_path / "clips.csv"
    csv_path.write_text("file,class\na.wav,siren\n")  # both aliases
    assert [(c.path.name, c.label) for c in read_clip_csv(csv_path)] == [("a.wav", "siren")]
    csv_path.write_text("file,sound\na.wav,siren\n")
    with pytest.raises(CalibrationError, match=r"missing column\(s\) \['label'\]: the header has \['file', 'sound'\];"):
        read_clip_csv(csv_path)  # the header as written, not with the alias's column added
    csv_path.write_text("path,label\na.wav,\n")
    with pytest.raises(CalibrationError, match="column 'label' is empty.*or 'none' for a clip of none"):
        read_clip_csv(csv_path)


def test_negatives_hold_the_sigmoid_biases_down(data_dir, tmp_path, caplog):
    """Positives alone only teach a sigmoid bundle's biases how sure to be of a sound that is there:
    they rise, and other sounds start events. Clips of other sounds (`none`) hold them down."""
    import logging

    chosen = three_per_class(data_dir)
    esc = [c for c in read_dataset(f"esc50:{data_dir / 'esc50'}")
           if c.label in ("laughing", "coughing", "clock_tick", "keyboard_typing", "rain", "wind")][::4]
    rows = [[str(c.path), c.label] for group in chosen.values() for c in group]
    for name, extra in (("positives", []), ("both", [[str(c.path), "none"] for c in esc])):
        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            csv.writer(f).writerows([["path", "label"], *rows, *extra])
    biases = {}
    for name in ("positives", "both"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="calibrate.scores"):
            result = CliRunner().invoke(calibrate.cli.main, [
                "scores", "--labels", "urban", "--data", str(tmp_path / f"{name}.csv"), "--out",
                str(tmp_path / f"{name}.yaml"), "--threads", "1"])
        assert result.exit_code == 0, result.output
        assert ("every clip is one of the set's labels" in caplog.text) == (name == "positives")
        biases[name] = np.array([label.bias for label in load_label_set(tmp_path / f"{name}.yaml").labels])
    assert result.stdout.startswith(f"{30 + len(esc)} clip(s) ({len(esc)} of none of the set's labels)")
    # (the demo model trained on these fold-2 clips: it is sure of them, and the biases move little)
    assert biases["both"].mean() < biases["positives"].mean() and biases["both"].min() < -0.2


# ---------------------------------------------------------------------------------------------
# errors


def scores(args):
    return CliRunner().invoke(calibrate.cli.main, ["scores", "--labels", "urban", *args])


def test_unknown_labels_are_listed_with_the_sets_names(tmp_path):
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("path,label\na.wav,siren\nb.wav,helicopter\nc.wav,tractor\n")
    result = scores(["--data", str(csv_path), "--out", str(tmp_path / "x.yaml")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "['helicopter', 'tractor']" in result.output and "street_music" in result.output
    assert f"{csv_path}:3" in result.output
    assert not (tmp_path / "x.yaml").exists()


@pytest.mark.parametrize("text,message", [
    ("path,label\n", "holds no rows"),
    ("file_name,label\na.wav,siren\n", "missing column(s) ['path']"),
    ("path,label\na.wav,\n", "column 'label' is empty"),
    ("path,label\na.wav,siren\nb, c.wav,dog_bark\n", ":3: 3 values for the header's 2 columns ['path', 'label']"),
])
def test_bad_csvs(tmp_path, text, message):
    csv_path = tmp_path / "c.csv"
    csv_path.write_text(text)
    with pytest.raises(CalibrationError, match=None) as err:
        read_clip_csv(csv_path)
    assert message in str(err.value)


def test_a_csv_saved_by_excel_with_a_byte_order_mark_reads(tmp_path):
    csv_path = tmp_path / "c.csv"
    csv_path.write_bytes("path,label\r\na.wav,siren\r\n".encode("utf-8-sig"))
    clips = read_clip_csv(csv_path)
    assert [(clip.path, clip.label) for clip in clips] == [(tmp_path / "a.wav", "siren")]


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_bad_bias_penalty_is_a_usage_error_before_any_clip_is_heard(tmp_path, value):
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("path,label\na.wav,siren\n")
    result = scores(["--data", str(csv_path), "--out", str(tmp_path / "x.yaml"), "--bias-l2", value])
    assert result.exit_code == 2 and "--bias-l2" in result.output and "finite number >= 0" in result.output


def test_bad_dataset_spec_and_unreadable_clips(tmp_path):
    result = scores(["--data", "esc51:/nowhere", "--out", str(tmp_path / "x.yaml")])
    assert result.exit_code == 1 and "esc50:ROOT or us8k:ROOT[:FOLDS]" in result.output
    (tmp_path / "bad.wav").write_bytes(b"no audio")
    (tmp_path / "c.csv").write_text("path,label\nbad.wav,siren\nmissing.wav,siren\n")
    result = scores(["--data", str(tmp_path / "c.csv"), "--out", str(tmp_path / "x.yaml"), "--threads", "1"])
    assert result.exit_code == 1 and "none of the 2 clip(s) could be read" in result.output
    assert "bad.wav" in result.output and not (tmp_path / "x.yaml").exists()


def test_a_clip_missing_beside_a_relative_csv_is_said_where_it_was_looked_for(tmp_path, monkeypatch):
    """Its paths are read from the CSV's folder; the message had said the command's folder."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "c.csv").write_text("path,label\nmissing.wav,siren\n")
    monkeypatch.chdir(tmp_path)
    result = scores(["--data", "data/c.csv", "--out", str(tmp_path / "x.yaml"), "--threads", "1"])
    assert result.exit_code == 1 and f"{tmp_path / 'data' / 'missing.wav'}: no such file" in result.output
    assert "read from the folder the command runs in" not in result.output


def test_fit_scores_on_a_sigmoid_bundle(demo_bundle):
    """A sigmoid model (model.json scoring.kind sigmoid, a global logit_bias): the fit lowers the
    one-vs-rest cross-entropy as edge's Scorer computes it, and keeps the bundle's logit_bias."""
    import dataclasses

    from calibrate.scores import ClipSet, fit_scores
    from edge.bundle import Bundle

    meta = dataclasses.replace(demo_bundle.meta, scoring={"kind": "sigmoid", "logit_bias": -6.0})
    bundle = Bundle(demo_bundle.path, meta)
    urban = resolve_label_set("urban")
    embeddings = label_embeddings_for(bundle, urban)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, size=200)
    # audio near its label's text embedding, with noise: a model that is right but not sure
    audio = embeddings.embeddings[y] + 0.15 * rng.standard_normal((200, embeddings.embeddings.shape[1]))
    report = fit_scores(bundle, urban, embeddings, ClipSet(audio.astype(np.float32), y, []))
    assert report.kind == "sigmoid" and not report.calibration.at_bound
    assert report.after.nll < report.before.nll
    scorer = Scorer.for_bundle(meta, embeddings, report.label_set)
    assert scorer.logit_bias == -6.0 and scorer.temperature == report.calibration.temperature
    p = scorer(audio.astype(np.float32))
    assert np.all((p > 0) & (p < 1)) and not np.allclose(p.sum(axis=1), 1.0)  # one sigmoid per label


def test_the_figures_are_the_devices_scores_with_the_vocabulary_branch(demo_bundle, labelled_csv, tmp_path,
                                                                        monkeypatch):
    """A set with a label no one trained (`speech`): the clips carry the graph's vocabulary scores
    (and the demo bundle's head's logits), and before/after are scored with them, as `listen`
    scores (the new label: the vocabulary's; the trained ones: the student's mixed with the head's)."""
    import dataclasses

    from calibrate.scores import embed_clips, fit_scores
    from edge.backends import select_backend
    from edge.labels.labelset import Label
    from edge.vocabulary import Vocabulary

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    urban = resolve_label_set("urban")
    site = dataclasses.replace(urban, name="urban_speech",
                               labels=(*urban.labels, Label("speech", ("an audio clip of speech",), 0.5)))
    clips = read_clip_csv(labelled_csv)
    vocabulary = Vocabulary.from_bundle(demo_bundle)
    with select_backend(demo_bundle, "onnxruntime", threads=1) as backend, \
            select_backend(demo_bundle, graph="vocabulary", threads=1) as graph:
        clipset = embed_clips(demo_bundle, site, clips, backend, lambda outputs: vocabulary.scores(graph, outputs))
    assert clipset.vocabulary is not None and clipset.vocabulary.shape == (len(clips), 521 + 60)  # + the head's
    embeddings = label_embeddings_for(demo_bundle, site)
    report = fit_scores(demo_bundle, site, embeddings, clipset)
    device = Scorer.for_bundle(demo_bundle.meta, embeddings, site, vocabulary)(clipset.embeddings, clipset.vocabulary)
    want = metrics(device, clipset.targets, "sigmoid")
    assert (report.before.nll, report.before.ece, report.before.accuracy) == (want.nll, want.ece, want.accuracy)
    student = Scorer.for_bundle(demo_bundle.meta, embeddings, site)(clipset.embeddings)
    assert not np.allclose(student[:, -1], device[:, -1])  # speech: the vocabulary's score, not the student's
    assert not np.allclose(student[:, 0], device[:, 0])  # a trained label: the student's logit mixed with the head's
    # the set's calibration reaches the new label too: a bias of -3 on speech alone (the trained
    # labels' scores, and so the vocabulary's hold-back of speech, unchanged) moves its logit by -3
    quieter = calibrated(site, 1.0, [0.0] * len(urban.labels) + [-3.0])
    moved = Scorer.for_bundle(demo_bundle.meta, embeddings, quieter, vocabulary)(clipset.embeddings, clipset.vocabulary)
    np.testing.assert_allclose(moved[:, :-1], device[:, :-1])
    p = np.clip(device[:, -1], 1e-12, 1 - 1e-12)
    np.testing.assert_allclose(moved[:, -1], 1 / (1 + np.exp(-(np.log(p / (1 - p)) - 3.0))), rtol=1e-6)
    # a set calibrated before the calibration reached new labels (no `calibration.new_labels`): as it was
    older = dataclasses.replace(quieter, calibrated_new=False)
    unmoved = Scorer.for_bundle(demo_bundle.meta, embeddings, older, vocabulary)(clipset.embeddings, clipset.vocabulary)
    np.testing.assert_allclose(unmoved, device)


def test_a_second_label_set_is_a_usage_error_not_silently_the_one_fitted(tmp_path):
    result = CliRunner().invoke(calibrate.cli.main, ["scores", "--labels", "urban", "--labels", "esc50", "--data",
                                                     "x.csv", "--out", str(tmp_path / "x.yaml")])
    assert result.exit_code == 2 and "given 2 times (urban, esc50): this command takes one label set" in result.output
    assert not (tmp_path / "x.yaml").exists()


def test_a_set_another_calibrate_wrote_while_this_one_ran_is_kept(labelled_csv, tmp_path, monkeypatch, caplog):
    """`scores` and `thresholds` run at once on one set: the second to finish found the first's file, stamped
    as calibrate's and so replaced as it was (no .bak), and the first's fit was lost without a word."""
    import calibrate.scores
    from calibrate.labelfile import backup_path, stamped

    site = tmp_path / "site.yaml"
    site.write_text("name: site\nlabels: [siren, car_horn, jackhammer, gun_shot]\n")
    meanwhile = stamped("name: site\ncalibration: {temperature: 2.0}\nlabels: [siren, car_horn, jackhammer, gun_shot]\n")
    real = calibrate.scores.fit_scores

    def slow(*args, **kwargs):  # the other run ends first, while this one fits
        site.write_text(meanwhile)
        return real(*args, **kwargs)

    monkeypatch.setattr(calibrate.scores, "fit_scores", slow)
    with caplog.at_level(logging.WARNING, logger="calibrate.cli"):
        result = CliRunner().invoke(calibrate.cli.main, ["scores", "--labels", str(site), "--data", str(labelled_csv),
                                                         "--out", str(site), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert backup_path(site).read_text() == meanwhile and site.read_text() != meanwhile
    assert f"{site} changed while this ran (another calibrate, or an edit): that version is kept as" in caplog.text
