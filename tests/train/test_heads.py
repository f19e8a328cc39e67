"""Heads (CSCM and the Table 3 comparisons): shapes, gradients, CBAM by hand, ONNX parity."""

import math
import warnings

import numpy as np
import pytest
import torch

from train.model.cscm import CBAM, CSCM, ChannelGate, CSCMConfig, SpatialGate
from train.model.heads import HEAD_KINDS, build_head, map_to_tokens

NUM_CLASSES = 50  # ESC-50
EMBED = 1024  # C, the paper's joint embedding width


def _head(kind: str, dim: int, embed: int = EMBED) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_head(kind, dim, embed, num_classes=NUM_CLASSES)


def _out_dim(kind: str, embed: int = EMBED) -> int:
    return NUM_CLASSES if kind == "onehot" else embed


@pytest.mark.parametrize("dim", [64, 768])  # a small encoder and the paper's
@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_output_shape_and_finite_for_any_batch(kind, dim):
    head = _head(kind, dim)
    assert head.out_dim == _out_dim(kind)
    with torch.no_grad():
        train_out = head.train()(torch.randn(2, dim, 8, 8))  # BatchNorm needs > 1 value per channel
        eval_outs = [head.eval()(torch.randn(b, dim, 8, 8)) for b in (1, 3)]
    for out, batch in zip([train_out, *eval_outs], (2, 1, 3)):
        assert out.shape == (batch, _out_dim(kind))
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_every_parameter_gets_a_gradient(kind):
    head = _head(kind, 64, embed=32).train()
    out = head(torch.randn(3, 64, 8, 8))
    (out * torch.randn_like(out)).sum().backward()  # random weights: no symmetric cancellation
    for name, p in head.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_tokens_are_the_map_read_row_by_row():
    x = torch.randn(2, 5, 8, 8)
    tokens = map_to_tokens(x)
    assert tokens.shape == (2, 64, 5)
    for n in (0, 7, 8, 35, 63):
        torch.testing.assert_close(tokens[:, n], x[:, :, n // 8, n % 8])


def test_channel_gate_matches_hand_computation():
    torch.manual_seed(0)
    gate = ChannelGate(32, reduction=16).eval()  # hidden width 32 / 16 = 2
    x = torch.randn(1, 32, 2, 3)
    w1, b1 = gate.mlp[0].weight.detach().numpy(), gate.mlp[0].bias.detach().numpy()
    w2, b2 = gate.mlp[2].weight.detach().numpy(), gate.mlp[2].bias.detach().numpy()
    assert w1.shape == (2, 32)
    xs = x[0].numpy()  # (32, 2, 3)
    avg = xs.reshape(32, -1).sum(1) / 6
    peak = xs.reshape(32, -1).max(1)

    def mlp(v):
        return w2 @ np.maximum(w1 @ v + b1, 0) + b2

    weight = 1 / (1 + np.exp(-(mlp(avg) + mlp(peak))))
    expected = xs * weight[:, None, None]
    np.testing.assert_allclose(gate(x)[0].detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_spatial_gate_matches_hand_computation():
    gate = SpatialGate(kernel_size=1).eval()  # 1x1: checks the pooled order (max, mean) and the BN
    with torch.no_grad():
        gate.conv.weight.copy_(torch.tensor([2.0, -3.0]).view(1, 2, 1, 1))
    x = torch.randn(1, 4, 2, 2)
    xs = x[0].numpy()
    bn_scale = 1 / math.sqrt(1 + gate.bn.eps)  # fresh BatchNorm in eval: running mean 0, var 1
    weight = 1 / (1 + np.exp(-(2.0 * xs.max(0) - 3.0 * xs.mean(0)) * bn_scale))  # (2, 2)
    np.testing.assert_allclose(gate(x)[0].detach().numpy(), xs * weight, rtol=1e-5, atol=1e-6)
    default = SpatialGate()
    assert default.conv.weight.shape == (1, 2, 7, 7) and default.conv.padding == (3, 3)


def test_cbam_only_attenuates():
    # Both gates are sigmoids in (0, 1): every value keeps its sign and shrinks.
    x = torch.randn(2, 64, 8, 8)
    ratio = CBAM(64).eval()(x) / x
    assert ((ratio > 0) & (ratio < 1)).all()


def test_cscm_columns_are_one_embedding_a_row_whose_mean_is_the_pooled_one():
    torch.manual_seed(0)
    head = CSCM(32, embed_dim=24).eval()
    x = torch.randn(3, 32, 6, 2)
    columns = head.columns(x)
    assert columns.shape == (3, 6, 24)
    torch.testing.assert_close(columns.mean(1), head(x))
    late = x.clone()
    late[:, :, 5] += 3.0  # a sound in the last row moves that row's embedding most
    moved = (head.columns(late) - columns).norm(dim=-1)
    assert moved[:, 5].min() > moved[:, 0].max()


def test_cscm_parameter_count_for_the_paper_size():
    d, h, c = 768, 384, 1024  # D, the CNN block width (D / 2), C
    cbam = (d * d // 16 + d // 16) + (d // 16 * d + d) + 2 * 7 * 7 + 2  # channel MLP, 7x7 conv + BN
    block = (d * h * 9 + 2 * h) + (h * h + 2 * h)  # 3x3 conv + BN, 1x1 conv + BN
    expected = cbam + block + (h * c + c)  # + Linear to C
    head = build_head("cscm", d, c)
    assert sum(p.numel() for p in head.parameters()) == expected == 3_272_084
    seq_transf = build_head("seq_transf", d, c)
    assert sum(p.numel() for p in seq_transf.parameters()) > 8 * expected  # the paper's "lightweight"


def test_cscm_config_widths():
    head = build_head("cscm", 96, 32, hidden_dim=24, reduction=8, spatial_kernel=3)
    assert head.conv3.conv.weight.shape == (24, 96, 3, 3)
    assert head.cbam.channel.mlp[0].weight.shape == (12, 96)
    assert head.cbam.spatial.conv.weight.shape == (1, 2, 3, 3)
    assert CSCM(96).conv3.conv.out_channels == 48 and CSCMConfig().hidden_dim is None


def test_unknown_kind_lists_the_valid_kinds():
    with pytest.raises(ValueError, match="unknown head kind 'cnn'") as err:
        build_head("cnn", 64, 32)
    for kind in HEAD_KINDS:
        assert repr(kind)[1:-1] in str(err.value)


def test_bad_options_name_the_key():
    with pytest.raises(ValueError, match="'widht'.*valid options.*hidden_dim"):
        build_head("cscm", 64, 32, widht=3)
    with pytest.raises(TypeError, match="'layers'.*int"):
        build_head("seq_lstm", 64, 32, layers="2")
    with pytest.raises(ValueError, match="'layers'.*'mean'"):
        build_head("mean", 64, 32, layers=2)
    with pytest.raises(ValueError, match="num_classes"):
        build_head("onehot", 64, 32)
    with pytest.raises(ValueError, match="heads=3 must divide in_dim=64"):
        build_head("seq_transf", 64, 32, heads=3)
    assert build_head("seq_transf", 64, 32, mlp_ratio=2, layers=1).out_dim == 32


def _export(head: torch.nn.Module, dim: int, path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter warns that it is legacy; torch's own attention code trips
        # TracerWarnings on constant shape checks. Neither affects the graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            head,
            (torch.randn(2, dim, 8, 8),),  # batch 2, run at 1 and 3: the batch axis must be dynamic
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["map"],
            output_names=["out"],
            dynamic_axes={"map": {0: "batch"}, "out": {0: "batch"}},
        )


@pytest.mark.parametrize(
    "kind, dim", [(kind, 64) for kind in HEAD_KINDS] + [("cscm", 768)]  # + the shipped head at full size
)
def test_onnx_export_matches_torch(kind, dim, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (extra [ort] or [dev])")
    head = _head(kind, dim).eval()
    _export(head, dim, tmp_path / "head.onnx")
    session = ort.InferenceSession(str(tmp_path / "head.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", dim, 8, 8]
    for batch in (1, 3):
        x = torch.randn(batch, dim, 8, 8)
        with torch.no_grad():
            expected = head(x).numpy()
        (got,) = session.run(None, {"map": x.numpy()})
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
