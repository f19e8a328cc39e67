"""MqttSink against a real mosquitto broker (tests/mosquitto.py), read by a real paho subscriber.

Every test uses its own node id, so its topics are its own on the module's one broker."""

import json
import logging
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from edge.errors import ConfigError
from edge.events import Event
from edge.outputs import mqtt as mqtt_module
from edge.outputs.mqtt import MqttConfig, MqttSink, MqttTls, default_node_id, slug
from edge.outputs.sinks import Status, WindowResult, record_dict
from edge.service.sections import parse_section
from tests.mosquitto import (HOST, WAIT, Link, MosquittoUnavailable, TlsFiles, broker,  # noqa: F401
                             broker_or_skip, free_port, subscribers)

REPO = Path(__file__).resolve().parents[3]
LABELS = ["siren", "dog_bark", "car_horn"]


@pytest.fixture
def node():
    return "t" + uuid.uuid4().hex[:10]


def make_sink(port, node, labels=LABELS, **config) -> MqttSink:
    config = {"enabled": True, "host": HOST, "port": port, "node_id": node, "reconnect_max_delay": 1, **config}
    return MqttSink(parse_section(MqttConfig, config, "mqtt"), labels, node_name="Garden", model="demo-1",
                    sw_version="0.1.0")


def wait_until(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def window(t, level=-30.0):
    return WindowResult(t=t, top=(("siren", 0.9),), latency_ms=5.0, dropped=0, level_dbfs=level)


def start(t, event_id, label="siren"):
    return Event("start", t, event_id, label, score=0.8)


def end(t, event_id, label="siren"):
    return Event("end", t, event_id, label, duration=1.0, peak=0.9)


# -- the config -------------------------------------------------------------------------------

def test_config_defaults_derive_from_the_node_id():
    got = parse_section(MqttConfig, {"node_id": "garden_1"}, "mqtt")
    assert (got.enabled, got.port, got.qos, got.discovery, got.discovery_prefix) == (False, 1883, 1, True,
                                                                                   "homeassistant")
    assert (got.base_topic, got.client_id) == ("semanticac/garden_1", "semanticac-garden_1")
    derived = parse_section(MqttConfig, None, "mqtt").node_id
    assert derived == default_node_id() and derived and set(derived) <= set("abcdefghijklmnopqrstuvwxyz0123456789_")
    assert slug("Dog Bark!") == "dog_bark"
    tls = parse_section(MqttConfig, {"tls": {"ca_certs": "/etc/ca.pem"}}, "mqtt").tls
    assert tls == MqttTls(ca_certs="/etc/ca.pem")


@pytest.mark.parametrize("mapping, key, text", [
    ({"port": 0}, "mqtt.port", "a TCP port from 1 to 65535"),
    ({"qos": 3}, "mqtt.qos", "0, 1 or 2"),
    ({"node_id": "my garden"}, "mqtt.node_id", "letters, digits, _ and -"),
    ({"base_topic": "home/#"}, "mqtt.base_topic", "wildcard"),
    ({"base_topic": "home/"}, "mqtt.base_topic", "empty level"),
    ({"base_topic": "$SYS/garden"}, "mqtt.base_topic", "begins with $"),  # mosquitto drops a client's publish there
    ({"discovery_prefix": ""}, "mqtt.discovery_prefix", "it is empty"),
    ({"host": ""}, "mqtt.host", "host name or IP address"),
    ({"keepalive": 1}, "mqtt.keepalive", "from 5 to 65535"),
    ({"level_interval": -1}, "mqtt.level_interval", ">= 0"),
    ({"queue_size": 0}, "mqtt.queue_size", ">= 1"),
    ({"reconnect_min_delay": 5, "reconnect_max_delay": 2}, "mqtt.reconnect_max_delay", "at least reconnect_min"),
    ({"username": "u", "password_file": "/a", "password_env": "B"}, "mqtt.password_env", "not both"),
    ({"password_env": "B"}, "mqtt.password_env", "together with username"),
    ({"password": "hunter2"}, "mqtt.password", "a password never goes in the config: put it in a file"),  # not: password_env
    ({"tls": {"keyfile": "/k.pem"}}, "mqtt.tls.keyfile", "together with certfile"),
])
def test_config_errors_name_the_key_the_value_and_the_fix(mapping, key, text):
    with pytest.raises(ConfigError) as info:
        parse_section(MqttConfig, mapping, "mqtt")
    assert info.value.key == key and key in str(info.value) and text in str(info.value)


def test_labels_that_share_a_topic_are_refused():
    with pytest.raises(ConfigError, match="labels 'dog_bark' and 'dog-bark' cannot be told apart in MQTT topics"):
        make_sink(1883, "x", labels=["dog_bark", "dog-bark"])


def test_labels_in_any_script_get_a_topic_of_their_own():
    """A label with no ASCII letter or digit gets a stable hash: the service no longer refuses a
    Japanese label or an emoji (exit 78, which systemd never restarts); others keep the topic they had."""
    labels = ["Türklingel", "犬の鳴き声", "🐶", "dog_bark"]
    sink = make_sink(1883, "x", labels=labels)
    topics = [sink.state_topic(label) for label in labels]
    assert topics[0] == "semanticac/x/state/t_rklingel" and topics[3] == "semanticac/x/state/dog_bark"
    assert re.fullmatch(r"semanticac/x/state/u[0-9a-f]{8}", topics[1]) and len(set(topics)) == 4
    assert make_sink(1883, "y", labels=labels).state_topic("🐶").endswith(topics[2].rpartition("/")[2])  # stable
    names = {c["name"] for c in sink.discovery_config()["components"].values() if c.get("device_class") == "sound"}
    assert names == {"Türklingel", "犬の鳴き声", "🐶", "Dog bark"}  # sentence case, as Home Assistant's own


# -- against the broker -----------------------------------------------------------------------

def test_availability_discovery_events_states_and_level(broker, node, subscribers):
    base = f"semanticac/{node}"
    sub = subscribers(broker.port, [f"{base}/#", f"homeassistant/device/{node}/config"])
    clips = {1: "clip-0001.flac"}
    sink = make_sink(broker.port, node, level_interval=0)
    sink.clip_for = lambda event: clips.get(event.event_id)
    sink.start()
    assert sub.on(f"{base}/availability", "online").retain is False  # live: sent to an existing subscription
    config = sub.on(f"homeassistant/device/{node}/config").json()
    components = config["components"]
    assert components["events"]["platform"] == "event" and components["events"]["event_types"] == LABELS
    assert {k: v["device_class"] for k, v in components.items() if v["platform"] == "binary_sensor"} == {
        "label_siren": "sound", "label_dog_bark": "sound", "label_car_horn": "sound", "microphone": "connectivity",
        "problem": "problem"}
    assert components["level"]["unit_of_measurement"] == "dBFS"
    assert components["label_dog_bark"]["state_topic"] == f"{base}/state/dog_bark"
    assert config["availability"] == [{"topic": f"{base}/availability", "payload_available": "online",
                                       "payload_not_available": "offline"}]
    # Home Assistant copies each shared key into the components that lack it; a component may not
    # hold both availability forms (its schema makes them exclusive), or it is refused
    shared = {k: v for k, v in config.items() if k not in ("device", "origin", "components")}
    for key, component in components.items():
        merged = {**shared, **component}
        assert not ("availability" in merged and "availability_topic" in merged), key
    assert config["device"]["identifiers"] == [f"semanticac_{node}"] and config["device"]["model"] == "demo-1"
    for label in LABELS:
        sub.on(f"{base}/state/{label}", "OFF")
    # before the first window no audio has come: a start that loads the model (or dies there) shows no microphone
    sub.on(f"{base}/microphone", "OFF")

    sink.window(window(1.0, level=-31.26))
    assert sub.on(f"{base}/level").payload == "-31.3"
    sub.on(f"{base}/microphone", "ON")
    sink.event(start(0.5, 1))
    got = sub.on(f"{base}/events").json()
    assert got == {**record_dict(start(0.5, 1), sink.utc(0.5)), "event_type": "siren", "clip": "clip-0001.flac"}
    sub.on(f"{base}/state/siren", "ON")
    sink.window(window(2.0, level=float("-inf")))  # digital silence: Home Assistant's "unknown"
    sub.on(f"{base}/level", "None")
    sink.event(end(1.5, 1))
    assert sub.wait_for(lambda m: m.topic == f"{base}/events" and m.json()["type"] == "end").json()["event_type"] == "siren"
    sub.on(f"{base}/state/siren", "OFF")
    sink.window(window(2.5, level=-20.0))
    sub.on(f"{base}/level", "-20.0")
    sink.status(Status(3.0, "warning", "microphone gone", code="audio_lost"))
    assert sub.on(f"{base}/status").json()["code"] == "audio_lost"
    sub.on(f"{base}/microphone", "OFF")
    wait_until(lambda: sub.topics(f"{base}/level")[-1].payload == "None")  # unknown while lost, not the last level
    sink.window(window(4.0))  # a late window does not bring the microphone back: audio_restored does
    sink.status(Status(5.0, "info", "audio restored", code="audio_restored"))
    wait_until(lambda: len(sub.topics(f"{base}/microphone")) == 4)
    assert [m.payload for m in sub.topics(f"{base}/microphone")] == ["OFF", "ON", "OFF", "ON"]
    assert sink.connected and sink.dropped == 0
    sink.close()
    sub.on(f"{base}/availability", "offline")
    assert not sink.connected

    late = subscribers(broker.port, [f"{base}/#", f"homeassistant/device/{node}/config"])
    late.sync()  # what a newcomer (Home Assistant restarting) finds: the retained topics only
    retained = {m.topic: m.payload for m in late.messages if m.retain}
    assert retained[f"{base}/availability"] == "offline"
    # a stop ends the audio: the microphone's last word is OFF (until 2026-12-07 its ON stayed beside `offline`)
    assert retained[f"{base}/state/siren"] == "OFF" and retained[f"{base}/microphone"] == "OFF"
    assert json.loads(retained[f"{base}/labels"]) == LABELS
    assert f"homeassistant/device/{node}/config" in retained
    assert not any(m.topic in (f"{base}/events", f"{base}/level", f"{base}/status") for m in late.messages)


def test_what_the_vocabulary_hears_goes_with_the_level_and_has_a_sensor_only_when_asked(broker, node, subscribers):
    base, discovery = f"semanticac/{node}", f"homeassistant/device/{node}/config"
    sub = subscribers(broker.port, [f"{base}/heard", f"{base}/level", discovery])
    sink = make_sink(broker.port, node, level_interval=0)
    sink.heard = True
    sink.start()
    sensor = sub.on(discovery).json()["components"]["heard"]
    assert sensor["platform"] == "sensor" and sensor["state_topic"] == sensor["json_attributes_topic"] == f"{base}/heard"
    assert sensor["value_template"] == "{{ value_json.name }}"
    heard = (("Siren", 0.961234), ("Emergency vehicle", 0.5))
    sink.window(WindowResult(1.0, (("siren", 0.9),), 5.0, 0, -30.0, heard=heard))
    assert sub.on(f"{base}/heard").json() == {"name": "Siren", "score": 0.9612, "top": [
        {"name": "Siren", "score": 0.9612}, {"name": "Emergency vehicle", "score": 0.5}]}
    sink.window(window(2.0))  # a window without `heard`: the level goes, nothing is heard
    sub.on(f"{base}/level", "-30.0")
    sink.close()
    sub.sync()
    assert len(sub.topics(f"{base}/heard")) == 1
    again = make_sink(broker.port, node)  # the next run without `heard` removes the sensor
    again.start()
    wait_until(lambda: len(sub.topics(discovery)) == 2)
    assert sub.topics(discovery)[-1].json()["components"]["heard"] == {"platform": "sensor"}
    again.window(WindowResult(3.0, (("siren", 0.9),), 5.0, 0, -30.0, heard=heard))
    again.close()
    sub.sync()
    assert len(sub.topics(f"{base}/heard")) == 1


def test_a_problem_sensor_holds_what_needs_a_person(broker, node, subscribers, monkeypatch):
    monkeypatch.setattr(mqtt_module, "PROBLEM_HOLD_SECONDS", 0.5)
    base, discovery = f"semanticac/{node}", f"homeassistant/device/{node}/config"
    sub = subscribers(broker.port, [f"{base}/problem", discovery])
    sink = make_sink(broker.port, node)
    sink.start()
    problem = sub.on(discovery).json()["components"]["problem"]
    assert (problem["device_class"], problem["state_topic"], problem["json_attributes_topic"]) == (
        "problem", f"{base}/problem", f"{base}/problem")
    # readable while the device is offline: its own availability, any message on its topic
    assert problem["availability"] == [{"topic": f"{base}/problem", "value_template": "online"}]

    def states(count):
        wait_until(lambda: len(sub.topics(f"{base}/problem")) == count)
        got = sub.topics(f"{base}/problem")[-1].json()
        return got["state"], sorted(p["code"] for p in got["problems"])

    sub.sync()
    assert not sub.topics(f"{base}/problem")  # the last run's problem stands until this one hears audio
    sink.window(window(0.5))
    assert states(1) == ("OFF", [])  # a start that works clears what the last run left
    sink.status(Status(1.0, "warning", "mic gone", code="audio_lost"))
    assert states(2) == ("ON", ["audio_lost"])
    sink.status(Status(1.5, "info", "every label embedded"))  # not a problem: nothing sent
    sink.status(Status(2.0, "warning", "input clips", code="clipping"))
    assert states(3) == ("ON", ["audio_lost", "clipping"])
    assert sub.topics(f"{base}/problem")[-1].json()["problems"][1] == {
        "code": "clipping", "message": "input clips", "utc": sink.utc(2.0)}
    sink.status(Status(3.0, "info", "audio restored", code="audio_restored"))
    assert states(4) == ("ON", ["clipping"])
    sink.window(window(3.5))  # within the hold: clipping stays
    time.sleep(0.6)
    sink.window(window(4.0))  # the hold is over: nothing left
    assert states(5) == ("OFF", [])
    sink.status(Status(4.5, "warning", "event log: disk full", code="event_log"))
    assert states(6) == ("ON", ["event_log"])
    sink.status(Status(4.8, "info", "event log: writing again", code="event_log_restored"))
    assert states(7) == ("OFF", [])
    sink.status(Status(4.85, "warning", "inference fell behind", code="overload"))
    assert states(8) == ("ON", ["overload"])
    sink.status(Status(4.9, "info", "inference keeps up again", code="overload_ended"))  # within the hold: ends it
    assert states(9) == ("OFF", [])
    sink.status(Status(5.0, "error", "the model failed", code="backend_error"))
    time.sleep(0.6)
    sink.window(window(6.0))  # a failure is not held for a while: it stays until the next start
    assert states(10) == ("ON", ["backend_error"])
    sink.close()


def test_states_go_before_online_so_a_crashed_runs_on_never_shows(broker, node, subscribers):
    """A crash during an event leaves `state/siren ON` retained; Home Assistant shows an entity's
    last payload the moment its device is online again, so OFF must come first."""
    import paho.mqtt.publish as publish

    base = f"semanticac/{node}"
    publish.multiple([(f"{base}/state/siren", "ON", 1, True), (f"{base}/availability", "offline", 1, True)],
                     hostname=HOST, port=broker.port)
    sub = subscribers(broker.port, [f"{base}/#"])
    sub.sync()
    sink = make_sink(broker.port, node)
    sink.start()
    sub.on(f"{base}/availability", "online")
    live = [(m.topic, m.payload) for m in sub.messages if not m.retain]
    assert live.index((f"{base}/state/siren", "OFF")) < live.index((f"{base}/availability", "online")), live
    sink.close()


def test_the_level_is_rate_limited(broker, node, subscribers):
    base = f"semanticac/{node}"
    sub = subscribers(broker.port, [f"{base}/level"])
    sink = make_sink(broker.port, node, level_interval=3600)
    sink.start()
    for i in range(20):
        sink.window(window(float(i), level=-40.0 - i))
    sub.on(f"{base}/level", "-40.0")
    sink.close()
    sub.sync()
    assert [m.payload for m in sub.topics(f"{base}/level")] == ["-40.0"]


def test_removed_labels_lose_their_entities_and_retained_states(broker, node, subscribers):
    base, discovery = f"semanticac/{node}", f"homeassistant/device/{node}/config"
    first = make_sink(broker.port, node)
    first.start()
    wait_until(lambda: first.connected)
    first.event(start(0.0, 1, "dog_bark"))  # dog_bark left ON, retained
    first.close()
    sub = subscribers(broker.port, [discovery, f"{base}/state/#"])
    assert sub.on(f"{base}/state/dog_bark", "ON").retain

    second = make_sink(broker.port, node, labels=["siren", "glass_breaking"])
    second.start()
    removal = sub.wait_for(lambda m: m.topic == discovery and not m.retain  # not the first run's config
                           and "label_dog_bark" in m.json()["components"]).json()
    # in the connection's one config: Home Assistant drops the components of a config that comes while
    # it still handles the one before (the first, whose event types changed), so a removal sent after
    # it was lost, and the removed labels' entities stayed for good
    sub.sync()
    assert [m.json() for m in sub.topics(discovery) if not m.retain] == [removal]
    components = removal["components"]
    assert components["label_dog_bark"] == {"platform": "binary_sensor"}
    assert components["label_car_horn"] == {"platform": "binary_sensor"}
    assert components["label_glass_breaking"]["platform"] == "binary_sensor" and "label_siren" in components
    assert components["events"]["event_types"] == ["siren", "glass_breaking"]
    sub.on(f"{base}/state/dog_bark", "")
    sub.on(f"{base}/state/car_horn", "")
    sub.on(f"{base}/state/glass_breaking", "OFF")
    sub.client.publish("homeassistant/status", "online", qos=1)  # Home Assistant, offline at the start, comes
    wait_until(lambda: len([m for m in sub.topics(discovery) if not m.retain]) == 2)
    assert [m.json() for m in sub.topics(discovery) if not m.retain] == [removal, removal]
    second.close()

    late = subscribers(broker.port, [f"{base}/state/#", f"{base}/labels"])
    late.sync()
    retained = {m.topic: m.payload for m in late.messages if m.retain}
    assert retained == {f"{base}/state/siren": "OFF", f"{base}/state/glass_breaking": "OFF",
                        f"{base}/labels": json.dumps(["siren", "glass_breaking"])}


def test_a_retained_labels_list_too_long_for_any_run_is_not_read(broker, node, subscribers, monkeypatch, caplog):
    """The last run's labels are a retained message anyone allowed on the topic may publish: 20,000 made-up
    names had the next start send 20,000 removals and log a 349 KB line (a privacy audit)."""
    import logging

    import paho.mqtt.publish as publish

    monkeypatch.setattr(mqtt_module, "FORGET_MAX", 30)
    base = f"semanticac/{node}"
    sub = subscribers(broker.port, [f"{base}/state/#", f"homeassistant/device/{node}/config"])
    for count, read in ((31, False), (30, True)):
        names = [f"fake {k}" for k in range(count)]
        publish.single(f"{base}/labels", json.dumps(names), qos=1, retain=True, hostname="127.0.0.1", port=broker.port)
        sub.sync()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="edge.outputs.mqtt"):
            sink = make_sink(broker.port, node, labels=["siren"])
            sink.start()
            config = sub.wait_for(lambda m: m.topic.startswith("homeassistant/") and not m.retain).json()
            sink.close()
        sub.sync()
        cleared = [m for m in sub.topics(f"{base}/state/fake_0") if m.payload == ""]
        assert bool(cleared) == read and ("label_fake_29" in config["components"]) == read, config
        if read:
            assert "fake_0, fake_1," in caplog.text and "and 10 more" in caplog.text, caplog.text
        else:
            assert f"holds 31 labels, more than a run publishes (30 at most): not read" in caplog.text, caplog.text
        sub.messages.clear()


