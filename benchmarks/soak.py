"""Soak: an hour of real audio through `semanticac-edge serve --fast` with MQTT, the SQLite event
log and metrics on, checked against `semanticac-edge listen` on the same audio.

    SEMANTICAC_DATA=../shared/data .venv/bin/python benchmarks/soak.py [--minutes 60] [--json OUT]

1. Audio: development clips ($SEMANTICAC_DATA: ESC-50 and UrbanSound8K), each read with
   edge.capture.audio.read_audio at 16 kHz, in a seeded shuffle, joined into one float WAV of
   about --minutes (whole clips: it ends with the clip that reaches the length).
2. Reference: `semanticac-edge listen --input WAV --fast --json --labels urban`: its start and
   end records.
3. Service: `semanticac-edge serve --config CFG` on the same WAV (audio.fast: true, labels.set
   urban, the config's defaults otherwise), with MQTT to a real mosquitto started here
   (tests/mosquitto.py's Broker), the event log (SQLite in a temp state folder) and metrics
   on a free port (scraped every 15 s, as Prometheus would). A paho subscriber here records
   every message on the `events` topic.
4. While each command runs: its RSS (/proc/PID/status VmRSS; VmHWM for the peak) and CPU
   time (/proc/PID/stat utime + stime, every thread) every second, each sample tagged with the
   phase its output shows: loading (no window yet), running (from listen's first JSON line, or
   serve's `ready:` log line) and closing (from the status record `stopped (...)`: the stream
   ended, the model and the outputs close). RSS growth runs from the "warm" sample (10 % into
   the running phase: ONNX Runtime's arena and the buffers grow in the first seconds) to the
   last running sample, per hour of audio over the 90 % of the stream between them; growth in
   the second half (end minus the middle running sample) is where a leak would still show. The total CPU time is
   getrusage(RUSAGE_CHILDREN) around the command's wait; the other processes' load over the
   same time (/proc/stat) is printed beside it.

Events compared: (event_id, type, label, t in ms) of every start and end: listen's JSON
lines, the event log's rows (onset_t for the start; end_t for the end, when it ended) and
the MQTT event messages, as sorted lists, exactly; the MQTT messages in arrival order are
also compared with listen's order. Missing and extra records are printed; MQTT's dropped and
unsent counts come from serve's closing log line. Exit status 1 when the event lists differ
or serve fails.

The two commands run one after the other, never together; on a shared machine the wall and
CPU figures include the contention (the ratios serve/listen are the robust part).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.mosquitto: the real broker and subscriber of the tests

from edge.capture.audio import read_audio  # noqa: E402
from edge.outputs.eventlog import recent_events  # noqa: E402
from tests.mosquitto import Broker, Subscriber, free_port  # noqa: E402

RATE = 16000
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
NODE_ID = "soak"
EVENTS_TOPIC = f"semanticac/{NODE_ID}/events"
SAMPLE_SECONDS = 1.0  # RSS sampling period
WARM_UP = 0.1  # the share of the running phase left out of RSS growth: ONNX Runtime's arena, buffers
SCRAPE_SECONDS = 15.0  # a /metrics scrape this often (Prometheus' default interval)
TICKS = os.sysconf("SC_CLK_TCK")
EVENT_LOG_RUN = re.compile(r"event log: .* \(run (\S+)\)$", re.MULTILINE)  # EventLogSink's first line
MQTT_CLOSING = re.compile(r"mqtt: closing with (\d+) messages not sent and (\d+) dropped")

Record = tuple[int, str, str, float]  # (event_id, "start" | "end", label, t in seconds, ms precision)


# -- the audio ------------------------------------------------------------------------------------


def clip_paths(data: Path) -> list[Path]:
    paths = [p for corpus in ("esc50", "us8k") for p in sorted((data / corpus).rglob("*"))
             if p.suffix.lower() in AUDIO_SUFFIXES]
    if not paths:
        raise SystemExit(f"no audio clips under {data}/esc50 or {data}/us8k: set $SEMANTICAC_DATA or --data")
    return paths


def join_clips(data: Path, minutes: float, seed: int, out: Path) -> tuple[float, int]:
    """Shuffled clips written one by one into a float WAV until it holds `minutes`: (seconds, clips)."""
    paths = clip_paths(data)
    random.Random(seed).shuffle(paths)
    target = int(minutes * 60 * RATE)
    written = clips = 0
    with sf.SoundFile(out, "w", samplerate=RATE, channels=1, subtype="FLOAT") as wav:
        for path in paths:
            if written >= target:
                break
            samples = read_audio(path, RATE)
            wav.write(samples)
            written += samples.size
            clips += 1
    if written < target:
        print(f"only {written / RATE / 60:.1f} min of clips under {data}: using them all", file=sys.stderr)
    return written / RATE, clips


# -- running a command and watching it ------------------------------------------------------------


LOADING, RUNNING, CLOSING = "loading", "running", "closing"


@dataclass
class Sample:
    t: float  # seconds since the command started
    rss_mib: float
    cpu_s: float  # CPU seconds so far (every thread)
    phase: str  # LOADING (no window yet), RUNNING, CLOSING (the stream ended: outputs close)


@dataclass
class Run:
    """One command's figures."""

    returncode: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    hwm_mib: float = 0.0  # the kernel's high-water mark of RSS
    others_cores: float = 0.0  # cores kept busy by other processes meanwhile (the shared machine)
    samples: list[Sample] = field(default_factory=list)

    def figures(self, audio_s: float) -> dict:
        nan = float("nan")
        running = [s for s in self.samples if s.phase == RUNNING]
        first, last = (running[0], running[-1]) if running else (None, None)
        at = lambda share: running[int(share * (len(running) - 1))].rss_mib if running else nan  # noqa: E731
        warm, middle, end = at(WARM_UP), at(0.5), at(1.0)
        # CPU while running: the steady state, without loading the model and closing
        steady = 100 * (last.cpu_s - first.cpu_s) / (last.t - first.t) if first and last and last.t > first.t else nan
        return {
            "returncode": self.returncode,
            "wall_s": self.wall_s,
            "ready_s": first.t if first else None,
            "realtime_factor": self.wall_s / audio_s,  # wall time per second of audio
            "x_realtime": audio_s / self.wall_s,
            "cpu_s": self.cpu_s,
            "cpu_percent_of_one_core": 100 * self.cpu_s / self.wall_s,
            "cpu_percent_running": steady,
            "others_cores": self.others_cores,
            "rss_first_window_mib": first.rss_mib if first else nan,
            "rss_warm_mib": warm,
            "rss_peak_mib": max([self.hwm_mib, *(s.rss_mib for s in self.samples)]),
            "rss_end_mib": end,
            "rss_growth_mib": end - warm,
            "rss_growth_mib_per_audio_hour": (end - warm) / ((1 - WARM_UP) * audio_s / 3600),
            "rss_growth_second_half_mib": end - middle,
        }


