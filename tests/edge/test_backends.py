"""Backends on real ONNX graphs exported here from tiny torch modules (tests may import torch;
edge may not): parity with torch, and graphs that do not match model.json. ONNX Runtime runs
for real; TensorRT is tested in test_engine.py where it exists. The contracts that need no
torch (threads, inputs, choosing a backend) run on the demo bundle: test_backend_contracts.py."""

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="these tests export tiny torch modules; torch is not importable here")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from edge.backends import OnnxRuntimeBackend, select_backend  # noqa: E402
from edge.bundle import BundleMeta, read_bundle, tower_spec, write_bundle_meta  # noqa: E402
from edge.errors import BackendError  # noqa: E402
from edge.features import Frontend  # noqa: E402

pytestmark = pytest.mark.slow  # torch exports (about 3 s here, but the fast lane runs without torch)

FRAMES, MELS, DIM, VOCAB = 48, 16, 8, 100


class TinyAudio(nn.Module):
    """mel [B, 1, T, F] -> unit-length embedding [B, C]: conv, max over time, linear, LayerNorm."""

    def __init__(self, mels: int = MELS, dim: int = DIM) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.proj = nn.Linear(4 * mels, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(mel)).amax(dim=2).flatten(1)  # (B, 4 * F)
        return F.normalize(self.norm(self.proj(x)), dim=-1)


class TinyRank3(TinyAudio):
    """The same, but taking mel [B, T, F]: a graph that does not fit model.json's frontend."""

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return super().forward(mel[:, None])


