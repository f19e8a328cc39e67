"""`semanticac-train window-gain`: sets, changes and removes a bundle's window gain in place,
and refuses a bad value without touching model.json; `semanticac-edge info` shows it."""

import json
import shutil

import pytest
from click.testing import CliRunner

import edge.cli
from edge.bundle import read_bundle
from edge.features import WindowGain
from train.cli import main


@pytest.fixture
def bundle(demo_bundle, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(demo_bundle.path, folder)
    return folder


def info(folder) -> str:
    result = CliRunner().invoke(edge.cli.main, ["info", "--bundle", str(folder), "--no-verify"])
    assert result.exit_code == 0, result.output
    return next(line for line in result.output.splitlines() if line.startswith("gain "))


def test_window_gain_sets_changes_and_removes_the_gain(bundle):
    runner = CliRunner()
    result = runner.invoke(main, ["window-gain", "--bundle", str(bundle), "--ref-dbfs", "-25", "--max-cut-db", "10"])
    assert result.exit_code == 0, result.output
    assert read_bundle(bundle).meta.gain == WindowGain(ref_dbfs=-25.0, max_cut_db=10.0)
    assert (f"brought to -25 dBFS (raised by at most 30 dB and never above {WindowGain.max_level_dbfs:g} dBFS on "
            "average, lowered by at most 10 dB)") in info(bundle)
    result = runner.invoke(main, ["window-gain", "--bundle", str(bundle), "--off"])
    assert result.exit_code == 0, result.output
    assert read_bundle(bundle).meta.gain is None and "gain" not in json.loads((bundle / "model.json").read_text())
    assert "none: windows at the stream's own level" in info(bundle)


def test_window_gain_refuses_a_bad_value_and_leaves_model_json_as_it_was(bundle):
    before = (bundle / "model.json").read_bytes()
    result = CliRunner().invoke(main, ["window-gain", "--bundle", str(bundle), "--ref-dbfs", "6"])
    assert result.exit_code == 2 and "ref_dbfs=6.0 is not supported: it must be a level in dBFS <= 0" in result.output
    assert (bundle / "model.json").read_bytes() == before
