import csv
from pathlib import Path

import pytest

from edge.errors import LabelSetError
from edge.labels.labelset import (
    DEFAULT_PROMPT, label_files, load_label_set, parse_label_set, resolve_label_set, shipped_label_sets)

GOOD = """\
name: site
prompt: "a recording of {label}"
threshold: 0.4
labels:
  - dog_bark
  - name: siren
    prompts: ["an ambulance siren wailing", "a police siren"]
    threshold: 0.7
    group: traffic
"""


def test_schema_and_defaults():
    s = parse_label_set(GOOD)
    assert s.names == ["dog_bark", "siren"]
    assert s.labels[0].prompts == ("a recording of dog bark",)
    assert s.labels[0].threshold == 0.4 and s.labels[0].group is None
    assert s.labels[1].prompts == ("a recording of siren", "an ambulance siren wailing", "a police siren")
    assert s.labels[1].threshold == 0.7 and s.labels[1].group == "traffic"
    prompts, owner = s.flat_prompts()
    assert len(prompts) == 4 and owner == [0, 1, 1, 1]
    plain = parse_label_set("name: x\nlabels: [a_b]\n")
    assert plain.prompt == DEFAULT_PROMPT and plain.labels[0].prompts == ("an audio clip of a b",)
    assert plain.labels[0].threshold == 0.5


def test_agree_is_the_label_s_else_the_set_s_else_the_bundle_s_and_an_override_beats_all():
    s = parse_label_set("name: x\nagree: 0.3\nlabels:\n  - dog\n  - name: siren\n    agree: 0\n")
    assert s.agree == 0.3 and s.labels[1].agree == 0.0
    assert s.agreement() == [0.3, 0.0] and s.agreement(0.8) == [0.8, 0.8]
    assert parse_label_set("name: x\nlabels: [dog]\n").agreement() == [None]  # the bundle's
    assert parse_label_set("name: x\nagree: 0.3\nlabels: [dog]\n").sha256 == parse_label_set(
        "name: x\nlabels: [dog]\n").sha256  # like a threshold: cached embeddings stay valid


def test_sha_covers_names_and_prompts_only():
    base = parse_label_set(GOOD)
    assert parse_label_set(GOOD.replace("0.7", "0.9").replace("traffic", "road")).sha256 == base.sha256
    assert parse_label_set(GOOD.replace("police siren", "fire engine")).sha256 != base.sha256
    assert parse_label_set(GOOD.replace("a recording of", "a clip of")).sha256 != base.sha256
    assert parse_label_set(GOOD.replace("dog_bark", "dog_growl")).sha256 != base.sha256


