"""Shared fixtures: where the real development data and the reference vectors live.

Tests that need real audio read `$SEMANTICAC_DATA`; the reference checkpoints and golden
vectors come from `$SEMANTICAC_REFERENCE` (default: ../shared/reference beside the
repository). Without them a test skips with the reason, except under CI (`CI=true`),
where a missing folder is a failure: CI must never pass by skipping the real checks.
"""

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _required_dir(env: str, default: Path | None, what: str) -> Path:
    value = os.environ.get(env)
    path = Path(value).resolve() if value else default
    if path is not None and path.is_dir():
        return path
    reason = f"{what} not found: set ${env} (looked at {path or 'nothing: the variable is unset'})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"under CI {reason}")
    pytest.skip(reason)


# Markers that follow from what a test uses (pytest.ini describes them): a fixture or a folder.
FIXTURE_MARKS = {"data_dir": "data", "null_sink": "capture", "small_bundle": "slow"}
SLOW_FOLDERS = (REPO / "tests" / "train",)  # torch models, exports and training steps


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, mark in FIXTURE_MARKS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(mark)
        if any(Path(item.path).is_relative_to(folder) for folder in SLOW_FOLDERS):
            item.add_marker("slow")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The development audio (esc50/, us8k/); see ../shared/data/README.md."""
    return _required_dir("SEMANTICAC_DATA", None, "development audio")


@pytest.fixture
def recipe_paths(monkeypatch) -> None:
    """$SEMANTICAC_DATA set to a placeholder, for tests that load shipped recipes: their data roots
    are only expanded, nothing is read."""
    monkeypatch.setenv("SEMANTICAC_DATA", "/nonexistent")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Official checkpoint key lists and golden vectors; see ../shared/reference/README.md."""
    return _required_dir("SEMANTICAC_REFERENCE", REPO.parent / "shared" / "reference", "reference vectors")


@pytest.fixture(scope="session")
def null_sink(tmp_path_factory):
    """A running PulseAudio null sink whose monitor is the default capture device.

    Real capture without a sound card: sounddevice's default input (ALSA `default`, routed
    to PulseAudio) records whatever `null_sink.play(path)` plays. Started for the session,
    stopped at its end. Needs the Debian packages that `make test` installs.
    """
    from tests.pulse import NullSink, PulseUnavailable

    try:
        sink = NullSink.start(tmp_path_factory.mktemp("pulse"))
    except PulseUnavailable as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI real capture must work: {err}")
        pytest.skip(str(err))
    if "sounddevice" in sys.modules:  # PortAudio started before the sink existed: let it look again
        from edge.capture.sources import rescan_devices

        rescan_devices(force=True)
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture(scope="session")
def demo_bundle():
    """The trained demo bundle shipped inside the package (edge/demo_bundle), hashes verified.

    YAMNet frontend at 16 kHz, 5 s windows; no torch needed, so the edge tests run on a
    device-only install (`make test-fast`). Use `small_bundle` only for what needs an export.
    """
    from edge.bundle import read_bundle, shipped_bundle

    folder = shipped_bundle()
    if folder is None:
        pytest.fail("the package ships no demo bundle (edge/demo_bundle/model.json is missing)")
    return read_bundle(folder, verify=True)


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory):
    """A real bundle exported from the small model config with seeded random weights.

    Untrained (its labels are noise), but every graph, tokenizer and label file is what
    `semanticac-train export` writes, so the edge runs on it exactly as on a trained one.
    Needs torch (a real export): skipped where torch cannot be imported.
    """
    torch = pytest.importorskip("torch", reason="small_bundle is a torch export; torch is not importable here")

    from edge.bundle import read_bundle
    from edge.labels.labelset import resolve_label_set
    from train.checkpoint import model_id
    from train.model.config import load_model_config
    from train.export import export_bundle
    from train.model.semanticac import build_model

    torch.manual_seed(0)
    config = load_model_config("small")
    model = build_model(config).eval()
    out = tmp_path_factory.mktemp("bundles") / "small"
    export_bundle(model, config, out, model_id=model_id(model, config), clip_seconds=5.0,
                  label_sets=[resolve_label_set("urban")], training={"command": "tests: random init"})
    return read_bundle(out, verify=True)


@pytest.fixture
def eager_labels(tmp_path):
    """Three labels whose events start at a score of 1e-30: whatever the model hears (a tone,
    noise), each scores above that, with a softmax over the set as with a per-label sigmoid (at
    1e-6 the demo bundle's head, whose logits are mixed into the student's, can pull a label
    below it within one sound, ending its event early). Labels no one trained: the demo bundle's
    vocabulary scores them, and their events never wait for the student's agreement, as a
    trained label's do (model.json vocabulary.head.agree)."""
    path = tmp_path / "eager.yaml"
    path.write_text("name: eager\nthreshold: 1.0e-30\nlabels: [doorbell, whistle, guitar]\n")
    return path
