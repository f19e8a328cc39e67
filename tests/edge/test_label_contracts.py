"""Failure contracts of label sets: which set a name means, over-long prompts, corrupt or
truncated embedding files, `embed-labels`, and the progress of a first embedding."""

import logging
from pathlib import Path

import pytest

from edge.errors import LabelSetError
from edge.labels.labelset import resolve_label_set, shipped_label_sets

MINE = "name: mine\nlabels: [a]\n"


# --- which set `--labels NAME` means --------------------------------------------------------------

@pytest.mark.parametrize("local", ["urban", "urban.yaml"])
def test_a_bare_shipped_name_is_the_shipped_set_even_beside_a_local_file(tmp_path, monkeypatch, caplog, local):
    (tmp_path / local).write_text(MINE)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="edge.labels.labelset"):
        found = resolve_label_set("urban")
    assert found.name == "urban" and found.shipped
    assert found.source == str(shipped_label_sets()["urban"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"./{local}" in warnings[0] and f"--labels ./{local}" in warnings[0]
    assert any(f"label set 'urban': shipped set ({found.source})" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("spec", ["./urban.yaml", "sub/../urban.yaml", "ABS"])
def test_a_file_wins_only_when_given_as_a_path(tmp_path, monkeypatch, caplog, spec):
    (tmp_path / "urban.yaml").write_text(MINE)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    spec = str(tmp_path / "urban.yaml") if spec == "ABS" else spec
    with caplog.at_level(logging.INFO, logger="edge.labels.labelset"):
        found = resolve_label_set(spec)
    assert found.name == "mine" and not found.shipped and Path(found.source) == Path(spec)
    assert any(f"label set 'mine': file {spec}" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_bare_name_that_is_no_shipped_set_is_a_local_file(tmp_path, monkeypatch, caplog):
    (tmp_path / "site.yaml").write_text(MINE)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="edge.labels.labelset"):
        found = resolve_label_set("site.yaml")
    assert found.name == "mine" and not found.shipped
    assert any("label set 'mine': file ./site.yaml" in r.getMessage() for r in caplog.records)


def test_a_directory_is_named_as_one(tmp_path):
    with pytest.raises(LabelSetError, match="is a directory: pass a label-set YAML file"):
        resolve_label_set(str(tmp_path))


# --- corrupt or truncated embedding files -------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import edge.cli  # noqa: E402
import edge.labels.embeddings as embeddings  # noqa: E402
from edge.bundle import read_bundle, shipped_bundle  # noqa: E402
from edge.errors import LabelEmbeddingsError  # noqa: E402
from edge.fsutil import cache_dir  # noqa: E402
from edge.labels.embeddings import LabelEmbeddings, label_embeddings_for  # noqa: E402
from edge.labels.labelset import parse_label_set  # noqa: E402
from edge.tools.doctor import FAIL, WARN, run_checks  # noqa: E402

PETS = "name: pets\nlabels:\n  - dog\n  - name: cat\n    prompts: [a cat meowing]\n"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SEMANTICAC_BUNDLE", raising=False)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def demo():
    """The shipped demo bundle (read only here: writing tests use `bundle_copy`)."""
    return read_bundle(shipped_bundle())


@pytest.fixture
def bundle_copy(demo, tmp_path):
    return read_bundle(shutil.copytree(demo.path, tmp_path / "bundle"))


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def one_line_error(result, *texts):
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for text in texts:
        assert text in lines[0], lines[0]


@pytest.mark.parametrize("damage", [truncate, lambda p: p.write_bytes(b"garbage")])
def test_a_damaged_cache_file_is_computed_again_with_a_warning_and_rewritten(demo, cache, caplog, damage):
    pets = parse_label_set(PETS, "pets.yaml")
    first = label_embeddings_for(demo, pets)
    cached = cache_dir(demo.meta.model_id) / "pets.npz"
    assert cached.is_file()
    damage(cached)
    with caplog.at_level(logging.INFO):
        again = label_embeddings_for(demo, pets)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(cached) in warnings[0] and "corrupt or truncated" in warnings[0]
    assert "pickle" not in warnings[0] and "delete it" not in warnings[0]  # numpy's advice; what it does anyway
    np.testing.assert_allclose(again.embeddings, first.embeddings, atol=1e-6)
    np.testing.assert_array_equal(LabelEmbeddings.load(cached).embeddings, again.embeddings)  # rewritten
    assert sorted(p.name for p in cached.parent.iterdir()) == ["pets.npz"]  # atomically: no leftovers


def test_a_damaged_bundle_file_is_an_error_naming_it_and_the_command(bundle_copy, cache):
    damaged = bundle_copy.labels_dir / "urban.npz"
    truncate(damaged)
    fix = f"semanticac-edge embed-labels --bundle {bundle_copy.path} --labels urban --into bundle"
    urban = resolve_label_set("urban")
    for call in (label_embeddings_for, embeddings.find_label_embeddings):
        with pytest.raises(LabelEmbeddingsError) as err:
            call(bundle_copy, urban)
        assert str(damaged) in str(err.value) and fix in str(err.value)
    one_line_error(CliRunner().invoke(edge.cli.main, ["info", "--bundle", str(bundle_copy.path), "--labels", "urban"]),
                   str(damaged), fix)
    # the command it names repairs it
    result = CliRunner().invoke(edge.cli.main, fix.split()[1:])  # (the shipped bundle's too: never auto's cache)
    assert result.exit_code == 0, result.output
    assert label_embeddings_for(bundle_copy, urban).labels == tuple(urban.names)


def test_doctor_says_the_same_for_bundle_and_cache_files(bundle_copy, cache):
    truncate(bundle_copy.labels_dir / "urban.npz")
    esc50 = resolve_label_set("esc50")
    (bundle_copy.labels_dir / "esc50.npz").unlink()
    cached = cache_dir(bundle_copy.meta.model_id) / "esc50.npz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 truncated")
    checks = {c.name: c for c in run_checks(str(bundle_copy.path), "urban")}
    urban = checks["labels urban"]
    assert urban.status == FAIL and str(bundle_copy.labels_dir / "urban.npz") in urban.finding
    assert urban.fix == f"`semanticac-edge embed-labels --bundle {bundle_copy.path} --labels urban --into bundle`"
    assert checks["labels esc50"].status == WARN and str(cached) in checks["labels esc50"].finding
    assert "computed again" in checks["labels esc50"].finding and esc50.name == "esc50"


# --- embed-labels ------------------------------------------------------------------------------

def test_embed_labels_writes_into_the_bundle_atomically_and_says_what(bundle_copy, cache, tmp_path):
    """A site's set is written into the bundle; a set the export wrote there with the full-precision
    text graph (the shipped `urban`) is kept as it is: the compact bundle's int8 graph would have
    replaced it with a coarser copy (up to 0.026 apart, scores moved)."""
    before = sorted(p.name for p in bundle_copy.labels_dir.iterdir())
    urban = (bundle_copy.labels_dir / "urban.npz").read_bytes()
    site = tmp_path / "site.yaml"
    site.write_text("name: site\nlabels: [dog_bark, kettle]\n")
    result = CliRunner().invoke(edge.cli.main, ["embed-labels", "--bundle", str(bundle_copy.path), "--labels",
                                                str(site), "--labels", "urban"])
    assert result.exit_code == 0, result.output
    assert f"site: 2 labels (2 prompts, 512-d) -> {bundle_copy.labels_dir / 'site.npz'} (bundle)" in result.output
    assert (f"urban: 10 labels (10 prompts, 512-d): {bundle_copy.labels_dir / 'urban.npz'} already holds them as the "
            "export computed them (full precision): kept") in result.output
    assert (bundle_copy.labels_dir / "urban.npz").read_bytes() == urban
    assert "urban.npz" in before and sorted(p.name for p in bundle_copy.labels_dir.iterdir()) == sorted(
        [*before, "site.npz"])  # no temporary file left
    found = LabelEmbeddings.load(bundle_copy.labels_dir / "site.npz")
    assert found.labels == ("dog_bark", "kettle") and found.model_id == bundle_copy.meta.model_id


def test_embed_labels_into_the_cache_and_when_the_bundle_is_read_only(bundle_copy, cache, monkeypatch, tmp_path):
    runner = CliRunner()
    (tmp_path / "pets.yaml").write_text(PETS)
    args = ["embed-labels", "--bundle", str(bundle_copy.path), "--labels", str(tmp_path / "pets.yaml")]
    result = runner.invoke(edge.cli.main, [*args, "--into", "cache"])
    target = cache_dir(bundle_copy.meta.model_id) / "pets.npz"
    assert result.exit_code == 0 and f"-> {target} (cache)" in result.output, result.output
    target.unlink()
    read_only = bundle_copy.labels_dir
    monkeypatch.setattr(embeddings, "unwritable_reason",
                        lambda folder: f"{folder}: Read-only file system" if Path(folder) == read_only else None)
    result = runner.invoke(edge.cli.main, args)  # auto: the cache
    assert result.exit_code == 0 and f"-> {target} (cache)" in result.output, result.output
    one_line_error(runner.invoke(edge.cli.main, [*args, "--into", "bundle"]), "Read-only file system",
                   "--into cache")


def test_embed_labels_keeps_a_set_the_bundle_holds_and_leaves_the_cache_s_set_of_that_name(bundle_copy, cache,
                                                                                             tmp_path):
    """The bundle's urban.npz is what listen reads first: computing it again into the cache (by the
    int8 text graph) only replaced a site's own set named `urban` there, without a word."""
    runner = CliRunner()
    site = tmp_path / "urban.yaml"
    site.write_text("name: urban\nlabels: [kettle, doorbell]\n")
    args = ["embed-labels", "--bundle", str(bundle_copy.path), "--into", "cache", "--labels"]
    assert runner.invoke(edge.cli.main, [*args, str(site)]).exit_code == 0
    cached = cache_dir(bundle_copy.meta.model_id) / "urban.npz"
    before = cached.read_bytes()
    result = runner.invoke(edge.cli.main, [*args, "urban"])
    bundled = bundle_copy.labels_dir / "urban.npz"
    assert result.exit_code == 0 and f"{bundled} already holds them" in result.output and "kept" in result.output
    assert cached.read_bytes() == before


def test_embed_labels_says_a_cache_it_cannot_write_before_any_work(bundle_copy, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "afile"))
    (tmp_path / "pets.yaml").write_text(PETS)
    computed = []
    monkeypatch.setattr(embeddings, "compute_label_embeddings", lambda *a, **k: computed.append(a))
    result = CliRunner().invoke(edge.cli.main, ["embed-labels", "--bundle", str(bundle_copy.path), "--into", "cache",
                                                "--labels", str(tmp_path / "pets.yaml")])
    one_line_error(result, "cannot write label set 'pets'", f"{tmp_path / 'afile'} is a file, not a folder",
                   "$XDG_CACHE_HOME")
    assert not computed


def test_label_embeddings_this_user_may_not_read_are_not_called_damaged_nor_computed_over(bundle_copy, cache,
                                                                                           monkeypatch):
    """A bundle's urban.npz (or its labels/ folder) this user may not read was 'corrupt or truncated;
    delete it', and the fix given rewrote the export's full-precision set with the device's. It is a
    permission: said as one, with the fix, and the file is left alone."""
    import pathlib

    target = bundle_copy.path / "labels" / "urban.npz"
    before = target.read_bytes()
    real_load = np.load

    def load(path, *args, **kwargs):
        if pathlib.Path(path) == target:
            raise PermissionError(13, "Permission denied", str(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(embeddings.np, "load", load)
    runner = CliRunner()
    result = runner.invoke(edge.cli.main, ["listen", "--bundle", str(bundle_copy.path), "--labels", "urban",
                                           "--input", "-", "--rate", "16000"], input=b"")
    one_line_error(result, f"label embeddings {target} cannot be read by this user", "chmod -R a+rX")
    assert "corrupt" not in result.output and target.read_bytes() == before
    monkeypatch.setattr(embeddings.np, "load", real_load)
    real_is_file = pathlib.Path.is_file

    def is_file(path):  # a labels/ folder this user may not enter
        if path == target:
            raise PermissionError(13, "Permission denied", str(path))
        return real_is_file(path)

    monkeypatch.setattr(pathlib.Path, "is_file", is_file)
    result = runner.invoke(edge.cli.main, ["listen", "--bundle", str(bundle_copy.path), "--labels", "urban",
                                           "--input", "-", "--rate", "16000"], input=b"")
    one_line_error(result, "cannot be read by this user", "chmod -R a+rX")


def test_embed_labels_never_writes_into_the_installed_package_by_default(demo_bundle, cache, tmp_path):
    """The demo bundle lives in site-packages: a site's set written there goes with the next pip
    upgrade (or stays after an uninstall). auto writes it to the cache; --into bundle still may."""
    site = tmp_path / "site.yaml"
    site.write_text("name: site_only_here\nlabels: [dog_bark, kettle]\n")
    wrong = demo_bundle.labels_dir / "site_only_here.npz"
    try:
        result = CliRunner().invoke(edge.cli.main, ["embed-labels", "--labels", str(site)])
        target = cache_dir(demo_bundle.meta.model_id) / "site_only_here.npz"
        assert result.exit_code == 0 and f"-> {target} (cache)" in result.output, result.output
        assert not wrong.exists()
    finally:
        wrong.unlink(missing_ok=True)  # a failure must not leave it in the package


def test_embed_labels_never_replaces_a_set_the_bundle_s_vocabulary_reads(bundle_copy, cache, tmp_path):
    """A site's copy of urban.yaml that kept `name: urban`: its embeddings written over the bundle's
    urban.npz would make the vocabulary take other labels for the trained ones and the bundle fail
    to load; --into bundle refuses, auto writes it to the cache, and the bundle keeps working."""
    from edge.vocabulary import Vocabulary

    shipped = bundle_copy.labels_dir / "urban.npz"
    before = shipped.read_bytes()
    site = tmp_path / "site.yaml"
    site.write_text("name: urban\nlabels: [siren, dog_bark, doorbell]\n")
    runner = CliRunner()
    args = ["embed-labels", "--bundle", str(bundle_copy.path), "--labels", str(site)]
    one_line_error(runner.invoke(edge.cli.main, [*args, "--into", "bundle"]), f"{shipped} is the bundle's own",
                   "the labels its student was trained on", "`name:` of its own")
    assert shipped.read_bytes() == before
    result = runner.invoke(edge.cli.main, args)  # auto
    target = cache_dir(bundle_copy.meta.model_id) / "urban.npz"
    assert result.exit_code == 0 and f"-> {target} (cache)" in result.output, result.output
    assert shipped.read_bytes() == before and Vocabulary.from_bundle(bundle_copy) is not None
    assert label_embeddings_for(bundle_copy, resolve_label_set(str(site))).labels == ("siren", "dog_bark", "doorbell")
    (bundle_copy.labels_dir / "audioset.npz").rename(tmp_path / "audioset.npz")
    audioset = tmp_path / "audioset.yaml"  # a file the bundle lacks is written (an export puts it there)
    audioset.write_text("name: audioset\nlabels: [a]\n")
    done = runner.invoke(edge.cli.main, ["embed-labels", "--bundle", str(bundle_copy.path), "--labels", str(audioset),
                                          "--into", "bundle"])
    assert done.exit_code == 0 and "(bundle)" in done.output, done.output
    # two sets of one name in one call: refused before anything is written
    other = tmp_path / "other"
    other.mkdir()
    (other / "site.yaml").write_text("name: kitchen\nlabels: [kettle]\n")
    (tmp_path / "site2.yaml").write_text("name: kitchen\nlabels: [toaster]\n")
    one_line_error(runner.invoke(edge.cli.main, ["embed-labels", "--bundle", str(bundle_copy.path), "--labels",
                                                 str(other / "site.yaml"), "--labels", str(tmp_path / "site2.yaml")]),
                   "are both named 'kitchen'", "another `name:`")
    assert not (bundle_copy.labels_dir / "kitchen.npz").exists()


@pytest.mark.slow  # embeds 80 prompts with the int8 text graph: ~12 s of CPU on 2 cores
def test_embed_labels_needs_no_torch_and_long_embeddings_show_progress_on_stderr(demo, tmp_path):
    """A first start with many new labels says what it embeds on stderr, without -v; never on stdout."""
    import soundfile as sf

    many = tmp_path / "many.yaml"
    many.write_text("name: many\nlabels:\n" + "".join(
        f"  - name: sound_{i}\n    prompts: [a recording of sound number {i}]\n" for i in range(40)))
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(1600, np.float32), 16000)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("SEMANTICAC_BUNDLE", None)
    listen = subprocess.run([sys.executable, "-c", "from edge.cli import main; main()", "listen", "--labels",
                             str(many), "--input", str(clip), "--fast", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert listen.returncode == 0, listen.stderr
    assert "embedding 40 labels (80 prompts) of label set 'many' with text.onnx..." in listen.stderr
    assert "embedded 80/80 prompts" in listen.stderr
    assert "embedding" not in listen.stdout
    # embed-labels itself runs without torch
    code = ("import sys; from edge.cli import main\n"
            "try:\n    main(['embed-labels', '--labels', sys.argv[1], '--into', 'cache'])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code, str(many)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "many: 40 labels (80 prompts, 512-d) ->" in done.stdout and "(cache)" in done.stdout
    assert json.loads(json.dumps(done.stdout))  # plain text, one line per set


# --- prompts longer than the text tower's context ------------------------------------------------

LONG = " ".join(["very"] * 130)
TOO_LONG = (f"name: long\nlabels:\n  - name: a\n    prompts: [\"{LONG} loud dog\"]\n"
            f"  - name: b\n    prompts: [\"{LONG} quiet cat\"]\n")


def test_a_prompt_longer_than_the_context_is_an_error_naming_label_prompt_count_and_limit(demo, cache, tmp_path):
    long_set = parse_label_set(TOO_LONG, "long.yaml")
    with pytest.raises(LabelSetError) as err:
        label_embeddings_for(demo, long_set)
    message = str(err.value)
    assert "label 'a': prompt 'very very" in message and "label 'b'" in message
    assert "is 134 tokens" in message and "at most 128 tokens" in message and "shorten" in message
    assert not (cache_dir(demo.meta.model_id) / "long.npz").exists()


def test_labels_shows_token_counts_and_flags_those_over_the_limit(tmp_path, cache):
    runner = CliRunner()
    result = runner.invoke(edge.cli.main, ["labels", "urban"])
    assert result.exit_code == 0, result.output
    assert "(shipped set " in result.output and "'an audio clip of dog bark'  (8 tokens)" in result.output
    path = tmp_path / "long.yaml"
    path.write_text(TOO_LONG)
    result = runner.invoke(edge.cli.main, ["labels", str(path)])
    assert result.exit_code == 1, result.output
    assert result.output.count("(134 tokens: OVER the text tower's limit of 128)") == 2
    assert "(7 tokens)" in result.output  # the template prompts are fine
    assert "Error: 2 prompt(s) of label set 'long' are longer than the text tower's 128 tokens" in result.output


def test_embed_labels_checks_threads_as_listen_does(bundle_copy, cache):
    """It took any count (64 on a 2-core machine) where listen, bench and calibrate refuse one beyond
    the usable cores."""
    result = CliRunner().invoke(edge.cli.main, ["embed-labels", "--bundle", str(bundle_copy.path), "--labels",
                                                "urban", "--into", "cache", "--threads", "4096"])
    assert result.exit_code == 2 and "--threads 4096 is not allowed: use a whole number from 1 to" in result.output, \
        result.output