@pytest.mark.parametrize("text,message", [
    ("name: x\nlabels:\n  - dog\n  - cat\n  - Dog\n", r"<string>:5: labels\[2\]: 'Dog' duplicates labels\[0\] \(line 3\)"),
    ("name: x\nlabels:\n  - dog_bark\n  - dog bark\n", r":4: labels\[1\]: 'dog bark' duplicates"),
    ("name: x\nlabels:\n  - dog\n  - ''\n", r":4: labels\[1\].name: must be a non-empty text"),
    ("name: x\nlabels:\n  - name: dog\n    colour: brown\n", r":4: labels\[0\]: unknown key 'colour': allowed keys are"),
    ("name: x\nlabel: [dog]\n", r":2: label set: unknown key 'label': did you mean 'labels'\?"),
    ("name: x\nfitted_for: {hops: 1}\nlabels: [dog]\n", r":2: fitted_for: unknown key 'hops': did you mean 'hop'\?"),
    ("name: x\nfitted_for: {hop: fast}\nlabels: [dog]\n", r":2: fitted_for.hop: "),
    # settings listen could never have run with: a warning comparing them says nonsense
    ("name: x\nfitted_for: {window: -1}\nlabels: [dog]\n",
     r":2: fitted_for.window: -1 is not allowed: use a number of seconds > 0"),
    ("name: x\nfitted_for: {smooth: 2.5, release: 0.7}\nlabels: [dog]\n",
     r":2: fitted_for.smooth: 2.5 is not allowed: use a whole number of windows >= 1"),
    ("name: x\ncalibration: {new_labels: 1}\nlabels: [dog]\n", r":2: calibration.new_labels: must be true or false"),
    ("name: x\nlabels:\n  - name: dog\n    treshold: 0.6\n", r":4: labels\[0\]: unknown key 'treshold': did you mean 'threshold'\?"),
    ("name: x\nlabels:\n  - name: dog\n    threshold: high\n", r":4: labels\[0\].threshold: must be a number, got 'high'"),
    ("name: x\nlabels:\n  - name: dog\n    threshold: 1.5\n", r"threshold: 1.5 is not a score: a threshold must be in \(0, 1\]"),
    ("name: x\nlabels:\n  - name: dog\n    prompts: a dog\n", r":4: labels\[0\].prompts: must be a list"),
    ("name: x\nlabels:\n  - name: dog\n    prompts: [a dog, 3]\n", r"labels\[0\].prompts\[1\]: must be a non-empty text, got 3"),
    ("name: x\nagree: 1.5\nlabels: [dog]\n", r":2: agree: 1.5 is not a score: the student's agreement is in \[0, 1\]"),
    ("name: x\nlabels:\n  - name: dog\n    agree: yes\n", r":4: labels\[0\].agree: must be a number, got True"),
    ("name: x\nlabels: []\n", r":2: labels: is empty"),
    ("name: x\nlabels: dog\n", r":2: labels: must be a list"),
    ("labels: [dog]\n", r":1: label set: missing key 'name'"),
    ("name: x\n", r"missing key 'labels'"),
    ("name: my set\nlabels: [dog]\n", r":1: name: 'my set' is not allowed"),
    ("name: x\nprompt: a clip of\nlabels: [dog]\n", r":2: prompt: 'a clip of' must contain \{label\}"),
    ("name: x\nprompt: '{label} {other}'\nlabels: [dog]\n", r"must contain \{label\}, .* and no other"),
    ("name: x\nprompt: '{{label}} sound'\nlabels: [dog]\n", r":2: prompt: '\{\{label\}\} sound' must contain"),
    ("name: x\nlabels:\n  - name: dog\n    prompts: ['a {label} barking']\n",
     r":4: labels\[0\].prompts: 'a \{label\} barking': a label's own prompts are used as written"),
    ("name: x\nlabels:\n  - dog\n  - yes\n", r":4: labels\[1\].name: .* \(YAML reads yes as True, not text: quote it, 'yes'\)"),
    ("name: x\nlabels: [dog, 911]\n", r"labels\[1\].name: .* \(YAML reads 911 as 911, not text: quote it, '911'\)"),
    ("name: x\nname: y\nlabels: [dog]\n", r":2: label set: key 'name' appears twice"),
    ("name: x\nlabels:\n  - siren\n  - doorbell:\n", r":4: labels\[1\]: unknown key 'doorbell'.* \(the ':' after 'doorbell' "
     r"makes this item a mapping: write - doorbell\)"),
    ("name: x\nlabels:\n  - smoke alarm: kitchen\n", r"quote the label, - \"smoke alarm: kitchen\"\)"),
    ("name: x\nlabels:\n  - siren\n  -\n  - dog\n", r":4: labels\[1\].name: must be a non-empty text, got nothing \(it is "
     r"empty\)"),
    ("name: x\nlabels:\n  - siren,\n  - doorbell\n", r":3: labels\[0\].name: 'siren,' ends with ',': items of a YAML "
     r"list need no separator"),
    ("name: x\nlabels:\n  - name: dog\n    threshold: '0.7'\n", r"got '0.7' \(a number in quotes is text to YAML: write "
     r"0.7 without quotes\)"),
    ("name: x\nlabels:\n  - name: dog\n    threshold: 70%\n", r"got '70%' \(write a share as a number: 0.7, not 70%\)"),
    ("name: x\nlabels:\n  - name: dog\n    threshold: 7e-1\n", r"got '7e-1' \(YAML reads 7e-1 as text: write 0.7\)"),
    ("name: x\nlabels:\n  - name: dog\n    bias: 5.0e1\n", r"got '5.0e1' \(YAML reads 5.0e1 as text: write 50\)"),
    ("name: x\nlabels:\n  - name: dog\n    bias: inf\n", r"got 'inf' \(a finite number is needed\)"),
    (f"name: {'a' * 65}\nlabels: [dog]\n", r":1: name: 'a+' is 65 characters: use at most 64"),
    ("name: x\nlabels:\n  - siren\x0c\n", r":3: not valid YAML: the character '\\x0c' is not allowed in YAML: delete it"),
    ("name: x\nlabels: [dog\n", r":2: not valid YAML: .* \(line 2: 'labels: \[dog'\): a \[ is not closed with \]"),
    ("name: x\nlabels:\n  - 'dog bark\n", r":3: not valid YAML: .* \(line 3: \"- 'dog bark\"\): a quote is not closed"),
    ("name: x\nlabels:\n  - dog bark\n   - siren\n", r":3: labels\[0\].name: 'dog bark - siren' runs over lines 3-4"),
    ("name: x\nlabels:\n\t- dog\n", r":3: not valid YAML: .*: a tab: YAML indents with spaces only"),
    ("name: x\nlabels:\n  - name: alarm: fire\n", r":3: not valid YAML: .*: a text holding ': ' must be quoted"),
    ("", r"file: is empty"),
    ("- dog\n- cat\n", r":1: label set: must be a mapping"),
    # what the safe loader cannot build names its line (a traceback before)
    ("name: x\nlabels:\n  - &d {name: dog, threshold: 0.6}\n  - {<<: *d, name: siren}\n",
     r":4: labels\[1\]: '<<' is a YAML merge key, which a label set does not read: write each key out"),
    ("name: x\nlabels:\n  - 2026-02-30\n", r":3: labels\[0\].name: '2026-02-30' cannot be read \(day is out of range "
     r"for month\): quote it"),
    ("name: x\nlabels:\n  - !foo bar\n", r":3: labels\[0\].name: 'bar' has the YAML tag '!foo'"),
    ("name: x\nlabels: [dog]\n? [a, b]\n: 1\n", r":3: label set: a key must be a word, got a list"),
    ("name: x\nlabels: [dog]\n{a: 1}: 2\n", r":3: label set: a key must be a word, got a mapping"),
    # a label field other than {label} as written: part of the name, padding, a method's address per run
    ("name: x\nprompt: 'a clip of {label[0]}'\nlabels: [dog]\n", r":2: prompt: .* must contain \{label\}, as written"),
    ("name: x\nprompt: 'a clip of {label} {label.upper}'\nlabels: [dog]\n", r"must contain \{label\}, as written"),
    ("name: x\nprompt: 'a clip of {label:>30}'\nlabels: [dog]\n", r"must contain \{label\}, as written"),
    ("name: x\nprompt: 'a clip of {label!s:.3}'\nlabels: [dog]\n", r"must contain \{label\}, as written"),
    ("name: x\nprompt: 'a clip of {label'\nlabels: [dog]\n", r"must contain \{label\}, as written"),
    # control and invisible characters: a NUL the .npz drops, a CR or ESC on the terminal, a label of nothing
    ('name: x\nlabels: ["doorbell\\0", dog]\n', r":2: labels\[0\].name: 'doorbell\\x00' holds the invisible character "
     r"U\+0000 \(a control character\): remove it"),
    ('name: x\nlabels: ["dog\\rsiren"]\n', r"U\+000D"),
    ('name: x\nlabels: ["door\\e[31mbell"]\n', r"U\+001B"),
    ('name: x\nlabels: ["\\u200b", doorbell]\n', r"U\+200B \(ZERO WIDTH SPACE\)"),
    ('name: x\nlabels:\n  - {name: bell, text: "door\\u00adbell"}\n', r":3: labels\[0\].text: .* U\+00AD \(SOFT HYPHEN\)"),
    ("name: x\nlabels:\n  - name: dog\n    bias: 1e-5\n", r"got '1e-5' \(YAML reads 1e-5 as text: write 1.0e-05\)"),
])
def test_errors_name_the_line_and_fix(text, message):
    with pytest.raises(LabelSetError, match=message):
        parse_label_set(text)


