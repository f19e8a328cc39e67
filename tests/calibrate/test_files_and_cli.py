"""The written label set, the progress lines and the command's help."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import calibrate.cli
from calibrate.errors import CalibrationError
from calibrate.inputs import audio_files
from calibrate.labelfile import dump_label_set, write_label_set
from calibrate.progress import Progress
from edge.labels.labelset import load_label_set, parse_label_set

SITE = """\
name: workshop
description: a test set with everything a label set may hold
prompt: "the sound of {label}"
threshold: 0.4
calibration: {temperature: 1.3}
agree: 0.4
fitted_for: {window: 5, hop: 1, smooth: 3, min_duration: 1, release: 0.7}
fitted_model: semanticac-yamnet-0123456789abcdef
labels:
  - drilling
  - name: table_saw
    prompts: ["a circular saw cutting wood", "the sound of table saw"]
    threshold: 0.6
    group: tools
    bias: -0.25
    agree: 0
  - {name: Hundegebell, text: dog_bark, group: animals}
"""


def test_a_copy_keeps_prompts_groups_and_calibration(tmp_path):
    original = parse_label_set(SITE, "site.yaml")
    out = tmp_path / "copy.yaml"
    back = write_label_set(out, original, thresholds=[0.11, 0.123456789, 1.0], header=["fitted here", "second"])
    again = load_label_set(out)
    assert again.sha256 == original.sha256 == back.sha256
    assert [label.prompts for label in again.labels] == [label.prompts for label in original.labels]
    assert [label.group for label in again.labels] == [None, "tools", "animals"]
    assert [label.text for label in again.labels] == [None, None, "dog_bark"]
    assert [label.threshold for label in again.labels] == [0.11, 0.123456789, 1.0]  # exactly
    assert again.temperature == 1.3 and [label.bias for label in again.labels] == [0.0, -0.25, 0.0]
    assert again.description == original.description and again.prompt == original.prompt
    assert again.agreement() == [0.4, 0.0, 0.4]
    assert not again.calibrated_new  # the SITE set was calibrated before calibrations reached new labels
    assert again.fitted_for == original.fitted_for == {"window": 5, "hop": 1, "smooth": 3, "min_duration": 1,
                                                       "release": 0.7}
    assert again.fitted_model == "semanticac-yamnet-0123456789abcdef"
    assert out.read_text().startswith("# fitted here\n# second\nname: workshop\n")
    assert "\n  smooth: 3\n" in out.read_text() and "smooth: 3.0" not in out.read_text()  # a count of windows


def test_new_calibration_replaces_the_old(tmp_path):
    original = parse_label_set(SITE, "site.yaml")
    text = dump_label_set(original, temperature=0.8, biases=[0.5, 0.0, -1.5])
    back = parse_label_set(text)
    assert back.temperature == 0.8 and [label.bias for label in back.labels] == [0.5, 0.0, -1.5]
    assert [label.threshold for label in back.labels] == [0.4, 0.6, 0.4]
    assert "calibration" not in dump_label_set(original, temperature=1.0)
    fitted = parse_label_set(dump_label_set(original, agree=0.7))  # thresholds fitted under --agree 0.7
    assert fitted.agree == 0.7 and fitted.agreement() == [0.7, 0.7, 0.7]
    # what calibrate scores fits now reaches the new labels, and the file says so
    from calibrate.scores import calibrated

    new = parse_label_set(dump_label_set(calibrated(original, 1.0, [0.0, 0.2, 0.0])))
    assert new.calibrated_new and new.temperature == 1.0


def test_audio_files_from_files_and_folders(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.wav", "a/y.FLAC", "a/z.txt", "b.ogg"):
        (tmp_path / name).write_bytes(b"")
    found = audio_files([tmp_path / "a", tmp_path / "b.ogg", tmp_path / "a" / "x.wav"])
    assert [p.name for p in found] == ["x.wav", "y.FLAC", "b.ogg"]  # folder sorted, repeats once
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="no background audio files found"):
        audio_files([tmp_path / "empty"])


def test_a_folder_s_audio_in_other_endings_is_read_and_what_is_left_out_is_said(tmp_path, caplog):
    """A field recorder's .BWF, a .wave and an .aifc (which libsndfile reads, as listen does) were left out of a
    background folder without a word, as was a phone's .m4a (which it cannot read)."""
    for name in ("r.BWF", "s.wave", "t.aifc", "u.wav", "phone1.m4a", "phone2.M4A", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="calibrate.inputs"):
        found = audio_files([tmp_path])
    assert [p.name for p in found] == ["r.BWF", "s.wave", "t.aifc", "u.wav"]
    assert f"{tmp_path}: 2 audio file(s) in a format this cannot read are left out (.m4a: 2; e.g. " in caplog.text
    assert f"{tmp_path}: 1 file(s) that are not audio files are left out" in caplog.text


