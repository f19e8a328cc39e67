"""`semanticac-edge serve` to a real mosquitto broker: a real process on a WAV file publishes
availability, Home Assistant discovery, events, states and the level; killed with SIGKILL, it
leaves `offline` through its last will."""

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from edge.events import Event
from edge.outputs.sinks import record_dict
from tests.mosquitto import HOST, broker, subscribers  # noqa: F401 (fixtures)
from tests.signals import noise, tone

RATE = 16000
EDGE = str(Path(sys.executable).with_name("semanticac-edge"))
EAGER = ["doorbell", "whistle", "guitar"]  # the eager_labels fixture's set


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One label-embedding cache for the module: the eager set is embedded once."""
    return tmp_path_factory.mktemp("cache")


def service(tmp_path: Path, cache: Path, labels: Path, port: int, node: str, seconds: float, fast: bool):
    """A WAV (a tone, then noise), a config with MQTT at the broker, and the environment to run in."""
    wav = tmp_path / "street.wav"
    half = seconds / 2
    sf.write(wav, np.concatenate([tone(700, half, RATE), noise(half, RATE)]), RATE)
    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump({
        "schema_version": 1,
        "audio": {"input": str(wav), "fast": fast},
        "labels": {"set": str(labels)},
        "listen": {"window": 1.0, "hop": 0.5, "min_duration": 0.5, "heard": 2},
        "mqtt": {"enabled": True, "host": HOST, "port": port, "node_id": node, "level_interval": 0},
        "metrics": {"enabled": False},
    }))
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update(XDG_CACHE_HOME=str(cache), STATE_DIRECTORY=str(tmp_path / "state"))
    return [EDGE, "serve", "--config", str(config)], env


def test_serve_publishes_availability_discovery_events_and_states(broker, subscribers, eager_labels, cache, tmp_path):
    node = "serve" + uuid.uuid4().hex[:8]
    base, discovery = f"semanticac/{node}", f"homeassistant/device/{node}/config"
    sub = subscribers(broker.port, [f"{base}/#", discovery])
    # in real time, so an event's ON and OFF are seconds apart (states are latest values: a
    # change undone before the publisher's turn is never sent)
    command, env = service(tmp_path, cache, eager_labels, broker.port, node, seconds=4.0, fast=False)
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    sub.on(f"{base}/availability", "offline")  # the last thing close() sends
    sub.sync()

    assert [m.payload for m in sub.topics(f"{base}/availability")] == ["online", "offline"]
    components = sub.topics(discovery)[0].json()["components"]
    assert components["events"]["event_types"] == EAGER
    assert {f"label_{label}" for label in EAGER} <= set(components)
    events = [m.json() for m in sub.topics(f"{base}/events")]
    starts = [e for e in events if e["type"] == "start"]
    ends = [e for e in events if e["type"] == "end"]
    assert starts and sorted(e["event_id"] for e in ends) == sorted(e["event_id"] for e in starts)
    template = record_dict(Event("start", 0.0, 1, "siren", score=0.5), "utc")
    for event in starts:
        assert set(event) == {*template, "event_type", "run_id"} and event["event_type"] == event["label"] in EAGER
    for label in {e["label"] for e in starts}:  # ON while its event lasted, OFF after (the first OFF: at connection)
        assert [m.payload for m in sub.topics(f"{base}/state/{label}")] == ["OFF", "ON", "OFF"]
    assert [m.payload for m in sub.topics(f"{base}/microphone")][:2] == ["OFF", "ON"]  # none until the first window
    levels = [m.payload for m in sub.topics(f"{base}/level")]
    assert levels and all(float(level) < 0 for level in levels)
    heard = [m.json() for m in sub.topics(f"{base}/heard")]  # listen.heard 2: its sensor and messages
    assert components["heard"]["state_topic"] == f"{base}/heard" and len(heard) == len(levels)
    assert all(len(h["top"]) == 2 and h["name"] == h["top"][0]["name"] for h in heard)
    assert sub.topics(f"{base}/status"), "no status record (the model's licence, the end of the file) came"


def test_a_failure_at_start_is_the_problem_sensors_last_word(broker, subscribers, eager_labels, cache, tmp_path):
    """An input that fails as it is read stops the service (exit 1, which systemd restarts): the
    retained `problem` says why, and its sensor has its own availability, so Home Assistant still
    shows it while the device is offline. (A file that is not audio at all is the config's error,
    exit 78, before any output starts.)"""
    import numpy as np
    import soundfile as sf

    node = "fail" + uuid.uuid4().hex[:8]
    base = f"semanticac/{node}"
    command, env = service(tmp_path, cache, eager_labels, broker.port, node, seconds=1.0, fast=True)
    sf.write(tmp_path / "street.wav", np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")  # corrupt
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr[-2000:]
    late = subscribers(broker.port, [f"{base}/#"])
    late.sync()
    retained = {m.topic: m.payload for m in late.messages if m.retain}
    assert retained[f"{base}/availability"] == "offline"
    problem = json.loads(retained[f"{base}/problem"])
    assert problem["state"] == "ON" and problem["problems"][0]["code"] == "source_error", problem
    assert "street.wav holds NaN" in problem["problems"][0]["message"]


@pytest.mark.slow  # a start of a real process
def test_a_metrics_port_taken_at_the_start_is_a_problem_not_a_stop(broker, subscribers, eager_labels, cache, tmp_path):
    """A port another program holds at a boot (or a LAN address not given yet) made the start exit 78,
    which systemd does not restart. The service now detects without its metrics, says why on the
    problem sensor and in the event log, and goes on to the end of its input."""
    import socket
    import sqlite3

    node = "port" + uuid.uuid4().hex[:8]
    base = f"semanticac/{node}"
    command, env = service(tmp_path, cache, eager_labels, broker.port, node, seconds=2.0, fast=True)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        run = subprocess.run([*command, "--set", "metrics.enabled=true", "--set", f"metrics.port={port}"],
                             env=env, capture_output=True, text=True, timeout=120)
    finally:
        taken.close()
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"cannot listen on 127.0.0.1:{port}" in run.stderr and "tries again every 30 s" in run.stderr
    late = subscribers(broker.port, [f"{base}/#"])
    late.sync()
    retained = {m.topic: m.payload for m in late.messages if m.retain}
    problem = json.loads(retained[f"{base}/problem"])
    assert problem["state"] == "ON" and [p["code"] for p in problem["problems"]] == ["metrics"], problem
    with sqlite3.connect(tmp_path / "state" / "events.sqlite") as db:
        codes = [code for (code,) in db.execute("SELECT code FROM statuses")]
    assert "metrics" in codes, codes


@pytest.mark.slow  # three starts of a real process
def test_a_config_error_at_start_reaches_the_problem_sensor(broker, subscribers, eager_labels, cache, tmp_path):
    """A config the start refuses (exit 78, which systemd does not restart: a label set saved with a
    mistake, a bundle an upgrade replaced) left Home Assistant with an offline device and no reason. The
    start now says it on the retained `problem` when the config's own mqtt section is sound."""
    node = "conf" + uuid.uuid4().hex[:8]
    base = f"semanticac/{node}"
    command, env = service(tmp_path, cache, eager_labels, broker.port, node, seconds=1.0, fast=True)
    eager_labels.write_text(eager_labels.read_text().replace("guitar]", "{name: guitar, threshold: 8}]"))
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)  # from a shell: not said
    assert run.returncode == 78 and "mqtt:" not in run.stderr, run.stderr[-2000:]
    env = {**env, "INVOCATION_ID": uuid.uuid4().hex}  # as systemd starts it
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 78, run.stderr[-2000:]
    late = subscribers(broker.port, [f"{base}/#"])
    late.sync()
    retained = {m.topic: m.payload for m in late.messages if m.retain}
    assert set(retained) == {f"{base}/problem"}, retained  # no availability, discovery or states: no run
    problem = json.loads(retained[f"{base}/problem"])
    assert problem["state"] == "ON" and [p["code"] for p in problem["problems"]] == ["config_error"], problem
    assert "threshold: 8 is not a score" in problem["problems"][0]["message"] in run.stderr
    # an mqtt section that is itself wrong says nothing there (the journal has the error)
    other = "conf" + uuid.uuid4().hex[:8]
    path = Path(command[-1])
    config = yaml.safe_load(path.read_text())
    config["mqtt"].update(node_id=other, qos=5)
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 78 and "mqtt.qos" in run.stderr, run.stderr[-2000:]
    late = subscribers(broker.port, [f"semanticac/{other}/#"])
    late.sync()
    assert not late.topics(f"semanticac/{other}/problem")


