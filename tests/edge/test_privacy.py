"""What a box in a home or a workplace sends and keeps that no one asked for."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.signals import noise

EDGE = str(Path(sys.executable).with_name("semanticac-edge"))


@pytest.mark.slow  # two runs of a real process
def test_onnx_runtime_reports_to_no_one(tmp_path):
    """ONNX Runtime's wheel starts Microsoft's telemetry as it is imported (a device id and a queue of
    events under the cache folder, then lookups of its collector): a listen run made
    $XDG_CACHE_HOME/Microsoft/DeveloperTools/.onnxruntime. Importing edge first turns it off, unless the
    environment asks for it."""
    clip = tmp_path / "clip.wav"
    sf.write(clip, noise(2.0, 16000).astype(np.float32), 16000)
    # ONNX Runtime starts no telemetry where $CI is set (as CI sets it): the opt-in would show nothing there
    ci = ("CI", "CONTINUOUS_INTEGRATION", "GITHUB_ACTIONS", "TF_BUILD", "BUILD_ID", "JENKINS_URL", "GITLAB_CI")
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", *ci)}
    for home, asked in (tmp_path / "home", None), (tmp_path / "opted-in", "0"):
        run_env = {**env, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache")}
        if asked is not None:
            run_env["ORT_DISABLE_TELEMETRY"] = asked
        result = subprocess.run([EDGE, "listen", "--labels", "urban", "--input", str(clip), "--fast"], env=run_env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        found = sorted(str(p.relative_to(home)) for p in home.rglob("*") if "Microsoft" in p.parts)
        assert bool(found) == (asked == "0"), found  # the opt-in shows the check sees the client's folder