@pytest.mark.parametrize("text", ["s3cret-passw0rd\n", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
                                  "-----END PRIVATE KEY-----\n"])
def test_a_file_of_plain_text_named_as_a_label_set_is_not_quoted(text):
    """labels.set or `extends:` naming the wrong file (a password file, a TLS key) quoted its whole text in
    the error, which a service start also publishes, retained, as MQTT's problem."""
    with pytest.raises(LabelSetError) as info:
        parse_label_set(text)
    said = str(info.value)
    assert "s3cret" not in said and "MIIE" not in said and "characters of text, not a label set" in said, said


def test_a_reload_hands_over_the_label_files_it_checked_and_the_start_reads_those(tmp_path, caplog):
    """A label set saved while a reload was checked (an edit, the reload, a second edit: the common way to add
    a label) was read again by the process the reload became, and started unchecked (exit 78, not
    restarted). The check records every file it read, `extends:` too; the start reads those texts."""
    import logging
    import os

    base, site = tmp_path / "base.yaml", tmp_path / "site.yaml"
    base.write_text("name: base\nlabels: [siren]\n")
    site.write_text("name: site\nextends: base.yaml\nlabels: [speech]\n")
    with label_files() as read:
        checked = resolve_label_set(str(site))
    assert set(read) == {os.path.abspath(site), os.path.abspath(base)}
    assert read[os.path.abspath(site)] == site.read_text()
    base.write_text("name: base\nlabels: [siren, {name: dog_bark, threshold: 2}]\n")  # saved after the check: wrong
    with pytest.raises(LabelSetError, match="threshold"):
        resolve_label_set(str(site))
    with caplog.at_level(logging.WARNING, logger="edge.labels.labelset"), label_files(read) as again:
        assert resolve_label_set(str(site)) == checked
    assert f"label set {base} changed after the reload checked it" in caplog.text
    assert f"label set {site} changed" not in caplog.text and again == read


