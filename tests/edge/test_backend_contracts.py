"""Backend contracts on the shipped demo bundle's real graphs, no torch needed: threads and
providers, run-time input checks, chunked batches, closing, choosing a backend, missing
packages. Parity with torch and graphs that do not match model.json: test_backends.py."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from edge.backends import BACKENDS, OnnxRuntimeBackend, select_backend
from edge.errors import BackendError


def mel_batch(bundle, batch: int, seed: int = 1, extra_frames: int = 0) -> np.ndarray:
    fe = bundle.meta.frontend
    return np.random.default_rng(seed).normal(size=(batch, 1, fe.frames + extra_frames, fe.n_mels)).astype(np.float32)


@pytest.fixture(scope="module")
def audio(demo_bundle):
    with OnnxRuntimeBackend.for_bundle(demo_bundle, threads=1) as backend:
        yield backend


def test_batches_above_max_batch_run_in_chunks_with_the_same_result(demo_bundle, audio):
    mel = mel_batch(demo_bundle, 5, seed=3)
    whole = audio.embed(mel)
    with OnnxRuntimeBackend.for_bundle(demo_bundle, threads=1, max_batch=2) as chunked:
        assert chunked.max_batch == 2
        # float32 rounding only: ONNX Runtime may pick other kernels for another batch size
        np.testing.assert_allclose(chunked.embed(mel), whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_thread_count_reaches_the_session(demo_bundle, threads):
    with OnnxRuntimeBackend.for_bundle(demo_bundle, threads=threads) as backend:
        assert backend.session.get_session_options().intra_op_num_threads == threads
        assert backend.providers[-1] == "CPUExecutionProvider"


@pytest.mark.parametrize("environ, spins", [(None, "0"), ("1", "1"), ("0", "0")])
def test_the_session_s_threads_sleep_between_runs_unless_asked_to_spin(demo_bundle, monkeypatch, environ, spins):
    """ONNX Runtime spins its threads after each run by default: a live stream runs one window a hop,
    so they spun for nothing, about twice the CPU of the whole loop (benchmarks/ort_spinning.py)."""
    if environ is None:
        monkeypatch.delenv("SEMANTICAC_ORT_SPINNING", raising=False)
    else:
        monkeypatch.setenv("SEMANTICAC_ORT_SPINNING", environ)
    with OnnxRuntimeBackend.for_bundle(demo_bundle, threads=2) as backend:
        options = backend.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == spins


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2, reason="needs 2 cores and affinity")
def test_by_default_a_session_runs_a_thread_per_core_the_process_may_use(demo_bundle):
    """A cpuset or CPUAffinity= (a Jetson sharing its cores) gives the process fewer cores than the
    machine has: ONNX Runtime's default counted the machine's (2 threads under `taskset -c 0`),
    while `--threads 2` was refused there as more than the process may use."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        with OnnxRuntimeBackend.for_bundle(demo_bundle) as backend:
            assert backend.session.get_session_options().intra_op_num_threads == 1
    finally:
        os.sched_setaffinity(0, before)


def test_a_bad_thread_count_is_refused(demo_bundle):
    with pytest.raises(BackendError, match=r"threads=0 must be a positive integer"):
        OnnxRuntimeBackend.for_bundle(demo_bundle, threads=0)


def test_an_unavailable_provider_is_refused_naming_the_available_ones(demo_bundle):
    with pytest.raises(BackendError, match=r"'NoSuchExecutionProvider'.*available.*CPUExecutionProvider"):
        OnnxRuntimeBackend.for_bundle(demo_bundle, providers=["NoSuchExecutionProvider"])


def test_a_graph_that_cannot_be_loaded_for_want_of_memory_says_so(demo_bundle, monkeypatch):
    """Under `prlimit --as` (a board's memory taken, a unit's MemoryMax=) ONNX Runtime's std::bad_alloc was
    reported as "The file is corrupt, truncated or not an ONNX graph ... re-export the bundle"."""
    import onnxruntime

    def starved(*args, **kwargs):  # what ONNX Runtime raised at 220-300 MB of address space
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Exception during initialization: std::bad_alloc")

    monkeypatch.setattr(onnxruntime, "InferenceSession", starved)
    with pytest.raises(BackendError, match=r"model.onnx: out of memory \(.*std::bad_alloc\): this process may not use "
                                           r"enough memory .* raise its limit \(ulimit -v, prlimit --as") as err:
        OnnxRuntimeBackend.for_bundle(demo_bundle)
    assert "corrupt" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# Inputs at run time


