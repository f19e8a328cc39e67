"""`semanticac-edge doctor` on a real exported bundle, a damaged copy and a text-less copy."""

import importlib.util
import json
import re
import shutil

import pytest
from click.testing import CliRunner

import edge.cli
import edge.tools.doctor as doctor
from edge.tools.doctor import FAIL, OK, WARN, Check, run_checks


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Embeddings computed by other tests must not make a label set look ready here."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SEMANTICAC_BUNDLE", raising=False)


def bundle_copy(demo_bundle, tmp_path):
    return shutil.copytree(demo_bundle.path, tmp_path / "bundle")


def invoke(*args):
    result = CliRunner().invoke(edge.cli.main, ["doctor", *args])
    assert "Traceback" not in result.output, result.output
    return result


def by_name(checks):
    return {c.name: c for c in checks}


def statuses(output: str) -> dict[str, str]:
    """`<status>  <name>: <finding>` lines of the printed report -> {name: status}."""
    return {m.group(2): m.group(1) for m in re.finditer(r"^(ok|warn|FAIL) +([^:]+): ", output, re.MULTILINE)}


def test_a_good_bundle_is_ok(demo_bundle, tmp_path):
    folder = bundle_copy(demo_bundle, tmp_path)
    site = tmp_path / "site.yaml"
    site.write_text("name: site\nlabels: [siren, doorbell]\n")
    result = invoke("--bundle", str(folder), "--labels", str(site))
    found = statuses(result.output)
    assert found["bundle"] == OK and found["audio graph"] == OK
    assert found["vocabulary"] == OK and "521 named classes, 60 trained labels, a head" in result.output
    assert found["labels urban"] == OK  # precomputed in the bundle
    assert found["labels site"] == OK  # not precomputed, but text.onnx can compute it
    assert "labels audioset" not in found  # the vocabulary's own classes: its check covers them, no "YAML"
    assert found["python"] == OK and found["onnxruntime"] == OK
    assert "ready in" in result.output and "computable on the device" in result.output
    assert demo_bundle.meta.model_id in result.output
    # The exit status follows the FAIL lines, whatever this machine lacks.
    assert result.exit_code == (1 if FAIL in found.values() else 0)
    last = result.output.strip().splitlines()[-1]
    assert ("fix the FAIL lines" in last) == (FAIL in found.values())


def test_a_set_the_bundle_holds_with_its_yaml_is_checked_against_it(demo_bundle, tmp_path):
    """`train export` writes labels/trained.yaml beside its embeddings: doctor said "its YAML is not here"."""
    folder = bundle_copy(demo_bundle, tmp_path)
    (folder / "labels" / "site.yaml").write_text("name: site\nlabels: [siren, doorbell]\n")
    result = CliRunner().invoke(edge.cli.main, ["embed-labels", "--bundle", str(folder), "--into", "bundle",
                                                "--labels", str(folder / "labels" / "site.yaml")])
    assert result.exit_code == 0, result.output
    result = invoke("--bundle", str(folder))
    line = next(line for line in result.output.splitlines() if line.split(":")[0].endswith("labels site"))
    assert line.startswith("ok") and "YAML is not here" not in line and "ready in" in line, line
    (folder / "labels" / "site.yaml").write_text("name: site\nlabels: [siren, siren]\n")
    assert statuses(invoke("--bundle", str(folder)).output)["labels site"] == FAIL