class Phase:
    """A command's phase from its output file: RUNNING once `ready` was written (the first
    window is out), CLOSING once `closing` was (the stream ended). Reads only what is new."""

    def __init__(self, path: Path, ready: bytes, closing: bytes | None = None):
        self.path, self.ready, self.closing = path, ready, closing
        self.offset, self.tail, self.phase = 0, b"", LOADING

    def __call__(self) -> str:
        if self.phase == CLOSING or (self.phase == RUNNING and self.closing is None):
            return self.phase
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            new = f.read()
        self.offset += len(new)
        text, self.tail = self.tail + new, (self.tail + new)[-200:]  # a marker split across two reads
        if self.phase == LOADING and self.ready in text:
            self.phase = RUNNING
        if self.phase == RUNNING and self.closing is not None and self.closing in text:
            self.phase = CLOSING
        return self.phase


def memory_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB, None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = dict(line.split(":", 1) for line in text.splitlines() if line.startswith(("VmRSS", "VmHWM")))
    if "VmRSS" not in values:  # a zombie: no memory left
        return None
    return int(values["VmRSS"].split()[0]), int(values["VmHWM"].split()[0])


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of /proc/PID/stat (every thread), None once the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def busy_seconds() -> float:
    """CPU seconds every process of the machine has used (the first line of /proc/stat)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / TICKS  # user .. steal (guest time is counted in user already)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def watch(command: list[str], stdout: Path, stderr: Path, phase: Phase, tick=None) -> Run:
    """Run `command` to its end, sampling its RSS and CPU time every second; `phase()` says
    whether it loads, runs or closes; `tick(elapsed)` is called at each sample (scrapes)."""
    env = {k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"}  # serve's state dir: ours
    env["PYTHONUNBUFFERED"] = "1"  # listen's JSON lines reach the file as they are written
    run = Run()
    cpu_before, busy_before = children_cpu(), busy_seconds()
    began = time.monotonic()
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=ROOT)
        try:
            while process.poll() is None:
                elapsed = time.monotonic() - began
                memory, cpu = memory_kib(process.pid), cpu_seconds(process.pid)
                if memory is not None and cpu is not None:
                    run.samples.append(Sample(elapsed, memory[0] / 1024, cpu, phase()))
                    run.hwm_mib = max(run.hwm_mib, memory[1] / 1024)
                if tick is not None:
                    tick(elapsed)
                try:  # the next sample in a second, unless it exits first (the wall time to its end)
                    process.wait(max(0.0, SAMPLE_SECONDS - (time.monotonic() - began - elapsed)))
                except subprocess.TimeoutExpired:
                    pass
        finally:
            if process.poll() is None:
                process.terminate()
            run.returncode = process.wait()
    run.wall_s = time.monotonic() - began
    run.cpu_s = children_cpu() - cpu_before
    run.others_cores = (busy_seconds() - busy_before - run.cpu_s) / run.wall_s
    return run


# -- the event lists ------------------------------------------------------------------------------


def record(event_id, kind: str, label: str, t) -> Record:
    return (int(event_id), kind, label, round(float(t), 3))


def listen_records(stdout: Path) -> tuple[list[Record], int]:
    """listen's start and end records in the order written, and its window count."""
    records, windows = [], 0
    for line in stdout.read_text().splitlines():
        row = json.loads(line)
        if row["type"] in ("start", "end"):
            records.append(record(row["event_id"], row["type"], row["label"], row["t"]))
        windows += row["type"] == "window"
    return records, windows


