"""`edge` runs on a Jetson without the training stack: it must import with none of it."""

import ast
from pathlib import Path

import edge
from tests.import_probe import package_modules, probe

FORBIDDEN = ("torch", "torchaudio", "train", "calibrate")

def test_every_edge_module_imports_without_torch_train_or_calibrate():
    modules = package_modules(edge)
    assert {"edge.features", "edge.bundle", "edge.labels.labelset", "edge.cli"} <= set(modules)
    result = probe("edge", modules, FORBIDDEN)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"imported {len(modules)}" in result.stdout


def test_the_probe_can_fail():
    result = probe("edge", ["edge", "train"], FORBIDDEN)
    assert result.returncode != 0 and "forbidden in edge" in result.stderr


def import_graph(package: str) -> dict[str, set[str]]:
    """module -> the modules of `package` it imports (at any level: module top or function body).

    A package's own submodules imported by its __init__ count; the implicit import of a parent
    package when a submodule loads does not (Python does that for every submodule)."""
    root = Path(edge.__file__).parent.parent / package
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
                    break
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_edge_has_no_import_cycle():
    graph = import_graph("edge")
    assert {"edge.listen", "edge.capture.sources", "edge.backends.tensorrt.builder"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_a_private_name_of_another():
    offenders = []
    for package in ("edge", "train", "calibrate"):
        root = Path(edge.__file__).parent.parent / package
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in (
                        "edge", "train", "calibrate"):
                    offenders += [f"{path.relative_to(root.parent)}: {node.module}.{alias.name}"
                                  for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not offenders, offenders


def test_semanticac_train_on_a_device_install_says_what_to_install_in_one_line():
    """A device install has the `semanticac-train` command (one distribution) but no torch: it was a
    traceback through the training modules."""
    import importlib.util
    import shutil
    import subprocess
    import sys

    import pytest

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is importable here (make test-fast runs this without it)")
    command = shutil.which("semanticac-train", path=str(Path(sys.executable).parent))
    assert command is not None
    result = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        'semanticac-train needs the training stack, and torch cannot be imported here (No module named \'torch\'): '
        'pip install "semanticac-edge[train]" on a desktop; a device needs only semanticac-edge (`semanticac-edge '
        "embed-labels` embeds label sets without it)"]
