"""Export: a bundle that edge reads, whose graphs ONNX Runtime runs like torch."""

import dataclasses
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from edge.bundle import read_bundle
from edge.capture.audio import read_audio
from edge.errors import LabelSetError
from edge.features import Frontend, log_mel
from edge.labels.embeddings import LabelEmbeddings, find_label_embeddings
from edge.labels.labelset import resolve_label_set
from edge.labels.tokenizers import load_tokenizer
from tests.train.test_htsat import fake_checkpoint
from tests.train.test_text import _torchscript_archive, fake_rn50  # noqa: F401 (fixture)
from train import cli
from train.checkpoint import model_from_checkpoint, model_id, save_checkpoint
from train.export import COMPACT_COSINE, TENSORRT_OPS, exact_int8_products, export_bundle
from train.model.config import load_model_config
from train.model.semanticac import build_model

TOL = 1e-4


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    config = load_model_config("small")
    return build_model(config).eval(), config


@pytest.fixture(scope="module")
def bundle(small, tmp_path_factory):
    model, config = small
    out = tmp_path_factory.mktemp("export") / "bundle"
    export_bundle(model, config, out, model_id=model_id(model, config), clip_seconds=5.0,
                  label_sets=[resolve_label_set("urban")], training={"command": "test"}, license="test")
    return read_bundle(out, verify=True)


def embed_audio_onnx(bundle, mel: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(bundle.audio_path), providers=["CPUExecutionProvider"])
    return session.run(["embedding"], {"mel": mel})[0]


def test_bundle_is_what_edge_reads(bundle, small):
    model, config = small
    meta = bundle.meta
    assert meta.model_id == model_id(model, config) and meta.clip_seconds == 5.0
    assert meta.embedding_dim == config.embed_dim == 256
    assert meta.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)
    assert meta.audio.inputs == ("mel",) and meta.text.inputs == ("input_ids", "attention_mask")
    assert meta.frontend == Frontend()
    assert meta.text_encoder["kind"] == "minilm" and meta.text_encoder["tokenizer"] == "wordpiece"
    assert find_label_embeddings(bundle, resolve_label_set("urban")).labels[3] == "dog_bark"


def test_audio_graph_ops_and_dynamic_batch(bundle):
    graph = onnx.load(str(bundle.audio_path))
    ops = {node.op_type for node in graph.graph.node}
    assert ops <= TENSORRT_OPS and "Resize" not in ops
    assert graph.opset_import[0].version >= 17
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 1001, 64]
    out = embed_audio_onnx(bundle, np.random.default_rng(0).standard_normal((3, 1, 1001, 64)).astype(np.float32))
    assert out.shape == (3, 256)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_onnx_runtime_reproduces_torch_audio(bundle, small, data_dir):
    model, _ = small
    fe = bundle.meta.frontend
    clip = read_audio(data_dir / "esc50/audio/1-187207-A-20.flac", fe.sample_rate)
    real = log_mel(np.tile(clip, 2)[: 10 * fe.sample_rate], fe)[None, None]
    noise = np.random.default_rng(1).normal(-40, 20, (2, 1, 1001, 64)).astype(np.float32)
    for mel in (real, noise):
        with torch.no_grad():
            want = model.encode_audio(torch.from_numpy(mel)).numpy()
        assert np.abs(embed_audio_onnx(bundle, mel) - want).max() <= TOL


def test_onnx_runtime_reproduces_torch_text(bundle, small):
    model, _ = small
    tokenizer = load_tokenizer(bundle.tokenizer_dir)  # what the device will use
    prompts = ["an audio clip of dog bark", "a police siren", "an audio clip of jackhammer"]
    tokens = tokenizer(prompts)
    session = ort.InferenceSession(str(bundle.text_path), providers=["CPUExecutionProvider"])
    got = session.run(["embedding"], tokens)[0]
    with torch.no_grad():
        want = model.encode_text(**{k: torch.from_numpy(v) for k, v in tokens.items()}).numpy()
    assert np.abs(got - want).max() <= TOL
    # the shipped label embeddings are what text.onnx gives for the label set's prompts
    label_set = resolve_label_set("urban")
    prompts, _ = label_set.flat_prompts()
    from_onnx = LabelEmbeddings.from_prompt_embeddings(label_set, session.run(["embedding"], tokenizer(prompts))[0], "x")
    shipped = LabelEmbeddings.load(bundle.labels_dir / "urban.npz")
    assert np.abs(from_onnx.embeddings - shipped.embeddings).max() <= TOL