def sqlite_records(path: Path, run_id: str | None) -> tuple[list[Record], Counter]:
    """The rows of run `run_id` (one service start: a kept folder holds earlier runs too) as start
    and end records (an open row gives its start only), and the rows by end_reason."""
    rows = recent_events(path, limit=10**9)  # newest first
    records, reasons = [], Counter()
    for row in reversed(rows):
        if row["run_id"] != run_id:
            continue
        records.append(record(row["event_id"], "start", row["label"], row["onset_t"]))
        if row["end_t"] is not None:
            records.append(record(row["event_id"], "end", row["label"], row["end_t"]))
        reasons[row["end_reason"] or "open"] += 1
    return records, reasons


def mqtt_records(messages) -> list[Record]:
    """The event messages in arrival order."""
    out = []
    for message in messages:
        row = message.json()
        out.append(record(row["event_id"], row["type"], row["label"], row["t"]))
    return out


def canonical(records: list[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (r[0], r[1] != "start"))


def difference(reference: list[Record], other: list[Record]) -> dict:
    ref, got = Counter(reference), Counter(other)
    return {"identical": canonical(reference) == canonical(other),
            "missing": sorted((ref - got).elements(), key=lambda r: (r[0], r[1] != "start")),
            "extra": sorted((got - ref).elements(), key=lambda r: (r[0], r[1] != "start"))}


# -- the service ----------------------------------------------------------------------------------


def service_config(wav: Path, state: Path, broker_port: int, metrics_port: int, bundle: str | None) -> dict:
    """The service config: configs/edge/service.yaml's defaults but for these keys."""
    return {
        "schema_version": 1,
        "audio": {"input": str(wav), "fast": True},
        "model": {"bundle": bundle},
        "labels": {"set": "urban"},
        "listen": {"hold": 0.0},  # listen's own default (a service's is 30 s): the two must give the same events
        "service": {"state_dir": str(state), "log_level": "info"},
        "mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker_port, "node_id": NODE_ID},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": metrics_port},
        "event_log": {"enabled": True, "path": str(state / "events.sqlite")},
        "clips": {"enabled": False},
    }


class Scraper:
    """GET /metrics every SCRAPE_SECONDS: the count of answers and the last windows counter."""

    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.next_at = 0.0
        self.scrapes = self.failures = 0
        self.windows: float | None = None

    def __call__(self, elapsed: float) -> None:
        if elapsed < self.next_at:
            return
        self.next_at = elapsed + SCRAPE_SECONDS
        try:
            with urllib.request.urlopen(self.url, timeout=2) as answer:
                text = answer.read().decode()
        except OSError:
            self.failures += 1  # not listening yet (the model loads first), or gone
            return
        self.scrapes += 1
        found = re.search(r"^semanticac_windows_total (\S+)$", text, re.MULTILINE)
        if found:
            self.windows = float(found.group(1))


