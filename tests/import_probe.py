"""Import modules in a fresh interpreter where some top-level packages cannot be imported:
how the tests prove that `edge` (and `calibrate`) install and run without the training stack."""

import pkgutil
import subprocess
import sys
from pathlib import Path

PROBE = """
import importlib, importlib.abc, sys
FORBIDDEN = {forbidden!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"{{name}} is forbidden in {package}")
        return None

sys.meta_path.insert(0, Block())
for name in {modules!r}:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
assert not leaked, leaked
print("imported", len({modules!r}))
"""


def package_modules(package, skip: tuple[str, ...] = ()) -> list[str]:
    """The package's name and every module below it (but `skip`)."""
    root = Path(package.__file__).parent
    found = [m.name for m in pkgutil.walk_packages([str(root)], prefix=f"{package.__name__}.")]
    return [package.__name__] + [name for name in found if name not in skip]


def probe(package: str, modules: list[str], forbidden: tuple[str, ...]) -> subprocess.CompletedProcess:
    """Import `modules` with `forbidden` blocked; stderr says "... is forbidden in <package>"."""
    code = PROBE.format(forbidden=forbidden, modules=modules, package=package)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