def test_model_id_follows_the_weights(small):
    model, config = small
    assert model_id(model, config) == model_id(model, config)
    other = build_model(config).eval()
    other.load_state_dict(model.state_dict())
    assert model_id(other, config) == model_id(model, config)
    with torch.no_grad():
        other.head.proj.bias[0] += 1e-3
    assert model_id(other, config) != model_id(model, config)


def test_checkpoint_round_trip_and_cli_export(small, tmp_path):
    model, config = small
    path = save_checkpoint(tmp_path / "run" / "best.pt", model, config, clip_seconds=5.0,
                           training={"command": "semanticac-train fit ..."}, license="CC BY-NC 4.0")
    loaded, loaded_config, state = model_from_checkpoint(path)
    assert loaded_config == config and model_id(loaded, loaded_config) == model_id(model, config)
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli.main, ["export", "--checkpoint", str(path), "--out", str(out), "--labels", "urban"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["model_id"] == model_id(model, config) and meta["license"] == "CC BY-NC 4.0"
    assert meta["clip_seconds"] == 5.0 and meta["training"]["command"].startswith("semanticac-train fit")
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["urban.npz"]


def test_export_of_a_site_s_classes_writes_their_label_set_into_the_bundle(small, tmp_path):
    """A model of a site's own CSV exported without --labels: the shipped urban and esc50 were labels
    it never heard (warned of; refused with a vocabulary branch). Its classes are the bundle's set,
    labels/trained.yaml beside its embeddings, and export says how to listen with it."""
    model, config = small
    classes = ["kettle", "Dog bark", "yes", "door knock,"]  # as written: YAML's true, a trailing comma
    path = save_checkpoint(tmp_path / "run" / "best.pt", model, config, clip_seconds=5.0, class_names=classes)
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli.main, ["export", "--checkpoint", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    yaml_path = out / "labels" / "trained.yaml"
    assert f"--bundle {out} --labels {yaml_path}" in result.output
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["trained.npz", "trained.yaml"]
    label_set = resolve_label_set(str(yaml_path))
    assert label_set.names == classes
    embedded = LabelEmbeddings.load(out / "labels" / "trained.npz")
    assert list(embedded.labels) == classes and embedded.labels_sha256 == label_set.sha256  # listen uses them as they are
    # classes the shipped sets name (the demo recipes), or none recorded: those sets, as before; a class
    # the recipe held out is not in the trained set
    from train.export import default_label_sets

    urban, esc50 = resolve_label_set("urban"), resolve_label_set("esc50")
    for training, names in (({"class_names": [*urban.names, *esc50.names]}, ["urban", "esc50"]),  # the demo's
                            ({"class_names": urban.names}, ["urban"]), ({}, ["urban", "esc50"]),
                            ({"command": "random initialisation"}, ["urban", "esc50"])):
        sets, files = default_label_sets(training)
        assert [label_set.name for label_set in sets] == names and files == {}
    # a site's classes the shipped sets happen to name are still the site's: urban and esc50 were 58
    # labels it never heard
    sets, files = default_label_sets({"class_names": ["siren", "Dog bark", "rooster"]})
    assert [label_set.names for label_set in sets] == [["siren", "Dog bark", "rooster"]] and list(files) == ["trained"]
    held = {"class_names": ["kettle", "siren", "rooster"], "recipe": {"data": {"kind": "csv", "holdout": ["Rooster"]}}}
    sets, files = default_label_sets(held)
    assert [label_set.names for label_set in sets] == [["kettle", "siren"]] and list(files) == ["trained"]
    with pytest.raises(LabelSetError, match=r"the checkpoint's classes cannot be a label set as they are .*"
                                            r"'dog_bark' duplicates.*export with --labels"):
        default_label_sets({"class_names": ["kettle", "Dog bark", "dog_bark"]})


def test_failed_export_keeps_the_previous_bundle(small, tmp_path, monkeypatch):
    model, config = small
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "model.json").write_text('{"previous": true}')

    def broken(*args, **kwargs):
        raise RuntimeError("ONNX Runtime differs from torch")

    monkeypatch.setattr("train.export.check_graph", broken)
    with pytest.raises(RuntimeError):
        export_bundle(model, config, out, model_id="x")
    assert json.loads((out / "model.json").read_text()) == {"previous": True}
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_export_never_replaces_a_folder_of_other_files(small, tmp_path, monkeypatch, caplog):
    """`--out runs/X` (the run's own folder) would have deleted its checkpoints: refused before
    the checkpoint is read; an empty folder or a bundle is replaced as before."""
    model, config = small
    run = tmp_path / "run"
    path = save_checkpoint(run / "best.pt", model, config, clip_seconds=5.0)
    (run / "NOTES.txt").write_text("mine\n")
    result = CliRunner().invoke(cli.main, ["export", "--checkpoint", str(path), "--out", str(run)])
    assert result.exit_code == 2 and "holds 2 other file(s) (NOTES.txt, best.pt)" in result.output, result.output
    assert sorted(p.name for p in run.iterdir()) == ["NOTES.txt", "best.pt"]
    with pytest.raises(ValueError, match="is no bundle"):
        export_bundle(model, config, run, model_id="x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="is the current folder"):
        export_bundle(model, config, ".", model_id="x")
    (tmp_path / "empty").mkdir()
    # an empty folder becomes the bundle; a model trained on other classes is told its set names none of them
    urban = dataclasses.replace(resolve_label_set("urban"), labels=resolve_label_set("urban").labels[:2])
    export_bundle(model, config, tmp_path / "empty", model_id="x", label_sets=[urban],
                  training={"class_names": ["doorbell", "kettle"]})
    assert (tmp_path / "empty" / "model.json").is_file() and (tmp_path / "empty" / "labels" / "urban.npz").is_file()
    assert "label set urban: none of its labels is a class this checkpoint trained (it trained 2 classes: doorbell, " \
           "kettle)" in caplog.text
    # a bundle holding a site's files (a label set calibrate wrote there, notes): they were deleted without a word
    bundle = tmp_path / "empty"
    (bundle / "NOTES.txt").write_text("mine\n")
    (bundle / "labels" / "site.yaml").write_text("name: site\nlabels: [doorbell]\n")
    again = ["export", "--checkpoint", str(path), "--out", str(bundle)]
    result = CliRunner().invoke(cli.main, again)
    assert result.exit_code == 2 and "holds 2 file(s) no export makes (NOTES.txt, labels/site.yaml)" in result.output
    assert (bundle / "NOTES.txt").is_file() and (bundle / "labels" / "site.yaml").is_file()
    result = CliRunner().invoke(cli.main, [*again, "--replace"])
    assert result.exit_code == 0 and "(it replaced the bundle of model_id x)" in result.output, result.output
    assert not (bundle / "NOTES.txt").exists() and not (bundle / "labels" / "site.yaml").exists()


def test_onehot_baseline_is_not_exportable(tmp_path):
    config = load_model_config("small")
    config.head = {"kind": "onehot"}
    config.num_classes = 10
    with pytest.raises(ValueError, match="one-hot baseline has no text tower"):
        export_bundle(build_model(config), config, tmp_path / "b", model_id="x")


def test_cli_usage_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli.main, ["export", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "either --checkpoint C or --random-init --config M" in result.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = runner.invoke(cli.main, ["export", "--checkpoint", str(bad), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and f"checkpoint {bad} cannot be read" in result.output


def test_a_checkpoint_without_its_model_is_one_line(tmp_path):
    from train.checkpoint import FORMAT

    partial = tmp_path / "partial.pt"
    torch.save({"format": FORMAT, "history": []}, partial)
    result = CliRunner().invoke(cli.main, ["export", "--checkpoint", str(partial), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "lacks ['model_config', 'model']" in result.output, result.output


def test_check_weights_command(reference_dir, fake_rn50, tmp_path):  # noqa: F811
    audio = tmp_path / "HTSAT_AudioSet_Saved_1.ckpt"
    torch.save(fake_checkpoint(reference_dir, "sed_model."), audio)
    text = tmp_path / "RN50.pt"
    _torchscript_archive(fake_rn50, text)
    runner = CliRunner()
    result = runner.invoke(cli.main, ["check-weights", "--audio", str(audio), "--text", str(text)])
    assert result.exit_code == 0, result.output
    assert "0 missing, 0 unexpected" in result.output and result.output.count("0 missing, 0 unexpected") == 2
    state = fake_checkpoint(reference_dir, "sed_model.")
    del state["state_dict"]["sed_model.layers.2.blocks.5.mlp.fc2.weight"]
    torch.save(state, audio)
    result = runner.invoke(cli.main, ["check-weights", "--audio", str(audio)])
    assert result.exit_code == 1
    assert "1 missing" in result.output and "layers.2.blocks.5.mlp.fc2.weight" in result.output


def test_compact_export_is_smaller_and_close(small, tmp_path):
    model, config = small
    full, compact = tmp_path / "full", tmp_path / "compact"
    reports = {flag: export_bundle(model, config, out, model_id="m", label_sets=[resolve_label_set("urban")],
                                   compact=flag) for out, flag in ((full, False), (compact, True))}
    # what export prints describes the graphs written: their own ops, their cosine (it gave the full ones')
    text = next(r for r in reports[True] if r.file == "text.onnx")
    assert "MatMulInteger" in text.op_counts and "MatMulInteger" not in reports[False][-1].op_counts
    cosine = read_bundle(compact).meta.training["export"]["least_cosine_vs_torch"]["text.onnx"]
    assert f"compacted, least cosine vs torch {cosine:.5f} (full precision: max abs diff" in text.summary()
    assert (compact / "model.onnx").stat().st_size < 0.6 * (full / "model.onnx").stat().st_size
    assert (compact / "text.onnx").stat().st_size < 0.4 * (full / "text.onnx").stat().st_size
    meta = read_bundle(compact, verify=True).meta
    assert meta.training["export"]["least_cosine_vs_torch"]["model.onnx"] >= 0.999
    mel = np.random.default_rng(2).normal(-40, 20, (2, 1, 1001, 64)).astype(np.float32)
    a, b = embed_audio_onnx(read_bundle(full), mel), embed_audio_onnx(read_bundle(compact), mel)
    assert ((a * b).sum(axis=1) > 0.999).all()
    # the shipped label sets come from the full-precision text graph (the full bundle's, exactly);
    # a set embedded on the device by the int8 graph stays close to them
    urban = resolve_label_set("urban")
    shipped = LabelEmbeddings.load(compact / "labels/urban.npz").embeddings
    np.testing.assert_allclose(shipped, LabelEmbeddings.load(full / "labels/urban.npz").embeddings, atol=TOL)
    # they record no text graph, so the compact graph's bundle serves them as they are
    np.testing.assert_array_equal(find_label_embeddings(read_bundle(compact), urban).embeddings, shipped)
    tokenizer = load_tokenizer(compact / "tokenizer")
    session = ort.InferenceSession(str(compact / "text.onnx"), providers=["CPUExecutionProvider"])
    on_device = LabelEmbeddings.from_prompt_embeddings(urban, session.run(["embedding"], tokenizer(urban.flat_prompts()[0]))[0], "m")
    cosines = (on_device.embeddings * shipped).sum(axis=1)
    assert cosines.min() >= COMPACT_COSINE["text.onnx"] and np.abs(on_device.embeddings - shipped).max() > TOL
    assert integer_weights(compact / "text.onnx") == {"uint8"}  # exact on every CPU (exact_int8_products)

    # a bundle compacted before 2026-12-06 (int8 weights as int8): `exact-text` rewrites it in place
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edge.bundle import tower_spec
    older = tmp_path / "older"
    shutil.copytree(compact, older)
    quantize_dynamic(str(full / "text.onnx"), str(older / "text.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    data = json.loads((older / "model.json").read_text())
    data["text"] = dataclasses.asdict(tower_spec(older, "text.onnx", data["text"]["inputs"], data["text"]["outputs"]))
    (older / "model.json").write_text(json.dumps(data))
    assert integer_weights(older / "text.onnx") == {"int8"}
    runner = CliRunner()
    result = runner.invoke(cli.main, ["exact-text", "--bundle", str(older)])
    assert result.exit_code == 0, result.output
    assert "int8 text weights stored as uint8" in result.output and "least cosine" in result.output
    assert integer_weights(older / "text.onnx") == {"uint8"}
    meta = read_bundle(older, verify=True).meta  # the new graph's hash
    assert meta.model_id == "m" and "exact on every CPU" in meta.training["export"]["text.onnx"]
    session = ort.InferenceSession(str(older / "text.onnx"), providers=["CPUExecutionProvider"])
    again = session.run(["embedding"], tokenizer(urban.flat_prompts()[0]))[0]
    want = ort.InferenceSession(str(compact / "text.onnx"), providers=["CPUExecutionProvider"]).run(
        ["embedding"], tokenizer(urban.flat_prompts()[0]))[0]
    np.testing.assert_allclose(again, want, atol=1e-5)  # the same graph as `export --compact` writes now
    result = runner.invoke(cli.main, ["exact-text", "--bundle", str(older)])
    assert result.exit_code == 1 and "nothing to rewrite" in result.output


def integer_weights(path) -> set[str]:
    """The element types of a graph's MatMulInteger weights."""
    model = onnx.load(str(path))
    initializers = {init.name: init for init in model.graph.initializer}
    return {onnx.helper.tensor_dtype_to_np_dtype(initializers[node.input[1]].data_type).name
            for node in model.graph.node if node.op_type == "MatMulInteger"}


def test_int8_products_are_exact_where_uint8_x_int8_saturates(tmp_path):
    # uint8 activations of 255 times int8 weights of -128 sum pairs past int16 (VPMADDUBSW's range
    # on x86 CPUs with AVX2 but no VNNI); the rewritten graph computes the true integers everywhere
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a = rng.integers(200, 256, (4, 64), dtype=np.uint8)
    w = rng.choice(np.array([-128, -127, 127], np.int8), (64, 8))
    node = helper.make_node("MatMulInteger", ["a", "w", "a_zero", "w_zero"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, 64])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [4, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(3, np.uint8), "a_zero"),
         numpy_helper.from_array(np.zeros(8, np.int8), "w_zero")])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert exact_int8_products(path) == 1
    assert integer_weights(path) == {"uint8"}
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
    np.testing.assert_array_equal(got, (a.astype(np.int64) - 3) @ w.astype(np.int64))
    before = path.read_bytes()
    assert exact_int8_products(path) == 0 and path.read_bytes() == before  # once only


@pytest.mark.parametrize("recipe, held", [("demo-distill-zeroshot", 10), ("demo-distill-cv1", 0)])
def test_a_vocabulary_records_as_trained_only_what_the_recipe_trained(recipe, held, caplog, recipe_paths):
    from train.config import to_dict
    from train.export import never_trained, trained_label_sets
    from train.recipe import load_train_config

    training = {"command": "tests", "recipe": to_dict(load_train_config(recipe))}
    urban, esc50 = resolve_label_set("urban"), resolve_label_set("esc50")
    kept = trained_label_sets([urban, esc50], training)
    assert kept[0] is urban  # no urban class was held out
    assert len(never_trained(training)) == held
    assert kept[1].names == [name for name in esc50.names if name not in never_trained(training)]
    assert kept[1].name == ("esc50-seen" if held else "esc50")
    assert len(kept[1].names) == 50 - held
    assert ("10 labels the checkpoint never trained (pig, frog, crow" in caplog.text) == bool(held)  # the user is told


def test_a_label_set_of_held_out_classes_only_is_refused(caplog):
    from train.export import trained_label_sets, warn_untrained

    training = {"recipe": {"data": {"kind": "esc50", "holdout": ["dog", "rooster"]}}}
    few = dataclasses.replace(resolve_label_set("esc50"), labels=resolve_label_set("esc50").labels[:2])
    with pytest.raises(ValueError, match="none of its labels is a class this checkpoint trained .the recipe held "
                                         "dog, rooster out of training"):
        trained_label_sets([few], training)
    warn_untrained([few], training)  # without a vocabulary branch: embedded, and said why
    assert "label set esc50: none of its labels is a class this checkpoint trained (the recipe held dog, rooster " \
           "out of training)" in caplog.text


def test_labels_a_checkpoint_never_trained_are_not_recorded_as_trained(caplog):
    """A model trained on a site's own CSV records its classes; exported with the default
    `--labels urban --labels esc50`, its vocabulary branch had recorded all 60 as trained, so the
    student scored labels it never heard and the vocabulary never did. Now only the trained ones are,
    matched as label sets match names; a set of none of them is refused, naming the classes."""
    from train.export import trained_label_sets, warn_untrained

    urban, esc50 = resolve_label_set("urban"), resolve_label_set("esc50")
    training = {"class_names": ["Dog bark", "street music", "doorbell"]}
    kept = trained_label_sets([urban], training)
    assert kept[0].name == "urban-seen" and kept[0].names == ["dog_bark", "street_music"]
    assert "8 labels the checkpoint never trained (air_conditioner, car_horn" in caplog.text
    with pytest.raises(ValueError, match=r"'esc50': none of its labels is a class this checkpoint trained \(it "
                                         r"trained 3 classes: Dog bark, street music, doorbell\).*names the "
                                         r"trained classes"):
        trained_label_sets([urban, esc50], training)
    every = {"class_names": [*urban.names, *esc50.names]}  # the demo recipe's: both sets whole
    assert trained_label_sets([urban, esc50], every) == [urban, esc50]
    # without a vocabulary branch the sets are embedded as given; a set of none of the classes is warned of
    caplog.clear()
    warn_untrained([urban, esc50], training)
    assert "label set esc50: none of its labels is a class this checkpoint trained (it trained 3 classes: Dog bark, " \
           "street music, doorbell)" in caplog.text and "label set urban" not in caplog.text
    caplog.clear()
    warn_untrained([urban, esc50], every)
    warn_untrained([esc50], {"command": "random initialisation"})  # no classes recorded: nothing to say
    assert caplog.text == ""
    # a held-out class spelt otherwise than the label is still held out (label sets' matching)
    held = {**every, "recipe": {"data": {"kind": "esc50", "holdout": ["Crying baby"]}}}
    assert "crying_baby" not in trained_label_sets([esc50], held)[0].names
