import json

import pytest

from edge.bundle import BUNDLE_ENV, read_bundle, resolve_bundle
from edge.errors import BundleError
from edge.fsutil import atomic_directory, atomic_write_text
from tests.bundles import make_bundle


def edit_meta(folder, **changes):
    path = folder / "model.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def test_round_trip(tmp_path):
    folder = make_bundle(tmp_path / "b")
    bundle = read_bundle(folder, verify=True)
    assert bundle.meta.model_id == "test-model-0001"
    assert bundle.meta.frontend.frames == 1001
    assert bundle.meta.audio.inputs == ("mel",)
    assert bundle.text_path == folder / "text.onnx"
    assert bundle.labels_dir == folder / "labels"


def test_bundle_without_text_tower(tmp_path):
    bundle = read_bundle(make_bundle(tmp_path / "b", with_text=False))
    assert bundle.meta.text is None and bundle.text_path is None


@pytest.mark.parametrize("field,value,message", [
    ("model_id", ..., "missing field 'model_id'"),
    ("frontend", ..., "missing field 'frontend'"),
    ("logit_scale", -3, "field 'logit_scale' must be a positive multiplier, got -3"),
    ("embedding_dim", 8.5, "field 'embedding_dim' must be a positive integer, got 8.5"),
    ("embedding_dim", True, "field 'embedding_dim' must be a positive integer, got True"),
    ("clip_seconds", "5", "field 'clip_seconds' must be a positive number of seconds"),
    ("audio", {"file": "model.onnx"}, "model.json audio: missing field 'sha256'"),
    ("audio", {"file": "../x.onnx", "sha256": "0" * 64, "inputs": ["mel"], "outputs": ["e"]},
     "must be a relative path inside the bundle"),
    ("text_encoder", "clip", "field 'text_encoder' must be a mapping"),
    ("colour", "red", "model.json: unknown field 'colour': allowed fields are \\['audio'"),
])
def test_bad_fields_are_named(tmp_path, field, value, message):
    folder = make_bundle(tmp_path / "b")
    edit_meta(folder, **{field: value})
    with pytest.raises(BundleError, match=message):
        read_bundle(folder)


def test_bad_frontend_is_named(tmp_path):
    folder = make_bundle(tmp_path / "b")
    data = json.loads((folder / "model.json").read_text())
    data["frontend"]["mel_scale"] = "bark"
    (folder / "model.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="mel_scale='bark' is not supported"):
        read_bundle(folder)


@pytest.mark.parametrize("version,fix", [(2, "upgrade semanticac-edge"), (0, "re-export the bundle")])
def test_format_version(tmp_path, version, fix):
    folder = make_bundle(tmp_path / "b")
    edit_meta(folder, format_version=version)
    with pytest.raises(BundleError, match=f"format_version {version} is not supported.*{fix}"):
        read_bundle(folder)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="is not a folder"):
        read_bundle(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="has no model.json"):
        read_bundle(tmp_path / "empty")
    folder = make_bundle(tmp_path / "b")
    (folder / "model.json").write_text("{not json")
    with pytest.raises(BundleError, match=f"cannot read {folder / 'model.json'}: .*re-export it"):
        read_bundle(folder)


def test_verify_detects_a_replaced_graph(tmp_path):
    folder = make_bundle(tmp_path / "b")
    (folder / "model.onnx").write_bytes(b"something else")
    read_bundle(folder)  # cheap read: no hashing
    with pytest.raises(BundleError, match="model.onnx has SHA-256 .* the file is corrupt or was replaced"):
        read_bundle(folder, verify=True)
    (folder / "model.onnx").unlink()
    with pytest.raises(BundleError, match="audio graph model.onnx is missing"):
        read_bundle(folder)


def test_a_graph_this_user_may_not_read_says_so_and_how_to_fix_it(tmp_path, monkeypatch):
    """A bundle copied with a umask of 077 and run by the service's own user: a traceback (doctor: "the
    check itself failed") and, for the label files, "corrupt or truncated". Permissions are the fix."""
    import edge.backends.onnxruntime
    import edge.bundle
    from edge.backends.onnxruntime import OnnxRuntimeBackend
    from edge.errors import BackendError, UnreadableBundle

    folder = make_bundle(tmp_path / "b")

    def denied(path, *args):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(edge.bundle, "sha256_file", denied)  # as root, chmod 000 denies nothing: say it here
    with pytest.raises(UnreadableBundle, match=r"the audio graph model.onnx cannot be read by this user: make it "
                                               r"readable to the user that runs this: chmod -R a\+rX "):
        read_bundle(folder, verify=True)
    monkeypatch.setattr(edge.backends.onnxruntime.os, "access", lambda path, mode: False)
    with pytest.raises(BackendError, match="model.onnx cannot be read by this user: .*chmod -R a\\+rX"):
        OnnxRuntimeBackend(folder / "model.onnx")