def test_home_assistant_online_gets_discovery_again(broker, node, subscribers):
    discovery = f"homeassistant/device/{node}/config"
    sub = subscribers(broker.port, [discovery, f"semanticac/{node}/state/siren"])
    sink = make_sink(broker.port, node)
    sink.start()
    sub.on(discovery)
    sub.on(f"semanticac/{node}/state/siren", "OFF")
    sub.sync()
    sub.client.publish("homeassistant/status", "offline", qos=1)
    sub.sync()
    assert len(sub.topics(discovery)) == 1  # offline asks for nothing
    sub.client.publish("homeassistant/status", "online", qos=1)
    wait_until(lambda: len(sub.topics(discovery)) == 2 and len(sub.topics(f"semanticac/{node}/state/siren")) == 2)
    assert sub.topics(discovery)[1].json() == sub.topics(discovery)[0].json()
    sink.close()


def test_discovery_goes_out_when_the_labels_list_never_comes_back(broker, node, subscribers, monkeypatch):
    """The config waits for this connection's labels list to come back (then the last run's, retained,
    came before it); a broker whose ACL lets the client publish it but not read it back: it goes
    after ANNOUNCE_WAIT_SECONDS, once."""
    discovery = f"homeassistant/device/{node}/config"
    monkeypatch.setattr(mqtt_module, "ANNOUNCE_WAIT_SECONDS", 0.5)
    monkeypatch.setattr(MqttSink, "_on_message", lambda *args: None)  # nothing read back
    sub = subscribers(broker.port, [discovery])
    sink = make_sink(broker.port, node)
    began = time.monotonic()
    sink.start()
    assert sub.on(discovery).json()["components"]["events"]["event_types"] == LABELS
    assert time.monotonic() - began >= 0.5
    time.sleep(0.6)
    sub.sync()
    assert len(sub.topics(discovery)) == 1
    sink.close()


