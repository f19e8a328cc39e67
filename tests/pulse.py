"""A PulseAudio daemon with a null sink, for tests that capture real audio through PortAudio.

The recipe is DESIGN.md's: a private daemon (its own XDG_RUNTIME_DIR), a null sink at
48 kHz whose monitor is the default source, and a silent stream that keeps the sink
running (an idle sink starts capture up to ~2 s late).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

RATE = 48000


class PulseUnavailable(RuntimeError):
    pass


@dataclass
class NullSink:
    runtime_dir: Path
    keepalive: subprocess.Popen
    old_runtime: str | None

    @classmethod
    def start(cls, runtime_dir: Path) -> "NullSink":
        missing = [tool for tool in ("pulseaudio", "pactl", "pacat", "paplay") if shutil.which(tool) is None]
        if missing:
            raise PulseUnavailable(f"PulseAudio tools missing ({', '.join(missing)}): run `make test` "
                                   "(it installs pulseaudio and pulseaudio-utils)")
        old = os.environ.get("XDG_RUNTIME_DIR")
        os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)  # PortAudio's ALSA->pulse plugin reads it at open
        started = subprocess.run(
            ["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "-L", "module-native-protocol-unix",
             "-L", f"module-null-sink sink_name=virt rate={RATE}"],
            capture_output=True, text=True, timeout=30)
        if started.returncode != 0:
            cls._restore(old)
            raise PulseUnavailable(f"pulseaudio did not start: {started.stderr.strip()[-300:]}")
        subprocess.run(["pactl", "set-default-source", "virt.monitor"], check=True, timeout=10)
        keepalive = subprocess.Popen(
            ["pacat", "--playback", "--device=virt", "--latency-msec=20", "--raw", "--format=s16le",
             f"--rate={RATE}", "--channels=2", "/dev/zero"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        return cls(runtime_dir=runtime_dir, keepalive=keepalive, old_runtime=old)

    def play(self, path: str | Path) -> subprocess.Popen:
        """Start playing a sound file into the sink (what the 'microphone' hears)."""
        return subprocess.Popen(["paplay", "--device=virt", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self.keepalive.kill()
        self.keepalive.wait()
        subprocess.run(["pulseaudio", "--kill"], capture_output=True, timeout=30)
        self._restore(self.old_runtime)

    @staticmethod
    def _restore(old: str | None) -> None:
        if old is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = old
