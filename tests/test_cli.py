"""The three console scripts: help, version, and one-line errors (never a traceback)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import calibrate.cli
import edge.cli
import edge.service.config
import train.cli
from edge import __version__
from edge.labels.labelset import resolve_label_set
from tests.bundles import make_bundle


@pytest.mark.parametrize("group,name", [(edge.cli.main, "semanticac-edge"), (train.cli.main, "semanticac-train"),
                                        (calibrate.cli.main, "semanticac-calibrate")])
def test_help_and_version(group, name):
    runner = CliRunner()
    assert runner.invoke(group, ["--help"]).exit_code == 0
    result = runner.invoke(group, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"{name}, version {__version__}"


@pytest.mark.parametrize("script", ["semanticac-edge", "semanticac-train", "semanticac-calibrate"])
def test_console_scripts_are_installed(script):
    exe = Path(sys.executable).parent / script
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_labels_command_shows_the_prompts():
    result = CliRunner().invoke(edge.cli.main, ["labels", "urban"])
    assert result.exit_code == 0
    assert "'an audio clip of dog bark'" in result.output and "10 labels" in result.output
    thresholds = {label.name: label.threshold for label in resolve_label_set("urban").labels}
    for name, threshold in thresholds.items():  # as the set says (a fitted 0.854 is not shown as 0.85)
        assert re.search(rf"^  {name} +threshold {threshold:g}\b", result.output, re.M), (name, result.output)


def test_bad_label_set_is_one_line(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("name: site\nlabels:\n  - dog\n  - dog\n")
    result = CliRunner().invoke(edge.cli.main, ["labels", str(path)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {path}:4: labels[1]: 'dog' duplicates labels[0] (line 3): " \
                                    "names are compared ignoring case, '_' vs ' ' and how accents are composed (NFC)"


def test_info_says_why_a_set_cannot_be_embedded(tmp_path, monkeypatch):
    """No embeddings for the set: info computes them as listen would, and says why it cannot (this
    test bundle's text graph has no tokenizer beside it)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = make_bundle(tmp_path / "b")
    result = CliRunner().invoke(edge.cli.main, ["info", "--bundle", str(folder), "--labels", "urban"])
    assert result.exit_code == 1
    assert "model_id   test-model-0001" in result.output
    assert f"Error: no tokenizer config at {folder / 'tokenizer' / 'config.json'}" in result.output
    assert "Traceback" not in result.output


def test_info_without_any_bundle(monkeypatch):
    monkeypatch.delenv("SEMANTICAC_BUNDLE", raising=False)
    monkeypatch.setattr("edge.bundle.shipped_bundle", lambda: None)
    result = CliRunner().invoke(edge.cli.main, ["info"])
    assert result.exit_code == 1 and result.output.startswith("Error: no model bundle")


@pytest.mark.parametrize("args", [["labels", "esc50"], ["check-config", str(edge.service.config.example_path())]])
def test_a_reader_that_stops_early_is_no_failure(args):
    """`semanticac-edge labels esc50 | head -1` under `set -o pipefail`: exit 0, nothing on stderr
    (click exits 1 for a broken pipe)."""
    import os

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write is a broken pipe
    try:
        done = subprocess.run([sys.executable, "-c", "from edge.cli import main; main()", *args], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 0 and done.stderr == "", done.stderr
