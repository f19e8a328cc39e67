"""What a plain (non-editable) install of the distribution carries."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_build_carries_the_shipped_label_sets(tmp_path):
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("urban.yaml", "esc50.yaml"):
        assert (tmp_path / "edge/configs/labels" / name).is_file()
    assert (tmp_path / "edge/features.py").is_file() and (tmp_path / "train/features.py").is_file()
    assert (tmp_path / "calibrate/cli.py").is_file() and (tmp_path / "train/model/htsat.py").is_file()