def test_progress_logs_about_every_tenth_off_a_terminal(caplog):
    with caplog.at_level(logging.INFO, logger="calibrate.progress"):
        with Progress(40, "listening", stream=io.StringIO()) as bar:
            for _ in range(40):
                bar.update()
    lines = [r.getMessage() for r in caplog.records if r.name == "calibrate.progress"]
    assert len(lines) == 10 and lines[-1].startswith("listening: 40/40 (100 %")


def test_progress_draws_a_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    with Progress(4, "fitting", stream=stream) as bar:
        bar.update(2)
        bar.update(2)
    text = stream.getvalue()
    assert text.count("\r") == 2 and "4/4" in text and text.endswith("\n")


def test_help_lists_both_commands():
    result = CliRunner().invoke(calibrate.cli.main, ["--help"])
    assert result.exit_code == 0
    assert "thresholds  per-label thresholds" in result.output and "scores      a temperature" in result.output
    for command in ("thresholds", "scores"):
        sub = CliRunner().invoke(calibrate.cli.main, [command, "--help"])
        assert sub.exit_code == 0 and "--out" in sub.output and "--labels" in sub.output


def test_the_header_s_command_keeps_an_option_given_as_zero(tmp_path):
    """0 == False in Python: `--min-level 0` or `--agree 0` must not read as an option left out."""
    ctx = calibrate.cli.thresholds.make_context("thresholds", [
        "--labels", "urban", "--background", str(tmp_path), "--false-alarms-per-hour", "1",
        "--out", str(tmp_path / "site.yaml"), "--min-level", "0", "--agree", "0", "--join"])
    line = calibrate.cli.command_line(ctx)
    assert "--min-level 0.0" in line and "--agree 0.0" in line and "--join" in line, line
    assert "--only-raise" not in line and "--plot" not in line  # left out: not written
    # the other side of a flag pair is written (--no-bias was left out as False)
    scores = calibrate.cli.scores.make_context("scores", [
        "--labels", "urban", "--data", "x.csv", "--out", str(tmp_path / "site.yaml"), "--no-bias"])
    assert calibrate.cli.command_line(scores).endswith("--no-bias")
    ctx = calibrate.cli.thresholds.make_context("thresholds", [
        "--labels", "urban", "--background", str(tmp_path), "--false-alarms-per-hour", "1",
        "--out", str(tmp_path / "site.yaml"), "--lower"])
    assert calibrate.cli.command_line(ctx).endswith("--lower")


def test_refitting_a_site_s_own_file_keeps_the_previous_one(tmp_path):
    """`--out` is often the `--labels` file itself: a hand-written file (its comments, a set-level
    default) is kept as .bak; a file calibrate wrote and nobody touched is replaced as it is; one
    edited by hand since is kept too, the older .bak beside it (nothing a person wrote is lost)."""
    from calibrate.labelfile import write_label_set

    site = tmp_path / "site.yaml"
    original = "# my notes: the kettle is in the kitchen\nname: site\nthreshold: 0.6\nlabels: [dog_bark, kettle]\n"
    site.write_text(original)
    write_label_set(site, load_label_set(site), thresholds=[0.7, 0.8])
    assert (tmp_path / "site.yaml.bak").read_text() == original
    assert [label.threshold for label in load_label_set(site).labels] == [0.7, 0.8]
    write_label_set(site, load_label_set(site), thresholds=[0.9, 0.8])  # untouched since: replaced as it is
    assert (tmp_path / "site.yaml.bak").read_text() == original and len(list(tmp_path.iterdir())) == 2
    edited = site.read_text().replace("name: site", "# raised by hand after a false alarm\nname: site")
    site.write_text(edited)
    write_label_set(site, load_label_set(site), thresholds=[0.95, 0.8])
    assert (tmp_path / "site.yaml.bak").read_text() == edited
    older = list(tmp_path.glob("site.yaml.bak-*"))
    assert len(older) == 1 and older[0].read_text() == original


