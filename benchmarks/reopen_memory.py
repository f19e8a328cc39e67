"""Memory across reopens of a lost microphone: `semanticac-edge serve` captures a PulseAudio null
sink's monitor (tests/pulse.py's recipe) while the sound server is killed and started again
--reopens times; its RSS after each reopen, with the command's one malloc arena (edge.malloc)
against glibc's default limit (8 arenas per usable core, set through MALLOC_ARENA_MAX, which the
command leaves standing) in the same run.

    .venv/bin/python benchmarks/reopen_memory.py [--reopens 12] [--json OUT]

Each reopen: the daemon and its keep-alive stream are killed, 3 s pass, the daemon starts again
with the same sink; once serve logs `audio restored` (its waits back off up to 30 s), 5 s pass
and VmRSS is read from /proc. Growth per reopen is (last - first) / reopens. MQTT (to a
mosquitto of its own, tests/mosquitto.py), metrics and clips are on, as a deployed service runs: a
lost source held by a reference cycle showed only with them; the event log and the clips folder
are in a temp state folder.
Needs pulseaudio, pactl, pacat and mosquitto (`make test` installs them).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.pulse: the tests' PulseAudio null sink

from tests.mosquitto import Broker, free_port  # noqa: E402
from tests.pulse import NullSink  # noqa: E402

SETTLE_SECONDS = 5.0
DOWN_SECONDS = 3.0
RESTORE_TIMEOUT = 120.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_for(log: Path, text: str, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + RESTORE_TIMEOUT
    while log.read_text(errors="replace").count(text) < count:
        if process.poll() is not None:
            raise RuntimeError(f"serve ended (exit {process.returncode}): {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {count} x {text!r} within {RESTORE_TIMEOUT:g} s: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def run(variant: str, env: dict, reopens: int, folder: Path, broker: Broker) -> list[float]:
    """serve's RSS (MiB) after its start, then after each reopen."""
    runtime = folder / f"pulse-{variant}"
    runtime.mkdir()
    sink = NullSink.start(runtime)  # sets XDG_RUNTIME_DIR here, for serve and its restarts
    config = folder / f"{variant}.yaml"
    config.write_text(
        "schema_version: 1\naudio:\n  device: null\nlabels:\n  set: urban\n"
        f"service:\n  state_dir: {folder / ('state-' + variant)}\n"
        f"mqtt:\n  enabled: true\n  host: 127.0.0.1\n  port: {broker.port}\n  node_id: reopen_{variant}\n"
        f"metrics:\n  enabled: true\n  port: {free_port()}\n"
        "clips:\n  enabled: true\n"
    )
    log = folder / f"{variant}.log"
    with log.open("w") as err:
        serve = subprocess.Popen(
            [sys.executable, "-c", "from edge.cli import main; main()", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=err, env={**env, "XDG_RUNTIME_DIR": str(runtime)}, cwd=ROOT,
        )
    try:
        wait_for(log, "ready:", 1, serve)
        time.sleep(SETTLE_SECONDS)
        figures = [rss_mib(serve.pid)]
        print(f"{variant}: start {figures[0]:.1f} MiB", flush=True)
        for i in range(1, reopens + 1):
            sink.keepalive.kill()
            sink.keepalive.wait()
            subprocess.run(["pulseaudio", "--kill"], capture_output=True, timeout=30)
            time.sleep(DOWN_SECONDS)
            sink = NullSink.start(runtime)
            wait_for(log, "audio restored", i, serve)
            time.sleep(SETTLE_SECONDS)
            figures.append(rss_mib(serve.pid))
            print(f"{variant}: reopen {i}: {figures[-1]:.1f} MiB", flush=True)
        return figures
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
        sink.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reopens", type=int, default=12)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    base = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    variants = {"one arena": base, f"glibc default ({8 * cores} arenas)": {**base, "MALLOC_ARENA_MAX": str(8 * cores)}}
    results = {}
    with tempfile.TemporaryDirectory(prefix="reopen-memory-") as tmp:
        broker = Broker(Path(tmp) / "mosquitto").start()
        try:
            for i, (variant, env) in enumerate(variants.items()):
                results[variant] = run(f"v{i}", env, args.reopens, Path(tmp), broker)
        finally:
            broker.stop()
    print(f"\nserve's RSS over {args.reopens} reopens of the microphone ({cores} usable cores):")
    print(f"{'':32} {'start MiB':>10} {'end MiB':>10} {'per reopen':>11}")
    growth = {}
    for variant, figures in results.items():
        growth[variant] = (figures[-1] - figures[0]) / args.reopens
        print(f"{variant:32} {figures[0]:10.1f} {figures[-1]:10.1f} {growth[variant]:+10.2f}")
    one, default = growth.values()
    print(f"growth per reopen, one arena / glibc default: {one / default:.2f}" if default > 0 else "")
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "rss_mib": results, "growth_mib_per_reopen": growth}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
