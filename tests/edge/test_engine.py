"""The engine builder: FP16 ONNX copy (checked here with ONNX Runtime), engine names, sidecars,
refusals and lookup (sidecar dicts, no TensorRT needed); building and running a real engine
where TensorRT, pycuda and a GPU exist, skipped elsewhere with the reason."""

import json
import logging
import os
import shutil
import sys

import numpy as np
import pytest

from edge.backends import OnnxRuntimeBackend
from edge.backends.tensorrt.builder import (
    build_engine,
    engine_sidecar,
    fp16_graph,
    fp16_onnx_copy,
    save_engine,
    strongly_typed_build,
)
from edge.backends.tensorrt.cache import (
    DeviceInfo,
    check_engine,
    engine_dirs,
    engine_name,
    explain_missing_engine,
    find_engine,
    list_engines,
    plan_precision,
    read_sidecar,
    rebuild_command,
    sidecar_path,
    slug,
    writable_engines_dir,
)
from edge.bundle import read_bundle
from edge.errors import BackendError
from edge.fsutil import sha256_file

ORIN = DeviceInfo(gpu_name="Orin", compute_capability="8.7", tensorrt_version="10.3.0")


@pytest.fixture(scope="module")
def bundle(demo_bundle):
    """Names, sidecars, refusals and lookup: the shipped demo bundle (no torch, no GPU). Tests that
    write engines write them into a copy (`copy_bundle`), never into the installed package."""
    return demo_bundle


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A bundle of tiny graphs exported here from torch (tests/edge/test_backends.py): a conv
    weight to find in the FP16 copy, and an engine that builds in seconds."""
    pytest.importorskip("torch", reason="the tiny graphs are exported from torch; torch is not importable here")
    from tests.edge.test_backends import make_onnx_bundle

    return read_bundle(make_onnx_bundle(tmp_path_factory.mktemp("bundle")))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_engine(folder, bundle, device=ORIN, precision="fp16", plan=b"plan bytes", **changes):
    """A plan file (its bytes are not TensorRT's: lookup never deserialises) and its sidecar."""
    path = folder / engine_name(device, bundle.meta.audio.sha256, precision)
    sidecar = {**engine_sidecar(bundle, device, precision, path.name), **changes}
    return save_engine(path, plan, sidecar)


def copy_bundle(bundle, folder):
    """A private, writable copy: engines written into it do not leak into other tests."""
    shutil.copytree(bundle.path, folder)
    return read_bundle(folder)


# ---------------------------------------------------------------------------------------------
# FP16 copy of the ONNX graph


def needs_onnxconverter():
    try:
        import onnxconverter_common  # noqa: F401
    except ImportError:
        reason = 'onnxconverter-common not installed (pip install "semanticac-edge[trt]")'
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI {reason}")
        pytest.skip(reason)


@pytest.mark.slow  # a torch export
def test_the_fp16_copy_runs_with_float32_io_and_agrees_with_fp32(tiny, tmp_path):
    needs_onnxconverter()
    import onnx

    from tests.edge.test_backends import mel_batch

    bundle = tiny

    copy = fp16_onnx_copy(bundle.audio_path, tmp_path / "model.fp16.onnx")
    graph = onnx.load(str(copy)).graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in graph.output] == [onnx.TensorProto.FLOAT]
    conv = next(i for i in graph.initializer if i.name == "conv.weight")
    assert conv.data_type == onnx.TensorProto.FLOAT16  # the heavy ops really are FP16
    assert fp16_graph(copy) and not fp16_graph(bundle.audio_path)

    mel = mel_batch(6, seed=7)
    fp32 = OnnxRuntimeBackend.for_bundle(bundle, threads=1).embed(mel)
    fp16 = OnnxRuntimeBackend(copy, threads=1).embed(mel)
    assert fp16.dtype == np.float32 and fp16.shape == fp32.shape
    cosine = (fp16 * fp32).sum(1) / np.linalg.norm(fp16, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cosine.min() > 0.999, cosine
    assert 0 < np.abs(fp16 - fp32).max() < 1e-2  # changed (it is FP16), but not much


def test_a_compact_bundle_is_built_as_it_is_never_converted_again(bundle, tmp_path):
    """The demo bundle's model.onnx has FP16 weights already (export --compact): TensorRT 11, which builds
    strongly typed only, made its FP16 copy all the same, and onnxconverter-common refuses a graph that is
    FP16 already (a ValueError, a traceback from build-engine). TensorRT 10 gets it strongly typed too, so the
    FP32 it keeps between Casts stays FP32 (with the FP16 flag, types are hints)."""
    needs_onnxconverter()
    assert fp16_graph(bundle.audio_path)
    with pytest.raises(ValueError, match="already converted to float16"):  # why it must not be converted again
        fp16_onnx_copy(bundle.audio_path, tmp_path / "again.onnx")
    #                          precision  TensorRT  FP16 weights           (strongly typed, FP16 copy first)
    assert strongly_typed_build("fp16", (11, 0), True) == (True, False)
    assert strongly_typed_build("fp16", (11, 0), False) == (True, True)
    assert strongly_typed_build("fp16", (10, 3), True) == (True, False)
    assert strongly_typed_build("fp16", (10, 3), True, typed_flag=False) == (False, False)  # the FP16 flag, as before
    assert strongly_typed_build("fp16", (10, 3), False) == (False, False)  # an FP32 graph: the FP16 flag
    assert strongly_typed_build("fp16", (8, 6), True) == (False, False)
    assert strongly_typed_build("fp32", (11, 0), True) == (False, False)


def test_a_tensorrt_that_is_there_but_cannot_load_says_why(bundle, tmp_path, monkeypatch):
    """A TensorRT (or pycuda) whose library is missing (a container without the NVIDIA runtime) was reported
    as not installed: Python's own words now follow."""
    from edge.backends.tensorrt.libs import import_pycuda, import_tensorrt

    for package in ("tensorrt", "pycuda"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(
            f"raise ImportError('lib{package}.so.10: cannot open shared object file: No such file or directory')\n"
        )
        monkeypatch.delitem(sys.modules, package, raising=False)
    monkeypatch.delitem(sys.modules, "pycuda.driver", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    for load, package in ((import_tensorrt, "tensorrt"), (import_pycuda, "pycuda")):
        with pytest.raises(ImportError) as err:
            load()
        assert f"(import {package}: lib{package}.so.10: cannot open shared object file" in str(err.value)
        assert "is not installed" in str(err.value) and "\n" not in str(err.value)


def test_the_fp16_copy_without_onnxconverter_names_the_extra(bundle, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxconverter_common", None)
    with pytest.raises(ImportError, match=r'onnxconverter-common: pip install "semanticac-edge\[trt\]"'):
        fp16_onnx_copy(bundle.audio_path, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


# ---------------------------------------------------------------------------------------------
# Names and places


def test_engine_names_carry_gpu_tensorrt_model_and_precision(bundle):
    name = engine_name(ORIN, bundle.meta.audio.sha256, "fp16")
    assert name == f"model.orin.trt10.3.0.{bundle.meta.audio.sha256[:12]}.fp16.plan"
    assert slug("NVIDIA GeForce RTX 4090") == "nvidia-geforce-rtx-4090"
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert sidecar_path("/x/model.a.plan").name == "model.a.json"
    assert engine_name(ORIN, "0" * 64, "fp32") != engine_name(ORIN, "1" * 64, "fp32")


def test_engines_go_beside_the_bundle_or_to_the_cache_when_it_cannot_be_written(bundle, tmp_path, cache):
    mine = copy_bundle(bundle, tmp_path / "b")
    assert writable_engines_dir(mine) == mine.engines_dir
    blocked = copy_bundle(bundle, tmp_path / "ro")
    blocked.engines_dir.write_text("a file where the engines folder should be")  # mkdir fails as on a RO mount
    assert writable_engines_dir(blocked) == cache / "semanticac-edge" / bundle.meta.model_id / "engines"
    assert engine_dirs(blocked)[1] == writable_engines_dir(blocked)


def test_the_rebuild_command_quotes_the_bundle_path(bundle, tmp_path):
    spaced = copy_bundle(bundle, tmp_path / "my bundle")
    assert rebuild_command(spaced, "fp32") == (
        f"semanticac-edge build-engine --bundle '{spaced.path}' --precision fp32")


# ---------------------------------------------------------------------------------------------
# Refusals (sidecar dicts; no TensorRT needed)


def sidecar_for(bundle, **changes):
    return {**engine_sidecar(bundle, ORIN, "fp16", "p.plan"), **changes}


def test_a_matching_sidecar_is_accepted(bundle):
    assert check_engine(sidecar_for(bundle), ORIN, bundle) is None
    assert check_engine(sidecar_for(bundle), ORIN, bundle, "fp16") is None


@pytest.mark.parametrize("changes, expected", [
    ({"gpu_name": "NVIDIA GeForce RTX 4090"}, "built for GPU 'NVIDIA GeForce RTX 4090', this device has 'Orin'"),
    ({"compute_capability": "7.2"}, "built for compute capability 7.2, this GPU has 8.7"),
    ({"tensorrt_version": "8.6.2"}, "built with TensorRT 8.6.2, this device has 10.3.0"),
    ({"onnx_sha256": "f" * 64}, "built from another model.onnx (sha256 ffffffffffff, the bundle's is"),
])
def test_a_sidecar_for_something_else_is_refused_with_the_rebuild_command(bundle, changes, expected):
    reason = check_engine(sidecar_for(bundle, **changes), ORIN, bundle)
    assert expected in reason
    assert reason.endswith(f"rebuild it with `{rebuild_command(bundle, 'fp16')}`")


def test_every_difference_is_named_at_once(bundle):
    reason = check_engine(sidecar_for(bundle, gpu_name="Xavier", compute_capability="7.2",
                                      tensorrt_version="8.5.2"), ORIN, bundle)
    assert "'Xavier'" in reason and "7.2" in reason and "8.5.2" in reason


def test_a_precision_other_than_asked_is_refused(bundle):
    reason = check_engine(sidecar_for(bundle, precision="fp32"), ORIN, bundle, "fp16")
    assert "built in fp32, fp16 was asked for" in reason and "--precision fp16" in reason


def test_a_sidecar_from_elsewhere_is_refused(bundle):
    sidecar = sidecar_for(bundle)
    del sidecar["onnx_sha256"], sidecar["gpu_name"]
    assert "missing field(s) ['gpu_name', 'onnx_sha256']" in check_engine(sidecar, ORIN, bundle)
    assert "field 'precision' must be text, got 16" in check_engine(sidecar_for(bundle, precision=16), ORIN, bundle)
    assert "format_version 2" in check_engine(sidecar_for(bundle, format_version=2), ORIN, bundle)


# ---------------------------------------------------------------------------------------------
# Lookup


def test_find_engine_takes_the_one_built_for_this_device(bundle, tmp_path, cache, caplog):
    mine = copy_bundle(bundle, tmp_path / "b")
    other = DeviceInfo("NVIDIA GeForce RTX 4090", "8.9", "10.3.0")
    fake_engine(mine.engines_dir, mine, device=other)
    with caplog.at_level(logging.INFO, logger="edge.backends.tensorrt.cache"):
        assert find_engine(mine, "fp16", ORIN) is None
    assert any("built for GPU 'NVIDIA GeForce RTX 4090'" in r.getMessage() for r in caplog.records)

    plan = fake_engine(mine.engines_dir, mine)
    assert find_engine(mine, "fp16", ORIN) == plan
    assert find_engine(mine, "fp32", ORIN) is None  # only an fp16 one exists
    assert find_engine(mine, "fp16", other) == mine.engines_dir / engine_name(other, mine.meta.audio.sha256, "fp16")


def test_orin_modules_keep_their_own_engines(bundle, tmp_path, cache, caplog):
    """Every Orin module is "Orin", compute capability 8.7: an AGX's plan (16 multiprocessors) in a
    bundle copied to a Nano (8) is refused, each keeps its own file; a plan whose sidecar predates
    the count is still used (no forced rebuild)."""
    mine = copy_bundle(bundle, tmp_path / "b")
    agx, nano = (DeviceInfo("Orin", "8.7", "10.3.0", multiprocessors=n) for n in (16, 8))
    assert engine_name(agx, "0" * 64, "fp16") != engine_name(nano, "0" * 64, "fp16")
    assert engine_name(agx, "0" * 64, "fp16").startswith("model.orin-16sm.trt10.3.0.")
    built = fake_engine(mine.engines_dir, mine, device=agx)
    assert read_sidecar(built)["multiprocessors"] == 16
    assert find_engine(mine, None, agx) == built
    with caplog.at_level(logging.INFO, logger="edge.backends.tensorrt.cache"):
        assert find_engine(mine, None, nano) is None
    assert "built on a GPU with 16 multiprocessors, this one has 8" in caplog.text
    older = fake_engine(mine.engines_dir, mine, device=ORIN)  # no count in its name
    sidecar = read_sidecar(older)
    del sidecar["multiprocessors"]  # nor in its sidecar
    sidecar_path(older).write_text(json.dumps(sidecar))
    assert find_engine(mine, None, nano) == older


def test_without_a_precision_the_engine_built_is_used_fp16_first(bundle, tmp_path, cache):
    """listen and serve ask for no precision: an fp32 engine (build-engine --precision fp32, for a
    model whose fp16 numerics are off) must be found, and fp16 preferred when both exist."""
    mine = copy_bundle(bundle, tmp_path / "b")
    fp32 = fake_engine(mine.engines_dir, mine, precision="fp32")
    assert find_engine(mine, None, ORIN) == fp32 and plan_precision(fp32) == "fp32"
    assert find_engine(mine, "fp16", ORIN) is None
    fp16 = fake_engine(mine.engines_dir, mine, precision="fp16")
    assert find_engine(mine, None, ORIN) == fp16
    message = explain_missing_engine(mine, None, DeviceInfo("Orin", "8.7", "10.4.0"))
    assert message.startswith("no TensorRT engine for this device") and "fp32.plan: built with TensorRT" in message


def test_auto_warns_when_an_engine_was_built_but_no_longer_fits(bundle, tmp_path, cache, monkeypatch, caplog):
    """After a JetPack upgrade the service falls back to ONNX Runtime: a warning says so (an info
    line where no engine was ever built)."""
    import edge.backends.tensorrt.cache as engines
    from edge.backends import select_backend

    mine = copy_bundle(bundle, tmp_path / "b")
    monkeypatch.setattr(engines, "device_info", lambda: ORIN)
    for built, level in ((False, logging.INFO), (True, logging.WARNING)):
        if built:
            fake_engine(mine.engines_dir, mine, tensorrt_version="8.6.2")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="edge.backends"):
            backend = select_backend(mine, "auto")
        backend.close()
        fallback = [r for r in caplog.records if r.getMessage().startswith("backend auto: onnxruntime, because")]
        assert backend.name == "onnxruntime" and [r.levelno for r in fallback] == [level], caplog.records
    assert "built with TensorRT 8.6.2, this device has 10.3.0" in fallback[0].getMessage()


def test_find_engine_looks_in_the_cache_too(bundle, tmp_path, cache):
    mine = copy_bundle(bundle, tmp_path / "b")
    plan = fake_engine(engine_dirs(mine)[1], mine)
    assert find_engine(mine, "fp16", ORIN) == plan


def test_a_plan_without_sidecar_or_with_other_bytes_is_refused(bundle, tmp_path, cache):
    mine = copy_bundle(bundle, tmp_path / "b")
    plan = fake_engine(mine.engines_dir, mine)
    plan.write_bytes(b"replaced after the build")
    statuses = list_engines(mine, ORIN, "fp16")
    assert len(statuses) == 1 and "does not match its sidecar's sha256" in statuses[0].reason
    sidecar_path(plan).unlink()
    assert "cannot read the engine sidecar" in list_engines(mine, ORIN, "fp16")[0].reason
    assert find_engine(mine, "fp16", ORIN) is None


def test_a_plan_that_cannot_be_read_is_refused_not_a_crash(bundle, tmp_path, cache, monkeypatch):
    import edge.backends.tensorrt.cache as engines

    mine = copy_bundle(bundle, tmp_path / "b")
    fake_engine(mine.engines_dir, mine)

    def unreadable(path, chunk=1 << 20):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(engines, "sha256_file", unreadable)
    statuses = list_engines(mine, ORIN, "fp16")
    assert len(statuses) == 1 and statuses[0].reason.startswith("cannot read the plan (Permission denied)")
    assert find_engine(mine, None, ORIN) is None


def test_the_missing_engine_message_says_where_why_and_how(bundle, tmp_path, cache):
    mine = copy_bundle(bundle, tmp_path / "b")
    fake_engine(mine.engines_dir, mine, tensorrt_version="10.0.1")
    message = explain_missing_engine(mine, "fp16", ORIN)
    assert "no fp16 TensorRT engine for this device (Orin, compute capability 8.7, TensorRT 10.3.0)" in message
    assert str(mine.engines_dir) in message and "built with TensorRT 10.0.1, this device has 10.3.0" in message
    assert message.splitlines()[-1] == f"build one with `{rebuild_command(mine, 'fp16')}`"


def test_sidecars_record_what_the_engine_was_built_for(bundle, tmp_path):
    plan = fake_engine(tmp_path, bundle)
    data = json.loads(sidecar_path(plan).read_text())
    assert data["onnx_sha256"] == bundle.meta.audio.sha256 and data["model_id"] == bundle.meta.model_id
    assert (data["gpu_name"], data["compute_capability"], data["tensorrt_version"]) == ("Orin", "8.7", "10.3.0")
    assert data["created_utc"].endswith("Z") and data["plan"] == plan.name
    assert data["plan_sha256"] == sha256_file(plan)


# ---------------------------------------------------------------------------------------------
# Building


def test_bad_build_settings_are_refused_before_tensorrt_is_needed(bundle):
    with pytest.raises(BackendError, match=r"precision 'int8' is not supported \(allowed: \['fp16', 'fp32'\]\)"):
        build_engine(bundle, precision="int8")
    with pytest.raises(BackendError, match="max_batch=0 must be a positive integer"):
        build_engine(bundle, max_batch=0)
    with pytest.raises(BackendError, match="opt_batch=4 must not exceed max_batch=2"):
        build_engine(bundle, max_batch=2, opt_batch=4)
    with pytest.raises(BackendError, match="workspace_gib=0 must be a positive number"):
        build_engine(bundle, workspace_gib=0)


def test_building_without_tensorrt_is_a_one_line_import_error(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ImportError) as err:
        build_engine(bundle)
    assert 'pip install "semanticac-edge[trt]"' in str(err.value) and "\n" not in str(err.value)


def tensorrt_and_gpu():
    """Skip (with the reason) unless TensorRT, pycuda and a CUDA GPU are all here."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pytest.skip("TensorRT not installed (it comes with JetPack)")
    try:
        import pycuda.driver as cuda
    except ImportError:
        pytest.skip('pycuda not installed (pip install "semanticac-edge[trt]")')
    try:
        cuda.init()
        cuda.Device(0)
    except cuda.Error as err:
        pytest.skip(f"no CUDA GPU: {err}")


@pytest.mark.slow  # a torch export
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_a_built_engine_runs_and_matches_onnxruntime(tiny, tmp_path, cache, precision, tolerance):
    tensorrt_and_gpu()
    from edge.backends import TensorRTBackend, select_backend
    from tests.edge.test_backends import FRAMES, MELS, mel_batch

    mine = copy_bundle(tiny, tmp_path / "b")
    plan = build_engine(mine, precision=precision, max_batch=4)  # a plain plan: the backend hands it to TensorRT
    assert plan.parent == mine.engines_dir
    sidecar = json.loads(sidecar_path(plan).read_text())
    assert sidecar["inputs"]["mel"]["max"] == [4, 1, FRAMES, MELS] and sidecar["precision"] == precision
    assert find_engine(mine, precision) == plan
    reference = OnnxRuntimeBackend.for_bundle(mine, threads=1)
    with TensorRTBackend.for_bundle(mine, plan, precision) as engine:
        assert engine.max_batch == 4
        for batch in (1, 3, 9):  # 9: above the profile's maximum, run in chunks
            mel = mel_batch(batch, seed=batch)
            np.testing.assert_allclose(engine.embed(mel), reference.embed(mel), atol=tolerance, rtol=0)
    chosen = select_backend(mine, "auto", precision=precision)
    assert chosen.name == "tensorrt"
    chosen.close()
