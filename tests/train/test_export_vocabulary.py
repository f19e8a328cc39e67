"""The vocabulary branch end to end: a YAMNet student whose first layers stay pretrained exports
a second graph, YAMNet's own last layers and AudioSet head on the map the student's graph hands
it, and the device fuses it; an older bundle with the branch inside model.onnx is split."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow

SHARED = 12


@pytest.fixture(scope="module")
def vocab_bundle(tmp_path_factory):
    from edge.bundle import read_bundle
    from edge.labels.labelset import resolve_label_set
    from train.checkpoint import model_id
    from train.export import export_bundle
    from train.model.config import load_model_config
    from train.model.semanticac import build_model

    torch.manual_seed(0)
    config = load_model_config("yamnet")
    model = build_model(config).eval()  # pretrained YAMNet trunk, untrained head
    out = tmp_path_factory.mktemp("bundles") / "vocab"
    export_bundle(model, config, out, model_id=model_id(model, config), clip_seconds=5.0,
                  label_sets=[resolve_label_set("urban")], training={"command": "tests"},
                  scoring={"kind": "sigmoid", "logit_bias": -5.0},
                  vocabulary={"shared": SHARED, "tau": 0.05, "novelty_cosine": 0.9, "student_weight": 0.7})
    return read_bundle(out, verify=True)


def speech(seconds=5.0, rate=16000):
    from train.data.background import espeak

    x = espeak("the quick brown fox jumps over the lazy dog, then it talks about the weather", "en", "", 150, 50,
               rate)
    x = np.tile(x, int(np.ceil(seconds * rate / len(x))))[: int(seconds * rate)]
    return (0.1 * x / np.abs(x).max()).astype(np.float32)


def test_the_graph_scores_the_vocabulary_and_the_device_fuses_it(vocab_bundle):
    from edge.backends import select_backend
    from edge.features import log_mel, tile_frames
    from edge.labels.embeddings import label_embeddings_for
    from edge.labels.labelset import Label, resolve_label_set
    from edge.scoring import Scorer
    from edge.vocabulary import Vocabulary

    meta = vocab_bundle.meta
    assert meta.audio.outputs == ("embedding", "trunk") and meta.vocabulary["trained"] == ["urban"]
    assert meta.vocabulary["graph"].inputs == ("trunk",) and meta.vocabulary["graph"].outputs == ("vocabulary",)
    vocabulary = Vocabulary.from_bundle(vocab_bundle)
    assert len(vocabulary.names) == 521 and vocabulary.names[0] == "Speech"
    mel = tile_frames(log_mel(speech(), meta.frontend), meta.frontend.frames)[None, None]
    with select_backend(vocab_bundle, "onnxruntime", threads=1) as backend, \
            select_backend(vocab_bundle, graph="vocabulary", threads=1) as graph:
        out = backend.run({"mel": mel})
        voc = vocabulary.scores(graph, out)
    p = voc[0]
    assert p.shape == (521,) and 0 <= p.min() and p.max() <= 1
    assert vocabulary.names[int(p.argmax())] in {"Speech", "Male speech, man speaking", "Narration, monologue"}
    # `speech` added to the urban set by YAML: no one trained it, the vocabulary names it
    urban = resolve_label_set("urban")
    with_speech = dataclasses.replace(urban, name="urban+speech",
                                      labels=(*urban.labels, Label("speech", ("an audio clip of speech",), 0.5)))
    scorer = Scorer.for_bundle(meta, label_embeddings_for(vocab_bundle, with_speech), with_speech, vocabulary)
    assert scorer.fusion.novel.tolist() == [False] * len(urban.labels) + [True]
    assert scorer.labels[int(scorer(out["embedding"], voc)[0].argmax())] == "speech"


def test_weights_on_an_int8_grid_are_stored_as_int8_and_others_are_left_alone(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from train.export import int8_grid, store_int8_on_grid

    rng = np.random.default_rng(0)
    scale = rng.uniform(0.001, 0.01, 256).astype(np.float32)
    q = rng.integers(-127, 128, (256, 256, 1, 1))  # GRID_MIN_SIZE elements: smaller weights stay as they are
    q[:, 0, 0, 0] = 127  # each channel reaches its grid's end, as a w8a8 export's do
    on_grid = (q * scale[:, None, None, None]).astype(np.float16)
    found = int8_grid(on_grid)
    assert found is not None and found[2] == 0 and np.array_equal(found[0], q)
    off_grid = rng.standard_normal((256, 256, 1, 1)).astype(np.float16)  # a fine-tuned weight
    assert int8_grid(off_grid) is None
    # a graph: x -> Conv(on_grid) -> Conv(off_grid): the first weight becomes int8, the outputs stay
    weights = [numpy_helper.from_array(on_grid, "a"),
               numpy_helper.from_array(off_grid, "b")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "a"], ["h"]), helper.make_node("Conv", ["h", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 256, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 256, 2, 2])], weights)
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = {"x": rng.standard_normal((1, 256, 2, 2)).astype(np.float16)}
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, x)[0]
    saved = store_int8_on_grid(path)
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, x)[0]
    stored = {init.name: numpy_helper.to_array(init).dtype for init in onnx.load(str(path)).graph.initializer}
    assert stored == {"a_int8": np.int8, "a_scale": np.float32, "b": np.float16}
    assert saved == on_grid.nbytes - on_grid.size - 256 * 4
    scale_of_y = float(np.abs(before.astype(np.float32)).max())  # FP16 sums of 256 terms: judge by y's scale
    np.testing.assert_allclose(after.astype(np.float32), before.astype(np.float32), rtol=0, atol=1e-3 * scale_of_y)


def test_an_older_bundle_with_the_branch_inside_model_onnx_is_split(vocab_bundle, tmp_path):
    """`semanticac-train split-vocabulary`: rebuild the old layout (one graph, both outputs) from the
    fixture's two graphs, split it, and get the student's embeddings and a vocabulary back."""
    import json
    import shutil

    import onnx
    import onnxruntime as ort
    from click.testing import CliRunner

    from edge.bundle import read_bundle
    from train.cli import main

    old = tmp_path / "old"
    shutil.copytree(vocab_bundle.path, old)
    audio = onnx.load(str(old / "model.onnx"))
    branch = onnx.compose.add_prefix(onnx.load(str(old / "vocabulary.onnx")), "branch/")
    merged = onnx.compose.merge_models(audio, branch, io_map=[("trunk", "branch/trunk")],
                                       outputs=["embedding", "branch/vocabulary"])
    onnx.save(merged, str(old / "model.onnx"))
    (old / "vocabulary.onnx").unlink()
    data = json.loads((old / "model.json").read_text())
    data["audio"]["outputs"] = ["embedding", "branch/vocabulary"]
    data["vocabulary"] = {**{k: v for k, v in data["vocabulary"].items() if not k.startswith("veto") and k != "graph"},
                          "output": "branch/vocabulary", "student_weight": 1.0}
    (old / "model.json").write_text(json.dumps(data))
    with pytest.raises(Exception, match="semanticac-train split-vocabulary"):
        read_bundle(old)
    mel = np.random.default_rng(1).standard_normal((1, 1, data["frontend"]["frames"], 64)).astype(np.float32)
    want = ort.InferenceSession(str(old / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"mel": mel})

    result = CliRunner().invoke(main, ["split-vocabulary", "--bundle", str(old), "--shared", str(SHARED)])
    assert result.exit_code == 0, result.output
    split = read_bundle(old, verify=True)
    assert split.meta.audio.outputs == ("embedding", "trunk") and split.meta.vocabulary["veto_power"] == 0.0
    got = ort.InferenceSession(str(old / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"mel": mel})
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)  # the student's embeddings: unchanged
    branch = ort.InferenceSession(str(old / "vocabulary.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(branch.run(None, {"trunk": got[1]})[0], want[1], atol=1e-4)  # YAMNet's own layers
    again = CliRunner().invoke(main, ["split-vocabulary", "--bundle", str(old), "--shared", str(SHARED)])
    assert again.exit_code != 0 and "nothing to split" in again.output


def test_a_student_whose_shared_layers_were_fine_tuned_gets_no_branch():
    from train.model.config import load_model_config
    from train.model.semanticac import build_model
    from train.model.yamnet import vocabulary_branch

    model = build_model(load_model_config("yamnet"))
    with torch.no_grad():
        model.audio.trunk[3].pointwise.conv.weight[0, 0] += 0.01
    with pytest.raises(ValueError, match=r"trunk layer 4 moved .* freeze_audio_layers: 12"):
        vocabulary_branch(model.audio, SHARED)
    vocabulary_branch(model.audio, SHARED, max_drift=0.05)  # a small drift may be allowed
    # the branch's last layer may be the student's own (one copy of its weights in the graph)
    branch = vocabulary_branch(model.audio, 8, max_drift=0.05, tail=1)
    assert branch.layers[-1] is model.audio.trunk[-1] and branch.layers[0] is not model.audio.trunk[8]
    with pytest.raises(ValueError, match="tail=7"):
        vocabulary_branch(model.audio, 8, max_drift=0.05, tail=7)


def test_freeze_audio_layers_keeps_the_prefix_pretrained():
    from train.loop import freeze
    from train.model.config import load_model_config
    from train.model.semanticac import build_model

    model = build_model(load_model_config("yamnet"))
    recipe = type("R", (), {"freeze_audio": False, "freeze_text": True, "freeze_audio_layers": SHARED})()
    freeze(model, recipe)
    frozen = [all(not p.requires_grad for p in layer.parameters()) for layer in model.audio.trunk]
    assert frozen == [True] * SHARED + [False] * (len(model.audio.trunk) - SHARED)


def test_vocabulary_trust_records_which_trained_labels_the_vocabulary_hears(vocab_bundle, data_dir, tmp_path):
    """`semanticac-train vocabulary-trust` hears the trained labels' own clips again (real
    UrbanSound8K audio) and records each label's share in model.json; the fusion then never
    vetoes a label the vocabulary does not hear."""
    import shutil

    from click.testing import CliRunner

    from edge.bundle import read_bundle
    from edge.labels.embeddings import label_embeddings_for
    from edge.labels.labelset import Label, resolve_label_set
    from edge.vocabulary import Vocabulary
    from train.cli import main
    from train.vocabulary_trust import FAMILIAR

    copy = tmp_path / "bundle"
    shutil.copytree(vocab_bundle.path, copy)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: yamnet\ndata: {{kind: us8k, root: {data_dir / 'us8k'}, max_per_class: 6}}\n"
                      "labels: urban\n")
    assert vocab_bundle.meta.vocabulary["veto_power"] == 0.0  # exported without training clips: off
    result = CliRunner().invoke(main, ["vocabulary-trust", "--bundle", str(copy), "--config", str(recipe),
                                       "--veto-power", "0.5", "--ceiling-floor", "0.1"])
    assert result.exit_code == 0, result.output
    bundle = read_bundle(copy, verify=True)  # the graphs are untouched
    shares = bundle.meta.vocabulary["heard"]["urban"]
    urban = resolve_label_set("urban")
    assert sorted(shares) == sorted(urban.names) and all(0 <= s <= 1 for s in shares.values())
    assert bundle.meta.vocabulary["veto_power"] == 0.5 and bundle.meta.vocabulary["veto_reliable"] == 0.3
    assert shares["siren"] >= 0.5  # YAMNet's AudioSet head hears sirens
    ceiling = bundle.meta.vocabulary["ceiling"]
    assert ceiling["clips"] == 60 and (ceiling["quantile"], ceiling["floor"]) == (0.999, 0.1)
    assert "ceiling over 60 clips: " in result.output
    vocabulary = Vocabulary.from_bundle(bundle)
    reached = dict(zip(vocabulary.names, vocabulary.ceiling))
    assert len(reached) == 521 and all(0.1 <= x <= 1 for x in reached.values())
    assert reached["Siren"] >= 0.5 and min(reached.values()) == pytest.approx(0.1)  # some class no clip says
    with_frog = dataclasses.replace(urban, name="urban+frog",
                                    labels=(*urban.labels, Label("frog", ("an audio clip of frog",), 0.5)))
    fusion = vocabulary.fusion(label_embeddings_for(bundle, with_frog).embeddings)
    trusted = np.array([shares[name] >= 0.3 for name in urban.names])
    named = fusion.veto[:-1] > 0
    assert not (named & ~trusted).any() and fusion.veto[-1] == 0
    assert named[urban.names.index("siren")]
    np.testing.assert_allclose(fusion.ceiling, vocabulary.ceiling, rtol=1e-6)  # a new label is scored against it
    # familiar: what each trained label's own clips made the vocabulary say
    familiar, names = vocabulary.familiar, list(vocabulary.names)
    assert bundle.meta.vocabulary["familiar"]["clips"] == 60 and names[familiar.ignore.argmax()] == "Silence"
    trained = [f"{name}/{label}" for name in bundle.meta.vocabulary["trained"]
               for label in label_embeddings_for(bundle, resolve_label_set(name)).labels]
    siren = familiar.scores[trained.index("urban/siren")]
    assert siren[names.index("Siren")] >= 0.5 and siren[names.index("Frog")] < 0.2
    assert fusion.intruder is not None and np.isinf(fusion.intruder[-1]).all()  # never the new frog
    assert np.isinf(fusion.intruder[:, names.index("Frog")]).all()  # frog is a label of the set: no intruder
    # the frog outweighs exactly the trained labels the vocabulary cannot hear by name (model.json records the margin)
    assert bundle.meta.vocabulary["familiar"]["outweighs"] == FAMILIAR["outweighs"] > 0
    over = np.zeros(len(trusted), bool) if fusion.outweigh is None else np.isfinite(fusion.outweigh[:-1, -1])
    assert over.tolist() == (~trusted).tolist() and (~trusted).any()  # 6 clips a label: some are not heard
    if fusion.outweigh is not None:
        assert np.isinf(fusion.outweigh[:, :-1]).all()  # only a new label outweighs
    # a damaged measurement is what the command fixes: it measures again without reading it
    (copy / "familiar.npz").write_bytes(b"damaged")
    again = CliRunner().invoke(main, ["vocabulary-trust", "--bundle", str(copy), "--config", str(recipe)])
    assert again.exit_code == 0, again.output
    assert Vocabulary.from_bundle(read_bundle(copy)).familiar.scores.shape == familiar.scores.shape


def test_an_export_whose_training_clips_are_elsewhere_switches_the_veto_off(vocab_bundle, tmp_path, caplog):
    import shutil

    from edge.bundle import read_bundle, write_bundle_meta
    from train.vocabulary_trust import trust_exported

    copy = tmp_path / "bundle"
    shutil.copytree(vocab_bundle.path, copy)
    meta = read_bundle(copy).meta
    write_bundle_meta(copy, dataclasses.replace(meta, vocabulary={**meta.vocabulary, "veto_power": 0.3}))
    recipe = {"model": "yamnet", "data": [{"kind": "us8k", "root": str(tmp_path / "gone")}], "labels": ["urban"]}
    assert trust_exported(copy, recipe) is None
    vocabulary = read_bundle(copy, verify=True).meta.vocabulary
    assert vocabulary["veto_power"] == 0.0 and vocabulary["heard"] is None and vocabulary["ceiling"] is None
    assert "vocabulary-trust" in caplog.text and str(tmp_path / "gone") in caplog.text


def test_the_vocabulary_graph_becomes_yamnet_on_the_window_s_patches(vocab_bundle, data_dir, tmp_path):
    """`vocabulary-patches`: vocabulary.onnx reads the audio graph's input and is YAMNet on its
    0.96 s patches (ONNX Runtime equals torch's VocabularyPatches); model.onnx and the trained
    labels stay; what was measured on the old graph is dropped, and --config measures it again."""
    import shutil

    from click.testing import CliRunner

    from edge.backends import select_backend
    from edge.bundle import read_bundle
    from edge.features import log_mel, tile_frames
    from edge.labels.embeddings import LabelEmbeddings, label_embeddings_for
    from edge.labels.labelset import Label, resolve_label_set
    from edge.scoring import Scorer
    from edge.vocabulary import Vocabulary
    from train.cli import main
    from train.export import PATCHES_SOURCE
    from train.model.yamnet import vocabulary_patches

    copy = tmp_path / "bundle"
    shutil.copytree(vocab_bundle.path, copy)
    result = CliRunner().invoke(main, ["vocabulary-patches", "--bundle", str(copy)])
    assert result.exit_code == 0, result.output
    bundle = read_bundle(copy, verify=True)
    spec = bundle.meta.vocabulary
    assert spec["graph"].inputs == ("mel",) and spec["source"] == PATCHES_SOURCE
    assert spec["heard"] is None and spec["ceiling"] is None and spec["veto_power"] == 0.0
    assert (copy / "model.onnx").read_bytes() == (vocab_bundle.path / "model.onnx").read_bytes()
    with np.load(copy / "labels" / "audioset.npz") as data:  # the 521 names at half the bytes
        assert data["embeddings"].dtype == np.float16
    assert LabelEmbeddings.load(copy / "labels" / "urban.npz").embeddings.dtype == np.float32
    mel = tile_frames(log_mel(speech(), bundle.meta.frontend), bundle.meta.frontend.frames)[None, None]
    vocabulary = Vocabulary.from_bundle(bundle)
    with select_backend(bundle, "onnxruntime", threads=1) as backend, \
            select_backend(bundle, graph="vocabulary", threads=1) as graph:
        out = {"mel": mel, **backend.run({"mel": mel})}
        voc = vocabulary.scores(graph, out)
    assert spec["graph"].outputs == ("vocabulary", "features")
    with torch.no_grad():
        want, features = vocabulary_patches(bundle.meta.frontend.frames)(torch.from_numpy(mel))
    np.testing.assert_allclose(voc, want.numpy(), atol=1e-4)
    with select_backend(bundle, graph="vocabulary", threads=1) as graph:
        np.testing.assert_allclose(graph.run({"mel": mel})["features"], features.numpy(), atol=1e-3, rtol=1e-4)
    assert vocabulary.names[int(voc[0].argmax())] in {"Speech", "Male speech, man speaking", "Narration, monologue"}
    urban = resolve_label_set("urban")
    with_speech = dataclasses.replace(urban, name="urban+speech",
                                      labels=(*urban.labels, Label("speech", ("an audio clip of speech",), 0.5)))
    scorer = Scorer.for_bundle(bundle.meta, label_embeddings_for(bundle, with_speech), with_speech, vocabulary)
    assert scorer.labels[int(scorer(out["embedding"], voc)[0].argmax())] == "speech"
    # measured again on training clips
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: yamnet\ndata: {{kind: us8k, root: {data_dir / 'us8k'}, max_per_class: 3}}\n"
                      "labels: urban\n")
    result = CliRunner().invoke(main, ["vocabulary-patches", "--bundle", str(copy), "--config", str(recipe),
                                       "--veto-power", "0.3"])
    assert result.exit_code == 0, result.output
    assert "trained labels the vocabulary hears in at least 30% of their training clips: urban" in result.output
    spec = read_bundle(copy, verify=True).meta.vocabulary
    assert spec["veto_power"] == 0.3 and spec["heard"]["urban"]["siren"] >= 0.5
    assert spec["ceiling"] is None  # by default none: with YAMNet on patches it costs more than it gains


def test_vocabulary_patches_needs_a_vocabulary_graph(tmp_path, demo_bundle):
    import json
    import shutil

    from click.testing import CliRunner

    from train.cli import main

    copy = tmp_path / "bundle"
    shutil.copytree(demo_bundle.path, copy)
    data = json.loads((copy / "model.json").read_text())
    del data["vocabulary"]
    (copy / "model.json").write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["vocabulary-patches", "--bundle", str(copy)])
    assert result.exit_code != 0 and "has no vocabulary graph to replace" in result.output
    assert "--vocabulary-shared" in result.output


def test_a_head_on_yamnet_s_features_is_fitted_for_the_trained_labels_and_mixed_on_the_device(
        vocab_bundle, data_dir, tmp_path, monkeypatch):
    """`vocabulary-head`: a head (a hidden layer, then a logistic output per trained label) on the
    patches graph's features, fitted on the recipe's training and background clips, in place; every
    trained set then runs the
    vocabulary graph and its labels' logits are the mean of the student's and the head's; a graph
    without features is refused with the command that makes one, and a new graph drops the head."""
    import shutil

    from click.testing import CliRunner

    from edge.backends import select_backend
    from edge.bundle import read_bundle
    from edge.capture.audio import read_audio
    from edge.features import log_mel, tile_frames
    from edge.labels.embeddings import label_embeddings_for
    from edge.labels.labelset import resolve_label_set
    from edge.scoring import Scorer
    from edge.vocabulary import Vocabulary
    from train.cli import main
    from train.data.datasets import DataSpec, split_clips
    from train.vocabulary_head import MLP

    monkeypatch.setitem(MLP, "steps", 300)  # 46 clips fit in far fewer than a real set's 2000 steps (~30 s here)
    copy = tmp_path / "bundle"
    shutil.copytree(vocab_bundle.path, copy)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: yamnet\ndata: {{kind: us8k, root: {data_dir / 'us8k'}, max_per_class: 4}}\n"
                      "labels: urban\nscoring: sigmoid\nloss: class_prompt\n"
                      f"background: {{count: 6, root: {tmp_path / 'bg'}}}\n")
    refused = CliRunner().invoke(main, ["vocabulary-head", "--bundle", str(copy), "--config", str(recipe)])
    assert refused.exit_code != 0 and "semanticac-train vocabulary-patches --bundle" in refused.output
    assert CliRunner().invoke(main, ["vocabulary-patches", "--bundle", str(copy)]).exit_code == 0
    bare = tmp_path / "bare.yaml"  # no background clips: nothing to lay under copies of the clips
    bare.write_text(recipe.read_text().split("background:")[0])
    refused = CliRunner().invoke(main, ["vocabulary-head", "--bundle", str(copy), "--config", str(bare),
                                        "--under-kinds", "speech"])
    assert refused.exit_code != 0 and "recipe has none: give it `background: {count: 400}`" in refused.output
    refused = CliRunner().invoke(main, ["vocabulary-head", "--bundle", str(copy), "--config", str(recipe),
                                        "--under-db", "30", "10"])
    assert refused.exit_code != 0 and "30 10: LOW must not be above HIGH" in refused.output
    result = CliRunner().invoke(main, ["vocabulary-head", "--bundle", str(copy), "--config", str(recipe),
                                       "--copies", "1", "--placed", "1", "--over", "1"])
    assert result.exit_code == 0, result.output
    assert "1 with another clip over them" in result.output
    bundle = read_bundle(copy, verify=True)  # head.npz is hashed like the graphs
    head = bundle.meta.vocabulary["head"]
    assert head["input"] == "features" and head["weight"] == head["agree"] == 0.5 and (head["fit"]["copies"], head["fit"]["placed"]) == (1, 1)
    assert head["fit"]["over"] == 1 and head["fit"]["over_db"] == [0.0, 10.0]
    assert 40 + 1 <= head["clips"] <= 40 + 6  # 4 clips of each of 10 classes, and the background without streets
    assert head["fit"]["sets"]["urban"]["train_accuracy"] >= 0.9
    vocabulary = Vocabulary.from_bundle(bundle)
    assert head["fit"]["hidden"] == 128 and vocabulary.head.hidden[0].shape[0] == 128  # the default: a hidden layer
    urban = resolve_label_set("urban")
    scorer = Scorer.for_bundle(bundle.meta, label_embeddings_for(bundle, urban), urban, vocabulary)
    assert scorer.fusion is not None  # a trained set now runs the vocabulary graph
    clips, class_names = split_clips(DataSpec(kind="us8k", root=str(data_dir / "us8k"), max_per_class=4), "train")
    fe = bundle.meta.frontend
    mel = tile_frames(log_mel(read_audio(str(clips[0].path), fe.sample_rate)[: fe.seconds_to_samples(5.0)], fe),
                      fe.frames)[None, None]
    with select_backend(bundle, "onnxruntime", threads=1) as backend, \
            select_backend(bundle, graph="vocabulary", threads=1) as graph:
        out = {"mel": mel, **backend.run({"mel": mel})}
        row = vocabulary.scores(graph, out)
        features = graph.run({"mel": mel})["features"]
    assert row.shape == (1, len(vocabulary.names) + len(urban.labels))
    student = Scorer.for_bundle(bundle.meta, label_embeddings_for(bundle, urban)).logits(out["embedding"])
    np.testing.assert_allclose(scorer.logits(out["embedding"], row),
                               0.5 * student + 0.5 * vocabulary.head.logits(features),
                               rtol=1e-5, atol=1e-5)
    assert urban.names[int(row[0, len(vocabulary.names):].argmax())] == class_names[clips[0].target]  # a training clip
    # a new vocabulary graph: what was fitted on the old one goes
    assert CliRunner().invoke(main, ["vocabulary-patches", "--bundle", str(copy)]).exit_code == 0
    assert read_bundle(copy, verify=True).meta.vocabulary["head"] is None and not (copy / "head.npz").exists()
