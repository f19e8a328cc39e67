"""`edge` runs on a Jetson without the training stack: it must import with none of it."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import edge

FORBIDDEN = ("torch", "torchaudio", "train", "calibrate")

PROBE = """
import importlib, importlib.abc, sys
FORBIDDEN = {forbidden!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"{{name}} is forbidden in edge")
        return None

sys.meta_path.insert(0, Block())
for name in {modules!r}:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
assert not leaked, leaked
print("imported", len({modules!r}))
"""


def edge_modules() -> list[str]:
    root = Path(edge.__file__).parent
    return ["edge"] + [m.name for m in pkgutil.walk_packages([str(root)], prefix="edge.")]


def test_every_edge_module_imports_without_torch_train_or_calibrate():
    modules = edge_modules()
    assert {"edge.features", "edge.bundle", "edge.labels", "edge.cli"} <= set(modules)
    probe = PROBE.format(forbidden=FORBIDDEN, modules=modules)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"imported {len(modules)}" in result.stdout


def test_the_probe_can_fail():
    probe = PROBE.format(forbidden=FORBIDDEN, modules=["edge", "train"])
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "forbidden in edge" in result.stderr
