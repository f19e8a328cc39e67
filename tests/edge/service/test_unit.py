"""install-service: the unit passes systemd's own checks, and a config is never overwritten silently."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import edge.cli
from edge.errors import ConfigError
from edge.service.config import example_text
from edge.service.unit import UnitSettings, render_unit

EDGE = str(Path(sys.executable).with_name("semanticac-edge"))  # the real executable: verify checks it exists
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (make system-deps)"
)


@pytest.fixture
def unit_file(tmp_path):
    path = tmp_path / "semanticac-edge.service"
    path.write_text(render_unit(UnitSettings(exec_path=EDGE, config_path="/etc/semanticac-edge/service.yaml",
                                             gpu_group=True)))  # a Jetson's
    return path


def test_group_video_only_where_a_jetson_gpu_needs_it(tmp_path):
    """Group video was given on every box, where it gives the service the webcams (/dev/video*) too."""
    from edge.service.unit import has_jetson_gpu

    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "video0").touch()
    assert not has_jetson_gpu(str(tmp_path))
    (tmp_path / "dev" / "nvhost-ctrl").touch()
    assert has_jetson_gpu(str(tmp_path))
    plain = render_unit(UnitSettings(exec_path=EDGE, gpu_group=False))
    assert "\nSupplementaryGroups=audio\n" in plain and "no Jetson GPU" in plain


@needs_systemd_analyze
@pytest.mark.parametrize("config", ["/etc/semanticac-edge/service.yaml", "/home/pi/service.yaml"])
def test_systemd_analyze_verify_finds_nothing_to_say(unit_file, config):
    # v252 exits 0 on parse warnings ("Unknown key", "Ignoring ..."): stderr must be empty too. A config under
    # /home makes ProtectHome=read-only, whose comment after the value systemd had refused
    unit_file.write_text(render_unit(UnitSettings(exec_path=EDGE, config_path=config, gpu_group=True)))
    run = subprocess.run(["systemd-analyze", "verify", unit_file.name], cwd=unit_file.parent,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stderr == "", run.stderr


@needs_systemd_analyze
def test_systemd_analyze_security_scores_it_ok(unit_file):
    run = subprocess.run(["systemd-analyze", "security", "--offline=yes", unit_file.name], cwd=unit_file.parent,
                         capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", run.stdout)
    assert found, run.stdout + run.stderr
    assert float(found.group(1)) <= 4.0, run.stdout
    # the event log asks adjtimex whether the clock is synchronised: a deny line after the allow
    # line (@privileged holds @clock) had taken it away again
    assert "adjtimex is allowed" in run.stdout, run.stdout


@needs_systemd_analyze
def test_a_path_with_percent_or_dollar_stays_that_path(tmp_path):
    """systemd reads `%n` in ExecStart= as the unit's name and `$X` as a variable: a venv at
    /opt/venv%n ran /opt/venvsemanticac-edge.service/... ('is not executable'). Doubled, they stay."""
    odd = tmp_path / "venv%n$HOME" / "bin" / "semanticac-edge"
    odd.parent.mkdir(parents=True)
    odd.symlink_to(EDGE)
    unit = tmp_path / "semanticac-edge.service"
    unit.write_text(render_unit(UnitSettings(exec_path=str(odd), config_path="/etc/semanticac-edge/$s%ice.yaml")))
    # the command is not expanded for variables, its arguments are
    assert "venv%%n$HOME" in unit.read_text() and "/$$s%%ice.yaml" in unit.read_text()
    run = subprocess.run(["systemd-analyze", "verify", unit.name], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_the_unit_runs_serve_as_a_notify_service_that_a_bad_config_does_not_loop(unit_file):
    text = unit_file.read_text()
    for line in ("Type=notify", "Restart=on-failure", "RestartPreventExitStatus=78", "WatchdogSec=30",
                 "DynamicUser=yes", "ExecReload=/bin/kill -HUP $MAINPID", "SupplementaryGroups=audio video", "StateDirectory=semanticac-edge",
                 f"ExecStart={EDGE} serve --config /etc/semanticac-edge/service.yaml", "ProtectHome=yes"):
        assert f"\n{line}\n" in text, line
    assert "\nPrivateDevices=" not in text and "\nMemoryDenyWriteExecute=" not in text
    # the event log asks adjtimex whether the clock is synchronised; ProtectClock= would refuse it
    assert "\nProtectClock=" not in text


@needs_systemd_analyze
def test_backslashes_and_quotes_in_a_path_reach_systemd_as_written(tmp_path):
    """systemd decodes C escapes in ExecStart=, quoted or not: a config at /etc/a\x41b.yaml was read as
    /etc/aAb.yaml, and `'"'"'` (shlex's quote in a word) is no systemd quoting ('Unbalanced quoting').
    An executable named with a quote or a backslash systemd refuses to run: said before it is written;
    a newline (which split the unit's lines) is refused in either."""
    unit = tmp_path / "semanticac-edge.service"
    unit.write_text(render_unit(UnitSettings(exec_path=EDGE, config_path="/etc/it's a\\x41b/service.yaml")))
    assert f'ExecStart={EDGE} serve --config "/etc/it\'s a\\\\x41b/service.yaml"' in unit.read_text()
    run = subprocess.run(["systemd-analyze", "verify", unit.name], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert "/etc/a\\\\x41b.yaml" in render_unit(UnitSettings(exec_path=EDGE, config_path="/etc/a\\x41b.yaml"))
    for exec_path, config_path, text in (("/opt/bs\\x41/bin/semanticac-edge", "/etc/s.yaml", "a quote or a backslash"),
                                         ("/opt/it's/bin/semanticac-edge", "/etc/s.yaml", "a quote or a backslash"),
                                         (EDGE, "/etc/s.yaml\nExecStartPre=/bin/rm", "a control character"),
                                         (EDGE, "/etc/caf\udce9.yaml", "is not UTF-8")):  # a Latin-1 name
        with pytest.raises(ConfigError, match=text):
            UnitSettings(exec_path=exec_path, config_path=config_path)


def test_a_venv_under_home_stays_readable_and_paths_with_spaces_are_quoted():
    text = render_unit(UnitSettings(exec_path="/home/jet/my venv/bin/semanticac-edge", config_path="/etc/s.yaml"))
    assert "ExecStart='/home/jet/my venv/bin/semanticac-edge' serve --config /etc/s.yaml" in text
    assert "\nProtectHome=read-only" in text


def test_print_says_an_executable_that_is_not_there(tmp_path):
    """Writing the unit refuses an --exec that does not exist; --print printed it without a word."""
    missing = str(tmp_path / "venv" / "bin" / "semanticac-edge")
    result = CliRunner().invoke(edge.cli.main, ["install-service", "--print", "--exec", missing])
    assert result.exit_code == 0 and f"ExecStart={missing} serve" in result.stdout
    assert f"warning: ExecStart {missing} does not exist here" in result.stderr
    fine = CliRunner().invoke(edge.cli.main, ["install-service", "--print", "--exec", EDGE])
    assert fine.exit_code == 0 and "warning" not in fine.stderr


def test_install_writes_the_unit_and_config_and_keeps_an_existing_config(tmp_path):
    unit, config = tmp_path / "unit" / "semanticac-edge.service", tmp_path / "etc" / "service.yaml"
    args = ["install-service", "--unit", str(unit), "--config", str(config), "--exec", EDGE, "--watchdog-sec", "20"]
    first = CliRunner().invoke(edge.cli.main, args)
    assert first.exit_code == 0, first.output
    assert "WatchdogSec=20" in unit.read_text() and config.read_text() == example_text()
    assert f"--config {config}" in unit.read_text()
    config.write_text("schema_version: 1  # mine\n")
    config.chmod(0o600)
    again = CliRunner().invoke(edge.cli.main, args)
    assert again.exit_code == 0 and "kept" in again.output and "--force" in again.output
    assert config.read_text() == "schema_version: 1  # mine\n"
    # --force replaced an edited config with nothing left of it, and made a private one readable to all
    forced = CliRunner().invoke(edge.cli.main, args + ["--force"])
    backup = config.with_name("service.yaml.bak")
    assert forced.exit_code == 0 and config.read_text() == example_text()
    assert f"kept the config it replaced as {backup}" in forced.output
    assert backup.read_text() == "schema_version: 1  # mine\n"
    assert (config.stat().st_mode & 0o777, backup.stat().st_mode & 0o777) == (0o600, 0o600)
    backup.unlink()
    CliRunner().invoke(edge.cli.main, args + ["--force"])
    assert not backup.exists()  # the example replaced by itself: nothing to keep


def test_print_shows_both_files_and_writes_nothing(tmp_path):
    unit, config = tmp_path / "u.service", tmp_path / "c.yaml"
    result = CliRunner().invoke(edge.cli.main, ["install-service", "--unit", str(unit), "--config", str(config),
                                                "--exec", EDGE, "--print"])
    assert result.exit_code == 0, result.output
    assert "Type=notify" in result.output and example_text() in result.output
    assert not unit.exists() and not config.exists()


def test_a_missing_executable_is_a_config_error(tmp_path):
    result = CliRunner().invoke(edge.cli.main, ["install-service", "--unit", str(tmp_path / "u.service"),
                                                "--config", str(tmp_path / "c.yaml"), "--exec", "/nowhere/semanticac-edge"])
    assert result.exit_code == 78 and "/nowhere/semanticac-edge does not exist" in result.output
    assert "--exec" in result.output


MDWE_PROBE = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN: what MemoryDenyWriteExecute= does
    sys.exit(3)
import cffi
try:
    cffi.FFI().callback("int(int)", lambda x: x)
except MemoryError:
    sys.exit(0)
sys.exit(1)
"""


def test_portaudio_callbacks_still_need_write_execute_memory():
    """Why the unit has no MemoryDenyWriteExecute=: sounddevice's stream callback is an
    ffi.callback(), refused under it. When this fails, cffi no longer needs it: add the line."""
    run = subprocess.run([sys.executable, "-c", MDWE_PROBE], capture_output=True, text=True, timeout=60)
    if run.returncode == 3:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert run.returncode == 0, run.stderr