def test_serve_killed_leaves_offline_by_its_last_will(broker, subscribers, eager_labels, cache, tmp_path):
    node = "kill" + uuid.uuid4().hex[:8]
    base = f"semanticac/{node}"
    sub = subscribers(broker.port, [f"{base}/availability", f"{base}/events"])
    command, env = service(tmp_path, cache, eager_labels, broker.port, node, seconds=60.0, fast=False)
    with open(tmp_path / "serve.log", "w") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            sub.on(f"{base}/availability", "online", timeout=60)
            sub.on(f"{base}/events", timeout=30)  # running: an event started (real time, so it goes on)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            sub.on(f"{base}/availability", "offline")
        finally:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert [m.payload for m in sub.topics(f"{base}/availability")] == ["online", "offline"]


@pytest.mark.slow  # 9 s of real time (a broker that comes late, then restarts)
def test_serve_detects_without_a_broker_then_delivers_when_it_comes_and_after_a_restart(
        subscribers, eager_labels, cache, tmp_path):
    import time

    from tests.mosquitto import Broker

    late = Broker(tmp_path / "broker")  # not started: absent when serve starts
    node = "late" + uuid.uuid4().hex[:8]
    base = f"semanticac/{node}"
    command, env = service(tmp_path, cache, eager_labels, late.port, node, seconds=8.0, fast=False)
    command += ["--set", "mqtt.reconnect_min_delay=1", "--set", "mqtt.reconnect_max_delay=1"]
    serve = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)  # detection runs meanwhile: the eager labels' events start
        late.start()
        first = subscribers(late.port, [f"{base}/events"])
        starts = {first.wait_for(lambda m: m.json()["type"] == "start" and m.json()["label"] == label).json()["event_id"]
                  for label in EAGER}  # queued while the broker was absent, sent once it came
        late.stop()  # a broker restart mid-run
        late.start()
        second = subscribers(late.port, [f"{base}/events"])
        assert serve.wait(timeout=60) == 0, serve.stderr.read()[-2000:]
        ends = {second.wait_for(lambda m: m.json()["type"] == "end" and m.json()["event_id"] == i).json()["label"]
                for i in starts}  # the events end with the file, after the restart: delivered
        assert ends == set(EAGER)
    finally:
        serve.kill()
        serve.wait()
        late.stop()