def test_bad_inputs_are_refused(demo_bundle, audio):
    fe = demo_bundle.meta.frontend
    t, f = fe.frames, fe.n_mels
    cases = [
        ({"spectrogram": mel_batch(demo_bundle, 1)}, r"takes inputs \['mel'\], got \['spectrogram'\]"),
        ({"mel": mel_batch(demo_bundle, 1)[:, 0]},
         rf"mel must be float32 \[B, 1, {t}, {f}\], got shape \[1, {t}, {f}\]"),
        ({"mel": mel_batch(demo_bundle, 1, extra_frames=1)}, rf"got shape \[1, 1, {t + 1}, {f}\]"),
        ({"mel": mel_batch(demo_bundle, 0)}, r"empty batch"),
    ]
    for inputs, pattern in cases:
        with pytest.raises(BackendError, match=pattern):
            audio.run(inputs)


def test_float_inputs_are_cast_but_floats_for_ids_are_refused(demo_bundle, audio):
    mel = mel_batch(demo_bundle, 2)
    np.testing.assert_allclose(audio.embed(mel.astype(np.float64)), audio.embed(mel), atol=1e-6, rtol=0)
    with OnnxRuntimeBackend.for_bundle(demo_bundle, "text", threads=1) as text:
        length = text.inputs[0].shape[1] or 5  # the demo's MiniLM graph takes 128 tokens
        inputs = {name: np.ones((1, length), np.int64) for name in text.input_names}
        assert text.run(inputs)[text.output_names[0]].shape == (1, demo_bundle.meta.embedding_dim)
        with pytest.raises(BackendError, match="input input_ids must be int64, got float32"):
            text.run({**inputs, "input_ids": np.zeros((1, length), np.float32)})


def test_a_closed_backend_says_so(demo_bundle):
    backend = OnnxRuntimeBackend.for_bundle(demo_bundle, threads=1)
    backend.close()
    with pytest.raises(BackendError, match="onnxruntime backend for model.onnx is closed"):
        backend.embed(mel_batch(demo_bundle, 1))


# ---------------------------------------------------------------------------------------------
# Choosing a backend, and missing packages


def test_auto_without_tensorrt_picks_onnxruntime_and_says_why(demo_bundle, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without JetPack
    with caplog.at_level(logging.INFO, logger="edge.backends"):
        backend = select_backend(demo_bundle, "auto", threads=1)
    assert backend.name == "onnxruntime"
    backend.close()
    why = [r.getMessage() for r in caplog.records if r.name == "edge.backends"]
    assert any("backend auto: onnxruntime, because TensorRT is not installed" in m for m in why), why


def test_tensorrt_without_tensorrt_is_a_one_line_import_error_naming_the_extra(demo_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ImportError) as err:
        select_backend(demo_bundle, "tensorrt")
    assert 'pip install "semanticac-edge[trt]"' in str(err.value) and "JetPack" in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_onnxruntime_is_an_import_error_naming_the_package(demo_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r'pip install "onnxruntime>=1.17" \(a dependency of semanticac-edge') as err:
        select_backend(demo_bundle, "onnxruntime")
    assert "\n" not in str(err.value)


def test_an_unknown_backend_lists_the_choices(demo_bundle):
    with pytest.raises(BackendError, match=r"'tflite' is not one of \['auto', 'onnxruntime', 'tensorrt'\]"):
        select_backend(demo_bundle, "tflite")
    assert BACKENDS == ("auto", "onnxruntime", "tensorrt")


def test_the_text_graph_is_not_asked_of_tensorrt(demo_bundle):
    with pytest.raises(BackendError, match="built for the audio graph only.*--backend onnxruntime"):
        select_backend(demo_bundle, "tensorrt", graph="text")


def test_importing_the_backends_imports_no_runtime():
    """Heavy imports stay inside the backends: a device without onnxruntime still imports edge."""
    probe = ("import sys, edge.backends, edge.backends.tensorrt.cache, edge.backends.tensorrt.builder; "
             "print(sorted(m for m in ('onnxruntime', 'tensorrt', 'pycuda', 'onnx', 'onnxconverter_common') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