def run_service(cli: str, wav: Path, tmp: Path, bundle: str | None) -> dict:
    state = tmp / "state"
    broker = Broker(tmp / "mosquitto").start()
    subscriber = None
    try:
        subscriber = Subscriber(broker.port, [EVENTS_TOPIC])
        metrics_port = free_port()
        config = tmp / "service.yaml"
        config.write_text(yaml.safe_dump(service_config(wav, state, broker.port, metrics_port, bundle)))
        stderr = tmp / "serve.stderr"
        scraper = Scraper(metrics_port)

        # serve's log lines: ServiceSink's `ready:` at the first window, listen's `stopped` at the stream's end
        phase = Phase(stderr, b"ready:", b"edge.listen: stopped")
        run = watch([cli, "serve", "--config", str(config)], tmp / "serve.stdout", stderr, phase, scraper)
        subscriber.sync()  # everything the broker had for us has arrived
        messages = subscriber.topics(EVENTS_TOPIC)
    finally:
        if subscriber is not None:
            subscriber.close()
        broker.kill()
    log = stderr.read_text(errors="replace")
    closing = MQTT_CLOSING.search(log)
    unsent, dropped = (int(closing.group(1)), int(closing.group(2))) if closing else (0, 0)
    run_id = EVENT_LOG_RUN.search(log)
    return {"run": run, "log": log, "messages": messages, "sqlite": state / "events.sqlite",
            "run_id": run_id.group(1) if run_id else None,
            "mqtt_unsent": unsent, "mqtt_dropped": dropped, "scraper": scraper}


# -- the report -----------------------------------------------------------------------------------


def table(figures: dict) -> str:
    listen, serve = figures["listen"], figures["serve"]
    events, metrics = figures["events"], figures["metrics"]

    def ratio(key: str) -> str:
        a, b = listen[key], serve[key]
        return f"{b / a:.2f}" if a else "-"

    rows = [
        ("audio", f"{figures['audio_minutes']:.1f} min, {figures['clips']} clips (seed {figures['seed']})", "", ""),
        ("events (start+end records)", f"listen {events['listen']}",
         f"sqlite {events['sqlite']}, mqtt {events['mqtt']}", ""),
        ("identical to listen", "", f"sqlite {yes(figures['sqlite']['identical'])}, "
         f"mqtt {yes(figures['mqtt']['identical'])} (order {yes(figures['mqtt']['order_kept'])})", ""),
        ("mqtt dropped / unsent", "", f"{figures['mqtt']['dropped']} / {figures['mqtt']['unsent']}", ""),
        ("exit status", str(listen["returncode"]), str(serve["returncode"]), ""),
        ("wall (s)", f"{listen['wall_s']:.1f}", f"{serve['wall_s']:.1f}", ratio("wall_s")),
        ("to the first window (s)", fmt(listen["ready_s"], 1), fmt(serve["ready_s"], 1), ""),
        ("real-time factor (wall / audio)", f"{listen['realtime_factor']:.4f}", f"{serve['realtime_factor']:.4f}",
         ratio("realtime_factor")),
        ("speed (x real time)", f"{listen['x_realtime']:.1f}", f"{serve['x_realtime']:.1f}", ""),
        ("CPU (s)", f"{listen['cpu_s']:.1f}", f"{serve['cpu_s']:.1f}", ratio("cpu_s")),
        ("CPU (% of one core)", f"{listen['cpu_percent_of_one_core']:.0f}",
         f"{serve['cpu_percent_of_one_core']:.0f}", ""),
        ("CPU while running (% of one core)", fmt(listen["cpu_percent_running"], 0),
         fmt(serve["cpu_percent_running"], 0), ""),
        ("other processes (cores busy)", f"{listen['others_cores']:.2f}", f"{serve['others_cores']:.2f}", ""),
        ("RSS 1st window / warm / peak / end (MiB)", rss(listen), rss(serve), ratio("rss_peak_mib")),
        ("RSS growth, warm to end (MiB)", f"{listen['rss_growth_mib']:+.1f}", f"{serve['rss_growth_mib']:+.1f}", ""),
        ("RSS growth per audio hour (MiB)", f"{listen['rss_growth_mib_per_audio_hour']:+.1f}",
         f"{serve['rss_growth_mib_per_audio_hour']:+.1f}", ""),
        ("RSS growth, second half (MiB)", f"{listen['rss_growth_second_half_mib']:+.1f}",
         f"{serve['rss_growth_second_half_mib']:+.1f}", ""),
        ("metrics scrapes (answered / not)", "", f"{metrics['scrapes']} / {metrics['failed']}", ""),
    ]
    head = ("", "listen", "serve", "serve/listen")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [head, *rows]]
    return "\n".join(lines)


def yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"  # None or NaN: -


def rss(f: dict) -> str:
    return " / ".join(f"{f[k]:.0f}" for k in ("rss_first_window_mib", "rss_warm_mib", "rss_peak_mib", "rss_end_mib"))


def show(name: str, diff: dict, limit: int = 20) -> None:
    for kind in ("missing", "extra"):
        items = diff[kind]
        if items:
            print(f"{name}: {len(items)} {kind} record(s) (event_id, type, label, t):", file=sys.stderr)
            for item in items[:limit]:
                print(f"  {item}", file=sys.stderr)
            if len(items) > limit:
                print(f"  ... and {len(items) - limit} more", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="Minutes of audio (whole clips).")
    parser.add_argument("--data", default=os.environ.get("SEMANTICAC_DATA", str(ROOT.parent / "shared" / "data")),
                        help="Development data (esc50/, us8k/). Default: $SEMANTICAC_DATA, else ../shared/data.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the clips' shuffle.")
    parser.add_argument("--bundle", default=None,
                        help="Model bundle for both commands. Default: $SEMANTICAC_BUNDLE, else the demo bundle.")
    parser.add_argument("--json", dest="json_out", default=None, help="Also write the figures to this file.")
    parser.add_argument("--keep", default=None,
                        help="Work in this folder and keep it (the WAV, the config, logs, events.sqlite).")
    args = parser.parse_args()
    cli = str(Path(sys.executable).with_name("semanticac-edge"))
    if not os.access(cli, os.X_OK):
        raise SystemExit(f"{cli} is missing: run with the project's venv (.venv/bin/python)")

    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        tmp = Path(args.keep) if args.keep else Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        wav = tmp / "soak.wav"
        print(f"joining {args.minutes:g} min of clips from {args.data} ...", file=sys.stderr)
        audio_s, clips = join_clips(Path(args.data), args.minutes, args.seed, wav)

        print("listen (the reference) ...", file=sys.stderr)
        listen_cmd = [cli, "listen", "--input", str(wav), "--fast", "--json", "--labels", "urban"]
        if args.bundle:
            listen_cmd += ["--bundle", args.bundle]
        out = tmp / "listen.jsonl"
        # running from its first JSON line; closing from its last, the status record `stopped (...)`
        phase = Phase(out, b"\n", b'"message": "stopped (')
        listen_run = watch(listen_cmd, out, tmp / "listen.stderr", phase)
        reference, listen_windows = listen_records(out)

        print("serve (MQTT, event log, metrics) ...", file=sys.stderr)
        service = run_service(cli, wav, tmp, args.bundle)
        serve_run: Run = service["run"]
        found = service["sqlite"].exists()
        sqlite, reasons = sqlite_records(service["sqlite"], service["run_id"]) if found else ([], Counter())
        mqtt = mqtt_records(service["messages"])

    sqlite_diff, mqtt_diff = difference(reference, sqlite), difference(reference, mqtt)
    scraper: Scraper = service["scraper"]
    figures = {
        "audio_minutes": audio_s / 60,
        "clips": clips,
        "seed": args.seed,
        "events": {"listen": len(reference), "sqlite": len(sqlite), "mqtt": len(mqtt),
                   "listen_starts": sum(r[1] == "start" for r in reference)},
        "sqlite": {**sqlite_diff, "rows_by_end_reason": dict(reasons)},
        "mqtt": {**mqtt_diff, "order_kept": mqtt == reference, "dropped": service["mqtt_dropped"],
                 "unsent": service["mqtt_unsent"]},
        "metrics": {"scrapes": scraper.scrapes, "failed": scraper.failures, "last_windows_total": scraper.windows},
        "listen_windows": listen_windows,
        "listen": listen_run.figures(audio_s),
        "serve": serve_run.figures(audio_s),
        "samples": {"listen": [asdict(s) for s in listen_run.samples],
                    "serve": [asdict(s) for s in serve_run.samples]},
    }
    print(table(figures))
    show("event log vs listen", sqlite_diff)
    show("mqtt vs listen", mqtt_diff)
    if serve_run.returncode != 0:
        print(f"serve exited {serve_run.returncode}; the end of its log:\n{service['log'][-2000:]}", file=sys.stderr)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2, default=list) + "\n")
    same = sqlite_diff["identical"] and mqtt_diff["identical"]
    return 0 if same and serve_run.returncode == 0 and listen_run.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