def test_a_set_extends_a_shipped_set_or_a_file_adding_labels_and_changing_its_own(tmp_path):
    """`extends: urban` + one label is "urban + speech" without copying urban's YAML; a label
    given again replaces the base set's (a threshold of its own)."""
    urban = resolve_label_set("urban")
    street = tmp_path / "street.yaml"
    street.write_text("name: street\nextends: urban\nlabels:\n  - speech\n  - {name: Siren, threshold: 0.8}\n")
    got = load_label_set(street)
    assert got.names == [*urban.names[:8], "Siren", urban.names[9], "speech"]
    assert got.labels[8].threshold == 0.8 and got.labels[0] == urban.labels[0]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.yaml").write_text("name: more\nextends: ../street.yaml\nlabels: [doorbell]\n")
    assert load_label_set(tmp_path / "sub" / "more.yaml").names[-2:] == ["speech", "doorbell"]  # relative to the file
    # one template for the whole set, the base's labels too: the base's when the file sets none
    (tmp_path / "base.yaml").write_text("name: base\nprompt: 'the sound of {label}'\nlabels: [siren]\n")
    (tmp_path / "ext.yaml").write_text("name: ext\nextends: base.yaml\nlabels: [speech]\n")
    assert [label.prompts for label in load_label_set(tmp_path / "ext.yaml").labels] == [
        ("the sound of siren",), ("the sound of speech",)]
    (tmp_path / "ext.yaml").write_text("name: ext\nextends: base.yaml\nprompt: 'a recording of {label}'\n"
                                       "labels: [speech]\n")
    assert load_label_set(tmp_path / "ext.yaml").labels[0].prompts == ("a recording of siren",)
    (tmp_path / "loop.yaml").write_text("name: loop\nextends: loop.yaml\nlabels: [a]\n")
    with pytest.raises(LabelSetError, match="extends: 'loop.yaml': sets extend each other 4 deep: is it a loop"):
        load_label_set(tmp_path / "loop.yaml")
    (tmp_path / "x.yaml").write_text("name: x\nextends: nope\nlabels: [a]\n")
    with pytest.raises(LabelSetError, match=r"x.yaml:2: extends: 'nope' is neither a shipped set nor a label-set file .*shipped sets: esc50, urban"):
        load_label_set(tmp_path / "x.yaml")


def test_a_label_may_be_read_as_other_words_than_its_name():
    """`text:` is what the text tower reads (a name in another language keeps its English meaning)."""
    labels = parse_label_set("name: x\nlabels:\n  - {name: Türklingel, text: doorbell, prompts: [a door chime]}\n"
                             "  - siren\n")
    assert labels.names == ["Türklingel", "siren"] and labels.reads == ["doorbell", "siren"]
    assert labels.labels[0].prompts == ("an audio clip of doorbell", "a door chime")


def test_a_quoted_label_may_end_with_a_comma_and_a_file_not_in_utf8_names_its_line(tmp_path):
    assert parse_label_set("name: x\nlabels: ['siren,']\n").names == ["siren,"]
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: x\nlabels:\n  - siren\n  - Türklingel\n".encode("latin-1"))
    with pytest.raises(LabelSetError, match=r"latin1.yaml: line 4 is not UTF-8 \(byte 0xfc\): save the file as UTF-8"):
        load_label_set(latin1)


def test_shipped_sets_match_the_datasets(data_dir):
    assert {"urban", "esc50"} <= set(shipped_label_sets())
    us8k = {int(r["classID"]): r["class"] for r in csv.DictReader(open(data_dir / "us8k/meta.csv"))}
    esc = {int(r["target"]): r["category"] for r in csv.DictReader(open(data_dir / "esc50/meta.csv"))}
    assert resolve_label_set("urban").names == [us8k[i] for i in range(10)]
    assert resolve_label_set("esc50.yaml").names == [esc[i] for i in range(50)]
    assert {label.group for label in resolve_label_set("esc50").labels} == {
        "Animals", "Natural soundscapes & water sounds", "Human, non-speech sounds",
        "Interior/domestic sounds", "Exterior/urban noises"}