def test_resolution_order(tmp_path, monkeypatch):
    a, b = make_bundle(tmp_path / "a", model_id="a"), make_bundle(tmp_path / "b", model_id="b")
    monkeypatch.setenv(BUNDLE_ENV, str(b))
    assert resolve_bundle(a).meta.model_id == "a"
    assert resolve_bundle(None).meta.model_id == "b"
    monkeypatch.setenv(BUNDLE_ENV, str(tmp_path / "gone"))  # set in a profile months ago: the error says so
    with pytest.raises(BundleError, match=rf"gone \(from \${BUNDLE_ENV}\) is not a folder: point \${BUNDLE_ENV} at"):
        resolve_bundle(None)
    with pytest.raises(BundleError, match=r"gone is not a folder: point --bundle at"):
        resolve_bundle(tmp_path / "gone")
    long = tmp_path / "long.yaml"  # `labels` checks token counts against it: an unreadable one is an error
    long.write_text("name: long\nlabels: [a]\n")
    from click.testing import CliRunner

    import edge.cli

    result = CliRunner().invoke(edge.cli.main, ["labels", str(long)])
    assert result.exit_code == 1 and f"from ${BUNDLE_ENV}" in result.output, result.output
    monkeypatch.delenv(BUNDLE_ENV)
    monkeypatch.setattr("edge.bundle.shipped_bundle", lambda: None)
    with pytest.raises(BundleError, match="no model bundle: --bundle was not given"):
        resolve_bundle(None)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "model.json"
    atomic_write_text(target, "old")
    with pytest.raises(ZeroDivisionError):
        from edge.fsutil import atomic_path
        with atomic_path(target) as tmp:
            tmp.write_text("half writ")
            1 / 0
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]  # no temporary left behind


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "bundle"
    with atomic_directory(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("export failed half way")
    assert [p.name for p in target.iterdir()] == ["a"]
    with atomic_directory(target) as tmp:
        (tmp / "c").write_text("3")
    assert [p.name for p in target.iterdir()] == ["c"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_what_a_killed_writer_left_is_removed_once_it_is_stale(tmp_path):
    """kill -9 during a checkpoint or bundle write left `.last.pt.XXXXXXXX.tmp` (100-160 MB) and
    `.bundle.XXXXXXXX.tmp` folders that nothing removed; one a live writer still fills (touched recently)
    is left alone, and so is a `.old` folder (killed between atomic_directory's renames: the previous
    bundle's only copy), which is named instead."""
    import os
    import time

    from edge.fsutil import previous_versions, remove_stale_temporaries

    (tmp_path / ".last.pt.ab12cd34.tmp").write_bytes(b"x" * 1000)
    (tmp_path / ".bundle.cd34ef56.tmp").mkdir()
    (tmp_path / ".bundle.cd34ef56.tmp" / "model.onnx").write_bytes(b"y" * 500)
    (tmp_path / ".bundle.ef56gh78.old").mkdir()
    keep = [".last.pt.live0000.tmp", ".last.pt.notes", "last.pt", ".other.pt.gh78ij90.tmp", ".bundle.ef56gh78.old",
            ".bundle.v2.ab12cd34.tmp"]
    (tmp_path / ".last.pt.live0000.tmp").write_bytes(b"z")
    for name in keep[1:]:
        if not (tmp_path / name).exists():
            (tmp_path / name).write_bytes(b"k")
    old = time.time() - 600
    for name in [".last.pt.ab12cd34.tmp", ".bundle.cd34ef56.tmp", *keep[1:]]:
        os.utime(tmp_path / name, (old, old))
    assert remove_stale_temporaries(tmp_path / "last.pt", 300) == 1000
    assert remove_stale_temporaries(tmp_path / "bundle", 300) == 500
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert previous_versions(tmp_path / "bundle") == [tmp_path / ".bundle.ef56gh78.old"]


def test_a_lock_handed_on_across_an_exec_is_taken_up_and_one_not_taken_up_is_let_go(tmp_path, monkeypatch):
    """A reload kept its locks open across the exec (hand_on); the new run takes each up by its file, and
    closes those its config no longer names. A file system without flock leaves no fd behind."""
    import errno
    import fcntl
    import os

    from edge.fsutil import HANDED_LOCKS_ENV, LockHeld, hand_on, release_handed_locks, take_lock

    monkeypatch.delenv(HANDED_LOCKS_ENV, raising=False)
    state, moved = take_lock(tmp_path / "serve.lock"), take_lock(tmp_path / "old.sqlite.lock")
    hand_on(state)
    hand_on(moved)
    assert os.get_inheritable(state) and os.environ[HANDED_LOCKS_ENV] == f"{state}:{moved}"
    assert take_lock(tmp_path / "serve.lock") == state and not os.get_inheritable(state)  # taken up, still held
    release_handed_locks()
    assert HANDED_LOCKS_ENV not in os.environ
    with pytest.raises(OSError):
        os.fstat(moved)  # let go: another serve may take it now
    take_lock(tmp_path / "old.sqlite.lock")
    with pytest.raises(LockHeld, match=str(os.getpid())):
        take_lock(tmp_path / "serve.lock")
    fds = len(os.listdir("/proc/self/fd"))

    def unsupported(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", unsupported)
    for _ in range(5):
        with pytest.raises(OSError, match="No locks available"):
            take_lock(tmp_path / "nfs.lock")
    assert len(os.listdir("/proc/self/fd")) == fds
