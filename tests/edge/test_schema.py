"""edge.schema: the one reader of the JSON/YAML files edge reads. Each error names the file,
the field, the value, what is allowed and the fix; every reader words them the same way."""

import json

import pytest

from edge.errors import AudioError, BundleError, LabelSetError
from edge.labels.labelset import parse_label_set
from edge.schema import Fields, read_json
from edge.tools.demo import Segment, _cached, read_scene_sidecar

FIX = "re-export it"


def fields(data):
    return Fields(data, "thing.json", BundleError, fix=FIX)


@pytest.mark.parametrize("call, message", [
    (lambda f: f.get("n", int, "an integer"), "thing.json: missing field 'n' (an integer): re-export it"),
    (lambda f: f.get("flag", int, "an integer"), "thing.json: field 'flag' must be an integer, got True: re-export it"),
    (lambda f: f.positive("neg", "a positive number"), "thing.json: field 'neg' must be a positive number, got -1"),
    (lambda f: f.text("blank", "a name"), "thing.json: field 'blank' must be a name, got '  '"),
    (lambda f: f.names("mixed"), "thing.json: field 'mixed' must be a non-empty list of names, got ['a', 3]"),
    (lambda f: f.choice("kind", ["a", "b"]), "thing.json: field 'kind' must be one of ['a', 'b'], got 'c'"),
    (lambda f: f.unknown({"neg", "blank", "mixed", "kind", "flag", "format_version", "sub"}),
     "thing.json: unknown field 'colour': allowed fields are ['blank', 'flag', 'format_version', 'kind', 'mixed', "
     "'neg', 'sub']"),
    (lambda f: f.version(1, "upgrade", "re-export"), "thing.json: format_version 2 is not supported (this "
                                                     "semanticac-edge reads version 1): upgrade"),
    (lambda f: f.nested("sub", "a mapping").get("x", str, "text"), "thing.json sub: field 'x' must be text, got 1"),
])
def test_each_check_names_file_field_value_allowed_and_fix(call, message):
    data = {"flag": True, "neg": -1, "blank": "  ", "mixed": ["a", 3], "kind": "c", "colour": "red",
            "format_version": 2, "sub": {"x": 1}}
    with pytest.raises(BundleError) as err:
        call(fields(data))
    assert str(err.value).startswith(message)


def test_good_values_and_defaults_pass():
    f = fields({"n": 3, "x": 2.5, "names": ["a", "b"], "kind": "a"})
    assert f.get("n", int, "an integer") == 3 and f.positive("x", "a positive number") == 2.5
    assert f.names("names") == ("a", "b") and f.choice("kind", ["a", "b"]) == "a"
    assert f.get("absent", dict, "a mapping", default={}) == {} and f.nested("absent", "a mapping", None) is None
    assert f.problems({"n": (int, "an integer"), "x": (str, "text"), "gone": (str, "text")}) == [
        "missing field(s) ['gone']", "field 'x' must be text, got 2.5"]


def test_not_a_mapping_and_unreadable_json(tmp_path):
    with pytest.raises(BundleError, match=r"thing.json: must hold a JSON object, got list: re-export it"):
        fields([1, 2])
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(BundleError, match=f"cannot read the sidecar {bad}: Expecting property name.*: re-export it"):
        read_json(bad, BundleError, FIX, what="the sidecar")


def test_the_label_yaml_words_its_line_numbered_errors_the_same_way():
    with pytest.raises(LabelSetError, match=r"<string>:4: labels\[0\].threshold: must be a number, got True"):
        parse_label_set("name: x\nlabels:\n  - name: dog\n    threshold: yes\n")
    with pytest.raises(LabelSetError, match=r"<string>:4: labels\[0\]: unknown key 'colour': allowed keys are \["):
        parse_label_set("name: x\nlabels:\n  - name: dog\n    colour: brown\n")


def test_the_demo_scene_sidecar_is_checked_and_a_bad_one_is_made_again(tmp_path):
    good = {"rate": 32000, "segments": [{"start": 1.5, "end": 3, "label": "siren", "what": "a siren"}]}
    path = tmp_path / "scene.json"
    path.write_text(json.dumps(good))
    assert read_scene_sidecar(path) == [Segment(1.5, 3.0, "siren", "a siren")]
    good["segments"][0]["start"] = "soon"
    path.write_text(json.dumps(good))
    with pytest.raises(AudioError, match=rf"demo scene sidecar {path} segments\[0\]: field 'start' must be "
                                         r"seconds into the scene, got 'soon'"):
        read_scene_sidecar(path)
    wav = tmp_path / "scene.wav"
    wav.write_bytes(b"")
    assert _cached(wav, path) is None  # unusable: the demo makes the scene again