def test_discovery_off_publishes_no_config(broker, node, subscribers):
    sub = subscribers(broker.port, [f"homeassistant/device/{node}/config", f"semanticac/{node}/availability"])
    sink = make_sink(broker.port, node, discovery=False)
    sink.start()
    sub.on(f"semanticac/{node}/availability", "online")
    sink.close()
    sub.sync()
    assert sub.topics(f"homeassistant/device/{node}/config") == []


def test_a_broker_restart_is_survived(broker, node, subscribers, caplog):
    base = f"semanticac/{node}"
    sink = make_sink(broker.port, node)
    sink.start()
    wait_until(lambda: sink.connected)
    broker.stop()
    wait_until(lambda: not sink.connected)
    sink.event(start(1.0, 1))  # during the outage: queued
    with caplog.at_level(logging.INFO, logger="edge.outputs.mqtt"):
        broker.start()  # same port; retained messages were not persisted
        sub = subscribers(broker.port, [f"{base}/#"])
        wait_until(lambda: sink.connected)
    # the journal says the outage is over, and how long it lasted
    assert re.search(rf"mqtt: connected to 127.0.0.1:{broker.port} again, \d+ s after the connection was lost",
                     caplog.text), caplog.text
    assert sub.wait_for(lambda m: m.topic == f"{base}/events").json()["event_id"] == 1
    sub.on(f"{base}/availability", "online")
    sub.on(f"{base}/state/siren", "ON")  # republished on the new connection
    sink.event(end(2.0, 1))
    assert sub.wait_for(lambda m: m.topic == f"{base}/events" and m.json()["type"] == "end").json()["event_id"] == 1
    sink.close()
    assert sink.dropped == 0


