import zipfile

import numpy as np
import pytest

from edge.bundle import read_bundle
from edge.errors import LabelEmbeddingsError
from edge.fsutil import cache_dir
from edge.labels.embeddings import LabelEmbeddings, find_label_embeddings
from edge.labels.labelset import parse_label_set
from tests.bundles import make_bundle

SET = parse_label_set("name: pets\nlabels:\n  - dog\n  - name: cat\n    prompts: [a cat meowing]\n")


def prompt_embeddings(seed=0, dim=8):
    return np.random.default_rng(seed).standard_normal((3, dim)).astype(np.float32) * 5


def test_mean_of_normalised_prompts():
    raw = prompt_embeddings()
    emb = LabelEmbeddings.from_prompt_embeddings(SET, raw, "m1")
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    cat = unit[1] + unit[2]
    np.testing.assert_allclose(emb.embeddings[0], unit[0], atol=1e-6)
    np.testing.assert_allclose(emb.embeddings[1], cat / np.linalg.norm(cat), atol=1e-6)
    assert emb.labels == ("dog", "cat") and emb.prompt_label.tolist() == [0, 1, 1]
    with pytest.raises(LabelEmbeddingsError, match=r"one embedding per prompt \(3 x C\), got shape \(2, 8\)"):
        LabelEmbeddings.from_prompt_embeddings(SET, raw[:2], "m1")


def test_file_round_trip_without_pickle(tmp_path):
    emb = LabelEmbeddings.from_prompt_embeddings(SET, prompt_embeddings(), "m1", "ab" * 32)
    path = emb.save(tmp_path / "labels" / "pets.npz")
    with np.load(path, allow_pickle=False) as data:  # plain arrays only
        assert set(data.files) == {"labels", "prompts", "prompt_label", "embeddings", "labels_sha256", "model_id",
                                   "text_sha256"}
        assert data["embeddings"].dtype == np.float32 and data["labels"].dtype.kind == "U"
    back = LabelEmbeddings.load(path)
    assert back.labels == emb.labels and back.prompts == emb.prompts
    assert back.model_id == "m1" and back.labels_sha256 == SET.sha256 and back.text_sha256 == "ab" * 32
    np.testing.assert_array_equal(back.embeddings, emb.embeddings)
    assert [p.name for p in path.parent.iterdir()] == ["pets.npz"]
    # a large vocabulary's names at half the bytes: read back as float32, within float16's rounding
    half = LabelEmbeddings.load(emb.save(tmp_path / "half.npz", half=True))
    assert half.embeddings.dtype == np.float32 and half.labels == emb.labels
    np.testing.assert_allclose(half.embeddings, emb.embeddings, atol=1e-3)
    with np.load(tmp_path / "half.npz") as data:
        assert data["embeddings"].dtype == np.float16


def test_corrupt_and_incomplete_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(LabelEmbeddingsError, match="cannot read label embeddings .*delete it"):
        LabelEmbeddings.load(bad)
    partial = tmp_path / "partial.npz"
    np.savez(partial, labels=np.array(["a"]))
    with pytest.raises(LabelEmbeddingsError, match=r"missing array\(s\) \['prompts'"):
        LabelEmbeddings.load(partial)
    assert zipfile.is_zipfile(partial)


def test_lookup_bundle_then_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bundle = read_bundle(make_bundle(tmp_path / "b", model_id="m1"))
    with pytest.raises(LabelEmbeddingsError) as err:
        find_label_embeddings(bundle, SET)
    message = str(err.value)
    assert "labels/pets.npz: not there" in message and "cache/semanticac-edge/m1/pets.npz: not there" in message
    assert f"semanticac-edge embed-labels --bundle {bundle.path}" in message

    # what the device caches: computed by the bundle's text graph, which it records
    cached = LabelEmbeddings.from_prompt_embeddings(SET, prompt_embeddings(1), "m1", bundle.meta.text.sha256)
    cached.save(cache_dir("m1") / "pets.npz")
    np.testing.assert_array_equal(find_label_embeddings(bundle, SET).embeddings, cached.embeddings)

    # what `export` ships: computed by the full-precision graph, no text graph recorded
    shipped = LabelEmbeddings.from_prompt_embeddings(SET, prompt_embeddings(2), "m1")
    shipped.save(bundle.labels_dir / "pets.npz")
    np.testing.assert_array_equal(find_label_embeddings(bundle, SET).embeddings, shipped.embeddings)


def test_a_cache_file_another_text_graph_made_is_not_used(tmp_path, monkeypatch):
    # the same model_id, its text.onnx rewritten (`semanticac-train exact-text`): what the old graph
    # cached, or a file cached before the graph was recorded, is refused (listen computes it again)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bundle = read_bundle(make_bundle(tmp_path / "b", model_id="m1"))
    for text_sha256, problem in (("0" * 64, "computed by another text graph (sha256 000000000000..., the bundle's "
                                             f"text.onnx is {bundle.meta.text.sha256[:12]}...)"),
                                 ("", "cached before the edge recorded the text graph that computed it")):
        LabelEmbeddings.from_prompt_embeddings(SET, prompt_embeddings(), "m1", text_sha256).save(
            cache_dir("m1") / "pets.npz")
        with pytest.raises(LabelEmbeddingsError) as err:
            find_label_embeddings(bundle, SET)
        assert problem in str(err.value)
    # a bundle without a text graph cannot compute them again: what it finds serves
    textless = read_bundle(make_bundle(tmp_path / "t", model_id="m1", with_text=False))
    assert find_label_embeddings(textless, SET).text_sha256 == ""


