"""The service config: every key checked and named in errors, --set, the shipped example, exit 78."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from click.testing import CliRunner

import edge.cli
from edge.errors import ConfigError
from edge.labels.labelset import parse_label_set, resolve_label_set
from edge.service.config import (
    ServiceConfig,
    apply_overrides,
    example_path,
    example_text,
    load_config,
    parse_config,
    state_dir,
)
from edge.service.serve import with_thresholds

MINIMAL = {"schema_version": 1, "labels": {"set": "urban"}}


def config(**sections) -> ServiceConfig:
    return parse_config({**MINIMAL, **sections})


@pytest.mark.parametrize("raw, key, text", [
    ({"audio": {"device": 2}}, "audio.device", "is an index"),
    ({"audio": {"device": "3"}}, "audio.device", "(part of) the device's name"),
    ({"audio": {"input": "-"}}, "audio.input", "not allowed in a service"),
    ({"audio": {"device": ""}}, "audio.device", "'' is not allowed: use (part of) the microphone's name"),  # any
    ({"audio": {"device": True}}, "audio.device", "True is not allowed"),
    ({"schema_version": True}, "schema_version", "schema_version True is not allowed: use 1"),  # True == 1
    ({"mqtt": {"host": "broker:1883"}}, "mqtt.host", "the port goes in mqtt.port"),
    ({"audio": {"input": "a.wav", "device": "USB"}}, "audio.device", "leave one of them out"),
    ({"audio": {"fast": "yes"}}, "audio.fast", "true or false"),
    ({"audio": {"imput": "a.wav"}}, "audio.imput", "did you mean `input`?"),
    ({"model": {"backend": "cuda"}}, "model.backend", "model.backend 'cuda' is not allowed: use one of auto"),
    ({"model": {"max_batch": 0}}, "model.max_batch", "a whole number >= 1"),
    ({"model": {"threads": 1.5}}, "model.threads", "a whole number"),
    ({"labels": {"set": None}}, "labels.set", "a shipped label set"),
    ({"labels": {"set": "urban", "thresholds": {"siren": 1.5}}}, "labels.thresholds.siren", "a score in (0, 1]"),
    ({"labels": {"set": "urban", "thresholds": {"siren": "high"}}}, "labels.thresholds.siren", "a number"),
    ({"listen": {"hop": 0}}, "listen.hop", "listen.hop 0.0 is not allowed: use a finite number of seconds > 0"),
    ({"listen": {"release": 1.5}}, "listen.release", "a ratio in (0, 1]"),
    ({"listen": {"min_level": 3}}, "listen.min_level", "dBFS <= 0"),
    ({"listen": {"agree": 2}}, "listen.agree", "a score in [0, 1] (0: events need no agreement)"),
    ({"listen": {"top_k": "3"}}, "listen.top_k", "a whole number"),
    ({"supervision": {"stale_seconds": -1}}, "supervision.stale_seconds", "> 0"),
    ({"supervision": {"reconect": True}}, "supervision.reconect", "did you mean `reconnect`?"),
    ({"supervision": {"reconnect": False, "backoff_max": 5}}, "supervision.backoff_max",
     "supervision.backoff_max applies with supervision.reconnect only"),
    ({"audio": {"input": "a.wav"}, "supervision": {"stale_seconds": 3}}, "supervision.stale_seconds",
     "applies to the microphone (no audio.input) only"),
    ({"service": {"log_level": "loud"}}, "service.log_level", "one of debug, info, warning, error"),
    ({"systemd": {"status_interval": 0}}, "systemd.status_interval", "seconds > 0"),
    ({"systemd": {"extend_timeout": float("inf")}}, "systemd.extend_timeout", "inf is not allowed"),
    ({"metrics": {"port": 70000}}, "metrics.port", "a TCP port"),
    ({"event_log": {"max_events": 0}}, "event_log.max_events", "from 1 to 1000000000"),
    # "a huge number for no limit" overflowed SQLite's integers and Python's dates: a crash at each start
    ({"event_log": {"max_events": 2**63}}, "event_log.max_events", "from 1 to 1000000000"),
    ({"event_log": {"max_age_days": 1e300}}, "event_log.max_age_days", "<= 36500"),
    ({"listen": {"smooth": 10**20}}, "listen.smooth", "windows averaged before event decisions"),
    ({"mqtt": {"qos": 3}}, "mqtt.qos", "0, 1 or 2"),
    ({"mqtt": {"tls": {"insecur": True}}}, "mqtt.tls.insecur", "did you mean `insecure`?"),
    ({"clips": {"pre_roll": -1}}, "clips.pre_roll", "from 0 to 60"),
    ({"listn": {"hop": 1}}, "listn", "did you mean `listen`?"),
    ({"fast": True}, "fast", "did you mean `audio.fast`? (indent it under its section)"),  # lost its indent
    ({"enabled": True}, "enabled", "did you mean `mqtt.enabled` or `metrics.enabled` or `event_log.enabled` or"),
    ({"labels": {"set": "urban", "thresholds": [0.5]}}, "labels.thresholds", "a mapping of names to numbers"),
    ({"labels": {"set": "urban", "thresholds": None, "siren": 0.9}}, "labels.thresholds",  # entries not indented
     "on the lines below `thresholds:` and indented deeper than it"),
    ({"schema_version": 2}, "schema_version", "use 1"),
    ({"labels": {"set": True}}, "labels.set", "(YAML reads yes, no, on, off, true and false as true or false"),
    ({"labels": {"set": "urban", "thresholds": {"siren": "70%"}}}, "labels.thresholds.siren",
     "use a number (write a share as a number: 0.7, not 70%)"),
    ({"listen": [1, 2]}, "listen", "listen must be a mapping"),
    # a key under a section not its own: a typo's "did you mean" named nothing, or the section's key list
    ({"audio": {"hop": 0.5}}, "audio.hop", "audio.hop is not a setting of audio: it is `listen.hop` (move it under"),
    ({"mqtt": {"min_duration": 2}}, "mqtt.min_duration", "it is `listen.min_duration`"),
    ({"listen": {"fast": True}}, "listen.fast", "it is `audio.fast`"),
    # a unit after the number (and event_log.path naming a folder: a file was made at the folder's name)
    ({"listen": {"hop": "500ms"}}, "listen.hop", "use a number (write a plain number in the key's own unit, as its "
     "name or comment says, without 'ms': 500 ms for a key in seconds is 0.5)"),
    ({"clips": {"max_megabytes": "10MB"}}, "clips.max_megabytes", "without 'MB'"),
    ({"event_log": {"path": "/var/log/sound/"}}, "event_log.path", "not a folder's: e.g. /var/log/sound/events.sqlite"),
])
def test_errors_name_the_dotted_key_the_value_and_the_fix(raw, key, text):
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, **raw})
    assert info.value.key == key and key in str(info.value) and text in str(info.value), str(info.value)


def test_a_config_without_schema_version_says_which_to_write():
    with pytest.raises(ConfigError, match="schema_version missing is not allowed: use 1"):
        parse_config({"labels": {"set": "urban"}})


def test_sections_map_onto_the_listen_options():
    got = config(audio={"device": "USB Audio"}, model={"backend": "onnxruntime", "threads": 1},
                 listen={"hop": 0.5, "window": 2, "min_level": -60, "agree": 0.3}, supervision={"backoff_max": 10})
    o = got.options
    assert (o.labels, o.device, o.backend, o.threads, o.hop, o.window, o.min_level, o.agree, o.backoff_max) == (
        "urban", "USB Audio", "onnxruntime", 1, 0.5, 2.0, -60.0, 0.3, 10.0)


def test_a_service_reopens_a_lost_microphone_unless_told_not_to():
    assert config().options.reconnect is True
    assert config(supervision={"reconnect": False}).options.reconnect is False
    assert config(audio={"input": "a.wav"}).options.reconnect is False  # a file is not reopened


def test_a_service_holds_events_30_s_unless_told_otherwise():
    """A service's events are notifications: one per episode of a sound (a dog barking on and off),
    where `listen` itself holds none. The effective config says which is in force."""
    assert config().options.hold == 30.0 and config().to_dict()["listen"]["hold"] == 30.0
    assert config(listen={"hold": 0}).options.hold == 0.0
    with pytest.raises(ConfigError, match=r"listen.hold -5.0 is not allowed: use a finite number of seconds >= 0"):
        config(listen={"hold": -5})


def test_set_overrides_any_key_with_a_yaml_value():
    raw = {**MINIMAL, "listen": {"hop": 1.0}}
    got = apply_overrides(raw, ["listen.hop=0.25", "labels.thresholds.siren=0.7", "metrics.enabled=false",
                                "audio.device=USB Audio", "labels.thresholds.alarm.v2=0.8"])
    assert got["listen"]["hop"] == 0.25
    assert got["labels"] == {"set": "urban", "thresholds": {"siren": 0.7, "alarm.v2": 0.8}}  # a label may hold a dot
    assert got["metrics"] == {"enabled": False} and got["audio"]["device"] == "USB Audio"
    assert raw["listen"]["hop"] == 1.0  # the file's document is not changed
    assert parse_config(got).options.hop == 0.25


@pytest.mark.parametrize("item, text", [
    ("listen.hop", "use --set section.key=value"),
    ("listen..hop=1", "use --set section.key=value"),
    ("labels.set.name=x", "labels.set is 'urban', not a section"),
    ("listen.hop=[1", "not valid YAML"),
    ("labels.set=2026-02-30", "the value '2026-02-30' is not valid YAML (day is out of range for month)"),
])
def test_bad_set_items_say_how_to_write_them(item, text):
    with pytest.raises(ConfigError, match=re.escape(text)):
        apply_overrides(MINIMAL, [item])


def test_the_shipped_example_documents_every_key_with_its_default():
    """Every key of every section is in the example (or commented there); uncommented values
    are the defaults, except the label set it names."""
    text = example_text()
    effective = load_config(example_path()).to_dict()
    blocks = re.split(r"^(?=\w)", text, flags=re.M)
    by_section = {b.split(":", 1)[0]: b for b in blocks if b.strip() and not b.startswith("#")}
    for section, keys in effective.items():
        assert section in by_section, f"section {section} is not in {example_path()}"
        for key in keys if isinstance(keys, dict) else ():
            assert re.search(rf"^\s+#?\s*{key}:", by_section[section], flags=re.M), f"{section}.{key} undocumented"
    defaults = parse_config({**MINIMAL, "labels": {"set": "urban"}}).to_dict()
    assert effective == defaults


def test_check_config_passes_the_shipped_example_and_prints_the_effective_config():
    result = CliRunner().invoke(edge.cli.main, ["check-config", str(example_path()), "--set", "listen.hop=0.5"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"# {example_path()}: OK")
    printed = yaml.safe_load(result.output)
    assert printed["listen"]["hop"] == 0.5
    assert printed == load_config(example_path(), ["listen.hop=0.5"]).to_dict()


def test_check_config_warns_of_a_device_name_that_matches_none_or_several(monkeypatch, tmp_path):
    """The service starts anyway and keeps trying (a USB microphone may be plugged in later), so a
    warning, not an error; a file input needs no device."""
    import edge.capture.sources as sources
    from edge.errors import AudioError

    def ambiguous(device=None, rescan=False):
        raise AudioError(f"input device name {device!r} is ambiguous, it matches 0: 'pulse'; 1: 'default'")

    monkeypatch.setattr(sources, "find_input_device", ambiguous)
    args = ["check-config", str(example_path()), "--set", "audio.device=u"]
    result = CliRunner().invoke(edge.cli.main, args)
    assert result.exit_code == 0, result.output
    assert "# warning: audio.device: input device name 'u' is ambiguous" in result.output
    assert "keeps trying to open it" in result.output
    stops = CliRunner().invoke(edge.cli.main, [*args, "--set", "supervision.reconnect=false"]).output
    assert "keeps trying" not in stops and "supervision.reconnect: false the service stops at its start" in stops
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(1600, dtype=np.float32), 16000)  # opened, never played
    result = CliRunner().invoke(edge.cli.main, ["check-config", str(example_path()), "--set",
                                                f"audio.input={clip}"])
    assert result.exit_code == 0 and "audio.device" not in result.output.split("schema_version")[0]
    monkeypatch.setattr(sources, "find_input_device", lambda device=None, rescan=False: None)
    assert "# warning: audio.device" not in CliRunner().invoke(edge.cli.main, args).output


def test_check_config_warns_when_portaudio_is_missing_as_a_start_would_stop(monkeypatch):
    """A box without libportaudio2: check-config said OK, then the service stopped at its start with
    exit 78, which the unit does not restart. sounddevice is imported again with no library to find."""
    import ctypes.util
    import sys

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    result = CliRunner().invoke(edge.cli.main, ["check-config", str(example_path())])
    assert result.exit_code == 0, result.output
    assert re.search(r"^# warning: audio: the microphone needs the PortAudio library \(PortAudio library not found\): "
                     r"apt-get install libportaudio2; without it, on this machine, the service stops at its start "
                     r"\(exit 78\)$", result.output, re.M), result.output


def test_check_config_warns_of_relative_paths(tmp_path, monkeypatch):
    """Checked from the config's own folder a relative path is found; the service runs from / and
    finds nothing there: check-config says so, and where each would be looked for."""
    monkeypatch.chdir(tmp_path)
    sf.write(tmp_path / "clip.wav", np.zeros(1600, dtype=np.float32), 16000)  # opened, never played
    site = tmp_path / "site.yaml"
    from edge.labels.labelset import shipped_label_sets

    site.write_text(shipped_label_sets()["urban"].read_text())
    args = ["check-config", str(example_path()), "--set", "audio.input=clip.wav", "--set", "labels.set=./site.yaml",
            "--set", "event_log.path=/var/log/events.sqlite"]
    result = CliRunner().invoke(edge.cli.main, args)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("# warning:")]
    assert notes == [
        f"# warning: audio.input 'clip.wav' is a relative path: it is taken from the working directory (here "
        f"{tmp_path / 'clip.wav'}; under systemd /clip.wav): give it as an absolute path",
        f"# warning: labels.set './site.yaml' is a relative path: it is taken from the working directory (here "
        f"{tmp_path / 'site.yaml'}; under systemd /site.yaml): give it as an absolute path",
    ]  # not the absolute event log, nor a shipped set by name
    home = CliRunner().invoke(edge.cli.main, ["check-config", str(example_path()), "--set",
                                              "event_log.path=/home/ann/events.sqlite"])
    assert "# warning: event_log.path '/home/ann/events.sqlite' is in a home folder" in home.output


def test_every_path_key_reads_a_leading_tilde_as_the_home_folder(tmp_path, monkeypatch):
    """labels.set, event_log.path, clips.dir and state_dir read ~ as home; audio.input, model.bundle,
    mqtt.password_file and the TLS files did not ('~/x.wav is not a file', the password file unread)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    parsed = config(audio={"input": "~/street.wav"}, model={"bundle": "~/bundle"},
                    mqtt={"username": "u", "password_file": "~/pw", "tls": {"ca_certs": "~/ca.pem"}})
    assert parsed.options.input == str(tmp_path / "street.wav") and parsed.options.bundle == str(tmp_path / "bundle")
    assert parsed.outputs["mqtt"].password_file == str(tmp_path / "pw")
    assert parsed.outputs["mqtt"].tls.ca_certs == str(tmp_path / "ca.pem")