class TinyText(nn.Module):
    """input_ids int64 [B, L] -> unit-length embedding [B, C]."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 12)
        self.proj = nn.Linear(12, DIM)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.embed(input_ids).mean(dim=1)), dim=-1)


def export(module: nn.Module, example: torch.Tensor, path: Path, input_name: str = "mel",
           dynamic: dict | None = None) -> Path:
    """Legacy exporter, opset 17, dynamic batch (as `semanticac-train export`)."""
    if dynamic is None:
        dynamic = {input_name: {0: "batch"}, "embedding": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based export": on purpose
        torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, opset_version=17,
                          input_names=[input_name], output_names=["embedding"], dynamic_axes=dynamic)
    return path


def tiny_modules() -> tuple[TinyAudio, TinyText]:
    """The weights every tiny bundle is exported from."""
    torch.manual_seed(0)
    return TinyAudio().eval(), TinyText().eval()


def make_onnx_bundle(folder: Path, audio: nn.Module | None = None, input_name: str = "mel",
                     frames: int = FRAMES, example: torch.Tensor | None = None, model_id: str = "tiny-0001") -> Path:
    """A bundle with real graphs: model.onnx from `audio` and text.onnx from TinyText."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny_audio, tiny_text = tiny_modules()
    audio = audio or tiny_audio
    example = example if example is not None else torch.randn(2, 1, FRAMES, MELS)
    export(audio, example, folder / "model.onnx", input_name)
    export(tiny_text, torch.randint(0, VOCAB, (2, 7)), folder / "text.onnx", "input_ids",
           {"input_ids": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}})
    meta = BundleMeta(model_id=model_id, frontend=Frontend(frames=frames, n_mels=MELS), clip_seconds=5.0,
                      embedding_dim=DIM, logit_scale=50.0,
                      audio=tower_spec(folder, "model.onnx", ["mel"], ["embedding"]),
                      text=tower_spec(folder, "text.onnx", ["input_ids"], ["embedding"]),
                      text_encoder={"kind": "test"}, license="test only")
    write_bundle_meta(folder, meta)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(bundle, the torch audio module, the torch text module) with the same weights."""
    folder = make_onnx_bundle(tmp_path_factory.mktemp("bundle"))
    return (read_bundle(folder), *tiny_modules())


def mel_batch(batch: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, 1, FRAMES, MELS)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# ONNX Runtime reproduces torch, for both graphs


@pytest.mark.parametrize("batch", [1, 5])
def test_onnxruntime_reproduces_torch(tiny, batch):
    bundle, audio, _ = tiny
    mel = mel_batch(batch)
    with OnnxRuntimeBackend.for_bundle(bundle, threads=1) as backend:
        got = backend.embed(mel)
    with torch.no_grad():
        want = audio(torch.from_numpy(mel)).numpy()
    assert got.shape == (batch, DIM) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_the_same_backend_runs_the_text_graph(tiny):
    bundle, _, text = tiny
    ids = np.random.default_rng(2).integers(0, VOCAB, size=(3, 9))  # a length other than the export's 7
    backend = select_backend(bundle, "auto", graph="text", threads=1)
    assert backend.name == "onnxruntime" and backend.input_names == ("input_ids",)
    got = backend.run({"input_ids": ids})["embedding"]
    with torch.no_grad():
        want = text(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_a_graph_exported_with_a_fixed_batch_runs_any_batch(tmp_path):
    folder = tmp_path / "fixed"
    make_onnx_bundle(folder)
    audio, _ = tiny_modules()
    export(audio, torch.randn(2, 1, FRAMES, MELS), folder / "model.onnx", dynamic={})  # batch fixed at 2
    bundle = read_bundle(folder)
    backend = OnnxRuntimeBackend(bundle.audio_path, threads=1)
    assert backend.max_batch == 2  # so 3 runs as 2 + (1 padded to 2)
    mel = mel_batch(3)
    with torch.no_grad():
        want = audio(torch.from_numpy(mel)).numpy()
    np.testing.assert_allclose(backend.embed(mel), want, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Graphs that do not belong to their model.json fail at start-up, naming file, difference, fix


def test_a_wrong_input_name_is_refused(tmp_path):
    bundle = read_bundle(make_onnx_bundle(tmp_path / "b", input_name="spectrogram"))
    with pytest.raises(BackendError) as err:
        OnnxRuntimeBackend.for_bundle(bundle, threads=1)
    message = str(err.value)
    assert "model.onnx takes inputs ['spectrogram']" in message and "model.json says ['mel']" in message
    assert "semanticac-train export" in message


def test_a_wrong_rank_is_refused(tmp_path):
    bundle = read_bundle(make_onnx_bundle(tmp_path / "b", audio=TinyRank3(), example=torch.randn(2, FRAMES, MELS)))
    with pytest.raises(BackendError, match=r"model\.onnx: mel is float32 \[B, 48, 16\].*expect float32 "
                                           r"\[B, 1, 48, 16\] \(rank 3, not 4\).*semanticac-train export"):
        OnnxRuntimeBackend.for_bundle(bundle, threads=1)


def test_frames_other_than_the_frontends_are_refused(tmp_path):
    bundle = read_bundle(make_onnx_bundle(tmp_path / "b", frames=FRAMES + 4))
    with pytest.raises(BackendError, match=r"axis 2 is 48, not 52"):
        OnnxRuntimeBackend.for_bundle(bundle, threads=1)


def test_a_corrupt_graph_is_refused_naming_the_file(tmp_path):
    folder = make_onnx_bundle(tmp_path / "b")
    (folder / "model.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    bundle = read_bundle(folder)
    with pytest.raises(BackendError) as err:
        OnnxRuntimeBackend.for_bundle(bundle, threads=1)
    message = str(err.value)
    assert str(folder / "model.onnx") in message and "corrupt" in message and "semanticac-train export" in message
    assert "\n" not in message


def test_a_missing_text_graph_is_explained(tmp_path):
    folder = make_onnx_bundle(tmp_path / "b")
    bundle = read_bundle(folder)
    no_text = type(bundle)(path=bundle.path, meta=type(bundle.meta)(**{**bundle.meta.__dict__, "text": None}))
    with pytest.raises(BackendError, match="no text graph.*semanticac-edge embed-labels"):
        select_backend(no_text, "onnxruntime", graph="text")