def test_thresholds_on_a_set_calibrated_for_another_model_ask_for_scores_first(tmp_path):
    """A set whose calibration a pip upgrade left behind (fitted_model: the old demo model): thresholds
    fitted on its scores were written as the new model's, and the warning that the calibration needs
    fitting again was gone for good. Refused before any listening; a set calibrated on this bundle's
    model, or with no calibration, is not."""
    from edge.bundle import read_bundle, shipped_bundle

    sf.write(tmp_path / "bg.wav", np.zeros(16000, np.float32), 16000)
    site, out = tmp_path / "site.yaml", tmp_path / "out.yaml"
    args = ["thresholds", "--labels", str(site), "--background", str(tmp_path / "bg.wav"),
            "--false-alarms-per-hour", "1", "--out", str(out)]
    site.write_text("name: site\ncalibration: {temperature: 0.08}\nfitted_model: semanticac-yamnet-0123456789abcdef\n"
                    "labels: [dog_bark, siren]\n")
    result = CliRunner().invoke(calibrate.cli.main, args)
    assert result.exit_code == 1 and not out.exists(), result.output
    assert ("has a calibration fitted on model semanticac-yamnet-0123456789abcdef, and this bundle is "
            f"{read_bundle(shipped_bundle()).meta.model_id}: fit the calibration on this bundle first") in result.output
    site.write_text("name: site\nfitted_model: semanticac-yamnet-0123456789abcdef\nlabels: [dog_bark, siren]\n")
    assert "has a calibration fitted" not in CliRunner().invoke(calibrate.cli.main, args).output


def test_a_header_naming_a_file_that_is_no_utf8_is_written_escaped(tmp_path):
    """The header's command names the background as given: a Latin-1 name (a surrogate for its byte)
    made YAML refuse the file after the whole listen, and nothing was written."""
    back = write_label_set(tmp_path / "out.yaml", parse_label_set("name: x\nlabels: [dog]\n"), thresholds=[0.6],
                           header=["Command: semanticac-calibrate thresholds --background r\udce9gion.wav"])
    assert back.names == ["dog"] and "--background r\\udce9gion.wav" in (tmp_path / "out.yaml").read_text()


def test_writing_a_set_that_extends_another_says_it_is_written_out_whole(tmp_path, caplog):
    """A fitted `child.yaml` that extended `base.yaml` was written flat, `extends:` gone, and said
    nothing: labels added to the base later never reached the site's set."""
    (tmp_path / "base.yaml").write_text("name: base\nlabels: [dog_bark, siren]\n")
    child = tmp_path / "child.yaml"
    child.write_text("name: child\nextends: base.yaml\nlabels: [doorbell]\n")
    with caplog.at_level(logging.WARNING, logger="calibrate.labelfile"):
        back = write_label_set(tmp_path / "out.yaml", load_label_set(child), thresholds=[0.6, 0.7, 0.8])
    assert back.names == ["dog_bark", "siren", "doorbell"] and "extends" not in (tmp_path / "out.yaml").read_text()
    assert f"{child} extends base.yaml: {tmp_path / 'out.yaml'} holds every label of both, written out" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="calibrate.labelfile"):
        write_label_set(tmp_path / "again.yaml", load_label_set(tmp_path / "base.yaml"), thresholds=[0.6, 0.7])
    assert "extends" not in caplog.text