def test_records_are_taken_while_the_broker_is_absent_and_sent_once_it_comes(tmp_path, node, subscribers, caplog):
    later = broker_or_skip(tmp_path / "later")  # its port is chosen; nothing listens on it yet
    sink = make_sink(later.port, node)
    sink.start()  # never raises for an unreachable broker
    done = threading.Event()

    def feed():
        for i in range(50):
            sink.window(window(float(i)))
        sink.event(start(10.0, 7))
        done.set()

    threading.Thread(target=feed, daemon=True).start()
    assert done.wait(WAIT), "the sink blocked while the broker was absent"
    assert not sink.connected
    try:
        later.start()
        sub = subscribers(later.port, [f"semanticac/{node}/events"])
        wait_until(lambda: sink.connected)
        assert sub.on(f"semanticac/{node}/events").json()["event_id"] == 7
        sink.close()
        sub.close()
    finally:
        later.kill()
    assert "cannot reach the broker" in caplog.text


@pytest.mark.slow  # a broker started for it (and openssl)
def test_records_waiting_for_the_broker_move_with_a_clock_stepped_right(tmp_path, node, subscribers):
    """At a boot without a real-time clock, NTP and the broker both wait for the network: events queued
    meanwhile went out dated by the unset clock (days early), while the event log moved its rows. The
    queued records and the problems held move with the clock now."""
    from datetime import datetime, timedelta

    later = broker_or_skip(tmp_path / "later")
    sink = make_sink(later.port, node)
    sink.start()
    sink.event(start(1.0, 1))
    sink.status(Status(1.5, "warning", "input clipped", code="clipping"))
    before = datetime.fromisoformat(sink.utc(1.0))
    sink.redate(timedelta(days=3))
    try:
        later.start()
        sub = subscribers(later.port, [f"semanticac/{node}/events", f"semanticac/{node}/problem"])
        wait_until(lambda: sink.connected)
        event = sub.on(f"semanticac/{node}/events").json()
        problem = sub.wait_for(lambda m: m.topic.endswith("/problem") and m.json()["state"] == "ON").json()
        sink.close()
        sub.close()
    finally:
        later.kill()
    assert datetime.fromisoformat(event["utc"]) - before == timedelta(days=3), event
    assert datetime.fromisoformat(problem["problems"][0]["utc"]) - before == timedelta(days=3, seconds=0.5), problem


