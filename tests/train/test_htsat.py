"""HTS-AT audio encoder: shapes, the resize matrix, gradients, the official checkpoint layout,
and parity with the original implementation ($SEMANTICAC_REFERENCE/htsat_golden)."""

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.model.htsat import HTSATConfig, bicubic_resize_matrix, build_htsat, count_parameters
from train.model.weights import CheckpointMismatchError, LoadReport, load_htsat_checkpoint

PAPER_PARAMETERS = 27_534_488  # the official checkpoint less STFT/mel kernels, tscam_conv and head


@pytest.fixture(scope="module")
def paper_model():
    torch.manual_seed(0)
    return build_htsat(HTSATConfig()).eval()


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return build_htsat(HTSATConfig.small()).eval()


def mel(batch, cfg):
    return torch.randn(batch, 1, cfg.num_frames, cfg.n_mels) * 10 - 40


# -----------------------------------------------------------------------------
# shapes and invariants


def test_paper_shapes_and_size(paper_model):
    cfg = paper_model.cfg
    assert count_parameters(paper_model) == PAPER_PARAMETERS
    with torch.no_grad():
        x = mel(2, cfg)
        assert paper_model.forward_image(x).shape == (2, 1, 256, 256)
        assert paper_model.forward_tokens(x).shape == (2, 64, 768)
        out = paper_model(x)
    assert out.shape == (2, cfg.embed_dim * 8, 8, 8) == (2, 768, 8, 8)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("batch", [1, 3])
def test_small_shapes_and_dynamic_batch(small_model, batch):
    cfg = small_model.cfg
    assert count_parameters(small_model) < 2_000_000
    x = mel(3, cfg)
    with torch.no_grad():
        full = small_model(x)
        out = small_model(x[:batch])
    assert out.shape == (batch, cfg.embed_dim * 8, 8, 8)
    torch.testing.assert_close(out, full[:batch], atol=1e-5, rtol=1e-5)  # samples do not mix


@pytest.mark.parametrize("n_in", [1001, 500, 1024, 7])
def test_resize_matrix_is_bicubic_align_corners(n_in):
    x = torch.randn(2, 1, n_in, 64)
    expected = F.interpolate(x, size=(1024, 64), mode="bicubic", align_corners=True)
    got = torch.matmul(bicubic_resize_matrix(n_in, 1024), x)
    assert (got - expected).abs().max() <= 1e-5


def test_image_is_the_original_fold(small_model):
    """Image row = chunk * 64 + mel bin, column = frame within the 256-frame chunk."""
    cfg = small_model.cfg
    x = mel(2, cfg)
    with torch.no_grad():
        image = small_model.forward_image(x)
        normed = small_model.bn0(x.transpose(1, 3)).transpose(1, 3)
    resized = F.interpolate(normed, size=(1024, cfg.n_mels), mode="bicubic", align_corners=True)
    for chunk in range(4):
        rows = image[:, 0, chunk * 64:(chunk + 1) * 64, :]  # [B, F, 256]
        frames = resized[:, 0, chunk * 256:(chunk + 1) * 256, :].transpose(1, 2)
        torch.testing.assert_close(rows, frames, atol=1e-4, rtol=0)


def test_wrong_input_size_names_the_shape(small_model):
    with pytest.raises(ValueError, match=r"1001, 64\].*\[1, 1, 500, 64\]"):
        small_model(torch.zeros(1, 1, 500, 64))


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = build_htsat(HTSATConfig.small()).train()
    model(mel(2, model.cfg)).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# -----------------------------------------------------------------------------
# the official checkpoint layout