def test_check_config_refuses_a_metrics_port_below_1024_even_run_as_root():
    """`sudo check-config` with metrics.port 80 said OK (root may bind it), and the service, under a
    dynamic user with no capability, then exited 78 at its start."""
    result = CliRunner().invoke(edge.cli.main, ["check-config", str(example_path()), "--set", "metrics.port=80"])
    assert result.exit_code == 78, result.output
    assert "metrics.port 80: ports below 1024 need a privilege the service does not have" in result.output
    off = ["check-config", str(example_path()), "--set", "metrics.port=80", "--set", "metrics.enabled=false"]
    assert CliRunner().invoke(edge.cli.main, off).exit_code == 0


def test_exit_78_for_a_bad_config_a_missing_file_and_a_bad_bundle(tmp_path, demo_bundle):
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(16000, dtype=np.float32), 16000)
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nlabels: {set: urban}\nlisten: {hop: -1}\n")
    empty_bundle = tmp_path / "bundle"
    empty_bundle.mkdir()
    twins = tmp_path / "twins.yaml"
    twins.write_text("name: twins\nlabels: [dog_bark, dog-bark]\n")
    long = tmp_path / "long.yaml"
    long.write_text("name: long\nlabels:\n  - name: machine\n    prompts: [" + "a loud machine " * 50 + "]\n")
    no_vocabulary = tmp_path / "no_vocabulary"  # the start loads it: exit 78, which the unit does not restart
    shutil.copytree(demo_bundle.path, no_vocabulary)
    (no_vocabulary / "vocabulary.onnx").unlink()
    runs = {
        "bad value": (["check-config", str(bad)], "listen.hop -1.0 is not allowed"),
        "missing file": (["check-config", str(tmp_path / "none.yaml")], "not found: write one with"),
        "bad bundle": (["check-config", str(example_path()), "--set", f"model.bundle={empty_bundle}"],
                       "model.bundle"),
        "no label set": (["check-config", str(example_path()), "--set", "labels.set=./nope.yaml"], "labels.set"),
        "no audio file": (["check-config", str(example_path()), "--set", f"audio.input={tmp_path}/none.wav"],
                          "audio.input"),
        # a file that is not audio: the start failed with exit 1, which systemd restarts, for nothing
        "a file that is not audio": (["check-config", str(example_path()), "--set", f"audio.input={long}"],
                                     "audio.input: cannot read audio file"),
        "serve, a file that is not audio": (["serve", "--config", str(example_path()), "--set", f"audio.input={long}",
                                             "--state-dir", str(tmp_path / "state")], "not an audio file"),
        # clips keep the audio of min_duration and more: a million seconds was 60 GB and a crash at each start
        "clips behind a long min_duration": (["check-config", str(example_path()), "--set", "clips.enabled=true",
                                              "--set", "listen.min_duration=1000000"],
                                             "so the recorder would keep 1000"),
        # and the hold: a clip open at its limit waits for its end that long
        "clips behind a long hold": (["check-config", str(example_path()), "--set", "clips.enabled=true",
                                      "--set", "listen.hold=10000"], "its end 10000 s after the score fell"),
        "serve, clips behind a long min_duration": (["serve", "--config", str(example_path()), "--set",
                                                     "clips.enabled=true", "--set", "listen.min_duration=1000000",
                                                     "--set", f"audio.input={clip}", "--state-dir",
                                                     str(tmp_path / "state")], "lower listen.min_duration"),
        # serve would refuse it at start (exit 78): check-config must not say OK to it
        "no password file": (["check-config", str(example_path()), "--set", "mqtt.enabled=true", "--set",
                              "mqtt.username=u", "--set", f"mqtt.password_file={tmp_path}/pw"],
                             f"mqtt.password_file '{tmp_path}/pw' cannot be read"),
        "labels sharing an MQTT topic": (["check-config", str(example_path()), "--set", "mqtt.enabled=true",
                                          "--set", f"labels.set={twins}"], "cannot be told apart in MQTT topics"),
        "no CA file": (["check-config", str(example_path()), "--set", "mqtt.enabled=true", "--set",
                        f"mqtt.tls={{ca_certs: {tmp_path}/ca.pem}}"], "mqtt.tls.ca_certs"),
        # a reload (SIGHUP) that checked out started again in place into such a start's exit 78, for good
        "a prompt too long for the text tower": (["check-config", str(example_path()), "--set", f"labels.set={long}"],
                                                 "labels.set"),
        "tensorrt without TensorRT or an engine": (["check-config", str(example_path()), "--set",
                                                    "model.backend=tensorrt"], "model.backend 'tensorrt'"),
        "a bundle without its vocabulary graph": (["check-config", str(example_path()), "--set",
                                                   f"model.bundle={no_vocabulary}"],
                                                  "model.bundle: bundle " + str(no_vocabulary)
                                                  + ": the vocabulary graph vocabulary.onnx is missing"),
        "serve, bad value": (["serve", "--config", str(bad)], "listen.hop"),
        # a folder for the config was click's usage error, exit 2: systemd restarts that, for nothing
        "a folder for the config": (["check-config", str(tmp_path)], f"config file {tmp_path} is a folder: name the "
                                    f"config file itself, e.g. {tmp_path / 'bad.yaml'}"),
        "serve, a folder for the config": (["serve", "--config", str(tmp_path)], "is a folder"),
        "serve, bad bundle": (["serve", "--config", str(example_path()), "--set", f"model.bundle={empty_bundle}",
                               "--state-dir", str(tmp_path / "state")], "has no model.json"),
    }
    for what, (args, text) in runs.items():
        result = CliRunner().invoke(edge.cli.main, args)
        assert result.exit_code == 78, (what, result.output)
        assert text in result.output, (what, result.output)