def test_a_site_set_an_older_edge_wrote_into_the_demo_bundle_is_not_taken_for_the_export_s(tmp_path, monkeypatch):
    """An older `embed-labels` wrote a site's set into the installed demo bundle by default, with the
    text graph of then, recording none; a pip upgrade leaves the file there. The demo bundle's export
    wrote only the shipped sets: another set there without its text graph's SHA-256 is not used
    (listen computes it again), while the shipped ones, and any set in another bundle, are."""
    import edge.labels.embeddings as embeddings

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bundle = read_bundle(make_bundle(tmp_path / "b", model_id="m1"))
    LabelEmbeddings.from_prompt_embeddings(SET, prompt_embeddings(2), "m1").save(bundle.labels_dir / "pets.npz")
    assert find_label_embeddings(bundle, SET).text_sha256 == ""  # a bundle of one's own: the export's
    monkeypatch.setattr(embeddings, "shipped_bundle", lambda: bundle.path)  # as if it were the demo bundle
    with pytest.raises(LabelEmbeddingsError, match="written into the demo bundle before the edge recorded the text"):
        find_label_embeddings(bundle, SET)
    urban = parse_label_set("name: urban\nlabels:\n  - dog\n  - name: cat\n    prompts: [a cat meowing]\n")  # shipped
    LabelEmbeddings.from_prompt_embeddings(urban, prompt_embeddings(2), "m1").save(bundle.labels_dir / "urban.npz")
    assert find_label_embeddings(bundle, urban).text_sha256 == ""


def test_stale_or_foreign_embeddings_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bundle = read_bundle(make_bundle(tmp_path / "b", model_id="m1"))
    LabelEmbeddings.from_prompt_embeddings(SET, prompt_embeddings(), "other-model").save(bundle.labels_dir / "pets.npz")
    edited = parse_label_set("name: pets\nlabels:\n  - dog\n  - name: cat\n    prompts: [a cat purring]\n")
    LabelEmbeddings.from_prompt_embeddings(SET, prompt_embeddings(), "m1", bundle.meta.text.sha256).save(
        cache_dir("m1") / "pets.npz")
    with pytest.raises(LabelEmbeddingsError) as err:
        find_label_embeddings(bundle, edited)
    assert "computed by model 'other-model', the bundle is 'm1'" in str(err.value)
    assert "stale: the label names or prompts changed" in str(err.value)
    # a threshold edit is not a stale set
    retuned = parse_label_set("name: pets\nlabels:\n  - {name: dog, threshold: 0.9}\n"
                              "  - name: cat\n    prompts: [a cat meowing]\n")
    assert find_label_embeddings(bundle, retuned).model_id == "m1"


def test_names_the_text_tower_cannot_read_as_written_are_warned_of(demo_bundle):
    """It reads English: another script, an emoji ([UNK]) or an accented word cut into fragments
    (scored as Turkey) are warned of, and two names it reads the same; English names, and accents
    it reads through (café), are not."""
    from edge.labels.embeddings import reading_notes
    from edge.labels.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(demo_bundle.tokenizer_dir)
    labels = parse_label_set("name: x\nlabels: [Türklingel, '犬の鳴き声', '🐶', '🚨', café ambience, dog_bark, sneezing, "
                             "baby’s cry, smoke alarm – kitchen]\n")
    notes = reading_notes(labels, tokenizer)
    assert [level for level, _ in notes] == ["warning"] * 4
    assert notes[0][1].startswith("label 'Türklingel': the bundle's text tower reads English and reads this as "
                                  "'turk ##ling ##el'")
    assert notes[1][1].startswith("label '犬の鳴き声'") and "[UNK]: characters it does not know" in notes[1][1]
    assert notes[2][1].startswith("label '🐶'")
    assert notes[3][1].startswith("labels '🐶' and '🚨' read the same to the text tower ('[UNK]')")


def test_a_label_is_embedded_the_same_whatever_else_its_set_holds(demo_bundle):
    """The compact text graph quantises its activations with one scale per run: embedded in one
    batch, a prompt moved with its neighbours (cosine 0.988-0.992 here: a label's blend of
    vocabulary classes, and whether it counts as new, changed when an unrelated label was added).
    Each prompt is embedded on its own, so a label's row is the same in any set, and as near the
    full-precision embedding of the shipped set as before."""
    from edge.labels.embeddings import compute_label_embeddings

    small = parse_label_set("name: a\nlabels: [door knock, dog barking]\n")
    large = parse_label_set("name: b\nlabels: [Türklingel, door knock, '🐶', dog barking, a very loud and long "
                            "description of a noisy machine with many words in it]\n")
    one, other = compute_label_embeddings(demo_bundle, small), compute_label_embeddings(demo_bundle, large)
    np.testing.assert_allclose(one.embeddings, other.embeddings[[1, 3]], rtol=0, atol=1e-6)
    shipped = LabelEmbeddings.load(demo_bundle.labels_dir / "urban.npz")
    urban = parse_label_set("name: u\nlabels: [" + ", ".join(shipped.labels) + "]\n")
    near = (compute_label_embeddings(demo_bundle, urban).embeddings * shipped.embeddings).sum(axis=1)
    assert near.min() > 0.98, dict(zip(shipped.labels, near.round(4)))
