"""The vocabulary branch end to end: a YAMNet student whose first layers stay pretrained
exports a graph with YAMNet's own AudioSet head beside the student, and the device fuses it."""

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
    assert meta.audio.outputs == ("embedding", "vocabulary") and meta.vocabulary["trained"] == ["urban"]
    vocabulary = Vocabulary.from_bundle(vocab_bundle)
    assert len(vocabulary.names) == 521 and vocabulary.names[0] == "Speech"
    mel = tile_frames(log_mel(speech(), meta.frontend), meta.frontend.frames)[None, None]
    with select_backend(vocab_bundle, "onnxruntime", threads=1) as backend:
        out = backend.run({"mel": mel})
    p = out["vocabulary"][0]
    assert p.shape == (521,) and 0 <= p.min() and p.max() <= 1
    assert vocabulary.names[int(p.argmax())] in {"Speech", "Male speech, man speaking", "Narration, monologue"}
    # `speech` added to the urban set by YAML: no one trained it, the vocabulary names it
    urban = resolve_label_set("urban")
    with_speech = dataclasses.replace(urban, name="urban+speech",
                                      labels=(*urban.labels, Label("speech", ("an audio clip of speech",), 0.5)))
    scorer = Scorer.for_bundle(meta, label_embeddings_for(vocab_bundle, with_speech), with_speech, vocabulary)
    assert scorer.fusion.novel.tolist() == [False] * len(urban.labels) + [True]
    assert scorer.labels[int(scorer(out["embedding"], out["vocabulary"])[0].argmax())] == "speech"


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