def test_the_labels_set_gets_the_warnings_a_start_would_give(demo_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    site = tmp_path / "site.yaml"
    site.write_text("name: site\nlabels: [dog_bark, dog barking, woof]\n")
    before = invoke("--bundle", str(demo_bundle.path), "--labels", str(site))
    assert "warn  labels site:" not in before.output  # not embedded yet: doctor computes nothing
    assert not list((tmp_path / "cache").rglob("site.npz"))
    CliRunner().invoke(edge.cli.main, ["embed-labels", "--bundle", str(demo_bundle.path), "--labels", str(site),
                                       "--into", "cache"])
    result = invoke("--bundle", str(demo_bundle.path), "--labels", str(site))
    warned = [line for line in result.output.splitlines() if line.startswith("warn  labels site: ")]
    assert any("both the trained label 'dog_bark'" in line for line in warned), result.output
    assert any("'woof': no name of the vocabulary is near its text" in line for line in warned), result.output


def test_a_vocabulary_file_that_no_longer_fits_the_bundle_fails(demo_bundle, tmp_path):
    """The trained labels' embeddings (labels/esc50.npz) gone or replaced: every start fails, so doctor must."""
    folder = bundle_copy(demo_bundle, tmp_path)
    (folder / "labels" / "esc50.npz").unlink()
    result = invoke("--bundle", str(folder))
    assert statuses(result.output)["vocabulary"] == FAIL and "esc50.npz" in result.output
    assert result.exit_code == 1 and "fix the FAIL lines" in result.output.strip().splitlines()[-1]


def test_every_problem_has_a_fix(demo_bundle):
    checks = run_checks(str(demo_bundle.path), None)
    assert checks and all(c.status in (OK, WARN, FAIL) for c in checks)
    for check in checks:
        if check.status != OK:
            assert check.fix, check
            assert check.lines()[1].strip().startswith("fix: ")


def test_a_corrupted_model_onnx_fails_and_the_other_checks_still_run(demo_bundle, tmp_path):
    folder = bundle_copy(demo_bundle, tmp_path)
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # truncated in transfer
    result = invoke("--bundle", str(folder))
    found = statuses(result.output)
    assert result.exit_code == 1
    assert found["bundle"] == FAIL and "model.onnx has SHA-256" in result.output
    assert found["audio graph"] == FAIL and "cannot load ONNX graph" in result.output
    assert found["labels urban"] == OK and "cache" in found  # checks after the failure ran
    assert "fix: copy the bundle again" in result.output
    assert "2 FAIL: listen cannot work as installed" in result.output.splitlines()[-1]


def test_a_label_set_that_cannot_be_embedded_fails(demo_bundle, tmp_path):
    folder = bundle_copy(demo_bundle, tmp_path)
    meta = json.loads((folder / "model.json").read_text())
    meta["text"] = None
    (folder / "model.json").write_text(json.dumps(meta))
    shutil.rmtree(folder / "labels")
    result = invoke("--bundle", str(folder), "--labels", "urban")
    found = statuses(result.output)
    assert result.exit_code == 1
    assert found["bundle"] == OK
    assert found["labels urban"] == FAIL
    assert "has no text.onnx to compute them" in result.output
    assert f"fix: run `semanticac-edge embed-labels --bundle {folder} --labels " in result.output
    assert found["labels esc50"] == WARN  # not the set asked for: a warning only


def test_a_missing_label_file_fails(demo_bundle, tmp_path):
    result = invoke("--bundle", str(demo_bundle.path), "--labels", str(tmp_path / "nowhere.yaml"))
    assert result.exit_code == 1
    assert statuses(result.output)[f"labels {tmp_path / 'nowhere.yaml'}"] == FAIL


def test_no_bundle_at_all_fails_and_says_how_to_get_one(tmp_path):
    result = invoke("--bundle", str(tmp_path / "missing"))
    found = statuses(result.output)
    assert result.exit_code == 1 and found["bundle"] == FAIL
    assert "semanticac-train export" in result.output
    assert found["engines"] == WARN and found["label sets"] == WARN  # not checked, said so


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_missing_tensorrt_is_a_warning_on_a_cpu_machine(demo_bundle):
    found = by_name(run_checks(str(demo_bundle.path), "urban"))
    assert found["tensorrt"].status == WARN and "comes with JetPack" in found["tensorrt"].finding
    assert found["gpu"].status in (OK, WARN) and found["engines"].status == WARN
    assert "build-engine --bundle" in found["engines"].fix
    assert not any(c.status == FAIL for c in found.values())


def test_a_check_that_raises_is_a_fail_and_the_rest_still_run(demo_bundle, monkeypatch):
    def check_broken(ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(doctor, "CHECKS", (check_broken, doctor.check_python, doctor.check_bundle))
    checks = run_checks(str(demo_bundle.path), None)
    assert [c.name for c in checks] == ["broken", "python", "bundle"]
    assert checks[0].status == FAIL and "RuntimeError: boom" in checks[0].finding
    assert checks[2].status == OK


def test_check_rejects_an_unknown_status():
    with pytest.raises(ValueError, match="not one of"):
        Check("x", "error", "y")


def test_a_clock_not_synchronised_is_a_warning_with_its_fix(monkeypatch):
    import edge.clock

    ctx = doctor._Context(bundle_option=None, labels=None)
    monkeypatch.setattr(edge.clock, "clock_synchronised", lambda: False)
    check = doctor.check_clock(ctx)
    assert check.status == WARN and "removes nothing by age" in check.finding
    assert "timedatectl set-ntp true" in check.fix and "service.trust_clock" in check.fix
    monkeypatch.setattr(edge.clock, "clock_synchronised", lambda: True)
    assert doctor.check_clock(ctx).status == OK
