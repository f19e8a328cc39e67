"""`calibrate` runs on a device install (numpy + edge): it must import with torch and train blocked."""

import sys

import calibrate
from tests.import_probe import package_modules, probe

FORBIDDEN = ("torch", "torchaudio", "train", "matplotlib")  # matplotlib: only inside the plot functions


def test_every_calibrate_module_imports_without_torch_or_train():
    modules = package_modules(calibrate, skip=("calibrate.__main__",))
    assert {"calibrate.cli", "calibrate.thresholds", "calibrate.scores", "calibrate.plots"} <= set(modules)
    result = probe("calibrate", modules, FORBIDDEN)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"imported {len(modules)}" in result.stdout


def test_the_probe_can_fail():
    result = probe("calibrate", ["calibrate", "train"], FORBIDDEN)
    assert result.returncode != 0 and "forbidden in calibrate" in result.stderr


def test_missing_matplotlib_names_the_install(monkeypatch):
    import calibrate.plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    try:
        calibrate.plots.require_matplotlib()
    except ImportError as err:
        assert "pip install matplotlib" in str(err)
    else:
        raise AssertionError("require_matplotlib did not fail without matplotlib")