def test_an_event_that_waited_for_the_broker_is_marked_late_and_does_not_fire_home_assistant(
    tmp_path, node, subscribers, caplog
):
    """After an outage the queued events still go out (the event log and the events topic keep
    everything), but one that waited longer than late_after carries `delayed_s`, and the event
    entity's template renders it empty: Home Assistant would otherwise fire a bark from last night
    as heard now. One sent while the broker is there is not late."""
    later = broker_or_skip(tmp_path / "later")
    sink = make_sink(later.port, node, late_after=1.0)
    sink.start()
    sink.event(start(1.0, 1))
    time.sleep(1.2)
    try:
        later.start()
        sub = subscribers(later.port, [f"semanticac/{node}/events"])
        wait_until(lambda: sink.connected)
        sink.event(start(2.0, 2, label="dog_bark"))
        wait_until(lambda: len(sub.topics(f"semanticac/{node}/events")) == 2)
        sent = [m.json() for m in sub.topics(f"semanticac/{node}/events")]
        sink.close()
        sub.close()
    finally:
        later.kill()
    assert [m["event_id"] for m in sent] == [1, 2]
    assert 1.0 < sent[0]["delayed_s"] < WAIT and "delayed_s" not in sent[1]
    assert "waited for the broker more than 1 s go out with delayed_s" in caplog.text