def fake_checkpoint(reference_dir, prefix):
    """Random tensors with every key and shape of the official AudioSet checkpoint."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for line in (reference_dir / "htsat_audioset_checkpoint_keys.txt").read_text().splitlines():
        match = re.match(r"sed_model\.(\S+) \[([\d, ]*)\]", line)
        if not match:
            continue  # the totals line
        name, shape = match[1], [int(n) for n in match[2].split(",") if n.strip()]
        if name.endswith(("num_batches_tracked", "relative_position_index")):
            state[prefix + name] = torch.randint(0, 100, shape, generator=generator)
        else:
            state[prefix + name] = torch.randn(shape, generator=generator)
    return {"epoch": 0, "global_step": 0, "state_dict": state}


@pytest.mark.parametrize("prefix", ["sed_model.", "audio_branch."])
def test_official_layout_loads_completely(paper_model, reference_dir, tmp_path, prefix):
    ckpt = fake_checkpoint(reference_dir, prefix)
    path = tmp_path / "HTSAT_AudioSet_Saved_1.ckpt"
    torch.save(ckpt, path)
    report = load_htsat_checkpoint(paper_model, path)
    assert isinstance(report, LoadReport) and report.ok
    assert report.missing == [] and report.unexpected == []
    assert len(report.matched) == len(paper_model.state_dict())
    assert {prefix + "head.weight", prefix + "tscam_conv.weight", prefix + "logmel_extractor.melW",
            prefix + "layers.0.blocks.1.attn_mask"} <= set(report.ignored)
    assert str(path) in report.summary()
    name = "layers.2.blocks.3.mlp.fc1.weight"
    torch.testing.assert_close(paper_model.state_dict()[name], ckpt["state_dict"][prefix + name], rtol=0, atol=0)


def test_shape_mismatch_names_key_shapes_and_file(paper_model, reference_dir, tmp_path):
    ckpt = fake_checkpoint(reference_dir, "sed_model.")
    key = "sed_model.layers.1.blocks.0.attn.qkv.weight"
    ckpt["state_dict"][key] = torch.zeros(3 * 192, 96)
    path = tmp_path / "bad.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointMismatchError, match=rf"bad\.ckpt.*{re.escape(key)}.*\[576, 96\].*\[576, 192\]"):
        load_htsat_checkpoint(paper_model, path)


def test_missing_and_unexpected_keys(small_model):
    state = {f"sed_model.{k}": v.clone() for k, v in small_model.state_dict().items()}
    del state["sed_model.norm.bias"]
    state["sed_model.fusion_model.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError, match="missing: norm.bias"):
        load_htsat_checkpoint(small_model, {"state_dict": state})
    report = load_htsat_checkpoint(small_model, state, strict=False)
    assert not report.ok
    assert report.missing == ["norm.bias"] and report.unexpected == ["sed_model.fusion_model.weight"]
    with pytest.raises(CheckpointMismatchError, match="no HTS-AT weights"):
        load_htsat_checkpoint(small_model, {"visual.conv1.weight": torch.zeros(1)})


def test_a_file_that_is_not_weights_is_one_clear_error(small_model, tmp_path):
    """A text file (a download's error page) or a saved tensor passed as --audio / --text: a traceback
    (KeyError: 101; Tensor.__contains__) from `check-weights` and `fit --pretrained-*`."""
    from train.model.clip_weights import read_clip_state_dict

    page = tmp_path / "HTSAT.ckpt"
    page.write_text("<html>404 Not Found</html>\n")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(CheckpointMismatchError, match=r"HTSAT.ckpt cannot be read as torch weights .*: pass the "
                                                      r"checkpoint file itself"):
        load_htsat_checkpoint(small_model, page)
    with pytest.raises(CheckpointMismatchError, match=r"HTSAT.ckpt cannot be read as torch weights"):
        read_clip_state_dict(page)
    with pytest.raises(CheckpointMismatchError, match=r"tensor.pt holds a Tensor, not a state dict of named tensors"):
        load_htsat_checkpoint(small_model, tensor)


# -----------------------------------------------------------------------------
# parity with the original implementation


def test_golden_reduced_model(reference_dir):
    golden = reference_dir / "htsat_golden"
    arch = json.loads((golden / "config.json").read_text())["architecture"]
    assert arch.pop("patch_stride") == [arch["patch_size"]] * 2  # ours: stride == patch size
    model = build_htsat(HTSATConfig(**arch))
    assert load_htsat_checkpoint(model, golden / "htsat_reduced.ckpt").ok
    model.eval()
    x = torch.from_numpy(np.load(golden / "input_logmel.npy"))
    with torch.no_grad():
        image = model.forward_image(x).numpy()
        tokens = model(x).numpy()
    image_err = np.abs(image - np.load(golden / "expected_image.npy")).max()
    tokens_err = np.abs(tokens - np.load(golden / "expected_tokens.npy")).max()
    latent_err = np.abs(tokens.mean(axis=(2, 3)) - np.load(golden / "expected_latent.npy")).max()
    assert image_err <= 1e-4, image_err
    assert tokens_err <= 1e-4, tokens_err
    assert latent_err <= 1e-4, latent_err