def test_the_reload_check_refuses_what_a_start_refuses(tmp_path):
    """A SIGHUP whose check passes starts the service again in place, and a start that then fails
    exits 78, which the unit does not restart: so the check (serve.checked) refuses a prompt the
    text tower cannot read and a backend that cannot run, as a start does."""
    from edge.service.serve import checked

    long = tmp_path / "long.yaml"
    long.write_text("name: long\nlabels:\n  - name: machine\n    prompts: [" + "a loud machine " * 50 + "]\n")
    with pytest.raises(ConfigError, match="is 152 tokens; the text tower reads at most 128") as err:
        checked(str(example_path()), [f"labels.set={long}"])
    assert err.value.key == "labels.set"
    with pytest.raises(ConfigError, match="model.backend 'tensorrt': ") as err:
        checked(str(example_path()), ["model.backend=tensorrt"])
    assert err.value.key == "model.backend"
    config, found = checked(str(example_path()), ["model.backend=auto"])  # auto falls back to ONNX Runtime
    assert found.label_set.name == "urban"


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path):
    """YAML keeps the last of two: an `mqtt:` section added at the end of the example would
    silently undo the `enabled: true` set in the first."""
    path = tmp_path / "c.yaml"
    path.write_text("schema_version: 1\nlabels: {set: urban}\nmqtt:\n  enabled: true\nlisten: {hop: 0.5}\n"
                    "mqtt:\n  host: 192.168.1.10\n")
    with pytest.raises(ConfigError, match=r"c.yaml:6: mqtt appears twice \(lines 3 and 6\)") as err:
        load_config(path)
    assert err.value.key == "mqtt"
    path.write_text("schema_version: 1\nlabels:\n  set: urban\n  thresholds: {siren: 0.6, siren: 0.7}\n")
    with pytest.raises(ConfigError, match=r"labels.thresholds.siren appears twice \(lines 4 and 4\)"):
        load_config(path)
    result = CliRunner().invoke(edge.cli.main, ["check-config", str(path)])
    assert result.exit_code == 78 and "appears twice" in result.output