@pytest.mark.slow  # waits for the keepalive to find the cut link (10 s)
def test_an_event_paho_sends_again_after_a_dead_link_is_marked_late(broker, node, subscribers, caplog):
    """An event handed to paho while the link to the broker is dead but looks up (its bytes go
    nowhere until the keepalive runs out) is sent again by paho once the link is back: by then it is
    late, and it goes with `delayed_s` as a queued one does. Before, it went as it was, and Home
    Assistant fired a bark from before the outage as heard now. One sent after is not late."""
    link = Link(broker.port)
    sub = subscribers(broker.port, [f"semanticac/{node}/events"])
    sink = make_sink(link.port, node, keepalive=5, late_after=1.0)
    try:
        sink.start()
        wait_until(lambda: sink.connected)
        link.cut()
        sink.event(start(1.0, 1))  # written into the dead link
        wait_until(lambda: not sink.connected, timeout=20)  # the keepalive's answer never came
        time.sleep(1.0)  # the outage outlasts late_after
        link.mend()
        wait_until(lambda: sink.connected)
        sub.wait_for(lambda m: m.topic == f"semanticac/{node}/events")
        sink.event(start(2.0, 2, label="dog_bark"))
        wait_until(lambda: len(sub.topics(f"semanticac/{node}/events")) == 2)
        sent = [m.json() for m in sub.topics(f"semanticac/{node}/events")]
    finally:
        sink.close()
        link.close()
    assert [m["event_id"] for m in sent] == [1, 2]  # the first copy went nowhere; paho's second arrived
    assert 1.0 < sent[0]["delayed_s"] < 30 and "delayed_s" not in sent[1]
    assert "waited for the broker more than 1 s go out with delayed_s" in caplog.text

def test_home_assistant_fires_on_a_start_sent_in_time_only(node):
    """The event entity's value_template, rendered as Home Assistant renders it (Jinja, the
    payload as value_json): a start fires, an end or a late start renders empty (ignored)."""
    jinja2 = pytest.importorskip("jinja2")
    template = make_sink(1883, node).discovery_config()["components"]["events"]["value_template"]

    def rendered(record):
        return jinja2.Environment().from_string(template).render(value=json.dumps(record), value_json=record)

    start_record = {"type": "start", "event_type": "siren"}
    assert json.loads(rendered(start_record)) == start_record
    assert rendered({"type": "end", "event_type": "siren"}) == ""
    assert rendered({**start_record, "delayed_s": 75.2}) == ""


def test_a_broker_that_never_answers_blocks_nothing(node):
    with socket.socket() as silent:  # accepts TCP connections (the kernel does) and never says a word
        silent.bind((HOST, 0))
        silent.listen(8)
        sink = make_sink(silent.getsockname()[1], node, keepalive=5)
        sink.start()
        done = threading.Event()

        def feed():
            for i in range(200):
                sink.window(window(float(i)))
                sink.event(start(float(i), i))
            done.set()

        threading.Thread(target=feed, daemon=True).start()
        assert done.wait(WAIT), "the sink blocked on a broker that does not answer"
        assert not sink.connected
        sink.close()


def test_a_full_queue_drops_the_oldest_and_counts_them(tmp_path, node, subscribers, caplog):
    later = broker_or_skip(tmp_path / "later")
    sink = make_sink(later.port, node, queue_size=5)
    sink.start()
    with caplog.at_level(logging.WARNING, logger="edge.outputs.mqtt"):
        for i in range(1, 13):
            sink.event(start(float(i), i, "siren"))
    assert sink.dropped == 7
    assert "dropping the oldest" in caplog.text and "raise mqtt.queue_size" in caplog.text
    try:
        later.start()
        sub = subscribers(later.port, [f"semanticac/{node}/events"])
        wait_until(lambda: sink.connected)
        wait_until(lambda: len(sub.topics(f"semanticac/{node}/events")) == 5)
        assert [m.json()["event_id"] for m in sub.topics(f"semanticac/{node}/events")] == [8, 9, 10, 11, 12]
        # said from paho's thread as it connects: waited for, not read at once (scheduling decides which comes first)
        wait_until(lambda: "7 messages were dropped while the broker was unreachable" in caplog.text)
        sink.close()
        sub.close()
    finally:
        later.kill()