def test_resolve_path_then_shipped_name(tmp_path, monkeypatch):
    path = tmp_path / "urban.yaml"
    path.write_text("name: mine\nlabels: [a]\n")
    assert resolve_label_set(path).name == "mine"  # a path wins over a shipped name
    monkeypatch.chdir(tmp_path)
    assert resolve_label_set("./urban.yaml").name == "mine"  # given as a path: the file
    assert resolve_label_set("urban.yaml").name == "urban"  # a bare shipped name: the shipped set
    assert resolve_label_set("urban").name == "urban"
    with pytest.raises(LabelSetError, match="label set 'nope.yaml' not found.*shipped: esc50, urban"):
        resolve_label_set("nope.yaml")
    with pytest.raises(LabelSetError, match="cannot read label set"):
        load_label_set(tmp_path / "missing.yaml")
    (tmp_path / "adir").mkdir()  # a folder named without a slash: not "not found"
    for spec in ("adir", "./adir"):
        with pytest.raises(LabelSetError, match=f"label set '{spec}' is a directory: pass a label-set YAML file"):
            resolve_label_set(spec)
    with pytest.raises(LabelSetError, match="extends: 'adir' is a directory, not a label-set file"):
        parse_label_set("name: x\nextends: adir\nlabels: [a]\n", source=str(tmp_path / "x.yaml"))


def test_what_scripts_and_emoji_need_is_allowed_and_the_fixed_number_is_read_as_one():
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"  # one glyph, joined by U+200D
    persian = "\u0646\u0627\u0646\u200c\u067e\u0632"  # a zero-width non-joiner is correct spelling there
    hebrew = "\u05db\u05dc\u05d1\u200f"  # a right-to-left mark
    england = "\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F"  # a flag of tag characters
    for name in (family, persian, hebrew, england):
        assert parse_label_set(f'name: x\nlabels: ["{name}"]\n').names == [name]
    plain = parse_label_set("name: x\nprompt: 'a clip of {label!s}, {label:s}'\nlabels: [dog]\n")  # the text itself
    assert plain.labels[0].prompts == ("a clip of dog, dog",)
    fixed = parse_label_set("name: x\nlabels:\n  - name: dog\n    bias: 1.0e-05\n")  # the hint's spelling
    assert fixed.labels[0].bias == 1e-5


def test_a_set_name_that_begins_with_a_dot_or_a_dash_says_how_it_must_begin():
    for name in ("..", "-x", ".hidden"):
        with pytest.raises(LabelSetError, match="beginning with a letter or a digit"):
            parse_label_set(f"name: '{name}'\nlabels: [dog]\n")


def test_a_name_saved_decomposed_is_the_same_label():
    """An editor that saves `café` decomposed (e + a combining accent, as macOS names files) made a
    second label beside the composed one, another embedding and another MQTT entity; a service
    config's threshold for the composed name found no label."""
    import unicodedata

    composed, decomposed = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert composed != decomposed
    with pytest.raises(LabelSetError, match=r"duplicates labels\[0\]"):
        parse_label_set(f"name: x\nlabels: [{composed}, {decomposed}]\n")
    saved = parse_label_set(f"name: x\nlabels:\n  - {{name: {decomposed}, prompts: [{decomposed} noise]}}\n")
    typed = parse_label_set(f"name: x\nlabels:\n  - {{name: {composed}, prompts: [{composed} noise]}}\n")
    assert saved.names == [composed] and saved.sha256 == typed.sha256 and saved.find(decomposed) == composed


def test_a_bare_name_the_bundle_holds_is_named_in_the_error(tmp_path, monkeypatch):
    """`export` writes labels/trained.yaml into a bundle; `listen --bundle B --labels trained` was told only
    of urban and esc50."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b" / "labels").mkdir(parents=True)
    (tmp_path / "b" / "labels" / "trained.yaml").write_text("name: trained\nlabels: [siren]\n")
    with pytest.raises(LabelSetError, match=r"neither a file nor a shipped set .* \(the bundle holds one: --labels "
                                            r"b/labels/trained.yaml\)"):
        resolve_label_set("trained", Path("b") / "labels")
    with pytest.raises(LabelSetError) as plain:
        resolve_label_set("other", Path("b") / "labels")
    assert "the bundle holds" not in str(plain.value)