def test_the_log_level_of_the_config_quietens_and_raises_and_minus_v_raises_it_more():
    import logging

    from edge.cli import apply_log_level

    root = logging.getLogger()
    before = root.level
    try:
        for cli, config_level, expected in [(logging.WARNING, "error", logging.ERROR),  # quieter than the default
                                            (logging.WARNING, "debug", logging.DEBUG),
                                            (logging.INFO, "error", logging.INFO),  # -v asked for more
                                            (logging.DEBUG, "info", logging.DEBUG)]:
            root.setLevel(cli)
            apply_log_level(config_level)
            assert root.level == expected, (cli, config_level)
    finally:
        root.setLevel(before)


def test_an_empty_config_or_one_not_in_utf8_says_so(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only comments\n")
    with pytest.raises(ConfigError, match="a service config is a mapping of sections .*, but it is empty"):
        load_config(empty)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("schema_version: 1\n# Küche\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: line 2 is not UTF-8 \(byte 0xfc\)"):
        load_config(latin1)


def test_a_file_that_is_not_yaml_names_its_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("schema_version: 1\nlisten:\n  hop: [1\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:3: not valid YAML: .*: a \[ is not closed with \]"):
        load_config(path)
    path.write_text("schema_version: 1\nlabels:\n  set: urban\n  description: [2026-02-30]\n")  # a traceback before
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:4: '2026-02-30': YAML cannot read it \(day is out "
                                          r"of range for month\): quote it"):
        load_config(path)


def test_thresholds_override_the_label_sets_and_unknown_labels_list_the_set():
    urban = resolve_label_set("urban")
    changed = with_thresholds(urban, {"siren": 0.9})
    assert {l.name: l.threshold for l in changed.labels}["siren"] == 0.9
    # a threshold the config gives is the label's own: no "first guess" note for it in a fitted set
    from edge.labels.labelset import parse_label_set

    bare = with_thresholds(parse_label_set("name: x\nlabels: [siren, dog_bark]\n"), {"siren": 0.9})
    assert [(l.name, l.own_threshold) for l in bare.labels] == [("siren", True), ("dog_bark", False)]
    assert [l.threshold for l in changed.labels if l.name != "siren"] == [l.threshold for l in urban.labels
                                                                         if l.name != "siren"]
    with pytest.raises(ConfigError) as info:
        with_thresholds(urban, {"sirene": 0.5})
    assert info.value.key == "labels.thresholds.sirene" and "'sirene'" in str(info.value)
    assert "did you mean 'siren'? its labels are: air_conditioner, car_horn" in str(info.value)
    # names are compared as the label set compares them: `Dog bark` is dog_bark
    assert {l.name: l.threshold for l in with_thresholds(urban, {"Dog bark": 0.4}).labels}["dog_bark"] == 0.4
    with pytest.raises(ConfigError, match="label 'dog_bark' is given twice"):
        with_thresholds(urban, {"dog_bark": 0.4, "dog bark": 0.6})


@pytest.mark.parametrize("spec", ["urban", "esc50", "custom"])
def test_the_label_set_with_overrides_keeps_its_identity(spec):
    label_set = resolve_label_set(spec) if spec != "custom" else parse_label_set(
        "name: mine\nprompt: 'the sound of {label}'\ncalibration: {temperature: 1.3}\ndescription: d\nlabels:\n"
        "  - {name: siren, prompts: ['a wailing siren'], group: traffic, bias: -0.4, threshold: 0.6}\n  - dog_bark\n")
    changed = with_thresholds(label_set, {label_set.names[0]: 0.42})
    # the set listen is given: only the threshold moved, so its embeddings (labels_sha256) stay valid
    assert changed.labels[0].threshold == 0.42 and changed.labels[1:] == label_set.labels[1:]
    assert (changed.name, changed.prompt, changed.temperature, changed.sha256) == (
        label_set.name, label_set.prompt, label_set.temperature, label_set.sha256)


def test_the_state_folder_systemd_gives_wins(tmp_path):
    cfg = config(service={"state_dir": str(tmp_path / "cfg")})
    systemd = {"STATE_DIRECTORY": "/var/lib/semanticac-edge:/var/lib/other"}  # several: the first
    assert state_dir(cfg, override="/flag", environ=systemd).as_posix() == "/var/lib/semanticac-edge"
    assert state_dir(cfg, override=str(tmp_path / "flag"), environ={}) == tmp_path / "flag"
    assert state_dir(cfg, environ={}) == tmp_path / "cfg"
    assert state_dir(config(), environ={"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "semanticac-edge"


@pytest.mark.slow  # a serve process
def test_a_reload_starts_from_the_config_it_checked_not_one_saved_since(tmp_path, caplog):
    """SIGHUP checked the file, then the process it became read it again: one saved in between (hop: 0)
    started unchecked and exited 78, which the unit does not restart. The checked text is handed over
    ($SEMANTICAC_CHECKED_CONFIG) and used, a file changed since is said; another config's is ignored.
    So are the label-set files the check read: a label set is what a site edits most."""
    from edge.cli import checked_handover, handover

    site = tmp_path / "site.yaml"
    good, bad = example_path().read_text(), example_path().read_text().replace("hop: 1.0", "hop: 0")
    good = good.replace("set: urban", f"set: {site}")
    good_site = "name: site\nextends: urban\nlabels:\n  - {name: siren, threshold: 0.8}\n"
    path = tmp_path / "service.yaml"
    path.write_text(bad)
    site.write_text(good_site.replace("0.8", "8"))
    handed = handover(str(path), good, {os.path.abspath(site): good_site})
    with caplog.at_level(logging.WARNING, logger="edge.cli"):
        assert checked_handover(handed, str(path)) == (good, {os.path.abspath(site): good_site})
    assert "changed after the reload checked it: the service starts with the config as checked" in caplog.text
    assert checked_handover(handed, str(tmp_path / "other.yaml")) == checked_handover(None, str(path)) == (None, {})
    # a set of 521 AudioSet classes with prompts is over 100 KB: compressed, it fits the environment (128 KiB a
    # string); one that does not fit even then is said, and read again by the new run
    big = {str(site): good_site + "# a comment line of a long label set\n" * 5000}
    packed = handover(str(path), good, big)
    assert packed.startswith("z:") and len(packed) < 100_000 and checked_handover(packed, str(path)) == (good, big)
    noise = {str(site): good_site + "# " + os.urandom(150_000).hex() + "\n"}
    with caplog.at_level(logging.WARNING, logger="edge.cli"):
        assert checked_handover(handover(str(path), good, noise), str(path)) == (good, {})
    assert "the label-set files are too long to hand over" in caplog.text
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(16000, np.float32), 16000)
    env = {**os.environ, "SEMANTICAC_CHECKED_CONFIG": handed, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    run = subprocess.run([str(Path(sys.executable).with_name("semanticac-edge")), "serve", "--config", str(path),
                          "--set", f"audio.input={clip}", "--set", "audio.fast=true", "--set", "metrics.enabled=false",
                          "--state-dir", str(tmp_path / "state")], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr  # the files' hop 0 and threshold 8 would each have been exit 78
    assert f"label set {site} changed after the reload checked it" in run.stderr


def test_a_reload_refuses_a_metrics_port_or_a_state_folder_that_another_program_holds(tmp_path):
    """checked() passes them while this run holds its own: the started-again process then exited 78."""
    import socket

    from edge.service.config import load_config
    from edge.service.serve import _take_lock, reload_problems

    running = load_config(example_path())
    state = tmp_path / "state"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        moved = load_config(example_path(), [f"metrics.port={port}"])
        with pytest.raises(ConfigError, match=f"metrics.port {port}: cannot listen on 127.0.0.1:{port}"):
            reload_problems(running, moved, state, state)
        reload_problems(moved, moved, state, state)  # its own port: this run holds it, nothing to check
    other = tmp_path / "other"
    held = _take_lock(other)  # another serve's
    try:
        with pytest.raises(ConfigError, match=f"state folder {other} is in use by another serve"):
            reload_problems(running, running, state, other)
    finally:
        os.close(held)
    reload_problems(running, running, state, other)  # free now
    from edge.outputs.eventlog import lock_event_log

    shared = tmp_path / "shared.sqlite"
    moved = load_config(example_path(), [f"event_log.path={shared}"])
    held = lock_event_log(shared)  # another serve writes it
    try:
        with pytest.raises(ConfigError, match=f"event_log.path {shared} is in use by another serve"):
            reload_problems(running, moved, state, state)
        reload_problems(moved, moved, state, state)  # its own: this run holds it
    finally:
        os.close(held)


def test_a_stop_ends_a_reload_check_that_embeds_a_new_label_set(tmp_path, monkeypatch):
    """SIGTERM while a reload's check embedded a new set: the stop waited 5 s for the check's thread,
    then the interpreter ended under ONNX Runtime's feet (abort, exit 134)."""
    import threading

    from edge.labels.embeddings import Stopped
    from edge.service.serve import checked

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    labels = tmp_path / "big.yaml"
    labels.write_text("name: big\nlabels: [" + ", ".join(f"sound number {i}" for i in range(40)) + "]\n")
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        checked(str(example_path()), [f"labels.set={labels}"], stop=stop)


def test_check_config_warns_of_what_shows_the_household_to_others(tmp_path):
    """Each valid, each said nowhere (a privacy audit): a password or key file every user may read, a metrics
    address beyond this machine (/stream: a live feed of what is heard, no password), a broker's certificate
    not checked, a password sent to another machine without TLS. None of them for the shipped example."""
    password, key, cert = tmp_path / "mqtt.pass", tmp_path / "client.key", tmp_path / "client.pem"
    password.write_text("secret\n")
    password.chmod(0o644)
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(1600, dtype=np.float32), 16000)  # a file input: no device to warn of

    def warnings(*sets):
        sets = (f"audio.input={clip}", *sets)
        args = ["check-config", str(example_path())] + [a for s in sets for a in ("--set", s)]
        result = CliRunner().invoke(edge.cli.main, args)
        assert result.exit_code == 0, result.output
        return [line for line in result.output.splitlines() if line.startswith("# warning:")]

    assert warnings() == []
    said = warnings("mqtt.enabled=true", "mqtt.host=broker.lan", "mqtt.username=edge",
                    f"mqtt.password_file={password}", "metrics.host=0.0.0.0")
    assert any(f"mqtt.password_file '{password}' may be read by every user of this machine (mode 0644)" in w
               and "LoadCredential=" in w for w in said), said
    assert any("username and password go to broker.lan unencrypted (no mqtt.tls)" in w for w in said), said
    assert any("metrics.host '0.0.0.0'" in w and "/stream" in w and "no password" in w for w in said), said
    assert len(said) == 3, said
    password.chmod(0o600)
    assert warnings("mqtt.enabled=true", "mqtt.host=127.0.0.1", "mqtt.username=edge",
                    f"mqtt.password_file={password}", "metrics.host=::1") == []
    import ssl
    import subprocess

    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-subj", "/CN=edge", "-days", "1"], check=True, capture_output=True)
    key.chmod(0o644)
    ssl.create_default_context().load_cert_chain(cert, key)  # a usable pair: check-config reads them
    said = warnings("mqtt.enabled=true", "mqtt.host=broker.lan", f"mqtt.tls={{certfile: {cert}, keyfile: {key}, "
                    "insecure: true}")
    assert [w.split(" ")[2] for w in said] == ["mqtt.tls.keyfile", "mqtt.tls.insecure:"], said
