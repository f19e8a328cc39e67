"""Fixtures of the calibrate tests: a synthesised site background and one shared thresholds run.

The background is quiet pink noise with loud synthetic sounds the demo model knows (a wailing
siren, a car horn, a jackhammer: edge.tools.demo's, seeded), so the shipped urban thresholds
(0.5) start events on it: a budget of 1 false alarm per hour must push thresholds up. Short
windows and hops keep the whole calibrate suite within ~40 s on 2 shared cores.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner, Result

RATE = 16000  # the demo bundle's rate: no resampling in the tests
# listen options of every calibrate test run (also used to replay `listen` with the result)
LISTEN = {"window": 1.0, "hop": 1.0, "smooth": 2, "min_duration": 1.0, "release": 0.7, "threads": 1}
BUDGET = 1.0  # false alarms per hour
# A device install (.venv-edge) has no matplotlib: the commands run there without --plot.
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
needs_matplotlib = pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib is not installed (a device install)")


def cli_options(**override) -> list[str]:
    values = {**LISTEN, **override}
    out = []
    for name, value in values.items():
        out += [f"--{name.replace('_', '-')}", str(value)]
    return out


def scene(seconds: float, events, seed: int) -> np.ndarray:
    """Pink noise at about -40 dBFS with `events`: (start s, maker, length s, gain)."""
    from edge.tools.demo import pink_noise

    rng = np.random.default_rng(seed)
    x = 0.03 * pink_noise(int(seconds * RATE), RATE, rng)
    for start, make, length, gain in events:
        sound = gain * make(length, RATE, rng)
        i = int(start * RATE)
        x[i:i + len(sound)] += sound[:len(x) - i]
    return x.astype(np.float32)


@pytest.fixture(scope="session")
def background(tmp_path_factory) -> Path:
    """A folder: two 12 s scenes (WAV, FLAC), one broken "audio" file and a text file (ignored)."""
    from edge.tools.demo import car_horn, jackhammer, siren

    folder = tmp_path_factory.mktemp("background")
    sf.write(folder / "street1.wav", scene(12, [(1, siren, 5, 0.4), (8, car_horn, 3, 0.4)], seed=1), RATE)
    (folder / "more").mkdir()
    sf.write(folder / "more" / "street2.flac", scene(12, [(1, jackhammer, 4, 0.4), (7, siren, 4, 0.3)], seed=2),
             RATE)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    (folder / "notes.txt").write_text("not audio: ignored in a folder\n")
    return folder


@pytest.fixture(scope="session")
def positives(tmp_path_factory) -> Path:
    """positives.csv: a siren and a car horn clip (5 s each) and an unreadable one, paths relative to the CSV."""
    from edge.tools.demo import car_horn, siren

    folder = tmp_path_factory.mktemp("positives")
    (folder / "clips").mkdir()
    sf.write(folder / "clips" / "siren.wav", scene(5, [(0, siren, 5, 0.5)], seed=3), RATE)
    sf.write(folder / "clips" / "horn.wav", scene(5, [(0.5, car_horn, 4, 0.5)], seed=4), RATE)
    with open(folder / "positives.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([["path", "label"], ["clips/siren.wav", "siren"], ["clips/horn.wav", "car_horn"],
                          ["clips/missing.wav", "siren"]])
    return folder / "positives.csv"


@dataclass
class Run:
    result: Result
    out: Path
    plot: Path | None


@pytest.fixture(scope="session")
def thresholds_run(background, positives, tmp_path_factory) -> Run:
    """`semanticac-calibrate thresholds` on the background (demo bundle, urban), once per session;
    `--agree` at the demo bundle's own 0.5 (it is written into the site's set); `--lower`: labels
    the background never triggers fall to 1/K (a sigmoid bundle only raises by default)."""
    import calibrate.cli

    folder = tmp_path_factory.mktemp("site")
    out, plot = folder / "site.yaml", folder / "false_alarms.png" if HAVE_MATPLOTLIB else None
    result = CliRunner().invoke(calibrate.cli.main, [
        "thresholds", "--labels", "urban", "--background", str(background), "--positives", str(positives),
        "--false-alarms-per-hour", str(BUDGET), "--out", str(out), "--agree", "0.5", "--lower", *cli_options(),
        *(["--plot", str(plot)] if plot else [])])
    return Run(result, out, plot)
