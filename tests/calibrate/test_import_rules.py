"""`calibrate` runs on a device install (numpy + edge): it must import with torch and train blocked."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import calibrate

FORBIDDEN = ("torch", "torchaudio", "train", "matplotlib")  # matplotlib: only inside the plot functions

PROBE = """
import importlib, importlib.abc, sys
FORBIDDEN = {forbidden!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"{{name}} is forbidden in calibrate")
        return None

sys.meta_path.insert(0, Block())
for name in {modules!r}:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
assert not leaked, leaked
print("imported", len({modules!r}))
"""


def calibrate_modules() -> list[str]:
    root = Path(calibrate.__file__).parent
    return ["calibrate"] + [m.name for m in pkgutil.walk_packages([str(root)], prefix="calibrate.")
                            if m.name != "calibrate.__main__"]


def probe(modules: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE.format(forbidden=FORBIDDEN, modules=modules)],
                          capture_output=True, text=True, timeout=120)


def test_every_calibrate_module_imports_without_torch_or_train():
    modules = calibrate_modules()
    assert {"calibrate.cli", "calibrate.thresholds", "calibrate.scores", "calibrate.plots"} <= set(modules)
    result = probe(modules)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"imported {len(modules)}" in result.stdout


def test_the_probe_can_fail():
    result = probe(["calibrate", "train"])
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