@pytest.mark.slow  # waits for the broker to end connections twice (4 s)
def test_one_client_id_used_twice_is_named_as_the_likely_cause(broker, node, caplog, subscribers):
    """Two services on one node_id (two devices cloned from one image, or a shell run beside the
    unit): the broker ends each connection when the other connects, which read as "lost the broker
    (Unspecified error)" every second. The log and the Problem sensor say why."""
    first, second = make_sink(broker.port, node), make_sink(broker.port, node)
    sub = subscribers(broker.port, [f"semanticac/{node}/problem"])
    with caplog.at_level(logging.WARNING, logger="edge.outputs.mqtt"):
        first.start()
        second.start()
        try:
            wait_until(lambda: "likely connects with its client id" in caplog.text, timeout=20)
            for sink in (first, second):
                sink.window(window(1.0))  # the audio thread makes it a problem
            said = sub.wait_for(lambda m: m.json()["state"] == "ON", timeout=20).json()["problems"]
        finally:
            first.close()
            second.close()
    assert f"another client likely connects with its client id 'semanticac-{node}'" in caplog.text
    assert [p["code"] for p in said] == ["client_id_taken"] and "own mqtt.node_id" in said[0]["message"]


def test_messages_a_stalled_broker_never_acknowledged_are_counted_at_close(tmp_path, node, caplog):
    """A broker that stalls (a half-open link: the connection looks up until the keepalive runs
    out) takes QoS 1 messages without acknowledging them: at close they are said to be lost."""
    import signal

    stalled = broker_or_skip(tmp_path / "stalled")
    stalled.start()
    try:
        sink = make_sink(stalled.port, node, keepalive=60)
        sink.start()
        wait_until(lambda: sink.connected)
        stalled.process.send_signal(signal.SIGSTOP)
        for i in range(1, 4):
            sink.event(start(float(i), i))
        time.sleep(0.5)  # handed to paho, written to the socket: never acknowledged
        with caplog.at_level(logging.WARNING, logger="edge.outputs.mqtt"):
            sink.close()
        said = re.search(r"closing with 0 messages not sent, 0 dropped and (\d+) not acknowledged", caplog.text)
        assert said and int(said.group(1)) >= 3  # the events (and the states they changed)
    finally:
        stalled.process.send_signal(signal.SIGCONT)
        stalled.kill()


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    """TLS and a password: user `edge` with PASSWORD, anonymous clients refused."""
    folder = tmp_path_factory.mktemp("secure")
    try:
        tls = TlsFiles.make(folder / "tls")
    except MosquittoUnavailable as err:
        pytest.skip(str(err))
    server = broker_or_skip(folder / "broker", users={"edge": PASSWORD, "reader": "reader-pw"}, tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.kill()


PASSWORD = "s3cret-Pa55word"


def test_tls_and_a_password_connect_and_the_password_is_never_published_or_logged(
        secure_broker, node, subscribers, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    ca = str(secure_broker.tls.ca)
    sub = subscribers(secure_broker.port, ["#"], username="reader", password="reader-pw", ca=ca)
    sink = make_sink(secure_broker.port, node, username="edge", password_file=str(password_file),
                     tls={"ca_certs": ca})
    sink.start()
    sub.on(f"semanticac/{node}/availability", "online")
    sink.event(start(0.0, 1))
    sub.on(f"semanticac/{node}/events")
    sink.close()

    monkeypatch.setenv("MQTT_PASSWORD", PASSWORD)
    by_env = make_sink(secure_broker.port, node + "e", username="edge", password_env="MQTT_PASSWORD",
                       tls={"ca_certs": ca})
    by_env.start()
    sub.on(f"semanticac/{node}e/availability", "online")
    by_env.close()

    password_file.write_text("wrong-" + PASSWORD)
    refused = make_sink(secure_broker.port, node + "r", username="edge", password_file=str(password_file),
                        tls={"ca_certs": ca})
    refused.start()
    wait_until(lambda: "refused the connection" in caplog.text)
    assert not refused.connected
    refused.close()
    assert "check mqtt.username" in caplog.text
    sub.sync()
    assert not any(PASSWORD in m.payload for m in sub.messages)
    assert PASSWORD not in caplog.text and PASSWORD not in repr(sink.config)


@pytest.mark.slow  # three connections of a real broker retried
def test_a_broker_that_cannot_be_reached_is_said_with_the_reason(secure_broker, node, tmp_path, caplog):
    """paho's connect-fail callback gets no reason: a wrong CA file read as "cannot reach the broker", and
    plain MQTT to the TLS port said nothing at all while the service ran. Now each says why."""
    from tests.mosquitto import free_port

    caplog.set_level(logging.WARNING)
    other = TlsFiles.make(tmp_path / "other")  # a CA that did not sign the broker's certificate
    closed = free_port()  # nothing listens there
    cases = [
        ({"port": secure_broker.port, "tls": {"ca_certs": str(other.ca)}},
         "TLS: the broker's certificate is not trusted ("),
        ({"port": secure_broker.port}, "ended the connection before accepting it"),
        ({"port": closed}, f"nothing accepts connections on port {closed} there: check mqtt.port"),
    ]
    for k, (config, said) in enumerate(cases):
        caplog.clear()
        sink = make_sink(node=f"{node}u{k}", **{"port": config.pop("port")}, **config)
        sink.start()
        try:
            wait_until(lambda: said in caplog.text)
        finally:
            sink.close()
        assert not sink.connected
        if "tls" not in config and k == 1:
            assert "if that port is its TLS port (8883), set mqtt.tls" in caplog.text, caplog.text
    with pytest.raises(ConfigError, match="not a URL"):
        parse_section(MqttConfig, {"enabled": True, "host": "mqtt://127.0.0.1"}, "mqtt")


@pytest.mark.slow  # a broker started for it (and openssl)
@pytest.mark.parametrize("synchronised", [False, True])
def test_a_certificate_out_of_its_dates_is_said_with_the_clock_not_the_ca_file(tmp_path, monkeypatch, synchronised):
    """At a boot without a real-time clock, the broker's certificate reads as not yet valid (or expired, a
    clock ahead) until NTP sets the clock; the log sent a person to the CA file. A real broker whose
    certificate expired a day ago."""
    from edge.outputs.mqtt import tls_context, unreachable_reason

    files = TlsFiles.make(tmp_path / "tls", days=-1)
    server = broker_or_skip(tmp_path / "broker", tls=files)
    server.start()
    monkeypatch.setattr(mqtt_module, "clock_synchronised", lambda: synchronised)
    try:
        said = unreachable_reason(HOST, server.port, tls_context(MqttTls(ca_certs=str(files.ca))))
    finally:
        server.kill()
    assert said.startswith("TLS: the broker's certificate has expired: this machine's clock reads "), said
    assert "ca_certs" not in said
    assert ("the kernel says it is not synchronised" in said) != synchronised, said
    assert ("openssl x509 -noout -dates" in said) == synchronised, said


def test_unusable_tls_files_and_passwords_fail_at_start(tmp_path, monkeypatch):
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        ({"tls": {"ca_certs": str(tmp_path / "missing.pem")}}, "mqtt.tls.ca_certs", "cannot be read"),
        ({"tls": {"ca_certs": str(garbage)}}, "mqtt.tls.ca_certs", "no usable CA certificate"),
        ({"tls": {"certfile": str(garbage)}}, "mqtt.tls.certfile", "not a usable certificate"),
        ({"username": "u", "password_file": str(tmp_path / "nope")}, "mqtt.password_file", "cannot be read"),
        ({"username": "u", "password_env": "SEMANTICAC_TEST_UNSET"}, "mqtt.password_env", "unset or empty"),
    ]
    monkeypatch.delenv("SEMANTICAC_TEST_UNSET", raising=False)
    for config, key, text in cases:
        sink = make_sink(free_port(), "x", **config)
        with pytest.raises(ConfigError) as info:
            sink.start()
        assert info.value.key == key and text in str(info.value), config
        sink.close()  # nothing was started: a no-op


@pytest.mark.parametrize("mapping, key", [
    ({"username": "u", "password_file": "hunter2"}, "mqtt.password_file"),
    ({"username": "u", "password_env": "hunter2"}, "mqtt.password_env"),
    ({"password_env": "Tr0ub4dor&3"}, "mqtt.password_env"),
    ({"username": "u", "password_file": "/a", "password_env": "hunter2"}, "mqtt.password_env"),
])
def test_a_password_typed_where_its_source_goes_is_not_shown(mapping, key, tmp_path, monkeypatch):
    """Errors quote a value, and check-config's and a start's go to the journal and to MQTT's retained
    problem: a password typed in password_file or password_env (instead of the file's path or the
    variable's name) was printed in full. It is shown by its length only; a path or a name as it is."""
    monkeypatch.chdir(tmp_path)  # no file "hunter2" here
    monkeypatch.delenv("hunter2", raising=False)
    secret = mapping.get("password_env", mapping.get("password_file"))
    with pytest.raises(ConfigError) as info:
        make_sink(free_port(), "x", **mapping).start()
    said = str(info.value)
    assert info.value.key == key and secret not in said and f"its {len(secret)} characters not shown" in said, said
    with pytest.raises(ConfigError, match="mqtt.password_env 'MQTT_PASSWORD_UNSET': that environment variable"):
        make_sink(free_port(), "x", username="u", password_env="MQTT_PASSWORD_UNSET").start()


CHILD = """
import sys, time
from edge.outputs import mqtt as mqtt_module
from edge.outputs.mqtt import MqttConfig, MqttSink
config = MqttConfig(enabled=True, host="127.0.0.1", port=int(sys.argv[1]), node_id=sys.argv[2])
sink = MqttSink(config, ["siren"], node_name="child", model="m", sw_version="0")
sink.start()
while not sink.connected:
    time.sleep(0.01)
print("connected", flush=True)
time.sleep(60)
"""


def test_kill_9_leaves_the_last_will_offline(broker, node, subscribers):
    sub = subscribers(broker.port, [f"semanticac/{node}/availability"])
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(broker.port), node], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "connected"
        sub.on(f"semanticac/{node}/availability", "online")
        child.kill()
        child.wait()
        sub.on(f"semanticac/{node}/availability", "offline")
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
